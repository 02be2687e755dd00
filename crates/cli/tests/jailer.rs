//! `ec1 jailer`, launched as a Firecracker client launches Firecracker's jailer: the
//! VMM and its QEMU run as an unprivileged user, in the chroot the flags name, in the
//! cgroup given, under QEMU's seccomp filter, and a guest boots and runs commands
//! through the API socket inside the jail. Bad input gets the jailer's errors. And
//! `ec1 run --user`, which gives up root outside a jail.

use ec1_testkit::{children_named, http, kernel, spawn_tied, wait_for};
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const EC1: &str = env!("CARGO_BIN_EXE_ec1");
const NOBODY: u32 = 65534;

/// A `/proc/PID/status` field.
fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// A child killed and reaped when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jailer(base: &Path, id: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(EC1);
    c.args(["jailer", "--id", id, "--exec-file", EC1])
        .args(["--uid", &NOBODY.to_string(), "--gid", &NOBODY.to_string()])
        .arg("--chroot-base-dir")
        .arg(base)
        .args(extra);
    c
}

#[test]
fn a_jailed_ec1_runs_its_guest_as_an_unprivileged_user_in_the_jail() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("jails");
    let mut cmd = jailer(
        &base,
        "jail-1",
        &[
            "--cgroup",
            "pids.max=512",
            "--",
            "--api-sock",
            "/run/api.sock",
            "--inject-agent",
        ],
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The jailer drops to --uid before it runs ec1, which clears the parent-death
    // signal `spawn_tied` armed: the guard kills and reaps it, also on a failed assert.
    let child = Reaped(spawn_tied(cmd));
    let root = base.join("ec1").join("jail-1").join("root");
    let sock = root.join("run/api.sock");
    wait_for(Duration::from_secs(20), || sock.exists().then_some(()))
        .expect("the jailed ec1 did not create its API socket");
    // As the Go SDK does: the kernel is put into the jail, its path given from inside.
    std::fs::copy(kernel(), root.join("vmlinux")).unwrap();
    let put = |path: &str, body: serde_json::Value| {
        let (code, text) = http(&sock, "PUT", path, Some(&body.to_string()));
        assert_eq!(code, 204, "PUT {path}: {text}");
    };
    put(
        "/boot-source",
        json!({"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1"}),
    );
    put(
        "/machine-config",
        json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    put("/actions", json!({"action_type": "InstanceStart"}));
    let out = Command::new(EC1)
        .args(["exec", "--api-sock"])
        .arg(&sock)
        .args(["--", "sh", "-c", "echo inside; cat /proc/1/comm"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("inside\n"));

    // ec1 (the jailer's pid, exec'd) and its QEMU: unprivileged, jailed, confined.
    let ec1 = child.0.id();
    let qemu = *children_named(ec1, "qemu")
        .first()
        .expect("QEMU runs under the jailed ec1");
    let root_meta = std::fs::metadata(&root).unwrap();
    for (what, pid) in [("ec1", ec1), ("QEMU", qemu)] {
        let uids = status_field(pid, "Uid");
        assert!(
            uids.split_whitespace().all(|u| u == NOBODY.to_string()),
            "{what} runs as {uids}"
        );
        let seen = std::fs::metadata(format!("/proc/{pid}/root/")).unwrap();
        assert_eq!(
            (seen.dev(), seen.ino()),
            (root_meta.dev(), root_meta.ino()),
            "{what}'s root is the jail"
        );
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cgroups
                .lines()
                .any(|l| l.contains("pids") && l.ends_with("/ec1/jail-1")),
            "{what} is in the jail's cgroup:\n{cgroups}"
        );
    }
    assert_eq!(status_field(qemu, "Seccomp"), "2", "QEMU's seccomp filter");
    assert_eq!(status_field(qemu, "NoNewPrivs"), "1");
    // The jail holds the copied VMM and nothing of the host's but /usr (read-only).
    assert!(root.join("ec1").is_file());
    // The jail gets /dev/kvm only where KVM is usable (not on a nested PVM host such
    // as this one), so the jailed engine emulates instead of failing on it.
    let kvm = ec1_engine_qemu::HostProbe::default().kvm_usable().is_ok();
    assert_eq!(root.join("dev/kvm").exists(), kvm);
    let argv = std::fs::read_to_string(format!("/proc/{qemu}/cmdline")).unwrap();
    assert!(argv.contains(if kvm { "kvm" } else { "tcg" }), "{argv}");
    let usr = std::fs::metadata(root.join("usr")).unwrap();
    assert!(usr.is_dir());
    drop(child);
}

#[test]
fn bad_jailer_input_gets_the_jailers_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("jails");
    let run = |mut c: Command| {
        let out = c.stdin(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(jailer(&base, "bad/id", &["--", "--no-api"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("Invalid instance ID"), "{err}");
    let mut c = Command::new(EC1);
    c.args([
        "jailer",
        "--id",
        "x",
        "--exec-file",
        "/nonexistent/firecracker",
    ])
    .args(["--uid", "1", "--gid", "1", "--chroot-base-dir"])
    .arg(&base);
    let (code, err) = run(c);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/firecracker"), "{err}");
    // An occupied jail (its VMM is already there) is refused.
    let root = base.join("ec1").join("taken").join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("ec1"), b"").unwrap();
    let (code, err) = run(jailer(&base, "taken", &["--", "--no-api"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("in use"), "{err}");
    let (code, _) = run(jailer(
        &base,
        "y",
        &["--cgroup-version", "3", "--cgroup", "a.b=1"],
    ));
    assert_eq!(code, Some(1));
    // Missing required flags: a usage error.
    let mut c = Command::new(EC1);
    c.args(["jailer", "--id", "z"]);
    assert_eq!(run(c).0, Some(2));
}

/// `ec1 run --user nobody` started as root: ec1 and QEMU both run as nobody, with
/// `no_new_privs`, and the command's output and status come back as usual.
#[test]
fn ec1_run_as_a_user_gives_up_root_with_its_engine() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // What nobody may read and write: a copy of the kernel and a cache of its own.
    let d = tmp.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let k = d.join("vmlinux");
    std::fs::copy(kernel(), &k).unwrap();
    let cache = d.join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = Command::new(EC1);
    cmd.args(["run", "--cold", "--user", "nobody", "--kernel"])
        .arg(&k)
        .args(["--", "sh", "-c", "echo up; sleep 30"])
        .env("XDG_CACHE_HOME", &cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Reaped(spawn_tied(cmd));
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line.is_empty() {
        let mut err = String::new();
        std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("ec1 run --user printed nothing: {err}");
    }
    assert_eq!(line, "up\n");
    let ec1 = child.0.id();
    let qemu = *children_named(ec1, "qemu")
        .first()
        .expect("ec1 runs a QEMU child");
    for pid in [ec1, qemu] {
        let uids = status_field(pid, "Uid");
        assert!(
            uids.split_whitespace().all(|u| u == NOBODY.to_string()),
            "{pid}: Uid {uids}"
        );
        assert_eq!(status_field(pid, "Groups"), "", "{pid}");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{pid}");
    }
    // The template cache, had one been built, and the run's files are nobody's.
    assert!(std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .all(|e| e.metadata().unwrap().uid() == NOBODY));
}

#[test]
fn ec1_run_user_refuses_root_and_unknown_users() {
    for (user, want) in [("root", "is root"), ("no-such-user-ec1", "no user")] {
        let out = Command::new(EC1)
            .args(["run", "--user", user, "--", "true"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains(want), "{err}");
    }
}
