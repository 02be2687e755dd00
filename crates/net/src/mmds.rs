//! The guest's side of MMDS: a small TCP/IP stack (smoltcp) that owns the MMDS IPv4
//! address on one interface. The relay hands it the guest's frames for that address
//! (ARP, IPv4) and sends its frames back to the guest; HTTP requests that arrive on
//! port 80 are parsed (httparse) and answered by the [`MetadataService`].
//!
//! Each connection carries one request: the answer ends with `Connection: close` and
//! the stack closes its side. A closed connection's socket is replaced by a fresh
//! listener at once (no TIME-WAIT on a link with only the guest on it).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ec1_engine::{MetadataRequest, MetadataResponse, MetadataService, MetadataSpec};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

/// The MAC address the MMDS IPv4 address answers from (Firecracker's).
pub const MMDS_MAC: [u8; 6] = [0x06, 0x01, 0x23, 0x45, 0x67, 0x01];
/// Connections served at once.
const POOL: usize = 8;
/// The largest request head (and body) read; a longer request gets a 400.
const MAX_REQUEST: usize = 16 * 1024;
const MAX_HEADERS: usize = 32;
const SOCKET_RX: usize = 4 * 1024;
const SOCKET_TX: usize = 64 * 1024;
/// A connection is dropped when its peer stops acknowledging for this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may take to deliver its whole request: a guest that opens
/// connections and sends nothing (or dribbles) cannot hold the small pool for longer.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// Whether `frame` (Ethernet) is for `ip`: an ARP packet whose target protocol
/// address is `ip`, or an IPv4 packet to `ip`.
pub fn frame_is_for(frame: &[u8], ip: Ipv4Addr) -> bool {
    let ip = ip.octets();
    match frame.get(12..14) {
        // Ethernet header (14) + ARP: target protocol address at offset 24.
        Some(t) if t == ETHERTYPE_ARP => frame.get(38..42) == Some(&ip[..]),
        // Ethernet header (14) + IPv4: destination address at offset 16.
        Some(t) if t == ETHERTYPE_IPV4 => frame.get(30..34) == Some(&ip[..]),
        _ => false,
    }
}

