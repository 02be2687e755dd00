//! How a guest ended, and telling everyone who waits for it exactly once.

use std::process::ExitStatus;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ec1_engine::{EngineEvent, EventSink, ExitReason};
use qapi::qmp::ShutdownCause;

/// Why QEMU ended, from its exit status, whether [`ec1_engine::Engine::stop`] asked for
/// it, and the cause of QEMU's last `SHUTDOWN` event (if one was seen).
///
/// QEMU exits with status 0 both when the guest rebooted or powered off (`-no-reboot`)
/// and when it was told to quit or got `SIGTERM`/`SIGINT`; the event tells these apart.
pub(crate) fn classify(
    status: ExitStatus,
    stop_requested: bool,
    cause: Option<ShutdownCause>,
    stderr: &str,
) -> ExitReason {
    if stop_requested {
        return ExitReason::Stopped;
    }
    let crashed = |status: String| ExitReason::EngineCrashed {
        status,
        stderr: stderr.to_string(),
    };
    if status.code() != Some(0) {
        return crashed(status.to_string());
    }
    let outside = match cause {
        Some(ShutdownCause::host_signal) => Some("a termination signal"),
        Some(ShutdownCause::host_qmp_quit) => Some("a `quit` from another QMP client"),
        Some(ShutdownCause::host_qmp_system_reset) => {
            Some("a `system_reset` from another QMP client")
        }
        Some(ShutdownCause::host_ui) => Some("its user interface"),
        Some(ShutdownCause::host_error) => Some("a host error"),
        Some(
            ShutdownCause::guest_shutdown
            | ShutdownCause::guest_reset
            | ShutdownCause::guest_panic
            | ShutdownCause::subsystem_reset
            | ShutdownCause::snapshot_load
            | ShutdownCause::none,
        )
        | None => None,
    };
    match outside {
        Some(by) => crashed(format!("{status}, ended from outside by {by}")),
        None => ExitReason::GuestShutdown,
    }
}

#[derive(Default)]
struct State {
    /// The end as recorded, possibly not yet announced.
    pending: Option<(ExitReason, Instant)>,
    /// The end as waiters see it: set once the `Exited` event (if due) was delivered.
    published: Option<ExitReason>,
    /// `start()` succeeded: the caller expects an `Exited` event.
    announce: bool,
    announced: bool,
}

/// The guest's end, once known: waited for by [`ec1_engine::Engine::wait`], and
/// announced as [`EngineEvent::Exited`] exactly once — only if `start()` succeeded
/// (a failed start reports its error instead). Waiters wake only after the event was
/// delivered, so whoever saw `wait()` return has also had the event.
pub(crate) struct ExitCell {
    state: Mutex<State>,
    changed: Condvar,
    sink: EventSink,
}

