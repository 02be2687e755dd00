//! The frame: the unit both sides write on the byte stream.
//!
//! ```text
//! offset size
//!   0     2   magic 0xEC 0x1F
//!   2     1   kind: 0 control, 1 stdin, 2 stdout, 3 stderr, 4 file data
//!   3     1   flags: bit 0 = end of stream (data frames only)
//!   4     4   session id, little endian (0 = the connection itself)
//!   8     4   payload length, little endian, at most MAX_PAYLOAD
//!  12     4   CRC-32 of the payload for control frames, 0 for data frames
//!  16     4   CRC-32 of bytes 0..16
//!  20         payload
//! ```
//!
//! Zero bytes where a header is expected are padding and are skipped. A peer that
//! (re)starts talking first sends [`PREAMBLE_LEN`] zero bytes: whatever partial frame
//! a previous peer left in the stream is completed by them, after which the receiver
//! is between frames (see [`crate::reader`]).

use crate::crc::crc32;
use std::io::{self, IoSlice, Write};

/// The two bytes every header starts with.
pub const MAGIC: [u8; 2] = [0xEC, 0x1F];
/// Size of a frame header.
pub const HEADER_LEN: usize = 20;
/// The largest payload a frame may carry. Linux limits one argument string to 128 KiB
/// (`MAX_ARG_STRLEN`), so an exec request of that size fits.
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// How many bytes of data one data frame carries at most when a sender has that much
/// to send: small enough that frames of other sessions interleave often.
pub const DATA_CHUNK: usize = 64 * 1024;
/// Zero bytes a peer sends before its first frame: longer than any frame, so any
/// partial frame left over from an earlier connection ends inside them.
pub const PREAMBLE_LEN: usize = HEADER_LEN + MAX_PAYLOAD;

/// Flag: the last frame of this stream (may carry data too).
pub const FLAG_EOF: u8 = 1;
/// Every flag this version knows; a frame with others set is malformed.
pub const KNOWN_FLAGS: u8 = FLAG_EOF;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// An encoded [`crate::Msg`].
    Control = 0,
    /// Bytes for a command's standard input (host → guest).
    Stdin = 1,
    /// Bytes a command wrote to its standard output (guest → host).
    Stdout = 2,
    /// Bytes a command wrote to its standard error (guest → host).
    Stderr = 3,
    /// File contents of an upload (host → guest) or a download (guest → host).
    File = 4,
}

impl Kind {
    /// The kind with this wire value, if any.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::Control,
            1 => Kind::Stdin,
            2 => Kind::Stdout,
            3 => Kind::Stderr,
            4 => Kind::File,
            _ => return None,
        })
    }

    /// Whether the payload is raw bytes rather than a message.
    pub fn is_data(self) -> bool {
        self != Kind::Control
    }
}

/// A decoded, checksum-verified frame header. `kind` stays raw so that a frame of a
/// kind this version does not know can be rejected for its session only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub flags: u8,
    pub session: u32,
    pub len: u32,
    pub payload_crc: u32,
}

/// Why bytes where a header was expected are not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("bad magic {0:#04x} {1:#04x}")]
    Magic(u8, u8),
    #[error("header checksum mismatch")]
    Checksum,
    #[error("payload length {0} exceeds the maximum of {MAX_PAYLOAD}")]
    TooLong(u32),
}