/// Frames in from the guest and out to it, as smoltcp's device.
#[derive(Default)]
struct Queue {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl Device for Queue {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// One connection's progress: the request read so far, then the answer being sent.
#[derive(Default)]
struct Conn {
    request: Vec<u8>,
    answer: Vec<u8>,
    sent: usize,
    answered: bool,
    /// When the connection was first seen established (its request deadline starts).
    since: Option<std::time::Instant>,
}

/// The MMDS network stack of one interface.
pub struct MmdsStack {
    ip: Ipv4Addr,
    service: Arc<dyn MetadataService>,
    iface: Interface,
    device: Queue,
    sockets: SocketSet<'static>,
    conns: Vec<(SocketHandle, Conn)>,
    epoch: std::time::Instant,
    request_deadline: std::time::Duration,
}

fn listener() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SOCKET_RX]),
        tcp::SocketBuffer::new(vec![0; SOCKET_TX]),
    );
    s.set_timeout(Some(TCP_TIMEOUT));
    // A fresh socket listens without fail.
    let _ = s.listen(80);
    s
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The bytes of an HTTP answer (`version` is the request's minor version).
fn encode(version: u8, r: &MetadataResponse) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.{} {} {}\r\n",
        version.min(1),
        r.status,
        reason(r.status)
    );
    head.push_str("Server: Firecracker API\r\nConnection: close\r\n");
    if let Some(t) = r.content_type {
        head.push_str(&format!("Content-Type: {t}\r\n"));
    }
    if let Some(a) = r.allow {
        head.push_str(&format!("Allow: {a}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", r.body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(&r.body);
    out
}

/// What a request buffer holds so far.
enum Parsed {
    Incomplete,
    Request(u8, MetadataRequest),
    Bad(&'static str),
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Incomplete,
        Ok(httparse::Status::Complete(head)) => {
            let mut body = 0usize;
            let mut out = MetadataRequest {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                headers: Vec::with_capacity(req.headers.len()),
            };
            for h in req.headers.iter() {
                let value = String::from_utf8_lossy(h.value).trim().to_string();
                if h.name.eq_ignore_ascii_case("content-length") {
                    match value.parse::<usize>() {
                        Ok(n) => body = n,
                        Err(_) => return Parsed::Bad("Invalid Content-Length."),
                    }
                }
                out.headers.push((h.name.to_string(), value));
            }
            if head.saturating_add(body) > MAX_REQUEST {
                return Parsed::Bad("Request too large.");
            }
            // The body (MMDS requests have none that matters) is waited for, then
            // ignored.
            if buf.len() < head + body {
                return Parsed::Incomplete;
            }
            Parsed::Request(req.version.unwrap_or(1), out)
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Bad("Too many headers."),
        Err(_) => Parsed::Bad("Invalid request."),
    }
}

impl MmdsStack {
    pub fn new(spec: MetadataSpec) -> MmdsStack {
        let mut device = Queue::default();
        let epoch = std::time::Instant::now();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(MMDS_MAC)));
        config.random_seed = seed();
        let mut iface = Interface::new(config, &mut device, Instant::from_micros(0));
        // A /0 network: every guest address is a neighbour, reached by its MAC
        // address (learnt from its ARP request or asked for).
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(spec.ipv4), 0));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let conns = (0..POOL)
            .map(|_| (sockets.add(listener()), Conn::default()))
            .collect();
        MmdsStack {
            ip: spec.ipv4,
            service: spec.service,
            iface,
            device,
            sockets,
            conns,
            epoch,
            request_deadline: REQUEST_DEADLINE,
        }
    }

    /// Whether the guest's `frame` goes to this stack.
    pub fn wants(&self, frame: &[u8]) -> bool {
        frame_is_for(frame, self.ip)
    }

    /// Takes a frame from the guest; [`MmdsStack::poll`] processes it.
    pub fn receive(&mut self, frame: Vec<u8>) {
        // A guest that floods the address is not buffered without bound.
        if self.device.rx.len() < 1024 {
            self.device.rx.push_back(frame);
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// Runs the stack: processes received frames, answers complete requests, and
    /// returns the frames for the guest.
    pub fn poll(&mut self) -> Vec<Vec<u8>> {
        for _ in 0..16 {
            let now = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            if !self.serve() {
                break;
            }
        }
        std::mem::take(&mut self.device.tx)
    }

    /// When [`MmdsStack::poll`] should run next even without frames (retransmissions).
    pub fn poll_at(&mut self) -> Option<std::time::Instant> {
        let now = self.now();
        let stack = self.iface.poll_delay(now, &self.sockets).map(|d| {
            std::time::Instant::now() + std::time::Duration::from_micros(d.total_micros())
        });
        let deadline = self
            .conns
            .iter()
            .filter(|(_, c)| !c.answered)
            .filter_map(|(_, c)| c.since.map(|t| t + self.request_deadline))
            .min();
        match (stack, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves every connection along; true if anything was written to a socket.
    fn serve(&mut self) -> bool {
        let mut wrote = false;
        for (handle, conn) in self.conns.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(*handle);
            if !s.is_open() {
                // Closed (or in TIME-WAIT): a fresh listener takes its place.
                self.sockets.remove(*handle);
                *handle = self.sockets.add(listener());
                *conn = Conn::default();
                continue;
            }
            if !conn.answered && s.may_recv() {
                let since = *conn.since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= self.request_deadline {
                    // Too slow to send its request: drop it and free the socket.
                    s.abort();
                    continue;
                }
            }
            if !conn.answered {
                while s.can_recv() {
                    let mut chunk = [0u8; 2048];
                    match s.recv_slice(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => conn.request.extend_from_slice(&chunk[..n]),
                    }
                }
                let parsed = if conn.request.is_empty() {
                    Parsed::Incomplete
                } else {
                    parse(&conn.request)
                };
                let answer = match parsed {
                    Parsed::Incomplete if conn.request.len() >= MAX_REQUEST => Some(encode(
                        1,
                        &MetadataResponse::text(400, "Request too large."),
                    )),
                    Parsed::Incomplete => None,
                    Parsed::Bad(why) => Some(encode(1, &MetadataResponse::text(400, why))),
                    Parsed::Request(v, req) => Some(encode(v, &self.service.answer(&req))),
                };
                match answer {
                    Some(a) => {
                        conn.answer = a;
                        conn.answered = true;
                        conn.request = Vec::new();
                    }
                    None if s.state() == tcp::State::CloseWait => {
                        // The guest closed before sending a whole request.
                        s.close();
                        continue;
                    }
                    None => continue,
                }
            }
            if conn.sent < conn.answer.len() && s.can_send() {
                if let Ok(n) = s.send_slice(&conn.answer[conn.sent..]) {
                    conn.sent += n;
                    wrote |= n > 0;
                }
                if conn.sent == conn.answer.len() {
                    s.close();
                }
            }
        }
        wrote
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr,
    };

    pub(crate) const MMDS_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const GUEST_MAC: [u8; 6] = [0x06, 0, 0, 0, 0, 2];

    pub(crate) struct Echo;
    impl MetadataService for Echo {
        fn answer(&self, req: &MetadataRequest) -> MetadataResponse {
            let token = req.header("x-metadata-token").unwrap_or("-");
            MetadataResponse::text(200, format!("{} {} {token}", req.method, req.target))
        }
    }

    fn stack() -> MmdsStack {
        MmdsStack::new(MetadataSpec {
            ipv4: MMDS_IP,
            service: Arc::new(Echo),
            settings: String::new(),
        })
    }

    pub(crate) fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(GUEST_MAC),
            source_protocol_addr: GUEST_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(GUEST_MAC),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf);
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        buf
    }

    #[test]
    fn frames_are_picked_by_address() {
        let s = stack();
        assert!(s.wants(&arp_request(MMDS_IP)));
        assert!(!s.wants(&arp_request(Ipv4Addr::new(10, 0, 0, 1))));
        let mut ip = vec![0u8; 34];
        ip[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        ip[30..34].copy_from_slice(&MMDS_IP.octets());
        assert!(s.wants(&ip));
        ip[33] = 1;
        assert!(!s.wants(&ip));
        assert!(!s.wants(&[0u8; 10]));
    }

    #[test]
    fn arp_requests_for_the_address_are_answered_from_its_mac() {
        let mut s = stack();
        s.receive(arp_request(MMDS_IP));
        let out = s.poll();
        assert_eq!(out.len(), 1);
        let frame = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress(GUEST_MAC));
        assert_eq!(frame.src_addr(), EthernetAddress(MMDS_MAC));
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        match arp {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            } => {
                assert_eq!(operation, ArpOperation::Reply);
                assert_eq!(source_hardware_addr, EthernetAddress(MMDS_MAC));
                assert_eq!(source_protocol_addr, MMDS_IP);
                assert_eq!(target_protocol_addr, GUEST_IP);
            }
            _ => panic!("not an IPv4 ARP reply"),
        }
    }

    /// The guest: a second smoltcp interface whose frames go to the stack and back.
    struct Guest {
        iface: Interface,
        device: Queue,
        sockets: SocketSet<'static>,
    }

    impl Guest {
        fn new() -> Guest {
            let mut device = Queue::default();
            let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
            let mut iface = Interface::new(config, &mut device, Instant::from_micros(0));
            // The MMDS address on-link, as `ip route add 169.254.169.254 dev eth0` makes.
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(GUEST_IP), 24));
                let _ = a.push(IpCidr::new(
                    IpAddress::Ipv4(Ipv4Addr::new(169, 254, 0, 2)),
                    16,
                ));
            });
            Guest {
                iface,
                device,
                sockets: SocketSet::new(Vec::new()),
            }
        }

        /// Runs one request over a fresh connection through `mmds`; returns the
        /// whole answer once the stack has closed the connection.
        fn request(&mut self, mmds: &mut MmdsStack, port: u16, req: &[u8]) -> String {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 65536]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            );
            s.connect(self.iface.context(), (IpAddress::Ipv4(MMDS_IP), 80), port)
                .unwrap();
            let h = self.sockets.add(s);
            let mut sent = false;
            let mut answer = Vec::new();
            let start = std::time::Instant::now();
            let mut now = Instant::from_millis(0);
            loop {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(10),
                    "no answer"
                );
                now += Duration::from_millis(1);
                self.iface.poll(now, &mut self.device, &mut self.sockets);
                for f in self.device.tx.drain(..) {
                    assert!(mmds.wants(&f), "a frame not for MMDS");
                    mmds.receive(f);
                }
                self.device.rx.extend(mmds.poll());
                let s = self.sockets.get_mut::<tcp::Socket>(h);
                if !sent && s.can_send() {
                    assert_eq!(s.send_slice(req).unwrap(), req.len());
                    sent = true;
                }
                while s.can_recv() {
                    let mut b = [0u8; 4096];
                    let n = s.recv_slice(&mut b).unwrap();
                    answer.extend_from_slice(&b[..n]);
                }
                if sent && !s.may_recv() {
                    s.close();
                    break;
                }
            }
            // Let the closing handshake finish.
            for _ in 0..10 {
                now += Duration::from_millis(1);
                self.iface.poll(now, &mut self.device, &mut self.sockets);
                for f in self.device.tx.drain(..) {
                    mmds.receive(f);
                }
                self.device.rx.extend(mmds.poll());
            }
            self.sockets.remove(h);
            String::from_utf8(answer).unwrap()
        }
    }

    #[test]
    fn connections_that_never_finish_a_request_are_dropped() {
        let mut mmds = stack();
        mmds.request_deadline = std::time::Duration::from_millis(50);
        let mut guest = Guest::new();
        // Fill the whole pool with connections that send half a request.
        let mut handles = Vec::new();
        for i in 0..POOL as u16 {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            );
            s.connect(
                guest.iface.context(),
                (IpAddress::Ipv4(MMDS_IP), 80),
                42000 + i,
            )
            .unwrap();
            handles.push(guest.sockets.add(s));
        }
        let mut sent = vec![false; handles.len()];
        let mut now = Instant::from_millis(0);
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(200) {
            now += Duration::from_millis(1);
            guest.iface.poll(now, &mut guest.device, &mut guest.sockets);
            for f in guest.device.tx.drain(..) {
                mmds.receive(f);
            }
            guest.device.rx.extend(mmds.poll());
            for (h, sent) in handles.iter().zip(sent.iter_mut()) {
                let s = guest.sockets.get_mut::<tcp::Socket>(*h);
                if !*sent && s.can_send() {
                    *sent = s.send_slice(b"GET /").is_ok();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // Every stalled connection was reset by the stack ...
        assert!(sent.iter().all(|s| *s));
        for h in handles {
            assert!(!guest.sockets.get::<tcp::Socket>(h).is_open());
            guest.sockets.remove(h);
        }
        // ... and a well-behaved request is served again.
        let a = guest.request(&mut mmds, 43000, b"GET /x HTTP/1.1\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    }

    #[test]
    fn http_over_tcp_through_the_stack() {
        let mut mmds = stack();
        let mut guest = Guest::new();
        let a = guest.request(
            &mut mmds,
            40000,
            b"GET /latest/meta-data HTTP/1.1\r\nHost: x\r\nX-metadata-token: abc\r\n\r\n",
        );
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(a.contains("Connection: close\r\n"), "{a}");
        assert!(a.ends_with("\r\n\r\nGET /latest/meta-data abc"), "{a}");
        // More connections than the pool holds, one after another: closed sockets
        // are replaced.
        for i in 0..(POOL as u16 * 3) {
            let a = guest.request(&mut mmds, 40001 + i, b"PUT /t HTTP/1.0\r\n\r\n");
            assert!(a.starts_with("HTTP/1.0 200 OK\r\n"), "{a}");
            assert!(a.ends_with("PUT /t -"), "{a}");
        }
        // Garbage gets a 400.
        let a = guest.request(&mut mmds, 41000, b"\x01\x02 nonsense\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{a}");
        // A request split over several segments is waited for.
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHo"), Parsed::Incomplete));
        assert!(matches!(
            parse(b"PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            Parsed::Incomplete
        ));
        assert!(matches!(
            parse(b"PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
            Parsed::Request(1, _)
        ));
    }

    #[test]
    fn large_answers_span_many_segments() {
        struct Big;
        impl MetadataService for Big {
            fn answer(&self, _: &MetadataRequest) -> MetadataResponse {
                MetadataResponse::text(200, "x".repeat(50_000))
            }
        }
        let mut mmds = MmdsStack::new(MetadataSpec {
            ipv4: MMDS_IP,
            service: Arc::new(Big),
            settings: String::new(),
        });
        let mut guest = Guest::new();
        let a = guest.request(&mut mmds, 40000, b"GET / HTTP/1.1\r\n\r\n");
        assert!(a.contains("Content-Length: 50000\r\n"), "{a}");
        assert!(a.ends_with(&"x".repeat(50_000)));
    }
}
