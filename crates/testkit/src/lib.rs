//! Shared support for ec1's integration tests.
//!
//! Tests boot real guests, so they need a kernel ([`kernel`]) and something to run as
//! `/init`. [`test_initramfs`] packs a tiny static program the project owns
//! (`fixtures/test_init.rs`, built with plain `rustc` and cached by content) whose
//! behaviour the kernel command line picks (`ec1test.action=...`).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod debian;
pub use debian::{copy_image, debian_image, debian_mirror};

const TEST_INIT_SOURCE: &str = include_str!("../fixtures/test_init.rs");

/// The kernel tests boot: `$EC1_KERNEL`, else the cached default kernel. Panics with
/// how to get one: a test that needs a guest must fail, not skip, without it.
pub fn kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("EC1_KERNEL") {
        return PathBuf::from(k);
    }
    ec1_guest::kernel::path(ec1_engine::Arch::X86_64).unwrap_or_else(|e| {
        panic!("no guest kernel for the tests ({e}); run `ec1 kernel build` or set EC1_KERNEL")
    })
}

/// The arm64 kernel tests boot: `$EC1_KERNEL_AARCH64`, else the cached default arm64
/// kernel (`ec1 kernel build --arch aarch64`, which the README's set-up runs).
pub fn kernel_aarch64() -> PathBuf {
    if let Some(k) = std::env::var_os("EC1_KERNEL_AARCH64") {
        return PathBuf::from(k);
    }
    ec1_guest::kernel::path(ec1_engine::Arch::Aarch64).unwrap_or_else(|e| {
        panic!("no arm64 guest kernel for the tests ({e}); run `ec1 kernel build --arch aarch64` or set EC1_KERNEL_AARCH64")
    })
}

/// The arm64 busybox of arm64 guests' initramfs (fetched with their kernel).
pub fn busybox_aarch64() -> PathBuf {
    ec1_guest::initramfs::Options::for_arch(ec1_engine::Arch::Aarch64)
        .expect("a cache directory")
        .busybox
}

/// A per-workspace scratch directory for built test artefacts.
fn artefact_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testkit");
    std::fs::create_dir_all(&d).expect("creating target/testkit");
    d
}

/// A suffix for scratch files that no other process or thread building the same
/// artefact uses: tests run on several threads and may all find the cache cold.
fn scratch_suffix() -> String {
    format!("{}-{:?}", std::process::id(), std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
}

/// The SHA-256 of `bytes` in lower-case hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn short_hash(bytes: &[u8]) -> String {
    sha256_hex(bytes)[..16].to_string()
}

/// Builds `fixtures/test_init.rs` into a static binary (once per source version).
pub fn test_init_binary() -> PathBuf {
    static_binary("test-init", TEST_INIT_SOURCE)
}

/// Builds `fixtures/vsock_tool.rs`, a static AF_VSOCK client/server to copy into a
/// guest (see its header for the commands), once per source version.
pub fn vsock_tool_binary() -> PathBuf {
    static_binary("vsock-tool", include_str!("../fixtures/vsock_tool.rs"))
}

/// Builds a one-file Rust program without crates into a static binary, cached by the
/// hash of its source.
fn static_binary(name: &str, source: &str) -> PathBuf {
    let out = artefact_dir().join(format!("{name}-{}", short_hash(source.as_bytes())));
    if out.is_file() {
        return out;
    }
    let src = artefact_dir().join(format!("{name}-{}.rs", scratch_suffix()));
    std::fs::write(&src, source).expect("writing a test program's source");
    let tmp = out.with_extension(format!("tmp{}", scratch_suffix()));
    let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args([
            "-C",
            "target-feature=+crt-static",
            "-C",
            "opt-level=s",
            "-C",
            "strip=symbols",
        ])
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("running rustc for a test program");
    let _ = std::fs::remove_file(&src);
    assert!(status.success(), "rustc failed to build {name}");
    std::fs::rename(&tmp, &out).expect("moving a test program into place");
    out
}

