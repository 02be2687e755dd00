//! An in-process [`Engine`] that records every call and lets a test emit events: what
//! ec1's API layer is tested against. Shared by the tests and `examples/fake_vmm.rs`.

#![allow(dead_code)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ec1_engine::{
    Capabilities, DriveUpdate, Engine, EngineError, EngineEvent, EventSink, ExitReason,
    SnapshotSource, SnapshotTarget, VmSpec,
};

/// What the fake can do and how it behaves.
#[derive(Debug, Clone, Default)]
pub struct FakeBehaviour {
    /// `start` fails with this message (as an invalid spec).
    pub fail_start: Option<String>,
    pub snapshots: bool,
    pub drive_updates: bool,
    pub ctrl_alt_del: bool,
    /// Emit a boot signal right after start.
    pub boot_signal: bool,
    /// End the guest this long after start, with this reason.
    pub exit_after: Option<(Duration, ExitReason)>,
    /// What `snapshot_metadata` finds in every snapshot.
    pub snapshot_metadata: Option<String>,
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    sink: Option<EventSink>,
    spec: Option<VmSpec>,
    exited: Option<ExitReason>,
}

/// The fake engine.
pub struct FakeEngine {
    pub behaviour: FakeBehaviour,
    state: Mutex<State>,
    cv: Condvar,
}

impl FakeEngine {
    pub fn new(behaviour: FakeBehaviour) -> Arc<FakeEngine> {
        Arc::new(FakeEngine {
            behaviour,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        })
    }

    /// Every call so far, e.g. `start`, `pause`, `update_drive rootfs`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The spec `start` or `restore` received.
    pub fn spec(&self) -> Option<VmSpec> {
        self.state.lock().unwrap().spec.clone()
    }

    fn record(&self, call: String) {
        self.state.lock().unwrap().calls.push(call);
    }

    /// Sends an event as the engine's threads would.
    pub fn emit(&self, ev: EngineEvent) {
        let sink = self.state.lock().unwrap().sink.clone();
        if let Some(sink) = sink {
            sink(ev);
        }
    }

    /// Ends the guest: `wait` returns and `Exited` is emitted.
    pub fn finish(&self, reason: ExitReason) {
        {
            let mut s = self.state.lock().unwrap();
            if s.exited.is_some() {
                return;
            }
            s.exited = Some(reason.clone());
        }
        self.cv.notify_all();
        self.emit(EngineEvent::Exited {
            at: Instant::now(),
            reason,
        });
    }

    fn started(self: &Arc<Self>, spec: &VmSpec, events: EventSink) {
        {
            let mut s = self.state.lock().unwrap();
            s.sink = Some(events);
            s.spec = Some(spec.clone());
        }
        if self.behaviour.boot_signal {
            self.emit(EngineEvent::GuestBootSignal { at: Instant::now() });
        }
        if let Some((after, reason)) = self.behaviour.exit_after.clone() {
            let me = self.clone();
            std::thread::spawn(move || {
                std::thread::sleep(after);
                me.finish(reason);
            });
        }
    }

    fn unsupported(&self, what: &str) -> EngineError {
        EngineError::Unsupported {
            engine: "fake".into(),
            what: what.into(),
        }
    }
}

/// Wraps an `Arc<FakeEngine>` so `Engine::start` can reach the `Arc`.
pub struct FakeHandle(pub Arc<FakeEngine>);

/// What a fake engine with `b` declares (the API reads it before the engine exists).
pub fn capabilities(b: &FakeBehaviour) -> Capabilities {
    Capabilities {
        snapshots: b.snapshots,
        drive_hot_update: b.drive_updates,
        ctrl_alt_del: b.ctrl_alt_del,
        entropy_ops_limit: ec1_engine::Feature::Missing {
            why: "the fake limits bytes only",
        },
        free_page_hinting: ec1_engine::Feature::default(),
    }
}

