//! `ec1` as Firecracker: `--no-api --config-file` boots a real guest on the QEMU engine.
//! The guest is the test init from `ec1-testkit`, which reports what it sees on the
//! serial console and then does what `ec1test.action=` says.

use ec1_testkit::{kernel, processes_matching, test_initramfs, wait_for};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const EC1: &str = env!("CARGO_BIN_EXE_ec1");

/// One test's private directory, holding its config and a private copy of the initrd
/// so that any QEMU started for it can be found by path.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::Builder::new()
            .prefix("ec1-cli-test")
            .tempdir()
            .unwrap();
        std::fs::copy(test_initramfs(), dir.path().join("initrd.cpio")).unwrap();
        Case { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, action: &str, vcpus: u64, mem: u64) -> serde_json::Value {
        json!({
            "boot-source": {
                "kernel_image_path": kernel(),
                "initrd_path": self.path("initrd.cpio"),
                "boot_args": format!("console=ttyS0 reboot=k panic=1 quiet ec1test.action={action}")
            },
            "machine-config": {"vcpu_count": vcpus, "mem_size_mib": mem},
            "drives": []
        })
    }

    fn write_config(&self, value: &serde_json::Value) -> PathBuf {
        let p = self.path("vm.json");
        std::fs::write(&p, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        p
    }

    fn command(&self, config: &Path) -> Command {
        let mut c = Command::new(EC1);
        c.args(["--no-api", "--id", "cli_test", "--config-file"])
            .arg(config)
            .stdin(Stdio::null());
        c
    }

    /// Runs ec1 to completion, killing it after `limit`.
    fn run(&self, mut cmd: Command, limit: Duration) -> Output {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let watchdog = std::thread::spawn(move || {
            std::thread::sleep(limit);
            // SAFETY: kill(2) on a pid we spawned; harmless if it has already exited.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        let out = child.wait_with_output().unwrap();
        drop(watchdog); // detached; a late kill hits a reaped pid only if reused, which
                        // the short limits here make negligible.
        out
    }

    /// No QEMU that this case started is alive.
    fn assert_no_engine_left(&self) {
        let needle = self.dir.path().to_str().unwrap().to_string();
        let left = wait_for(Duration::from_secs(5), || {
            let p = processes_matching(&needle);
            p.is_empty().then_some(())
        });
        assert!(
            left.is_some(),
            "engine processes left behind: {:?}",
            processes_matching(&needle)
        );
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn boots_reports_two_vcpus_and_memory_and_exits_zero_on_reboot() {
    let case = Case::new();
    let cfg = case.write_config(&case.config("reboot", 2, 256));
    let log = case.path("fc.log");
    std::fs::write(&log, b"").unwrap(); // Firecracker's logger opens an existing file or FIFO
    let trace = case.path("trace.jsonl");
    let mut cmd = case.command(&cfg);
    cmd.arg("--boot-timer")
        .arg("--log-path")
        .arg(&log)
        .args(["--level", "Info"])
        .arg("--trace-file")
        .arg(&trace);
    let out = case.run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(stdout.contains("EC1TEST marker"), "{stdout}");
    assert!(stdout.contains("EC1TEST cpus=2 "), "{stdout}");
    let mem_kib: u64 = stdout
        .split("mem_kib=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("mem_kib reported");
    // The kernel keeps a few MiB for itself; MemTotal is just under the configured size.
    assert!(
        (200 * 1024..=256 * 1024).contains(&mem_kib),
        "mem_kib={mem_kib}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let line = log_text
        .lines()
        .find(|l| l.contains("Guest-boot-time ="))
        .unwrap_or_else(|| panic!("no boot-time line in the log:\n{log_text}"));
    // Firecracker's format: `Guest-boot-time = {us} us {ms} ms, {cpu_us} CPU us {cpu_ms} CPU ms`.
    let words: Vec<&str> = line
        .split("Guest-boot-time =")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(words[1], "us", "{line}");
    assert_eq!(words[3], "ms,", "{line}");
    assert_eq!(&words[5..], ["CPU", "us", words[7], "CPU", "ms"], "{line}");
    let us: u64 = words[0].parse().unwrap();
    let ms: u64 = words[2].parse().unwrap();
    assert_eq!(us / 1000, ms, "{line}");
    assert!(us > 0);
    assert_phase_events(&std::fs::read_to_string(&trace).unwrap_or_default());
    case.assert_no_engine_left();
}

/// The trace of a config-file boot that ends in a guest reboot: each phase once, in
/// the order they happen, on one clock.
fn assert_phase_events(trace: &str) {
    let events: Vec<serde_json::Value> = trace
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let at = |name: &str| -> u64 {
        let e = events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {names:?}"));
        e["t_us"].as_u64().unwrap()
    };
    let order = [
        "engine.spawned",
        "engine.ready",
        "guest.started",
        "guest.boot_signal",
        "vm.exit",
    ];
    for pair in order.windows(2) {
        assert!(
            at(pair[0]) <= at(pair[1]),
            "{pair:?} out of order: {names:?}"
        );
    }
    let spawned = events
        .iter()
        .find(|e| e["event"] == "engine.spawned")
        .unwrap();
    assert!(spawned["pid"].as_u64().unwrap() > 0);
    assert_eq!(spawned["vm"], "cli_test");
    assert!(events.iter().all(|e| e["unix_us"].as_u64().unwrap() > 0));
}

#[test]
fn one_vcpu_a_guest_panic_and_a_poweroff_also_end_ec1_with_zero() {
    // PID 1 exiting panics the kernel; with panic=1 it reboots, which ends ec1.
    // `reboot(RB_POWER_OFF)` on a machine without ACPI resets it (ec1's kernel patch
    // 0002), which ends ec1 too.
    for action in ["exit", "poweroff"] {
        let case = Case::new();
        let cfg = case.write_config(&case.config(action, 1, 128));
        let out = case.run(case.command(&cfg), Duration::from_secs(60));
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{action}: {:?}\n{stdout}\n{}",
            out.status,
            text(&out.stderr)
        );
        assert!(stdout.contains("EC1TEST cpus=1 "), "{action}: {stdout}");
        case.assert_no_engine_left();
    }
}

#[test]
fn kill_9_of_ec1_leaves_no_engine_behind() {
    let case = Case::new();
    let cfg = case.write_config(&case.config("hang", 1, 128));
    let mut child: Child = case
        .command(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("EC1TEST tick") {
                let _ = tx.send(());
            }
        }
    });
    let ticked = rx.recv_timeout(Duration::from_secs(60));
    let needle = case.dir.path().to_str().unwrap().to_string();
    let engines_before = processes_matching(&needle);
    child.kill().unwrap(); // SIGKILL: ec1 gets no chance to clean up
    child.wait().unwrap();
    assert!(ticked.is_ok(), "the guest never ran");
    assert!(
        !engines_before.is_empty(),
        "expected a running engine process"
    );
    case.assert_no_engine_left();
}

fn assert_rejected(case: &Case, cfg: &serde_json::Value, expect: &str) {
    let path = case.write_config(cfg);
    let out = case.run(case.command(&path), Duration::from_secs(30));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "accepted: {cfg}");
    assert!(
        stderr.to_lowercase().contains(&expect.to_lowercase()),
        "expected {expect:?} in stderr:\n{stderr}"
    );
    case.assert_no_engine_left();
}

#[test]
fn bad_configurations_are_clear_errors_with_no_engine_left() {
    let case = Case::new();
    let good = case.config("reboot", 1, 128);

    let mut c = good.clone();
    c["boot-source"]["kernel_image_path"] = json!(case.path("no-such-kernel"));
    assert_rejected(&case, &c, "no-such-kernel");

    let not_elf = case.path("not-a-kernel");
    std::fs::write(&not_elf, b"this is not a kernel image at all, just text").unwrap();
    let mut c = good.clone();
    c["boot-source"]["kernel_image_path"] = json!(not_elf);
    assert_rejected(
        &case,
        &c,
        "is neither an ELF vmlinux, an x86 bzImage nor an arm64 Image",
    );

    let mut c = good.clone();
    c["boot-source"]["initrd_path"] = json!(case.path("no-such-initrd"));
    assert_rejected(&case, &c, "no-such-initrd");

    // Unreadable even for root: a directory where a file is expected.
    std::fs::create_dir(case.path("initrd-dir")).unwrap();
    let mut c = good.clone();
    c["boot-source"]["initrd_path"] = json!(case.path("initrd-dir"));
    assert_rejected(&case, &c, "initrd-dir");

    for (vcpus, mem) in [(0, 128), (33, 128), (1, 0)] {
        let mut c = good.clone();
        c["machine-config"] = json!({"vcpu_count": vcpus, "mem_size_mib": mem});
        let what = if mem == 0 { "mem" } else { "vcpu" };
        assert_rejected(&case, &c, what);
    }

    let mut c = good.clone();
    c["machine-config"]["no_such_field"] = json!(1);
    assert_rejected(&case, &c, "no_such_field");

    // Unknown sections are ignored at the top level, as Firecracker's `VmmConfig`
    // does; inside a section they are refused.
    let mut c = good.clone();
    c["drives"] = json!([{"drive_id": "r", "path_on_host": "/x", "is_root_device": false,
                          "is_read_only": true, "no_such_drive_key": 1}]);
    assert_rejected(&case, &c, "no_such_drive_key");
}

#[test]
fn malformed_json_and_missing_config_file_are_errors() {
    let case = Case::new();
    let p = case.path("vm.json");
    std::fs::write(&p, b"{\"boot-source\": {").unwrap();
    let out = case.run(case.command(&p), Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(!text(&out.stderr).trim().is_empty());

    let out = case.run(
        case.command(&case.path("absent.json")),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("absent.json"),
        "{}",
        text(&out.stderr)
    );

    // --no-api needs a config file, as in Firecracker.
    let out = Command::new(EC1)
        .arg("--no-api")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    case.assert_no_engine_left();
}

#[test]
fn api_requests_are_traced_with_their_status() {
    let case = Case::new();
    let sock = case.path("fc.sock");
    let trace = case.path("trace.jsonl");
    let mut child = Command::new(EC1)
        .arg("--api-sock")
        .arg(&sock)
        .arg("--trace-file")
        .arg(&trace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), || sock.exists().then_some(())).expect("no API socket");
    assert_eq!(ec1_testkit::http(&sock, "GET", "/", None).0, 200);
    let bad = ec1_testkit::http(&sock, "PUT", "/machine-config", Some("{\"vcpu_count\": 0}"));
    assert_eq!(bad.0, 400);
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for(Duration::from_secs(10), || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("ec1 did not end on SIGTERM");
    }
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names,
        [
            "process.start",
            "api.socket_ready",
            "api.request",
            "api.request"
        ]
    );
    assert_eq!(events[2]["method"], "GET");
    assert_eq!(events[2]["status"], 200);
    assert_eq!(events[3]["path"], "/machine-config");
    assert_eq!(events[3]["status"], 400);
    assert!(events[3]["us"].is_u64());
    assert!(events[1]["t_us"].as_u64() <= events[2]["t_us"].as_u64());
}
