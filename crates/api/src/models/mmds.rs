use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// MMDS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    #[default]
    V1,
    V2,
}

/// Body of `PUT /mmds/config` (`MmdsConfig`) and the config file's `mmds-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    #[serde(default)]
    pub version: MmdsVersion,
    pub network_interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub imds_compat: bool,
}
