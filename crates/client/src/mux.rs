//! Many host connections over one agent channel.
//!
//! The engine's agent channel takes one host connection at a time (QEMU's chardev
//! socket), and a hello on it drops every session of the connection before. The
//! multiplexer holds that one connection and serves any number of clients on a socket
//! of its own, so that `ec1 exec` and `ec1 cp` processes run side by side on one VM:
//!
//! * each client says hello and gets the agent's ready announcement (with its own
//!   nonce) from the multiplexer; a client's second hello drops its own sessions only;
//! * a client's sessions are renumbered onto the channel, and frames coming back are
//!   routed to their client by session: data frames are copied, never re-encoded;
//! * a client that goes away has its sessions closed on the channel (the agent kills
//!   their commands, as when a direct client goes); the others carry on;
//! * when the channel ends (the VM stopped), every client connection is closed.
//!
//! Each client has a writer thread fed by an unbounded queue, so a slow client never
//! holds up the channel reader; the queue stays small because every stream the agent
//! sends is bounded by its credit window, which only that client's reads replenish.

use crate::conn::{connect_retrying, hello};
use crate::error::{Error, Result};
use ec1_proto::{
    write_frame, write_msg, ErrorCode, Frame, FrameReader, Kind, Msg, ReadEvent, ReadyInfo,
    FLAG_EOF,
};
use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A frame for a client, as its writer thread sends it.
enum Out {
    Control(u32, Msg),
    Data(Kind, bool, u32, Vec<u8>),
}

/// Bytes queued for one client that it has not taken off its socket yet. With flow
/// control a well-behaved agent keeps at most a window per stream in flight (256 KiB),
/// so this is 128 windows: past it, the agent ignores credit or the client stopped
/// reading, and the client is disconnected rather than the queue grown.
const MAX_CLIENT_QUEUE: usize = 32 << 20;

impl Out {
    /// What it costs in the queue.
    fn cost(&self) -> usize {
        match self {
            Out::Control(..) => 64,
            Out::Data(_, _, _, payload) => 64 + payload.len(),
        }
    }
}

/// One served client.
struct ClientEntry {
    tx: Sender<Out>,
    /// Bytes in `tx`'s queue (see [`MAX_CLIENT_QUEUE`]).
    queued: Arc<AtomicUsize>,
    /// Its session ids → the channel's.
    sessions: HashMap<u32, u32>,
    /// To close its connection when the channel ends.
    stream: UnixStream,
}

#[derive(Default)]
struct Routes {
    next_session: u32,
    next_client: u64,
    /// Channel session → (client, the client's session id).
    by_channel: HashMap<u32, (u64, u32)>,
    clients: HashMap<u64, ClientEntry>,
    /// Ping token → the client that sent it.
    pings: HashMap<u64, u64>,
    closed: bool,
}

impl Routes {
    /// The channel session of client `id`'s session `theirs`, if it has one.
    fn channel_session(&self, id: u64, theirs: u32) -> Option<u32> {
        self.clients.get(&id)?.sessions.get(&theirs).copied()
    }

    /// Forgets channel session `up` (ended, or closed by its client).
    fn forget(&mut self, up: u32) {
        if let Some((id, theirs)) = self.by_channel.remove(&up) {
            if let Some(c) = self.clients.get_mut(&id) {
                c.sessions.remove(&theirs);
            }
        }
    }
}

