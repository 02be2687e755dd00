//! Image locking: a writable drive's image is opened with QEMU's image locks
//! (`file.locking=on`, OFD locks on the file), so a second writer of the same image,
//! another ec1 or any QEMU, is refused instead of corrupting it. Read-only drives take
//! no lock: they neither block a writer nor are blocked by one, and may be shared.
//!
//! QEMU's refusal names the image but not who holds it; [`explain`] finds the processes
//! that have it open, so that the error says which one to stop.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ec1_engine::{EngineError, VmSpec};

/// Whether a drive's image is locked: writable ones are.
pub(crate) fn locks(read_only: bool) -> bool {
    !read_only
}

/// Whether QEMU's stderr says it could not take an image lock.
fn is_lock_failure(stderr: &str) -> bool {
    stderr.contains("Failed to get") && stderr.contains("lock")
}

/// The processes other than those in `except` that have the file at `path` open, as
/// `pid N (name)`. Reads `/proc/*/fd`; what it may not read is skipped.
fn holders(path: &Path, except: &[u32]) -> Vec<String> {
    let Ok(target) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let key = (target.dev(), target.ino());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if except.contains(&pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let open = fds
            .flatten()
            .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == key));
        if open {
            let name = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            found.push(format!("pid {pid} ({})", name.trim()));
        }
    }
    found
}

/// `err` as [`EngineError::ImageInUse`] when QEMU (pid `qemu_pid`) failed to start
/// because a writable drive of `spec` is locked by another process; `err` otherwise.
pub(crate) fn explain(err: EngineError, spec: &VmSpec, qemu_pid: u32) -> EngineError {
    let EngineError::Crashed { stderr, .. } = &err else {
        return err;
    };
    if !is_lock_failure(stderr) {
        return err;
    }
    for d in spec
        .drives
        .iter()
        .filter(|d| !d.vhost_user && locks(d.read_only))
    {
        let named = stderr.contains(&format!("[{}]", d.path.display()));
        let who = holders(&d.path, &[qemu_pid, std::process::id()]);
        if named || !who.is_empty() {
            return EngineError::ImageInUse {
                path: d.path.clone(),
                holders: if who.is_empty() {
                    "another process".into()
                } else {
                    who.join(", ")
                },
            };
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writable_drives_lock() {
        assert!(locks(false));
        assert!(!locks(true));
    }

    /// This test process holds the file (no child is spawned: a long-lived child
    /// would inherit descriptors other tests pass to theirs in the meantime).
    #[test]
    fn holders_are_the_processes_with_the_file_open() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, b"x").unwrap();
        let me = std::process::id();
        assert!(holders(&img, &[]).is_empty(), "nobody has it open yet");
        let open = std::fs::File::open(&img).unwrap();
        let who = holders(&img, &[]);
        assert_eq!(who.len(), 1, "{who:?}");
        assert!(who[0].starts_with(&format!("pid {me} (")), "{who:?}");
        assert!(holders(&img, &[me]).is_empty());
        drop(open);
        assert!(holders(&dir.path().join("missing"), &[]).is_empty());
    }

    #[test]
    fn only_lock_failures_are_explained() {
        let crashed = |stderr: &str| EngineError::Crashed {
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        let spec = |read_only: bool| VmSpec {
            drives: vec![ec1_engine::DriveSpec {
                id: "root".into(),
                path: "/img/a.ext4".into(),
                read_only,
                cache: ec1_engine::CacheType::Unsafe,
                rate_limit: None,
                vhost_user: false,
            }],
            ..crate::devices::tests::spec()
        };
        let lock = "qemu: -drive ...: Failed to get \"write\" lock\nIs another process using the image [/img/a.ext4]?";
        match explain(crashed(lock), &spec(false), 1) {
            EngineError::ImageInUse { path, holders } => {
                assert_eq!(path, Path::new("/img/a.ext4"));
                assert_eq!(holders, "another process");
            }
            other => panic!("{other}"),
        }
        assert!(matches!(
            explain(crashed(lock), &spec(true), 1),
            EngineError::Crashed { .. }
        ));
        assert!(matches!(
            explain(crashed("boom"), &spec(false), 1),
            EngineError::Crashed { .. }
        ));
        assert!(matches!(
            explain(EngineError::Control("x".into()), &spec(false), 1),
            EngineError::Control(_)
        ));
    }
}
