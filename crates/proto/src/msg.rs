//! Control messages: what travels in [`crate::Kind::Control`] frames.
//!
//! One enum serves both directions; each side rejects (for that session only) what
//! is not meant for it. The first payload byte is the message type.

use crate::error::DecodeError;
use crate::refresh::{Refresh, MAX_ENTROPY, MAX_HOSTNAME};
use crate::wire::{Dec, Enc};
use crate::MAX_PAYLOAD;

/// Protocol versions this build speaks; negotiated in [`Msg::Hello`] / [`Msg::Ready`].
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Most arguments an exec may carry (the kernel's own limit is by bytes, not count).
pub const MAX_ARGS: usize = 8192;
/// Most environment entries an exec may carry.
pub const MAX_ENV: usize = 8192;
/// Longest path accepted in a request.
pub const MAX_PATH: usize = 4096;
/// Longest human-readable text (errors, versions).
pub const MAX_TEXT: usize = 16 * 1024;

/// A byte stream of a session, as named in [`Msg::Credit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stream {
    Stdin = 1,
    Stdout = 2,
    Stderr = 3,
    File = 4,
}

impl Stream {
    pub fn from_u8(v: u8) -> Option<Stream> {
        Some(match v {
            1 => Stream::Stdin,
            2 => Stream::Stdout,
            3 => Stream::Stderr,
            4 => Stream::File,
            _ => return None,
        })
    }
}

/// Terminal size for a pty session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Everything needed to start a command in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH` unless it has a `/`.
    pub argv: Vec<Vec<u8>>,
    /// Set on top of the agent's base environment (`PATH`, `HOME`, `TERM` for ptys).
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Working directory; `/` when absent.
    pub cwd: Option<Vec<u8>>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Run on a new pseudo-terminal (stdout carries the terminal's output; there is no
    /// separate stderr).
    pub pty: Option<PtySize>,
    /// Whether the host will stream stdin; otherwise stdin is `/dev/null`.
    pub stdin: bool,
    /// Kill the command's process group this long after it started.
    pub timeout_ms: Option<u64>,
}

impl ExecRequest {
    /// Checks what the decoder cannot: shapes the OS would reject later with a less
    /// clear error.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.argv.is_empty() {
            return Err(DecodeError::Invalid {
                what: "argv",
                why: "empty (a program is needed)".into(),
            });
        }
        if self.argv[0].is_empty() {
            return Err(DecodeError::Invalid {
                what: "argv[0]",
                why: "empty program name".into(),
            });
        }
        if self.argv.iter().any(|a| a.contains(&0)) {
            return Err(DecodeError::Invalid {
                what: "argv",
                why: "an argument contains a NUL byte".into(),
            });
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0) {
                return Err(DecodeError::Invalid {
                    what: "env",
                    why: format!(
                        "bad variable {:?} (names are non-empty without '=', no NUL bytes)",
                        String::from_utf8_lossy(k)
                    ),
                });
            }
        }
        if let Some(cwd) = &self.cwd {
            check_path("cwd", cwd)?;
        }
        if let Some(p) = self.pty {
            if p.rows == 0 || p.cols == 0 {
                return Err(DecodeError::Invalid {
                    what: "pty",
                    why: "zero rows or columns".into(),
                });
            }
        }
        Ok(())
    }
}

fn check_path(what: &'static str, p: &[u8]) -> Result<(), DecodeError> {
    if p.is_empty() || p.contains(&0) {
        return Err(DecodeError::Invalid {
            what,
            why: "empty or contains a NUL byte".into(),
        });
    }
    Ok(())
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this status (0..=255).
    Code(i32),
    /// A signal killed it.
    Signal { signal: i32, core_dumped: bool },
}

