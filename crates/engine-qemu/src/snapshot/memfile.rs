//! Writing Firecracker's `mem_file_path`: a copy of the guest's RAM file.
//!
//! A guest started for snapshotting has its RAM in a shared file (`memory-backend-file`,
//! `share=on`), so the paused guest's memory *is* that file. The snapshot's memory
//! file must be a copy, not a hard link: Firecracker lets a guest resume after a
//! snapshot, and the resumed guest keeps writing its RAM file, which would change a
//! linked snapshot under its clones. The copy is as cheap as the filesystem allows: a
//! reflink (`FICLONE`, instant on Btrfs and XFS), else only the extents that hold data
//! (`SEEK_DATA`/`SEEK_HOLE` with `copy_file_range`), so a 1 GiB guest that touched
//! 60 MiB costs 60 MiB. When the snapshot's memory file is the RAM file itself (the
//! caller stops the guest right after, as ec1's templates do) nothing is copied.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `FICLONE`: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// How the memory file was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemCopy {
    /// The destination is the RAM file itself.
    InPlace,
    /// A reflink of the whole file.
    Reflinked,
    /// The data extents were copied: this many bytes.
    Copied(u64),
}

/// Whether `a` and `b` name the same file (both must exist).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// A temporary name beside `path`, for an atomic rename into place.
pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.ec1-tmp-{}", std::process::id()))
}

/// Copies `src` (the RAM file) to `dst`, keeping holes; `dst` appears whole or not at
/// all. Does nothing if they are the same file.
///
/// The data is synced before the file gets its name (and the directory after), so a
/// snapshot's state file, written after this returns, never names a memory file a
/// crash could have torn.
pub fn copy_memory(src: &Path, dst: &Path) -> io::Result<MemCopy> {
    if same_file(src, dst) {
        // The guest's RAM file itself: what the paused guest wrote through its
        // mapping is in the page cache until synced.
        ec1_engine::durable::sync_file(dst)?;
        return Ok(MemCopy::InPlace);
    }
    let from = File::open(src)?;
    let tmp = temp_beside(dst);
    let result = (|| {
        let to = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // SAFETY: both descriptors are open and owned by this function; FICLONE reads
        // only the integer argument.
        let cloned = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) } == 0;
        let how = if cloned {
            MemCopy::Reflinked
        } else {
            let len = from.metadata()?.len();
            to.set_len(len)?;
            MemCopy::Copied(copy_extents(&from, &to, len)?)
        };
        to.sync_all()?;
        ec1_engine::durable::rename_durably(&tmp, dst)?;
        Ok(how)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The next data extent of `f` at or after `pos`, as `(start, end)`; `None` past the
/// last one.
fn next_extent(f: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    if pos >= len {
        return Ok(None);
    }
    // SAFETY: lseek on an open descriptor; no memory is passed.
    let start = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, libc::SEEK_DATA) };
    if start < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            // No SEEK_DATA here: treat the rest as data.
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some((pos, len))),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(f.as_raw_fd(), start, libc::SEEK_HOLE) };
    if end < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((start as u64, (end as u64).min(len))))
}

/// Copies every data extent of `from` (of length `len`) to the same offsets of `to`;
/// returns the bytes copied.
fn copy_extents(from: &File, to: &File, len: u64) -> io::Result<u64> {
    let mut pos = 0;
    let mut copied = 0;
    while let Some((start, end)) = next_extent(from, pos, len)? {
        copy_range(from, to, start, end)?;
        copied += end - start;
        pos = end;
    }
    Ok(copied)
}

/// Copies bytes `start..end` at the same offsets, in the kernel where it can.
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let mut off = start;
    while off < end {
        let mut src_off = off as libc::loff_t;
        let mut dst_off = off as libc::loff_t;
        // SAFETY: both descriptors are open; the offsets are valid, writable loff_t
        // values the kernel updates.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut src_off,
                to.as_raw_fd(),
                &mut dst_off,
                (end - off).min(1 << 30) as usize,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                    copy_range_by_hand(from, to, off, end)
                }
                _ => Err(e),
            };
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the RAM file shrank while it was being copied",
            ));
        }
        off += n as u64;
    }
    Ok(())
}

/// The portable fallback of [`copy_range`].
fn copy_range_by_hand(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = start;
    while off < end {
        let n = ((end - off) as usize).min(buf.len());
        from.read_exact_at(&mut buf[..n], off)?;
        to.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_is_copied_with_its_holes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("ram");
        let f = File::create(&src).unwrap();
        let len = 64 << 20;
        f.set_len(len).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 20 << 20).unwrap();
        f.write_all_at(b"end", len - 3).unwrap();
        drop(f);
        let dst = d.path().join("mem");
        let how = copy_memory(&src, &dst).unwrap();
        let copied = match how {
            MemCopy::Copied(n) => n,
            MemCopy::Reflinked => 0,
            MemCopy::InPlace => panic!("not the same file"),
        };
        assert!(copied < 4 << 20, "holes were copied: {copied} bytes");
        let a = std::fs::read(&src).unwrap();
        let b = std::fs::read(&dst).unwrap();
        assert!(a == b, "the copy differs");
        let m = std::fs::metadata(&dst).unwrap();
        assert!(m.blocks() * 512 < 4 << 20, "the copy is not sparse");
        assert!(!temp_beside(&dst).exists());
        // Copying onto itself (or a link to itself) is a no-op.
        assert_eq!(copy_memory(&dst, &dst).unwrap(), MemCopy::InPlace);
        std::fs::hard_link(&dst, d.path().join("link")).unwrap();
        assert_eq!(
            copy_memory(&dst, &d.path().join("link")).unwrap(),
            MemCopy::InPlace
        );
    }

    #[test]
    fn the_by_hand_copy_and_failures() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a");
        std::fs::write(&src, vec![9u8; 3 << 20]).unwrap();
        let dst = d.path().join("b");
        let (from, to) = (File::open(&src).unwrap(), File::create(&dst).unwrap());
        to.set_len(3 << 20).unwrap();
        copy_range_by_hand(&from, &to, 1 << 20, 3 << 20).unwrap();
        let b = std::fs::read(&dst).unwrap();
        assert!(b[..1 << 20].iter().all(|&x| x == 0));
        assert!(b[1 << 20..].iter().all(|&x| x == 9));
        assert!(copy_memory(&d.path().join("missing"), &dst).is_err());
        let e = copy_memory(&src, &d.path().join("no/such/dir/mem")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(next_extent(&from, 5 << 20, 3 << 20).unwrap().is_none());
        assert!(!same_file(&src, &d.path().join("missing")));
    }
}
