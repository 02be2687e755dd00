//! Reading frames off a byte stream, with resynchronisation.
//!
//! Between frames, zero bytes are padding. Where a header is expected but the bytes
//! are not one (bad magic or checksum, impossible length), the frame boundaries are
//! lost: the reader reports [`ReadEvent::Lost`] once, then scans for the next byte
//! sequence that forms a valid header (magic and header CRC must both match: a false
//! match is a 1 in 2^48 event per position) and carries on from there.

use crate::frame::{Header, HeaderError, HEADER_LEN, MAGIC};
use std::io::{self, ErrorKind, Read};

/// A frame whose header is valid; its kind, flags and payload are not yet judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub header: Header,
    pub payload: Vec<u8>,
}

/// What [`FrameReader::next_event`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEvent {
    Frame(RawFrame),
    /// Framing was lost here; the reader is scanning for the next header.
    Lost(HeaderError),
    /// The stream ended (a partial frame, if any, is dropped).
    Eof,
}

/// Buffers reads from `R` and cuts them into frames.
pub struct FrameReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Scanning for a header after a loss: do not report again until back in sync.
    resyncing: bool,
    skipped: u64,
}

const BUF_LEN: usize = 256 * 1024;

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            start: 0,
            end: 0,
            resyncing: false,
            skipped: 0,
        }
    }

    /// Drops buffered bytes and any partial frame: for a stream that restarts (a new
    /// host connected to the same port).
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.resyncing = false;
    }

    /// Bytes skipped while resynchronising, in total (not counting padding).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads more bytes into the buffer; `false` at end of stream.
    /// The underlying reader, e.g. to wait for a reconnection after [`ReadEvent::Eof`].
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame, loss of framing, or end of stream.
    pub fn next_event(&mut self) -> io::Result<ReadEvent> {
        loop {
            // Skip padding, or while resynchronising everything up to a magic byte.
            let avail = &self.buf[self.start..self.end];
            let skip = if self.resyncing {
                avail.iter().position(|&b| b == MAGIC[0])
            } else {
                avail.iter().position(|&b| b != 0)
            };
            match skip {
                Some(n) => {
                    if self.resyncing {
                        self.skipped += n as u64;
                    }
                    self.start += n;
                }
                None => {
                    if self.resyncing {
                        self.skipped += avail.len() as u64;
                    }
                    self.start = self.end;
                    if !self.fill()? {
                        return Ok(ReadEvent::Eof);
                    }
                    continue;
                }
            }
            while self.end - self.start < HEADER_LEN {
                if !self.fill()? {
                    return Ok(ReadEvent::Eof);
                }
            }
            let hb: &[u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN]
                .try_into()
                .unwrap();
            let header = match Header::decode(hb) {
                Ok(h) => h,
                Err(e) => {
                    self.start += 1;
                    self.skipped += 1;
                    if self.resyncing {
                        continue;
                    }
                    self.resyncing = true;
                    return Ok(ReadEvent::Lost(e));
                }
            };
            self.resyncing = false;
            self.start += HEADER_LEN;
            let len = header.len as usize;
            let mut payload = Vec::with_capacity(len);
            let have = (self.end - self.start).min(len);
            payload.extend_from_slice(&self.buf[self.start..self.start + have]);
            self.start += have;
            if have < len {
                // Large payload: read the rest straight into place, no second copy.
                payload.resize(len, 0);
                let mut got = have;
                while got < len {
                    match self.inner.read(&mut payload[got..]) {
                        Ok(0) => return Ok(ReadEvent::Eof),
                        Ok(n) => got += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            return Ok(ReadEvent::Frame(RawFrame { header, payload }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{write_frame, write_preamble, Kind, FLAG_EOF, MAX_PAYLOAD};

    /// A reader handing out at most `n` bytes per call.
    struct Chunky<'a>(&'a [u8], usize);
    impl Read for Chunky<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(b.len());
            b[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn frames(stream: &[u8], chunk: usize) -> Vec<ReadEvent> {
        let mut r = FrameReader::new(Chunky(stream, chunk));
        let mut out = Vec::new();
        loop {
            let e = r.next_event().unwrap();
            let eof = e == ReadEvent::Eof;
            out.push(e);
            if eof {
                return out;
            }
        }
    }

    fn payloads(ev: &[ReadEvent]) -> Vec<(u32, Vec<u8>)> {
        ev.iter()
            .filter_map(|e| match e {
                ReadEvent::Frame(f) => Some((f.header.session, f.payload.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn frames_come_out_whole_whatever_the_read_sizes() {
        let mut s = Vec::new();
        let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i * 7) as u8).collect();
        write_frame(&mut s, Kind::Stdout, 0, 1, b"abc").unwrap();
        write_frame(&mut s, Kind::Stdout, FLAG_EOF, 2, b"").unwrap();
        write_frame(&mut s, Kind::File, 0, 3, &big).unwrap();
        s.extend_from_slice(&[0; 5]); // padding between frames is fine
        write_frame(&mut s, Kind::Control, 0, 0, b"\x08").unwrap();
        for chunk in [1, 3, 19, 20, 21, 4096, 1 << 20] {
            let ev = frames(&s, chunk);
            assert_eq!(ev.len(), 5, "chunk {chunk}");
            let p = payloads(&ev);
            assert_eq!(p[0], (1, b"abc".to_vec()));
            assert_eq!(p[1], (2, vec![]));
            assert_eq!(p[2].1, big);
            assert_eq!(p[3], (0, vec![8]));
            assert_eq!(ev[4], ReadEvent::Eof);
        }
    }

    #[test]
    fn garbage_is_reported_once_and_skipped() {
        let mut s = Vec::new();
        write_frame(&mut s, Kind::Stdout, 0, 1, b"before").unwrap();
        s.extend_from_slice(b"\xEC\x1Fgarbage that is no header at all \xEC\xEC\x1F\x00");
        write_frame(&mut s, Kind::Stdout, 0, 2, b"after").unwrap();
        for chunk in [1, 7, 4096] {
            let ev = frames(&s, chunk);
            let lost = ev
                .iter()
                .filter(|e| matches!(e, ReadEvent::Lost(_)))
                .count();
            assert_eq!(lost, 1, "chunk {chunk}: {ev:?}");
            assert_eq!(
                payloads(&ev),
                vec![(1, b"before".to_vec()), (2, b"after".to_vec())]
            );
        }
    }

    #[test]
    fn a_preamble_ends_any_partial_frame() {
        // A previous writer died in the middle of a maximal frame header's payload...
        let mut s = Vec::new();
        let big = vec![0xAB; MAX_PAYLOAD];
        let mut whole = Vec::new();
        write_frame(&mut whole, Kind::Stdin, 0, 5, &big).unwrap();
        for cut in [3, HEADER_LEN, HEADER_LEN + 1000, whole.len() - 1] {
            s.clear();
            s.extend_from_slice(&whole[..cut]);
            // ...then a new writer starts with the preamble and a hello.
            write_preamble(&mut s).unwrap();
            write_frame(&mut s, Kind::Control, 0, 0, b"hello").unwrap();
            let ev = frames(&s, 4096);
            let p = payloads(&ev);
            assert_eq!(
                p.last().unwrap(),
                &(0, b"hello".to_vec()),
                "cut at {cut}: {ev:?}"
            );
        }
    }

    #[test]
    fn truncated_stream_is_eof_not_a_frame() {
        let mut s = Vec::new();
        write_frame(&mut s, Kind::Stdout, 0, 1, &[1; 300]).unwrap();
        for cut in [1, 10, HEADER_LEN, HEADER_LEN + 299] {
            let ev = frames(&s[..cut], 64);
            assert_eq!(ev, vec![ReadEvent::Eof], "cut {cut}");
        }
    }

    #[test]
    fn reset_drops_buffered_bytes() {
        let mut s = Vec::new();
        write_frame(&mut s, Kind::Stdout, 0, 1, b"one").unwrap();
        write_frame(&mut s, Kind::Stdout, 0, 2, b"two").unwrap();
        let mut r = FrameReader::new(Chunky(&s, 1 << 20));
        assert!(matches!(r.next_event().unwrap(), ReadEvent::Frame(_)));
        r.reset();
        assert_eq!(r.next_event().unwrap(), ReadEvent::Eof);
        assert_eq!(r.skipped(), 0);
        assert!(r.get_ref().0.is_empty());
    }

    #[test]
    fn read_errors_propagate() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let mut r = FrameReader::new(Failing);
        assert_eq!(r.next_event().unwrap_err().to_string(), "boom");
    }
}
