//! The wire protocol between ec1 on the host and `ec1-agent` in the guest.
//!
//! One byte stream (a virtio-serial port) carries many concurrent sessions: command
//! executions and file transfers. Everything on it is a [frame](frame): a 20-byte
//! checksummed header and a payload of at most [`MAX_PAYLOAD`] bytes. Control frames
//! carry a [`Msg`]; data frames carry raw bytes (stdin, stdout, stderr, file data) and
//! are never re-encoded, so large streams cost one copy out of the read buffer.
//!
//! * **Versioning.** The host opens with [`Msg::Hello`] (its version range and a
//!   nonce); the agent answers [`Msg::Ready`] with the version chosen, the nonce and
//!   its boot timestamps. A hello also drops every session of an earlier host.
//! * **Multiplexing and flow control.** Every data stream has a credit window
//!   ([`flow`]): a sender never has more than [`WINDOW`] bytes in flight per stream, so
//!   a receiver never blocks its channel reader, and one session flooding its output
//!   cannot delay another's frames by more than its window.
//! * **Bounds.** Every length and count from the peer is checked before anything is
//!   allocated ([`wire`]); a frame whose content is malformed closes its session with a
//!   [`Msg::Error`] and nothing else ([`Frame::parse`]).
//! * **Resynchronisation.** If the framing itself is lost (bytes that are not a valid
//!   header), the reader reports it once and scans for the next valid header
//!   ([`reader`]); the agent then drops all sessions and sends [`Msg::Reset`]. A peer
//!   that (re)starts talking first writes [`PREAMBLE_LEN`] zero bytes, which end any
//!   partial frame left in the stream by an earlier peer.

pub mod channel;
mod crc;
mod error;
pub mod flow;
pub mod frame;
mod msg;
mod parse;
pub mod reader;
mod refresh;
pub mod wire;

pub use crc::crc32;
pub use error::DecodeError;
pub use flow::{CreditGate, RecvWindow, WindowExceeded, CREDIT_BATCH, WINDOW};
pub use frame::{
    write_frame, write_preamble, Header, HeaderError, Kind, DATA_CHUNK, FLAG_EOF, HEADER_LEN,
    MAGIC, MAX_PAYLOAD, PREAMBLE_LEN,
};
pub use msg::{
    ErrorCode, ExecRequest, Msg, PtySize, ReadyInfo, Stream, Termination, MAX_ARGS, MAX_ENV,
    MAX_PATH, MAX_TEXT, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
pub use parse::{Frame, Malformed};
pub use reader::{FrameReader, RawFrame, ReadEvent};
pub use refresh::{Refresh, MAX_ENTROPY, MAX_HOSTNAME};

/// Chooses the protocol version for a hello offering `min..=max`, if any is shared.
pub fn negotiate(min: u16, max: u16) -> Option<u16> {
    let hi = max.min(PROTOCOL_VERSION);
    let lo = min.max(MIN_PROTOCOL_VERSION);
    (lo <= hi).then_some(hi)
}

/// Writes a control frame carrying `msg`.
pub fn write_msg<W: std::io::Write + ?Sized>(
    w: &mut W,
    session: u32,
    msg: &Msg,
) -> std::io::Result<()> {
    let payload = msg
        .encode()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    write_frame(w, Kind::Control, 0, session, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate_to_the_highest_shared() {
        assert_eq!(negotiate(1, 1), Some(1));
        assert_eq!(negotiate(1, 99), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate(PROTOCOL_VERSION + 1, 99), None);
        assert_eq!(negotiate(0, 0), None);
    }

    #[test]
    fn write_msg_produces_a_parsable_frame() {
        let mut s = Vec::new();
        write_msg(&mut s, 3, &Msg::Pong { token: 5 }).unwrap();
        let mut r = FrameReader::new(&s[..]);
        let ReadEvent::Frame(raw) = r.next_event().unwrap() else {
            panic!()
        };
        assert_eq!(
            Frame::parse(raw).unwrap(),
            Frame::Control {
                session: 3,
                msg: Msg::Pong { token: 5 }
            }
        );
        let huge = Msg::Download {
            path: vec![b'a'; MAX_PAYLOAD + 1],
        };
        assert_eq!(
            write_msg(&mut Vec::new(), 1, &huge).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
}
