//! The pool's socket and its requests.
//!
//! A client connects to the pool of a template (`pool-<key>.sock` in the template
//! cache) and writes one request line:
//!
//! - `claim\n`: the answer is `ok <run directory>\n` (the clone runs; its agent
//!   waits on `<run directory>/agent.sock` and its console goes to
//!   `<run directory>/console.log`) or `empty\n`. The claim lasts as long as the
//!   connection: when the client closes it (or dies), the pool stops the clone. The
//!   client itself then reconnects to the agent and makes the clone its own (entropy,
//!   clock, host name), exactly as after a restore.
//! - `info\n`: one JSON line, a [`PoolStatus`] (`ec1 pool ls`).
//! - `stop\n`: `stopping\n`, and the pool ends (`ec1 pool stop`).

use ec1_proto::{Msg, ReadyInfo};
use std::path::{Path, PathBuf};

/// The agent socket in a clone's run directory.
pub const AGENT_SOCKET: &str = "agent.sock";
/// The console log in a clone's run directory.
pub const CONSOLE_LOG: &str = "console.log";

/// The socket of the pool for template `key` in the template cache `root`. Short
/// (Unix socket paths are limited to 107 bytes): 16 hex digits of the key.
pub fn socket_path(root: &Path, key: &str) -> PathBuf {
    root.join(format!("pool-{}.sock", short(key)))
}

/// The lock its one live pool holds (`flock`: released when that process dies).
pub fn lock_path(root: &Path, key: &str) -> PathBuf {
    root.join(format!("pool-{}.lock", short(key)))
}

/// The log of the pool of template `key` when it runs in the background.
pub fn log_path(root: &Path, key: &str) -> PathBuf {
    root.join(format!("pool-{}.log", short(key)))
}

/// How the run directories of the pool's clones begin (in the temporary directory):
/// a pool that starts removes what a killed predecessor left.
pub fn run_dir_prefix(key: &str) -> String {
    format!("ec1-pool-{}-", short(key))
}

fn short(key: &str) -> &str {
    &key[..key.len().min(16)]
}

/// The claim request.
pub const CLAIM: &str = "claim\n";

/// What a client asks a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Claim,
    Info,
    Stop,
}

impl Request {
    pub fn line(self) -> &'static str {
        match self {
            Request::Claim => CLAIM,
            Request::Info => "info\n",
            Request::Stop => "stop\n",
        }
    }

    pub fn parse(line: &str) -> Option<Request> {
        [Request::Claim, Request::Info, Request::Stop]
            .into_iter()
            .find(|r| r.line() == line)
    }
}

/// The answer to [`Request::Stop`].
pub const STOPPING: &str = "stopping\n";

/// What a running pool says about itself (the answer to [`Request::Info`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// The template its clones are restored from.
    pub key: String,
    /// The pool's process.
    pub pid: u32,
    /// How many warm clones it keeps.
    pub size: usize,
    /// How many are warm now.
    pub ready: usize,
    /// Clones handed out so far.
    pub claims: u64,
    /// Claims running now.
    pub claimed: usize,
    /// Seconds since the pool started.
    pub uptime_s: u64,
    /// Seconds since the last claim (or the start).
    pub idle_s: u64,
    /// The pool ends after this many idle seconds (`None`: never).
    pub idle_timeout_s: Option<u64>,
    /// Whether its clones are warmed up before they are paused (`false`: `--lean`).
    pub warm: bool,
    /// The guest's memory and vCPUs.
    pub mem_mib: u32,
    pub vcpus: u8,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A clone runs with this run directory; its agent connection comes with the
    /// answer (`SCM_RIGHTS`) when `ready`, what the agent announced on it, is given:
    /// `adopt <Ready message, hex> <dir>`. Otherwise `ok <dir>`.
    Ok {
        dir: PathBuf,
        ready: Option<ReadyInfo>,
    },
    /// No warm clone right now.
    Empty,
}

impl Answer {
    pub fn line(&self) -> String {
        match self {
            Answer::Ok { dir, ready: None } => format!("ok {}\n", dir.display()),
            Answer::Ok {
                dir,
                ready: Some(r),
            } => {
                let bytes = Msg::Ready(r.clone()).encode().unwrap_or_default();
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                format!("adopt {hex} {}\n", dir.display())
            }
            Answer::Empty => "empty\n".into(),
        }
    }

    pub fn parse(line: &str) -> Option<Answer> {
        let line = line.strip_suffix('\n')?;
        if line == "empty" {
            return Some(Answer::Empty);
        }
        if let Some(rest) = line.strip_prefix("adopt ") {
            let (hex, dir) = rest.split_once(' ')?;
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            let Ok(Msg::Ready(ready)) = Msg::decode(&bytes) else {
                return None;
            };
            return (!dir.is_empty()).then(|| Answer::Ok {
                dir: dir.into(),
                ready: Some(ready),
            });
        }
        let dir = line.strip_prefix("ok ")?;
        (!dir.is_empty()).then(|| Answer::Ok {
            dir: dir.into(),
            ready: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let ok = Answer::Ok {
            dir: "/tmp/a dir/x".into(),
            ready: None,
        };
        assert_eq!(Answer::parse(&ok.line()), Some(ok));
        let adopt = Answer::Ok {
            dir: "/tmp/a dir/x".into(),
            ready: Some(ReadyInfo {
                version: 1,
                nonce: 7,
                agent_version: "0.1.0".into(),
                mode: "initramfs".into(),
                ..ReadyInfo::default()
            }),
        };
        assert!(adopt.line().starts_with("adopt "), "{}", adopt.line());
        assert_eq!(Answer::parse(&adopt.line()), Some(adopt));
        assert_eq!(Answer::parse(&Answer::Empty.line()), Some(Answer::Empty));
        for bad in [
            "",
            "ok \n",
            "ok a",
            "nope\n",
            "empty",
            "adopt zz /d\n",
            "adopt 0102 /d\n",
            "adopt 01\n",
        ] {
            assert_eq!(Answer::parse(bad), None, "{bad:?}");
        }
        for r in [Request::Claim, Request::Info, Request::Stop] {
            assert_eq!(Request::parse(r.line()), Some(r));
        }
        assert_eq!(Request::parse("claim"), None);
        assert_eq!(Request::parse("CLAIM\n"), None);
        let p = socket_path(Path::new("/c/templates"), "0123456789abcdef0123");
        assert_eq!(p, PathBuf::from("/c/templates/pool-0123456789abcdef.sock"));
    }
}
