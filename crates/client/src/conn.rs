//! The connection to a guest agent: handshake, the reader thread that demultiplexes
//! frames into sessions, and the writer all handles share.

use crate::error::{Error, Result};
use crate::session::{End, FailReason, Session};
use ec1_proto::{
    write_frame, write_msg, write_preamble, ErrorCode, Frame, FrameReader, Kind, Msg, ReadEvent,
    ReadyInfo, Stream, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the handshake waits for an answer before saying hello again.
const HELLO_RETRY: Duration = Duration::from_secs(1);

/// How long to keep trying, for [`Client::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Keep retrying to connect this long (the VM may still be creating its socket).
    pub connect_timeout: Duration,
    /// Wait this long for the agent's ready announcement (the guest may still be
    /// booting: under TCG a boot takes about a second).
    pub ready_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// State shared by all handles and the reader thread.
pub(crate) struct Inner {
    writer: Mutex<UnixStream>,
    sessions: Mutex<HashMap<u32, Arc<Session>>>,
    pings: Mutex<HashMap<u64, Sender<()>>>,
    next_id: AtomicU32,
    dead: Mutex<Option<String>>,
    ready: ReadyInfo,
}

/// Owned by user-facing handles only: when the last one goes, the socket is shut
/// down and the reader thread ends.
pub(crate) struct Handle {
    pub(crate) inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.inner.writer.lock().unwrap().shutdown(Shutdown::Both);
    }
}

/// A connection to a guest agent. Cheap to clone; every clone and every thread may run
/// sessions concurrently over the one channel.
#[derive(Clone)]
pub struct Client {
    pub(crate) h: Arc<Handle>,
}

pub(crate) fn random_u64() -> u64 {
    // std's hasher keys are random per process and per `RandomState`.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

impl Client {
    /// Connects to the agent socket at `path` (retrying while it does not exist or
    /// refuses, up to `opts.connect_timeout`) and waits for the agent's ready
    /// announcement (up to `opts.ready_timeout`).
    pub fn connect(path: &Path, opts: &ConnectOptions) -> Result<Client> {
        let stream = connect_retrying(path, opts.connect_timeout, &|| false)?;
        Client::handshake(stream, opts.ready_timeout)
    }

    /// Connects to the agent socket at `path` and completes one hello with the agent,
    /// then returns the bare connection, between frames in both directions, and the
    /// agent's announcement: whoever is handed both takes the connection over with
    /// [`Client::adopt`], without a round trip. For a pool, which keeps a warm clone's
    /// connection for its claimant.
    pub fn preconnect(path: &Path, opts: &ConnectOptions) -> Result<(UnixStream, ReadyInfo)> {
        let stream = connect_retrying(path, opts.connect_timeout, &|| false)?;
        let (w, _reader, ready) = hello(stream, opts.ready_timeout)?;
        Ok((w, ready))
    }

    /// Speaks to an agent over an already connected stream: sends the preamble and
    /// hello, waits up to `ready_timeout` for the matching ready, then starts the reader.
    pub fn handshake(stream: UnixStream, ready_timeout: Duration) -> Result<Client> {
        let (w, reader, ready) = hello(stream, ready_timeout)?;
        Client::start(w, reader, ready)
    }

    /// Takes over a connection that [`Client::preconnect`] made, with the `ready` it
    /// returned: no hello, no preamble (2 × 128 KiB of zeros through the guest, most of
    /// a reconnect's cost under TCG), no round trip at all. The connection must be as
    /// `preconnect` left it: between frames, no session open.
    pub fn adopt(stream: UnixStream, ready: ReadyInfo) -> Result<Client> {
        let w = stream.try_clone().map_err(|source| Error::Io {
            context: "duplicating the socket",
            source,
        })?;
        Client::start(w, FrameReader::new(stream), ready)
    }

    fn start(w: UnixStream, reader: FrameReader<UnixStream>, ready: ReadyInfo) -> Result<Client> {
        let io = |context| move |source| Error::Io { context, source };
        // The guest's own clock: when the agent began (the kernel reached /init) and
        // when it was ready, as the guest's uptime.
        ec1_trace::event!(
            "agent.ready",
            mode = ready.mode.as_str(),
            guest_agent_start_us = ready.agent_start_ns / 1000,
            guest_agent_ready_us = ready.agent_ready_ns / 1000,
            guest_uptime_us = ready.uptime_ns / 1000
        );
        let inner = Arc::new(Inner {
            writer: Mutex::new(w),
            sessions: Mutex::new(HashMap::new()),
            pings: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            dead: Mutex::new(None),
            ready,
        });
        let r = inner.clone();
        std::thread::Builder::new()
            .name("ec1-client-reader".into())
            .spawn(move || r.read_loop(reader))
            .map_err(io("starting the reader thread"))?;
        Ok(Client {
            h: Arc::new(Handle { inner }),
        })
    }

    /// What the agent announced: protocol version, mode, boot timestamps.
    pub fn ready_info(&self) -> &ReadyInfo {
        &self.h.inner.ready
    }

    /// Whether the channel still works.
    pub fn is_connected(&self) -> bool {
        self.h.inner.dead.lock().unwrap().is_none()
    }

    /// Closes the connection now: every session on it fails, and the agent kills their
    /// commands. (Dropping the last handle does the same.)
    pub fn close(&self) {
        self.h.inner.die("closed by this client".into());
    }

    /// Round trip to the agent and back.
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        let inner = &self.h.inner;
        let token = random_u64();
        let (tx, rx) = mpsc::channel();
        inner.pings.lock().unwrap().insert(token, tx);
        let t = Instant::now();
        let r = inner.send_msg(0, &Msg::Ping { token }).and_then(|_| {
            rx.recv_timeout(timeout).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => Error::Timeout(timeout, "a pong"),
                mpsc::RecvTimeoutError::Disconnected => inner.dead_error(),
            })
        });
        inner.pings.lock().unwrap().remove(&token);
        r.map(|_| t.elapsed())
    }

    /// Writes raw bytes to the channel. For tests of the agent's robustness only:
    /// garbage here resets every session.
    #[doc(hidden)]
    pub fn send_raw(&self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        self.h
            .inner
            .writer
            .lock()
            .unwrap()
            .write_all(bytes)
            .map_err(|source| Error::Io {
                context: "writing to the agent",
                source,
            })
    }
}

