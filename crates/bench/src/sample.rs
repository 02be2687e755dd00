//! One measured run: its phases, in the order they happened, and any rates.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which part of a run a phase belongs to. Runs of different variants (ec1, plain
/// QEMU, another VMM) split their time differently; the stages are what they have in
/// common, so ratios compare like with like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// From nothing to a guest that answers (or announces itself).
    Boot,
    /// Work done in a running guest.
    Work,
    /// Stopping the guest and releasing what it held.
    Teardown,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Boot => "boot → guest ready",
            Stage::Work => "work in the guest",
            Stage::Teardown => "teardown",
        }
    }
}

/// One phase of one run, in milliseconds (a float: exec and API phases are µs-scale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub name: String,
    pub stage: Stage,
    pub ms: f64,
}

impl PhaseTime {
    pub fn new(name: &str, stage: Stage, d: Duration) -> PhaseTime {
        PhaseTime {
            name: name.to_string(),
            stage,
            ms: d.as_secs_f64() * 1e3,
        }
    }
}

/// A rate measured in a run, e.g. stream throughput in MiB/s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    pub value: f64,
}

/// One run: consecutive phases (they add up to its wall time) plus rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub phases: Vec<PhaseTime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

impl Run {
    /// Adds a phase; returns `self` for chaining.
    pub fn phase(mut self, name: &str, stage: Stage, d: Duration) -> Run {
        self.phases.push(PhaseTime::new(name, stage, d));
        self
    }

    /// Adds a rate.
    pub fn metric(mut self, name: &str, unit: &str, value: f64) -> Run {
        self.metrics.push(Metric {
            name: name.into(),
            unit: unit.into(),
            value,
        });
        self
    }

    /// The sum of the phases in ms.
    pub fn total_ms(&self) -> f64 {
        self.phases.iter().map(|p| p.ms).sum()
    }

    /// The sum of the phases of `stage` in ms.
    pub fn stage_ms(&self, stage: Stage) -> f64 {
        self.phases
            .iter()
            .filter(|p| p.stage == stage)
            .map(|p| p.ms)
            .sum()
    }

    /// The phase named `name`, in ms.
    pub fn phase_ms(&self, name: &str) -> Option<f64> {
        self.phases.iter().find(|p| p.name == name).map(|p| p.ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_stages_add_up() {
        let r = Run::default()
            .phase("a", Stage::Boot, Duration::from_millis(10))
            .phase("b", Stage::Boot, Duration::from_millis(5))
            .phase("c", Stage::Work, Duration::from_micros(1500))
            .phase("d", Stage::Teardown, Duration::from_millis(2))
            .metric("throughput", "MiB/s", 99.0);
        assert!((r.total_ms() - 18.5).abs() < 1e-9);
        assert!((r.stage_ms(Stage::Boot) - 15.0).abs() < 1e-9);
        assert!((r.stage_ms(Stage::Work) - 1.5).abs() < 1e-9);
        assert_eq!(r.phase_ms("d"), Some(2.0));
        assert_eq!(r.phase_ms("zz"), None);
        assert_eq!(r.metrics[0].unit, "MiB/s");
        assert_eq!(Stage::Boot.label(), "boot → guest ready");
    }
}