/// The agent's announcement, sent in reply to [`Msg::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadyInfo {
    /// The protocol version chosen for this connection.
    pub version: u16,
    /// The nonce of the hello this answers, so a client can tell its answer from
    /// stale bytes of an earlier connection.
    pub nonce: u64,
    /// The agent's crate version.
    pub agent_version: String,
    /// `initramfs`, `root` or `handoff` (see the agent's documentation).
    pub mode: String,
    /// Guest `CLOCK_BOOTTIME` when the agent's `main` began, in nanoseconds.
    pub agent_start_ns: u64,
    /// Guest `CLOCK_BOOTTIME` when the agent had set the system up and opened its port.
    pub agent_ready_ns: u64,
    /// Guest `CLOCK_BOOTTIME` now.
    pub uptime_ns: u64,
    /// Guest `CLOCK_REALTIME` now (ns since the Unix epoch).
    pub realtime_ns: u64,
}

/// Machine-readable class of an [`Msg::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame or message could not be decoded.
    Malformed,
    /// The peer broke the protocol (window exceeded, wrong direction, ...).
    Protocol,
    /// The session id is not (or no longer) known.
    UnknownSession,
    /// The session id is already in use.
    DuplicateSession,
    /// A file or program does not exist.
    NotFound,
    /// The OS refused for lack of permission.
    PermissionDenied,
    /// The command could not be started.
    Spawn,
    /// Another I/O error in the guest.
    Io,
    /// The peers share no protocol version.
    Version,
    /// The guest runs nothing because it is not set up as the host asked (its root
    /// drive could not be mounted): a command must not run anywhere else.
    Refused,
    /// A code from a newer peer.
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::Protocol => 2,
            ErrorCode::UnknownSession => 3,
            ErrorCode::DuplicateSession => 4,
            ErrorCode::NotFound => 5,
            ErrorCode::PermissionDenied => 6,
            ErrorCode::Spawn => 7,
            ErrorCode::Io => 8,
            ErrorCode::Version => 9,
            ErrorCode::Refused => 10,
            ErrorCode::Other(v) => v,
        }
    }
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::Protocol,
            3 => ErrorCode::UnknownSession,
            4 => ErrorCode::DuplicateSession,
            5 => ErrorCode::NotFound,
            6 => ErrorCode::PermissionDenied,
            7 => ErrorCode::Spawn,
            8 => ErrorCode::Io,
            9 => ErrorCode::Version,
            10 => ErrorCode::Refused,
            v => ErrorCode::Other(v),
        }
    }
    /// The class of an OS error.
    pub fn from_io(e: &std::io::Error) -> ErrorCode {
        match e.kind() {
            std::io::ErrorKind::NotFound => ErrorCode::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
            _ => ErrorCode::Io,
        }
    }
}

/// A control message. The session it concerns is in the frame header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    // Host → agent.
    /// Starts (or restarts) the conversation; the agent drops every session and
    /// answers [`Msg::Ready`]. Session 0.
    Hello {
        min_version: u16,
        max_version: u16,
        nonce: u64,
    },
    /// Starts a command in a new session.
    Exec(ExecRequest),
    /// Sends `signal` to the session's process group.
    Signal { signal: i32 },
    /// Changes the pty size of the session.
    Resize(PtySize),
    /// Starts an upload into `path`; `File` data frames follow, the last with EOF.
    Upload { path: Vec<u8>, mode: u32 },
    /// Starts a download of `path`; the agent answers [`Msg::FileInfo`] and `File`
    /// data frames.
    Download { path: Vec<u8> },
    /// Abandons a session: its processes are killed, nothing more is sent for it.
    Close,
    /// Asks for a [`Msg::Pong`]. Session 0.
    Ping { token: u64 },
    /// Re-identifies a guest restored from a snapshot (entropy, clock, host name), on
    /// a new session; answered by [`Msg::Refreshed`] or [`Msg::Error`].
    Refresh(Refresh),
    /// The host is about to stop the VM: sync every filesystem and leave the ones
    /// mounted from block devices clean (remounted read-only, or frozen where a file
    /// is still open for writing), so that what commands wrote is on the drive images.
    /// On a new session; answered by [`Msg::Quiesced`] or [`Msg::Error`].
    Quiesce,

    // Both directions.
    /// The receiver of `stream` consumed `bytes` more: the sender may send that many.
    Credit { stream: Stream, bytes: u32 },

    // Agent → host.
    /// Answer to hello.
    Ready(ReadyInfo),
    /// The command runs as `pid`.
    Started { pid: u32 },
    /// The command ended; sent after the end of its stdout and stderr. Last message of
    /// the session.
    Exited {
        how: Termination,
        /// The agent killed it because its timeout passed.
        timed_out: bool,
    },
    /// The session failed; last message of the session. On session 0: the connection
    /// had a problem (e.g. an unsupported version) and goes on.
    Error { code: ErrorCode, message: String },
    /// Metadata of a download, before its data.
    FileInfo { mode: u32, size: u64 },
    /// An upload is complete and in place. Last message of the session.
    UploadDone { bytes: u64 },
    /// Answer to ping.
    Pong { token: u64 },
    /// The agent lost the frame boundaries of what it received and dropped every
    /// session. Session 0.
    Reset { reason: String },
    /// A [`Msg::Refresh`] was applied. Last message of its session.
    Refreshed {
        /// How far the guest's wall clock was stepped (guest time after minus
        /// before), in ns; 0 when the clock was left alone.
        clock_step_ns: i64,
    },
    /// A [`Msg::Quiesce`] was done. Last message of its session.
    Quiesced {
        /// Block-device filesystems remounted read-only.
        remounted: u32,
        /// Block-device filesystems frozen (a writer kept them busy).
        frozen: u32,
        /// In hand-off mode, where the image's own init owns the filesystems: they
        /// were synced and init was asked to shut the guest down (as Ctrl-Alt-Del
        /// asks it), which unmounts them cleanly and ends the guest.
        init_shutdown: bool,
    },
}

