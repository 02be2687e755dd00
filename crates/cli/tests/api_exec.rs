//! ec1 as Firecracker driven through its REST API, with the agent injected
//! (`--inject-agent`), and `ec1 exec` / `ec1 cp` against that VM. One VM is booted for
//! all the exec tests of this file; each test uses it independently.

use ec1_testkit::{http, kernel, processes_matching, spawn_tied, test_initramfs, wait_for};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const EC1: &str = env!("CARGO_BIN_EXE_ec1");

struct SharedVm {
    dir: tempfile::TempDir,
    sock: PathBuf,
    // Killed (with its engine) when the test process exits: see `spawn_tied`.
    _ec1: std::sync::Mutex<std::process::Child>,
}

/// Boots the shared VM through the API: boot-source, machine-config, InstanceStart.
fn vm() -> &'static SharedVm {
    static VM: OnceLock<SharedVm> = OnceLock::new();
    VM.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ec1-api-exec")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("fc.sock");
        let mut cmd = Command::new(EC1);
        cmd.args(["--inject-agent", "--id", "shared_vm", "--api-sock"])
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied(cmd);
        wait_for(Duration::from_secs(10), || sock.exists().then_some(()))
            .expect("ec1 did not create its API socket");
        let boot = json!({
            "kernel_image_path": kernel(),
            "boot_args": "console=ttyS0 reboot=k panic=1 quiet"
        });
        let (code, body) = http(&sock, "PUT", "/boot-source", Some(&boot.to_string()));
        assert_eq!(code, 204, "{body}");
        let mc = json!({"vcpu_count": 2, "mem_size_mib": 256}).to_string();
        let (code, body) = http(&sock, "PUT", "/machine-config", Some(&mc));
        assert_eq!(code, 204, "{body}");
        let (code, body) = http(
            &sock,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#),
        );
        assert_eq!(code, 204, "{body}");
        SharedVm {
            dir,
            sock,
            _ec1: std::sync::Mutex::new(child),
        }
    })
}