struct Shared {
    up: Mutex<UnixStream>,
    routes: Mutex<Routes>,
    ready: ReadyInfo,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves clients on a socket over one agent channel; stops (and removes its socket)
/// when dropped.
pub struct Mux {
    listen_path: PathBuf,
    stopping: Arc<AtomicBool>,
    shared: Arc<Mutex<Option<Arc<Shared>>>>,
}

impl Mux {
    /// Binds `listen_path` now (clients that connect early wait in its backlog) and, on
    /// a thread, connects to the agent channel at `upstream` (retrying while it is not
    /// there yet), says hello (the guest may still be booting: up to `ready_timeout`),
    /// then serves.
    pub fn start(upstream: &Path, listen_path: &Path, ready_timeout: Duration) -> Result<Mux> {
        let io_err = |context| move |source| Error::Io { context, source };
        match std::fs::remove_file(listen_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing a stale agent socket")(e)),
        }
        let listener = crate::private_socket::bind_private(listen_path)
            .map_err(io_err("binding the agent socket"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let shared: Arc<Mutex<Option<Arc<Shared>>>> = Arc::default();
        let (up_path, stop, slot) = (upstream.to_path_buf(), stopping.clone(), shared.clone());
        std::thread::Builder::new()
            .name("ec1-agent-mux".into())
            .spawn(move || {
                if let Err(e) = serve(&up_path, listener, ready_timeout, &stop, &slot) {
                    if !stop.load(Ordering::SeqCst) {
                        log::warn!("the agent channel multiplexer stopped: {e}");
                    }
                }
            })
            .map_err(io_err("starting the multiplexer thread"))?;
        Ok(Mux {
            listen_path: listen_path.to_path_buf(),
            stopping,
            shared,
        })
    }

    /// The socket clients connect to.
    pub fn path(&self) -> &Path {
        &self.listen_path
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop, then end every connection.
        let _ = UnixStream::connect(&self.listen_path);
        if let Some(sh) = lock(&self.shared).take() {
            sh.close_all();
            let _ = lock(&sh.up).shutdown(Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.listen_path);
    }
}

fn serve(
    upstream: &Path,
    listener: UnixListener,
    ready_timeout: Duration,
    stopping: &AtomicBool,
    slot: &Mutex<Option<Arc<Shared>>>,
) -> Result<()> {
    let up = connect_retrying(upstream, ready_timeout, &|| stopping.load(Ordering::SeqCst))?;
    let (up, reader, ready) = hello(up, ready_timeout)?;
    let sh = Arc::new(Shared {
        up: Mutex::new(up),
        routes: Mutex::default(),
        ready,
    });
    if stopping.load(Ordering::SeqCst) {
        return Ok(());
    }
    *lock(slot) = Some(sh.clone());
    {
        let sh = sh.clone();
        std::thread::Builder::new()
            .name("ec1-mux-channel".into())
            .spawn(move || sh.channel_loop(reader))
            .map_err(|source| Error::Io {
                context: "starting the channel reader",
                source,
            })?;
    }
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) || lock(&sh.routes).closed {
            break;
        }
        let Ok(conn) = conn else { continue };
        // Whoever connects can run commands in the guest: only this user or root.
        if !crate::private_socket::peer_is_trusted(&conn) {
            log::warn!("agent multiplexer: refusing a connection from another user");
            continue;
        }
        if let Err(e) = sh.clone().add_client(conn) {
            log::warn!("agent multiplexer: cannot serve a client: {e}");
        }
    }
    Ok(())
}

impl Shared {
    fn add_client(self: Arc<Self>, conn: UnixStream) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued.clone();
        let id = {
            let mut r = lock(&self.routes);
            r.next_client += 1;
            let id = r.next_client;
            r.clients.insert(
                id,
                ClientEntry {
                    tx,
                    queued,
                    sessions: HashMap::new(),
                    stream: conn.try_clone()?,
                },
            );
            id
        };
        let writer = conn.try_clone()?;
        std::thread::Builder::new()
            .name("ec1-mux-write".into())
            .spawn(move || client_writer(writer, rx, &writer_queued))?;
        std::thread::Builder::new()
            .name("ec1-mux-read".into())
            .spawn(move || {
                self.client_loop(id, FrameReader::new(conn));
                self.drop_client(id);
            })?;
        Ok(())
    }

    /// Queues `out` for client `id`.
    fn to_client(routes: &Routes, id: u64, out: Out) {
        if let Some(c) = routes.clients.get(&id) {
            let cost = out.cost();
            if c.queued.fetch_add(cost, Ordering::SeqCst) + cost > MAX_CLIENT_QUEUE {
                // Its writer ends on the shut socket; its reader then drops it.
                log::warn!(
                    "agent multiplexer: a client has {MAX_CLIENT_QUEUE} bytes waiting: disconnecting it"
                );
                let _ = c.stream.shutdown(Shutdown::Both);
                return;
            }
            let _ = c.tx.send(out);
        }
    }

    fn send_up(&self, session: u32, msg: &Msg) {
        let _ = write_msg(&mut *lock(&self.up), session, msg);
    }

