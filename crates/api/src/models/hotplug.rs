use serde::{Deserialize, Serialize};

fn default_slot_size_mib() -> usize {
    128
}

fn default_block_size_mib() -> usize {
    2
}

/// Body of `PUT /hotplug/memory` (`MemoryHotplugConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryHotplugConfig {
    pub total_size_mib: usize,
    #[serde(default = "default_slot_size_mib")]
    pub slot_size_mib: usize,
    #[serde(default = "default_block_size_mib")]
    pub block_size_mib: usize,
}

/// Body of `PATCH /hotplug/memory` (`MemoryHotplugSizeUpdate`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryHotplugSizeUpdate {
    pub requested_size_mib: usize,
}
