use serde::Serialize;

/// The VM's lifecycle state as Firecracker names it in `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    NotStarted,
    Running,
    Paused,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::NotStarted => "Not started",
            VmState::Running => "Running",
            VmState::Paused => "Paused",
        }
    }
}

/// Response of `GET /` (`InstanceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub state: String,
    pub vmm_version: String,
    pub app_name: String,
}