    /// What a client sends: hello and ping on session 0, its sessions' frames renumbered.
    fn client_loop(&self, id: u64, mut reader: FrameReader<UnixStream>) {
        let mut greeted = false;
        loop {
            let raw = match reader.next_event() {
                Ok(ReadEvent::Frame(raw)) => raw,
                Ok(ReadEvent::Lost(_)) => continue, // a preamble, or stale bytes
                Ok(ReadEvent::Eof) | Err(_) => return,
            };
            let frame = match Frame::parse(raw) {
                Ok(f) => f,
                Err(m) => {
                    self.refuse(id, m.session, ErrorCode::Malformed, m.to_string());
                    continue;
                }
            };
            match frame {
                Frame::Control {
                    session: 0,
                    msg:
                        Msg::Hello {
                            min_version,
                            max_version,
                            nonce,
                        },
                } => {
                    greeted = self.greet(id, min_version, max_version, nonce);
                }
                _ if !greeted => {} // left over from an earlier connection
                Frame::Control {
                    session: 0,
                    msg: Msg::Ping { token },
                } => {
                    lock(&self.routes).pings.insert(token, id);
                    self.send_up(0, &Msg::Ping { token });
                }
                Frame::Control { session: 0, .. } => {}
                Frame::Control { session, msg } => self.forward_control(id, session, msg),
                Frame::Data {
                    session,
                    kind,
                    eof,
                    payload,
                } => {
                    let up = lock(&self.routes).channel_session(id, session);
                    if let Some(up) = up {
                        let flags = if eof { FLAG_EOF } else { 0 };
                        let _ = write_frame(&mut *lock(&self.up), kind, flags, up, &payload);
                    }
                }
            }
        }
    }

    /// Answers a client's hello as the agent would: its sessions are dropped, and the
    /// agent's announcement comes back with the client's nonce.
    fn greet(&self, id: u64, min: u16, max: u16, nonce: u64) -> bool {
        self.close_sessions_of(id);
        let r = lock(&self.routes);
        // The channel's version was chosen by the multiplexer's own hello.
        match (min..=max).contains(&self.ready.version) {
            true => {
                let ready = ReadyInfo {
                    nonce,
                    ..self.ready.clone()
                };
                Shared::to_client(&r, id, Out::Control(0, Msg::Ready(ready)));
                true
            }
            false => {
                let message = format!(
                    "the agent speaks protocol version {}, this client {min}..={max}",
                    self.ready.version
                );
                let code = ErrorCode::Version;
                Shared::to_client(&r, id, Out::Control(0, Msg::Error { code, message }));
                false
            }
        }
    }

    fn refuse(&self, id: u64, session: u32, code: ErrorCode, message: String) {
        let up = {
            let mut r = lock(&self.routes);
            let up = r.channel_session(id, session);
            if let Some(up) = up {
                r.forget(up);
            }
            Shared::to_client(&r, id, Out::Control(session, Msg::Error { code, message }));
            up
        };
        if let Some(up) = up {
            self.send_up(up, &Msg::Close);
        }
    }

    fn forward_control(&self, id: u64, session: u32, msg: Msg) {
        let opens = matches!(
            msg,
            Msg::Exec(_)
                | Msg::Upload { .. }
                | Msg::Download { .. }
                | Msg::Refresh(_)
                | Msg::Quiesce
        );
        let up = {
            let mut r = lock(&self.routes);
            match r.channel_session(id, session) {
                Some(up) if !opens => {
                    if matches!(msg, Msg::Close) {
                        r.forget(up);
                    }
                    Some(up)
                }
                Some(_) => {
                    let message = format!("session {session} is already in use");
                    let code = ErrorCode::DuplicateSession;
                    Shared::to_client(&r, id, Out::Control(session, Msg::Error { code, message }));
                    None
                }
                None if opens => {
                    r.next_session = r.next_session.wrapping_add(1).max(1);
                    while r.by_channel.contains_key(&r.next_session) {
                        r.next_session = r.next_session.wrapping_add(1).max(1);
                    }
                    let up = r.next_session;
                    r.by_channel.insert(up, (id, session));
                    if let Some(c) = r.clients.get_mut(&id) {
                        c.sessions.insert(session, up);
                    }
                    Some(up)
                }
                // Closing or crediting a session that already ended: nothing to do.
                None => None,
            }
        };
        if let Some(up) = up {
            self.send_up(up, &msg);
        }
    }

