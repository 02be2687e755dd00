//! Remembering that a QEMU binary passed [`check_qemu`], by the binary's identity.
//!
//! `qemu-system-x86_64 --version` costs ~50 ms (QEMU links about a hundred shared
//! libraries), more than a whole template restore. The answer only changes when the
//! binary does, so it is cached in a small file named after the binary's identity:
//! resolved path, device, inode, size and modification time. A replaced or upgraded
//! binary has another identity and is checked again.

use std::path::{Path, PathBuf};

use ec1_engine::EngineError;

use crate::version::{check_qemu, QemuVersion};

/// `binary` as `execvp` would find it: itself if it has a `/`, else the first match
/// in `PATH`.
pub fn find_in_path(binary: &Path) -> Option<PathBuf> {
    if binary.as_os_str().as_encoded_bytes().contains(&b'/') {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// A stable text naming `path`'s identity (for cache keys), or `None` if it is gone.
pub use ec1_engine::file_identity;

fn parse(text: &str) -> Option<QemuVersion> {
    let mut it = text.trim().split('.').map(|p| p.parse::<u32>().ok());
    let v = QemuVersion {
        major: it.next()??,
        minor: it.next()??,
        micro: it.next()??,
    };
    (v.major >= crate::MIN_MAJOR).then_some(v)
}

/// [`check_qemu`], remembered in `cache_dir` by the identity of the binary it finds
/// (see [`ec1_engine::remembered`]).
pub fn check_qemu_cached(binary: &Path, cache_dir: &Path) -> Result<QemuVersion, EngineError> {
    let Some(found) = find_in_path(binary) else {
        return check_qemu(binary);
    };
    ec1_engine::remembered(cache_dir, "qemu-version", &found, parse, || {
        check_qemu(binary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_is_cached_by_identity() {
        let d = tempfile::tempdir().unwrap();
        let q = find_in_path(Path::new(crate::QEMU_PROGRAM)).expect("QEMU is installed");
        let v = check_qemu_cached(Path::new(crate::QEMU_PROGRAM), d.path()).unwrap();
        let files: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let cached = files[0].as_ref().unwrap().path();
        assert_eq!(std::fs::read_to_string(&cached).unwrap(), v.to_string());
        // The cached answer is used: a planted version comes back.
        std::fs::write(&cached, "99.1.2").unwrap();
        let again = check_qemu_cached(&q, d.path()).unwrap();
        assert_eq!((again.major, again.minor, again.micro), (99, 1, 2));
        // Garbage in the cache means another check.
        std::fs::write(&cached, "nonsense").unwrap();
        assert_eq!(check_qemu_cached(&q, d.path()).unwrap(), v);
    }

    #[test]
    fn failures_are_not_cached_and_identities_differ() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_qemu_cached(Path::new("/nonexistent/qemu"), d.path()).is_err());
        assert!(check_qemu_cached(Path::new("no-such-qemu-binary"), d.path()).is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let a = d.path().join("a");
        std::fs::write(&a, "1").unwrap();
        let id1 = file_identity(&a).unwrap();
        std::fs::write(&a, "22").unwrap();
        assert_ne!(file_identity(&a).unwrap(), id1);
        assert_eq!(file_identity(&d.path().join("gone")), None);
        assert_eq!(parse("9.2.0"), None, "too old");
        assert_eq!(parse("10.0"), None);
        assert!(find_in_path(Path::new("sh")).is_some());
        assert_eq!(find_in_path(Path::new("/nonexistent/x")), None);
    }
}
