//! Agent injection for guests started through the Firecracker API (`--inject-agent`).
//!
//! Stock Firecracker clients get exactly their own guest. With injection on, ec1 wraps
//! the engine in [`InjectAgent`]: at start it appends the agent initramfs to the
//! guest's initrd and adds the agent channel, so `ec1 exec` works on that VM. Nothing
//! above the engine boundary changes.
//!
//! The engine's channel takes one host connection at a time, so ec1 holds it itself and
//! serves `ec1 exec`/`ec1 cp` processes on the public agent socket through a
//! multiplexer ([`ec1_client::Mux`]): any number of them run side by side.

use ec1_client::Mux;
use ec1_engine::{
    Capabilities, DriveUpdate, Engine, EngineError, EventSink, ExitReason, SnapshotSource,
    SnapshotTarget, VmSpec,
};
use ec1_guest::initramfs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the multiplexer waits for the guest's agent to announce itself: as long as
/// the guest runs (it may boot a full distribution first, or be restored paused); the
/// channel closing, when the engine stops, ends the wait.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Where `ec1 exec --api-sock S` finds the agent of the VM served on `S`.
pub fn agent_socket_for(api_sock: &Path) -> PathBuf {
    let mut s = api_sock.as_os_str().to_owned();
    s.push(".agent");
    PathBuf::from(s)
}

/// An engine whose guests get ec1's agent as `/init`.
pub struct InjectAgent {
    inner: Arc<dyn Engine>,
    socket: PathBuf,
    mux: Mutex<Option<Mux>>,
}

impl InjectAgent {
    /// Wraps `inner`; clients will find the agent on `socket`.
    pub fn new(inner: Arc<dyn Engine>, socket: PathBuf) -> InjectAgent {
        InjectAgent {
            inner,
            socket,
            mux: Mutex::new(None),
        }
    }

    /// The engine's end of the agent channel, private to this process: ec1 alone
    /// connects to it, and serves clients on the public socket.
    fn channel_path(spec: &VmSpec) -> PathBuf {
        spec.run_dir.join("agent-channel.sock")
    }

    /// Serves the public agent socket over the channel of the guest just started.
    fn serve(&self, channel: &Path) -> Result<(), EngineError> {
        let mux = Mux::start(channel, &self.socket, AGENT_READY_TIMEOUT).map_err(|e| {
            let _ = self.inner.stop();
            EngineError::InvalidSpec(format!(
                "serving the agent socket {}: {e}",
                self.socket.display()
            ))
        })?;
        *self.mux.lock().unwrap_or_else(|e| e.into_inner()) = Some(mux);
        Ok(())
    }

    /// `spec` with the agent archive appended to its initrd and the channel added.
    pub fn inject(&self, spec: &VmSpec) -> Result<VmSpec, EngineError> {
        let opts = initramfs::Options::for_arch(spec.arch)
            .map_err(|e| EngineError::InvalidSpec(e.to_string()))?;
        let initrd = initramfs::combined_initrd(spec.initrd.as_deref(), &opts)
            .map_err(|e| EngineError::InvalidSpec(format!("injecting ec1's agent: {e}")))?;
        // A stale socket from an earlier run would make the engine fail to listen.
        let _ = std::fs::remove_file(&self.socket);
        Ok(VmSpec {
            initrd: Some(initrd),
            agent_socket: Some(Self::channel_path(spec)),
            ..spec.clone()
        })
    }
}

