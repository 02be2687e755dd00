//! Serde types mirroring every schema of Firecracker's swagger (`firecracker.yaml`).
//!
//! Field names, optionality and defaults follow Firecracker's own request structs
//! (`src/vmm/src/vmm_config/*`), including `deny_unknown_fields` wherever Firecracker
//! rejects unknown fields, so a body Firecracker refuses is refused here too.
//! Serialization skips absent optionals: swagger 2.0 has no `null`, and the output of
//! `GET /vm/config` must validate against the spec and parse back as a config file.

mod actions;
mod balloon;
mod boot_source;
mod cpu_config;
mod drive;
mod entropy;
mod hotplug;
mod instance;
mod logger;
mod machine_config;
mod metrics;
mod mmds;
mod net;
mod pmem;
mod rate_limiter;
mod serial;
mod snapshot;
mod vsock;

pub use actions::{ActionBody, ActionType};
pub use balloon::{
    BalloonDeviceConfig, BalloonUpdateConfig, BalloonUpdateStatsConfig, StartHintingCmd,
};
pub use boot_source::BootSourceConfig;
pub use cpu_config::{
    ArmRegisterModifier, CpuidLeafModifier, CpuidRegister, CpuidRegisterModifier,
    CustomCpuTemplate, MsrModifier, VcpuFeatures,
};
pub use drive::{BlockDeviceConfig, BlockDeviceUpdateConfig, CacheType, FileEngineType};
pub use entropy::EntropyDeviceConfig;
pub use hotplug::{MemoryHotplugConfig, MemoryHotplugSizeUpdate};
pub use instance::{InstanceInfo, VmState};
pub use logger::{LevelFilter, LoggerConfig};
pub use machine_config::{CpuTemplate, HugePageConfig, MachineConfig, MachineConfigUpdate};
pub use metrics::MetricsConfig;
pub use mmds::{MmdsConfig, MmdsVersion};
pub use net::{MacAddr, NetworkInterfaceConfig, NetworkInterfaceUpdateConfig};
pub use pmem::{PmemConfig, PmemUpdateConfig};
pub use rate_limiter::{RateLimiterConfig, TokenBucketConfig};
pub use serial::SerialConfig;
pub use snapshot::{
    CreateSnapshotParams, LoadSnapshotConfig, MemBackendConfig, MemBackendType, NetworkOverride,
    SnapshotHugePages, SnapshotType, VmStateRequest, VmStateUpdate, VsockOverride,
};
pub use vsock::VsockDeviceConfig;
