//! ec1 launched exactly as Firecracker's orchestrators and SDKs launch Firecracker: their
//! argv, their configuration files and the API calls they make next, each booting a
//! real guest (the test init from `ec1-testkit`) on the QEMU engine.
//!
//! - Kata Containers (`configuration-fc.toml`, no jailer): `--api-sock S --config-file
//!   F` with a root drive, placeholder drives that Kata later points at real images
//!   with `PATCH /drives/{id}`, vsock with `uds_path`, and logger and metrics FIFOs;
//!   then `GET /` polling and a placeholder swapped under the running guest. Kata's
//!   pool of 8 placeholders, the root drive, vsock and an entropy device make 11
//!   virtio devices: more than `microvm` without ACPI has, so the engine boots the
//!   machine with ACPI and its second I/O APIC.
//! - The Firecracker Go SDK's default launch (`--api-sock S --id ID --no-seccomp`),
//!   configured through the API in the SDK's order, and its `--seccomp-filter`
//!   variant, which ec1 refuses with the reason.
//!
//! flintlock's launch form needs a network namespace and lives in `devices.rs`.

use ec1_testkit::{
    children_named, http, kernel, processes_matching, spawn_tied, test_initramfs, wait_for,
};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const EC1: &str = env!("CARGO_BIN_EXE_ec1");
const BOOT: Duration = Duration::from_secs(90);

/// The serial console lines of a running ec1, collected by a reader thread.
#[derive(Default)]
struct Console {
    lines: Mutex<Vec<String>>,
    more: Condvar,
}

impl Console {
    /// Waits until a line satisfies `pred` and returns it.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + BOOT;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {what} on the console:\n{}",
                lines.join("\n")
            );
            lines = self.more.wait_timeout(lines, left).unwrap().0;
        }
    }
}

/// One launched ec1 in a directory of its own; killed and checked for leftovers on drop.
struct Launch {
    dir: tempfile::TempDir,
    child: Child,
    console: Arc<Console>,
}

