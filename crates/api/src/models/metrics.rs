use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Body of `PUT /metrics` (`Metrics`) and the config file's `metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsConfig {
    pub metrics_path: PathBuf,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emit_id: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}
