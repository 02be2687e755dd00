//! Describing a command to run in the guest.

use ec1_proto::{ExecRequest, PtySize};
use std::time::Duration;

/// A command to run in the guest, built like `std::process::Command`.
///
/// ```
/// use std::time::Duration;
/// let cmd = ec1_client::Command::new("sh")
///     .args(["-c", "echo $GREETING"])
///     .env("GREETING", "hello")
///     .cwd("/tmp")
///     .timeout(Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub(crate) req: ExecRequest,
}

impl Command {
    /// `program` is looked up in the guest's `PATH` unless it contains a `/`.
    pub fn new(program: impl AsRef<[u8]>) -> Command {
        Command {
            req: ExecRequest {
                argv: vec![program.as_ref().to_vec()],
                ..Default::default()
            },
        }
    }

    /// `sh -c script`.
    pub fn shell(script: impl AsRef<[u8]>) -> Command {
        Command::new("sh").arg("-c").arg(script)
    }

    pub fn arg(mut self, a: impl AsRef<[u8]>) -> Command {
        self.req.argv.push(a.as_ref().to_vec());
        self
    }

    pub fn args<I, A>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        self.req
            .argv
            .extend(args.into_iter().map(|a| a.as_ref().to_vec()));
        self
    }

    /// Sets a variable on top of the agent's base environment (`PATH`, `HOME`, ...).
    pub fn env(mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Command {
        self.req
            .env
            .push((key.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }

    /// Working directory in the guest (default `/`).
    pub fn cwd(mut self, dir: impl AsRef<[u8]>) -> Command {
        self.req.cwd = Some(dir.as_ref().to_vec());
        self
    }

    /// Runs as this user id (and, unless [`Command::gid`] says otherwise, keeps gid 0).
    pub fn uid(mut self, uid: u32) -> Command {
        self.req.uid = Some(uid);
        self
    }

    pub fn gid(mut self, gid: u32) -> Command {
        self.req.gid = Some(gid);
        self
    }

    /// Runs on a new pseudo-terminal of this size: stdout carries the terminal's
    /// output, stderr stays empty, stdin is the keyboard.
    pub fn pty(mut self, rows: u16, cols: u16) -> Command {
        self.req.pty = Some(PtySize { rows, cols });
        self
    }

    /// Streams stdin from the host ([`crate::Process::stdin`]); otherwise the command's
    /// stdin is `/dev/null`.
    pub fn stdin(mut self, on: bool) -> Command {
        self.req.stdin = on;
        self
    }

    /// Kills the command's process group (the command and its children) this long
    /// after it started; its status then says [`crate::ExitStatus::timed_out`].
    pub fn timeout(mut self, t: Duration) -> Command {
        self.req.timeout_ms = Some(t.as_millis().min(u64::MAX as u128) as u64);
        self
    }

    /// The wire request.
    pub fn request(&self) -> &ExecRequest {
        &self.req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_fills_the_request() {
        let c = Command::shell("exit 3")
            .args(["a", "b"])
            .env("K", "V")
            .cwd("/tmp")
            .uid(1)
            .gid(2)
            .pty(24, 80)
            .stdin(true)
            .timeout(Duration::from_millis(1500));
        let r = c.request();
        assert_eq!(
            r.argv,
            vec![
                b"sh".to_vec(),
                b"-c".to_vec(),
                b"exit 3".to_vec(),
                b"a".to_vec(),
                b"b".to_vec()
            ]
        );
        assert_eq!(r.env, vec![(b"K".to_vec(), b"V".to_vec())]);
        assert_eq!(r.cwd.as_deref(), Some(&b"/tmp"[..]));
        assert_eq!((r.uid, r.gid), (Some(1), Some(2)));
        assert_eq!(r.pty, Some(PtySize { rows: 24, cols: 80 }));
        assert!(r.stdin);
        assert_eq!(r.timeout_ms, Some(1500));
    }
}
