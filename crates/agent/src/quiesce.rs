//! Before the host stops the VM ([`ec1_proto::Msg::Quiesce`]): what commands wrote
//! reaches the drive images, and the filesystems on them are left clean, with no
//! journal to replay, as an unmount would leave them.
//!
//! A filesystem is remounted read-only, which writes back its data and journal and
//! marks it clean. Where a process still holds a file open for writing (a command's
//! daemon, the image's own init in hand-off mode) the remount is refused with `EBUSY`;
//! the filesystem is then frozen (`FIFREEZE`), which also writes everything back and
//! marks ext4 clean, and holds any later writer until the VM is gone.

use crate::init::mounts::mount;
use crate::sys::cvt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `_IOWR('X', 119, int)` from `linux/fs.h`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;

/// What [`quiesce`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quiesced {
    pub remounted: u32,
    pub frozen: u32,
}

/// A writable filesystem on a block device, from `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockMount {
    source: String,
    target: PathBuf,
}

/// Undoes the octal escapes (`\040` for a space, ...) of a `/proc/self/mounts` field.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The writable block-device mounts in `mounts` (`/proc/self/mounts`), the most recent
/// first, so that a filesystem mounted inside another is done before its parent.
fn writable_block_mounts(mounts: &str) -> Vec<BlockMount> {
    let mut found: Vec<BlockMount> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (source, target, _fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            let writable = opts.split(',').any(|o| o == "rw");
            (source.starts_with("/dev/") && writable).then(|| BlockMount {
                source: unescape(source),
                target: PathBuf::from(unescape(target)),
            })
        })
        .collect();
    found.reverse();
    found
}

/// Freezes the filesystem mounted on `target`.
fn freeze(target: &Path) -> io::Result<()> {
    let dir = std::fs::File::open(target)?;
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE on a descriptor we own; the kernel reads no argument for it,
    // and `arg` is a valid int that outlives the call.
    cvt(unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE as _, &mut arg) }).map(|_| ())
}

/// In hand-off mode: syncs every filesystem (what was written is on the drives even if
/// the shutdown that follows is cut short), then sends PID 1 — the image's own init —
/// SIGINT, the signal the kernel turns Ctrl-Alt-Del into: systemd starts
/// `ctrl-alt-del.target`, busybox and sysvinit run their `ctrlaltdel` entry; each
/// stops its services, unmounts the filesystems and reboots, which ends the guest.
/// Acts on the whole system it runs on: only the guest's agent calls it.
pub fn ask_init_to_shut_down() -> io::Result<()> {
    // SAFETY: sync has no memory effects.
    unsafe { libc::sync() };
    // SAFETY: kill has no memory effects.
    cvt(unsafe { libc::kill(1, libc::SIGINT) }).map(|_| ())
}

/// Syncs, then remounts read-only (or, if busy, freezes) every writable block-device
/// filesystem. Fails naming the first filesystem that could be neither. It acts on the
/// whole system it runs on: only the guest's agent calls it, never a test on the host.
pub fn quiesce() -> io::Result<Quiesced> {
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mut done = Quiesced::default();
    for m in writable_block_mounts(&mounts) {
        let flags = libc::MS_REMOUNT | libc::MS_RDONLY;
        match mount(&m.source, &m.target, None, flags, None) {
            Ok(()) => done.remounted += 1,
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                freeze(&m.target).map_err(|f| {
                    io::Error::new(
                        f.kind(),
                        format!(
                            "{} on {} is busy ({e}) and could not be frozen: {f}",
                            m.source,
                            m.target.display()
                        ),
                    )
                })?;
                done.frozen += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writable_block_mounts_most_recent_first() {
        let mounts = "/dev/vda / ext4 rw,relatime 0 0\n\
                      proc /proc proc rw,nosuid 0 0\n\
                      devtmpfs /dev devtmpfs rw,size=1k 0 0\n\
                      /dev/vdb /mnt/ro ext4 ro,relatime 0 0\n\
                      /dev/vdc /mnt/my\\040data ext4 rw 0 0\n\
                      tmpfs /tmp tmpfs rw 0 0\n";
        let m = writable_block_mounts(mounts);
        assert_eq!(
            m,
            vec![
                BlockMount {
                    source: "/dev/vdc".into(),
                    target: "/mnt/my data".into()
                },
                BlockMount {
                    source: "/dev/vda".into(),
                    target: "/".into()
                },
            ]
        );
    }

    #[test]
    fn escapes_are_undone_and_stray_backslashes_kept() {
        assert_eq!(unescape("a\\040b\\011c"), "a b\tc");
        assert_eq!(unescape("a\\b\\09"), "a\\b\\09");
        assert_eq!(unescape("\\134"), "\\");
    }
}
