//! One vsock stream: a guest port joined to a host Unix stream, with virtio-vsock's
//! credit-based flow control in both directions.
//!
//! Guest → host: the device grants the guest [`TX_BUF_CAP`] bytes of buffer and reports
//! how many it has written to the host socket (`fwd_cnt`); bytes the host is not ready
//! for wait in `tx_buf`, which the grant keeps bounded. Host → guest: the device reads
//! from the host socket only as much as the guest's own grant allows.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

/// The receive buffer the device grants the guest per connection.
pub const TX_BUF_CAP: u32 = 256 * 1024;
/// Consumed guest bytes that make the device tell the guest at once (a quarter of the
/// grant, so a sender blocked on credit always hears back).
const CREDIT_UPDATE_THRESHOLD: u32 = TX_BUF_CAP / 4;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: the REQUEST went to the guest, its RESPONSE has not come.
    Connecting,
    Established,
}

/// What flushing buffered guest data found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything was written (or nothing was buffered).
    Done,
    /// The host socket is full; more will be written when it is writable again.
    Pending,
    /// The host socket failed (the host end is gone).
    Broken,
}

/// A stream between guest port `peer_port` and host port `local_port`.
#[derive(Debug)]
pub struct Conn {
    pub stream: UnixStream,
    pub local_port: u32,
    pub peer_port: u32,
    pub state: State,
    /// Guest data not yet written to the host socket.
    tx_buf: VecDeque<u8>,
    /// Guest bytes written to the host socket.
    fwd_cnt: Wrapping<u32>,
    /// The `fwd_cnt` the guest last heard.
    fwd_cnt_sent: Wrapping<u32>,
    /// Bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// The host socket may have data: an edge was seen and no read has hit `EAGAIN`.
    pub readable: bool,
    /// The host socket hung up completely: it can neither send nor receive.
    pub host_gone: bool,
    /// The host socket reached end of file and the guest was told.
    pub host_eof: bool,
    /// The guest sends no more: the host's read side ends once `tx_buf` is written.
    pub guest_shut_send: bool,
    /// The guest receives no more.
    pub guest_shut_rcv: bool,
    write_shut: bool,
}

