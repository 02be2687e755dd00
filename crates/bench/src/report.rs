//! The report: per-phase statistics of every variant, the ratios between variants, and
//! the JSON file that keeps them (with the raw runs, so a later look can recompute).

use crate::bottleneck::{find_bottleneck, Bottleneck};
use crate::error::BenchError;
use crate::host::HostInfo;
use crate::ratio::{compare_variants, Comparison};
use crate::sample::{Run, Stage};
use crate::stats::Summary;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Statistics of one phase over all runs of a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    pub name: String,
    pub stage: Stage,
    /// In ms.
    pub ms: Summary,
    /// This phase's median as a fraction of the sum of all phase medians (so shares add
    /// up to 1; the median of the totals is reported separately).
    pub share: f64,
}

/// Statistics of one rate (e.g. MiB/s) over all runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricStats {
    pub name: String,
    pub unit: String,
    pub stats: Summary,
}

/// One thing measured (ec1, plain QEMU, another binary): its runs and what they say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantReport {
    pub name: String,
    pub phases: Vec<PhaseStats>,
    /// The run totals, in ms.
    pub total_ms: Summary,
    pub metrics: Vec<MetricStats>,
    pub bottleneck: Option<Bottleneck>,
    pub runs: Vec<Run>,
}

impl VariantReport {
    /// Summarises `runs`. Every run must have the same phases in the same order: a run
    /// that differs would make the per-phase columns compare different things.
    pub fn from_runs(name: &str, runs: Vec<Run>) -> Result<VariantReport, BenchError> {
        let first = runs
            .first()
            .ok_or_else(|| BenchError::NoData(name.to_string()))?;
        let layout: Vec<(&str, Stage)> = first
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.stage))
            .collect();
        for (i, r) in runs.iter().enumerate() {
            let this: Vec<(&str, Stage)> = r
                .phases
                .iter()
                .map(|p| (p.name.as_str(), p.stage))
                .collect();
            if this != layout {
                return Err(BenchError::Guest(format!(
                    "run {} of {name} has phases {this:?}, the first run {layout:?}",
                    i + 1
                )));
            }
        }
        let mut phases = Vec::with_capacity(layout.len());
        for (k, (pname, stage)) in layout.iter().enumerate() {
            let values: Vec<f64> = runs.iter().map(|r| r.phases[k].ms).collect();
            let ms = Summary::of(&values)
                .ok_or_else(|| BenchError::NoData(format!("{name}: {pname}")))?;
            phases.push(PhaseStats {
                name: pname.to_string(),
                stage: *stage,
                ms,
                share: 0.0,
            });
        }
        let sum: f64 = phases.iter().map(|p| p.ms.median).sum();
        for p in &mut phases {
            p.share = if sum > 0.0 { p.ms.median / sum } else { 0.0 };
        }
        let totals: Vec<f64> = runs.iter().map(Run::total_ms).collect();
        let total_ms = Summary::of(&totals).ok_or_else(|| BenchError::NoData(name.to_string()))?;

        let mut metrics: Vec<MetricStats> = Vec::new();
        for m in &first.metrics {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.metrics.iter().find(|x| x.name == m.name).map(|x| x.value))
                .collect();
            if let Some(stats) = Summary::of(&values) {
                metrics.push(MetricStats {
                    name: m.name.clone(),
                    unit: m.unit.clone(),
                    stats,
                });
            }
        }
        let bottleneck = find_bottleneck(&phases);
        Ok(VariantReport {
            name: name.to_string(),
            phases,
            total_ms,
            metrics,
            bottleneck,
            runs,
        })
    }

    /// The run whose total is closest to the median total: the one the waterfall shows,
    /// a real run rather than a synthetic one made of per-phase medians.
    pub fn median_run(&self) -> &Run {
        let m = self.total_ms.median;
        self.runs
            .iter()
            .min_by(|a, b| {
                (a.total_ms() - m)
                    .abs()
                    .total_cmp(&(b.total_ms() - m).abs())
            })
            .expect("a variant report always has runs")
    }
}

/// What was asked for, so a report can be reproduced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub runs: usize,
    pub warmup: usize,
    pub kernel: Option<String>,
    pub boot_args: Vec<String>,
    /// Alternated variants run A B B A A B ... so that drift of the machine hits both alike.
    pub alternated: bool,
}