impl Engine for FakeHandle {
    fn name(&self) -> &str {
        "fake"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.0.behaviour)
    }

    fn start(&self, spec: &VmSpec, events: EventSink) -> Result<(), EngineError> {
        self.0.record("start".into());
        if let Some(m) = &self.0.behaviour.fail_start {
            return Err(EngineError::InvalidSpec(m.clone()));
        }
        self.0.started(spec, events);
        Ok(())
    }

    fn pause(&self) -> Result<(), EngineError> {
        self.0.record("pause".into());
        Ok(())
    }

    fn resume(&self) -> Result<(), EngineError> {
        self.0.record("resume".into());
        Ok(())
    }

    fn send_ctrl_alt_del(&self) -> Result<(), EngineError> {
        self.0.record("ctrl_alt_del".into());
        if self.0.behaviour.ctrl_alt_del {
            Ok(())
        } else {
            Err(self.0.unsupported("Ctrl-Alt-Del"))
        }
    }

    fn stop(&self) -> Result<(), EngineError> {
        self.0.record("stop".into());
        self.0.finish(ExitReason::Stopped);
        Ok(())
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitReason>, EngineError> {
        let s = self.0.state.lock().unwrap();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = s;
        loop {
            if let Some(r) = &s.exited {
                return Ok(Some(r.clone()));
            }
            match deadline {
                None => s = self.0.cv.wait(s).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    s = self.0.cv.wait_timeout(s, d - now).unwrap().0;
                }
            }
        }
    }

    fn snapshot(&self, target: &SnapshotTarget) -> Result<(), EngineError> {
        if !self.0.behaviour.snapshots {
            return Err(self.0.unsupported("snapshots"));
        }
        self.0.record(format!(
            "snapshot {} {} diff={}",
            target.state_path.display(),
            target.mem_path.display(),
            target.diff
        ));
        Ok(())
    }

    fn snapshot_metadata(
        &self,
        _state_path: &std::path::Path,
    ) -> Result<Option<String>, EngineError> {
        if !self.0.behaviour.snapshots {
            return Err(self.0.unsupported("snapshot restore"));
        }
        Ok(self.0.behaviour.snapshot_metadata.clone())
    }

    fn restore(
        &self,
        spec: &VmSpec,
        source: &SnapshotSource,
        events: EventSink,
    ) -> Result<(), EngineError> {
        if !self.0.behaviour.snapshots {
            return Err(self.0.unsupported("snapshot restore"));
        }
        let nets: String = source
            .net_overrides
            .iter()
            .map(|o| format!(" {}->{}", o.iface_id, o.tap))
            .chain(
                source
                    .metadata
                    .as_ref()
                    .map(|m| format!(" mmds@{}", m.ipv4)),
            )
            .collect();
        self.0.record(format!(
            "restore {} {} resume={}{nets}",
            source.state_path.display(),
            source.mem_path.display(),
            source.resume
        ));
        self.0.started(spec, events);
        Ok(())
    }

    fn update_drive(&self, update: &DriveUpdate) -> Result<(), EngineError> {
        if !self.0.behaviour.drive_updates {
            return Err(self.0.unsupported("drive updates on a running guest"));
        }
        self.0.record(format!(
            "update_drive {} path={:?} rate_limit={}",
            update.id,
            update.path,
            update.rate_limit.is_some()
        ));
        Ok(())
    }

    fn set_balloon(&self, amount_mib: u32) -> Result<(), EngineError> {
        self.0.record(format!("set_balloon {amount_mib}"));
        Ok(())
    }

    fn balloon_stats(&self) -> Result<ec1_engine::BalloonStats, EngineError> {
        self.0.record("balloon_stats".into());
        Ok(ec1_engine::BalloonStats {
            target_mib: 64,
            actual_mib: 60,
            free_memory: Some(1 << 20),
            ..Default::default()
        })
    }

    fn set_balloon_stats_interval(&self, secs: u16) -> Result<(), EngineError> {
        self.0.record(format!("set_balloon_stats_interval {secs}"));
        Ok(())
    }
}

/// A factory handing out `engine` (once started, the VMM owns it).
pub fn factory(engine: Arc<FakeEngine>) -> ec1_api::EngineFactory {
    Arc::new(move |_spec: &VmSpec| Ok(Arc::new(FakeHandle(engine.clone())) as Arc<dyn Engine>))
}
