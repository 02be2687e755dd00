//! `run`: the process-level behaviour (config file, --no-api, exit codes, socket
//! lifecycle, signals are left out: they would reach the test harness).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ec1_api::{run, ApiError, RunOptions};
use ec1_engine::ExitReason;

fn opts(engine: &std::sync::Arc<FakeEngine>, dir: &Path) -> RunOptions {
    let mut o = RunOptions::new("fake", factory(engine.clone()));
    o.api_sock = None;
    o.id = "run-test".into();
    o.run_dir = Some(dir.join("run"));
    o.level = Some("Off".into());
    o
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("vm.json");
    std::fs::write(&p, body).unwrap();
    p
}

fn kernel(dir: &Path) -> String {
    let k = dir.join("vmlinux");
    std::fs::write(&k, b"").unwrap();
    k.to_str().unwrap().to_string()
}

#[test]
fn no_api_with_a_config_file_boots_and_exits_0_on_guest_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let engine = FakeEngine::new(FakeBehaviour {
        exit_after: Some((Duration::from_millis(50), ExitReason::GuestShutdown)),
        boot_signal: true,
        ..Default::default()
    });
    let k = kernel(dir.path());
    let img = dir.path().join("rootfs.ext4");
    std::fs::write(&img, b"").unwrap();
    let log = dir.path().join("fc.log");
    std::fs::write(&log, b"").unwrap();
    let metrics = dir.path().join("metrics.json");
    std::fs::write(&metrics, b"").unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"{{
  "boot-source": {{"kernel_image_path": "{k}", "boot_args": "console=ttyS0 reboot=k panic=1"}},
  "drives": [{{"drive_id": "rootfs", "path_on_host": "{}", "is_root_device": true, "is_read_only": false}}],
  "machine-config": {{"vcpu_count": 2, "mem_size_mib": 256}},
  "logger": {{"log_path": "{}", "level": "Info"}},
  "metrics": {{"metrics_path": "{}"}}
}}"#,
            img.display(),
            log.display(),
            metrics.display()
        ),
    );
    let mut o = opts(&engine, dir.path());
    o.config_file = Some(cfg);
    o.boot_timer = true;
    assert_eq!(run(o).unwrap(), 0);
    let spec = engine.spec().unwrap();
    assert_eq!(
        spec.cmdline,
        "console=ttyS0 reboot=k panic=1 root=/dev/vda rw pci=off"
    );
    assert_eq!((spec.vcpus, spec.mem_mib), (2, 256));
    assert_eq!(spec.id, "run-test");
    assert_eq!(engine.calls(), ["start", "stop"]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[run-test:"), "{text}");
    assert!(text.contains("Guest-boot-time = "), "{text}");
    // The final metrics line is written at exit.
    let m = std::fs::read_to_string(&metrics).unwrap();
    let last: serde_json::Value = serde_json::from_str(m.lines().last().unwrap()).unwrap();
    assert!(last["vmm"]["guest_boot_time_us"].as_u64().is_some());
}

#[test]
fn no_api_needs_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let engine = FakeEngine::new(FakeBehaviour::default());
    let e = run(opts(&engine, dir.path())).unwrap_err();
    assert!(matches!(e, ApiError::NoApiWithoutConfig));
    assert_eq!(e.exit_code(), 152);
}

