//! The filesystems every Linux user space expects, mounted by PID 1.

use crate::sys::cvt;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One `mount(2)`, with the error naming what failed.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let src = c(source)?;
    let tgt = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let ty = fstype.map(c).transpose()?;
    let d = data.map(c).transpose()?;
    // SAFETY: every pointer is either null or a valid NUL-terminated string that lives
    // across the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    cvt(r).map(|_| ()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "mounting {source} ({}) on {}: {e}",
                fstype.unwrap_or("-"),
                target.display()
            ),
        )
    })
}

/// The standard mounts, in order: (source, target, type, flags, data).
const BASICS: &[(&str, &str, &str, libc::c_ulong, Option<&str>)] = &[
    (
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    ),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    ),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666"),
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    ),
    (
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    ),
];

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /tmp and /run (creating the mount
/// points) and the /dev/fd, /dev/std* links. Returns what failed; the agent goes on
/// without it.
pub fn mount_basics() -> Vec<io::Error> {
    mount_basics_at(Path::new("/"))
}

/// [`mount_basics`] under `root` instead of `/` (tests use a private mount namespace).
pub fn mount_basics_at(root: &Path) -> Vec<io::Error> {
    let mut errs = Vec::new();
    for &(src, tgt, ty, flags, data) in BASICS {
        let t = root.join(&tgt[1..]);
        let _ = std::fs::create_dir_all(&t);
        if let Err(e) = mount(src, &t, Some(ty), flags, data) {
            if e.raw_os_error() != Some(libc::EBUSY) {
                errs.push(e);
            }
        }
    }
    for (link, to) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, root.join(link));
    }
    errs
}

/// Makes sure fds 0, 1 and 2 are open (on the console, else /dev/null), so that no
/// file the agent opens later lands on them and receives stray console output.
pub fn ensure_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        for dev in [c"/dev/console", c"/dev/null"] {
            // SAFETY: `dev` is a valid C string; open returns a new fd or -1.
            let n = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
            if n >= 0 {
                if n != fd {
                    // SAFETY: both are valid descriptors; dup2 replaces `fd`.
                    unsafe {
                        libc::dup2(n, fd);
                        libc::close(n);
                    }
                }
                break;
            }
        }
    }
}
