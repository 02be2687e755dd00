use serde::{Deserialize, Serialize};

/// Firecracker's static CPU templates (deprecated in Firecracker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    #[default]
    None,
}

/// How guest memory is backed (`MachineConfiguration.huge_pages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePageConfig {
    #[default]
    None,
    Transparent,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// Body of `PUT /machine-config` (`MachineConfiguration`), the config file's
/// `machine-config` and the answer of `GET /machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: usize,
    #[serde(default)]
    pub smt: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default)]
    pub huge_pages: HugePageConfig,
}

impl Default for MachineConfig {
    /// Firecracker's defaults: 1 vCPU, 128 MiB, no SMT, no template.
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePageConfig::None,
        }
    }
}

/// Body of `PATCH /machine-config`: every field optional, at least one required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default)]
    pub vcpu_count: Option<u8>,
    #[serde(default)]
    pub mem_size_mib: Option<usize>,
    #[serde(default)]
    pub smt: Option<bool>,
    #[serde(default)]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
    #[serde(default)]
    pub huge_pages: Option<HugePageConfig>,
}

impl MachineConfigUpdate {
    /// Nothing to update.
    pub fn is_empty(&self) -> bool {
        self == &MachineConfigUpdate::default()
    }
}

impl From<MachineConfig> for MachineConfigUpdate {
    /// A PUT resets every optional field to its default, except `cpu_template`, which
    /// Firecracker keeps when the PUT does not mention it.
    fn from(c: MachineConfig) -> Self {
        MachineConfigUpdate {
            vcpu_count: Some(c.vcpu_count),
            mem_size_mib: Some(c.mem_size_mib),
            smt: Some(c.smt),
            cpu_template: c.cpu_template,
            track_dirty_pages: Some(c.track_dirty_pages),
            huge_pages: Some(c.huge_pages),
        }
    }
}
