//! Primitive encoding of control messages: little-endian integers and
//! length-prefixed byte strings, every length checked against what is left.
//!
//! Hand-written rather than serde-derived so that every bound the peer can influence
//! is visible here and the guest agent stays small.

use crate::error::DecodeError;

/// Appends values to a message buffer.
#[derive(Debug, Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Enc {
        Enc { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A byte string: u32 length then the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// A list count (u32).
    pub fn count(&mut self, n: usize) {
        self.u32(n as u32);
    }
}

/// Reads values from a received message, never past its end and never allocating
/// more than the message holds.
#[derive(Debug)]
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(DecodeError::Truncated {
                what,
                need: n,
                left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::Invalid {
                what,
                why: format!("boolean byte {v}"),
            }),
        }
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    pub fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    /// A byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError::TooLong { what, len: n, max });
        }
        Ok(self.take(n, what)?.to_vec())
    }
    /// A UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes(what, max)?).map_err(|_| DecodeError::Invalid {
            what,
            why: "not UTF-8".into(),
        })
    }
    /// A list count of at most `max` items, each at least `min_item_len` bytes long on
    /// the wire (so a count can never promise more items than bytes remain).
    pub fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError::TooLong { what, len: n, max });
        }
        let left = self.buf.len() - self.pos;
        if n.saturating_mul(min_item_len) > left {
            return Err(DecodeError::Truncated {
                what,
                need: n * min_item_len,
                left,
            });
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed: trailing garbage means a malformed message.
    pub fn finish(self) -> Result<(), DecodeError> {
        let left = self.buf.len() - self.pos;
        if left != 0 {
            return Err(DecodeError::Trailing(left));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut e = Enc::new();
        e.u8(7);
        e.bool(true);
        e.u16(0xBEEF);
        e.u32(0xDEAD_BEEF);
        e.i32(-5);
        e.u64(u64::MAX - 1);
        e.bytes(b"\0\xff binary");
        e.str("héllo");
        e.count(2);
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.u8("a").unwrap(), 7);
        assert!(d.bool("b").unwrap());
        assert_eq!(d.u16("c").unwrap(), 0xBEEF);
        assert_eq!(d.u32("d").unwrap(), 0xDEAD_BEEF);
        assert_eq!(d.i32("e").unwrap(), -5);
        assert_eq!(d.u64("f").unwrap(), u64::MAX - 1);
        assert_eq!(d.bytes("g", 100).unwrap(), b"\0\xff binary");
        assert_eq!(d.string("h", 100).unwrap(), "héllo");
        assert!(d.count("i", 10, 0).is_ok());
        d.finish().unwrap();
    }

    #[test]
    fn bounds_are_enforced_before_allocating() {
        // A length of 4 GiB in a 4-byte message must fail, not allocate.
        let mut d = Dec::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.bytes("x", usize::MAX),
            Err(DecodeError::Truncated { .. })
        ));
        let mut d = Dec::new(&[10, 0, 0, 0, 1, 2]);
        assert!(matches!(d.bytes("x", 5), Err(DecodeError::TooLong { .. })));
        let mut d = Dec::new(&[200, 0, 0, 0, 1, 2]);
        assert!(matches!(
            d.count("n", 1000, 4),
            Err(DecodeError::Truncated { .. })
        ));
        let mut d = Dec::new(&[2]);
        assert!(matches!(d.bool("b"), Err(DecodeError::Invalid { .. })));
        let mut d = Dec::new(&[2, 0, 0, 0, 0xff, 0xfe]);
        assert!(matches!(d.string("s", 9), Err(DecodeError::Invalid { .. })));
        let d = Dec::new(&[1]);
        assert_eq!(d.finish(), Err(DecodeError::Trailing(1)));
    }
}