fn exec(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let v = vm();
    let mut cmd = Command::new(EC1);
    cmd.arg("exec").arg("--api-sock").arg(&v.sock);
    if stdin.is_some() {
        cmd.arg("-i");
    }
    cmd.arg("--")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let Some(d) = data {
            let _ = input.write_all(&d);
        }
        drop(input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn exec_returns_exit_codes_and_signals() {
    for (script, code) in [
        ("true", 0),
        ("exit 1", 1),
        ("exit 3", 3),
        ("kill -9 $$", 137),
    ] {
        let out = exec(&["sh", "-c", script], None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn exec_separates_stdout_and_stderr_and_pipes_stdin() {
    let out = exec(&["sh", "-c", "echo to-out; echo to-err >&2"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-err\n");
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let out = exec(&["cat"], Some(&data));
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "stdin came back altered");
}

#[test]
fn cp_round_trip_keeps_bytes_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let v = vm();
    let src = v.dir.path().join("up.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    let back = v.dir.path().join("down.bin");
    let cp = |a: &Path, b: &str, reverse: bool| {
        let mut c = Command::new(EC1);
        c.arg("cp").arg("--api-sock").arg(&v.sock);
        if reverse {
            c.arg(b).arg(a);
        } else {
            c.arg(a).arg(b);
        }
        c.output().unwrap()
    };
    let out = cp(&src, "vm:/tmp/up.bin", false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec(&["stat", "-c", "%a %s", "/tmp/up.bin"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("640 {}", data.len())
    );
    let out = cp(&back, "vm:/tmp/up.bin", true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&back).unwrap() == data);
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn api_reports_state_and_refuses_pre_boot_calls_after_start() {
    let v = vm();
    let (code, body) = http(&v.sock, "GET", "/", None);
    assert_eq!(code, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["id"], "shared_vm");
    assert_eq!(info["app_name"], "ec1");
    assert!(
        info["state"] == "Running" || info["state"] == "Paused",
        "{info}"
    );
    let (code, body) = http(&v.sock, "GET", "/machine-config", None);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["vcpu_count"],
        2
    );
    let mc = json!({"vcpu_count": 1, "mem_size_mib": 128}).to_string();
    let (code, body) = http(&v.sock, "PUT", "/machine-config", Some(&mc));
    assert_eq!(code, 400);
    assert!(body.contains("fault_message"), "{body}");
    let out = exec(&["nproc"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}

/// Reads ec1's stdout (the serial console) on a thread, forwarding lines.
fn console_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no console line containing {needle:?}");
}

#[test]
fn pause_resume_ctrl_alt_del_and_vm_config_round_trip() {
    let dir = tempfile::Builder::new()
        .prefix("ec1-api-life")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("fc.sock");
    let initrd = dir.path().join("initrd.cpio");
    std::fs::copy(test_initramfs(), &initrd).unwrap();
    let mut child = Command::new(EC1)
        .args(["--id", "life", "--api-sock"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let console = console_lines(&mut child);
    wait_for(Duration::from_secs(10), || sock.exists().then_some(())).expect("no API socket");
    let boot = json!({
        "kernel_image_path": kernel(),
        "initrd_path": initrd,
        "boot_args": "console=ttyS0 reboot=k panic=1 quiet ec1test.action=hang"
    });
    assert_eq!(
        http(&sock, "PUT", "/boot-source", Some(&boot.to_string())).0,
        204
    );
    let mc = json!({"vcpu_count": 2, "mem_size_mib": 192}).to_string();
    assert_eq!(http(&sock, "PUT", "/machine-config", Some(&mc)).0, 204);
    let (code, body) = http(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(code, 204, "{body}");
    let first = wait_line(&console, "EC1TEST cpus=");
    wait_line(&console, "EC1TEST tick");

    // Paused: the guest prints nothing; resumed: it ticks again.
    assert_eq!(
        http(&sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0,
        204
    );
    let (_, body) = http(&sock, "GET", "/", None);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "Paused"
    );
    while console.recv_timeout(Duration::from_millis(300)).is_ok() {} // drain in-flight lines
    assert!(
        console.recv_timeout(Duration::from_millis(700)).is_err(),
        "a paused guest printed"
    );
    assert_eq!(
        http(&sock, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#)).0,
        204
    );
    wait_line(&console, "EC1TEST tick");

    let (code, config) = http(&sock, "GET", "/vm/config", None);
    assert_eq!(code, 200);

    // Ctrl-Alt-Del reaches the guest's keyboard; the kernel reboots; ec1 exits 0.
    assert_eq!(
        http(
            &sock,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#)
        )
        .0,
        204
    );
    let status =
        wait_for(Duration::from_secs(30), || child.try_wait().unwrap()).expect("ec1 did not exit");
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists(), "the API socket was not removed");

    // The exported configuration boots the same guest.
    let cfg = dir.path().join("exported.json");
    std::fs::write(&cfg, &config).unwrap();
    let mut again = Command::new(EC1)
        .args(["--no-api", "--id", "again", "--config-file"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let console = console_lines(&mut again);
    let second = wait_line(&console, "EC1TEST cpus=");
    assert_eq!(
        first, second,
        "the exported configuration booted a different guest"
    );
    // SIGTERM ends ec1 and its engine.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(again.id() as i32, libc::SIGTERM) };
    let status = wait_for(Duration::from_secs(20), || again.try_wait().unwrap())
        .expect("ec1 ignored SIGTERM");
    assert!(
        status.code().is_some(),
        "ec1 should exit on SIGTERM, not die by it: {status:?}"
    );
    let needle = dir.path().to_str().unwrap().to_string();
    assert!(
        wait_for(Duration::from_secs(5), || processes_matching(&needle)
            .is_empty()
            .then_some(()))
        .is_some(),
        "engine left behind"
    );
}
