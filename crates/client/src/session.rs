//! Client-side state of one session, filled by the connection's reader thread and
//! drained by the user's handles.

use crate::error::Error;
use ec1_proto::{ErrorCode, RecvWindow, Termination, WindowExceeded, WINDOW};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Buffered output of one stream (at most one window, by flow control).
#[derive(Debug, Default)]
pub struct OutBuf {
    chunks: VecDeque<Vec<u8>>,
    offset: usize,
    pub eof: bool,
    window: RecvWindow,
    /// The consumer went away: data is dropped and credited on arrival.
    pub discard: bool,
}

impl OutBuf {
    /// Accepts received bytes; returns credit to send at once if discarding.
    pub fn push(&mut self, data: Vec<u8>, eof: bool) -> Result<Option<u32>, WindowExceeded> {
        self.window.on_receive(data.len())?;
        if eof {
            self.eof = true;
        }
        if self.discard {
            return Ok(self.window.consume_now(data.len()));
        }
        if !data.is_empty() {
            self.chunks.push_back(data);
        }
        Ok(None)
    }

    pub fn has_data(&self) -> bool {
        !self.chunks.is_empty()
    }

    /// Copies buffered bytes into `buf`; returns (bytes, credit to send).
    pub fn take(&mut self, buf: &mut [u8]) -> (usize, Option<u32>) {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let avail = &front[self.offset..];
            let k = avail.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&avail[..k]);
            n += k;
            self.offset += k;
            if self.offset == front.len() {
                self.chunks.pop_front();
                self.offset = 0;
            }
        }
        (n, self.window.on_consume(n))
    }

    /// Takes the next whole chunk (no copy); returns (chunk, credit to send).
    pub fn take_chunk(&mut self) -> Option<(Vec<u8>, Option<u32>)> {
        let mut c = self.chunks.pop_front()?;
        if self.offset > 0 {
            c.drain(..self.offset);
            self.offset = 0;
        }
        let credit = self.window.on_consume(c.len());
        Some((c, credit))
    }

    /// Stops buffering: drops what is buffered; returns credit for it.
    pub fn set_discard(&mut self) -> Option<u32> {
        self.discard = true;
        let n: usize = self.chunks.iter().map(Vec::len).sum::<usize>() - self.offset;
        self.chunks.clear();
        self.offset = 0;
        self.window.consume_now(n)
    }
}

/// How a session ended, as far as the client knows.
#[derive(Debug, Clone)]
pub enum End {
    Exited(Termination, bool),
    UploadDone(u64),
    DownloadDone,
    /// A refresh was applied; the guest clock was stepped by this many ns.
    Refreshed(i64),
    /// A quiesce was done: filesystems remounted read-only, and frozen.
    Quiesced {
        remounted: u32,
        frozen: u32,
        init_shutdown: bool,
    },
    Failed(FailReason),
}

/// Why a session failed (kept cloneable for several waiters).
#[derive(Debug, Clone)]
pub enum FailReason {
    Remote(ErrorCode, String),
    Disconnected(String),
    Reset(String),
}

impl FailReason {
    pub fn to_error(&self) -> Error {
        match self {
            FailReason::Remote(code, message) => Error::Remote {
                code: *code,
                message: message.clone(),
            },
            FailReason::Disconnected(m) => Error::Disconnected(m.clone()),
            FailReason::Reset(m) => Error::ChannelReset(m.clone()),
        }
    }
}

/// Everything the reader thread records for a session.
#[derive(Debug)]
pub struct State {
    pub pid: Option<u32>,
    pub stdout: OutBuf,
    pub stderr: OutBuf,
    pub file: OutBuf,
    /// What the host may still send on its input stream (stdin or upload data).
    pub send_credit: u64,
    pub file_info: Option<(u32, u64)>,
    pub end: Option<End>,
}

/// A session shared between the reader thread and the user's handles.
#[derive(Debug)]
pub struct Session {
    pub id: u32,
    state: Mutex<State>,
    pub cv: Condvar,
}

impl Session {
    pub fn new(id: u32) -> Session {
        Session {
            id,
            state: Mutex::new(State {
                pid: None,
                stdout: OutBuf::default(),
                stderr: OutBuf::default(),
                file: OutBuf::default(),
                send_credit: WINDOW as u64,
                file_info: None,
                end: None,
            }),
            cv: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Records the end (the first one wins) and wakes every waiter. Output streams end
    /// with it: nothing more arrives for an ended session.
    pub fn finish(&self, end: End) {
        let mut s = self.lock();
        if s.end.is_none() {
            s.end = Some(end);
        }
        s.stdout.eof = true;
        s.stderr.eof = true;
        s.file.eof = true;
        drop(s);
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbuf_hands_out_bytes_in_order_and_credits() {
        let mut b = OutBuf::default();
        b.push(b"hello ".to_vec(), false).unwrap();
        b.push(b"world".to_vec(), true).unwrap();
        assert!(b.eof && b.has_data());
        let mut buf = [0u8; 4];
        assert_eq!(b.take(&mut buf).0, 4);
        assert_eq!(&buf, b"hell");
        let (c, _) = b.take_chunk().unwrap();
        assert_eq!(c, b"o ");
        let mut big = [0u8; 64];
        assert_eq!(b.take(&mut big).0, 5);
        assert_eq!(&big[..5], b"world");
        assert!(!b.has_data());
        assert!(b.take_chunk().is_none());
    }

    #[test]
    fn outbuf_enforces_the_window_and_discards() {
        let mut b = OutBuf::default();
        b.push(vec![0; WINDOW as usize], false).unwrap();
        assert!(b.push(vec![0], false).is_err());
        assert_eq!(b.set_discard(), Some(WINDOW));
        assert_eq!(b.push(vec![0; 10], false).unwrap(), Some(10));
        assert!(!b.has_data());
    }

    #[test]
    fn finish_keeps_the_first_end() {
        let s = Session::new(1);
        s.finish(End::UploadDone(3));
        s.finish(End::DownloadDone);
        assert!(matches!(s.lock().end, Some(End::UploadDone(3))));
        assert!(s.lock().stdout.eof);
        let e = FailReason::Remote(ErrorCode::NotFound, "x".into()).to_error();
        assert_eq!(e.remote_code(), Some(ErrorCode::NotFound));
        assert!(matches!(
            FailReason::Disconnected("d".into()).to_error(),
            Error::Disconnected(_)
        ));
        assert!(matches!(
            FailReason::Reset("r".into()).to_error(),
            Error::ChannelReset(_)
        ));
    }
}
