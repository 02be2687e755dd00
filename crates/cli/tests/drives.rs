//! Drives behind the Firecracker API on real guests (`ec1 --inject-agent`, commands run
//! with `ec1 exec`): a read-only ext4 root drive, a read-write data drive whose writes
//! outlive the VM, a rate-limited drive whose limit can be changed or lifted on the
//! running guest, media change (`PATCH /drives/{id}` with a new `path_on_host`), and the
//! 400s for requests that cannot apply.
//!
//! The rate limiter and media change share one VM ([`shared`]); its tests take
//! [`serial`] so that their guest programs and timings do not overlap. The root and data
//! drive tests end their VM (`SendCtrlAltDel`), so each has its own.

use ec1_testkit::{http, kernel, spawn_tied, wait_for};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const EC1: &str = env!("CARGO_BIN_EXE_ec1");
const MIB: u64 = 1 << 20;
const BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 quiet";

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn put(sock: &Path, path: &str, body: &Value) {
    let (code, resp) = http(sock, "PUT", path, Some(&body.to_string()));
    assert_eq!(code, 204, "PUT {path} {body}: {resp}");
}

fn patch(sock: &Path, path: &str, body: &Value) -> (u16, String) {
    http(sock, "PATCH", path, Some(&body.to_string()))
}

