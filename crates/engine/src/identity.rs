//! A file's identity for cache keys (the engine binary, a kernel source package, a
//! busybox): a file replaced or changed in place (a package upgrade, a rebuild) gets a
//! new one, so a cache keyed by it never serves stale data, and checking it costs one
//! `stat` instead of hashing the file or asking a package manager.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `path:device:inode:size:mtime.nsec`, or `None` if the file cannot be read.
pub fn file_identity(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}:{}:{}.{}",
        path.display(),
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_changes_when_the_file_does() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        assert_eq!(file_identity(&p), None);
        std::fs::write(&p, "a").unwrap();
        let a = file_identity(&p).unwrap();
        assert_eq!(file_identity(&p).as_ref(), Some(&a));
        std::fs::write(&p, "bb").unwrap();
        assert_ne!(file_identity(&p).unwrap(), a);
    }
}