/// Connects to the socket at `path`, retrying while it is not there yet or refuses (the
/// VM may still be creating it) for up to `timeout`, or until `give_up()`.
pub(crate) fn connect_retrying(
    path: &Path,
    timeout: Duration,
    give_up: &dyn Fn() -> bool,
) -> Result<UnixStream> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && start.elapsed() < timeout
                    && !give_up() =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(Error::Connect {
                    path: path.to_path_buf(),
                    waited: start.elapsed(),
                    source,
                })
            }
        }
    }
}

/// Opens a conversation with an agent on `stream`: the preamble and a hello, said
/// again every [`HELLO_RETRY`] (the channel carries one host connection at a time and
/// the guest may still be dropping the previous one's bytes when ours arrive, so a
/// hello can be lost) until the agent answers one, for up to `ready_timeout`. Returns
/// the writer, the reader (positioned after the ready) and the agent's announcement.
pub(crate) fn hello(
    stream: UnixStream,
    ready_timeout: Duration,
) -> Result<(UnixStream, FrameReader<UnixStream>, ReadyInfo)> {
    let io = |context| move |source| Error::Io { context, source };
    let mut w = stream.try_clone().map_err(io("duplicating the socket"))?;
    let mut nonces = Vec::new();
    let say_hello = |w: &mut UnixStream, nonces: &mut Vec<u64>| -> Result<Instant> {
        let nonce = random_u64();
        nonces.push(nonce);
        write_preamble(w).map_err(io("writing to the agent"))?;
        write_msg(
            w,
            0,
            &Msg::Hello {
                min_version: MIN_PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
                nonce,
            },
        )
        .map_err(io("writing to the agent"))?;
        Ok(Instant::now() + HELLO_RETRY)
    };
    let mut next_hello = say_hello(&mut w, &mut nonces)?;
    let deadline = Instant::now() + ready_timeout;
    let mut reader = FrameReader::new(stream);
    let ready = loop {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(Error::ReadyTimeout(ready_timeout));
        }
        if now >= next_hello {
            next_hello = say_hello(&mut w, &mut nonces)?;
        }
        let wait = left.min(next_hello.saturating_duration_since(now));
        reader
            .get_ref()
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(io("setting a timeout"))?;
        let ev = match reader.next_event() {
            Ok(ev) => ev,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(io("reading from the agent")(e)),
        };
        match ev {
            ReadEvent::Frame(raw) => match Frame::parse(raw) {
                // Anything else is left over from an earlier connection.
                Ok(Frame::Control {
                    msg: Msg::Ready(r), ..
                }) if nonces.contains(&r.nonce) => break r,
                Ok(Frame::Control {
                    session: 0,
                    msg:
                        Msg::Error {
                            code: ErrorCode::Version,
                            message,
                        },
                }) => return Err(Error::Version(message)),
                _ => {}
            },
            ReadEvent::Lost(_) => {}
            ReadEvent::Eof => {
                return Err(Error::Disconnected(
                    "the agent socket closed before the agent answered".into(),
                ))
            }
        }
    };
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(io("clearing the timeout"))?;
    Ok((w, reader, ready))
}