mod tag {
    pub const HELLO: u8 = 1;
    pub const EXEC: u8 = 2;
    pub const SIGNAL: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const UPLOAD: u8 = 5;
    pub const DOWNLOAD: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const PING: u8 = 8;
    pub const CREDIT: u8 = 9;
    pub const REFRESH: u8 = 10;
    pub const QUIESCE: u8 = 11;
    pub const READY: u8 = 20;
    pub const STARTED: u8 = 21;
    pub const EXITED: u8 = 22;
    pub const ERROR: u8 = 23;
    pub const FILE_INFO: u8 = 24;
    pub const UPLOAD_DONE: u8 = 25;
    pub const PONG: u8 = 26;
    pub const RESET: u8 = 27;
    pub const REFRESHED: u8 = 28;
    pub const QUIESCED: u8 = 29;
}

impl Msg {
    /// The message's short name, for error texts.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "hello",
            Msg::Exec(_) => "exec",
            Msg::Signal { .. } => "signal",
            Msg::Resize(_) => "resize",
            Msg::Upload { .. } => "upload",
            Msg::Download { .. } => "download",
            Msg::Close => "close",
            Msg::Ping { .. } => "ping",
            Msg::Credit { .. } => "credit",
            Msg::Ready(_) => "ready",
            Msg::Started { .. } => "started",
            Msg::Exited { .. } => "exited",
            Msg::Error { .. } => "error",
            Msg::FileInfo { .. } => "file info",
            Msg::UploadDone { .. } => "upload done",
            Msg::Pong { .. } => "pong",
            Msg::Reset { .. } => "reset",
            Msg::Refresh(_) => "refresh",
            Msg::Refreshed { .. } => "refreshed",
            Msg::Quiesce => "quiesce",
            Msg::Quiesced { .. } => "quiesced",
        }
    }

    /// The payload of a control frame carrying this message. Fails only if it would
    /// not fit in a frame.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut e = Enc::new();
        match self {
            Msg::Hello {
                min_version,
                max_version,
                nonce,
            } => {
                e.u8(tag::HELLO);
                e.u16(*min_version);
                e.u16(*max_version);
                e.u64(*nonce);
            }
            Msg::Exec(r) => {
                e.u8(tag::EXEC);
                e.count(r.argv.len());
                for a in &r.argv {
                    e.bytes(a);
                }
                e.count(r.env.len());
                for (k, v) in &r.env {
                    e.bytes(k);
                    e.bytes(v);
                }
                opt_bytes(&mut e, r.cwd.as_deref());
                opt_u32(&mut e, r.uid);
                opt_u32(&mut e, r.gid);
                match r.pty {
                    Some(p) => {
                        e.u8(1);
                        e.u16(p.rows);
                        e.u16(p.cols);
                    }
                    None => e.u8(0),
                }
                e.bool(r.stdin);
                match r.timeout_ms {
                    Some(t) => {
                        e.u8(1);
                        e.u64(t);
                    }
                    None => e.u8(0),
                }
            }
            Msg::Signal { signal } => {
                e.u8(tag::SIGNAL);
                e.i32(*signal);
            }
            Msg::Resize(p) => {
                e.u8(tag::RESIZE);
                e.u16(p.rows);
                e.u16(p.cols);
            }
            Msg::Upload { path, mode } => {
                e.u8(tag::UPLOAD);
                e.bytes(path);
                e.u32(*mode);
            }
            Msg::Download { path } => {
                e.u8(tag::DOWNLOAD);
                e.bytes(path);
            }
            Msg::Close => e.u8(tag::CLOSE),
            Msg::Ping { token } => {
                e.u8(tag::PING);
                e.u64(*token);
            }
            Msg::Credit { stream, bytes } => {
                e.u8(tag::CREDIT);
                e.u8(*stream as u8);
                e.u32(*bytes);
            }
            Msg::Ready(r) => {
                e.u8(tag::READY);
                e.u16(r.version);
                e.u64(r.nonce);
                e.str(&r.agent_version);
                e.str(&r.mode);
                e.u64(r.agent_start_ns);
                e.u64(r.agent_ready_ns);
                e.u64(r.uptime_ns);
                e.u64(r.realtime_ns);
            }
            Msg::Started { pid } => {
                e.u8(tag::STARTED);
                e.u32(*pid);
            }
            Msg::Exited { how, timed_out } => {
                e.u8(tag::EXITED);
                match how {
                    Termination::Code(c) => {
                        e.u8(0);
                        e.i32(*c);
                        e.bool(false);
                    }
                    Termination::Signal {
                        signal,
                        core_dumped,
                    } => {
                        e.u8(1);
                        e.i32(*signal);
                        e.bool(*core_dumped);
                    }
                }
                e.bool(*timed_out);
            }
            Msg::Error { code, message } => {
                e.u8(tag::ERROR);
                e.u16(code.to_u16());
                let m = truncate_utf8(message, MAX_TEXT);
                e.str(m);
            }
            Msg::FileInfo { mode, size } => {
                e.u8(tag::FILE_INFO);
                e.u32(*mode);
                e.u64(*size);
            }
            Msg::UploadDone { bytes } => {
                e.u8(tag::UPLOAD_DONE);
                e.u64(*bytes);
            }
            Msg::Pong { token } => {
                e.u8(tag::PONG);
                e.u64(*token);
            }
            Msg::Reset { reason } => {
                e.u8(tag::RESET);
                e.str(truncate_utf8(reason, MAX_TEXT));
            }
            Msg::Refresh(r) => {
                e.u8(tag::REFRESH);
                e.bytes(&r.entropy);
                match r.realtime_ns {
                    Some(t) => {
                        e.u8(1);
                        e.u64(t);
                    }
                    None => e.u8(0),
                }
                opt_bytes(&mut e, r.hostname.as_deref());
            }
            Msg::Refreshed { clock_step_ns } => {
                e.u8(tag::REFRESHED);
                e.u64(*clock_step_ns as u64);
            }
            Msg::Quiesce => e.u8(tag::QUIESCE),
            Msg::Quiesced {
                remounted,
                frozen,
                init_shutdown,
            } => {
                e.u8(tag::QUIESCED);
                e.u32(*remounted);
                e.u32(*frozen);
                e.u8(u8::from(*init_shutdown));
            }
        }
        if e.buf.len() > MAX_PAYLOAD {
            return Err(DecodeError::TooLong {
                what: self.name(),
                len: e.buf.len(),
                max: MAX_PAYLOAD,
            });
        }
        Ok(e.buf)
    }

    /// Decodes a control payload; every length is bounded by what the payload holds.
    pub fn decode(payload: &[u8]) -> Result<Msg, DecodeError> {
        let mut d = Dec::new(payload);
        let t = d.u8("message type")?;
        let m = match t {
            tag::HELLO => Msg::Hello {
                min_version: d.u16("min version")?,
                max_version: d.u16("max version")?,
                nonce: d.u64("nonce")?,
            },
            tag::EXEC => {
                // Each argument is at least its 4-byte length on the wire.
                let n = d.count("argv", MAX_ARGS, 4)?;
                let mut argv = Vec::with_capacity(n);
                for _ in 0..n {
                    argv.push(d.bytes("argument", MAX_PAYLOAD)?);
                }
                let n = d.count("env", MAX_ENV, 8)?;
                let mut env = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = d.bytes("env name", MAX_PAYLOAD)?;
                    let v = d.bytes("env value", MAX_PAYLOAD)?;
                    env.push((k, v));
                }
                let cwd = dec_opt_bytes(&mut d, "cwd", MAX_PATH)?;
                let uid = dec_opt_u32(&mut d, "uid")?;
                let gid = dec_opt_u32(&mut d, "gid")?;
                let pty = match d.u8("pty flag")? {
                    0 => None,
                    1 => Some(PtySize {
                        rows: d.u16("rows")?,
                        cols: d.u16("cols")?,
                    }),
                    v => return Err(invalid("pty flag", v)),
                };
                let stdin = d.bool("stdin flag")?;
                let timeout_ms = match d.u8("timeout flag")? {
                    0 => None,
                    1 => Some(d.u64("timeout")?),
                    v => return Err(invalid("timeout flag", v)),
                };
                let r = ExecRequest {
                    argv,
                    env,
                    cwd,
                    uid,
                    gid,
                    pty,
                    stdin,
                    timeout_ms,
                };
                r.validate()?;
                Msg::Exec(r)
            }
            tag::SIGNAL => Msg::Signal {
                signal: d.i32("signal")?,
            },
            tag::RESIZE => Msg::Resize(PtySize {
                rows: d.u16("rows")?,
                cols: d.u16("cols")?,
            }),
            tag::UPLOAD => {
                let path = d.bytes("path", MAX_PATH)?;
                check_path("path", &path)?;
                Msg::Upload {
                    path,
                    mode: d.u32("mode")?,
                }
            }
            tag::DOWNLOAD => {
                let path = d.bytes("path", MAX_PATH)?;
                check_path("path", &path)?;
                Msg::Download { path }
            }
            tag::CLOSE => Msg::Close,
            tag::PING => Msg::Ping {
                token: d.u64("token")?,
            },
            tag::CREDIT => {
                let s = d.u8("stream")?;
                let stream = Stream::from_u8(s).ok_or_else(|| invalid("stream", s))?;
                Msg::Credit {
                    stream,
                    bytes: d.u32("credit")?,
                }
            }
            tag::READY => Msg::Ready(ReadyInfo {
                version: d.u16("version")?,
                nonce: d.u64("nonce")?,
                agent_version: d.string("agent version", MAX_TEXT)?,
                mode: d.string("mode", MAX_TEXT)?,
                agent_start_ns: d.u64("agent start")?,
                agent_ready_ns: d.u64("agent ready")?,
                uptime_ns: d.u64("uptime")?,
                realtime_ns: d.u64("realtime")?,
            }),
            tag::STARTED => Msg::Started { pid: d.u32("pid")? },
            tag::EXITED => {
                let how = match d.u8("termination")? {
                    // Range-checked: a status outside what a process can end with
                    // (from a broken or hostile agent) is refused, not passed on as
                    // the host's own exit status.
                    0 => {
                        let c = d.i32("exit code")?;
                        d.bool("core flag")?;
                        if !(0..=255).contains(&c) {
                            return Err(DecodeError::Invalid {
                                what: "exit code",
                                why: format!("{c} is not 0..=255"),
                            });
                        }
                        Termination::Code(c)
                    }
                    1 => {
                        let signal = d.i32("signal")?;
                        if !(1..=64).contains(&signal) {
                            return Err(DecodeError::Invalid {
                                what: "signal",
                                why: format!("{signal} is not 1..=64"),
                            });
                        }
                        Termination::Signal {
                            signal,
                            core_dumped: d.bool("core flag")?,
                        }
                    }
                    v => return Err(invalid("termination", v)),
                };
                Msg::Exited {
                    how,
                    timed_out: d.bool("timed out flag")?,
                }
            }
            tag::ERROR => Msg::Error {
                code: ErrorCode::from_u16(d.u16("error code")?),
                message: d.string("error message", MAX_TEXT)?,
            },
            tag::FILE_INFO => Msg::FileInfo {
                mode: d.u32("mode")?,
                size: d.u64("size")?,
            },
            tag::UPLOAD_DONE => Msg::UploadDone {
                bytes: d.u64("bytes")?,
            },
            tag::PONG => Msg::Pong {
                token: d.u64("token")?,
            },
            tag::RESET => Msg::Reset {
                reason: d.string("reason", MAX_TEXT)?,
            },
            tag::REFRESH => {
                let entropy = d.bytes("entropy", MAX_ENTROPY)?;
                let realtime_ns = match d.u8("clock flag")? {
                    0 => None,
                    1 => Some(d.u64("clock")?),
                    v => return Err(invalid("clock flag", v)),
                };
                let hostname = dec_opt_bytes(&mut d, "hostname", MAX_HOSTNAME)?;
                let r = Refresh {
                    entropy,
                    realtime_ns,
                    hostname,
                };
                r.validate()?;
                Msg::Refresh(r)
            }
            tag::REFRESHED => Msg::Refreshed {
                clock_step_ns: d.u64("clock step")? as i64,
            },
            tag::QUIESCE => Msg::Quiesce,
            tag::QUIESCED => Msg::Quiesced {
                remounted: d.u32("remounted")?,
                frozen: d.u32("frozen")?,
                init_shutdown: d.u8("init shutdown")? != 0,
            },
            t => return Err(DecodeError::UnknownMessage(t)),
        };
        d.finish()?;
        Ok(m)
    }
}

