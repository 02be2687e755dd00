//! A file's identity for cache keys (the engine binary, a kernel source package, a
//! busybox): a file replaced or changed in place (a package upgrade, a rebuild) gets a
//! new one, so a cache keyed by it never serves stale data, and checking it costs one
//! `stat` instead of hashing the file or asking a package manager.

use std::fmt::Display;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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

/// Where [`remembered`] keeps the answer for the file of identity `identity`:
/// `<cache_dir>/<prefix>-<digest of the identity>`.
pub fn remembered_path(cache_dir: &Path, prefix: &str, identity: &str) -> PathBuf {
    let digest = Sha256::digest(identity.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    cache_dir.join(format!("{prefix}-{hex}"))
}

/// A small fact about `file` that only changes when the file does (a program's
/// version, the package a tarball came from), remembered in `cache_dir` by the file's
/// identity. A remembered text that `parse` refuses is worked out again, as is the
/// answer for a file that cannot be read; failures of `compute` are never remembered,
/// and a cache that cannot be written only costs the next caller another `compute`.
pub fn remembered<T: Display, E>(
    cache_dir: &Path,
    prefix: &str,
    file: &Path,
    parse: impl Fn(&str) -> Option<T>,
    compute: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let Some(identity) = file_identity(file) else {
        return compute();
    };
    let path = remembered_path(cache_dir, prefix, &identity);
    if let Some(v) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| parse(t.trim()))
    {
        return Ok(v);
    }
    let v = compute()?;
    // Written beside and renamed into place: a reader never sees half an answer.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(cache_dir)
        .and_then(|()| std::fs::write(&tmp, v.to_string()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_remembered_by_identity_and_failures_are_not() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let file = d.path().join("prog");
        std::fs::write(&file, "v1").unwrap();
        let number = |t: &str| t.parse::<u32>().ok();
        let calls = std::cell::Cell::new(0);
        let compute = |v: u32| {
            calls.set(calls.get() + 1);
            Ok::<u32, ()>(v)
        };
        assert_eq!(remembered(&cache, "n", &file, number, || compute(7)), Ok(7));
        assert_eq!(remembered(&cache, "n", &file, number, || compute(8)), Ok(7));
        assert_eq!(calls.get(), 1, "the second answer came from the cache");
        let stored = remembered_path(&cache, "n", &file_identity(&file).unwrap());
        assert_eq!(std::fs::read_to_string(&stored).unwrap(), "7");
        // What `parse` refuses is worked out again.
        std::fs::write(&stored, "garbage").unwrap();
        assert_eq!(remembered(&cache, "n", &file, number, || compute(9)), Ok(9));
        // A changed file is another identity.
        std::fs::write(&file, "version two").unwrap();
        assert_eq!(
            remembered(&cache, "n", &file, number, || compute(10)),
            Ok(10)
        );
        // Failures come back and are not remembered; a missing file is never cached.
        let gone = d.path().join("gone");
        assert_eq!(
            remembered(&cache, "n", &gone, number, || Err::<u32, _>("no")),
            Err("no")
        );
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            2,
            "one answer per identity"
        );
    }

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
