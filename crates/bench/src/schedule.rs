//! The order runs happen in. Warm-up runs come first and are dropped; two variants
//! alternate A B B A A B ..., so that the machine's drift (another build starting, the
//! CPU clocking down) lands on both instead of on whichever ran second, and so does
//! any effect one run has on the next. On the development machine the variant that
//! went first in each pair was slower: with a fixed A B order, ec1 measured 34-50 ms
//! behind plain QEMU, and the same build taking turns -4 to -5 ms (two runs each,
//! interleaved).

use crate::error::BenchError;
use crate::progress::Progress;
use crate::sample::Run;

/// A variant's name and how to measure one run of it.
pub type Measure<'a> = (&'a str, &'a mut dyn FnMut() -> Result<Run, BenchError>);

/// `warmup` dropped runs, then `runs` measured ones. Progress is reported for every
/// `every`-th run.
pub fn repeat(
    progress: &Progress,
    (name, f): Measure<'_>,
    warmup: usize,
    runs: usize,
    every: usize,
) -> Result<Vec<Run>, BenchError> {
    for i in 0..warmup {
        let r = f()?;
        progress.run(name, i, warmup, true, r.total_ms());
    }
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        let r = f()?;
        if every <= 1 {
            progress.run(name, i, runs, false, r.total_ms());
        } else {
            progress.many(name, i, runs, every, r.total_ms());
        }
        out.push(r);
    }
    Ok(out)
}

/// `warmup` then `runs` rounds of A and B, each round in the other order than the one
/// before (A B, B A, A B, ...); returns A's and B's measured runs.
pub fn alternate(
    progress: &Progress,
    (a_name, a): Measure<'_>,
    (b_name, b): Measure<'_>,
    warmup: usize,
    runs: usize,
) -> Result<(Vec<Run>, Vec<Run>), BenchError> {
    let (mut ra, mut rb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..warmup + runs {
        let measured = i >= warmup;
        let (k, n) = if measured {
            (i - warmup, runs)
        } else {
            (i, warmup)
        };
        let (x, y) = if i % 2 == 0 {
            let x = a()?;
            progress.run(a_name, k, n, !measured, x.total_ms());
            let y = b()?;
            progress.run(b_name, k, n, !measured, y.total_ms());
            (x, y)
        } else {
            let y = b()?;
            progress.run(b_name, k, n, !measured, y.total_ms());
            let x = a()?;
            progress.run(a_name, k, n, !measured, x.total_ms());
            (x, y)
        };
        if measured {
            ra.push(x);
            rb.push(y);
        }
    }
    Ok((ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Stage;
    use std::cell::RefCell;
    use std::time::Duration;

    fn run(ms: u64) -> Run {
        Run::default().phase("p", Stage::Work, Duration::from_millis(ms))
    }

    #[test]
    fn warmups_are_dropped() {
        let p = Progress::new("t", true);
        let mut n = 0;
        let mut f = || {
            n += 1;
            Ok(run(n))
        };
        let runs = repeat(&p, ("v", &mut f), 2, 3, 1).unwrap();
        let totals: Vec<f64> = runs.iter().map(Run::total_ms).collect();
        assert_eq!(totals, [3.0, 4.0, 5.0]);
    }

    #[test]
    fn variants_alternate_and_take_turns_going_first() {
        let p = Progress::new("t", true);
        let order = RefCell::new(Vec::new());
        let mut a = || {
            order.borrow_mut().push('A');
            Ok(run(1))
        };
        let mut b = || {
            order.borrow_mut().push('B');
            Ok(run(2))
        };
        let (ra, rb) = alternate(&p, ("a", &mut a), ("b", &mut b), 1, 2).unwrap();
        assert_eq!(order.into_inner(), ['A', 'B', 'B', 'A', 'A', 'B']);
        assert_eq!((ra.len(), rb.len()), (2, 2));
        assert_eq!(rb[0].total_ms(), 2.0);
    }

    #[test]
    fn the_first_failure_stops_everything() {
        let p = Progress::new("t", true);
        let mut calls = 0;
        let mut f = || {
            calls += 1;
            Err(BenchError::Guest("boom".into()))
        };
        assert!(repeat(&p, ("v", &mut f), 0, 5, 10).is_err());
        assert_eq!(calls, 1);
    }
}
