//! Judging a [`RawFrame`]: its kind, flags and (for control frames) message.

use crate::crc::crc32;
use crate::error::DecodeError;
use crate::frame::{Kind, FLAG_EOF, KNOWN_FLAGS};
use crate::msg::Msg;
use crate::reader::RawFrame;

/// A frame understood by this protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Control {
        session: u32,
        msg: Msg,
    },
    Data {
        session: u32,
        kind: Kind,
        eof: bool,
        payload: Vec<u8>,
    },
}

/// A frame whose boundaries were fine but whose content was not: the receiver closes
/// `session` with `error` and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame for session {session}: {error}")]
pub struct Malformed {
    pub session: u32,
    pub error: DecodeError,
}

impl Frame {
    pub fn session(&self) -> u32 {
        match self {
            Frame::Control { session, .. } | Frame::Data { session, .. } => *session,
        }
    }

    /// Checks kind, flags and the control checksum, and decodes control messages.
    pub fn parse(raw: RawFrame) -> Result<Frame, Malformed> {
        let h = raw.header;
        let bad = |error| Malformed {
            session: h.session,
            error,
        };
        let kind = Kind::from_u8(h.kind).ok_or(bad(DecodeError::UnknownKind(h.kind)))?;
        if h.flags & !KNOWN_FLAGS != 0 {
            return Err(bad(DecodeError::UnknownFlags(h.flags)));
        }
        if kind == Kind::Control {
            if h.flags != 0 {
                return Err(bad(DecodeError::UnknownFlags(h.flags)));
            }
            if crc32(&raw.payload) != h.payload_crc {
                return Err(bad(DecodeError::PayloadChecksum));
            }
            let msg = Msg::decode(&raw.payload).map_err(bad)?;
            return Ok(Frame::Control {
                session: h.session,
                msg,
            });
        }
        Ok(Frame::Data {
            session: h.session,
            kind,
            eof: h.flags & FLAG_EOF != 0,
            payload: raw.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Header;

    fn raw(kind: u8, flags: u8, payload: &[u8], crc: u32) -> RawFrame {
        RawFrame {
            header: Header {
                kind,
                flags,
                session: 4,
                len: payload.len() as u32,
                payload_crc: crc,
            },
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn good_frames_parse() {
        let p = Msg::Ping { token: 1 }.encode().unwrap();
        let f = Frame::parse(raw(0, 0, &p, crc32(&p))).unwrap();
        assert_eq!(
            f,
            Frame::Control {
                session: 4,
                msg: Msg::Ping { token: 1 }
            }
        );
        assert_eq!(f.session(), 4);
        let f = Frame::parse(raw(2, FLAG_EOF, b"xy", 0)).unwrap();
        assert_eq!(
            f,
            Frame::Data {
                session: 4,
                kind: Kind::Stdout,
                eof: true,
                payload: b"xy".to_vec()
            }
        );
    }

    #[test]
    fn bad_frames_name_their_session_and_problem() {
        let p = Msg::Ping { token: 1 }.encode().unwrap();
        let cases = [
            (raw(9, 0, b"", 0), DecodeError::UnknownKind(9)),
            (raw(2, 0x80, b"", 0), DecodeError::UnknownFlags(0x80)),
            (
                raw(0, FLAG_EOF, &p, crc32(&p)),
                DecodeError::UnknownFlags(1),
            ),
            (raw(0, 0, &p, 0), DecodeError::PayloadChecksum),
            (
                raw(0, 0, &[99], crc32(&[99])),
                DecodeError::UnknownMessage(99),
            ),
        ];
        for (r, want) in cases {
            let e = Frame::parse(r).unwrap_err();
            assert_eq!(e.session, 4);
            assert_eq!(e.error, want);
            assert!(e.to_string().contains("session 4"));
        }
    }
}
