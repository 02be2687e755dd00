//! The host side of the vsock device: every connection, the listening `uds_path`, and
//! the packets waiting for the guest. Independent of virtqueues, so it can be driven
//! (and tested) packet by packet.
//!
//! Firecracker's conventions: a host client connects to `uds_path`, writes
//! `CONNECT <port>\n` and, once the guest accepted, reads `OK <host port>\n`; a guest
//! connection to CID 2 port P is connected to the Unix socket `<uds_path>_P`.
//!
//! All host sockets are non-blocking and registered edge-triggered in one epoll set,
//! whose descriptor the device watches; [`Muxer::process_host_events`] drains it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::conn::{Conn, Flush, State, TX_BUF_CAP};
use crate::proto::*;

/// The epoll token of the `uds_path` listener; connections count up from 1.
const LISTENER: u64 = 0;
/// Host ports the device gives host-initiated connections start here (as Firecracker's).
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// A `CONNECT` line longer than this is refused.
const MAX_CONNECT_LINE: usize = 32;
/// Live connections per device, counting host clients still sending their `CONNECT`
/// line (Firecracker's figure): a guest's connect loop or a flood of host clients is
/// refused past it instead of growing ec1's descriptors and memory.
pub const MAX_CONNECTIONS: usize = 1023;
/// Control packets queued for the guest. A guest that posts no receive buffers while
/// provoking resets would otherwise grow the queue without end; past this, packets
/// that only tell the guest about a reset or credit are dropped (the guest's own
/// timeouts cover them), and new connections are refused.
const MAX_CTRL: usize = 2 * MAX_CONNECTIONS + 64;

/// A host client that connected to `uds_path` and has not finished its `CONNECT` line.
struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
}

/// A control packet waiting for the guest.
#[derive(Debug, Clone, Copy)]
struct Ctrl {
    local_port: u32,
    peer_port: u32,
    op: u16,
    flags: u32,
}

/// The host side of one vsock device.
pub struct Muxer {
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    next_token: u64,
    next_local_port: u32,
    pending: HashMap<u64, Pending>,
    conns: BTreeMap<u64, Conn>,
    /// (host port, guest port) → token.
    by_ports: HashMap<(u32, u32), u64>,
    ctrl: VecDeque<Ctrl>,
    /// The connection after which the next data packet is looked for (round robin).
    rr_after: u64,
    /// [`MAX_CONNECTIONS`], lower in tests.
    max_connections: usize,
}

fn epoll_events() -> EventSet {
    EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED
}

