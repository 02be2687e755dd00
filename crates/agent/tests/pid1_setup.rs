//! PID 1's set-up code on the host, in a child process with private mount, network and
//! host-name namespaces (so nothing of the host changes): the mounts, loopback, host
//! name and shutdown-signal handling the agent does first thing in a guest.
//!
//! The test re-runs its own binary as the helper (`EC1_PID1_HELPER=1`): namespaces are
//! per process, and the helper must be single-threaded to `unshare` safely.

use std::path::Path;
use std::process::Command;

const HELPER: &str = "EC1_PID1_HELPER";

fn helper(root: &Path) -> Result<(), String> {
    use ec1_agent::init::{mounts, net, power};
    // SAFETY: unshare only changes this (single-threaded) process's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWUTS) } != 0 {
        return Err(format!("unshare: {}", std::io::Error::last_os_error()));
    }
    // Keep the mounts below from propagating to the host.
    mounts::mount(
        "none",
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| e.to_string())?;
    let errs = mounts::mount_basics_at(root);
    if !errs.is_empty() {
        return Err(format!("{errs:?}"));
    }
    // Each mount point has the filesystem type it should (statfs magic numbers).
    for (m, magic) in [
        ("proc", 0x9fa0i64),
        ("sys", 0x6265_6572),
        ("dev", 0x0102_1994), // devtmpfs reports tmpfs's magic
        ("dev/pts", 0x1cd1),
        ("dev/shm", 0x0102_1994),
        ("tmp", 0x0102_1994),
        ("run", 0x0102_1994),
    ] {
        let p = root.join(m);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: statfs is plain data; the path is a valid C string.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != magic {
            return Err(format!(
                "{} is not mounted (type {:#x})",
                p.display(),
                st.f_type
            ));
        }
    }
    if !root.join("proc/self/status").exists() || !root.join("dev/null").exists() {
        return Err("proc or devtmpfs is empty".into());
    }
    if std::fs::read_link(root.join("dev/fd")).map_err(|e| e.to_string())?
        != Path::new("/proc/self/fd")
    {
        return Err("/dev/fd is not a link to /proc/self/fd".into());
    }
    // Mounting the same again is fine (EBUSY is ignored), a bad target is reported.
    let e = mounts::mount("tmpfs", &root.join("no/such/dir"), Some("tmpfs"), 0, None).unwrap_err();
    if !e.to_string().contains("no/such/dir") {
        return Err(format!("error does not name the target: {e}"));
    }
    mounts::ensure_stdio();

    net::loopback_up().map_err(|e| format!("lo: {e}"))?;
    let flags = std::fs::read_to_string("/sys/class/net/lo/flags").unwrap_or_default();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    // /sys here is the host's view; the namespace's lo is checked with an ioctl-free
    // route: a UDP socket can bind to 127.0.0.1 only once lo is up.
    let _ = flags;
    std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("lo is not usable: {e}"))?;
    net::set_hostname("ec1-helper").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    // SAFETY: gethostname writes at most `buf.len()` bytes.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if !buf.starts_with(b"ec1-helper\0") {
        return Err("host name not set".into());
    }

    power::install_handlers().map_err(|e| e.to_string())?;
    for sig in [libc::SIGUSR2, libc::SIGHUP, libc::SIGTERM] {
        // SAFETY: raising a signal we installed a handler for.
        unsafe { libc::raise(sig) };
        if power::next_signal() != Some(sig) {
            return Err(format!("signal {sig} was not reported"));
        }
    }
    Ok(())
}

#[test]
fn pid1_setup_in_private_namespaces() {
    if std::env::var_os(HELPER).is_some() {
        let root = std::path::PathBuf::from(std::env::var_os("EC1_PID1_ROOT").unwrap());
        match helper(&root) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("helper: {e}");
                std::process::exit(1);
            }
        }
    }
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pid1_setup_in_private_namespaces",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HELPER, "1")
        .env("EC1_PID1_ROOT", d.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helper failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
