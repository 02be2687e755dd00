//! Ratios between two variants (ec1 against plain QEMU, or against another VMM), stage
//! by stage, with the absolute figures beside them: a ratio alone hides whether the
//! difference is 2 ms or 2 s.

use crate::report::VariantReport;
use crate::sample::{Run, Stage};
use crate::stats::Summary;
use serde::{Deserialize, Serialize};

/// `a` against `b` for one stage (or the whole run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The stage label, or `total`.
    pub what: String,
    pub a: String,
    pub b: String,
    pub a_median_ms: f64,
    pub b_median_ms: f64,
    /// a / b: above 1 means `a` is slower.
    pub ratio: f64,
    /// a − b in ms.
    pub difference_ms: f64,
}

fn median_of(runs: &[Run], f: impl Fn(&Run) -> f64) -> Option<f64> {
    let values: Vec<f64> = runs.iter().map(f).collect();
    Summary::of(&values).map(|s| s.median)
}

fn comparison(
    what: &str,
    a: &VariantReport,
    b: &VariantReport,
    f: impl Fn(&Run) -> f64,
) -> Option<Comparison> {
    let am = median_of(&a.runs, &f)?;
    let bm = median_of(&b.runs, &f)?;
    Some(Comparison {
        what: what.to_string(),
        a: a.name.clone(),
        b: b.name.clone(),
        a_median_ms: am,
        b_median_ms: bm,
        ratio: if bm > 0.0 { am / bm } else { f64::INFINITY },
        difference_ms: am - bm,
    })
}

/// One comparison per stage both variants have, then the total.
pub fn compare_variants(a: &VariantReport, b: &VariantReport) -> Vec<Comparison> {
    let has = |v: &VariantReport, s: Stage| v.phases.iter().any(|p| p.stage == s);
    let mut out: Vec<Comparison> = [Stage::Boot, Stage::Work, Stage::Teardown]
        .into_iter()
        .filter(|s| has(a, *s) && has(b, *s))
        .filter_map(|s| comparison(s.label(), a, b, |r| r.stage_ms(s)))
        .collect();
    out.extend(comparison("total", a, b, Run::total_ms));
    // Millisecond metrics both variants measured (e.g. QEMU's CPU time to ready).
    for m in a.metrics.iter().filter(|m| m.unit == "ms") {
        if b.metrics.iter().any(|x| x.name == m.name && x.unit == "ms") {
            let value = |r: &Run| {
                r.metrics
                    .iter()
                    .find(|x| x.name == m.name)
                    .map_or(f64::NAN, |x| x.value)
            };
            out.extend(comparison(&m.name, a, b, value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runs(boot: &[u64], teardown: u64) -> Vec<Run> {
        boot.iter()
            .map(|&b| {
                Run::default()
                    .phase("boot", Stage::Boot, Duration::from_millis(b))
                    .phase("stop", Stage::Teardown, Duration::from_millis(teardown))
            })
            .collect()
    }

    #[test]
    fn ratios_per_shared_stage_and_total() {
        let a = VariantReport::from_runs("ec1", runs(&[1000, 1100, 1200], 10)).unwrap();
        let b = VariantReport::from_runs("qemu", runs(&[900, 1000, 1100], 5)).unwrap();
        let c = compare_variants(&a, &b);
        let whats: Vec<&str> = c.iter().map(|x| x.what.as_str()).collect();
        assert_eq!(whats, ["boot → guest ready", "teardown", "total"]);
        assert!((c[0].ratio - 1.1).abs() < 1e-9);
        assert_eq!(c[0].difference_ms, 100.0);
        assert_eq!(
            (c[1].a_median_ms, c[1].b_median_ms, c[1].ratio),
            (10.0, 5.0, 2.0)
        );
        assert_eq!(c[2].a_median_ms, 1110.0);
        assert_eq!(c[2].a, "ec1");
    }

    #[test]
    fn millisecond_metrics_of_both_are_compared() {
        let with = |rs: Vec<Run>, v: f64| -> Vec<Run> {
            rs.into_iter().map(|r| r.metric("cpu", "ms", v)).collect()
        };
        let a = VariantReport::from_runs("a", with(runs(&[10], 1), 300.0)).unwrap();
        let b = VariantReport::from_runs("b", with(runs(&[10], 1), 200.0)).unwrap();
        let c = compare_variants(&a, &b);
        let cpu = c.iter().find(|x| x.what == "cpu").unwrap();
        assert_eq!(
            (cpu.a_median_ms, cpu.b_median_ms, cpu.ratio),
            (300.0, 200.0, 1.5)
        );
        let plain = VariantReport::from_runs("p", runs(&[10], 1)).unwrap();
        assert!(compare_variants(&a, &plain).iter().all(|x| x.what != "cpu"));
    }

    #[test]
    fn a_zero_baseline_gives_an_infinite_ratio() {
        let a = VariantReport::from_runs("a", runs(&[1], 1)).unwrap();
        let b = VariantReport::from_runs("b", runs(&[0], 0)).unwrap();
        assert!(compare_variants(&a, &b)[1].ratio.is_infinite());
    }
}
