//! End to end through the library: `ec1 bench cold -n 2 --warmup 0` boots two real
//! guests and must produce a complete report, JSON file and waterfall. It asserts the
//! report's structure and consistency, never a speed.

use ec1_bench::scenarios::cold::PHASES;
use ec1_bench::{execute, BenchArgs, Report, Scenario};

#[test]
fn cold_two_runs_produce_a_complete_report() {
    ec1_engine_qemu::register();
    let dir = tempfile::tempdir().unwrap();
    let args = BenchArgs {
        scenario: Scenario::Cold,
        runs: Some(2),
        warmup: 0,
        json: Some(dir.path().join("cold.json")),
        svg: Some(dir.path().join("cold.svg")),
        baseline_qemu: false,
        compare: None,
        kernel: Some(ec1_testkit::kernel()),
        arch: None,
        boot_args: vec![],
        ec1: None,
        stream_mib: 64,
        pool: false,
        mem: 256,
        lean: false,
        quiet: true,
    };
    let out = execute(&args).unwrap_or_else(|e| panic!("bench cold failed: {e}"));
    let r = &out.report;
    assert_eq!(r.scenario, "cold");
    assert_eq!(r.variants.len(), 1);
    let v = &r.variants[0];
    assert_eq!(v.name, "ec1");
    assert_eq!(v.runs.len(), 2);
    let names: Vec<&str> = v.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, PHASES);
    for run in &v.runs {
        assert!(
            run.phases.iter().all(|p| p.ms.is_finite() && p.ms >= 0.0),
            "{run:?}"
        );
        // The boot cannot be instantaneous: the guest kernel and the exec took time.
        assert!(run.phase_ms("guest kernel").unwrap() > 0.0);
        assert!(run.phase_ms("exec true").unwrap() > 0.0);
    }
    let shares: f64 = v.phases.iter().map(|p| p.share).sum();
    assert!((shares - 1.0).abs() < 1e-6, "{shares}");
    for p in &v.phases {
        assert!(
            p.ms.min <= p.ms.median && p.ms.median <= p.ms.p90 && p.ms.p90 <= p.ms.max,
            "{p:?}"
        );
    }
    let b = v.bottleneck.as_ref().expect("a bottleneck is named");
    assert!(PHASES.contains(&b.largest.as_str()) && PHASES.contains(&b.widest.as_str()));
    assert!(b.sentence.starts_with("Bottleneck: "));
    assert!(r.comparisons.is_empty());

    // serde_json's default float parsing may differ from the written value in the
    // last bit: compare structure exactly and numbers closely.
    let back = Report::read_json(&out.json).unwrap();
    assert_eq!((back.scenario.as_str(), back.variants.len()), ("cold", 1));
    let bv = &back.variants[0];
    assert_eq!(bv.runs.len(), 2);
    for (a, b) in bv.phases.iter().zip(&v.phases) {
        assert_eq!(a.name, b.name);
        assert!((a.ms.median - b.ms.median).abs() < 1e-6);
    }
    assert_eq!(
        bv.bottleneck.as_ref().map(|b| &b.sentence),
        Some(&b.sentence)
    );
    let svg = std::fs::read_to_string(&out.svg).unwrap();
    for name in PHASES {
        assert!(svg.contains(name), "{name} missing from the waterfall");
    }
}