fn get_json(sock: &Path, path: &str) -> Value {
    let (code, body) = http(sock, "GET", path, None);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The configured drive `id` as `GET /vm/config` reports it.
fn drive_config(sock: &Path, id: &str) -> Value {
    get_json(sock, "/vm/config")["drives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["drive_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no drive {id} in /vm/config"))
}

/// Runs `sh -c script` in the guest behind `sock`, bounded by `timeout`; returns
/// (exit code, stdout, stderr).
fn sh(sock: &Path, script: &str, timeout: Duration) -> (i32, String, String) {
    let mut child = Command::new(EC1)
        .arg("exec")
        .arg("--api-sock")
        .arg(sock)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let Some(status) = wait_for(timeout, || child.try_wait().unwrap()) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`{script}` did not finish in the guest within {timeout:?}");
    };
    (
        status.code().unwrap_or(-1),
        out.join().unwrap(),
        err.join().unwrap(),
    )
}

/// As [`sh`], asserting success and returning stdout.
fn sh_ok(sock: &Path, script: &str) -> String {
    let (code, out, err) = sh(sock, script, Duration::from_secs(120));
    assert_eq!(code, 0, "`{script}` failed in the guest: {out}{err}");
    out
}

/// Starts `ec1 --inject-agent --api-sock <dir>/fc.sock` and waits for its socket.
fn start_ec1(dir: &Path, tied: bool) -> (PathBuf, Child) {
    let sock = dir.join("fc.sock");
    let mut cmd = Command::new(EC1);
    cmd.args(["--inject-agent", "--api-sock"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = if tied {
        spawn_tied(cmd)
    } else {
        cmd.spawn().unwrap()
    };
    if wait_for(Duration::from_secs(10), || sock.exists().then_some(())).is_none() {
        stop(&mut child);
        panic!("ec1 did not create its API socket");
    }
    (sock, child)
}

/// Ends an ec1 the way an orchestrator would: SIGTERM (ec1 stops its guest and cleans
/// up), SIGKILL if that takes more than 10 s; always reaped.
fn stop(child: &mut Child) {
    if child.try_wait().unwrap().is_none() {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        if wait_for(Duration::from_secs(10), || child.try_wait().unwrap()).is_none() {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

/// Configures and starts a guest with `drives` (each a `PUT /drives/{id}` body).
fn boot(sock: &Path, drives: &[Value]) {
    put(
        sock,
        "/boot-source",
        &json!({"kernel_image_path": kernel(), "boot_args": BOOT_ARGS}),
    );
    put(
        sock,
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    for d in drives {
        put(
            sock,
            &format!("/drives/{}", d["drive_id"].as_str().unwrap()),
            d,
        );
    }
    put(sock, "/actions", &json!({"action_type": "InstanceStart"}));
}

/// A guest of one test, stopped and reaped when dropped.
struct OwnVm {
    dir: tempfile::TempDir,
    sock: PathBuf,
    child: Child,
}

impl OwnVm {
    fn new(prefix: &str) -> OwnVm {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let (sock, child) = start_ec1(dir.path(), false);
        OwnVm { dir, sock, child }
    }

    /// Ends the guest with Ctrl-Alt-Del (the agent syncs and reboots, which ends ec1)
    /// and waits for ec1 to exit.
    fn ctrl_alt_del(&mut self) {
        put(
            &self.sock,
            "/actions",
            &json!({"action_type": "SendCtrlAltDel"}),
        );
        let status = wait_for(Duration::from_secs(30), || self.child.try_wait().unwrap());
        assert!(
            status.is_some(),
            "ec1 did not exit within 30 s of SendCtrlAltDel"
        );
    }
}

impl Drop for OwnVm {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A root filesystem for root mode: static busybox as `/bin/*`, the mount points the
/// agent moves into it, and a marker file.
fn make_root_image(dir: &Path, marker: &str) -> PathBuf {
    let tree = dir.join("rootfs-tree");
    ec1_testkit::busybox_root_tree(
        &tree,
        &["etc"],
        &[
            "sh", "cat", "echo", "touch", "grep", "dd", "sync", "mount", "head",
        ],
    );
    std::fs::write(tree.join("etc/ec1-marker"), marker).unwrap();
    let img = dir.join("rootfs.ext4");
    ec1_testkit::ext4_image(&tree, &img, "16M");
    std::fs::remove_dir_all(&tree).unwrap();
    img
}

#[test]
fn read_only_root_drive_is_the_guests_root_and_stays_unchanged() {
    let mut vm = OwnVm::new("ec1-drv-root");
    let img = make_root_image(vm.dir.path(), "ec1 root image");
    let before = sha256(&img);
    boot(
        &vm.sock,
        &[json!({
            "drive_id": "rootfs",
            "path_on_host": img,
            "is_root_device": true,
            "is_read_only": true
        })],
    );
    let cmdline = sh_ok(&vm.sock, "cat /proc/cmdline");
    assert!(cmdline.contains("root=/dev/vda ro"), "{cmdline}");
    // `/` is the image: its marker is there, and it is mounted read-only.
    assert_eq!(sh_ok(&vm.sock, "cat /etc/ec1-marker"), "ec1 root image");
    let mounts = sh_ok(&vm.sock, "grep ' / ' /proc/mounts");
    assert!(
        mounts.starts_with("/dev/vda / ext4 ro,"),
        "root mount: {mounts}"
    );
    assert_eq!(sh_ok(&vm.sock, "cat /sys/block/vda/ro").trim(), "1");
    // Writes fail with EROFS, both through the filesystem and to the device itself.
    let (code, out, err) = sh(&vm.sock, "echo x > /new-file", Duration::from_secs(30));
    assert_ne!(code, 0, "writing to a read-only root succeeded: {out}");
    assert!(err.contains("Read-only file system"), "{err}");
    let (code, _, err) = sh(
        &vm.sock,
        "echo x | dd of=/dev/vda bs=512 count=1 conv=notrunc oflag=direct",
        Duration::from_secs(30),
    );
    assert_ne!(code, 0, "writing to the read-only device succeeded: {err}");
    // /tmp (a tmpfs moved in by the agent) is still writable.
    assert_eq!(
        sh_ok(&vm.sock, "echo ok > /tmp/f && cat /tmp/f").trim(),
        "ok"
    );
    vm.ctrl_alt_del();
    assert_eq!(sha256(&img), before, "the read-only root image changed");
}

/// Bytes the data drive test writes: the decimal numbers 1..=n, one a line
/// (`seq 1 n` in the guest).
fn seq_bytes(n: u32) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect()
}

#[test]
fn data_drive_writes_reach_the_host_file() {
    let mut vm = OwnVm::new("ec1-drv-data");
    let img = vm.dir.path().join("data.img");
    std::fs::write(&img, vec![0xa5u8; 8 * MIB as usize]).unwrap();
    boot(
        &vm.sock,
        &[json!({
            "drive_id": "data",
            "path_on_host": img,
            "is_root_device": false,
            "is_read_only": false,
            "cache_type": "Writeback"
        })],
    );
    assert_eq!(sh_ok(&vm.sock, "cat /sys/block/vda/ro").trim(), "0");
    const N: u32 = 400_000;
    let expect = seq_bytes(N);
    // Through the page cache, then `sync` (which flushes the Writeback drive).
    sh_ok(
        &vm.sock,
        &format!("seq 1 {N} | dd of=/dev/vda bs=64k 2>/dev/null && sync"),
    );
    // And one direct write at 6 MiB.
    sh_ok(
        &vm.sock,
        "echo -n ec1-direct-write | dd of=/dev/vda bs=512 seek=12288 conv=sync,notrunc oflag=direct 2>/dev/null",
    );
    // The guest reads back what it wrote, bypassing its cache.
    let back = sh_ok(
        &vm.sock,
        "dd if=/dev/vda bs=512 skip=12288 count=1 iflag=direct 2>/dev/null | head -c 16",
    );
    assert_eq!(back, "ec1-direct-write");
    vm.ctrl_alt_del();
    let data = std::fs::read(&img).unwrap();
    assert_eq!(data.len() as u64, 8 * MIB, "the image changed size");
    assert!(
        data[..expect.len()] == expect[..],
        "the host file does not hold what the guest wrote (first difference at byte {:?})",
        data.iter().zip(&expect).position(|(a, b)| a != b)
    );
    let at = 6 * MIB as usize;
    assert_eq!(&data[at..at + 16], b"ec1-direct-write");
    assert!(data[at + 16..at + 512].iter().all(|b| *b == 0));
    // Everything else is as the host left it.
    assert!(data[expect.len()..at].iter().all(|b| *b == 0xa5));
    assert!(data[at + 512..].iter().all(|b| *b == 0xa5));
}

/// The limited drive's rate: 1 MiB per 1000 ms.
const LIMIT: u64 = MIB;
const MEDIA_SIZE: u64 = MIB;
const LIMITED_SIZE: u64 = 32 * MIB;

struct SharedVm {
    sock: PathBuf,
    dir: PathBuf,
    /// Guest device names (`vda`, ...) of the `media` and `limited` drives.
    media_dev: String,
    limited_dev: String,
}

/// Kills the shared ec1 and removes its directory when the test process exits (a
/// `static` is never dropped).
static SHARED_CLEANUP: Mutex<Option<(libc::pid_t, PathBuf)>> = Mutex::new(None);

extern "C" fn cleanup_shared() {
    let Some((pid, dir)) = SHARED_CLEANUP.lock().ok().and_then(|mut g| g.take()) else {
        return;
    };
    // SAFETY: signals and reaps our own child, by its id.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
            if Instant::now() > deadline {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A raw image of `size` bytes with `marker` at offset 0 and `tail` in its last sector.
fn media_image(path: &Path, size: u64, marker: &str, tail: &str) {
    let mut data = vec![0u8; size as usize];
    data[..marker.len()].copy_from_slice(marker.as_bytes());
    let end = size as usize - 512;
    data[end..end + tail.len()].copy_from_slice(tail.as_bytes());
    std::fs::write(path, data).unwrap();
}

/// The VM the rate limiter and media change tests share: a read-write `media` drive
/// (1 MiB, marker `EC1-MEDIA-AAAA`) and a `limited` drive (32 MiB) at 1 MiB/s.
fn shared() -> &'static SharedVm {
    static VM: OnceLock<SharedVm> = OnceLock::new();
    VM.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ec1-drv-shared")
            .tempdir()
            .unwrap()
            .keep();
        let (sock, child) = start_ec1(&dir, true);
        *SHARED_CLEANUP.lock().unwrap() = Some((child.id() as libc::pid_t, dir.clone()));
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(cleanup_shared) };
        let media = dir.join("media-a.img");
        media_image(&media, MEDIA_SIZE, "EC1-MEDIA-AAAA", "EC1-TAIL-AAAA");
        let limited = dir.join("limited.img");
        let f = std::fs::File::create(&limited).unwrap();
        f.set_len(LIMITED_SIZE).unwrap();
        boot(
            &sock,
            &[
                json!({"drive_id": "media", "path_on_host": media, "is_root_device": false}),
                json!({
                    "drive_id": "limited",
                    "path_on_host": limited,
                    "is_root_device": false,
                    "is_read_only": true,
                    "rate_limiter": {"bandwidth": {"size": LIMIT, "refill_time": 1000}}
                }),
            ],
        );
        // Which device is which: by size (in 512-byte sectors).
        let sizes = sh_ok(
            &sock,
            "for d in /sys/block/vd*; do echo ${d##*/} $(cat $d/size); done",
        );
        let dev_of = |bytes: u64| {
            sizes
                .lines()
                .find_map(|l| {
                    let (dev, n) = l.split_once(' ')?;
                    (n.trim().parse::<u64>().ok()? == bytes / 512).then(|| dev.to_string())
                })
                .unwrap_or_else(|| panic!("no guest disk of {bytes} bytes: {sizes}"))
        };
        SharedVm {
            media_dev: dev_of(MEDIA_SIZE),
            limited_dev: dev_of(LIMITED_SIZE),
            sock,
            dir,
        }
    })
}

/// Reads `mib` MiB from `/dev/<dev>` in the guest (64 KiB direct reads) after skipping
/// `skip_mib` MiB with the same reads (that empties the bucket); returns the rate of the
/// measured part in bytes per second, by the guest's clock.
fn guest_read_rate(v: &SharedVm, skip_mib: u64, mib: u64) -> f64 {
    let dev = &v.limited_dev;
    let out = sh_ok(
        &v.sock,
        &format!(
            "dd if=/dev/{dev} of=/dev/null bs=64k count={} iflag=direct 2>/dev/null; \
             a=$(cut -d' ' -f1 /proc/uptime); \
             dd if=/dev/{dev} of=/dev/null bs=64k skip={} count={} iflag=direct 2>/dev/null; \
             b=$(cut -d' ' -f1 /proc/uptime); echo $a $b",
            skip_mib * 16,
            skip_mib * 16,
            mib * 16
        ),
    );
    let t: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(t.len(), 2, "{out}");
    let secs = t[1] - t[0];
    assert!(secs > 0.0, "{out}");
    (mib * MIB) as f64 / secs
}

#[test]
fn rate_limited_drive_holds_its_limit_and_can_be_patched() {
    let _s = serial();
    let v = shared();
    let within = |rate: f64, limit: u64, what: &str| {
        let ratio = rate / limit as f64;
        assert!(
            (0.8..=1.2).contains(&ratio),
            "{what}: {rate:.0} B/s through a {limit} B/s limiter"
        );
    };
    // Past the first bucket (1 MiB), 4 MiB at 1 MiB/s.
    let t0 = Instant::now();
    let rate = guest_read_rate(v, 1, 4);
    eprintln!(
        "limited to 1 MiB/s: {:.0} KiB/s (took {:?} in all)",
        rate / 1024.0,
        t0.elapsed()
    );
    within(rate, LIMIT, "1 MiB/s");
    // A new limit on the running guest: 4 MiB/s.
    let faster = 4 * MIB;
    let (code, body) = patch(
        &v.sock,
        "/drives/limited",
        &json!({"drive_id": "limited", "rate_limiter": {"bandwidth": {"size": faster, "refill_time": 1000}}}),
    );
    assert_eq!(code, 204, "{body}");
    assert_eq!(
        drive_config(&v.sock, "limited")["rate_limiter"]["bandwidth"]["size"],
        faster
    );
    let rate = guest_read_rate(v, 4, 8);
    eprintln!("limited to 4 MiB/s: {:.0} KiB/s", rate / 1024.0);
    within(rate, faster, "4 MiB/s");
    // No limit at all.
    let (code, body) = patch(
        &v.sock,
        "/drives/limited",
        &json!({"drive_id": "limited", "rate_limiter": {}}),
    );
    assert_eq!(code, 204, "{body}");
    let rate = guest_read_rate(v, 0, 16);
    eprintln!("limit lifted: {:.0} KiB/s", rate / 1024.0);
    assert!(
        rate > 2.0 * faster as f64,
        "without a limiter the drive reads at {rate:.0} B/s, under twice the last limit"
    );
    assert_eq!(drive_config(&v.sock, "limited")["rate_limiter"], json!({}));
    // The drive is read-only to the guest.
    let (code, _, _) = sh(
        &v.sock,
        &format!(
            "echo x | dd of=/dev/{} bs=512 count=1 conv=notrunc oflag=direct",
            v.limited_dev
        ),
        Duration::from_secs(30),
    );
    assert_ne!(code, 0, "a write to a read-only drive succeeded");
}

/// The guest's view of the `media` drive: `len` bytes at sector `sector`, uncached.
fn media_read(v: &SharedVm, sector: u64, len: usize) -> String {
    sh_ok(
        &v.sock,
        &format!(
            "dd if=/dev/{} bs=512 skip={sector} count=1 iflag=direct 2>/dev/null | head -c {len}",
            v.media_dev
        ),
    )
}

#[test]
fn media_change_on_a_running_guest() {
    let _s = serial();
    let v = shared();
    let dir = tempfile::Builder::new()
        .prefix("ec1-drv-media")
        .tempdir()
        .unwrap();
    assert_eq!(media_read(v, 0, 14), "EC1-MEDIA-AAAA");
    // Same size: the guest's next reads come from the new file.
    let b = dir.path().join("media-b.img");
    media_image(&b, MEDIA_SIZE, "EC1-MEDIA-BBBB", "EC1-TAIL-BBBB");
    let (code, body) = patch(
        &v.sock,
        "/drives/media",
        &json!({"drive_id": "media", "path_on_host": b}),
    );
    assert_eq!(code, 204, "{body}");
    assert_eq!(media_read(v, 0, 14), "EC1-MEDIA-BBBB");
    assert_eq!(media_read(v, MEDIA_SIZE / 512 - 1, 13), "EC1-TAIL-BBBB");
    assert_eq!(
        drive_config(&v.sock, "media")["path_on_host"],
        b.to_str().unwrap()
    );
    // A bigger medium: the guest is told its new capacity.
    let c = dir.path().join("media-c.img");
    let c_size = 2 * MEDIA_SIZE;
    media_image(&c, c_size, "EC1-MEDIA-CCCC", "EC1-TAIL-CCCC");
    let (code, body) = patch(
        &v.sock,
        "/drives/media",
        &json!({"drive_id": "media", "path_on_host": c}),
    );
    assert_eq!(code, 204, "{body}");
    let sectors = wait_for(Duration::from_secs(10), || {
        let s = sh_ok(&v.sock, &format!("cat /sys/block/{}/size", v.media_dev));
        (s.trim() == (c_size / 512).to_string()).then_some(())
    });
    assert!(sectors.is_some(), "the guest did not see the new capacity");
    assert_eq!(media_read(v, 0, 14), "EC1-MEDIA-CCCC");
    assert_eq!(media_read(v, c_size / 512 - 1, 13), "EC1-TAIL-CCCC");
    // Guest writes go to the new file only.
    sh_ok(
        &v.sock,
        &format!(
            "echo -n guest-wrote-here | dd of=/dev/{} bs=512 seek=1 conv=sync,notrunc oflag=direct 2>/dev/null",
            v.media_dev
        ),
    );
    let data = std::fs::read(&c).unwrap();
    assert_eq!(&data[512..528], b"guest-wrote-here");
    let old = std::fs::read(&b).unwrap();
    assert!(
        old[512..1024].iter().all(|x| *x == 0),
        "the old medium was written"
    );
    // A missing file is refused and changes nothing.
    let missing = dir.path().join("missing.img");
    let (code, body) = patch(
        &v.sock,
        "/drives/media",
        &json!({"drive_id": "media", "path_on_host": missing}),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(media_read(v, 0, 14), "EC1-MEDIA-CCCC");
    assert_eq!(
        drive_config(&v.sock, "media")["path_on_host"],
        c.to_str().unwrap()
    );
    // Back to the first medium, so that the temporary files can go.
    let a = v.dir.join("media-a.img");
    let (code, body) = patch(
        &v.sock,
        "/drives/media",
        &json!({"drive_id": "media", "path_on_host": a}),
    );
    assert_eq!(code, 204, "{body}");
    assert_eq!(media_read(v, 0, 14), "EC1-MEDIA-AAAA");
}

#[test]
fn drive_requests_that_cannot_apply_on_a_running_guest_are_refused() {
    let _s = serial();
    let v = shared();
    let before = get_json(&v.sock, "/vm/config");
    let refused = |method: &str, path: &str, body: Value| {
        let (code, resp) = http(&v.sock, method, path, Some(&body.to_string()));
        assert_eq!(code, 400, "{method} {path} {body}: {resp}");
        assert!(resp.contains("fault_message"), "{resp}");
        resp
    };
    let resp = refused(
        "PATCH",
        "/drives/nosuch",
        json!({"drive_id": "nosuch", "path_on_host": v.dir.join("media-a.img")}),
    );
    assert!(resp.contains("nosuch"), "{resp}");
    refused(
        "PATCH",
        "/drives/media",
        json!({"drive_id": "limited", "rate_limiter": {}}),
    );
    // Drives are configured before boot only.
    refused(
        "PUT",
        "/drives/late",
        json!({"drive_id": "late", "path_on_host": v.dir.join("media-a.img"), "is_root_device": false}),
    );
    assert_eq!(get_json(&v.sock, "/vm/config"), before);
}

#[test]
fn bad_drive_configurations_are_refused_before_boot_and_change_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("ec1-drv-bad")
        .tempdir()
        .unwrap();
    let (sock, mut child) = start_ec1(dir.path(), false);
    let root = dir.path().join("root.img");
    std::fs::write(&root, vec![0u8; MIB as usize]).unwrap();
    let other = dir.path().join("other.img");
    std::fs::write(&other, vec![0u8; MIB as usize]).unwrap();
    let config = || get_json(&sock, "/vm/config");
    let refused = |method: &str, path: &str, body: Value, needle: &str| {
        let before = config();
        let (code, resp) = http(&sock, method, path, Some(&body.to_string()));
        assert_eq!(code, 400, "{method} {path} {body}: {resp}");
        assert!(
            resp.contains(needle),
            "{method} {path}: {resp} lacks {needle:?}"
        );
        assert_eq!(
            config(),
            before,
            "a refused {method} {path} changed the configuration"
        );
    };
    refused(
        "PUT",
        "/drives/rootfs",
        json!({"drive_id": "rootfs", "path_on_host": dir.path().join("missing.img"), "is_root_device": true}),
        "missing.img",
    );
    put(
        &sock,
        "/drives/rootfs",
        &json!({"drive_id": "rootfs", "path_on_host": root, "is_root_device": true, "is_read_only": true}),
    );
    refused(
        "PUT",
        "/drives/second",
        json!({"drive_id": "second", "path_on_host": other, "is_root_device": true}),
        "root block device already exists",
    );
    refused(
        "PUT",
        "/drives/other",
        json!({"drive_id": "mismatch", "path_on_host": other, "is_root_device": false}),
        "does not match",
    );
    refused(
        "PATCH",
        "/drives/rootfs",
        json!({"drive_id": "rootfs", "path_on_host": other}),
        "not supported before starting",
    );
    refused(
        "PATCH",
        "/drives/nosuch",
        json!({"drive_id": "nosuch", "rate_limiter": {}}),
        "not supported before starting",
    );
    // Replacing the root drive by id is fine, and a second, non-root drive follows it.
    put(
        &sock,
        "/drives/other",
        &json!({"drive_id": "other", "path_on_host": other, "is_root_device": false}),
    );
    let drives = config()["drives"].clone();
    assert_eq!(drives[0]["drive_id"], "rootfs");
    assert_eq!(drives[0]["is_root_device"], true);
    assert_eq!(drives[1]["drive_id"], "other");
    assert_eq!(drives.as_array().unwrap().len(), 2);
    stop(&mut child);
}

/// `make_root_image`'s filesystem as partition 1 (from sector 2048, type 0x83) of an
/// MBR disk with signature 0x0eaa91a0: the disk Firecracker users describe with
/// `"partuuid": "0eaa91a0-01"`. The table is written here (as `sfdisk` would with
/// `label: dos`, `label-id: 0x0eaa91a0`, `2048,,L`), so no partitioning tool is needed.
fn make_partitioned_root_image(dir: &Path, marker: &str) -> PathBuf {
    use std::io::{Seek, SeekFrom, Write};
    let fs = make_root_image(dir, marker);
    let fs_bytes = std::fs::read(&fs).unwrap();
    std::fs::remove_file(&fs).unwrap();
    assert_eq!(fs_bytes.len() % 512, 0);
    let start: u32 = 2048;
    let sectors = (fs_bytes.len() / 512) as u32;
    let mut mbr = [0u8; 512];
    mbr[440..444].copy_from_slice(&0x0eaa_91a0u32.to_le_bytes());
    let e = &mut mbr[446..462];
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS: use the LBAs
    e[4] = 0x83;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let img = dir.join("disk.img");
    let mut f = std::fs::File::create(&img).unwrap();
    f.write_all(&mbr).unwrap();
    f.seek(SeekFrom::Start(u64::from(start) * 512)).unwrap();
    f.write_all(&fs_bytes).unwrap();
    f.set_len(u64::from(start) * 512 + fs_bytes.len() as u64 + MIB)
        .unwrap();
    img
}

#[test]
fn root_drive_with_a_partuuid_mounts_that_partition() {
    let mut vm = OwnVm::new("ec1-drv-partuuid");
    let img = make_partitioned_root_image(vm.dir.path(), "ec1 partitioned root");
    let before = sha256(&img);
    boot(
        &vm.sock,
        &[json!({
            "drive_id": "rootfs",
            "path_on_host": img,
            "is_root_device": true,
            "is_read_only": true,
            "partuuid": "0eaa91a0-01"
        })],
    );
    let cmdline = sh_ok(&vm.sock, "cat /proc/cmdline");
    assert!(
        cmdline.contains("root=PARTUUID=0eaa91a0-01 ro"),
        "{cmdline}"
    );
    // Commands run on the partition (only it has the marker), not in the initramfs.
    assert_eq!(
        sh_ok(&vm.sock, "cat /etc/ec1-marker"),
        "ec1 partitioned root"
    );
    let mounts = sh_ok(&vm.sock, "grep ' / ' /proc/mounts");
    assert!(
        mounts.starts_with("/dev/vda1 / ext4 ro,"),
        "root mount: {mounts}"
    );
    vm.ctrl_alt_del();
    assert_eq!(sha256(&img), before, "the read-only root image changed");
}
