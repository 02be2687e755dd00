//! Where built kernels live and how they are keyed.

use ec1_engine::Arch;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bumped when the build recipe itself changes in a way that makes old kernels stale.
pub const RECIPE_VERSION: u32 = 1;

/// ec1's cache directory: `$XDG_CACHE_HOME/ec1`, else `$HOME/.cache/ec1`.
pub fn cache_root() -> Option<PathBuf> {
    cache_root_from(
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// [`cache_root`] for explicit values (empty values count as unset, as XDG says).
pub fn cache_root_from(xdg: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    match (xdg, home) {
        (Some(x), _) if x.is_absolute() => Some(x.join("ec1")),
        (_, Some(h)) if !h.as_os_str().is_empty() => Some(h.join(".cache").join("ec1")),
        _ => None,
    }
}

/// The cache key of a kernel: the fragment's text, the patches' digest, the source
/// package's version, the architecture and the recipe version. Any change to one gives
/// a new key, never a stale kernel.
pub fn kernel_key(
    fragment: &str,
    patches_digest: &str,
    source_version: &str,
    arch: Arch,
) -> String {
    let mut h = Sha256::new();
    h.update(format!("ec1-kernel-recipe-{RECIPE_VERSION}\n"));
    if arch != Arch::X86_64 {
        // (x86_64 kernels were keyed without it before arm64 existed.)
        h.update(format!("arch {arch}\n"));
    }
    h.update(source_version.as_bytes());
    h.update(b"\n");
    h.update(patches_digest.as_bytes());
    h.update(b"\n");
    h.update(fragment.as_bytes());
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Paths of one cached kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPaths {
    /// `<cache>/kernel/<key>/`
    pub dir: PathBuf,
    /// The image the engines boot: the uncompressed ELF `vmlinux` on x86_64 (PVH
    /// entry), `Image` on aarch64.
    pub image: PathBuf,
    /// The final `.config` it was built with.
    pub config: PathBuf,
}

impl KernelPaths {
    pub fn new(cache: &Path, key: &str, arch: Arch) -> Self {
        let dir = cache.join("kernel").join(key);
        KernelPaths {
            image: dir.join(match arch {
                Arch::X86_64 => "vmlinux",
                Arch::Aarch64 => "Image",
            }),
            config: dir.join("config"),
            dir,
        }
    }
}

/// The unpacked, shared build tree for one source version and architecture: reused
/// across fragment changes so that only what changed is recompiled.
pub fn build_tree(cache: &Path, source_version: &str, arch: Arch) -> PathBuf {
    let safe: String = source_version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match arch {
        Arch::X86_64 => cache.join("kernel").join(format!("src-{safe}")),
        _ => cache.join("kernel").join(format!("src-{safe}-{arch}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_every_input_and_is_stable() {
        let x = Arch::X86_64;
        let a = kernel_key("CONFIG_A=y\n", "p1", "6.1.192-2", x);
        assert_eq!(a, kernel_key("CONFIG_A=y\n", "p1", "6.1.192-2", x));
        assert_eq!(a.len(), 16);
        assert_ne!(a, kernel_key("CONFIG_A=n\n", "p1", "6.1.192-2", x));
        assert_ne!(a, kernel_key("CONFIG_A=y\n", "p2", "6.1.192-2", x));
        assert_ne!(a, kernel_key("CONFIG_A=y\n", "p1", "6.1.192-3", x));
        assert_ne!(
            a,
            kernel_key("CONFIG_A=y\n", "p1", "6.1.192-2", Arch::Aarch64)
        );
    }

    #[test]
    fn cache_root_prefers_absolute_xdg() {
        assert_eq!(
            cache_root_from(Some("/x".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/ec1"))
        );
        assert_eq!(
            cache_root_from(Some("rel".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.cache/ec1"))
        );
        assert_eq!(
            cache_root_from(None, Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.cache/ec1"))
        );
        assert_eq!(cache_root_from(None, Some("".into())), None);
        assert_eq!(cache_root_from(None, None), None);
    }

    #[test]
    fn paths_and_build_tree_are_under_the_cache() {
        let p = KernelPaths::new(Path::new("/c"), "abcd", Arch::X86_64);
        assert_eq!(p.image, PathBuf::from("/c/kernel/abcd/vmlinux"));
        assert_eq!(p.config, PathBuf::from("/c/kernel/abcd/config"));
        let p = KernelPaths::new(Path::new("/c"), "abcd", Arch::Aarch64);
        assert_eq!(p.image, PathBuf::from("/c/kernel/abcd/Image"));
        assert_eq!(
            build_tree(Path::new("/c"), "6.1.192-2+b1/x", Arch::X86_64),
            PathBuf::from("/c/kernel/src-6.1.192-2_b1_x")
        );
        assert_eq!(
            build_tree(Path::new("/c"), "6.1.192-2", Arch::Aarch64),
            PathBuf::from("/c/kernel/src-6.1.192-2-aarch64")
        );
    }
}
