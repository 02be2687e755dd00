//! The jail's filesystem: a mount namespace of its own whose root is the jail
//! directory, with what the VMM and its engine need, and nothing of the host else.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{err, JailError};
use crate::privileges::cvt;

fn cstr(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| JailError(format!("{} contains a NUL byte", p.display())))
}

fn mount(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), JailError> {
    let src_c = src.map(cstr).transpose()?;
    let dst_c = cstr(dst)?;
    let type_c = fstype.map(|t| CString::new(t).unwrap_or_default());
    // SAFETY: NUL-terminated strings (or null) that outlive the call; no data argument.
    cvt(unsafe {
        libc::mount(
            src_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            dst_c.as_ptr(),
            type_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            std::ptr::null(),
        )
    })
    .map_err(err(&format!("mounting {}", dst.display())))
}

/// The character devices a jailed VMM may open: `(path in the jail, major, minor,
/// owned by the jailed user)`. As Firecracker's jailer makes `/dev/kvm` and
/// `/dev/net/tun`; the rest are what any program expects.
const DEVICES: &[(&str, u32, u32, bool)] = &[
    ("dev/null", 1, 3, false),
    ("dev/zero", 1, 5, false),
    ("dev/urandom", 1, 9, false),
    ("dev/kvm", 10, 232, true),
    ("dev/net/tun", 10, 200, true),
];

fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), JailError> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .map_err(err(&format!("giving {} to {uid}:{gid}", p.display())))
}

/// Makes the jail's directories and device nodes, enters a new mount namespace and
/// binds the host's `/usr` read-only into it. `/dev/kvm` is made only if `with_kvm`:
/// the host's KVM is usable hardware virtualization (the jail has no `/sys` in which
/// the engine could see a nested PVM KVM, so it must not find a `/dev/kvm` there).
pub fn prepare(root: &Path, uid: u32, gid: u32, with_kvm: bool) -> Result<(), JailError> {
    for (dir, mode, own) in [
        ("dev/net", 0o755, false),
        ("proc", 0o555, false),
        ("usr", 0o755, false),
        ("tmp", 0o1777, false),
        ("run", 0o755, true),
        ("cache", 0o700, true),
    ] {
        let p = root.join(dir);
        std::fs::create_dir_all(&p).map_err(err(&format!("creating {}", p.display())))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(err(&format!("setting the mode of {}", p.display())))?;
        if own {
            chown(&p, uid, gid)?;
        }
    }
    for (dev, major, minor, own) in DEVICES {
        if *dev == "dev/kvm" && !with_kvm {
            continue;
        }
        let p = root.join(dev);
        let _ = std::fs::remove_file(&p);
        let c = cstr(&p)?;
        // SAFETY: mknod of a character device at a path inside the jail.
        cvt(unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(*major, *minor),
            )
        })
        .map_err(err(&format!("creating {}", p.display())))?;
        std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode(if *own { 0o600 } else { 0o666 }),
        )
        .map_err(err(&format!("setting the mode of {}", p.display())))?;
        if *own {
            chown(&p, uid, gid)?;
        }
    }
    // The host's top-level links into /usr (merged /usr: /bin -> usr/bin, ...).
    for name in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
        if let Ok(target) = std::fs::read_link(Path::new("/").join(name)) {
            let link = root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(&target, &link)
                    .map_err(err(&format!("linking {}", link.display())))?;
            }
        }
    }
    // SAFETY: unshare(CLONE_NEWNS) gives this process a copy of the mount table.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNS) })
        .map_err(err("entering a new mount namespace"))?;
    // Nothing done here propagates back to the host.
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE)?;
    // pivot_root needs the new root to be a mount point.
    mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC)?;
    let usr = root.join("usr");
    mount(
        Some(Path::new("/usr")),
        &usr,
        None,
        libc::MS_BIND | libc::MS_REC,
    )?;
    mount(
        None,
        &usr,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
    )?;
    Ok(())
}

/// Mounts the jail's `/proc` (in the PID namespace the process is in by now) and makes
/// the jail the root.
pub fn enter(root: &Path) -> Result<(), JailError> {
    mount(
        Some(Path::new("proc")),
        &root.join("proc"),
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    std::env::set_current_dir(root).map_err(err(&format!("entering {}", root.display())))?;
    let old = root.join("old_root");
    std::fs::create_dir_all(&old).map_err(err("creating old_root"))?;
    let (new_c, old_c) = (
        CString::new(".").unwrap_or_default(),
        CString::new("old_root").unwrap_or_default(),
    );
    // SAFETY: pivot_root with NUL-terminated paths; it changes this namespace's root.
    cvt(unsafe {
        libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) as libc::c_int
    })
    .map_err(err("pivot_root into the jail"))?;
    // SAFETY: detaches the old root from this namespace.
    cvt(unsafe { libc::umount2(old_c.as_ptr(), libc::MNT_DETACH) })
        .map_err(err("detaching the host's root"))?;
    let _ = std::fs::remove_dir("/old_root");
    std::env::set_current_dir("/").map_err(err("entering /"))?;
    Ok(())
}
