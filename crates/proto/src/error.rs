//! Errors of decoding what a peer sent.

/// Why a control message or frame could not be accepted. The session it belongs to is
/// closed with this text; the connection goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} is truncated: {need} bytes needed, {left} left")]
    Truncated {
        what: &'static str,
        need: usize,
        left: usize,
    },
    #[error("{what} is too long: {len} (at most {max})")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} is invalid: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
    #[error("unknown message type {0}")]
    UnknownMessage(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("control payload checksum mismatch")]
    PayloadChecksum,
}