impl Muxer {
    /// Listens on `uds_path` (which must not exist).
    pub fn new(uds_path: &Path) -> std::io::Result<Muxer> {
        let listener = UnixListener::bind(uds_path)?;
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, LISTENER),
        )?;
        Ok(Muxer {
            uds_path: uds_path.to_path_buf(),
            listener,
            epoll,
            next_token: 1,
            next_local_port: FIRST_LOCAL_PORT,
            pending: HashMap::new(),
            conns: BTreeMap::new(),
            by_ports: HashMap::new(),
            ctrl: VecDeque::new(),
            rr_after: 0,
            max_connections: MAX_CONNECTIONS,
        })
    }

    /// As [`Muxer::new`], with another connection limit.
    pub fn with_limit(uds_path: &Path, max_connections: usize) -> std::io::Result<Muxer> {
        let mut m = Muxer::new(uds_path)?;
        m.max_connections = max_connections;
        Ok(m)
    }

    /// Whether another connection would pass the limit (or the control queue is
    /// full, so the guest could not be told about it).
    fn full(&self) -> bool {
        self.conns.len() + self.pending.len() >= self.max_connections || self.ctrl.len() >= MAX_CTRL
    }

    /// Queues a control packet for the guest, unless the queue is full (see
    /// [`MAX_CTRL`]).
    fn push_ctrl(&mut self, c: Ctrl) {
        if self.ctrl.len() < MAX_CTRL {
            self.ctrl.push_back(c);
        }
    }

    /// The epoll descriptor that becomes readable when a host socket has news.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn register(&mut self, fd: RawFd) -> std::io::Result<u64> {
        let token = self.next_token;
        self.next_token += 1;
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(epoll_events(), token),
        )?;
        Ok(token)
    }

    fn reset(&mut self, local_port: u32, peer_port: u32) {
        self.push_ctrl(Ctrl {
            local_port,
            peer_port,
            op: OP_RST,
            flags: 0,
        });
    }

    /// Closes connection `token` (its socket leaves the epoll set as it closes) and,
    /// if `tell_guest`, resets the guest's end.
    fn remove(&mut self, token: u64, tell_guest: bool) {
        if let Some(c) = self.conns.remove(&token) {
            self.by_ports.remove(&(c.local_port, c.peer_port));
            if tell_guest {
                self.reset(c.local_port, c.peer_port);
            }
        }
    }

    /// Handles one packet from the guest.
    pub fn handle_guest(&mut self, pkt: GuestPacket, guest_cid: u64) {
        let key = (pkt.dst_port, pkt.src_port);
        if pkt.dst_cid != HOST_CID || pkt.src_cid != guest_cid || pkt.type_ != TYPE_STREAM {
            if pkt.op != OP_RST {
                self.reset(pkt.dst_port, pkt.src_port);
            }
            return;
        }
        let token = self.by_ports.get(&key).copied();
        if pkt.op == OP_REQUEST {
            match token {
                Some(_) => self.reset(key.0, key.1),
                None if self.full() => {
                    log::debug!(
                        "vsock: refusing a guest connection: {} open",
                        self.conns.len()
                    );
                    self.reset(key.0, key.1)
                }
                None => self.connect_to_host(&pkt),
            }
            return;
        }
        let Some(token) = token else {
            if pkt.op != OP_RST {
                self.reset(key.0, key.1);
            }
            return;
        };
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        c.update_peer_credit(pkt.buf_alloc, pkt.fwd_cnt);
        match pkt.op {
            OP_RESPONSE if c.state == State::Connecting => {
                c.state = State::Established;
                let ok = format!("OK {}\n", c.local_port);
                if (&c.stream).write_all(ok.as_bytes()).is_err() {
                    self.remove(token, true);
                }
            }
            OP_RST => self.remove(token, false),
            OP_SHUTDOWN => {
                c.guest_shut_rcv |= pkt.flags & SHUTDOWN_RCV != 0;
                c.guest_shut_send |= pkt.flags & SHUTDOWN_SEND != 0;
                self.flush(token);
            }
            OP_RW if c.state == State::Established => {
                if c.guest_shut_send || !c.push_guest_data(&pkt.data) {
                    log::warn!(
                        "vsock: guest port {} sent past its credit or after shutting down; resetting",
                        c.peer_port
                    );
                    self.remove(token, true);
                } else {
                    self.flush(token);
                }
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => self.push_ctrl(Ctrl {
                local_port: key.0,
                peer_port: key.1,
                op: OP_CREDIT_UPDATE,
                flags: 0,
            }),
            _ => self.remove(token, true),
        }
    }

    /// A guest REQUEST: connects to `<uds_path>_<port>` and answers RESPONSE or RST.
    fn connect_to_host(&mut self, pkt: &GuestPacket) {
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", pkt.dst_port));
        // Non-blocking from the start: a host listener that stopped accepting (its
        // backlog full) refuses at once instead of blocking the device's thread.
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("vsock: guest connection to {path:?} refused: {e}");
                return self.reset(pkt.dst_port, pkt.src_port);
            }
        };
        let token = match self.register(stream.as_raw_fd()) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("vsock: cannot watch {path:?}: {e}");
                return self.reset(pkt.dst_port, pkt.src_port);
            }
        };
        let mut c = Conn::new(stream, pkt.dst_port, pkt.src_port, State::Established);
        c.update_peer_credit(pkt.buf_alloc, pkt.fwd_cnt);
        self.conns.insert(token, c);
        self.by_ports.insert((pkt.dst_port, pkt.src_port), token);
        self.push_ctrl(Ctrl {
            local_port: pkt.dst_port,
            peer_port: pkt.src_port,
            op: OP_RESPONSE,
            flags: 0,
        });
    }

    /// Writes what connection `token` buffered, resetting it if the host end is gone
    /// and finishing it once both sides are done.
    fn flush(&mut self, token: u64) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        match c.flush() {
            Flush::Broken => self.remove(token, true),
            Flush::Pending => {}
            Flush::Done if c.finished() => self.remove(token, true),
            Flush::Done => {
                if c.credit_update_due() {
                    let (l, p) = (c.local_port, c.peer_port);
                    self.push_ctrl(Ctrl {
                        local_port: l,
                        peer_port: p,
                        op: OP_CREDIT_UPDATE,
                        flags: 0,
                    });
                }
            }
        }
    }

    /// Drains the epoll set: accepts host clients, reads their `CONNECT` lines, and
    /// notes which connections became readable or writable.
    pub fn process_host_events(&mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("vsock: epoll_wait failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                let set = EventSet::from_bits_truncate(ev.events);
                if token == LISTENER {
                    self.accept();
                } else if self.pending.contains_key(&token) {
                    self.read_connect_line(token);
                } else if let Some(c) = self.conns.get_mut(&token) {
                    if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
                        c.readable = true;
                    }
                    if set.contains(EventSet::HANG_UP) {
                        c.host_gone = true;
                    }
                    if set.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
                        self.flush(token);
                    }
                }
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if self.full() => {
                    log::debug!("vsock: refusing a host client: {} open", self.conns.len());
                    drop(stream);
                }
                Ok((stream, _)) => {
                    let token = match stream
                        .set_nonblocking(true)
                        .and_then(|()| self.register(stream.as_raw_fd()))
                    {
                        Ok(t) => t,
                        Err(e) => {
                            log::warn!("vsock: cannot watch a host connection: {e}");
                            continue;
                        }
                    };
                    self.pending.insert(
                        token,
                        Pending {
                            stream,
                            line: Vec::new(),
                        },
                    );
                    // The line may already be there; its edge may have come before
                    // the registration.
                    self.read_connect_line(token);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("vsock: accepting on {}: {e}", self.uds_path.display());
                    return;
                }
            }
        }
    }

    /// Reads a host client's `CONNECT <port>\n` byte by byte (nothing past the line may
    /// be consumed: it is data for the guest) and sends the guest a REQUEST.
    fn read_connect_line(&mut self, token: u64) {
        let Some(p) = self.pending.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match p.stream.read(&mut byte) {
                Ok(1) => {
                    p.line.push(byte[0]);
                    if byte[0] == b'\n' {
                        break parse_connect(&p.line);
                    }
                    if p.line.len() > MAX_CONNECT_LINE {
                        break None;
                    }
                }
                Ok(_) => break None,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break None,
            }
        };
        let Some(p) = self.pending.remove(&token) else {
            return;
        };
        let Some(peer_port) = port else {
            log::debug!(
                "vsock: dropping a host client that sent {:?} instead of `CONNECT <port>`",
                String::from_utf8_lossy(&p.line)
            );
            return;
        };
        let local_port = self.free_local_port(peer_port);
        let mut c = Conn::new(p.stream, local_port, peer_port, State::Connecting);
        // Data the client sent after the line is picked up once the guest accepted.
        c.readable = true;
        self.conns.insert(token, c);
        self.by_ports.insert((local_port, peer_port), token);
        self.push_ctrl(Ctrl {
            local_port,
            peer_port,
            op: OP_REQUEST,
            flags: 0,
        });
    }

    fn free_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.by_ports.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    /// Whether something is waiting for the guest's receive queue.
    pub fn has_rx(&self) -> bool {
        !self.ctrl.is_empty() || self.conns.values().any(Conn::wants_rx)
    }

    /// The next packet for the guest: a control packet, or up to `buf.len()` bytes of
    /// some connection's host data read into `buf` (round robin). `None` when nothing
    /// is ready.
    pub fn next_for_guest(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(c) = self.ctrl.pop_front() {
            let (buf_alloc, fwd_cnt) = match self.by_ports.get(&(c.local_port, c.peer_port)) {
                Some(t) if c.op != OP_RST => {
                    let conn = self.conns.get_mut(t)?;
                    (TX_BUF_CAP, conn.take_fwd_cnt())
                }
                _ => (0, 0),
            };
            return Some((
                Header {
                    src_port: c.local_port,
                    dst_port: c.peer_port,
                    op: c.op,
                    flags: c.flags,
                    buf_alloc,
                    fwd_cnt,
                },
                0,
            ));
        }
        let tokens: Vec<u64> = self
            .conns
            .range(self.rr_after + 1..)
            .chain(self.conns.range(..=self.rr_after))
            .filter(|(_, c)| c.wants_rx())
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            let c = self.conns.get_mut(&token)?;
            match c.read_host(buf) {
                Ok(0) => {
                    // The host will send no more; if it is gone altogether it cannot
                    // receive either (Firecracker then shuts both directions).
                    c.host_eof = true;
                    let flags = if c.host_gone {
                        SHUTDOWN_SEND | SHUTDOWN_RCV
                    } else {
                        SHUTDOWN_SEND
                    };
                    let (l, p) = (c.local_port, c.peer_port);
                    if c.finished() {
                        self.remove(token, true);
                    } else {
                        self.push_ctrl(Ctrl {
                            local_port: l,
                            peer_port: p,
                            op: OP_SHUTDOWN,
                            flags,
                        });
                    }
                    return self.next_for_guest(buf);
                }
                Ok(n) => {
                    self.rr_after = token;
                    let h = Header {
                        src_port: c.local_port,
                        dst_port: c.peer_port,
                        op: OP_RW,
                        flags: 0,
                        buf_alloc: TX_BUF_CAP,
                        fwd_cnt: c.take_fwd_cnt(),
                    };
                    return Some((h, n));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => return self.next_for_guest(buf),
                Err(_) => {
                    self.remove(token, true);
                    return self.next_for_guest(buf);
                }
            }
        }
        None
    }
}

