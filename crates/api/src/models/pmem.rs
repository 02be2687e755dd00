use serde::{Deserialize, Serialize};

use super::RateLimiterConfig;

/// Body of `PUT /pmem/{id}` (`Pmem`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PmemConfig {
    pub id: String,
    pub path_on_host: String,
    #[serde(default)]
    pub root_device: bool,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// Body of `PATCH /pmem/{id}` (`PartialPmem`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PmemUpdateConfig {
    pub id: String,
    #[serde(default)]
    pub rate_limiter: Option<RateLimiterConfig>,
}
