//! Naming the bottleneck: which phase to attack first, and which one to stabilise.
//!
//! Two different questions. The phase with the largest median share is where a speed-up
//! pays most; the phase with the widest spread is where runs differ, i.e. what makes a
//! single measurement (and a user's experience) unpredictable. On a shared 2-core
//! machine the second one is often host scheduling noise, so it is reported as such.

use crate::fmt::duration_ms;
use crate::report::PhaseStats;
use serde::{Deserialize, Serialize};

/// The two phases the report names, and a sentence saying so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// The phase with the largest median share.
    pub largest: String,
    pub largest_share: f64,
    pub largest_median_ms: f64,
    /// The phase with the widest spread, p90 − min.
    pub widest: String,
    pub widest_spread_ms: f64,
    /// max − min of that phase.
    pub widest_range_ms: f64,
    pub sentence: String,
}

/// `None` when there is no phase.
pub fn find_bottleneck(phases: &[PhaseStats]) -> Option<Bottleneck> {
    let largest = phases.iter().max_by(|a, b| a.share.total_cmp(&b.share))?;
    let widest = phases.iter().max_by(|a, b| {
        a.ms.spread()
            .total_cmp(&b.ms.spread())
            .then(a.ms.range().total_cmp(&b.ms.range()))
    })?;
    let sentence = format!(
        "Bottleneck: {} takes {:.0}% of the median run ({}); the widest spread is in {} \
         (p90−min {}, max−min {}).",
        largest.name,
        largest.share * 100.0,
        duration_ms(largest.ms.median),
        widest.name,
        duration_ms(widest.ms.spread()),
        duration_ms(widest.ms.range()),
    );
    Some(Bottleneck {
        largest: largest.name.clone(),
        largest_share: largest.share,
        largest_median_ms: largest.ms.median,
        widest: widest.name.clone(),
        widest_spread_ms: widest.ms.spread(),
        widest_range_ms: widest.ms.range(),
        sentence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Stage;
    use crate::stats::Summary;

    fn phase(name: &str, values: &[f64], share: f64) -> PhaseStats {
        PhaseStats {
            name: name.into(),
            stage: Stage::Boot,
            ms: Summary::of(values).unwrap(),
            share,
        }
    }

    #[test]
    fn largest_share_and_widest_spread_can_differ() {
        let phases = [
            phase("engine start", &[20.0, 80.0, 25.0, 90.0], 0.1),
            phase("guest kernel", &[600.0, 605.0, 610.0, 602.0], 0.85),
            phase("exec", &[5.0, 5.0, 6.0, 5.0], 0.05),
        ];
        let b = find_bottleneck(&phases).unwrap();
        assert_eq!(b.largest, "guest kernel");
        assert_eq!(b.largest_median_ms, 603.5);
        assert_eq!(b.widest, "engine start");
        assert_eq!(b.widest_range_ms, 70.0);
        assert!(
            b.sentence
                .starts_with("Bottleneck: guest kernel takes 85% of the median run (604 ms)"),
            "{}",
            b.sentence
        );
        assert!(
            b.sentence.contains("widest spread is in engine start"),
            "{}",
            b.sentence
        );
    }

    #[test]
    fn no_phase_no_bottleneck() {
        assert!(find_bottleneck(&[]).is_none());
    }
}
