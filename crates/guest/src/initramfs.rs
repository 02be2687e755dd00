//! The agent's initramfs: what ec1 injects into every guest.
//!
//! It holds `/init` (the static agent, [`crate::agent::agent_binary`]), busybox (from
//! the host's `/bin/busybox`, Debian's `busybox-static`) under `/.ec1/bin` with one
//! symlink per applet, `/dev/console`, and, when it is the whole initramfs, the usual
//! directories and `/bin/sh`-style applet links so commands find a shell.
//!
//! Archives are cached under [`crate::kernel::cache_root`]`/initramfs/`, named by a
//! hash of their inputs (agent bytes, busybox bytes, [`FORMAT_VERSION`]), and written
//! atomically (temporary file + rename), so concurrent ec1 processes may build the
//! same archive at once and a reader never sees a partial one.
//!
//! A user's own initrd is kept: [`combined_initrd`] appends the agent archive to it
//! (the kernel unpacks concatenated archives in order, later entries replacing earlier
//! ones). The agent archive then only adds `/init` and `/.ec1`, so the image's own
//! `/bin` stays as it was; its `/init`, if any, is replaced by the agent.

mod layout;
mod newc;

pub use layout::{build_archive, Layout, BUSYBOX_PATH};
pub use newc::{parse, Entry, NewcWriter};

use ec1_engine::Arch;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped whenever the archive layout changes, so stale cached archives are not used.
pub const FORMAT_VERSION: u32 = 1;

/// Where busybox comes from unless `EC1_BUSYBOX` says otherwise.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Where the busybox of a guest architecture other than the host's lives, under
/// ec1's cache: `ec1 kernel build --arch <arch>` puts Debian's `busybox-static` for
/// that architecture there (`EC1_BUSYBOX_<ARCH>` overrides it).
pub fn foreign_busybox_path(cache_root: &Path, arch: Arch) -> PathBuf {
    cache_root
        .join("busybox")
        .join(arch.as_str())
        .join("busybox")
}

/// Why an initramfs could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(
        "busybox was not found at {0} (the guest's shell and tools come from it): \
         install it with `apt-get install busybox-static`"
    )]
    BusyboxMissing(PathBuf),
    #[error(
        "the {arch} busybox was not found at {path} (an {arch} guest's shell and tools come from it): \
         `ec1 kernel build --arch {arch}` fetches Debian's busybox-static for {arch}"
    )]
    ForeignBusyboxMissing { arch: Arch, path: PathBuf },
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentMissing),
    #[error(
        "{0} is not a static busybox (it would not run in the guest): \
         install Debian's static one with `apt-get install busybox-static`"
    )]
    BusyboxNotStatic(PathBuf),
    #[error("cannot list the applets of {path}: {why}")]
    BusyboxApplets { path: PathBuf, why: String },
    #[error("no cache directory: set XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitramfsError {
    let path = path.to_path_buf();
    move |source| InitramfsError::Io { what, path, source }
}

/// Inputs of the archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Directory the archives are cached in (`<cache>/initramfs`).
    pub cache_dir: PathBuf,
    /// The guest's architecture: which agent and busybox go in.
    pub arch: Arch,
    /// The static busybox to include, built for [`Options::arch`].
    pub busybox: PathBuf,
}