/// Where [`vsock_tool_initramfs`] puts the vsock tool in the guest.
pub const VSOCK_TOOL_GUEST_PATH: &str = "/opt/vsock_tool";

/// A newc archive holding only [`vsock_tool_binary`] at [`VSOCK_TOOL_GUEST_PATH`]: an
/// initrd for a guest whose `/init` comes from elsewhere (ec1's injected agent).
pub fn vsock_tool_initramfs() -> PathBuf {
    let tool = std::fs::read(vsock_tool_binary()).expect("reading the vsock tool");
    cached_archive("vsock-tool", &tool, |w| {
        w.dir("opt", 0o755);
        w.file(&VSOCK_TOOL_GUEST_PATH[1..], 0o755, &tool);
    })
}

/// A newc archive built by `build`, cached under `<prefix>-<hash of key>.cpio` and
/// written through a temporary name so that concurrent tests never see half of it.
fn cached_archive(
    prefix: &str,
    key: &[u8],
    build: impl FnOnce(&mut ec1_guest::initramfs::NewcWriter),
) -> PathBuf {
    let out = artefact_dir().join(format!("{prefix}-{}.cpio", short_hash(key)));
    if out.is_file() {
        return out;
    }
    let mut w = ec1_guest::initramfs::NewcWriter::new();
    build(&mut w);
    let tmp = out.with_extension(format!("tmp{}", scratch_suffix()));
    std::fs::write(&tmp, w.finish()).expect("writing a test archive");
    std::fs::rename(&tmp, &out).expect("moving a test archive into place");
    out
}

/// A newc initramfs whose `/init` is the test init; cached by content.
pub fn test_initramfs() -> PathBuf {
    let init = std::fs::read(test_init_binary()).expect("reading the test init");
    cached_archive("test-initramfs", &init, |w| {
        w.dir("proc", 0o755);
        w.dir("dev", 0o755);
        w.char_dev("dev/console", 0o600, 5, 1);
        w.file("init", 0o755, &init);
    })
}

/// A newc initramfs whose `/init` runs the shell script `script` with the host's static
/// busybox (`ec1_guest::initramfs::DEFAULT_BUSYBOX`, Debian's `busybox-static`), its
/// applets on `PATH` and `/proc`, `/sys` and `/dev` mounted: a guest for launch forms
/// that bring their own init (no ec1 agent), which reports on the serial console.
/// Cached by content.
pub fn script_initramfs(script: &str) -> PathBuf {
    let busybox =
        std::fs::read(ec1_guest::initramfs::DEFAULT_BUSYBOX).expect("reading the host's busybox");
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n{script}\n"
    );
    let mut key = busybox.clone();
    key.extend_from_slice(init.as_bytes());
    cached_archive("script-initramfs", &key, |w| {
        for d in ["bin", "proc", "sys", "dev", "tmp"] {
            w.dir(d, 0o755);
        }
        w.char_dev("dev/console", 0o600, 5, 1);
        w.file("bin/busybox", 0o755, &busybox);
        w.file("init", 0o755, init.as_bytes());
    })
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PIDs of live processes whose command line contains `needle` (zombies excluded).
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = status
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmd).contains(needle)
        })
        .collect()
}

/// The children of `pid` whose command name (`/proc/PID/status`'s `Name`) starts with
/// `prefix`: the QEMU an ec1 under test runs, found from the host.
pub fn children_named(pid: u32, prefix: &str) -> Vec<u32> {
    let field = |p: u32, name: &str| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| field(p, "PPid:") == pid.to_string() && field(p, "Name:").starts_with(prefix))
        .collect()
}

/// One HTTP/1.1 request over a Unix socket, as a Firecracker client sends it; returns
/// the status code and the body. Bounded by a 60 s read timeout (InstanceStart waits
/// for a boot).
pub fn http(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Spawns `cmd` so that it is killed when the test process exits, even if the test
/// harness never drops the child (a shared fixture in a `static`).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked dies, so the fork happens on
/// one thread that lives as long as the process.
pub fn spawn_tied(mut cmd: Command) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};
    type Job = (Command, Sender<std::io::Result<std::process::Child>>);
    static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = channel();
    spawner.lock().unwrap().send((cmd, tx)).unwrap();
    rx.recv().unwrap().expect("spawning a test child")
}

