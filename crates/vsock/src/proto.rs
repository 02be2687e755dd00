//! The virtio-vsock wire protocol (virtio spec 5.10): operations, flags, and the
//! header fields of a packet the device sends to the guest.

/// The host's context id, as the guest addresses it.
pub const HOST_CID: u64 = 2;
/// `VIRTIO_VSOCK_TYPE_STREAM`: the only socket type the device offers.
pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// `SHUTDOWN` flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `SHUTDOWN` flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet for the guest, without its payload (which the device reads straight from
/// the host socket into the guest's buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The host-side port.
    pub src_port: u32,
    /// The guest-side port.
    pub dst_port: u32,
    pub op: u16,
    pub flags: u32,
    /// Receive buffer space the host side grants this connection.
    pub buf_alloc: u32,
    /// Bytes of this connection's guest data the host side has consumed.
    pub fwd_cnt: u32,
}

/// A packet the guest sent, as the device needs it (the payload is copied out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPacket {
    pub src_cid: u64,
    pub dst_cid: u64,
    /// The guest-side port.
    pub src_port: u32,
    /// The host-side port.
    pub dst_port: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
    pub data: Vec<u8>,
}

/// Parses the line a host client writes after connecting to `uds_path`:
/// `CONNECT <port>\n` (Firecracker's hybrid vsock convention).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.trim_end_matches('\n').trim_end_matches('\r');
    let port = port.strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 52\n"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295\r\n"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT x\n"), None);
        assert_eq!(parse_connect(b"connect 52\n"), None);
        assert_eq!(parse_connect(b"CONNECT 4294967296\n"), None);
        assert_eq!(parse_connect(b"\xff\n"), None);
    }
}
