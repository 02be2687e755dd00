//! The engine boundary.
//!
//! Everything above this crate (the Firecracker API, the CLI, `ec1 run`) describes a
//! machine with a [`VmSpec`] and drives it through the [`Engine`] trait. Nothing above
//! it knows whether QEMU, Apple's Virtualization.framework or a native rust-vmm VMM
//! runs the guest. The trait is deliberately small: one method per lifecycle step.

mod arch;
mod cmdline;
mod devices;
pub mod durable;
mod error;
mod event;
mod identity;
mod metadata;
pub mod registry;
mod spec;

pub use arch::Arch;
pub use cmdline::{Cmdline, MAX_CMDLINE};
pub use devices::{BalloonSpec, BalloonStats, Devices, EntropySpec, NetSpec, NetUpdate, VsockSpec};
pub use error::EngineError;
pub use event::{EngineEvent, EventSink, ExitReason};
pub use identity::{file_identity, remembered, remembered_path};
pub use metadata::{MetadataRequest, MetadataResponse, MetadataService, MetadataSpec};
pub use registry::{EngineChoice, EngineProvider, EngineRequest, SnapshotInfo};
pub use spec::{
    CacheType, DriveSpec, DriveUpdate, DroppedBytes, MemoryBacking, NetOverride, RateLimit,
    SerialOut, SnapshotSource, SnapshotTarget, TokenBucket, VmSpec,
};

use std::time::Duration;

/// What a boot template made with an engine depends on besides the guest's own
/// inputs: a template is rebuilt when any of it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheIdentity {
    /// The engine's name and settings (`qemu-tcg`).
    pub engine: String,
    /// Host files the engine runs (its binary, firmware): a template is keyed by
    /// their identity, so an upgrade makes new templates.
    pub files: Vec<std::path::PathBuf>,
    /// The version of the engine's snapshot format.
    pub snapshot_format: String,
}

/// Whether an engine offers one of Firecracker's optional features, and if not, why
/// (shown to the user in the API's 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Supported,
    /// Not offered; `why` (possibly empty) says what stands in the way and what to do
    /// instead.
    Missing {
        why: &'static str,
    },
}

impl Default for Feature {
    fn default() -> Self {
        Feature::Missing { why: "" }
    }
}

impl Feature {
    pub fn is_supported(self) -> bool {
        self == Feature::Supported
    }
}

/// What an engine can do beyond boot/pause/resume/stop, among what a [`VmSpec`] can
/// describe. The API layer reads it to answer a clear 400 at configuration time
/// instead of pretending that a feature exists: an engine is never handed a machine
/// it cannot run. (Firecracker features that a `VmSpec` cannot describe yet, such as
/// pmem or CPU templates, are refused by the API for every engine.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `snapshot`/`restore` are implemented.
    pub snapshots: bool,
    /// Drives can be swapped or re-limited on a running guest.
    pub drive_hot_update: bool,
    /// Ctrl-Alt-Del can be delivered to the guest's keyboard controller.
    pub ctrl_alt_del: bool,
    /// An operations-per-period limit on the entropy device.
    pub entropy_ops_limit: Feature,
    /// The balloon's free page hinting.
    pub free_page_hinting: Feature,
}

/// A VM engine: one instance runs at most one guest.
///
/// Methods take `&self` so that one thread may block in [`Engine::wait`] while another
/// pauses or stops the guest; implementations synchronise internally.
pub trait Engine: Send + Sync {
    /// A short name for logs and `--timings`, e.g. `qemu-tcg`.
    fn name(&self) -> &str;

    /// What this engine supports (the same as its provider's
    /// [`EngineProvider::capabilities`] for the guest's architecture).
    fn capabilities(&self) -> Capabilities;

    /// What templates made with this engine depend on (see [`CacheIdentity`]).
    fn cache_identity(&self) -> CacheIdentity {
        CacheIdentity {
            engine: self.name().to_string(),
            ..CacheIdentity::default()
        }
    }

    /// Creates the machine described by `spec` and starts its vCPUs. Returns once the
    /// guest runs. `events` receives [`EngineEvent`]s from then on (boot signal, exit).
    fn start(&self, spec: &VmSpec, events: EventSink) -> Result<(), EngineError>;

    /// Stops the guest's vCPUs; its clock stops and it emits nothing until resumed.
    fn pause(&self) -> Result<(), EngineError>;

    /// Resumes a paused guest.
    fn resume(&self) -> Result<(), EngineError>;

    /// Presses Ctrl-Alt-Del on the guest's keyboard.
    fn send_ctrl_alt_del(&self) -> Result<(), EngineError>;

    /// Ends the guest at once and releases every host resource it held. Idempotent.
    fn stop(&self) -> Result<(), EngineError>;

    /// Blocks until the guest has ended (`Some`) or `timeout` passed (`None`).
    /// `None` as timeout waits for ever.
    fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitReason>, EngineError>;

    /// Saves a paused guest to `target`.
    fn snapshot(&self, target: &SnapshotTarget) -> Result<(), EngineError> {
        let _ = target;
        Err(EngineError::Unsupported {
            engine: self.name().to_string(),
            what: "snapshots".into(),
        })
    }

