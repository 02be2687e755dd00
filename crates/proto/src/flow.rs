//! Per-stream flow control.
//!
//! Each data stream of each session has a window: the sender may have at most
//! [`WINDOW`] bytes that the receiver has not yet handed to their consumer. The
//! receiver returns credit ([`crate::Msg::Credit`]) as its consumer takes bytes. A
//! receiver therefore never has to block its channel reader on a slow consumer: it
//! buffers at most one window per stream, and a flooding session can only fill its own
//! windows, never the channel.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes a sender may have outstanding per stream, from the stream's start.
pub const WINDOW: u32 = 256 * 1024;
/// Credit is returned in batches of at least a quarter window (fewer control frames).
pub const CREDIT_BATCH: u32 = WINDOW / 4;

/// The receiving end's accounting of one stream.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u32,
    /// Received and not yet credited back.
    outstanding: u32,
    /// Consumed and not yet credited back.
    consumed: u32,
}

/// The peer sent more than its window allowed: a protocol violation for that session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer sent {got} bytes with only {allowed} bytes of window left")]
pub struct WindowExceeded {
    pub got: usize,
    pub allowed: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow::new(WINDOW)
    }
}

impl RecvWindow {
    pub fn new(window: u32) -> RecvWindow {
        RecvWindow {
            window,
            outstanding: 0,
            consumed: 0,
        }
    }

    /// Accounts `n` received bytes.
    pub fn on_receive(&mut self, n: usize) -> Result<(), WindowExceeded> {
        let allowed = self.window - self.outstanding;
        if n > allowed as usize {
            return Err(WindowExceeded { got: n, allowed });
        }
        self.outstanding += n as u32;
        Ok(())
    }

    /// Accounts `n` bytes handed to the consumer; returns credit to send back, if a
    /// batch is due.
    pub fn on_consume(&mut self, n: usize) -> Option<u32> {
        let n = (n as u32).min(self.outstanding - self.consumed);
        self.consumed += n;
        if self.consumed >= (self.window / 4).max(1) {
            return self.flush();
        }
        None
    }

    /// Accounts `n` consumed bytes and returns all pending credit at once, batch or
    /// not (for data that is dropped on arrival).
    pub fn consume_now(&mut self, n: usize) -> Option<u32> {
        let a = self.on_consume(n).unwrap_or(0) + self.flush().unwrap_or(0);
        (a > 0).then_some(a)
    }

    /// Returns all pending credit now (e.g. the consumer went idle).
    pub fn flush(&mut self) -> Option<u32> {
        if self.consumed == 0 {
            return None;
        }
        let c = self.consumed;
        self.outstanding -= c;
        self.consumed = 0;
        Some(c)
    }
}

/// The sending end of one stream: blocks senders until credit is available.
#[derive(Debug)]
pub struct CreditGate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Debug)]
struct GateState {
    credit: u64,
    closed: bool,
}

impl Default for CreditGate {
    fn default() -> Self {
        CreditGate::new(WINDOW)
    }
}

impl CreditGate {
    pub fn new(initial: u32) -> CreditGate {
        CreditGate {
            state: Mutex::new(GateState {
                credit: initial as u64,
                closed: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Adds credit the receiver granted.
    pub fn grant(&self, n: u32) {
        let mut s = self.state.lock().unwrap();
        s.credit += n as u64;
        self.cv.notify_all();
    }

    /// Wakes every waiter for good: the stream or session is gone.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.cv.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }

    /// Credit available now.
    pub fn available(&self) -> u64 {
        self.state.lock().unwrap().credit
    }

    /// Waits for credit and takes up to `max` bytes of it. `None` once closed, or when
    /// `timeout` passes first.
    pub fn acquire(&self, max: usize, timeout: Option<Duration>) -> Option<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.state.lock().unwrap();
        loop {
            if s.closed {
                return None;
            }
            if s.credit > 0 {
                let n = (max as u64).min(s.credit) as usize;
                s.credit -= n as u64;
                return Some(n);
            }
            s = match deadline {
                None => self.cv.wait(s).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.cv.wait_timeout(s, d - now).unwrap().0
                }
            };
        }
    }

    /// Gives back credit taken but not used (a read returned fewer bytes).
    pub fn refund(&self, n: usize) {
        if n > 0 {
            self.grant(n as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn receiver_enforces_the_window() {
        let mut w = RecvWindow::new(100);
        w.on_receive(60).unwrap();
        w.on_receive(40).unwrap();
        assert_eq!(w.on_receive(1), Err(WindowExceeded { got: 1, allowed: 0 }));
        // Consuming below the batch size returns nothing yet...
        assert_eq!(w.on_consume(10), None);
        // ...reaching it returns everything consumed so far.
        assert_eq!(w.on_consume(15), Some(25));
        w.on_receive(25).unwrap();
        assert!(w.on_receive(1).is_err());
        assert_eq!(w.on_consume(5), None);
        assert_eq!(w.flush(), Some(5));
        assert_eq!(w.flush(), None);
        // Consuming more than was received is clamped.
        assert_eq!(w.on_consume(1000), Some(95));
        // consume_now returns batch and remainder together.
        w.on_receive(100).unwrap();
        assert_eq!(w.consume_now(30), Some(30));
        assert_eq!(w.consume_now(0), None);
        assert_eq!(w.consume_now(70), Some(70));
        assert!(WindowExceeded { got: 1, allowed: 0 }
            .to_string()
            .contains("window"));
    }

    #[test]
    fn default_window_batches_a_quarter() {
        let mut w = RecvWindow::default();
        w.on_receive(WINDOW as usize).unwrap();
        assert_eq!(w.on_consume(CREDIT_BATCH as usize - 1), None);
        assert_eq!(w.on_consume(1), Some(CREDIT_BATCH));
    }

    #[test]
    fn gate_blocks_until_granted_and_wakes_on_close() {
        let g = Arc::new(CreditGate::new(10));
        assert_eq!(g.acquire(4, None), Some(4));
        assert_eq!(g.acquire(100, None), Some(6));
        assert_eq!(g.available(), 0);
        assert_eq!(g.acquire(1, Some(Duration::from_millis(20))), None);
        g.refund(3);
        assert_eq!(g.acquire(100, None), Some(3));
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.acquire(50, None));
        std::thread::sleep(Duration::from_millis(20));
        g.grant(7);
        assert_eq!(t.join().unwrap(), Some(7));
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.acquire(50, None));
        std::thread::sleep(Duration::from_millis(20));
        g.close();
        assert_eq!(t.join().unwrap(), None);
        assert!(g.is_closed());
        assert_eq!(CreditGate::default().available(), WINDOW as u64);
    }
}
