use serde::{Deserialize, Serialize};

/// Body of `PUT /balloon` (`Balloon`); Firecracker's `BalloonDeviceConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonDeviceConfig {
    pub amount_mib: u32,
    pub deflate_on_oom: bool,
    #[serde(default)]
    pub stats_polling_interval_s: u16,
    #[serde(default)]
    pub free_page_hinting: bool,
    #[serde(default)]
    pub free_page_reporting: bool,
}

/// Body of `PATCH /balloon` (`BalloonUpdate`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdateConfig {
    pub amount_mib: u32,
}

/// Body of `PATCH /balloon/statistics` (`BalloonStatsUpdate`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdateStatsConfig {
    pub stats_polling_interval_s: u16,
}

/// Optional body of `PATCH /balloon/hinting/start` (`BalloonStartCmd`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StartHintingCmd {
    #[serde(default)]
    pub acknowledge_on_stop: bool,
}
