//! Waiting for the threads that read QEMU's sockets to drain them.
//!
//! When QEMU exits, bytes it wrote just before (a boot signal, a `SHUTDOWN` event) may
//! still sit in socket buffers. The supervisor waits for every reader to reach the end
//! of its socket before it announces the exit, so that no event follows `Exited` and
//! the exit is classified with the last `SHUTDOWN` cause.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Reads `socket` into `buf` until QEMU closes its end (or the read fails), handing
/// each chunk to `each`: the loop of every reader thread here.
pub(crate) fn read_chunks(
    socket: &mut impl std::io::Read,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8]),
) {
    loop {
        match socket.read(buf) {
            Ok(0) => return,
            Ok(n) => each(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Counts the socket readers still running.
#[derive(Default)]
pub(crate) struct Readers {
    active: Mutex<usize>,
    changed: Condvar,
}

/// Held by a reader thread; dropping it marks the reader finished.
pub(crate) struct ReaderGuard(Arc<Readers>);

impl Readers {
    /// Registers a reader (before its thread starts, so a waiter cannot miss it).
    pub fn enter(self: &Arc<Self>) -> ReaderGuard {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        ReaderGuard(self.clone())
    }

    /// Waits until no reader runs, at most `timeout`. Returns whether they all ended.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = self.active.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            n = self
                .changed
                .wait_timeout(n, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut n = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_guards_and_is_bounded() {
        let r = Arc::new(Readers::default());
        assert!(r.wait_idle(Duration::ZERO));
        let g = r.enter();
        assert!(!r.wait_idle(Duration::from_millis(20)));
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(g);
        });
        assert!(r.wait_idle(Duration::from_secs(10)));
        h.join().unwrap();
    }
}