/// `len` bytes that look random (xorshift64 from `seed`), the same on every run: test
/// payloads that both sides can check and that no layer can compress away.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A new temporary directory (named `prefix...`) that lives until the test process
/// exits: for a fixture shared by a file's tests, which sits in a `static` and so is
/// never dropped.
pub fn shared_temp_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a temporary directory")
        .keep();
    remove_at_exit(dir.clone());
    dir
}

/// Removes `dir` when the test process exits: for a fixture shared by a file's tests,
/// which lives in a `static` and so is never dropped.
pub fn remove_at_exit(dir: PathBuf) {
    use std::sync::{Mutex, Once};
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static ONCE: Once = Once::new();
    DIRS.lock().unwrap().push(dir);
    extern "C" fn cleanup() {
        if let Ok(dirs) = DIRS.lock() {
            for d in dirs.iter() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    ONCE.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with atexit.
        unsafe { libc::atexit(cleanup) };
    });
}

/// Runs `cmd` to the end with `input` on its stdin (a pipe, closed after it) and its
/// stdout and stderr captured. The input is written on a thread, so a command that
/// fills its output before reading all of its input cannot deadlock.
pub fn output_with_input(mut cmd: Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning a test command");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The command may exit without reading it all.
        let _ = stdin.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .expect("waiting for a test command");
    writer.join().unwrap();
    out
}

/// Lays out a root filesystem for a busybox guest at `tree`: the mount points the
/// agent moves into a root (`dev proc sys run tmp`) and `dirs`, and the static busybox
/// ec1 puts in its initramfs (`EC1_BUSYBOX`, else Debian's `busybox-static`) as
/// `/bin/busybox` with each of `applets` linked to it.
pub fn busybox_root_tree(tree: &Path, dirs: &[&str], applets: &[&str]) {
    for d in ["bin", "dev", "proc", "sys", "run", "tmp"]
        .iter()
        .chain(dirs)
    {
        std::fs::create_dir_all(tree.join(d)).expect("creating a root tree");
    }
    let busybox = ec1_guest::initramfs::Options::from_env()
        .expect("this test needs a static busybox: apt-get install busybox-static")
        .busybox;
    std::fs::copy(busybox, tree.join("bin/busybox")).expect("copying busybox");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet))
            .expect("linking a busybox applet");
    }
}

/// Marks the ext4 image `img` as needing journal recovery, as a guest that was not
/// shut down cleanly leaves it (`debugfs -w -R 'feature needs_recovery'`).
pub fn mark_needs_recovery(img: &Path) {
    let out = Command::new("debugfs")
        .args(["-w", "-R", "feature needs_recovery"])
        .arg(img)
        .output()
        .expect("this test needs debugfs: apt-get install e2fsprogs");
    assert!(
        out.status.success(),
        "debugfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `img`, an ext4 filesystem of `size` (`mkfs.ext4` units, e.g. `16M`) holding
/// the files under `tree`. Panics with what to install when e2fsprogs is missing.
pub fn ext4_image(tree: &Path, img: &Path, size: &str) {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .arg(img)
        .arg(size)
        .output()
        .expect("this test needs mkfs.ext4: apt-get install e2fsprogs");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_holds_the_init() {
        let cpio = std::fs::read(test_initramfs()).unwrap();
        let entries = ec1_guest::initramfs::parse(&cpio).unwrap();
        assert!(entries.iter().any(|e| e.0 == "init"), "no /init");
    }

    #[test]
    fn wait_for_times_out_and_succeeds() {
        assert_eq!(wait_for(Duration::from_millis(50), || None::<()>), None);
        let mut n = 0;
        assert_eq!(
            wait_for(Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
    }

    #[test]
    fn finds_this_process() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(processes_matching(name).contains(&me));
        assert!(!processes_matching("ec1-no-such-process-xyz-123").contains(&me));
    }
}
