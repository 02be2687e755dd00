//! Order statistics of a sample: what every table, ratio and bottleneck is built on.
//!
//! Benchmarks on a shared machine have long right tails (another process takes the
//! CPU for a while), so the report leads with the median and p90 rather than the mean,
//! and keeps min and max to show the spread.

use serde::{Deserialize, Serialize};

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted` (ascending, not empty), interpolating
/// linearly between the two closest ranks (Hyndman & Fan type 7, as R and NumPy do by
/// default): small samples then give values between observations instead of jumping.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    debug_assert!(!sorted.is_empty());
    let q = q.clamp(0.0, 1.0);
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Summary of one series of measurements (all in the series' unit, e.g. ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Summarises `values`; `None` when there are none or one is not a number (a
    /// summary of nothing would print as zeros and look like a measurement).
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut s = values.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Summary {
            count: s.len(),
            median: quantile(&s, 0.5),
            p90: quantile(&s, 0.9),
            p99: quantile(&s, 0.99),
            min: s[0],
            max: s[s.len() - 1],
            mean: s.iter().sum::<f64>() / s.len() as f64,
        })
    }

    /// How far the slow runs stray from the best one: p90 − min. Robust to a single
    /// outlier, unlike max − min.
    pub fn spread(&self) -> f64 {
        self.p90 - self.min
    }

    /// max − min.
    pub fn range(&self) -> f64 {
        self.max - self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
        assert_eq!(Summary::of(&[7.0]).unwrap().median, 7.0);
    }

    #[test]
    fn p90_interpolates_between_ranks() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert!((s.p90 - 9.1).abs() < 1e-9, "{}", s.p90);
        assert!((s.p99 - 9.91).abs() < 1e-9, "{}", s.p99);
        assert_eq!((s.min, s.max, s.count), (1.0, 10.0, 10));
        assert!((s.mean - 5.5).abs() < 1e-9);
        // 101 points 0..=100: every percentile is exact.
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!((s.median, s.p90, s.p99), (50.0, 90.0, 99.0));
    }

    #[test]
    fn spread_and_range() {
        let s = Summary::of(&[10.0, 11.0, 12.0, 13.0, 100.0]).unwrap();
        assert_eq!(s.range(), 90.0);
        assert!(
            (s.spread() - (quantile(&[10.0, 11.0, 12.0, 13.0, 100.0], 0.9) - 10.0)).abs() < 1e-9
        );
        assert!(s.spread() < s.range());
    }

    #[test]
    fn nothing_or_nan_gives_no_summary() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn quantile_clamps_its_argument() {
        assert_eq!(quantile(&[1.0, 2.0], -1.0), 1.0);
        assert_eq!(quantile(&[1.0, 2.0], 2.0), 2.0);
    }
}
