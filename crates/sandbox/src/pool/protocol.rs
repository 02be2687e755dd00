//! The pool's socket and its one request.
//!
//! A client connects to the pool of a template (`pool-<key>.sock` in the template
//! cache), writes `claim\n` and reads either `ok <run directory>\n` (the
//! clone runs; its agent waits on `<run directory>/agent.sock` and its console goes to
//! `<run directory>/console.log`) or `empty\n`. The claim lasts as long as the
//! connection: when the client closes it (or dies), the pool stops the clone. The
//! client itself then reconnects to the agent and makes the clone its own (entropy,
//! clock, host name), exactly as after a restore.

use std::path::{Path, PathBuf};

/// The agent socket in a clone's run directory.
pub const AGENT_SOCKET: &str = "agent.sock";
/// The console log in a clone's run directory.
pub const CONSOLE_LOG: &str = "console.log";

/// The socket of the pool for template `key` in the template cache `root`. Short
/// (Unix socket paths are limited to 107 bytes): 16 hex digits of the key.
pub fn socket_path(root: &Path, key: &str) -> PathBuf {
    root.join(format!("pool-{}.sock", &key[..key.len().min(16)]))
}

/// The claim request.
pub const CLAIM: &str = "claim\n";

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A clone runs with this run directory.
    Ok(PathBuf),
    /// No warm clone right now.
    Empty,
}

impl Answer {
    pub fn line(&self) -> String {
        match self {
            Answer::Ok(dir) => format!("ok {}\n", dir.display()),
            Answer::Empty => "empty\n".into(),
        }
    }

    pub fn parse(line: &str) -> Option<Answer> {
        let line = line.strip_suffix('\n')?;
        if line == "empty" {
            return Some(Answer::Empty);
        }
        let dir = line.strip_prefix("ok ")?;
        (!dir.is_empty()).then(|| Answer::Ok(dir.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let ok = Answer::Ok("/tmp/a dir/x".into());
        assert_eq!(Answer::parse(&ok.line()), Some(ok));
        assert_eq!(Answer::parse(&Answer::Empty.line()), Some(Answer::Empty));
        for bad in ["", "ok \n", "ok a", "nope\n", "empty"] {
            assert_eq!(Answer::parse(bad), None, "{bad:?}");
        }
        let p = socket_path(Path::new("/c/templates"), "0123456789abcdef0123");
        assert_eq!(p, PathBuf::from("/c/templates/pool-0123456789abcdef.sock"));
    }
}