    /// What the agent sends: routed to the client that owns the session.
    fn channel_loop(&self, mut reader: FrameReader<UnixStream>) {
        loop {
            let raw = match reader.next_event() {
                Ok(ReadEvent::Frame(raw)) => raw,
                Ok(ReadEvent::Lost(e)) => {
                    log::warn!("agent multiplexer: lost frame boundaries from the agent ({e})");
                    break;
                }
                Ok(ReadEvent::Eof) | Err(_) => break,
            };
            let Ok(frame) = Frame::parse(raw) else {
                continue;
            };
            let mut r = lock(&self.routes);
            match frame {
                Frame::Control {
                    session: 0,
                    msg: Msg::Pong { token },
                } => {
                    if let Some(id) = r.pings.remove(&token) {
                        Shared::to_client(&r, id, Out::Control(0, Msg::Pong { token }));
                    }
                }
                Frame::Control {
                    session: 0,
                    msg: Msg::Reset { reason },
                } => {
                    // The agent dropped every session: so does every client.
                    r.by_channel.clear();
                    for c in r.clients.values_mut() {
                        c.sessions.clear();
                        let reason = reason.clone();
                        let out = Out::Control(0, Msg::Reset { reason });
                        c.queued.fetch_add(out.cost(), Ordering::SeqCst);
                        let _ = c.tx.send(out);
                    }
                }
                Frame::Control { session: 0, .. } => {}
                Frame::Control { session, msg } => {
                    let Some(&(id, theirs)) = r.by_channel.get(&session) else {
                        continue;
                    };
                    if ends_session(&msg) {
                        r.forget(session);
                    }
                    Shared::to_client(&r, id, Out::Control(theirs, msg));
                }
                Frame::Data {
                    session,
                    kind,
                    eof,
                    payload,
                } => {
                    if let Some(&(id, theirs)) = r.by_channel.get(&session) {
                        // A download has no closing message: its data's end ends it.
                        if kind == Kind::File && eof {
                            r.forget(session);
                        }
                        Shared::to_client(&r, id, Out::Data(kind, eof, theirs, payload));
                    }
                }
            }
        }
        self.close_all();
    }

    /// Closes client `id`'s sessions on the channel (the agent kills their commands).
    fn close_sessions_of(&self, id: u64) {
        let ups: Vec<u32> = {
            let mut r = lock(&self.routes);
            let ups: Vec<u32> = match r.clients.get_mut(&id) {
                Some(c) => c.sessions.drain().map(|(_, up)| up).collect(),
                None => Vec::new(),
            };
            for up in &ups {
                r.by_channel.remove(up);
            }
            ups
        };
        for up in ups {
            self.send_up(up, &Msg::Close);
        }
    }

