//! Root drive modes: mount the image and make it `/` (switch_root style: the
//! initramfs cannot be pivoted away), optionally handing PID 1 over to its init.

use super::cmdline::BootConfig;
use super::mounts::mount;
use super::partuuid;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

const NEW_ROOT: &str = "/newroot";
/// How long the root device (or the disk holding a `PARTUUID=` partition) may take to
/// appear.
const ROOT_WAIT: Duration = Duration::from_secs(10);

/// Filesystem types to try when none is given: what the kernel has, block-backed only.
fn candidate_types(proc_filesystems: &str) -> Vec<String> {
    proc_filesystems
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Mounts the root drive on `/newroot`, moves the API filesystems into it and makes it
/// the root of this process. The image is not written to (read-only unless `rw`).
pub fn switch_to_root_drive(c: &BootConfig, move_tmp: bool) -> io::Result<()> {
    let root = c.root.as_deref().expect("root mode has a device");
    let deadline = Instant::now() + ROOT_WAIT;
    let dev = &resolve_root(root, deadline)?;
    let _ = std::fs::create_dir_all(NEW_ROOT);
    let flags = if c.read_only { libc::MS_RDONLY } else { 0 };
    let types = match &c.rootfstype {
        Some(t) => vec![t.clone()],
        None => candidate_types(&std::fs::read_to_string("/proc/filesystems").unwrap_or_default()),
    };
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        "no block filesystem type in the kernel",
    );
    let mut mounted = false;
    for t in &types {
        let data = mount_data(t, c.read_only, c.rootflags.as_deref());
        match mount(dev, Path::new(NEW_ROOT), Some(t), flags, data.as_deref()) {
            Ok(()) => {
                mounted = true;
                crate::debug!("mounted {dev} as {t}");
                break;
            }
            Err(e) => last = e,
        }
    }
    if !mounted {
        return Err(last);
    }
    let mut moves = vec!["/dev", "/proc", "/sys", "/run"];
    if move_tmp {
        moves.push("/tmp");
    }
    for m in moves {
        let target = Path::new(NEW_ROOT).join(&m[1..]);
        if !target.is_dir() {
            // Creating it would change the image: do without.
            crate::warn!("{} has no {m}; leaving it unmounted there", dev);
            continue;
        }
        if let Err(e) = mount(m, &target, None, libc::MS_MOVE, None) {
            crate::warn!("{e}");
        }
    }
    std::env::set_current_dir(NEW_ROOT)?;
    mount(".", Path::new("/"), None, libc::MS_MOVE, None)?;
    let dot = CString::new(".").unwrap();
    // SAFETY: a valid C string; chroot only changes this process's root.
    crate::sys::cvt(unsafe { libc::chroot(dot.as_ptr()) })?;
    std::env::set_current_dir("/")?;
    Ok(())
}

/// The mount data for a root drive of type `fstype`: the user's `rootflags`, plus
/// `noload` for a read-only ext3/ext4 root. Read-only means read-only: a journal that
/// needs recovery is not replayed (which would write to the image, and which the kernel
/// refuses on a read-only device), the filesystem is seen as its last commit left it.
fn mount_data(fstype: &str, read_only: bool, rootflags: Option<&str>) -> Option<String> {
    let journaled = fstype == "ext4" || fstype == "ext3";
    let user = rootflags.unwrap_or("");
    let chose = user.split(',').any(|f| f == "noload" || f == "norecovery");
    match (read_only && journaled && !chose, user.is_empty()) {
        (true, true) => Some("noload".into()),
        (true, false) => Some(format!("{user},noload")),
        (false, _) => rootflags.map(str::to_string),
    }
}

/// The device node `root` (`/dev/vda` or `PARTUUID=...[/PARTNROFF=n]`) names, once it
/// exists; an error if it does not by `deadline`.
fn resolve_root(root: &str, deadline: Instant) -> io::Result<String> {
    match partuuid::parse_spec(root) {
        Ok(Some(spec)) => return partuuid::resolve(&spec, deadline),
        Ok(None) => {}
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
    }
    while !Path::new(root).exists() {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("root device {root} did not appear within {ROOT_WAIT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(root.to_string())
}

/// Checks that `init` can be executed, before anything irrevocable.
pub fn check_init(init: &str) -> io::Result<()> {
    let c = CString::new(Path::new(init).as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid C string; access only inspects the file.
    crate::sys::cvt(unsafe { libc::access(c.as_ptr(), libc::X_OK) })
        .map(|_| ())
        .map_err(|e| io::Error::new(e.kind(), format!("init {init}: {e}")))
}

/// Forks: the child returns (and becomes the agent); this process (PID 1) executes
/// `init` and never returns. Call before any thread exists.
pub fn hand_off(init: &str) -> io::Result<()> {
    // SAFETY: the process is single-threaded here, so the child may run arbitrary code.
    let pid = crate::sys::cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        // The agent: its own session, out of the way of the init's job control.
        // SAFETY: setsid has no memory effects.
        unsafe { libc::setsid() };
        return Ok(());
    }
    let c = CString::new(init).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let argv = [c.as_ptr(), std::ptr::null()];
    // SAFETY: argv is a NULL-terminated array of valid C strings; on success execv
    // does not return. The environment is the kernel's, as for any init.
    unsafe { libc::execv(c.as_ptr(), argv.as_ptr()) };
    let e = io::Error::last_os_error();
    crate::warn!("cannot execute {init}: {e}; rebooting");
    super::power::shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_journaled_roots_are_not_replayed() {
        assert_eq!(mount_data("ext4", true, None).as_deref(), Some("noload"));
        assert_eq!(
            mount_data("ext3", true, Some("errors=remount-ro")).as_deref(),
            Some("errors=remount-ro,noload")
        );
        assert_eq!(
            mount_data("ext4", true, Some("norecovery")).as_deref(),
            Some("norecovery")
        );
        assert_eq!(mount_data("ext4", false, None), None);
        assert_eq!(mount_data("ext4", false, Some("x")).as_deref(), Some("x"));
        assert_eq!(mount_data("vfat", true, None), None);
    }

    #[test]
    fn only_block_filesystems_are_tried() {
        let pf = "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\text2\nnodev\tproc\n\tvfat\n";
        assert_eq!(candidate_types(pf), vec!["ext4", "ext2", "vfat"]);
    }

    #[test]
    fn malformed_partuuid_roots_fail_at_once() {
        let start = Instant::now();
        let e = resolve_root("PARTUUID=not-a-uuid", start + ROOT_WAIT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("PARTUUID=not-a-uuid"), "{e}");
        assert!(start.elapsed() < ROOT_WAIT);
    }

    #[test]
    fn missing_devices_time_out_with_their_name() {
        let e = resolve_root("/nonexistent/vdz", Instant::now()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vdz"), "{e}");
    }

    #[test]
    fn init_must_be_executable() {
        assert!(check_init("/bin/sh").is_ok());
        let e = check_init("/nonexistent/init").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/init"));
    }
}
