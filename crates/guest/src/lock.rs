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
    pub fn exclusive(path: &Path) -> std::io::Result<Self> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a valid, open descriptor owned by `file`; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The lock is released when `file` is closed on drop.
        Ok(FileLock { _file: file })
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
    }
}