fn invalid(what: &'static str, v: u8) -> DecodeError {
    DecodeError::Invalid {
        what,
        why: format!("unexpected value {v}"),
    }
}

fn opt_bytes(e: &mut Enc, v: Option<&[u8]>) {
    match v {
        Some(b) => {
            e.u8(1);
            e.bytes(b);
        }
        None => e.u8(0),
    }
}

fn opt_u32(e: &mut Enc, v: Option<u32>) {
    match v {
        Some(x) => {
            e.u8(1);
            e.u32(x);
        }
        None => e.u8(0),
    }
}

fn dec_opt_bytes(
    d: &mut Dec<'_>,
    what: &'static str,
    max: usize,
) -> Result<Option<Vec<u8>>, DecodeError> {
    match d.u8(what)? {
        0 => Ok(None),
        1 => Ok(Some(d.bytes(what, max)?)),
        v => Err(invalid(what, v)),
    }
}

fn dec_opt_u32(d: &mut Dec<'_>, what: &'static str) -> Result<Option<u32>, DecodeError> {
    match d.u8(what)? {
        0 => Ok(None),
        1 => Ok(Some(d.u32(what)?)),
        v => Err(invalid(what, v)),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Msg> {
        vec![
            Msg::Hello {
                min_version: 1,
                max_version: 3,
                nonce: 0x1234_5678_9abc_def0,
            },
            Msg::Exec(ExecRequest {
                argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo \xff".to_vec()],
                env: vec![(b"A".to_vec(), b"1=2".to_vec()), (b"B".to_vec(), vec![])],
                cwd: Some(b"/tmp".to_vec()),
                uid: Some(1000),
                gid: Some(0),
                pty: Some(PtySize { rows: 24, cols: 80 }),
                stdin: true,
                timeout_ms: Some(1500),
            }),
            Msg::Exec(ExecRequest {
                argv: vec![b"true".to_vec()],
                ..Default::default()
            }),
            Msg::Signal { signal: 15 },
            Msg::Resize(PtySize {
                rows: 50,
                cols: 132,
            }),
            Msg::Upload {
                path: b"/tmp/x".to_vec(),
                mode: 0o755,
            },
            Msg::Download {
                path: b"/etc/passwd".to_vec(),
            },
            Msg::Close,
            Msg::Ping { token: 42 },
            Msg::Credit {
                stream: Stream::Stdout,
                bytes: 65536,
            },
            Msg::Ready(ReadyInfo {
                version: 1,
                nonce: 9,
                agent_version: "0.1.0".into(),
                mode: "initramfs".into(),
                agent_start_ns: 1,
                agent_ready_ns: 2,
                uptime_ns: 3,
                realtime_ns: 4,
            }),
            Msg::Started { pid: 77 },
            Msg::Exited {
                how: Termination::Code(3),
                timed_out: false,
            },
            Msg::Exited {
                how: Termination::Signal {
                    signal: 9,
                    core_dumped: true,
                },
                timed_out: true,
            },
            Msg::Error {
                code: ErrorCode::NotFound,
                message: "no such file".into(),
            },
            Msg::Error {
                code: ErrorCode::Other(999),
                message: String::new(),
            },
            Msg::FileInfo {
                mode: 0o100644,
                size: 1 << 40,
            },
            Msg::UploadDone { bytes: 5 },
            Msg::Pong { token: 42 },
            Msg::Reset {
                reason: "lost framing".into(),
            },
            Msg::Refresh(Refresh {
                entropy: vec![7; 64],
                realtime_ns: Some(1_700_000_000_000_000_000),
                hostname: Some(b"clone-1".to_vec()),
            }),
            Msg::Refresh(Refresh::default()),
            Msg::Refreshed {
                clock_step_ns: -5_000_000_000,
            },
            Msg::Quiesce,
            Msg::Quiesced {
                remounted: 2,
                frozen: 1,
                init_shutdown: false,
            },
            Msg::Quiesced {
                remounted: 0,
                frozen: 0,
                init_shutdown: true,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_messages() {
            let b = m.encode().unwrap();
            assert_eq!(Msg::decode(&b).unwrap(), m, "{}", m.name());
        }
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        for m in all_messages() {
            let b = m.encode().unwrap();
            for cut in 0..b.len() {
                assert!(
                    Msg::decode(&b[..cut]).is_err(),
                    "{} cut at {cut} decoded",
                    m.name()
                );
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(
                Msg::decode(&longer),
                Err(DecodeError::Trailing(1)),
                "{}",
                m.name()
            );
        }
    }

    #[test]
    fn unknown_types_and_bad_values_are_rejected() {
        assert_eq!(Msg::decode(&[200]), Err(DecodeError::UnknownMessage(200)));
        assert!(matches!(
            Msg::decode(&[tag::CREDIT, 9, 0, 0, 0, 0]),
            Err(DecodeError::Invalid { what: "stream", .. })
        ));
        let empty_argv = Msg::Exec(ExecRequest::default()).encode().unwrap();
        assert!(matches!(
            Msg::decode(&empty_argv),
            Err(DecodeError::Invalid { what: "argv", .. })
        ));
        let bad_host = Msg::Refresh(Refresh {
            hostname: Some(b"a\0b".to_vec()),
            ..Default::default()
        })
        .encode()
        .unwrap();
        assert!(matches!(
            Msg::decode(&bad_host),
            Err(DecodeError::Invalid {
                what: "hostname",
                ..
            })
        ));
        assert!(matches!(
            Msg::decode(&[tag::REFRESH, 0, 0, 0, 0, 2]),
            Err(DecodeError::Invalid {
                what: "clock flag",
                ..
            })
        ));
    }

    #[test]
    fn exec_validation_names_the_problem() {
        let ok = ExecRequest {
            argv: vec![b"ls".to_vec()],
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let cases: Vec<(ExecRequest, &str)> = vec![
            (
                ExecRequest {
                    argv: vec![vec![]],
                    ..ok.clone()
                },
                "argv[0]",
            ),
            (
                ExecRequest {
                    argv: vec![b"a\0b".to_vec()],
                    ..ok.clone()
                },
                "argv",
            ),
            (
                ExecRequest {
                    env: vec![(b"A=B".to_vec(), vec![])],
                    ..ok.clone()
                },
                "env",
            ),
            (
                ExecRequest {
                    env: vec![(vec![], vec![])],
                    ..ok.clone()
                },
                "env",
            ),
            (
                ExecRequest {
                    cwd: Some(vec![]),
                    ..ok.clone()
                },
                "cwd",
            ),
            (
                ExecRequest {
                    pty: Some(PtySize { rows: 0, cols: 80 }),
                    ..ok.clone()
                },
                "pty",
            ),
        ];
        for (r, what) in cases {
            match r.validate() {
                Err(DecodeError::Invalid { what: w, .. }) => assert_eq!(w, what),
                other => panic!("{r:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_count_larger_than_the_payload_does_not_allocate() {
        // argv count 8000 with no bytes behind it.
        let mut b = vec![tag::EXEC];
        b.extend_from_slice(&8000u32.to_le_bytes());
        assert!(matches!(
            Msg::decode(&b),
            Err(DecodeError::Truncated { what: "argv", .. })
        ));
        let mut b = vec![tag::EXEC];
        b.extend_from_slice(&(MAX_ARGS as u32 + 1).to_le_bytes());
        assert!(matches!(
            Msg::decode(&b),
            Err(DecodeError::TooLong { what: "argv", .. })
        ));
    }

    #[test]
    fn oversized_messages_are_refused_at_encoding() {
        let m = Msg::Exec(ExecRequest {
            argv: vec![vec![b'a'; MAX_PAYLOAD]],
            ..Default::default()
        });
        assert!(matches!(m.encode(), Err(DecodeError::TooLong { .. })));
        // Long error texts are cut, not refused.
        let m = Msg::Error {
            code: ErrorCode::Io,
            message: "é".repeat(MAX_TEXT),
        };
        let back = Msg::decode(&m.encode().unwrap()).unwrap();
        match back {
            Msg::Error { message, .. } => assert!(message.len() <= MAX_TEXT),
            _ => unreachable!(),
        }
    }

    #[test]
    fn error_codes_round_trip_and_classify_io_errors() {
        for v in 0..20u16 {
            assert_eq!(ErrorCode::from_u16(v).to_u16(), v);
        }
        use std::io::{Error, ErrorKind};
        assert_eq!(
            ErrorCode::from_io(&Error::from(ErrorKind::NotFound)),
            ErrorCode::NotFound
        );
        assert_eq!(
            ErrorCode::from_io(&Error::from(ErrorKind::PermissionDenied)),
            ErrorCode::PermissionDenied
        );
        assert_eq!(ErrorCode::from_io(&Error::other("x")), ErrorCode::Io);
        for v in 0..8u8 {
            if let Some(s) = Stream::from_u8(v) {
                assert_eq!(s as u8, v);
            }
        }
    }

    #[test]
    fn exit_statuses_out_of_range_are_refused() {
        for how in [
            Termination::Code(-1),
            Termination::Code(256),
            Termination::Signal {
                signal: 0,
                core_dumped: false,
            },
            Termination::Signal {
                signal: 65,
                core_dumped: true,
            },
        ] {
            let m = Msg::Exited {
                how,
                timed_out: false,
            };
            let e = Msg::decode(&m.encode().unwrap()).unwrap_err();
            assert!(matches!(e, DecodeError::Invalid { .. }), "{how:?}: {e}");
        }
        for how in [
            Termination::Code(0),
            Termination::Code(255),
            Termination::Signal {
                signal: 64,
                core_dumped: false,
            },
        ] {
            let m = Msg::Exited {
                how,
                timed_out: true,
            };
            assert_eq!(Msg::decode(&m.encode().unwrap()).unwrap(), m);
        }
    }
}