    /// The settings of the metadata service the snapshot's guest had
    /// ([`MetadataSpec::settings`]), if any of its interfaces had one: the caller
    /// builds the service again and passes it in [`SnapshotSource::metadata`]. Checks
    /// the file as a restore would.
    fn snapshot_metadata(
        &self,
        state_path: &std::path::Path,
    ) -> Result<Option<String>, EngineError> {
        let _ = state_path;
        Err(EngineError::Unsupported {
            engine: self.name().to_string(),
            what: "snapshot restore".into(),
        })
    }

    /// Starts a guest from a snapshot instead of booting `spec`'s kernel.
    fn restore(
        &self,
        spec: &VmSpec,
        source: &SnapshotSource,
        events: EventSink,
    ) -> Result<(), EngineError> {
        let _ = (spec, source, events);
        Err(EngineError::Unsupported {
            engine: self.name().to_string(),
            what: "snapshot restore".into(),
        })
    }

    /// Changes a drive of a running guest (media change, rate limiter).
    fn update_drive(&self, update: &DriveUpdate) -> Result<(), EngineError> {
        let _ = update;
        Err(EngineError::Unsupported {
            engine: self.name().to_string(),
            what: "drive updates on a running guest".into(),
        })
    }

    /// Asks the guest's balloon to hold `amount_mib` MiB.
    fn set_balloon(&self, amount_mib: u32) -> Result<(), EngineError> {
        let _ = amount_mib;
        Err(EngineError::Unsupported {
            engine: self.name().to_string(),
            what: "balloon devices".into(),
        })
    }

    /// The balloon's size and the guest's latest memory statistics.
    fn balloon_stats(&self) -> Result<BalloonStats, EngineError> {
        Err(EngineError::Unsupported {
            engine: self.name().to_string(),
            what: "balloon devices".into(),
        })
    }

    /// Changes how often the guest reports balloon statistics (seconds, not 0).
    fn set_balloon_stats_interval(&self, secs: u16) -> Result<(), EngineError> {
        let _ = secs;
        Err(EngineError::Unsupported {
            engine: self.name().to_string(),
            what: "balloon devices".into(),
        })
    }

    /// Changes the rate limiters of a running guest's network interface.
    fn update_net(&self, update: &NetUpdate) -> Result<(), EngineError> {
        let _ = update;
        Err(EngineError::Unsupported {
            engine: self.name().to_string(),
            what: "network rate limiter updates on a running guest".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// An engine with only the required methods: everything optional must say
    /// "unsupported" with the engine's name, never pretend to work.
    struct Minimal;

    impl Engine for Minimal {
        fn name(&self) -> &str {
            "minimal"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn start(&self, _: &VmSpec, _: EventSink) -> Result<(), EngineError> {
            Ok(())
        }
        fn pause(&self) -> Result<(), EngineError> {
            Ok(())
        }
        fn resume(&self) -> Result<(), EngineError> {
            Ok(())
        }
        fn send_ctrl_alt_del(&self) -> Result<(), EngineError> {
            Ok(())
        }
        fn stop(&self) -> Result<(), EngineError> {
            Ok(())
        }
        fn wait(&self, _: Option<Duration>) -> Result<Option<ExitReason>, EngineError> {
            Ok(None)
        }
    }

    fn assert_unsupported<T: std::fmt::Debug>(r: Result<T, EngineError>, what: &str) {
        match r {
            Err(EngineError::Unsupported { engine, what: w }) => {
                assert_eq!(engine, "minimal");
                assert!(w.contains(what), "{w:?} should name {what:?}");
            }
            other => panic!("expected Unsupported for {what}, got {other:?}"),
        }
    }

    #[test]
    fn optional_operations_default_to_unsupported() {
        let e = Minimal;
        let spec = VmSpec {
            id: "t".into(),
            arch: crate::Arch::X86_64,
            kernel: PathBuf::from("/k"),
            initrd: None,
            cmdline: Default::default(),
            vcpus: 1,
            smt: false,
            mem_mib: 128,
            drives: Vec::new(),
            serial: SerialOut::Null,
            agent_socket: None,
            memory: MemoryBacking::Anonymous,
            run_dir: PathBuf::from("/tmp"),
            devices: Default::default(),
        };
        let target = SnapshotTarget {
            state_path: "/s".into(),
            mem_path: "/m".into(),
            diff: false,
        };
        let source = SnapshotSource {
            state_path: "/s".into(),
            mem_path: "/m".into(),
            resume: true,
            net_overrides: Vec::new(),
            metadata: None,
        };
        assert_unsupported(e.snapshot(&target), "snapshots");
        assert_unsupported(
            e.restore(&spec, &source, std::sync::Arc::new(|_| {})),
            "restore",
        );
        let drive = DriveUpdate {
            id: "d".into(),
            path: None,
            rate_limit: None,
        };
        assert_unsupported(e.update_drive(&drive), "drive");
        assert_unsupported(e.set_balloon(1), "balloon");
        assert_unsupported(e.balloon_stats(), "balloon");
        assert_unsupported(e.set_balloon_stats_interval(1), "balloon");
        let net = NetUpdate {
            id: "n".into(),
            rx_rate_limit: None,
            tx_rate_limit: None,
        };
        assert_unsupported(e.update_net(&net), "");
        assert!(!e.capabilities().free_page_hinting.is_supported());
        assert!(Feature::Supported.is_supported());
        let id = e.cache_identity();
        assert_eq!(id.engine, "minimal");
        assert!(id.files.is_empty() && id.snapshot_format.is_empty());
    }
}