impl Engine for InjectAgent {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn start(&self, spec: &VmSpec, events: EventSink) -> Result<(), EngineError> {
        self.inner.start(&self.inject(spec)?, events)?;
        self.serve(&Self::channel_path(spec))
    }
    fn pause(&self) -> Result<(), EngineError> {
        self.inner.pause()
    }
    fn resume(&self) -> Result<(), EngineError> {
        self.inner.resume()
    }
    fn send_ctrl_alt_del(&self) -> Result<(), EngineError> {
        self.inner.send_ctrl_alt_del()
    }
    fn stop(&self) -> Result<(), EngineError> {
        let r = self.inner.stop();
        // Ends every client connection and removes the public socket.
        drop(self.mux.lock().unwrap_or_else(|e| e.into_inner()).take());
        let _ = std::fs::remove_file(&self.socket);
        r
    }
    fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitReason>, EngineError> {
        self.inner.wait(timeout)
    }
    fn snapshot(&self, target: &SnapshotTarget) -> Result<(), EngineError> {
        self.inner.snapshot(target)
    }
    fn snapshot_metadata(&self, state_path: &Path) -> Result<Option<String>, EngineError> {
        self.inner.snapshot_metadata(state_path)
    }
    fn restore(
        &self,
        spec: &VmSpec,
        source: &SnapshotSource,
        events: EventSink,
    ) -> Result<(), EngineError> {
        // The agent is in the snapshot already (if its guest had one); only its
        // channel's host side is new.
        let _ = std::fs::remove_file(&self.socket);
        let channel = Self::channel_path(spec);
        let spec = VmSpec {
            agent_socket: Some(channel.clone()),
            ..spec.clone()
        };
        self.inner.restore(&spec, source, events)?;
        self.serve(&channel)
    }
    fn update_drive(&self, update: &DriveUpdate) -> Result<(), EngineError> {
        self.inner.update_drive(update)
    }
    fn set_balloon(&self, amount_mib: u32) -> Result<(), EngineError> {
        self.inner.set_balloon(amount_mib)
    }
    fn balloon_stats(&self) -> Result<ec1_engine::BalloonStats, EngineError> {
        self.inner.balloon_stats()
    }
    fn set_balloon_stats_interval(&self, secs: u16) -> Result<(), EngineError> {
        self.inner.set_balloon_stats_interval(secs)
    }
    fn update_net(&self, update: &ec1_engine::NetUpdate) -> Result<(), EngineError> {
        self.inner.update_net(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ec1_engine::{MemoryBacking, SerialOut};
    use std::sync::Mutex;

    /// Records every call and the spec it was started with.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<&'static str>>,
        started: Mutex<Option<VmSpec>>,
    }

    impl Recorder {
        fn note(&self, c: &'static str) -> Result<(), EngineError> {
            self.calls.lock().unwrap().push(c);
            Ok(())
        }
    }

    impl Engine for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                snapshots: true,
                ..Default::default()
            }
        }
        fn start(&self, spec: &VmSpec, _: EventSink) -> Result<(), EngineError> {
            *self.started.lock().unwrap() = Some(spec.clone());
            self.note("start")
        }
        fn pause(&self) -> Result<(), EngineError> {
            self.note("pause")
        }
        fn resume(&self) -> Result<(), EngineError> {
            self.note("resume")
        }
        fn send_ctrl_alt_del(&self) -> Result<(), EngineError> {
            self.note("cad")
        }
        fn stop(&self) -> Result<(), EngineError> {
            self.note("stop")
        }
        fn wait(&self, _: Option<Duration>) -> Result<Option<ExitReason>, EngineError> {
            self.note("wait").map(|_| Some(ExitReason::Stopped))
        }
        fn snapshot(&self, _: &SnapshotTarget) -> Result<(), EngineError> {
            self.note("snapshot")
        }
        fn restore(&self, _: &VmSpec, _: &SnapshotSource, _: EventSink) -> Result<(), EngineError> {
            self.note("restore")
        }
        fn update_drive(&self, _: &DriveUpdate) -> Result<(), EngineError> {
            self.note("drive")
        }
        fn set_balloon(&self, _: u32) -> Result<(), EngineError> {
            self.note("balloon")
        }
        fn set_balloon_stats_interval(&self, _: u16) -> Result<(), EngineError> {
            self.note("interval")
        }
        fn update_net(&self, _: &ec1_engine::NetUpdate) -> Result<(), EngineError> {
            self.note("net")
        }
    }

    #[test]
    fn start_injects_the_agent_and_every_call_reaches_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fc.sock.agent");
        std::fs::write(&socket, b"stale").unwrap();
        let inner = Arc::new(Recorder::default());
        let e = InjectAgent::new(inner.clone(), socket.clone());
        assert_eq!(e.name(), "recorder");
        assert!(e.capabilities().snapshots);
        let spec = VmSpec {
            id: "t".into(),
            arch: ec1_engine::Arch::X86_64,
            kernel: "/k".into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            vcpus: 1,
            smt: false,
            mem_mib: 128,
            drives: Vec::new(),
            serial: SerialOut::Null,
            agent_socket: None,
            memory: MemoryBacking::Anonymous,
            run_dir: dir.path().into(),
            devices: Default::default(),
        };
        e.start(&spec, Arc::new(|_| {})).unwrap();
        let started = inner.started.lock().unwrap().clone().unwrap();
        // The engine's channel is private; the public socket is the multiplexer's.
        assert_eq!(
            started.agent_socket.as_deref(),
            Some(dir.path().join("agent-channel.sock").as_path())
        );
        let initrd = started.initrd.expect("the agent initramfs");
        assert!(initrd.is_file());
        assert_eq!(started.cmdline, spec.cmdline, "nothing else changes");
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::metadata(&socket).unwrap().file_type().is_socket(),
            "the stale file is replaced by the multiplexer's socket"
        );

        e.pause().unwrap();
        e.resume().unwrap();
        e.send_ctrl_alt_del().unwrap();
        assert_eq!(e.wait(None).unwrap(), Some(ExitReason::Stopped));
        let t = SnapshotTarget {
            state_path: "/s".into(),
            mem_path: "/m".into(),
            diff: false,
        };
        e.snapshot(&t).unwrap();
        let src = SnapshotSource {
            state_path: "/s".into(),
            mem_path: "/m".into(),
            resume: false,
            net_overrides: Vec::new(),
            metadata: None,
        };
        e.restore(&spec, &src, Arc::new(|_| {})).unwrap();
        e.update_drive(&DriveUpdate {
            id: "d".into(),
            path: None,
            rate_limit: None,
        })
        .unwrap();
        e.set_balloon(4).unwrap();
        e.set_balloon_stats_interval(1).unwrap();
        e.update_net(&ec1_engine::NetUpdate {
            id: "n".into(),
            rx_rate_limit: None,
            tx_rate_limit: None,
        })
        .unwrap();
        // Not overridden by the recorder: the engine's own default answer comes through.
        assert!(matches!(
            e.balloon_stats(),
            Err(EngineError::Unsupported { .. })
        ));
        e.stop().unwrap();
        assert!(!socket.exists(), "stop removes the agent socket");
        assert_eq!(
            *inner.calls.lock().unwrap(),
            [
                "start", "pause", "resume", "cad", "wait", "snapshot", "restore", "drive",
                "balloon", "interval", "net", "stop"
            ]
        );
    }

    #[test]
    fn agent_socket_sits_beside_the_api_socket() {
        assert_eq!(
            agent_socket_for(Path::new("/tmp/fc.sock")),
            PathBuf::from("/tmp/fc.sock.agent")
        );
    }
}
