//! Firecracker's token bucket: `size` tokens refilled evenly over `refill_time`, plus a
//! `one_time_burst` spent first and never refilled.
//!
//! A frame larger than what is left may still pass once the bucket is full enough
//! (`min(cost, size)` tokens), leaving the bucket in debt, so that a frame bigger than
//! the whole bucket is never blocked for ever (Firecracker does the same).

use std::time::{Duration, Instant};

use ec1_engine::TokenBucket;

/// One bucket's state.
#[derive(Debug, Clone)]
pub struct Bucket {
    size: u64,
    refill: Duration,
    burst: u64,
    /// Tokens; negative is debt.
    tokens: i128,
    last: Instant,
}

impl Bucket {
    /// A full bucket for `b` at time `now`.
    pub fn new(b: &TokenBucket, now: Instant) -> Bucket {
        Bucket {
            size: b.size.max(1),
            refill: Duration::from_millis(b.refill_time_ms.max(1)),
            burst: b.one_time_burst,
            tokens: i128::from(b.size),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let add = elapsed.as_nanos() * u128::from(self.size) / self.refill.as_nanos();
        if add > 0 {
            // Advance `last` only by the time the added tokens account for, so that
            // fractions of a token are not lost between calls.
            let used_ns = add * self.refill.as_nanos() / u128::from(self.size);
            self.last += Duration::from_nanos(u64::try_from(used_ns).unwrap_or(u64::MAX));
            self.tokens = (self.tokens + add as i128).min(i128::from(self.size));
        }
        if self.tokens >= i128::from(self.size) {
            self.last = now;
        }
    }

    /// Takes `cost` tokens if the bucket allows it now; otherwise says how long until
    /// it will.
    pub fn take(&mut self, cost: u64, now: Instant) -> Result<(), Duration> {
        if self.burst >= cost {
            self.burst -= cost;
            return Ok(());
        }
        self.refill(now);
        let needed = i128::from(cost.min(self.size));
        if self.tokens >= needed {
            self.tokens -= i128::from(cost);
            return Ok(());
        }
        let missing = (needed - self.tokens) as u128;
        let ns = missing * self.refill.as_nanos() / u128::from(self.size) + 1;
        Err(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }
}

impl Bucket {
    /// Takes as many of `want` tokens as the bucket has now (the burst first) and
    /// returns how many: for a stream whose excess is dropped rather than held (the
    /// serial console), never leaving the bucket in debt.
    pub fn take_up_to(&mut self, want: u64, now: Instant) -> u64 {
        let from_burst = self.burst.min(want);
        self.burst -= from_burst;
        let rest = want - from_burst;
        if rest == 0 {
            return from_burst;
        }
        self.refill(now);
        let have = u64::try_from(self.tokens.max(0)).unwrap_or(u64::MAX);
        let took = have.min(rest);
        self.tokens -= i128::from(took);
        from_burst + took
    }
}

/// A direction's limiter: bytes and frames.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    bytes: Option<Bucket>,
    frames: Option<Bucket>,
}

impl Limiter {
    /// A limiter for `r`; `None` limits nothing.
    pub fn new(r: Option<&ec1_engine::RateLimit>, now: Instant) -> Limiter {
        Limiter {
            bytes: r
                .and_then(|r| r.bandwidth.as_ref())
                .map(|b| Bucket::new(b, now)),
            frames: r.and_then(|r| r.ops.as_ref()).map(|b| Bucket::new(b, now)),
        }
    }

    /// Lets a frame of `len` bytes through now, or says how long to wait. A frame
    /// refused by one bucket takes nothing from the other.
    pub fn admit(&mut self, len: usize, now: Instant) -> Result<(), Duration> {
        let mut bytes = self.bytes.clone();
        if let Some(b) = bytes.as_mut() {
            b.take(len as u64, now)?;
        }
        if let Some(f) = self.frames.as_mut() {
            f.take(1, now)?;
        }
        self.bytes = bytes;
        Ok(())
    }

    /// Whether it limits anything.
    pub fn is_active(&self) -> bool {
        self.bytes.is_some() || self.frames.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tb(size: u64, burst: u64, ms: u64) -> TokenBucket {
        TokenBucket {
            size,
            one_time_burst: burst,
            refill_time_ms: ms,
        }
    }

    #[test]
    fn take_up_to_spends_the_burst_then_what_is_left_and_never_owes() {
        let t0 = Instant::now();
        let mut b = Bucket::new(&tb(100, 50, 1000), t0);
        assert_eq!(b.take_up_to(30, t0), 30); // burst 50 -> 20
        assert_eq!(b.take_up_to(70, t0), 70); // burst 20 + 50 of 100 tokens
        assert_eq!(b.take_up_to(500, t0), 50); // the other 50 tokens, no debt
        assert_eq!(b.take_up_to(10, t0), 0);
        // Half the refill time later, half the bucket.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take_up_to(500, t1), 50);
        assert_eq!(b.take_up_to(1, t1), 0);
    }

    #[test]
    fn refills_evenly_and_spends_the_burst_first() {
        let t0 = Instant::now();
        let mut b = Bucket::new(&tb(1000, 500, 100), t0);
        b.take(500, t0).unwrap(); // the burst
        b.take(1000, t0).unwrap(); // the bucket
        let wait = b.take(100, t0).unwrap_err();
        assert!(
            wait >= Duration::from_millis(9) && wait <= Duration::from_millis(11),
            "{wait:?}"
        );
        b.take(100, t0 + Duration::from_millis(10)).unwrap();
        assert!(b.take(1, t0 + Duration::from_millis(10)).is_err());
        // Never more than `size` after a long pause.
        let later = t0 + Duration::from_secs(10);
        b.take(1000, later).unwrap();
        assert!(b.take(1, later).is_err());
    }

    #[test]
    fn an_oversized_frame_passes_into_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::new(&tb(100, 0, 100), t0);
        b.take(1500, t0).unwrap();
        // 1400 tokens of debt plus one token: ~1.4 s.
        let wait = b.take(1, t0).unwrap_err();
        assert!(wait > Duration::from_millis(1300), "{wait:?}");
    }

    #[test]
    fn limiters_combine_bytes_and_frames() {
        let t0 = Instant::now();
        let r = ec1_engine::RateLimit {
            bandwidth: Some(tb(10_000, 0, 1000)),
            ops: Some(tb(2, 0, 1000)),
        };
        let mut l = Limiter::new(Some(&r), t0);
        assert!(l.is_active());
        l.admit(100, t0).unwrap();
        l.admit(100, t0).unwrap();
        assert!(l.admit(100, t0).is_err(), "two frames per second");
        let mut open = Limiter::new(None, t0);
        assert!(!open.is_active());
        for _ in 0..1000 {
            open.admit(65_000, t0).unwrap();
        }
    }

    #[test]
    fn a_refused_frame_takes_nothing() {
        let t0 = Instant::now();
        let r = ec1_engine::RateLimit {
            bandwidth: Some(tb(1000, 0, 1_000_000)),
            ops: Some(tb(1, 0, 10)),
        };
        let mut l = Limiter::new(Some(&r), t0);
        l.admit(10, t0).unwrap();
        assert!(l.admit(10, t0).is_err(), "one frame per 10 ms");
        // The refused frame took no bytes: 990 are left once a frame token is back.
        let t1 = t0 + Duration::from_millis(20);
        l.admit(990, t1).unwrap();
        assert!(l.admit(1, t1 + Duration::from_millis(20)).is_err());
    }
}
