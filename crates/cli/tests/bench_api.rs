//! `ec1 bench api --compare BIN` through the binary: ec1 beside another
//! Firecracker-compatible binary (here a copy of ec1 itself), alternated, one fresh
//! process per run, with every figure the comparison promises.

use std::process::Command;

mod common;

use common::{ok, EC1};

#[test]
fn bench_api_compare_reports_both_binaries_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other-vmm");
    std::fs::copy(EC1, &other).unwrap();
    let json = tmp.path().join("api.json");
    let out = Command::new(EC1)
        .current_dir(tmp.path())
        .args([
            "bench",
            "api",
            "-n",
            "2",
            "--warmup",
            "0",
            "-q",
            "--compare",
        ])
        .arg(&other)
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(tmp.path().join("api.svg"))
        .output()
        .unwrap();
    let report = ok(&out);
    for line in [
        "ec1 --api-sock (2 runs",
        "other-vmm (2 runs",
        "start-up to first GET /",
        "GET / latency (median)",
        "PUT /machine-config latency (median)",
        "requests/s, 8 clients",
        "server CPU per request",
        "idle RSS",
        "runs alternated",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(j["variants"].as_array().unwrap().len(), 2, "{j}");
    // --compare is for the cold and api scenarios only.
    let bad = Command::new(EC1)
        .args(["bench", "exec", "--compare"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
