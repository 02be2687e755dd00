use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    #[default]
    Full,
    Diff,
}

/// Body of `PUT /snapshot/create` (`SnapshotCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotParams {
    #[serde(default)]
    pub snapshot_type: SnapshotType,
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MemBackendType {
    File,
    Uffd,
}

/// `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemBackendConfig {
    pub backend_type: MemBackendType,
    pub backend_path: PathBuf,
}

/// `NetworkOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `VsockOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VsockOverride {
    pub uds_path: String,
}

/// `SnapshotLoadParams.huge_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SnapshotHugePages {
    Snapshot,
    None,
    Transparent,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// Body of `PUT /snapshot/load` (`SnapshotLoadParams`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSnapshotConfig {
    pub snapshot_path: PathBuf,
    #[serde(default)]
    pub mem_file_path: Option<PathBuf>,
    #[serde(default)]
    pub mem_backend: Option<MemBackendConfig>,
    #[serde(default)]
    pub enable_diff_snapshots: bool,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default)]
    pub resume_vm: bool,
    #[serde(default)]
    pub network_overrides: Vec<NetworkOverride>,
    #[serde(default)]
    pub vsock_override: Option<VsockOverride>,
    #[serde(default)]
    pub clock_realtime: bool,
    #[serde(default)]
    pub huge_pages: Option<SnapshotHugePages>,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum VmStateUpdate {
    Paused,
    Resumed,
}

/// Body of `PATCH /vm` (`Vm`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateRequest {
    pub state: VmStateUpdate,
}