/// The host's own busybox: `$EC1_BUSYBOX` or `/bin/busybox`.
fn host_busybox() -> PathBuf {
    std::env::var_os("EC1_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BUSYBOX))
}

impl Options {
    /// The defaults for guests of the host's architecture: ec1's cache directory and
    /// `$EC1_BUSYBOX` or `/bin/busybox`.
    pub fn from_env() -> Result<Options, InitramfsError> {
        Options::for_arch(Arch::host())
    }

    /// The defaults for guests of `arch`; another architecture's busybox is
    /// `$EC1_BUSYBOX_<ARCH>` or [`foreign_busybox_path`].
    pub fn for_arch(arch: Arch) -> Result<Options, InitramfsError> {
        let root = crate::kernel::cache_root().ok_or(InitramfsError::NoCacheDir)?;
        let busybox = if arch == Arch::host() {
            host_busybox()
        } else {
            std::env::var_os(format!("EC1_BUSYBOX_{}", arch.as_str().to_uppercase()))
                .map(PathBuf::from)
                .unwrap_or_else(|| foreign_busybox_path(&root, arch))
        };
        Ok(Options {
            cache_dir: root.join("initramfs"),
            arch,
            busybox,
        })
    }
}

/// The error for a busybox that is not at `path`.
fn busybox_missing(path: &Path, arch: Arch) -> InitramfsError {
    if arch == Arch::host() {
        InitramfsError::BusyboxMissing(path.to_path_buf())
    } else {
        InitramfsError::ForeignBusyboxMissing {
            arch,
            path: path.to_path_buf(),
        }
    }
}

/// Reads busybox, checking that it can run in the guest (static, for `arch`).
fn load_busybox(path: &Path, arch: Arch) -> Result<Vec<u8>, InitramfsError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(busybox_missing(path, arch))
        }
        Err(e) => return Err(io_err("reading", path)(e)),
    };
    if crate::agent::check_static(&bytes, crate::agent::elf_machine(arch)).is_err() {
        return Err(InitramfsError::BusyboxNotStatic(path.to_path_buf()));
    }
    Ok(bytes)
}

/// busybox's identity without reading it: path, device, inode, size and mtime.
fn file_identity(path: &Path, arch: Arch) -> Result<String, InitramfsError> {
    ec1_engine::file_identity(path).ok_or_else(|| busybox_missing(path, arch))
}

/// busybox's applets as paths (`busybox --list-full`: `bin/sh`, `usr/bin/awk`, ...).
fn busybox_applets(path: &Path) -> Result<Vec<String>, InitramfsError> {
    let out = std::process::Command::new(path)
        .arg("--list-full")
        .output()
        .map_err(|e| InitramfsError::BusyboxApplets {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(InitramfsError::BusyboxApplets {
            path: path.to_path_buf(),
            why: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Hex SHA-256 prefix over the parts, for cache file names.
fn key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `path` atomically: the content appears whole or not at all.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), InitramfsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:?}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        std::thread::current().id()
    ));
    let res = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            write(&mut f)?;
            f.sync_all()
        })
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("writing", path)(e));
    }
    Ok(())
}

