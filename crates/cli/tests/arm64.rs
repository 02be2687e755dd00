//! arm64 guests, end to end through the `ec1` binary on `qemu-system-aarch64 -M virt`
//! (TCG here): `ec1 run --arch aarch64` from a template it builds first (stdin,
//! stdout, stderr, exit statuses and signals, a cold run beside it), and the
//! Firecracker API with the agent injected — drives, entropy, balloon, vsock, `ec1
//! exec`/`ec1 cp`, a snapshot loaded by a fresh process.

use ec1_testkit::{busybox_aarch64, http, kernel_aarch64, output_with_input, wait_for};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;

use common::{ok, text, vmm, Vmm, EC1};

/// `ec1 run --arch aarch64` with its templates in `xdg` (this test's own), `input`
/// on stdin.
fn run(xdg: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(EC1);
    cmd.env("XDG_CACHE_HOME", xdg)
        .env("EC1_POOL", "off")
        .env("EC1_BUSYBOX_AARCH64", busybox_aarch64())
        .args([
            "run",
            "--timings",
            "--arch",
            "aarch64",
            "--mem",
            "128",
            "--kernel",
        ])
        .arg(kernel_aarch64())
        .args(args);
    output_with_input(cmd, input)
}

#[test]
fn run_on_arm64_builds_a_template_then_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("cache");
    let out = run(&xdg, &["--", "uname", "-m"], b"");
    assert_eq!(ok(&out), "aarch64\n");
    let err = text(&out.stderr);
    assert!(err.contains("template built first"), "{err}");

    let out = run(
        &xdg,
        &["--", "sh", "-c", "cat; echo to-stderr >&2; exit 7"],
        b"piped in\n",
    );
    assert_eq!(text(&out.stdout), "piped in\n");
    let err = text(&out.stderr);
    assert!(err.contains("to-stderr"), "{err}");
    assert!(err.contains("ec1 timings: template "), "{err}");
    assert!(!err.contains("built first"), "restored, not rebuilt: {err}");
    assert_eq!(out.status.code(), Some(7));

    let out = run(&xdg, &["--", "sh", "-c", "kill -TERM $$"], b"");
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));

    let out = run(&xdg, &["--cold", "--", "cat", "/proc/cpuinfo"], b"");
    assert!(ok(&out).contains("CPU implementer"), "an arm64 CPU");
    assert!(text(&out.stderr).contains("ec1 timings: cold"));

    // The default kernel of an architecture is asked for by name.
    let path = Command::new(EC1)
        .args(["kernel", "path", "--arch", "arm64"])
        .output()
        .unwrap();
    assert_eq!(
        PathBuf::from(ok(&path).trim()),
        kernel_aarch64().canonicalize().unwrap()
    );
}

fn put(sock: &Path, path: &str, body: Value) {
    let (code, text) = common::put(sock, path, body);
    assert_eq!(code, 204, "PUT {path}: {text}");
}

fn exec(sock: &Path, script: &str) -> String {
    ok(&common::exec(sock, script))
}

/// Configures and starts an arm64 guest with a scratch drive, entropy and a balloon
/// (and vsock when `vsock` names its socket) the way a Firecracker client does.
fn start(v: &Vmm, scratch: &Path, vsock: Option<&Path>) {
    put(
        &v.sock,
        "/boot-source",
        json!({"kernel_image_path": kernel_aarch64(),
               "boot_args": "console=ttyS0 reboot=k panic=1 pci=off"}),
    );
    put(
        &v.sock,
        "/machine-config",
        json!({"vcpu_count": 2, "mem_size_mib": 128}),
    );
    put(
        &v.sock,
        "/drives/scratch",
        json!({"drive_id": "scratch", "path_on_host": scratch,
               "is_root_device": false, "is_read_only": false}),
    );
    put(&v.sock, "/entropy", json!({}));
    put(
        &v.sock,
        "/balloon",
        json!({"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}),
    );
    if let Some(uds) = vsock {
        put(&v.sock, "/vsock", json!({"guest_cid": 3, "uds_path": uds}));
    }
    put(&v.sock, "/actions", json!({"action_type": "InstanceStart"}));
}

#[test]
fn firecracker_api_on_arm64_with_its_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let scratch = d.join("scratch.img");
    std::fs::write(&scratch, vec![0u8; 8 << 20]).unwrap();
    let v = vmm(d, "arm");
    start(&v, &scratch, Some(&d.join("v.sock")));
    assert_eq!(exec(&v.sock, "uname -m"), "aarch64\n");
    // The drive: 8 MiB, and what the guest writes reaches the host file.
    assert_eq!(exec(&v.sock, "cat /sys/block/vda/size"), "16384\n");
    exec(&v.sock, "printf written-on-arm64 > /dev/vda && sync");
    let bytes = std::fs::read(&scratch).unwrap();
    assert_eq!(&bytes[..16], b"written-on-arm64");
    // Entropy, vsock: the guest's drivers found them.
    assert!(exec(&v.sock, "cat /sys/class/misc/hw_random/rng_current").contains("virtio_rng"));
    assert_eq!(exec(&v.sock, "test -c /dev/vsock && echo yes"), "yes\n");
    // The balloon reports the guest's memory statistics.
    let stats = wait_for(Duration::from_secs(20), || {
        let (code, body) = http(&v.sock, "GET", "/balloon/statistics", None);
        (code == 200 && body.contains("free_memory")).then_some(body)
    });
    assert!(
        stats.is_some(),
        "no balloon statistics from the arm64 guest"
    );
    // ec1 cp both ways.
    let local = d.join("in.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    let cp = |a: &str, b: &str| {
        ok(&Command::new(EC1)
            .args(["cp", "--api-sock"])
            .arg(&v.sock)
            .args([a, b])
            .output()
            .unwrap())
    };
    cp(local.to_str().unwrap(), "vm:/tmp/in.txt");
    assert_eq!(exec(&v.sock, "cat /tmp/in.txt"), "copied in\n");
    let back = d.join("back.txt");
    cp("vm:/tmp/in.txt", back.to_str().unwrap());
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    // Ctrl-Alt-Del has no keyboard controller to go to on arm64, as on Firecracker.
    let (code, body) = http(
        &v.sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type":"SendCtrlAltDel"}"#),
    );
    assert_eq!(code, 400, "{body}");
}

#[test]
fn firecracker_snapshot_on_arm64_loads_in_a_fresh_process() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let scratch = d.join("scratch.img");
    std::fs::write(&scratch, vec![0u8; 4 << 20]).unwrap();
    let a = vmm(d, "a");
    start(&a, &scratch, None);
    exec(&a.sock, "echo before-the-snapshot > /tmp/marker");
    let (code, body) = http(&a.sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(code, 204, "{body}");
    let snap = d.join("vm.snap");
    let mem = d.join("vm.mem");
    put(
        &a.sock,
        "/snapshot/create",
        json!({"snapshot_type": "Full", "snapshot_path": snap, "mem_file_path": mem}),
    );
    drop(a);
    let b = vmm(d, "b");
    put(
        &b.sock,
        "/snapshot/load",
        json!({"snapshot_path": snap,
               "mem_backend": {"backend_type": "File", "backend_path": mem},
               "resume_vm": true}),
    );
    assert_eq!(exec(&b.sock, "cat /tmp/marker"), "before-the-snapshot\n");
    assert_eq!(exec(&b.sock, "uname -m"), "aarch64\n");
}
