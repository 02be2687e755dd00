//! The session server: reads frames from the host and dispatches them.
//!
//! It runs unchanged on the host (tests drive it over a socketpair) and in the guest
//! (on the virtio-serial port). The reading thread never blocks on a session: see
//! [`crate::session`].

use crate::outbox::Outbox;
use crate::reaper::Reaper;
use crate::session::{Session, Sessions};
use crate::sys;
use ec1_proto::{
    negotiate, ErrorCode, Frame, FrameReader, Kind, Msg, ReadEvent, ReadyInfo, Stream,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// The byte stream from the host.
pub trait Link: Read + Send {
    /// Called when a read returned end-of-stream. For a virtio port that means "no
    /// host right now": wait until one may be connected and return `true`. For a plain
    /// socket the end is final: return `false` and the server stops.
    fn wait_reconnect(&mut self) -> bool {
        false
    }
}

impl Link for UnixStream {}

/// How the agent was set up; reported in [`Msg::Ready`].
pub struct Config {
    /// `initramfs`, `root` or `handoff`.
    pub mode: String,
    pub agent_start_ns: u64,
    pub agent_ready_ns: u64,
    /// Environment every command starts with (requests add to it).
    pub base_env: Vec<(OsString, OsString)>,
    pub reaper: Arc<dyn Reaper>,
    /// Why the guest is not where the host asked it to be (its root drive could not be
    /// mounted): then every command and file transfer is refused with this reason
    /// instead of running in the initramfs.
    pub refusal: Option<String>,
}

/// The default environment of commands: what a login shell of root would have.
pub fn default_env() -> Vec<(OsString, OsString)> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/.ec1/bin",
        ),
        ("HOME", "/root"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("SHELL", "/bin/sh"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect()
}

/// State shared by the reader and every session thread.
pub struct Shared {
    pub outbox: Outbox,
    pub sessions: Sessions,
    pub config: Config,
}

impl Shared {
    /// Sends the final error of a session (unless it was closed from outside) and
    /// forgets it.
    pub fn fail(&self, s: &Session, code: ErrorCode, message: String) {
        crate::debug!("session {}: {message}", s.id);
        if !s.is_closed() {
            self.outbox
                .msg(s.epoch, s.id, &Msg::Error { code, message });
        }
        self.finish(s);
    }

    /// Sends a session's last message (unless it was closed from outside) and forgets
    /// the session without killing anything.
    pub fn end(&self, s: &Session, msg: &Msg) {
        if !s.is_closed() {
            self.outbox.msg(s.epoch, s.id, msg);
        }
        self.finish(s);
    }

    /// Forgets a session whose last frame has been queued already.
    pub fn end_quietly(&self, s: &Session) {
        self.finish(s);
    }

    fn finish(&self, s: &Session) {
        s.pgid.store(0, std::sync::atomic::Ordering::Release);
        s.close();
        self.sessions.remove(s);
    }
}

/// The agent's server. Cloning shares it.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// Creates the server; replies go to `writer` through a writer thread.
    pub fn new(config: Config, writer: Box<dyn Write + Send>) -> Server {
        let (outbox, _writer_thread) = Outbox::spawn(writer);
        Server {
            shared: Arc::new(Shared {
                outbox,
                sessions: Sessions::default(),
                config,
            }),
        }
    }

    /// Process groups of running commands (PID 1 forwards SIGTERM to them).
    pub fn process_groups(&self) -> Vec<i32> {
        self.shared.sessions.process_groups()
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Serves the host until `link` ends for good. Every session is closed on return.
    pub fn serve<L: Link>(&self, link: L) -> io::Result<()> {
        let mut reader = FrameReader::new(link);
        let r = self.serve_inner(&mut reader);
        self.shared.sessions.close_all();
        self.shared.outbox.next_epoch();
        r
    }

    fn serve_inner<L: Link>(&self, reader: &mut FrameReader<L>) -> io::Result<()> {
        loop {
            match reader.next_event()? {
                ReadEvent::Frame(raw) => match Frame::parse(raw) {
                    Ok(f) => self.dispatch(f),
                    Err(m) => {
                        crate::warn!("{m}");
                        self.reject(m.session, ErrorCode::Malformed, m.to_string());
                    }
                },
                ReadEvent::Lost(why) => {
                    let n = self.shared.sessions.close_all();
                    let e = self.shared.outbox.next_epoch();
                    let reason = format!(
                        "lost frame boundaries ({why}); dropped {n} session(s), resynchronising"
                    );
                    crate::warn!("{reason}");
                    self.shared.outbox.msg(e, 0, &Msg::Reset { reason });
                }
                ReadEvent::Eof => {
                    let n = self.shared.sessions.close_all();
                    self.shared.outbox.next_epoch();
                    crate::debug!("host disconnected; closed {n} session(s)");
                    if !reader.get_mut().wait_reconnect() {
                        return Ok(());
                    }
                    reader.reset();
                }
            }
        }
    }

    /// Answers a bad frame: the session it names ends with an error, nothing else.
    fn reject(&self, session: u32, code: ErrorCode, message: String) {
        let epoch = self.shared.outbox.epoch();
        if session != 0 {
            self.shared.sessions.close(session);
        }
        self.shared
            .outbox
            .msg(epoch, session, &Msg::Error { code, message });
    }

    fn dispatch(&self, f: Frame) {
        let sh = &self.shared;
        match f {
            Frame::Data {
                session,
                kind,
                eof,
                payload,
            } => {
                let stream = match kind {
                    Kind::Stdin => Stream::Stdin,
                    Kind::File => Stream::File,
                    _ => {
                        return self.reject(
                            session,
                            ErrorCode::Protocol,
                            format!("{kind:?} data goes from the guest to the host"),
                        )
                    }
                };
                // Data for a session that just ended is normal (the host did not
                // know yet): drop it.
                if let Some(s) = sh.sessions.get(session) {
                    if let Err(e) = s.push_input(stream, payload, eof) {
                        self.reject(session, ErrorCode::Protocol, e.to_string());
                    }
                }
            }
            Frame::Control { session, msg } => self.control(session, msg),
        }
    }

    fn control(&self, session: u32, msg: Msg) {
        let sh = &self.shared;
        let epoch = sh.outbox.epoch();
        match msg {
            Msg::Hello {
                min_version,
                max_version,
                nonce,
            } => {
                let n = sh.sessions.close_all();
                let e = sh.outbox.next_epoch();
                crate::debug!("hello (nonce {nonce:#x}); closed {n} session(s)");
                sh.outbox.preamble(e);
                match negotiate(min_version, max_version) {
                    Some(version) => {
                        let c = &sh.config;
                        let info = ReadyInfo {
                            version,
                            nonce,
                            agent_version: env!("CARGO_PKG_VERSION").into(),
                            mode: c.mode.clone(),
                            agent_start_ns: c.agent_start_ns,
                            agent_ready_ns: c.agent_ready_ns,
                            uptime_ns: sys::boottime_ns(),
                            realtime_ns: sys::realtime_ns(),
                        };
                        sh.outbox.msg(e, 0, &Msg::Ready(info));
                    }
                    None => sh.outbox.msg(
                        e,
                        0,
                        &Msg::Error {
                            code: ErrorCode::Version,
                            message: format!(
                                "the agent speaks protocol versions {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}, \
                                 the host {min_version}..={max_version}: rebuild the agent initramfs with this ec1"
                            ),
                        },
                    ),
                }
            }
            Msg::Ping { token } => sh.outbox.msg(epoch, session, &Msg::Pong { token }),
            Msg::Exec(_) | Msg::Upload { .. } | Msg::Download { .. }
                if sh.config.refusal.is_some() =>
            {
                let why = sh.config.refusal.clone().unwrap_or_default();
                self.reject(session, ErrorCode::Refused, why);
            }
            Msg::Exec(req) => {
                if let Some(s) = self.new_session(session, epoch, Some(Stream::Stdin)) {
                    crate::exec::start(self.shared.clone(), s, req);
                }
            }
            Msg::Upload { path, mode } => {
                if let Some(s) = self.new_session(session, epoch, Some(Stream::File)) {
                    crate::files::start_upload(self.shared.clone(), s, path, mode);
                }
            }
            Msg::Download { path } => {
                if let Some(s) = self.new_session(session, epoch, None) {
                    crate::files::start_download(self.shared.clone(), s, path);
                }
            }
            Msg::Credit { stream, bytes } => {
                if let Some(s) = sh.sessions.get(session) {
                    match s.gate(stream) {
                        Some(g) => g.grant(bytes),
                        None => self.reject(
                            session,
                            ErrorCode::Protocol,
                            "credit for stdin comes from the guest".into(),
                        ),
                    }
                }
            }
            Msg::Signal { signal } => {
                if !(1..=64).contains(&signal) {
                    return self.reject(
                        session,
                        ErrorCode::Malformed,
                        format!("signal {signal} is out of range 1..=64"),
                    );
                }
                if let Some(s) = sh.sessions.get(session) {
                    let pg = s.pgid.load(std::sync::atomic::Ordering::Acquire);
                    sys::kill_group(pg, signal);
                }
            }
            Msg::Resize(size) => {
                if let Some(s) = sh.sessions.get(session) {
                    if let Some(m) = s.pty.lock().unwrap().as_ref() {
                        if let Err(e) = crate::pty::resize(m, size) {
                            crate::warn!("session {session}: resize failed: {e}");
                        }
                    }
                }
            }
            Msg::Close => {
                sh.sessions.close(session);
            }
            Msg::Refresh(r) => self.refresh(session, epoch, &r),
            Msg::Quiesce => self.quiesce(session, epoch),
            other => self.reject(
                session,
                ErrorCode::Protocol,
                format!("`{}` is a message from the agent, not to it", other.name()),
            ),
        }
    }

    /// Does a [`Msg::Quiesce`] on a thread of its own (writing back what the guest
    /// has dirty may take a while, and the reader must go on serving credits and
    /// pings) and ends its session with the outcome.
    fn quiesce(&self, session: u32, epoch: u64) {
        if session == 0 {
            return self.reject(
                0,
                ErrorCode::Malformed,
                "a quiesce needs its own session".into(),
            );
        }
        let shared = self.shared.clone();
        std::thread::spawn(move || {
            // In hand-off mode the image's init owns the filesystems: sync what is
            // written, then ask init to shut down (it unmounts them and ends the
            // guest); the host waits for the guest to end.
            let outcome = if shared.config.mode == "handoff" {
                crate::quiesce::ask_init_to_shut_down().map(|()| (0, 0, true))
            } else {
                crate::quiesce::quiesce().map(|q| (q.remounted, q.frozen, false))
            };
            let reply = match outcome {
                Ok((remounted, frozen, init_shutdown)) => Msg::Quiesced {
                    remounted,
                    frozen,
                    init_shutdown,
                },
                Err(e) => Msg::Error {
                    code: ErrorCode::from_io(&e),
                    message: e.to_string(),
                },
            };
            shared.outbox.msg(epoch, session, &reply);
        });
    }

    /// Applies a [`Msg::Refresh`] at once (a few system calls: it does not hold up the
    /// reader) and ends its session with the outcome.
    fn refresh(&self, session: u32, epoch: u64, r: &ec1_proto::Refresh) {
        if session == 0 {
            return self.reject(
                0,
                ErrorCode::Malformed,
                "a refresh needs its own session".into(),
            );
        }
        let reply = match crate::refresh::apply(r) {
            Ok(a) => Msg::Refreshed {
                clock_step_ns: a.clock_step_ns,
            },
            Err(e) => Msg::Error {
                code: ErrorCode::from_io(&e),
                message: e.to_string(),
            },
        };
        self.shared.outbox.msg(epoch, session, &reply);
    }

    fn new_session(&self, id: u32, epoch: u64, input: Option<Stream>) -> Option<Arc<Session>> {
        if id == 0 {
            self.reject(
                0,
                ErrorCode::Malformed,
                "session 0 is the connection".into(),
            );
            return None;
        }
        let s = Arc::new(Session::new(id, epoch, input));
        if !self.shared.sessions.insert(s.clone()) {
            self.reject(
                id,
                ErrorCode::DuplicateSession,
                format!("session {id} is already in use; it has been closed"),
            );
            return None;
        }
        Some(s)
    }
}