impl Inner {
    /// A new session, registered before its first message is sent.
    pub(crate) fn open_session(&self) -> Result<Arc<Session>> {
        self.check_alive()?;
        let mut id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id == 0 {
            id = self.next_id.fetch_add(1, Ordering::Relaxed);
        }
        let s = Arc::new(Session::new(id));
        self.sessions.lock().unwrap().insert(id, s.clone());
        Ok(s)
    }

    pub(crate) fn forget(&self, id: u32) {
        self.sessions.lock().unwrap().remove(&id);
    }

    fn check_alive(&self) -> Result<()> {
        match &*self.dead.lock().unwrap() {
            Some(why) => Err(Error::Disconnected(why.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn dead_error(&self) -> Error {
        Error::Disconnected(
            self.dead
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| "closed".into()),
        )
    }

    pub(crate) fn send_msg(&self, session: u32, msg: &Msg) -> Result<()> {
        self.check_alive()?;
        let r = write_msg(&mut *self.writer.lock().unwrap(), session, msg);
        r.map_err(|e| self.broken(e))
    }

    /// Sends a data frame straight from the caller's buffer.
    pub(crate) fn send_data(&self, kind: Kind, session: u32, data: &[u8], eof: bool) -> Result<()> {
        self.check_alive()?;
        let flags = if eof { ec1_proto::FLAG_EOF } else { 0 };
        let r = write_frame(
            &mut *self.writer.lock().unwrap(),
            kind,
            flags,
            session,
            data,
        );
        r.map_err(|e| self.broken(e))
    }

    pub(crate) fn credit(&self, session: u32, stream: Stream, bytes: Option<u32>) {
        if let Some(bytes) = bytes {
            let _ = self.send_msg(session, &Msg::Credit { stream, bytes });
        }
    }

    fn broken(&self, e: io::Error) -> Error {
        self.die(format!("writing to the agent failed: {e}"));
        self.dead_error()
    }

    /// Marks the connection dead and fails every session.
    fn die(&self, why: String) {
        {
            let mut d = self.dead.lock().unwrap();
            if d.is_none() {
                *d = Some(why.clone());
            }
        }
        self.fail_all(|| FailReason::Disconnected(why.clone()));
        self.pings.lock().unwrap().clear();
        let _ = self.writer.lock().unwrap().shutdown(Shutdown::Both);
    }

    /// Ends every open session with `why()` (sessions are taken out of the table
    /// first, so none is finished while the table is locked).
    fn fail_all(&self, why: impl Fn() -> FailReason) {
        let all: Vec<_> = self
            .sessions
            .lock()
            .unwrap()
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in all {
            s.finish(End::Failed(why()));
        }
    }

    fn read_loop(self: Arc<Inner>, mut reader: FrameReader<UnixStream>) {
        let why = loop {
            match reader.next_event() {
                Ok(ReadEvent::Frame(raw)) => match Frame::parse(raw) {
                    Ok(f) => self.dispatch(f),
                    Err(m) => self.fail_session(
                        m.session,
                        FailReason::Remote(ErrorCode::Malformed, format!("from the agent: {m}")),
                    ),
                },
                Ok(ReadEvent::Lost(e)) => {
                    // Our side of the stream is corrupt: nothing can be trusted.
                    break format!("lost frame boundaries in what the agent sent ({e})");
                }
                Ok(ReadEvent::Eof) => break "the agent socket closed (did the VM stop?)".into(),
                Err(e) => break format!("reading from the agent failed: {e}"),
            }
        };
        self.die(why);
    }

    fn session(&self, id: u32) -> Option<Arc<Session>> {
        self.sessions.lock().unwrap().get(&id).cloned()
    }

    fn fail_session(&self, id: u32, why: FailReason) {
        if let Some(s) = self.sessions.lock().unwrap().remove(&id) {
            s.finish(End::Failed(why));
        }
    }

    fn end_session(&self, id: u32, end: End) {
        if let Some(s) = self.sessions.lock().unwrap().remove(&id) {
            s.finish(end);
        }
    }

    fn dispatch(&self, f: Frame) {
        match f {
            Frame::Data {
                session,
                kind,
                eof,
                payload,
            } => {
                let Some(s) = self.session(session) else {
                    return; // ended or abandoned: late data is normal
                };
                let (stream, res) = {
                    let mut st = s.lock();
                    match kind {
                        Kind::Stdout => (Stream::Stdout, st.stdout.push(payload, eof)),
                        Kind::Stderr => (Stream::Stderr, st.stderr.push(payload, eof)),
                        Kind::File => (Stream::File, st.file.push(payload, eof)),
                        _ => {
                            drop(st);
                            return self.fail_session(
                                session,
                                FailReason::Remote(
                                    ErrorCode::Protocol,
                                    format!("the agent sent {kind:?} data"),
                                ),
                            );
                        }
                    }
                };
                match res {
                    Ok(credit) => {
                        s.cv.notify_all();
                        self.credit(session, stream, credit);
                        if kind == Kind::File && eof {
                            self.end_session(session, End::DownloadDone);
                        }
                    }
                    Err(e) => {
                        let _ = self.send_msg(session, &Msg::Close);
                        self.fail_session(
                            session,
                            FailReason::Remote(ErrorCode::Protocol, format!("agent: {e}")),
                        );
                    }
                }
            }
            Frame::Control { session, msg } => self.control(session, msg),
        }
    }

    fn control(&self, session: u32, msg: Msg) {
        match msg {
            Msg::Pong { token } => {
                if let Some(tx) = self.pings.lock().unwrap().remove(&token) {
                    let _ = tx.send(());
                }
            }
            Msg::Reset { reason } => self.fail_all(|| FailReason::Reset(reason.clone())),
            Msg::Started { pid } => {
                if let Some(s) = self.session(session) {
                    s.lock().pid = Some(pid);
                    s.cv.notify_all();
                }
            }
            Msg::Credit { stream, bytes } => {
                if let Some(s) = self.session(session) {
                    if matches!(stream, Stream::Stdin | Stream::File) {
                        s.lock().send_credit += bytes as u64;
                        s.cv.notify_all();
                    }
                }
            }
            Msg::FileInfo { mode, size } => {
                if let Some(s) = self.session(session) {
                    s.lock().file_info = Some((mode, size));
                    s.cv.notify_all();
                }
            }
            Msg::Exited { how, timed_out } => {
                ec1_trace::event!("exec.end", session = session, how = format!("{how:?}"));
                self.end_session(session, End::Exited(how, timed_out))
            }
            Msg::UploadDone { bytes } => self.end_session(session, End::UploadDone(bytes)),
            Msg::Refreshed { clock_step_ns } => {
                self.end_session(session, End::Refreshed(clock_step_ns))
            }
            Msg::Quiesced {
                remounted,
                frozen,
                init_shutdown,
            } => self.end_session(
                session,
                End::Quiesced {
                    remounted,
                    frozen,
                    init_shutdown,
                },
            ),
            // On session 0 an error answers something of ours that had no session (it
            // cannot happen with this client); nothing waits for it.
            Msg::Error { code, message } if session != 0 => {
                self.fail_session(session, FailReason::Remote(code, message));
            }
            // Hello, Ready (stale), Exec, ... are not for the host: ignore.
            _ => {}
        }
    }
}