/// A whole benchmark report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// Seconds since the Unix epoch when the report was made.
    pub created_unix_s: u64,
    pub host: HostInfo,
    pub settings: Settings,
    pub variants: Vec<VariantReport>,
    pub comparisons: Vec<Comparison>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(
        scenario: &str,
        host: HostInfo,
        settings: Settings,
        variants: Vec<VariantReport>,
    ) -> Report {
        let comparisons = match variants.as_slice() {
            [a, b, ..] => compare_variants(a, b),
            _ => Vec::new(),
        };
        Report {
            scenario: scenario.to_string(),
            created_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            host,
            settings,
            variants,
            comparisons,
            notes: Vec::new(),
        }
    }

    /// Writes the report as pretty JSON, creating the parent directory.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(BenchError::io(format!("creating {}", dir.display())))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Io {
            context: "encoding the report".into(),
            source: e.into(),
        })?;
        std::fs::write(path, text + "\n")
            .map_err(BenchError::io(format!("writing {}", path.display())))
    }

    /// Reads a report written by [`Report::write_json`].
    pub fn read_json(path: &Path) -> Result<Report, BenchError> {
        let text =
            std::fs::read(path).map_err(BenchError::io(format!("reading {}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| BenchError::Io {
            context: format!("parsing {}", path.display()),
            source: e.into(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn run(boot: u64, kernel: u64, exec: u64) -> Run {
        Run::default()
            .phase("engine start", Stage::Boot, Duration::from_millis(boot))
            .phase("guest kernel", Stage::Boot, Duration::from_millis(kernel))
            .phase("exec true", Stage::Work, Duration::from_millis(exec))
    }

    pub(crate) fn sample_report() -> Report {
        let runs = vec![run(30, 600, 5), run(90, 610, 6), run(32, 700, 5)];
        let v = VariantReport::from_runs("ec1", runs).unwrap();
        Report::new("cold", HostInfo::default(), settings(), vec![v])
    }

    pub(crate) fn settings() -> Settings {
        Settings {
            runs: 3,
            warmup: 0,
            kernel: None,
            boot_args: vec![],
            alternated: false,
        }
    }

    #[test]
    fn phases_are_summarised_in_order_with_shares() {
        let r = sample_report();
        let v = &r.variants[0];
        let names: Vec<&str> = v.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["engine start", "guest kernel", "exec true"]);
        assert_eq!(v.phases[1].ms.median, 610.0);
        let share_sum: f64 = v.phases.iter().map(|p| p.share).sum();
        assert!((share_sum - 1.0).abs() < 1e-9);
        assert!((v.phases[1].share - 610.0 / 647.0).abs() < 1e-9);
        assert_eq!(v.total_ms.median, 706.0);
        assert_eq!(v.median_run().total_ms(), 706.0);
        assert!(r.comparisons.is_empty());
    }

    #[test]
    fn runs_with_different_phases_are_refused() {
        let odd = Run::default().phase("x", Stage::Boot, Duration::from_millis(1));
        let e = VariantReport::from_runs("v", vec![run(1, 2, 3), odd]).unwrap_err();
        assert!(e.to_string().contains("run 2 of v"), "{e}");
        assert!(matches!(
            VariantReport::from_runs("v", vec![]),
            Err(BenchError::NoData(_))
        ));
    }

    #[test]
    fn metrics_are_summarised() {
        let runs = vec![
            run(1, 2, 3).metric("throughput", "MiB/s", 100.0),
            run(1, 2, 3).metric("throughput", "MiB/s", 120.0),
        ];
        let v = VariantReport::from_runs("s", runs).unwrap();
        assert_eq!(v.metrics.len(), 1);
        assert_eq!(v.metrics[0].stats.median, 110.0);
        assert_eq!(v.metrics[0].unit, "MiB/s");
    }

    #[test]
    fn json_round_trips_with_the_documented_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.json");
        let r = sample_report();
        r.write_json(&path).unwrap();
        let back = Report::read_json(&path).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["scenario"], "cold");
        let p = &v["variants"][0]["phases"][1];
        assert_eq!(p["name"], "guest kernel");
        assert_eq!(p["stage"], "boot");
        for k in ["median", "p90", "p99", "min", "max", "mean", "count"] {
            assert!(p["ms"][k].is_number(), "{k} missing in {p}");
        }
        assert!(p["share"].is_number());
        assert!(v["variants"][0]["bottleneck"]["sentence"].is_string());
        assert_eq!(v["variants"][0]["runs"].as_array().unwrap().len(), 3);
        assert!(Report::read_json(&dir.path().join("none.json")).is_err());
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        let e = Report::read_json(&dir.path().join("bad.json")).unwrap_err();
        assert!(e.to_string().starts_with("parsing "), "{e}");
        let e = r.write_json(Path::new("/dev/null/sub/r.json")).unwrap_err();
        assert!(e.to_string().contains("creating /dev/null/sub"), "{e}");
        let e = r.write_json(dir.path()).unwrap_err();
        assert!(e.to_string().starts_with("writing "), "{e}");
    }
}