impl Conn {
    pub fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: State) -> Conn {
        Conn {
            stream,
            local_port,
            peer_port,
            state,
            tx_buf: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            readable: true,
            host_gone: false,
            host_eof: false,
            guest_shut_send: false,
            guest_shut_rcv: false,
            write_shut: false,
        }
    }

    /// Records the guest's receive window from any packet it sent.
    pub fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
    }

    /// Bytes the guest can take now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// The `fwd_cnt` to put in a packet for the guest; remembers that the guest heard it.
    pub fn take_fwd_cnt(&mut self) -> u32 {
        self.fwd_cnt_sent = self.fwd_cnt;
        self.fwd_cnt.0
    }

    /// Whether the guest should be told about consumed bytes now, unasked.
    pub fn credit_update_due(&self) -> bool {
        let unreported = (self.fwd_cnt - self.fwd_cnt_sent).0;
        unreported >= CREDIT_UPDATE_THRESHOLD || (unreported > 0 && self.tx_buf.is_empty())
    }

    /// Whether host data could go to the guest now.
    pub fn wants_rx(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && !self.guest_shut_rcv
            && self.peer_credit() > 0
    }

    /// Reads host data for the guest into `buf` (at most the guest's credit).
    /// `Ok(0)` is the host's end of file; `WouldBlock` clears `readable`.
    pub fn read_host(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = buf.len().min(self.peer_credit() as usize);
        match self.stream.read(&mut buf[..room]) {
            Ok(n) => {
                self.rx_cnt += Wrapping(n as u32);
                Ok(n)
            }
            Err(e) => {
                if e.kind() == ErrorKind::WouldBlock {
                    self.readable = false;
                }
                Err(e)
            }
        }
    }

    /// Takes guest data for the host: written at once if the socket has room, else
    /// buffered. `false` means the guest overran its grant (a protocol violation).
    pub fn push_guest_data(&mut self, data: &[u8]) -> bool {
        if self.tx_buf.len() + data.len() > TX_BUF_CAP as usize {
            return false;
        }
        self.tx_buf.extend(data);
        true
    }

    /// Writes buffered guest data to the host socket.
    pub fn flush(&mut self) -> Flush {
        while !self.tx_buf.is_empty() {
            let (a, _) = self.tx_buf.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Flush::Broken,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Flush::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Flush::Broken,
            }
        }
        if self.guest_shut_send && !self.write_shut {
            self.write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Flush::Done
    }

    /// Whether both directions are finished and the connection can be reset.
    pub fn finished(&self) -> bool {
        self.guest_shut_send && self.tx_buf.is_empty() && (self.guest_shut_rcv || self.host_eof)
    }

    /// Guest data still waiting for the host.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.tx_buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Conn::new(a, 1024, 5000, State::Established), b)
    }

    #[test]
    fn reads_respect_the_guests_credit() {
        let (mut c, mut host) = pair();
        host.write_all(&[7u8; 100]).unwrap();
        assert_eq!(c.peer_credit(), 0);
        assert!(!c.wants_rx(), "no credit yet");
        c.update_peer_credit(30, 0);
        assert!(c.wants_rx());
        let mut buf = [0u8; 64];
        assert_eq!(c.read_host(&mut buf).unwrap(), 30);
        assert_eq!(c.peer_credit(), 0);
        c.update_peer_credit(30, 30);
        assert_eq!(c.read_host(&mut buf).unwrap(), 30);
        c.update_peer_credit(1000, 60);
        assert_eq!(c.read_host(&mut buf).unwrap(), 40);
        let e = c.read_host(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        assert!(!c.readable);
        drop(host);
        c.readable = true;
        assert_eq!(c.read_host(&mut buf).unwrap(), 0, "end of file");
    }

    #[test]
    fn guest_data_is_buffered_flushed_and_counted() {
        let (mut c, mut host) = pair();
        assert!(c.push_guest_data(b"hello"));
        assert_eq!(c.flush(), Flush::Done);
        assert!(c.credit_update_due(), "all consumed: tell the guest");
        assert_eq!(c.take_fwd_cnt(), 5);
        assert!(!c.credit_update_due());
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert!(!c.push_guest_data(&vec![0; TX_BUF_CAP as usize + 1]));
        // Fill the socket until it pushes back, then drain it.
        let chunk = vec![1u8; 64 * 1024];
        let mut pending = false;
        for _ in 0..64 {
            assert!(c.push_guest_data(&chunk));
            if c.flush() == Flush::Pending {
                pending = true;
                break;
            }
        }
        assert!(pending, "a Unix socket buffer is smaller than 4 MiB");
        assert!(c.buffered() > 0);
        host.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        while c.flush() == Flush::Pending {
            let _ = host.read(&mut sink);
        }
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn guest_shutdown_half_closes_the_host_after_the_data() {
        let (mut c, mut host) = pair();
        assert!(c.push_guest_data(b"bye"));
        c.guest_shut_send = true;
        assert!(!c.finished());
        assert_eq!(c.flush(), Flush::Done);
        let mut s = String::new();
        host.read_to_string(&mut s).unwrap();
        assert_eq!(s, "bye", "then end of file");
        // The host can still send: the connection is half-open.
        host.write_all(b"x").unwrap();
        let mut b = [0u8; 4];
        c.update_peer_credit(10, 0);
        assert_eq!(c.read_host(&mut b).unwrap(), 1);
        c.guest_shut_rcv = true;
        assert!(c.finished());
    }

    #[test]
    fn a_vanished_host_breaks_the_flush() {
        let (mut c, host) = pair();
        drop(host);
        assert!(c.push_guest_data(b"x"));
        assert_eq!(c.flush(), Flush::Broken);
    }
}
