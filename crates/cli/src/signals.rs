//! The signals ec1 itself receives, taken by one thread with `sigwait` (blocked in
//! every thread, so no async-signal-safety constraints on what that thread does).
//!
//! `ec1 run` and `ec1 exec` forward them to the command in the guest, as `docker run`
//! or `ssh` do: a Ctrl-C or a `kill` of ec1 reaches the command, which decides how to
//! end; ec1 then exits with its status and tears the VM down in order (nothing left in
//! the run directory). `ec1 pool` stops on them.

use std::io;

/// The signals that ask a foreground program to stop.
pub const TERMINATION: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// A set of signals blocked in the calling thread and in the threads it starts from
/// then on; [`Blocked::wait`] takes the next one.
#[derive(Clone, Copy)]
pub struct Blocked {
    set: libc::sigset_t,
}

impl Blocked {
    /// Blocks `signals` in this thread. Call it before starting threads, so that none of
    /// them takes one of these signals with the default action.
    pub fn block(signals: &[i32]) -> io::Result<Blocked> {
        // SAFETY: sigemptyset/sigaddset initialise and fill the local set.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            set
        };
        // SAFETY: blocks the signals in this thread; `set` is a valid, initialised set.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Blocked { set })
    }

    /// Waits for the next of the blocked signals.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: `set` is a valid signal set; `sig` is a writable int.
        unsafe { libc::sigwait(&self.set, &mut sig) };
        sig
    }
}

/// Starts a thread that passes every signal of `blocked` to `to` for as long as the
/// process lives (signals that came before it started are pending and passed first).
pub fn forward(blocked: Blocked, to: impl Fn(i32) + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("ec1-signals".into())
        .spawn(move || loop {
            to(blocked.wait());
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_waits_to_be_taken_instead_of_acting() {
        // SIGUSR2's default action would end the test process.
        let blocked = Blocked::block(&[libc::SIGUSR2]).unwrap();
        for _ in 0..2 {
            // SAFETY: raise() sends the signal to this thread, where it is blocked:
            // it stays pending until `wait` takes it.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
            assert_eq!(blocked.wait(), libc::SIGUSR2);
        }
    }
}
