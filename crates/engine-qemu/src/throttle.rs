//! Firecracker rate limiters in QEMU's terms.
//!
//! Firecracker's token bucket holds `size` tokens refilled over `refill_time_ms`, plus a
//! `one_time_burst`. QEMU throttles a drive by an average rate per second and an optional
//! burst rate (`*-max`) allowed for `*-max-length` seconds. The mapping:
//! - average = `size * 1000 / refill_time_ms` per second (at least 1);
//! - `one_time_burst > 0` → burst rate = average + `one_time_burst` for 1 second.
//!
//! QEMU's burst refills when unused, where Firecracker's one-time burst does not: an
//! approximation in the guest's favour. A bucket with `size == 0` or
//! `refill_time_ms == 0` means "no limit", as in Firecracker.

use ec1_engine::{RateLimit, TokenBucket};
use qapi::qmp::BlockIOThrottle;

/// QEMU's largest throttling value (`THROTTLE_VALUE_MAX`); larger rates are clamped,
/// which is "unlimited" in practice.
pub(crate) const THROTTLE_VALUE_MAX: u64 = 1_000_000_000_000_000;

/// One QEMU throttling dimension (bytes or operations per second); 0 means unset.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub avg: u64,
    pub max: u64,
}

impl Rate {
    fn from_bucket(b: Option<&TokenBucket>) -> Rate {
        let Some(b) = b else {
            return Rate::default();
        };
        if b.size == 0 || b.refill_time_ms == 0 {
            return Rate::default();
        }
        let avg = (u128::from(b.size) * 1000 / u128::from(b.refill_time_ms)).max(1);
        let avg = avg.min(u128::from(THROTTLE_VALUE_MAX)) as u64;
        let max = if b.one_time_burst > 0 {
            avg.saturating_add(b.one_time_burst)
                .min(THROTTLE_VALUE_MAX)
                .max(avg)
        } else {
            0
        };
        Rate { avg, max }
    }

    /// `-drive` options for this rate; `kind` is `bps` or `iops`.
    fn drive_options(&self, kind: &str, out: &mut Vec<String>) {
        if self.avg == 0 {
            return;
        }
        out.push(format!("throttling.{kind}-total={}", self.avg));
        if self.max > self.avg {
            out.push(format!("throttling.{kind}-total-max={}", self.max));
            out.push(format!("throttling.{kind}-total-max-length=1"));
        }
    }

    fn max_fields(&self) -> (Option<i64>, Option<i64>) {
        if self.avg != 0 && self.max > self.avg {
            (Some(self.max as i64), Some(1))
        } else {
            (None, None)
        }
    }
}

/// A drive's throttling in QEMU's terms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttle {
    pub bytes: Rate,
    pub ops: Rate,
}

impl Throttle {
    pub fn from_rate_limit(r: &RateLimit) -> Throttle {
        Throttle {
            bytes: Rate::from_bucket(r.bandwidth.as_ref()),
            ops: Rate::from_bucket(r.ops.as_ref()),
        }
    }

    /// The `throttling.*` options of `-drive` (empty when nothing is limited).
    pub fn drive_options(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.bytes.drive_options("bps", &mut out);
        self.ops.drive_options("iops", &mut out);
        out
    }

    /// The QMP `block_set_io_throttle` arguments for the device with qdev id `qdev_id`.
    /// All zeros lifts every limit.
    #[allow(deprecated)] // `device` is deprecated in the schema; it is left unset.
    pub fn to_qmp(self, qdev_id: &str) -> BlockIOThrottle {
        let (bps_max, bps_max_length) = self.bytes.max_fields();
        let (iops_max, iops_max_length) = self.ops.max_fields();
        BlockIOThrottle {
            id: Some(qdev_id.to_string()),
            device: None,
            group: None,
            bps: self.bytes.avg as i64,
            bps_rd: 0,
            bps_wr: 0,
            iops: self.ops.avg as i64,
            iops_rd: 0,
            iops_wr: 0,
            bps_max,
            bps_max_length,
            bps_rd_max: None,
            bps_rd_max_length: None,
            bps_wr_max: None,
            bps_wr_max_length: None,
            iops_max,
            iops_max_length,
            iops_rd_max: None,
            iops_rd_max_length: None,
            iops_wr_max: None,
            iops_wr_max_length: None,
            iops_size: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, one_time_burst: u64, refill_time_ms: u64) -> Option<TokenBucket> {
        Some(TokenBucket {
            size,
            one_time_burst,
            refill_time_ms,
        })
    }

    #[test]
    fn buckets_become_rates_per_second() {
        let t = Throttle::from_rate_limit(&RateLimit {
            bandwidth: bucket(1_000_000, 0, 100),
            ops: bucket(50, 0, 1000),
        });
        assert_eq!(
            t,
            Throttle {
                bytes: Rate {
                    avg: 10_000_000,
                    max: 0
                },
                ops: Rate { avg: 50, max: 0 },
            }
        );
        assert_eq!(
            t.drive_options(),
            ["throttling.bps-total=10000000", "throttling.iops-total=50"]
        );
    }

    #[test]
    fn one_time_burst_becomes_a_one_second_burst_rate() {
        let t = Throttle::from_rate_limit(&RateLimit {
            bandwidth: bucket(1000, 5000, 1000),
            ops: bucket(10, 90, 1000),
        });
        assert_eq!(
            t.drive_options(),
            [
                "throttling.bps-total=1000",
                "throttling.bps-total-max=6000",
                "throttling.bps-total-max-length=1",
                "throttling.iops-total=10",
                "throttling.iops-total-max=100",
                "throttling.iops-total-max-length=1",
            ]
        );
        let q = t.to_qmp("ec1blk0");
        assert_eq!(q.id.as_deref(), Some("ec1blk0"));
        assert_eq!(
            (q.bps, q.bps_max, q.bps_max_length),
            (1000, Some(6000), Some(1))
        );
        assert_eq!(
            (q.iops, q.iops_max, q.iops_max_length),
            (10, Some(100), Some(1))
        );
    }

    #[test]
    fn empty_or_disabled_buckets_mean_no_limit() {
        for r in [
            RateLimit::default(),
            RateLimit {
                bandwidth: bucket(0, 100, 100),
                ops: bucket(100, 0, 0),
            },
        ] {
            let t = Throttle::from_rate_limit(&r);
            assert_eq!(t, Throttle::default());
            assert!(t.drive_options().is_empty());
            let q = t.to_qmp("x");
            assert_eq!((q.bps, q.iops, q.bps_max, q.iops_max), (0, 0, None, None));
        }
    }

    #[test]
    fn extreme_values_are_clamped_not_wrapped() {
        let t = Throttle::from_rate_limit(&RateLimit {
            bandwidth: bucket(u64::MAX, u64::MAX, 1),
            ops: bucket(1, 0, u64::MAX),
        });
        assert_eq!(t.bytes.avg, THROTTLE_VALUE_MAX);
        // A burst equal to the average adds nothing and is left out.
        assert_eq!(t.bytes.max, THROTTLE_VALUE_MAX);
        assert_eq!(
            t.drive_options()[0],
            "throttling.bps-total=1000000000000000"
        );
        assert_eq!(t.drive_options().len(), 2);
        assert_eq!(
            t.ops.avg, 1,
            "a tiny rate rounds up to 1, never to 'unlimited'"
        );
        assert_eq!(t.to_qmp("x").bps_max, None);
    }
}