impl Header {
    /// Builds the header for `payload`, computing its checksums.
    pub fn new(kind: Kind, flags: u8, session: u32, payload: &[u8]) -> Header {
        debug_assert!(payload.len() <= MAX_PAYLOAD);
        let payload_crc = if kind.is_data() { 0 } else { crc32(payload) };
        Header {
            kind: kind as u8,
            flags,
            session,
            len: payload.len() as u32,
            payload_crc,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = self.kind;
        h[3] = self.flags;
        h[4..8].copy_from_slice(&self.session.to_le_bytes());
        h[8..12].copy_from_slice(&self.len.to_le_bytes());
        h[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        let c = crc32(&h[0..16]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    }

    /// Parses and verifies a header. Only framing is checked here (magic, checksum,
    /// length bound): kind and flags are judged per session by [`crate::Frame::parse`].
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if b[0..2] != MAGIC {
            return Err(HeaderError::Magic(b[0], b[1]));
        }
        let want = u32::from_le_bytes(b[16..20].try_into().unwrap());
        if crc32(&b[0..16]) != want {
            return Err(HeaderError::Checksum);
        }
        let len = u32::from_le_bytes(b[8..12].try_into().unwrap());
        if len as usize > MAX_PAYLOAD {
            return Err(HeaderError::TooLong(len));
        }
        Ok(Header {
            kind: b[2],
            flags: b[3],
            session: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            len,
            payload_crc: u32::from_le_bytes(b[12..16].try_into().unwrap()),
        })
    }
}

/// Writes one frame (header and payload) with as few system calls as the writer
/// allows and without copying the payload.
pub fn write_frame<W: Write + ?Sized>(
    w: &mut W,
    kind: Kind,
    flags: u8,
    session: u32,
    payload: &[u8],
) -> io::Result<()> {
    let header = Header::new(kind, flags, session, payload).encode();
    write_all_vectored(w, &header, payload)
}

/// `write_all` for two buffers, through `write_vectored` (one `writev` per frame).
pub fn write_all_vectored<W: Write + ?Sized>(w: &mut W, a: &[u8], b: &[u8]) -> io::Result<()> {
    let mut bufs = [IoSlice::new(a), IoSlice::new(b)];
    let mut slices: &mut [IoSlice<'_>] = &mut bufs;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the channel accepted no more bytes",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes the resynchronising preamble ([`PREAMBLE_LEN`] zero bytes).
pub fn write_preamble<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    static ZEROS: [u8; PREAMBLE_LEN] = [0; PREAMBLE_LEN];
    w.write_all(&ZEROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks_itself() {
        let h = Header::new(Kind::Control, 0, 7, b"hello");
        let b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        assert_eq!(h.payload_crc, crc32(b"hello"));
        let d = Header::new(Kind::Stdout, FLAG_EOF, 9, b"data");
        assert_eq!(d.payload_crc, 0, "data payloads are not summed");
        for i in 0..HEADER_LEN {
            let mut bad = b;
            bad[i] ^= 0x40;
            assert!(
                Header::decode(&bad).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn header_rejects_oversized_lengths_even_with_a_good_checksum() {
        let mut b = Header::new(Kind::Stdin, 0, 1, b"").encode();
        b[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        let c = crc32(&b[0..16]);
        b[16..20].copy_from_slice(&c.to_le_bytes());
        assert_eq!(
            Header::decode(&b),
            Err(HeaderError::TooLong(MAX_PAYLOAD as u32 + 1))
        );
        assert!(HeaderError::TooLong(1).to_string().contains("maximum"));
        assert!(matches!(
            Header::decode(&[0; HEADER_LEN]),
            Err(HeaderError::Magic(0, 0))
        ));
    }

    #[test]
    fn kinds_map_to_wire_values() {
        for v in 0..=255u8 {
            match Kind::from_u8(v) {
                Some(k) => assert_eq!(k as u8, v),
                None => assert!(v > 4),
            }
        }
        assert!(!Kind::Control.is_data());
        assert!(Kind::File.is_data());
    }

    /// A writer that accepts at most `n` bytes per call, to exercise partial writes.
    struct Trickle(Vec<u8>, usize);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_frame_survives_short_writes() {
        let mut t = Trickle(Vec::new(), 3);
        write_frame(&mut t, Kind::Stdout, 0, 5, b"0123456789").unwrap();
        assert_eq!(t.0.len(), HEADER_LEN + 10);
        assert_eq!(&t.0[HEADER_LEN..], b"0123456789");
        let mut z = Trickle(Vec::new(), 0);
        let e = write_frame(&mut z, Kind::Stdout, 0, 5, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        let mut p = Vec::new();
        write_preamble(&mut p).unwrap();
        assert_eq!(p.len(), PREAMBLE_LEN);
        assert!(p.iter().all(|&b| b == 0));
    }
}
