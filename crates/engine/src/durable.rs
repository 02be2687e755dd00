//! Making a file's arrival durable: its data is on the disk before its name is, and
//! the name survives a crash. Snapshots and boot templates are written beside their
//! final path, synced, renamed into place and their directory synced, so that after a
//! power loss or a `kill -9` a path holds either the whole file or nothing.

use std::fs::File;
use std::io;
use std::path::Path;

/// Syncs the directory `dir` itself (the names in it, after a rename or create).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Syncs the data of the file at `path`.
pub fn sync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Renames `from` to `to` and syncs `to`'s directory; `from`'s data must already be
/// synced.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(
        to.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_arrive_whole_under_their_name() {
        let d = std::env::temp_dir().join(format!("ec1-durable-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let tmp = d.join(".x.tmp");
        std::fs::write(&tmp, b"data").unwrap();
        sync_file(&tmp).unwrap();
        rename_durably(&tmp, &d.join("x")).unwrap();
        assert_eq!(std::fs::read(d.join("x")).unwrap(), b"data");
        assert!(!tmp.exists());
        sync_dir(&d).unwrap();
        assert!(sync_file(&d.join("missing")).is_err());
        assert!(rename_durably(&d.join("missing"), &d.join("y")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