/// The archive for `layout`, built if not cached yet.
fn cached_archive(opts: &Options, layout: Layout) -> Result<PathBuf, InitramfsError> {
    let (agent, agent_sha256) = crate::agent::agent_for(opts.arch)?;
    // Keyed by the agent's build-time digest and busybox's file identity, so a cache hit
    // reads nothing but one stat (this runs on every boot).
    let k = key(&[
        &FORMAT_VERSION.to_le_bytes(),
        layout.name().as_bytes(),
        agent_sha256.as_bytes(),
        file_identity(&opts.busybox, opts.arch)?.as_bytes(),
    ]);
    let prefix = match opts.arch {
        // (x86_64 archives were named before arm64 existed.)
        Arch::X86_64 => format!("agent-{}-", layout.name()),
        arch => format!("agent-{arch}-{}-", layout.name()),
    };
    let path = opts.cache_dir.join(format!("{prefix}{k}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    let busybox = load_busybox(&opts.busybox, opts.arch)?;
    // Another architecture's busybox cannot run here to list its applets: Debian
    // builds busybox-static with one configuration for every architecture, so the
    // host's own lists the same ones.
    let lister = if opts.arch == Arch::host() {
        opts.busybox.clone()
    } else {
        host_busybox()
    };
    let applets = busybox_applets(&lister)?;
    let archive = build_archive(agent, &busybox, &applets, layout);
    write_atomically(&path, |f| f.write_all(&archive))?;
    prune(&opts.cache_dir, &prefix, &path);
    Ok(path)
}

/// Removes archives of the same layout built from other inputs (an older agent or
/// busybox): each rebuild of ec1 would otherwise leave one behind. A guest that is
/// running from one keeps it open; Linux keeps the data until it closes.
fn prune(dir: &Path, prefix: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(".cpio") && e.path() != keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The agent initramfs on its own (the guest's whole initramfs), cached.
pub fn agent_initramfs(opts: &Options) -> Result<PathBuf, InitramfsError> {
    cached_archive(opts, Layout::Standalone)
}

/// The initrd to boot: the agent initramfs alone, or `user_initrd` with the agent
/// archive appended (zero-padded to the 4-byte boundary the kernel needs between
/// archives). Cached by the user initrd's identity (device, inode, size, mtime) and
/// the agent archive.
pub fn combined_initrd(
    user_initrd: Option<&Path>,
    opts: &Options,
) -> Result<PathBuf, InitramfsError> {
    let Some(user) = user_initrd else {
        return agent_initramfs(opts);
    };
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(user).map_err(io_err("reading the initrd", user))?;
    let overlay = cached_archive(opts, Layout::Overlay)?;
    let ident = format!(
        "{}:{}:{}:{}.{}:{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        user.display()
    );
    let k = key(&[ident.as_bytes(), overlay.as_os_str().as_encoded_bytes()]);
    let path = opts.cache_dir.join(format!("combined-{k}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    write_atomically(&path, |out| {
        let mut src = std::fs::File::open(user)?;
        let n = std::io::copy(&mut src, out)?;
        let pad = (4 - (n % 4) as usize) % 4;
        out.write_all(&[0u8; 4][..pad])?;
        out.write_all(&std::fs::read(&overlay)?)
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> Options {
        Options {
            cache_dir: dir.join("cache"),
            arch: Arch::X86_64,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
        }
    }

    #[test]
    fn an_aarch64_archive_carries_the_aarch64_agent_and_busybox() {
        let d = tempfile::tempdir().unwrap();
        let mut o = opts(d.path());
        o.arch = Arch::Aarch64;
        o.busybox = d.path().join("missing-busybox");
        let e = agent_initramfs(&o).unwrap_err();
        assert!(
            e.to_string().contains("ec1 kernel build --arch aarch64"),
            "{e}"
        );
        // The host's x86 busybox cannot be an arm64 guest's.
        o.busybox = PathBuf::from(DEFAULT_BUSYBOX);
        let e = agent_initramfs(&o).unwrap_err();
        assert!(matches!(e, InitramfsError::BusyboxNotStatic(_)), "{e}");
        // The real one, as `ec1 kernel build --arch aarch64` fetched it.
        o.busybox = Options::for_arch(Arch::Aarch64).unwrap().busybox;
        let p = agent_initramfs(&o).unwrap();
        assert!(p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("agent-aarch64-"));
        let entries = parse(&std::fs::read(&p).unwrap()).unwrap();
        let init = entries.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(init.3, crate::agent::agent_for(Arch::Aarch64).unwrap().0);
        let bb = entries.iter().find(|e| e.0 == BUSYBOX_PATH[1..]).unwrap();
        crate::agent::check_static(&bb.3, crate::agent::EM_AARCH64).unwrap();
        assert!(entries.iter().any(|e| e.0 == "bin/sh"));
        // Beside the x86 archive in the same cache, not replacing it.
        o.arch = Arch::X86_64;
        o.busybox = PathBuf::from(DEFAULT_BUSYBOX);
        let x86 = agent_initramfs(&o).unwrap();
        assert!(p.is_file() && x86.is_file() && p != x86);
    }

    #[test]
    fn the_agent_initramfs_is_built_once_and_cached() {
        let d = tempfile::tempdir().unwrap();
        let o = opts(d.path());
        let p = agent_initramfs(&o).unwrap();
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        let entries = parse(&std::fs::read(&p).unwrap()).unwrap();
        let init = entries.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(init.3, crate::agent::agent_binary());
        assert!(entries.iter().any(|e| e.0 == "bin/sh"));
        // Same inputs: same file, not rewritten.
        assert_eq!(agent_initramfs(&o).unwrap(), p);
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(&o.cache_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // No user initrd: the combined initrd is the agent initramfs.
        assert_eq!(combined_initrd(None, &o).unwrap(), p);
    }

    #[test]
    fn a_user_initrd_gets_the_agent_appended_on_a_4_byte_boundary() {
        let d = tempfile::tempdir().unwrap();
        let o = opts(d.path());
        let mut w = NewcWriter::new();
        w.dir("bin", 0o755);
        w.file("bin/sh", 0o755, b"the user's own shell");
        w.file("init", 0o755, b"user init");
        let mut user = w.finish();
        user.extend_from_slice(b"xy"); // make its length not a multiple of 4
        let ui = d.path().join("user.cpio");
        std::fs::write(&ui, &user).unwrap();
        let c = combined_initrd(Some(&ui), &o).unwrap();
        let bytes = std::fs::read(&c).unwrap();
        assert_eq!(&bytes[..user.len()], &user[..]);
        let agent_start = user.len().div_ceil(4) * 4;
        assert_eq!(&bytes[agent_start..agent_start + 6], b"070701");
        assert!(bytes[user.len()..agent_start].iter().all(|&b| b == 0));
        let overlay = parse(&bytes[agent_start..]).unwrap();
        // The overlay does not touch the user's /bin, but replaces /init.
        assert!(!overlay.iter().any(|e| e.0 == "bin/sh"));
        assert!(overlay.iter().any(|e| e.0 == "init"));
        assert!(overlay.iter().any(|e| e.0 == ".ec1/bin/sh"));
        assert_eq!(combined_initrd(Some(&ui), &o).unwrap(), c, "cached");
        // A changed user initrd gives a new combination.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&ui, b"070701 changed").unwrap();
        assert_ne!(combined_initrd(Some(&ui), &o).unwrap(), c);
        let e = combined_initrd(Some(&d.path().join("nope")), &o).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn missing_or_dynamic_busybox_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let mut o = opts(d.path());
        o.busybox = d.path().join("no-busybox");
        let e = agent_initramfs(&o).unwrap_err();
        assert!(matches!(e, InitramfsError::BusyboxMissing(_)));
        assert!(
            e.to_string().contains("apt-get install busybox-static"),
            "{e}"
        );
        o.busybox = PathBuf::from("/bin/ls"); // dynamically linked
        let e = agent_initramfs(&o).unwrap_err();
        assert!(e.to_string().contains("busybox-static"), "{e}");
        // A static executable that fails `--list-full`.
        o.busybox = d.path().join("fake");
        // The agent refuses to run outside PID 1 (exit 2): a static binary that fails.
        std::fs::write(&o.busybox, crate::agent::agent_binary()).unwrap();
        std::fs::set_permissions(
            &o.busybox,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let e = agent_initramfs(&o).unwrap_err();
        assert!(matches!(e, InitramfsError::BusyboxApplets { .. }), "{e}");
        let o = Options {
            cache_dir: PathBuf::from("/proc/ec1-cannot-write-here"),
            arch: Arch::X86_64,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
        };
        let e = agent_initramfs(&o).unwrap_err();
        assert!(matches!(e, InitramfsError::Io { .. }), "{e}");
    }

    #[test]
    fn stale_archives_are_pruned() {
        let d = tempfile::tempdir().unwrap();
        let o = opts(d.path());
        std::fs::create_dir_all(&o.cache_dir).unwrap();
        let stale = o.cache_dir.join("agent-standalone-0123456789ab.cpio");
        let other = o.cache_dir.join("agent-overlay-0123456789ab.cpio");
        std::fs::write(&stale, b"old").unwrap();
        std::fs::write(&other, b"old").unwrap();
        let p = agent_initramfs(&o).unwrap();
        assert!(p.is_file());
        assert!(
            !stale.exists(),
            "the stale standalone archive is still there"
        );
        assert!(other.exists(), "another layout's archive was removed");
        prune(&d.path().join("missing"), "agent-", &p);
    }

    #[test]
    fn options_come_from_the_environment() {
        let o = Options::from_env().unwrap();
        assert!(o.cache_dir.ends_with("ec1/initramfs"));
        assert!(InitramfsError::NoCacheDir.to_string().contains("HOME"));
    }
}
