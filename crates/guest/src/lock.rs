//! A cross-process lock on a file, for caches and channels that one process at a time
//! may use.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// An exclusive `flock` held until dropped.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for the lock.
    pub fn exclusive(path: &Path) -> std::io::Result<Self> {
        Self::take(path, libc::LOCK_EX)?.ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
    }

    /// Takes the lock if nobody holds it; `None` if someone does. For a lock that
    /// marks one live owner (a daemon): the kernel drops it when the owner dies.
    pub fn try_exclusive(path: &Path) -> std::io::Result<Option<Self>> {
        Self::take(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn take(path: &Path, how: libc::c_int) -> std::io::Result<Option<Self>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a valid, open descriptor owned by `file`; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), how) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        // The lock is released when `file` is closed on drop.
        Ok(Some(FileLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_can_be_taken_and_released() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        drop(FileLock::exclusive(&p).unwrap());
        let _again = FileLock::exclusive(&p).unwrap();
        assert!(FileLock::exclusive(Path::new("/nonexistent/dir/lock")).is_err());
        // One owner at a time (flock locks belong to the open file, so a second open in
        // the same process contends like another process would).
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(_again);
        let held = FileLock::try_exclusive(&p).unwrap();
        assert!(held.is_some());
    }
}