impl Launch {
    /// Spawns ec1 with `args` (which may name files in `dir`) and reads its stdout.
    fn spawn(dir: tempfile::TempDir, args: &[&std::ffi::OsStr]) -> Launch {
        let mut cmd = Command::new(EC1);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = spawn_tied(cmd);
        let stdout = child.stdout.take().unwrap();
        let console = Arc::new(Console::default());
        let c = console.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                c.lines.lock().unwrap().push(line);
                c.more.notify_all();
            }
        });
        Launch {
            dir,
            child,
            console,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits for ec1 to exit by itself and returns its status code.
    fn exit_code(&mut self) -> i32 {
        let code = wait_for(BOOT, || self.child.try_wait().unwrap())
            .expect("ec1 did not exit")
            .code()
            .unwrap_or(-1);
        let needle = self.dir.path().to_str().unwrap().to_string();
        assert!(
            wait_for(Duration::from_secs(5), || processes_matching(&needle)
                .is_empty()
                .then_some(()))
            .is_some(),
            "engine processes left behind"
        );
        code
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// Writes `d/vm.json`: a 1-vCPU, 128 MiB guest of the test init, booted with
/// `boot_args`, plus the top-level keys of `more` (a `machine-config` there replaces
/// the default one).
fn config_file(d: &Path, boot_args: &str, more: Value) -> PathBuf {
    let mut config = json!({
        "boot-source": {
            "kernel_image_path": kernel(),
            "initrd_path": test_initramfs(),
            "boot_args": boot_args
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}
    });
    if let (Value::Object(c), Value::Object(m)) = (&mut config, more) {
        c.extend(m);
    }
    let cfg = d.join("vm.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    cfg
}

/// Waits for the API socket, then answers 204 to every request in `calls`.
fn api_calls(sock: &Path, calls: &[(&str, &str, Value)]) {
    wait_for(Duration::from_secs(10), || sock.exists().then_some(())).expect("no API socket");
    for (method, path, body) in calls {
        let (code, text) = http(sock, method, path, Some(&body.to_string()));
        assert_eq!(code, 204, "{method} {path}: {text}");
    }
}

/// A raw image of `size` bytes that starts with `marker`.
fn image(path: &Path, marker: &str, size: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(marker.as_bytes(), 0).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Reads a FIFO as Kata does (a reader goroutine per FIFO) and keeps what came.
fn drain_fifo(path: PathBuf) -> Arc<Mutex<Vec<u8>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        // Blocks until ec1 opens the FIFO for writing; ends when it closes it.
        let Ok(mut f) = std::fs::File::open(&path) else {
            return;
        };
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            g.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    got
}

/// The census line of the test init: `(virtio devices, block devices, device ids)`.
fn census(line: &str) -> (usize, usize, String) {
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
            .to_string()
    };
    (
        field("virtio=").parse().unwrap(),
        field("blk=").parse().unwrap(),
        field("ids="),
    )
}

/// Kata Containers' Firecracker driver without the jailer: `--api-sock --config-file`,
/// Kata's configuration shape, `GET /` polling, and a placeholder drive pointed at a
/// real image with `PATCH /drives/{id}` while the guest watches it; then
/// `SendCtrlAltDel` ends the guest and ec1 exits 0.
#[test]
fn kata_containers_launch_form_hot_swaps_a_placeholder_drive() {
    let dir = tempdir("ec1-kata");
    let d = dir.path();
    image(&d.join("rootfs.img"), "KATA-ROOTFS", 4 << 20);
    let mut drives = vec![json!({
        "drive_id": "rootfs", "path_on_host": d.join("rootfs.img"),
        "is_root_device": false, "is_read_only": true
    })];
    // Kata's disk pool: 8 empty placeholder files, re-pointed when a container starts.
    for i in 0..8 {
        let p = d.join(format!("fc-drive-{i}"));
        std::fs::write(&p, b"").unwrap();
        drives.push(json!({
            "drive_id": format!("drive_{i}"), "path_on_host": p,
            "is_root_device": false, "is_read_only": false
        }));
    }
    let (log_fifo, metrics_fifo) = (d.join("fc-log.fifo"), d.join("fc-metrics.fifo"));
    mkfifo(&log_fifo);
    mkfifo(&metrics_fifo);
    let log = drain_fifo(log_fifo.clone());
    let metrics = drain_fifo(metrics_fifo.clone());
    let config = json!({
        "boot-source": {
            "kernel_image_path": kernel(),
            "initrd_path": test_initramfs(),
            // drive_3 is the fifth disk: vda is the root image, vdb..vdi the pool.
            "boot_args": "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux quiet ec1test.action=watch ec1test.disk=vde"
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256, "smt": false},
        "drives": drives,
        "vsock": {"vsock_id": "root", "guest_cid": 3, "uds_path": d.join("kata.hvsock")},
        // Where Kata adds its network interface (a TAP device, which needs a network
        // namespace): an entropy device, the eleventh virtio device.
        "entropy": {},
        "logger": {"log_path": log_fifo, "level": "Debug", "show_level": true, "show_log_origin": true},
        "metrics": {"metrics_path": metrics_fifo}
    });
    let cfg = d.join("fcConfig.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let sock = d.join("firecracker.socket");
    let launch = Launch::spawn(
        dir,
        &[
            "--api-sock".as_ref(),
            sock.as_os_str(),
            "--config-file".as_ref(),
            cfg.as_os_str(),
        ],
    );
    // Kata's vmRunning: GET / until the state is Running.
    wait_for(BOOT, || {
        if !sock.exists() {
            return None;
        }
        let (code, body) = http(&sock, "GET", "/", None);
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["state"] == "Running").then_some(())
    })
    .expect("the instance never said Running");
    let c = census(
        &launch
            .console
            .wait("census", |l| l.starts_with("EC1TEST virtio=")),
    );
    assert_eq!(c.0, 11, "root + 8 drives + vsock + entropy: {c:?}");
    assert_eq!(c.1, 9, "{c:?}");
    assert!(c.2.contains(",4,"), "an entropy device (id 4): {c:?}");
    assert!(c.2.ends_with(",19"), "a vsock device (id 19): {c:?}");
    launch
        .console
        .wait("the empty placeholder", |l| l == "EC1TEST vde= sectors=0");

    // A container's image arrives: Kata re-points the placeholder.
    let real = launch.path("container.img");
    image(&real, "KATA-CONTAINER", 8 << 20);
    let (code, body) = http(
        &sock,
        "PATCH",
        "/drives/drive_3",
        Some(&json!({"drive_id": "drive_3", "path_on_host": real}).to_string()),
    );
    assert_eq!(code, 204, "{body}");
    launch.console.wait("the swapped image", |l| {
        l == format!(
            "EC1TEST vde=KATA-CONTAINER.. sectors={}",
            (8u64 << 20) / 512
        )
    });
    let (code, body) = http(&sock, "GET", "/vm/config", None);
    assert_eq!(code, 200);
    let vm: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(vm["drives"][4]["path_on_host"], real.to_str().unwrap());

    let mut launch = launch;
    api_calls(
        &sock,
        &[("PUT", "/actions", json!({"action_type": "SendCtrlAltDel"}))],
    );
    assert_eq!(launch.exit_code(), 0);
    // Kata reads both FIFOs: Firecracker's log lines and metrics JSON reached them.
    let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        log.contains(":INFO:") && log.contains("Successfully started microvm"),
        "{log}"
    );
    let metrics = String::from_utf8_lossy(&metrics.lock().unwrap()).into_owned();
    let first = metrics.lines().next().unwrap_or_default();
    assert!(serde_json::from_str::<Value>(first).is_ok(), "{metrics}");
}

/// The Go SDK's launch: `--api-sock S --id ID` plus `seccomp` (`--no-seccomp`), then
/// its handlers in order: logger, machine, boot source, drives, start; the guest runs
/// and reboots, and ec1 exits 0.
fn go_sdk_launch(seccomp: &[&str]) {
    let dir = tempdir("ec1-gosdk");
    let d = dir.path().to_path_buf();
    let sock = d.join("fc.sock");
    image(&d.join("root.img"), "GOSDK-ROOT", 1 << 20);
    let log = d.join("fc.log");
    std::fs::write(&log, b"").unwrap();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--api-sock".as_ref(),
        sock.as_os_str(),
        "--id".as_ref(),
        "go-sdk-vm".as_ref(),
    ];
    for a in seccomp {
        args.push(a.as_ref());
    }
    let mut launch = Launch::spawn(dir, &args);
    api_calls(
        &sock,
        &[
            (
                "PUT",
                "/logger",
                json!({"log_path": log, "level": "Debug", "show_level": false, "show_log_origin": false}),
            ),
            (
                "PUT",
                "/machine-config",
                json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false}),
            ),
            (
                "PUT",
                "/boot-source",
                json!({
                    "kernel_image_path": kernel(), "initrd_path": test_initramfs(),
                    "boot_args": "console=ttyS0 reboot=k panic=1 pci=off quiet ec1test.action=probe"
                }),
            ),
            (
                "PUT",
                "/drives/1",
                json!({
                    "drive_id": "1", "path_on_host": d.join("root.img"),
                    "is_root_device": true, "is_read_only": true
                }),
            ),
            ("PUT", "/actions", json!({"action_type": "InstanceStart"})),
        ],
    );
    let (code, body) = http(&sock, "GET", "/", None);
    assert_eq!(code, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["id"], "go-sdk-vm");
    assert_eq!(info["app_name"], "Firecracker");
    launch.console.wait("the root drive", |l| {
        l.starts_with("EC1TEST vda=GOSDK-ROOT")
    });
    assert_eq!(launch.exit_code(), 0);
}

