use serde::{Deserialize, Serialize};

/// Body of `PUT /vsock` (`Vsock`) and the config file's `vsock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockDeviceConfig {
    /// Deprecated by Firecracker; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    pub guest_cid: u32,
    pub uds_path: String,
}