#[test]
fn config_file_errors_start_no_engine() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(dir.path());
    let cases = [
        ("{not json", "is not valid"),
        // Unknown keys are refused inside a section (the top level ignores them, as
        // Firecracker's does).
        (r#"{"boot-source": {"kernel_image_path": "/k", "extra": 1}}"#, "unknown field `extra`"),
        (r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#, "has no `boot-source`"),
        (
            r#"{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}}"#,
            "`boot-source`: Boot source error: The kernel file cannot be opened",
        ),
        (
            &format!(r#"{{"boot-source": {{"kernel_image_path": "{k}"}}, "machine-config": {{"vcpu_count": 40, "mem_size_mib": 128}}}}"#),
            "`machine-config`: Machine config error: The number of vCPUs",
        ),
        (
            &format!(r#"{{"boot-source": {{"kernel_image_path": "{k}"}}, "vsock": {{"guest_cid": 3, "uds_path": "/nonexistent/dir/v.sock"}}}}"#),
            "`vsock`: Vsock config error: Cannot create backend for vsock device: the directory /nonexistent/dir of uds_path does not exist.",
        ),
        (
            &format!(r#"{{"boot-source": {{"kernel_image_path": "{k}"}}, "drives": [{{"drive_id": "a-b", "is_root_device": false, "path_on_host": "{k}"}}]}}"#),
            "`drives`: API Resource IDs",
        ),
    ];
    for (body, want) in cases {
        let engine = FakeEngine::new(FakeBehaviour::default());
        let mut o = opts(&engine, dir.path());
        o.config_file = Some(write_config(dir.path(), body));
        let e = run(o).unwrap_err();
        assert!(e.to_string().contains(want), "{body}: {e}");
        assert_eq!(e.exit_code(), 152, "{body}");
        assert!(engine.calls().is_empty(), "{body}");
    }
    let engine = FakeEngine::new(FakeBehaviour::default());
    let mut o = opts(&engine, dir.path());
    o.config_file = Some(dir.path().join("missing.json"));
    assert!(run(o)
        .unwrap_err()
        .to_string()
        .starts_with("cannot read the configuration file"));
}

#[test]
fn a_failing_engine_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(dir.path());
    let cfg = write_config(
        dir.path(),
        &format!(r#"{{"boot-source": {{"kernel_image_path": "{k}"}}}}"#),
    );
    let engine = FakeEngine::new(FakeBehaviour {
        fail_start: Some("no qemu here".into()),
        ..Default::default()
    });
    let mut o = opts(&engine, dir.path());
    o.config_file = Some(cfg.clone());
    let e = run(o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the microVM did not start: Start microvm error: invalid machine configuration: no qemu here"
    );

    let engine = FakeEngine::new(FakeBehaviour {
        exit_after: Some((
            Duration::from_millis(20),
            ExitReason::EngineCrashed {
                status: "signal 9".into(),
                stderr: "killed".into(),
            },
        )),
        ..Default::default()
    });
    let mut o = opts(&engine, dir.path());
    o.config_file = Some(cfg);
    let e = run(o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the engine running the guest exited unexpectedly (signal 9): killed"
    );
    assert_eq!(e.exit_code(), 1);
}

#[test]
fn the_api_socket_is_served_and_removed_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fc.sock");
    let engine = FakeEngine::new(FakeBehaviour {
        exit_after: Some((Duration::from_millis(100), ExitReason::GuestShutdown)),
        ..Default::default()
    });
    let mut o = opts(&engine, dir.path());
    o.api_sock = Some(sock.clone());
    o.id = "api-vm".into();
    let runner = std::thread::spawn(move || run(o));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = Client::connect(&sock);
    assert_eq!(c.get("/").body.unwrap()["id"], "api-vm");
    let k = kernel(dir.path());
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{k}"}}"#),
    );
    c.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    assert_eq!(runner.join().unwrap().unwrap(), 0);
    assert!(!sock.exists(), "the socket must be removed at exit");

    // An existing path is refused, and left alone.
    std::fs::write(&sock, b"keep me").unwrap();
    let mut o = opts(&engine, dir.path());
    o.api_sock = Some(sock.clone());
    let e = run(o).unwrap_err();
    assert!(matches!(e, ApiError::SocketExists { .. }), "{e}");
    assert_eq!(std::fs::read(&sock).unwrap(), b"keep me");
}

#[test]
fn logger_and_metrics_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let engine = FakeEngine::new(FakeBehaviour::default());
    let mut o = opts(&engine, dir.path());
    o.api_sock = Some(dir.path().join("s.sock"));
    o.level = Some("chatty".into());
    assert!(run(o.clone())
        .unwrap_err()
        .to_string()
        .contains("invalid log level `chatty`"));
    o.level = None;
    o.log_path = Some(dir.path().join("missing.log"));
    assert!(matches!(run(o.clone()).unwrap_err(), ApiError::Logger(_)));
    o.log_path = None;
    o.metrics_path = Some(dir.path().join("missing.metrics"));
    assert!(matches!(run(o.clone()).unwrap_err(), ApiError::Metrics(_)));
    o.metrics_path = None;
    o.metadata = Some(dir.path().join("missing.json"));
    assert!(matches!(run(o).unwrap_err(), ApiError::Metadata { .. }));
}

#[test]
fn metadata_file_fills_the_mmds_store() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fc.sock");
    let md = dir.path().join("md.json");
    std::fs::write(&md, r#"{"instance":{"name":"x"}}"#).unwrap();
    let engine = FakeEngine::new(FakeBehaviour {
        exit_after: Some((Duration::from_millis(10), ExitReason::GuestShutdown)),
        ..Default::default()
    });
    let mut o = opts(&engine, dir.path());
    o.api_sock = Some(sock.clone());
    o.metadata = Some(md);
    o.run_dir = None;
    let runner = std::thread::spawn(move || run(o));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = Client::connect(&sock);
    assert_eq!(c.get("/mmds").body.unwrap()["instance"]["name"], "x");
    let k = kernel(dir.path());
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{k}"}}"#),
    );
    c.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    assert_eq!(runner.join().unwrap().unwrap(), 0);
    // The private run directory handed to the engine is gone.
    let run_dir = engine.spec().unwrap().run_dir;
    assert!(
        run_dir.starts_with(std::env::temp_dir()),
        "{}",
        run_dir.display()
    );
    assert!(!run_dir.exists());
}