#[test]
fn go_sdk_default_launch_with_no_seccomp() {
    go_sdk_launch(&["--no-seccomp"]);
}

/// The SDK's variant with a custom filter (`--seccomp-filter F`): ec1 refuses it with
/// the reason before it listens (a Firecracker filter lists Firecracker's threads'
/// calls), instead of running unconfined as the user did not ask.
#[test]
fn go_sdk_launch_with_a_seccomp_filter_is_refused_with_the_reason() {
    let dir = tempdir("ec1-gosdk-filter");
    let (sock, filter) = (dir.path().join("fc.sock"), dir.path().join("f.bpf"));
    std::fs::write(&filter, [0u8; 8]).unwrap();
    let out = Command::new(EC1)
        .arg("--api-sock")
        .arg(&sock)
        .args(["--id", "go-sdk-vm", "--seccomp-filter"])
        .arg(&filter)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not load Firecracker's compiled seccomp filters")
            && stderr.contains("--no-seccomp"),
        "{stderr}"
    );
    assert!(!sock.exists());
}

/// `PUT /serial` with a rate limiter (here from a config file, as `--no-api`
/// launchers give it): the serial output file gets what the bucket allows of a
/// verbose boot, the rest is dropped without stalling the guest (it reboots and ec1
/// exits 0), and `uart.rate_limiter_dropped_bytes` counts it.
#[test]
fn serial_rate_limiter_drops_what_exceeds_its_bucket_and_counts_it() {
    let dir = tempdir("ec1-serial-limit");
    let d = dir.path().to_path_buf();
    let (out, metrics) = (d.join("serial.out"), d.join("metrics.json"));
    std::fs::write(&metrics, b"").unwrap();
    let cfg = config_file(
        &d,
        // No `quiet`: the kernel's boot log is tens of KiB.
        "console=ttyS0 reboot=k panic=1 pci=off ec1test.action=reboot",
        json!({
            "serial": {
                "serial_out_path": out,
                "rate_limiter": {"size": 2048, "one_time_burst": 1024, "refill_time": 600000}
            },
            "metrics": {"metrics_path": metrics}
        }),
    );
    let mut launch = Launch::spawn(
        dir,
        &[
            "--no-api".as_ref(),
            "--config-file".as_ref(),
            cfg.as_os_str(),
        ],
    );
    assert_eq!(launch.exit_code(), 0, "the guest rebooted");
    let written = std::fs::read(&out).unwrap();
    // The burst and the bucket (its refill is ten minutes away): 3 KiB of the boot.
    assert!(
        (1024..=3072 + 64).contains(&written.len()),
        "{} bytes",
        written.len()
    );
    assert!(
        String::from_utf8_lossy(&written).contains("Linux version"),
        "the boot log's start"
    );
    let dropped: u64 = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|m| m["uart"]["rate_limiter_dropped_bytes"].as_u64())
        .sum();
    assert!(dropped > 4096, "dropped {dropped} bytes");
}