impl ExitCell {
    pub fn new(sink: EventSink) -> ExitCell {
        ExitCell {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            sink,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the end (first call wins), announces it if `start()` has succeeded,
    /// then wakes the waiters.
    pub fn record(&self, reason: ExitReason) {
        let event = {
            let mut s = self.lock();
            if s.pending.is_some() {
                return;
            }
            let at = Instant::now();
            ec1_trace::event_at!("vm.exit", at, reason = format!("{reason:?}"));
            s.pending = Some((reason.clone(), at));
            let due = s.announce && !s.announced;
            s.announced |= due;
            due.then(|| EngineEvent::Exited {
                at,
                reason: reason.clone(),
            })
        };
        if let Some(e) = event {
            (self.sink)(e);
        }
        self.lock().published = Some(reason);
        self.changed.notify_all();
    }

    /// Marks `start()` as successful; announces an end recorded meanwhile.
    pub fn announce(&self) {
        let event = {
            let mut s = self.lock();
            s.announce = true;
            match (&s.pending, s.announced) {
                (Some((reason, at)), false) => {
                    let e = EngineEvent::Exited {
                        at: *at,
                        reason: reason.clone(),
                    };
                    s.announced = true;
                    Some(e)
                }
                _ => None,
            }
        };
        if let Some(e) = event {
            (self.sink)(e);
        }
    }

    pub fn get(&self) -> Option<ExitReason> {
        self.lock().published.clone()
    }

    /// Waits until the end is recorded or `timeout` passed (`None`: for ever).
    pub fn wait(&self, timeout: Option<Duration>) -> Option<ExitReason> {
        let mut s = self.lock();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(r) = &s.published {
                return Some(r.clone());
            }
            match deadline {
                None => s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    s = self
                        .changed
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn classification() {
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(classify(exited(0), true, None, ""), ExitReason::Stopped);
        assert_eq!(classify(killed, true, None, ""), ExitReason::Stopped);
        assert_eq!(
            classify(exited(0), false, None, ""),
            ExitReason::GuestShutdown
        );
        assert_eq!(
            classify(exited(0), false, Some(ShutdownCause::guest_reset), ""),
            ExitReason::GuestShutdown
        );
        assert_eq!(
            classify(exited(0), false, Some(ShutdownCause::guest_shutdown), ""),
            ExitReason::GuestShutdown
        );
        assert_eq!(
            classify(killed, false, None, "err"),
            ExitReason::EngineCrashed {
                status: "signal: 9 (SIGKILL)".into(),
                stderr: "err".into()
            }
        );
        assert_eq!(
            classify(exited(1), false, Some(ShutdownCause::guest_reset), "bad"),
            ExitReason::EngineCrashed {
                status: "exit status: 1".into(),
                stderr: "bad".into()
            }
        );
        match classify(
            exited(0),
            false,
            Some(ShutdownCause::host_signal),
            "terminating on signal 15",
        ) {
            ExitReason::EngineCrashed { status, stderr } => {
                assert_eq!(
                    status,
                    "exit status: 0, ended from outside by a termination signal"
                );
                assert_eq!(stderr, "terminating on signal 15");
            }
            other => panic!("{other:?}"),
        }
        for c in [
            ShutdownCause::host_qmp_quit,
            ShutdownCause::host_qmp_system_reset,
            ShutdownCause::host_ui,
            ShutdownCause::host_error,
        ] {
            assert!(matches!(
                classify(exited(0), false, Some(c), ""),
                ExitReason::EngineCrashed { .. }
            ));
        }
    }

    fn cell() -> (Arc<ExitCell>, Arc<Mutex<Vec<EngineEvent>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let e = events.clone();
        let sink: EventSink = Arc::new(move |ev| e.lock().unwrap().push(ev));
        (Arc::new(ExitCell::new(sink)), events)
    }

    fn exits(events: &Mutex<Vec<EngineEvent>>) -> Vec<ExitReason> {
        events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Exited { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn announced_once_after_start() {
        let (c, events) = cell();
        c.announce();
        assert!(exits(&events).is_empty());
        c.record(ExitReason::GuestShutdown);
        c.record(ExitReason::Stopped);
        c.announce();
        assert_eq!(exits(&events), [ExitReason::GuestShutdown]);
        assert_eq!(c.get(), Some(ExitReason::GuestShutdown));
    }

    #[test]
    fn an_end_before_start_returned_is_announced_by_announce() {
        let (c, events) = cell();
        c.record(ExitReason::Stopped);
        assert!(exits(&events).is_empty());
        c.announce();
        c.announce();
        assert_eq!(exits(&events), [ExitReason::Stopped]);
    }

    #[test]
    fn a_failed_start_is_never_announced() {
        let (c, events) = cell();
        c.record(ExitReason::EngineCrashed {
            status: "x".into(),
            stderr: String::new(),
        });
        assert!(exits(&events).is_empty());
        assert!(c.get().is_some());
    }

    #[test]
    fn waiters_wake_only_after_the_event_was_delivered() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let e = events.clone();
        let sink: EventSink = Arc::new(move |ev| {
            std::thread::sleep(Duration::from_millis(50));
            e.lock().unwrap().push(ev);
        });
        let c = Arc::new(ExitCell::new(sink));
        c.announce();
        let (c2, ev2) = (c.clone(), events.clone());
        let waiter = std::thread::spawn(move || {
            let r = c2.wait(Some(Duration::from_secs(10)));
            (r, ev2.lock().unwrap().len())
        });
        c.record(ExitReason::Stopped);
        assert_eq!(waiter.join().unwrap(), (Some(ExitReason::Stopped), 1));
    }

    #[test]
    fn wait_is_bounded_and_wakes_on_record() {
        let (c, _events) = cell();
        let t0 = Instant::now();
        assert_eq!(c.wait(Some(Duration::from_millis(30))), None);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        let c2 = c.clone();
        let h = std::thread::spawn(move || c2.wait(None));
        std::thread::sleep(Duration::from_millis(20));
        c.record(ExitReason::GuestShutdown);
        assert_eq!(h.join().unwrap(), Some(ExitReason::GuestShutdown));
        assert_eq!(
            c.wait(Some(Duration::from_secs(1))),
            Some(ExitReason::GuestShutdown)
        );
    }
}
