//! The engine of a clone claimed from a pool: the pool's process runs it, so the only
//! control this side has is the claim itself, held open until the sandbox stops.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use ec1_engine::{Capabilities, Engine, EngineError, EventSink, ExitReason, VmSpec};

/// A claimed clone: stopping it closes the claim, and the pool stops the VM.
pub struct ClaimedEngine {
    claim: Mutex<Option<UnixStream>>,
}

impl ClaimedEngine {
    pub fn new(claim: UnixStream) -> ClaimedEngine {
        ClaimedEngine {
            claim: Mutex::new(Some(claim)),
        }
    }

    fn elsewhere(&self, what: &str) -> EngineError {
        EngineError::Unsupported {
            engine: self.name().into(),
            what: format!("{what} (the clone belongs to its pool's process)"),
        }
    }
}

impl Engine for ClaimedEngine {
    fn name(&self) -> &str {
        "qemu-pool"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn start(&self, _spec: &VmSpec, _events: EventSink) -> Result<(), EngineError> {
        Err(EngineError::InvalidState(
            "a claimed clone is already running".into(),
        ))
    }

    fn pause(&self) -> Result<(), EngineError> {
        Err(self.elsewhere("pausing"))
    }

    fn resume(&self) -> Result<(), EngineError> {
        Err(self.elsewhere("resuming"))
    }

    fn send_ctrl_alt_del(&self) -> Result<(), EngineError> {
        Err(self.elsewhere("Ctrl-Alt-Del"))
    }

    /// Gives the clone back: the pool stops it. Idempotent.
    fn stop(&self) -> Result<(), EngineError> {
        if let Some(s) = self.claim.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    fn wait(&self, _timeout: Option<Duration>) -> Result<Option<ExitReason>, EngineError> {
        Err(self.elsewhere("waiting for the guest's end"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn stopping_closes_the_claim_and_nothing_else_is_possible() {
        let (ours, mut pool) = UnixStream::pair().unwrap();
        let e = ClaimedEngine::new(ours);
        assert_eq!(e.name(), "qemu-pool");
        assert!(!e.capabilities().snapshots);
        assert!(e.pause().is_err() && e.resume().is_err() && e.send_ctrl_alt_del().is_err());
        assert!(e.wait(None).is_err());
        assert!(matches!(
            e.start(
                &VmSpec {
                    id: String::new(),
                    arch: ec1_engine::Arch::X86_64,
                    kernel: Default::default(),
                    initrd: None,
                    cmdline: Default::default(),
                    vcpus: 1,
                    smt: false,
                    mem_mib: 1,
                    drives: vec![],
                    serial: ec1_engine::SerialOut::Null,
                    agent_socket: None,
                    memory: ec1_engine::MemoryBacking::Anonymous,
                    run_dir: Default::default(),
                    devices: Default::default(),
                },
                std::sync::Arc::new(|_| {})
            ),
            Err(EngineError::InvalidState(_))
        ));
        e.stop().unwrap();
        e.stop().unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            pool.read(&mut buf).unwrap(),
            0,
            "the pool sees the claim end"
        );
    }
}
