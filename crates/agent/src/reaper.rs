//! Collecting the exit status of the commands the agent starts.
//!
//! As PID 1 the agent must also reap orphans (every process whose parent died is
//! re-parented to it), so one thread waits for *any* child and hands each status to
//! the session that registered the pid ([`InitReaper`]). Everywhere else (the hand-off
//! mode, where the image's init is PID 1, and tests on the host) a process must not
//! reap children it did not start, so each command gets its own `waitpid`
//! ([`DirectReaper`]).

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

/// Starts commands and reports their raw `waitpid` status once they end.
pub trait Reaper: Send + Sync {
    /// Spawns `cmd`; the receiver yields its wait status exactly once. The caller must
    /// never wait for the returned `Child` itself.
    fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Receiver<libc::c_int>)>;
}

pub(crate) fn waitpid_retry(pid: libc::pid_t) -> io::Result<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for waitpid(2).
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            return Ok((r, status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `waitpid(pid)` thread per command.
#[derive(Debug, Default)]
pub struct DirectReaper;

impl Reaper for DirectReaper {
    fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Receiver<libc::c_int>)> {
        let child = cmd.spawn()?;
        let pid = child.id() as libc::pid_t;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                if let Ok((_, status)) = waitpid_retry(pid) {
                    let _ = tx.send(status);
                }
            })?;
        Ok((child, rx))
    }
}

/// PID 1's reaper: one thread reaps every child, orphans included.
pub struct InitReaper {
    state: Mutex<InitState>,
    spawned: Condvar,
}

struct InitState {
    waiters: HashMap<libc::pid_t, Sender<libc::c_int>>,
    /// Bumped at every spawn, so the reaper knows when "no children" stops being true.
    generation: u64,
}

impl InitReaper {
    /// Creates the reaper and starts its thread. Reaps every child of this process:
    /// use it only in a process that owns all its children (PID 1).
    pub fn start() -> io::Result<Arc<InitReaper>> {
        let r = Arc::new(InitReaper {
            state: Mutex::new(InitState {
                waiters: HashMap::new(),
                generation: 0,
            }),
            spawned: Condvar::new(),
        });
        let me = r.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || me.run())?;
        Ok(r)
    }

    fn run(&self) {
        loop {
            let seen = self.state.lock().unwrap().generation;
            // Peek at the next child that ended, without reaping it: `std` may still be
            // inside `spawn` for it (a failed exec, which std reaps itself and would
            // panic on if we took it first).
            // SAFETY: siginfo_t is plain data; waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child waitable.
            let r =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if r == -1 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => {
                        // No children at all: sleep until a command is started. (In
                        // the guest every process descends from PID 1, so orphans can
                        // only appear while some child exists.)
                        let mut s = self.state.lock().unwrap();
                        while s.generation == seen {
                            s = self.spawned.wait(s).unwrap();
                        }
                        continue;
                    }
                    _ => {
                        crate::warn!("waitid failed: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        continue;
                    }
                }
            }
            // SAFETY: waitid succeeded with WEXITED, so `si_pid` is valid.
            let pid = unsafe { info.si_pid() };
            // A spawn in progress holds this lock: once we have it, the child is either
            // registered, reaped by std already, or an orphan.
            let mut s = self.state.lock().unwrap();
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                if let Some(tx) = s.waiters.remove(&pid) {
                    let _ = tx.send(status);
                }
                // Otherwise an orphan: reaping it was the point.
            }
        }
    }
}

impl Reaper for InitReaper {
    fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Receiver<libc::c_int>)> {
        // Register under the lock the reaper needs to dispatch, so a child that exits
        // at once cannot be mistaken for an orphan.
        let mut s = self.state.lock().unwrap();
        let child = cmd.spawn()?;
        let (tx, rx) = mpsc::channel();
        s.waiters.insert(child.id() as libc::pid_t, tx);
        s.generation += 1;
        self.spawned.notify_all();
        Ok((child, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_reaper_reports_exit_statuses() {
        let r = DirectReaper;
        let (_c, rx) = r.spawn(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        let st = rx.recv().unwrap();
        assert_eq!(crate::sys::termination(st), ec1_proto::Termination::Code(7));
        let e = r.spawn(&mut Command::new("/nonexistent/x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
