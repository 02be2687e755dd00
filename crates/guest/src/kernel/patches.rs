//! ec1's source patches to the guest kernel (`kernel/patches/`), for boot speed under
//! software emulation. They are part of the kernel's cache key, and are applied to the
//! shared build tree once: a stamp in the tree records which set it carries. A tree that
//! carries the first patches of the set gets only the new ones (so adding a patch costs
//! an incremental build, not a fresh one); a tree that carries a different set is
//! unpacked afresh rather than patched twice.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{io, run, KernelError};

/// `(file name, patch text)` in the order they apply.
pub const PATCHES: &[(&str, &str)] = &[
    (
        "0001-boot-without-calibration-or-poisoning.patch",
        include_str!("../../../../kernel/patches/0001-boot-without-calibration-or-poisoning.patch"),
    ),
    (
        "0002-default-lapic-period-and-poweroff-by-reset.patch",
        include_str!(
            "../../../../kernel/patches/0002-default-lapic-period-and-poweroff-by-reset.patch"
        ),
    ),
];

/// The stamp file, in the source tree, naming the patch set it carries.
const STAMP: &str = ".ec1-patches";

/// A digest of a patch set (names and texts), for the stamp and the cache key.
pub fn digest(patches: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for (name, text) in patches {
        h.update(name.as_bytes());
        h.update(b"\n");
        h.update(text.as_bytes());
        h.update(b"\n");
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a source tree needs before `patches` can be applied to it.
#[derive(Debug, PartialEq, Eq)]
pub enum TreeState {
    /// It carries exactly this set already.
    Patched,
    /// It carries none of ec1's patches (a fresh tree, or one from before patches).
    Pristine,
    /// It carries the first `n` patches of the set (`0 < n < len`): the others can be
    /// added on top.
    Partly(usize),
    /// It carries another set: it must be unpacked again.
    Stale,
}

/// Reads the tree's stamp.
pub fn tree_state(src: &Path, patches: &[(&str, &str)]) -> TreeState {
    let Ok(stamp) = std::fs::read_to_string(src.join(STAMP)) else {
        return TreeState::Pristine;
    };
    let stamp = stamp.trim();
    if stamp == digest(patches) {
        return TreeState::Patched;
    }
    (1..patches.len())
        .rev()
        .find(|&n| stamp == digest(&patches[..n]))
        .map_or(TreeState::Stale, TreeState::Partly)
}

/// Applies `patches[from..]` to a tree that carries `patches[..from]` and stamps it
/// with the whole set. A patch found already applied (a tree patched by hand, or an
/// interrupted earlier run) is left as it is.
pub fn apply(src: &Path, patches: &[(&str, &str)], from: usize) -> Result<(), KernelError> {
    for (name, text) in patches.iter().skip(from) {
        let file = src.join(format!(".ec1-{name}"));
        std::fs::write(&file, text).map_err(io(format!("writing {name}")))?;
        let applied = Command::new("patch")
            .current_dir(src)
            .args([
                "-p1",
                "-R",
                "--dry-run",
                "--force",
                "--fuzz=0",
                "--silent",
                "-i",
            ])
            .arg(&file)
            .output()
            .is_ok_and(|o| o.status.success());
        if !applied {
            run(
                Command::new("patch")
                    .current_dir(src)
                    .args(["-p1", "--forward", "--force", "--fuzz=0", "-i"])
                    .arg(&file),
                &format!("patch -p1 < kernel/patches/{name}"),
            )?;
        }
        let _ = std::fs::remove_file(&file);
    }
    std::fs::write(src.join(STAMP), digest(patches)).map_err(io("stamping the patched tree"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD_LINE: &str = "--- a/f.c\n+++ b/f.c\n@@ -1,2 +1,3 @@\n one\n+two\n three\n";

    #[test]
    fn the_shipped_patches_are_unified_diffs_against_the_source_root() {
        for (name, text) in PATCHES {
            assert!(name.ends_with(".patch"));
            assert!(
                text.contains("\n--- a/") && text.contains("\n+++ b/"),
                "{name}"
            );
        }
    }

    #[test]
    fn digest_changes_with_names_and_texts() {
        let a = digest(&[("x.patch", ADD_LINE)]);
        assert_eq!(a, digest(&[("x.patch", ADD_LINE)]));
        assert_ne!(a, digest(&[("y.patch", ADD_LINE)]));
        assert_ne!(a, digest(&[("x.patch", "other")]));
        assert_ne!(a, digest(&[]));
    }

    #[test]
    fn a_tree_is_patched_once_and_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::write(src.join("f.c"), "one\nthree\n").unwrap();
        let set = [("x.patch", ADD_LINE)];
        assert_eq!(tree_state(src, &set), TreeState::Pristine);
        apply(src, &set, 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(src.join("f.c")).unwrap(),
            "one\ntwo\nthree\n"
        );
        assert_eq!(tree_state(src, &set), TreeState::Patched);
        assert_eq!(tree_state(src, &[("y.patch", ADD_LINE)]), TreeState::Stale);
        // Applying again (e.g. the stamp was lost) does not patch twice.
        std::fs::remove_file(src.join(STAMP)).unwrap();
        apply(src, &set, 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(src.join("f.c")).unwrap(),
            "one\ntwo\nthree\n"
        );
    }

    #[test]
    fn a_new_patch_is_added_on_top_of_the_ones_a_tree_carries() {
        const ADD_FOUR: &str = "--- a/f.c\n+++ b/f.c\n@@ -2,2 +2,3 @@\n two\n three\n+four\n";
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::write(src.join("f.c"), "one\nthree\n").unwrap();
        let old = [("x.patch", ADD_LINE)];
        let new = [("x.patch", ADD_LINE), ("y.patch", ADD_FOUR)];
        apply(src, &old, 0).unwrap();
        assert_eq!(tree_state(src, &new), TreeState::Partly(1));
        apply(src, &new, 1).unwrap();
        assert_eq!(
            std::fs::read_to_string(src.join("f.c")).unwrap(),
            "one\ntwo\nthree\nfour\n"
        );
        assert_eq!(tree_state(src, &new), TreeState::Patched);
        // A set that does not start with the tree's is another set altogether.
        assert_eq!(tree_state(src, &[("y.patch", ADD_FOUR)]), TreeState::Stale);
    }

    #[test]
    fn a_patch_that_does_not_fit_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.c"), "something else\n").unwrap();
        let err = apply(dir.path(), &[("x.patch", ADD_LINE)], 0).unwrap_err();
        assert!(err.to_string().contains("kernel/patches/x.patch"), "{err}");
    }
}