/// Connects to the Unix socket `path` without blocking: a listener whose backlog is
/// full answers `EAGAIN` at once.
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: creates a new descriptor, owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: u64 = 3;

    fn pkt(src_port: u32, dst_port: u32, op: u16, data: &[u8]) -> GuestPacket {
        GuestPacket {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 64 * 1024,
            fwd_cnt: 0,
            data: data.to_vec(),
        }
    }

    fn drain(m: &mut Muxer) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        for _ in 0..100 {
            m.process_host_events();
            match m.next_for_guest(&mut buf) {
                Some((h, n)) => out.push((h, buf[..n].to_vec())),
                None => {
                    if !out.is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
        out
    }

    /// A guest connect loop: connections past the limit are reset, the host side keeps
    /// at most the limit open.
    #[test]
    fn a_guest_connect_loop_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::with_limit(&uds, 8).unwrap();
        let host = UnixListener::bind(dir.path().join("v.sock_52")).unwrap();
        for port in 0..20 {
            m.handle_guest(pkt(1000 + port, 52, OP_REQUEST, b""), CID);
        }
        assert_eq!(m.connections(), 8);
        let out = drain(&mut m);
        let ops: Vec<u16> = out.iter().map(|(h, _)| h.op).collect();
        assert_eq!(ops.iter().filter(|&&o| o == OP_RESPONSE).count(), 8);
        assert_eq!(ops.iter().filter(|&&o| o == OP_RST).count(), 12);
        // Host clients past the limit are closed at once.
        let mut extra = UnixStream::connect(&uds).unwrap();
        extra.write_all(b"CONNECT 9\n").unwrap();
        m.process_host_events();
        assert_eq!(m.connections(), 8);
        let mut b = [0u8; 1];
        extra
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert!(
            matches!(extra.read(&mut b), Ok(0) | Err(_)),
            "closed by the device"
        );
        drop(host);
    }

    /// A guest that posts no receive buffers while provoking resets: the control queue
    /// stays bounded.
    #[test]
    fn a_guest_that_reads_nothing_cannot_grow_the_control_queue() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Muxer::new(&dir.path().join("v.sock")).unwrap();
        for port in 0..50_000u32 {
            m.handle_guest(pkt(port, 7, OP_RW, b"x"), CID);
        }
        assert!(m.ctrl.len() <= MAX_CTRL, "{}", m.ctrl.len());
        assert!(m.full(), "and new connections are refused meanwhile");
    }

    /// A listening socket at `path` whose backlog holds `backlog` connections.
    fn listener_with_backlog(path: &Path, backlog: i32) -> UnixListener {
        // std listens with a large backlog; listen(2) again makes it small.
        let l = UnixListener::bind(path).unwrap();
        // SAFETY: listen(2) on a socket this function owns; it only changes the backlog.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), backlog) }, 0);
        l
    }

    /// A host listener that stopped accepting: once its backlog is full the guest's
    /// connections are refused at once, never blocking the device.
    #[test]
    fn a_host_listener_that_does_not_accept_cannot_block_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Muxer::new(&dir.path().join("v.sock")).unwrap();
        let _stuck = listener_with_backlog(&dir.path().join("v.sock_60"), 1);
        let t = std::time::Instant::now();
        for port in 0..50 {
            m.handle_guest(pkt(2000 + port, 60, OP_REQUEST, b""), CID);
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        assert!(m.connections() <= 2, "{} connected", m.connections());
        let long = dir.path().join("x".repeat(200));
        assert!(connect_nonblocking(&long).is_err());
    }

    #[test]
    fn guest_connects_to_a_host_listener() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::new(&uds).unwrap();
        let host = UnixListener::bind(dir.path().join("v.sock_52")).unwrap();
        m.handle_guest(pkt(1234, 52, OP_REQUEST, b""), CID);
        let out = drain(&mut m);
        assert_eq!(out[0].0.op, OP_RESPONSE);
        assert_eq!((out[0].0.src_port, out[0].0.dst_port), (52, 1234));
        let (mut s, _) = host.accept().unwrap();
        m.handle_guest(pkt(1234, 52, OP_RW, b"ping"), CID);
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        s.write_all(b"pong").unwrap();
        let out = drain(&mut m);
        let data: Vec<u8> = out
            .iter()
            .filter(|(h, _)| h.op == OP_RW)
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(data, b"pong");
        assert!(out.iter().all(|(h, _)| h.buf_alloc == TX_BUF_CAP));
        // No listener: refused with a reset; wrong CID: reset too.
        m.handle_guest(pkt(1, 53, OP_REQUEST, b""), CID);
        let mut wrong = pkt(2, 52, OP_REQUEST, b"");
        wrong.dst_cid = 7;
        m.handle_guest(wrong, CID);
        let out = drain(&mut m);
        assert_eq!(out.iter().filter(|(h, _)| h.op == OP_RST).count(), 2);
        // The guest closes: the host sees end of file and the guest gets its reset.
        let mut shut = pkt(1234, 52, OP_SHUTDOWN, b"");
        shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        m.handle_guest(shut, CID);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(drain(&mut m)[0].0.op, OP_RST);
        assert_eq!(m.connections(), 0);
    }

    #[test]
    fn host_connects_with_a_connect_line() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::new(&uds).unwrap();
        let mut c = UnixStream::connect(&uds).unwrap();
        c.write_all(b"CONNECT 5000\nearly").unwrap();
        let out = drain(&mut m);
        assert_eq!(out[0].0.op, OP_REQUEST);
        assert_eq!(out[0].0.dst_port, 5000);
        let local = out[0].0.src_port;
        assert!(local >= FIRST_LOCAL_PORT);
        // Nothing flows before the guest accepts.
        let mut buf = [0u8; 16];
        assert!(m.next_for_guest(&mut buf).is_none());
        m.handle_guest(pkt(5000, local, OP_RESPONSE, b""), CID);
        let mut line = [0u8; 64];
        let n = c.read(&mut line).unwrap();
        assert_eq!(&line[..n], format!("OK {local}\n").as_bytes());
        let out = drain(&mut m);
        assert_eq!(out[0].1, b"early", "bytes after the line go to the guest");
        // The host half-closes: the guest hears SHUTDOWN(SEND) and may still send.
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let out = drain(&mut m);
        assert_eq!((out[0].0.op, out[0].0.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
        m.handle_guest(pkt(5000, local, OP_RW, b"late"), CID);
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"late");
        // A bad line is dropped.
        let mut bad = UnixStream::connect(&uds).unwrap();
        bad.write_all(b"HELLO\n").unwrap();
        m.process_host_events();
        let mut b = [0u8; 1];
        assert_eq!(bad.read(&mut b).unwrap(), 0, "closed");
        drop(m);
        assert!(!uds.exists(), "the socket path is removed");
    }

    #[test]
    fn a_vanished_host_resets_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::new(&uds).unwrap();
        let host = UnixListener::bind(dir.path().join("v.sock_9")).unwrap();
        m.handle_guest(pkt(77, 9, OP_REQUEST, b""), CID);
        drain(&mut m);
        let (s, _) = host.accept().unwrap();
        drop(s);
        let out = drain(&mut m);
        assert_eq!(out[0].0.op, OP_SHUTDOWN);
        assert_eq!(out[0].0.flags, SHUTDOWN_SEND | SHUTDOWN_RCV);
        m.handle_guest(pkt(77, 9, OP_RW, b"into the void"), CID);
        let out = drain(&mut m);
        assert_eq!(out[0].0.op, OP_RST);
        assert_eq!(m.connections(), 0);
        // A packet for an unknown connection is answered with a reset.
        m.handle_guest(pkt(1, 2, OP_RW, b"x"), CID);
        assert_eq!(drain(&mut m)[0].0.op, OP_RST);
        m.handle_guest(pkt(1, 2, OP_CREDIT_REQUEST, b""), CID);
        assert_eq!(drain(&mut m)[0].0.op, OP_RST);
    }
}
