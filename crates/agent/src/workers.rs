//! Threads for the blocking work of a command (waiting for it, pumping its output,
//! feeding its input), kept after use and handed the next job.
//!
//! Every command needs two or three such threads. Under emulation, creating a thread
//! and letting it exit costs far more than waking one that waits: with a fresh thread
//! per job, an exec round trip of `true` spent ~0.9 ms of its ~5 ms starting threads.
//! The pool grows with demand (a job never waits for another to finish: a command's
//! threads block for as long as it runs) and a thread left idle for [`IDLE`] exits.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

/// How long a thread waits for a new job before it exits.
pub const IDLE: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The agent's pool: commands' threads, and uploads' and downloads'.
pub static WORKERS: Workers = Workers::new(256 * 1024);

/// Runs `f` on a thread of [`WORKERS`].
pub fn run(f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    WORKERS.run(f)
}

/// A pool of threads with `stack` bytes of stack each.
pub struct Workers {
    /// One sender per idle thread, with the thread's number; a thread is idle from the
    /// moment its sender is here until it is taken.
    idle: Mutex<Vec<(u64, Sender<Job>)>>,
    next_id: AtomicU64,
    stack: usize,
    idle_for: Duration,
}

impl Workers {
    pub const fn new(stack: usize) -> Workers {
        Workers::with_idle_time(stack, IDLE)
    }

    const fn with_idle_time(stack: usize, idle_for: Duration) -> Workers {
        Workers {
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            stack,
            idle_for,
        }
    }

    /// Runs `f` on an idle thread, or on a new one if none is idle.
    pub fn run(&'static self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let mut job: Job = Box::new(f);
        loop {
            let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match taken {
                // A thread leaves the idle list before it drops its receiver, so this
                // send cannot fail; if it ever did, the job would go to another thread.
                Some((_, tx)) => match tx.send(job) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::SendError(j)) => job = j,
                },
                None => break,
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .stack_size(self.stack)
            .spawn(move || self.serve(id, job))
            .map(|_| ())
    }

    /// Runs `job`, then waits for the next one until idle for too long.
    fn serve(&'static self, id: u64, mut job: Job) {
        loop {
            job();
            let (tx, rx) = mpsc::channel();
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((id, tx));
            job = match rx.recv_timeout(self.idle_for) {
                Ok(j) => j,
                // Our sender sits in the idle list until taken, so the channel can
                // only time out, never disconnect, while we wait.
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                    match idle.iter().position(|(i, _)| *i == id) {
                        Some(i) => {
                            idle.remove(i);
                            return;
                        }
                        // Taken just now: its job is on the way.
                        None => {
                            drop(idle);
                            match rx.recv() {
                                Ok(j) => j,
                                Err(_) => return,
                            }
                        }
                    }
                }
            };
        }
    }

    /// Threads waiting for a job.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    fn leak(w: Workers) -> &'static Workers {
        Box::leak(Box::new(w))
    }

    #[test]
    fn threads_are_reused_and_the_pool_grows_with_blocking_jobs() {
        let w = leak(Workers::new(64 * 1024));
        // Three jobs that block until all three run: each needs a thread of its own.
        let b = Arc::new(Barrier::new(4));
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let (b, tx) = (b.clone(), tx.clone());
            w.run(move || {
                b.wait();
                tx.send(std::thread::current().id()).unwrap();
            })
            .unwrap();
        }
        b.wait();
        let first: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.idle_count() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(w.idle_count(), 3);
        // The next jobs run on those threads, not on new ones.
        for _ in 0..3 {
            let tx = tx.clone();
            w.run(move || tx.send(std::thread::current().id()).unwrap())
                .unwrap();
            let id = rx.recv().unwrap();
            assert!(first.contains(&id));
            while w.idle_count() < 3 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn idle_threads_exit_and_jobs_racing_their_exit_still_run() {
        let w = leak(Workers::with_idle_time(64 * 1024, Duration::from_millis(2)));
        let done = Arc::new(AtomicUsize::new(0));
        // Jobs spaced around the idle timeout: some find an idle thread, some one
        // that is just leaving, some none. Every one must run exactly once.
        for i in 0..200 {
            let d = done.clone();
            w.run(move || {
                d.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            if i % 3 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while done.load(Ordering::SeqCst) < 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(done.load(Ordering::SeqCst), 200);
        while w.idle_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(w.idle_count(), 0, "idle threads did not exit");
    }
}