/// Sets `/proc/sys/vm/nr_hugepages` for a test and puts the old value back on drop.
struct HugePagePool(String);

impl HugePagePool {
    fn set(pages: u64) -> HugePagePool {
        let path = "/proc/sys/vm/nr_hugepages";
        let old = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, pages.to_string()).unwrap();
        HugePagePool(old.trim().to_string())
    }
}

impl Drop for HugePagePool {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", &self.0);
    }
}

/// The free 2 MiB huge pages of the host.
fn huge_pages_free() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// A config file for a 128 MiB guest on 2 MiB huge pages that runs until killed.
fn huge_page_config(d: &Path) -> PathBuf {
    config_file(
        d,
        "console=ttyS0 reboot=k panic=1 pci=off quiet ec1test.action=hang",
        json!({"machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M"}}),
    )
}

/// `huge_pages: "2M"`: the guest's RAM is on the host's hugetlb pages (QEMU maps it
/// with 2 MiB kernel pages) and the guest runs; with no pages in the pool, ec1 refuses
/// to start and says what to reserve.
#[test]
fn huge_pages_back_the_guest_or_are_refused_with_what_is_missing() {
    // No pool: refused before QEMU starts, naming what to reserve.
    {
        let _pool = HugePagePool::set(0);
        let dir = tempdir("ec1-huge-none");
        let out = Command::new(EC1)
            .args(["--no-api", "--config-file"])
            .arg(huge_page_config(dir.path()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("need 64 free 2 MiB huge pages") && err.contains("nr_hugepages"),
            "{err}"
        );
    }
    // A pool that holds the guest: QEMU maps its RAM on 2 MiB pages.
    let _pool = HugePagePool::set(64);
    assert_eq!(
        huge_pages_free(),
        64,
        "the host could not reserve 64 huge pages"
    );
    let dir = tempdir("ec1-huge");
    let cfg = huge_page_config(dir.path());
    let launch = Launch::spawn(
        dir,
        &[
            "--no-api".as_ref(),
            "--config-file".as_ref(),
            cfg.as_os_str(),
        ],
    );
    launch
        .console
        .wait("the guest running", |l| l.starts_with("EC1TEST tick"));
    let qemu = *children_named(launch.child.id(), "qemu")
        .first()
        .expect("ec1 runs QEMU");
    let smaps = std::fs::read_to_string(format!("/proc/{qemu}/smaps")).unwrap();
    assert!(
        smaps
            .lines()
            .any(|l| l.starts_with("KernelPageSize:") && l.contains(" 2048 kB")),
        "no mapping with 2 MiB pages in QEMU's smaps"
    );
    assert!(
        huge_pages_free() < 64,
        "the guest's pages came from the pool"
    );
}

/// A drive with `socket` instead of `path_on_host` (Firecracker's vhost-user block):
/// QEMU's storage daemon serves an image over vhost-user-blk, and the guest reads it
/// as its first disk; the guest's snapshot is refused with the reason.
#[test]
fn a_vhost_user_drive_is_served_by_its_backend() {
    let dir = tempdir("ec1-vhost-blk");
    let d = dir.path().to_path_buf();
    // The backend's files live apart from ec1's directory, whose processes the
    // launch checks for leftovers when ec1 is gone.
    let backend_dir = tempdir("ec1-vhost-backend");
    let (img, sock) = (
        backend_dir.path().join("disk.img"),
        backend_dir.path().join("blk.sock"),
    );
    image(&img, "VHOST-USER-DISK", 4 << 20);
    let mut daemon = Command::new("qemu-storage-daemon");
    daemon
        .arg("--blockdev")
        .arg(format!(
            "driver=file,node-name=file0,filename={}",
            img.display()
        ))
        .args(["--blockdev", "driver=raw,node-name=disk0,file=file0"])
        .arg("--export")
        .arg(format!(
            "type=vhost-user-blk,id=exp0,node-name=disk0,writable=on,addr.type=unix,addr.path={}",
            sock.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut backend = spawn_tied(daemon);
    wait_for(Duration::from_secs(10), || sock.exists().then_some(()))
        .expect("qemu-storage-daemon did not listen");
    let cfg = config_file(
        &d,
        "console=ttyS0 reboot=k panic=1 pci=off quiet ec1test.action=probe",
        json!({"drives": [{"drive_id": "vu", "is_root_device": false, "socket": sock}]}),
    );
    let mut launch = Launch::spawn(
        dir,
        &[
            "--no-api".as_ref(),
            "--config-file".as_ref(),
            cfg.as_os_str(),
        ],
    );
    launch.console.wait("the vhost-user disk", |l| {
        l == format!(
            "EC1TEST vda=VHOST-USER-DISK. sectors={}",
            (4u64 << 20) / 512
        )
    });
    assert_eq!(launch.exit_code(), 0);
    let _ = backend.kill();
    let _ = backend.wait();
}
