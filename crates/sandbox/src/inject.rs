//! Agent injection for guests started through the Firecracker API (`--inject-agent`).
//!
//! Stock Firecracker clients get exactly their own guest. With injection on, ec1 wraps
//! the engine in [`InjectAgent`]: at start it appends the agent initramfs to the
//! guest's initrd and adds the agent channel, so `ec1 exec` works on that VM. Nothing
//! above the engine boundary changes.

use ec1_engine::{
    Capabilities, DriveUpdate, Engine, EngineError, EventSink, ExitReason, SnapshotSource,
    SnapshotTarget, VmSpec,
};
use ec1_guest::initramfs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
}

impl InjectAgent {
    /// Wraps `inner`; the agent channel will listen on `socket`.
    pub fn new(inner: Arc<dyn Engine>, socket: PathBuf) -> InjectAgent {
        InjectAgent { inner, socket }
    }

    /// `spec` with the agent archive appended to its initrd and the channel added.
    pub fn inject(&self, spec: &VmSpec) -> Result<VmSpec, EngineError> {
        let opts =
            initramfs::Options::from_env().map_err(|e| EngineError::InvalidSpec(e.to_string()))?;
        let initrd = initramfs::combined_initrd(spec.initrd.as_deref(), &opts)
            .map_err(|e| EngineError::InvalidSpec(format!("injecting ec1's agent: {e}")))?;
        // A stale socket from an earlier run would make the engine fail to listen.
        let _ = std::fs::remove_file(&self.socket);
        Ok(VmSpec {
            initrd: Some(initrd),
            agent_socket: Some(self.socket.clone()),
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
        self.inner.start(&self.inject(spec)?, events)
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
        let _ = std::fs::remove_file(&self.socket);
        r
    }
    fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitReason>, EngineError> {
        self.inner.wait(timeout)
    }
    fn snapshot(&self, target: &SnapshotTarget) -> Result<(), EngineError> {
        self.inner.snapshot(target)
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
        let spec = VmSpec {
            agent_socket: Some(self.socket.clone()),
            ..spec.clone()
        };
        self.inner.restore(&spec, source, events)
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

    #[test]
    fn agent_socket_sits_beside_the_api_socket() {
        assert_eq!(
            agent_socket_for(Path::new("/tmp/fc.sock")),
            PathBuf::from("/tmp/fc.sock.agent")
        );
    }
}
