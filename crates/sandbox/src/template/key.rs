//! What a boot template depends on, and the key it is cached under.
//!
//! A template is a snapshot of a booted guest whose agent is ready. Restoring it is
//! only correct if everything that shaped that guest is unchanged, so the key covers
//! every input: the kernel, the agent (inside ec1's own executable, which also holds
//! the code that builds the machine), busybox, the user's initrd and read-only root
//! image, the machine size, architecture, root mode and kernel command line, the engine
//! (its name and settings and the host files it runs, as the engine reports them in
//! its [`ec1_engine::CacheIdentity`]) and the template and snapshot format versions. Files are
//! identified by path, device, inode, size and modification time (a stat each, so the
//! key costs microseconds, never a hash of an 18 MB kernel); any change gives a new key
//! and a new template, never a stale guest.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{RootMode, SandboxError, SandboxOptions};

/// Bumped whenever what a template holds or how it is made changes.
pub const TEMPLATE_FORMAT: u32 = 2;

/// A file's identity: what changes whenever the file is replaced or rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileId {
    /// The identity of `path` now.
    pub fn of(path: &Path) -> Result<FileId, SandboxError> {
        let m = std::fs::metadata(path).map_err(|source| SandboxError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        Ok(FileId {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// Whether the file is still the one recorded.
    pub fn is_current(&self) -> bool {
        FileId::of(&self.path).is_ok_and(|now| now == *self)
    }
}

/// Everything a template depends on (stored beside it as `meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInputs {
    pub template_format: u32,
    /// The engine's snapshot file format (`major.minor` on QEMU).
    pub snapshot_format: String,
    /// The engine and its settings (`qemu-tcg-x86_64`).
    pub engine: String,
    /// The host files the engine runs (QEMU's binary and firmware).
    pub engine_files: Vec<FileId>,
    /// The guest's architecture.
    pub arch: String,
    /// ec1's own executable: it embeds the agent and builds the QEMU command line.
    pub ec1: FileId,
    pub busybox: FileId,
    pub initramfs_format: u32,
    pub kernel: FileId,
    /// The user's initrd the agent archive is appended to.
    pub initrd: Option<FileId>,
    /// The read-only root image (`Rootfs`/`Handoff` modes).
    pub rootfs: Option<FileId>,
    pub mode: String,
    pub vcpus: u8,
    pub mem_mib: u32,
    /// The complete kernel command line the template boots with.
    pub cmdline: String,
}

impl TemplateInputs {
    /// The cache key: 32 hex digits of a SHA-256 over the inputs.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("template inputs serialise");
        Sha256::digest(&json)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The recorded files that are no longer what they were (empty: all current).
    pub fn changed_files(&self) -> Vec<&Path> {
        let mut files: Vec<&FileId> = self.engine_files.iter().collect();
        files.extend([&self.ec1, &self.busybox, &self.kernel]);
        files.extend(self.initrd.iter());
        files.extend(self.rootfs.iter());
        let mut changed: Vec<&Path> = files
            .into_iter()
            .filter(|f| !f.is_current())
            .map(|f| f.path.as_path())
            .collect();
        changed.sort();
        changed.dedup();
        changed
    }
}

/// Why `opts` cannot use a template, if it cannot: a writable root image would be
/// shared by every clone while each clone's kernel believes it owns the filesystem.
pub fn unsupported_reason(opts: &SandboxOptions) -> Option<String> {
    match (opts.mode, &opts.rootfs) {
        (RootMode::Initramfs, _) => None,
        (_, Some(_)) if opts.rootfs_read_only => None,
        (_, Some(_)) => Some(
            "a writable root image cannot be shared by clones: use --rootfs-ro for templates"
                .into(),
        ),
        (_, None) => None,
    }
}

/// The host facts the inputs need besides the options; gathered by the caller.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub engine: ec1_engine::CacheIdentity,
    pub arch: ec1_engine::Arch,
    pub ec1: PathBuf,
    pub busybox: PathBuf,
    pub kernel: PathBuf,
    pub cmdline: String,
}

/// The inputs of a template for `opts` on this host.
pub fn gather(opts: &SandboxOptions, host: &HostFacts) -> Result<TemplateInputs, SandboxError> {
    let rootfs = match (opts.mode, &opts.rootfs) {
        (RootMode::Initramfs, _) | (_, None) => None,
        (_, Some(r)) => Some(FileId::of(r)?),
    };
    Ok(TemplateInputs {
        template_format: TEMPLATE_FORMAT,
        snapshot_format: host.engine.snapshot_format.clone(),
        engine: host.engine.engine.clone(),
        engine_files: host
            .engine
            .files
            .iter()
            .map(|f| FileId::of(f))
            .collect::<Result<_, _>>()?,
        arch: host.arch.as_str().into(),
        ec1: FileId::of(&host.ec1)?,
        busybox: FileId::of(&host.busybox)?,
        initramfs_format: ec1_guest::initramfs::FORMAT_VERSION,
        kernel: FileId::of(&host.kernel)?,
        initrd: opts.initrd.as_deref().map(FileId::of).transpose()?,
        rootfs,
        mode: format!("{:?}", opts.mode),
        vcpus: opts.vcpus,
        mem_mib: opts.mem_mib,
        cmdline: host.cmdline.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(dir: &Path) -> HostFacts {
        let f = |n: &str| {
            let p = dir.join(n);
            std::fs::write(&p, n).unwrap();
            p
        };
        HostFacts {
            engine: ec1_engine::CacheIdentity {
                engine: "qemu-tcg-x86_64".into(),
                files: vec![f("qemu"), f("qboot.rom")],
                snapshot_format: "2.1".into(),
            },
            arch: ec1_engine::Arch::X86_64,
            ec1: f("ec1"),
            busybox: f("busybox"),
            kernel: f("vmlinux"),
            cmdline: "console=ttyS0".into(),
        }
    }

    #[test]
    fn every_input_changes_the_key() {
        let d = tempfile::tempdir().unwrap();
        let h = facts(d.path());
        let opts = SandboxOptions::default();
        let base = gather(&opts, &h).unwrap();
        assert_eq!(base.key().len(), 32);
        assert_eq!(gather(&opts, &h).unwrap().key(), base.key(), "stable");
        assert!(base.changed_files().is_empty());

        let mut keys = vec![base.key()];
        let mut push = |i: TemplateInputs| {
            let k = i.key();
            assert!(!keys.contains(&k), "{i:?} kept an old key");
            keys.push(k);
        };
        // A rewritten kernel, agent (ec1) or busybox.
        for name in ["vmlinux", "ec1", "busybox", "qemu"] {
            std::fs::write(d.path().join(name), "changed!").unwrap();
            let i = gather(&opts, &h).unwrap();
            assert!(base
                .changed_files()
                .contains(&d.path().join(name).as_path()));
            std::fs::write(d.path().join(name), name).unwrap();
            push(i);
        }
        let mut o = opts.clone();
        o.vcpus = 2;
        push(gather(&o, &h).unwrap());
        let mut o = opts.clone();
        o.mem_mib = 512;
        push(gather(&o, &h).unwrap());
        let mut hc = h.clone();
        hc.cmdline.push_str(" quiet");
        push(gather(&opts, &hc).unwrap());
        let mut hc = h.clone();
        hc.engine.engine = "qemu-kvm-x86_64".into();
        push(gather(&opts, &hc).unwrap());
        let mut hc = h.clone();
        hc.engine.snapshot_format = "3.0".into();
        push(gather(&opts, &hc).unwrap());
        let mut hc = h.clone();
        hc.arch = ec1_engine::Arch::Aarch64;
        push(gather(&opts, &hc).unwrap());
        let initrd = d.path().join("initrd");
        std::fs::write(&initrd, "x").unwrap();
        let o = SandboxOptions {
            initrd: Some(initrd),
            ..opts.clone()
        };
        push(gather(&o, &h).unwrap());
        let img = d.path().join("root.img");
        std::fs::write(&img, "x").unwrap();
        let o = SandboxOptions {
            rootfs: Some(img),
            rootfs_read_only: true,
            mode: RootMode::Rootfs,
            ..opts.clone()
        };
        push(gather(&o, &h).unwrap());
        let o = SandboxOptions {
            mode: RootMode::Handoff,
            ..o
        };
        push(gather(&o, &h).unwrap());
        // Files that vanish are reported as changed.
        let now = gather(&opts, &h).unwrap();
        assert!(now.changed_files().is_empty());
        std::fs::remove_file(d.path().join("vmlinux")).unwrap();
        assert_eq!(
            now.changed_files(),
            vec![d.path().join("vmlinux").as_path()]
        );
        assert!(gather(&opts, &h).is_err());
    }

    #[test]
    fn writable_roots_cannot_be_templated() {
        let mut o = SandboxOptions::default();
        assert_eq!(unsupported_reason(&o), None);
        o.mode = RootMode::Rootfs;
        o.rootfs = Some("/img".into());
        assert!(unsupported_reason(&o).unwrap().contains("--rootfs-ro"));
        o.rootfs_read_only = true;
        assert_eq!(unsupported_reason(&o), None);
        o.rootfs = None;
        assert_eq!(unsupported_reason(&o), None);
    }
}