    fn drop_client(&self, id: u64) {
        self.close_sessions_of(id);
        let mut r = lock(&self.routes);
        r.pings.retain(|_, c| *c != id);
        if let Some(c) = r.clients.remove(&id) {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// The channel ended: every client connection ends too.
    fn close_all(&self) {
        let mut r = lock(&self.routes);
        r.closed = true;
        r.by_channel.clear();
        for (_, c) in r.clients.drain() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

/// Whether `msg` is the last the agent sends for its session.
fn ends_session(msg: &Msg) -> bool {
    matches!(
        msg,
        Msg::Exited { .. }
            | Msg::Error { .. }
            | Msg::UploadDone { .. }
            | Msg::Refreshed { .. }
            | Msg::Quiesced { .. }
    )
}

fn client_writer(mut w: UnixStream, rx: Receiver<Out>, queued: &AtomicUsize) {
    for out in rx {
        queued.fetch_sub(out.cost(), Ordering::SeqCst);
        let r = match out {
            Out::Control(session, msg) => write_msg(&mut w, session, &msg),
            Out::Data(kind, eof, session, payload) => {
                let flags = if eof { FLAG_EOF } else { 0 };
                write_frame(&mut w, kind, flags, session, &payload)
            }
        };
        if r.is_err() {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, Command, ConnectOptions};
    use ec1_proto::{Termination, PROTOCOL_VERSION};
    use std::collections::HashSet;

    /// An agent that answers a hello, runs every exec by printing its program name,
    /// and resets the channel for a program called `reset`. It records the channel
    /// sessions it saw, and fails if one is reused while live.
    fn fake_agent(listener: UnixListener) -> std::thread::JoinHandle<Vec<u32>> {
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut w = conn.try_clone().unwrap();
            let mut reader = FrameReader::new(conn);
            let (mut live, mut seen) = (HashSet::new(), Vec::new());
            loop {
                let raw = match reader.next_event() {
                    Ok(ReadEvent::Frame(raw)) => raw,
                    Ok(ReadEvent::Lost(_)) => continue,
                    _ => return seen,
                };
                match Frame::parse(raw) {
                    Ok(Frame::Control {
                        msg: Msg::Hello { nonce, .. },
                        ..
                    }) => {
                        let ready = ReadyInfo {
                            version: PROTOCOL_VERSION,
                            nonce,
                            agent_version: "fake".into(),
                            mode: "initramfs".into(),
                            agent_start_ns: 1,
                            agent_ready_ns: 2,
                            uptime_ns: 3,
                            realtime_ns: 4,
                        };
                        write_msg(&mut w, 0, &Msg::Ready(ready)).unwrap();
                    }
                    Ok(Frame::Control {
                        msg: Msg::Ping { token },
                        ..
                    }) => write_msg(&mut w, 0, &Msg::Pong { token }).unwrap(),
                    Ok(Frame::Control {
                        session,
                        msg: Msg::Exec(req),
                    }) => {
                        assert!(live.insert(session), "session {session} reused while live");
                        seen.push(session);
                        if req.argv[0] == b"flood" {
                            // A hostile agent: output far past any credit.
                            write_msg(&mut w, session, &Msg::Started { pid: session }).unwrap();
                            let chunk = vec![b'x'; 60_000];
                            for _ in 0..1200 {
                                if write_frame(&mut w, Kind::Stdout, 0, session, &chunk).is_err() {
                                    break;
                                }
                            }
                            continue;
                        }
                        if req.argv[0] == b"reset" {
                            live.clear();
                            let reason = "test".into();
                            write_msg(&mut w, 0, &Msg::Reset { reason }).unwrap();
                            continue;
                        }
                        write_msg(&mut w, session, &Msg::Started { pid: session }).unwrap();
                        write_frame(&mut w, Kind::Stdout, FLAG_EOF, session, &req.argv[0]).unwrap();
                        write_frame(&mut w, Kind::Stderr, FLAG_EOF, session, b"").unwrap();
                        let how = Termination::Code(0);
                        let exited = Msg::Exited {
                            how,
                            timed_out: false,
                        };
                        write_msg(&mut w, session, &exited).unwrap();
                        live.remove(&session);
                    }
                    _ => {}
                }
            }
        })
    }

    #[test]
    fn clients_share_the_channel_and_a_reset_reaches_each() {
        let dir = tempfile::tempdir().unwrap();
        let channel = dir.path().join("channel.sock");
        let public = dir.path().join("agent.sock");
        let agent = fake_agent(UnixListener::bind(&channel).unwrap());
        let mux = Mux::start(&channel, &public, Duration::from_secs(10)).unwrap();
        assert_eq!(mux.path(), public);
        let opts = ConnectOptions::default();
        let (a, b) = (
            Client::connect(&public, &opts).unwrap(),
            Client::connect(&public, &opts).unwrap(),
        );
        assert_eq!(a.ready_info().agent_version, "fake");
        // Both clients number their sessions from 1; the channel must not see that.
        let run = |c: &Client, prog: &str| c.output(&Command::new(prog)).unwrap().stdout;
        std::thread::scope(|s| {
            let ta = s.spawn(|| (0..20).map(|_| run(&a, "a")).collect::<Vec<_>>());
            let tb = s.spawn(|| (0..20).map(|_| run(&b, "b")).collect::<Vec<_>>());
            assert!(ta.join().unwrap().iter().all(|o| o == b"a"));
            assert!(tb.join().unwrap().iter().all(|o| o == b"b"));
        });
        assert!(a.ping(Duration::from_secs(5)).is_ok());
        let e = a.output(&Command::new("reset")).unwrap_err();
        assert!(matches!(e, Error::ChannelReset(_)), "{e}");
        // The other client's connection carries on after the reset (its pong comes
        // after the reset it was sent, so the reset has been taken by then).
        assert!(b.ping(Duration::from_secs(5)).is_ok());
        assert_eq!(run(&b, "b"), b"b");
        drop(mux);
        assert!(!public.exists(), "the socket is removed");
        let e = b.output(&Command::new("b")).unwrap_err();
        assert!(matches!(e, Error::Disconnected(_)), "{e}");
        drop((a, b));
        let seen = agent.join().unwrap();
        assert_eq!(seen.len(), 20 + 20 + 1 + 1);
    }

    /// A client that stops reading while a hostile agent floods its session: the mux
    /// disconnects it once its queue passes the bound, instead of growing.
    #[test]
    fn a_client_that_does_not_read_is_disconnected_not_buffered_for() {
        let dir = tempfile::tempdir().unwrap();
        let channel = dir.path().join("channel.sock");
        let public = dir.path().join("agent.sock");
        let _agent = fake_agent(UnixListener::bind(&channel).unwrap());
        let mux = Mux::start(&channel, &public, Duration::from_secs(10)).unwrap();
        let mut raw = UnixStream::connect(&public).unwrap();
        let hello = Msg::Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            nonce: 7,
        };
        write_msg(&mut raw, 0, &hello).unwrap();
        let req = crate::Command::new("flood").req.clone();
        write_msg(&mut raw, 1, &Msg::Exec(req)).unwrap();
        // Never read: the flood (72 MB) passes the bound and the client is dropped.
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let shared = lock(&mux.shared).clone();
            shared.is_some_and(|s| lock(&s.routes).clients.is_empty())
        });
        assert!(gone, "the client is disconnected");
        // Reading now finds the end of the stream (after what was already sent).
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut raw, &mut sink);
        assert!(sink.len() < 64 << 20, "{} bytes", sink.len());
    }
}
