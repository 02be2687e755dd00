//! Checks a [`VmSpec`] before anything is spawned, so that mistakes come back as clear
//! [`EngineError`]s instead of a QEMU error message or a guest that never boots.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ec1_engine::{Arch, EngineError, MemoryBacking, SerialOut, VmSpec};

/// The vCPU limit of [`VmSpec`] (Firecracker's).
pub(crate) const MAX_VCPUS: u8 = 32;

/// virtio-mmio transports of `microvm` without ACPI (no second I/O APIC): every drive
/// and the agent channel take one.
pub(crate) const VIRTIO_TRANSPORTS: usize = 8;

/// virtio-mmio transports of `microvm` with ACPI and its second I/O APIC (one per
/// line of that I/O APIC).
pub(crate) const ACPI_TRANSPORTS: usize = 24;

/// virtio-mmio transports of arm64's `virt` machine (each with its own SPI, all in
/// the device tree).
pub(crate) const VIRT_TRANSPORTS: usize = 32;

/// `sun_path` holds 108 bytes including the terminating NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// The file name of the QMP socket inside the run directory.
pub(crate) const QMP_SOCKET: &str = "qmp.sock";

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidSpec(msg.into())
}

fn check_no_nul(what: &str, bytes: &[u8]) -> Result<(), EngineError> {
    if bytes.contains(&0) {
        return Err(invalid(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

fn check_socket_path(what: &str, p: &Path) -> Result<(), EngineError> {
    let len = p.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(invalid(format!(
            "{what} {} is {len} bytes long; Unix socket paths are limited to {MAX_SOCKET_PATH} bytes: use a shorter directory",
            p.display()
        )));
    }
    Ok(())
}

/// Rejects what QEMU cannot run. Pure: looks at no file.
pub(crate) fn check_spec(spec: &VmSpec) -> Result<(), EngineError> {
    if spec.vcpus == 0 || spec.vcpus > MAX_VCPUS {
        return Err(invalid(format!(
            "vcpu_count is {}; it must be between 1 and {MAX_VCPUS}",
            spec.vcpus
        )));
    }
    if spec.smt && spec.vcpus > 1 && spec.vcpus % 2 == 1 {
        return Err(invalid(format!(
            "vcpu_count is {} with smt enabled; it must be 1 or an even number",
            spec.vcpus
        )));
    }
    if spec.mem_mib == 0 {
        return Err(invalid("mem_size_mib is 0; the guest needs memory"));
    }
    let mut ids = HashSet::new();
    for d in &spec.drives {
        if d.id.is_empty() {
            return Err(invalid("a drive has an empty drive_id"));
        }
        if !ids.insert(d.id.as_str()) {
            return Err(invalid(format!("drive_id {:?} is used twice", d.id)));
        }
        check_no_nul("a drive path", d.path.as_os_str().as_bytes())?;
    }
    let transports = crate::devices::transport_count(spec);
    let usable = crate::devices::usable_transports(spec).len();
    if transports > usable {
        return Err(invalid(match spec.arch {
            Arch::Aarch64 => format!(
                "the machine needs {transports} virtio devices; the QEMU engine's arm64 machine has {usable}"
            ),
            // Firecracker's own limit (IRQs 5-23) is lower: a configuration that
            // Firecracker accepts never gets here.
            Arch::X86_64 => format!(
                "{} drives{} and the other devices need {transports} virtio devices; the QEMU engine has {usable} (an ec1 engine limit: microvm's second I/O APIC; Firecracker's is 19); use fewer drives or devices",
                spec.drives.len(),
                if spec.agent_socket.is_some() {
                    ", the agent channel"
                } else {
                    ""
                },
            ),
        }));
    }
    crate::devices::check_devices(spec)?;
    check_no_nul("the kernel command line", spec.cmdline.as_str().as_bytes())?;
    check_no_nul("the kernel path", spec.kernel.as_os_str().as_bytes())?;
    if let Some(i) = &spec.initrd {
        check_no_nul("the initrd path", i.as_os_str().as_bytes())?;
    }
    if let SerialOut::File(p) | SerialOut::Capped { path: p, .. } = &spec.serial {
        check_no_nul("the serial output path", p.as_os_str().as_bytes())?;
    }
    if let MemoryBacking::File { path, .. } = &spec.memory {
        check_no_nul("the memory file path", path.as_os_str().as_bytes())?;
    }
    check_no_nul("the run directory", spec.run_dir.as_os_str().as_bytes())?;
    check_socket_path("the QMP socket", &spec.run_dir.join(QMP_SOCKET))?;
    if let Some(a) = &spec.agent_socket {
        check_no_nul("the agent socket path", a.as_os_str().as_bytes())?;
        check_socket_path("the agent socket", a)?;
    }
    Ok(())
}

fn file_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::File {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens `path` as a file (not a directory) with `opts`.
fn open_file(what: &'static str, path: &Path, opts: &OpenOptions) -> Result<File, EngineError> {
    let f = opts.open(path).map_err(file_err(what, path))?;
    let meta = f.metadata().map_err(file_err(what, path))?;
    if meta.is_dir() {
        return Err(file_err(what, path)(std::io::Error::from_raw_os_error(
            libc::EISDIR,
        )));
    }
    Ok(f)
}

/// Checks that `kernel` is something QEMU can boot for `arch`: on x86_64 an ELF image
/// (a `vmlinux`, booted through its PVH note) or a bzImage, on aarch64 an `Image` (or
/// an ELF vmlinux). QEMU's own message for anything else is obscure and comes only
/// after it started.
fn check_kernel_format(path: &Path, arch: Arch, kernel: File) -> Result<(), EngineError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(0x206);
    kernel
        .take(0x206)
        .read_to_end(&mut head)
        .map_err(file_err("kernel", path))?;
    match Arch::of_kernel_header(&head) {
        Ok(found) if found == arch => Ok(()),
        Ok(found) => Err(EngineError::InvalidSpec(format!(
            "the kernel {} is built for {found}, but the machine is {arch}",
            path.display()
        ))),
        Err(why) => Err(EngineError::InvalidSpec(format!(
            "the kernel {} is {why}; give boot-source.kernel_image_path {}",
            path.display(),
            match arch {
                Arch::X86_64 => "an uncompressed vmlinux or a bzImage",
                Arch::Aarch64 => "an arm64 Image",
            }
        ))),
    }
}

/// Checks that every file the guest needs is there and usable, so that a typo fails
/// before QEMU is spawned.
pub(crate) fn check_files(spec: &VmSpec) -> Result<(), EngineError> {
    let read = {
        let mut o = OpenOptions::new();
        o.read(true);
        o
    };
    let read_write = {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        o
    };
    let run_dir =
        std::fs::metadata(&spec.run_dir).map_err(file_err("run directory", &spec.run_dir))?;
    if !run_dir.is_dir() {
        return Err(file_err("run directory", &spec.run_dir)(
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let kernel = open_file("kernel", &spec.kernel, &read)?;
    check_kernel_format(&spec.kernel, spec.arch, kernel)?;
    if let Some(initrd) = &spec.initrd {
        open_file("initrd", initrd, &read)?;
    }
    for d in &spec.drives {
        if d.vhost_user {
            use std::os::unix::fs::FileTypeExt;
            let m =
                std::fs::metadata(&d.path).map_err(file_err("vhost-user drive socket", &d.path))?;
            if !m.file_type().is_socket() {
                return Err(invalid(format!(
                    "the vhost-user drive {:?}: {} is not a socket (a vhost-user-blk backend listens there)",
                    d.id,
                    d.path.display()
                )));
            }
        } else if d.read_only {
            open_file("drive image", &d.path, &read)?;
        } else {
            open_file("drive image (read-write)", &d.path, &read_write)?;
        }
    }
    if let MemoryBacking::File { path, shared } = &spec.memory {
        if *shared {
            if path.exists() {
                open_file("memory file", path, &read_write)?;
            } else {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                std::fs::metadata(dir).map_err(file_err("memory file directory", dir))?;
            }
        } else {
            // A private mapping of a missing file would be an empty, zero-filled guest.
            open_file("memory file", path, &read)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_engine::{CacheType, DriveSpec};
    use std::path::PathBuf;

    pub(crate) fn spec(dir: &Path) -> VmSpec {
        VmSpec {
            id: "t".into(),
            arch: ec1_engine::Arch::X86_64,
            kernel: dir.join("vmlinux"),
            initrd: Some(dir.join("initrd")),
            cmdline: "console=ttyS0".into(),
            vcpus: 2,
            smt: false,
            mem_mib: 128,
            drives: vec![],
            serial: SerialOut::Null,
            agent_socket: None,
            memory: MemoryBacking::Anonymous,
            run_dir: dir.to_path_buf(),
            devices: Default::default(),
        }
    }

    fn drive(id: &str, path: PathBuf, read_only: bool) -> DriveSpec {
        DriveSpec {
            id: id.into(),
            path,
            read_only,
            cache: CacheType::Unsafe,
            rate_limit: None,
            vhost_user: false,
        }
    }

    fn msg(r: Result<(), EngineError>) -> String {
        match r {
            Err(e @ EngineError::InvalidSpec(_)) => e.to_string(),
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn rejects_impossible_machines() {
        let d = Path::new("/tmp");
        let mut s = spec(d);
        assert!(check_spec(&s).is_ok());
        s.vcpus = 0;
        assert!(msg(check_spec(&s)).contains("vcpu_count is 0"));
        s.vcpus = 33;
        assert!(msg(check_spec(&s)).contains("between 1 and 32"));
        s.vcpus = 3;
        s.smt = true;
        assert!(msg(check_spec(&s)).contains("even"));
        s.vcpus = 1;
        assert!(check_spec(&s).is_ok(), "smt with one vCPU is allowed");
        s.mem_mib = 0;
        assert!(msg(check_spec(&s)).contains("mem_size_mib is 0"));
    }

    #[test]
    fn rejects_bad_drive_lists() {
        let d = Path::new("/tmp");
        let mut s = spec(d);
        s.drives = vec![drive("a", d.join("a"), true), drive("a", d.join("b"), true)];
        assert!(msg(check_spec(&s)).contains("used twice"));
        s.drives = vec![drive("", d.join("a"), true)];
        assert!(msg(check_spec(&s)).contains("empty drive_id"));
        s.drives = (0..6)
            .map(|i| drive(&format!("d{i}"), d.join("x"), true))
            .collect();
        assert!(check_spec(&s).is_ok());
        // Past the machine without ACPI, the one with its second I/O APIC: 24.
        s.agent_socket = Some(d.join("agent.sock"));
        assert!(check_spec(&s).is_ok());
        s.drives = (0..23)
            .map(|i| drive(&format!("d{i}"), d.join("x"), true))
            .collect();
        assert!(check_spec(&s).is_ok());
        s.drives.push(drive("d23", d.join("x"), true));
        assert!(msg(check_spec(&s)).contains(
            "24 drives, the agent channel and the other devices need 25 virtio devices; the QEMU engine has 24"
        ));
        s.arch = Arch::Aarch64;
        s.drives.truncate(32);
        s.drives
            .extend((24..32).map(|i| drive(&format!("d{i}"), d.join("x"), true)));
        assert!(msg(check_spec(&s)).contains("arm64 machine has 32"));
    }

    #[test]
    fn rejects_nul_bytes_and_long_socket_paths() {
        use std::os::unix::ffi::OsStringExt;
        let d = Path::new("/tmp");
        let mut s = spec(d);
        s.cmdline = "a\0b".into();
        assert!(msg(check_spec(&s)).contains("command line contains a NUL"));
        let mut s = spec(d);
        s.kernel = PathBuf::from(std::ffi::OsString::from_vec(b"/k\0".to_vec()));
        assert!(msg(check_spec(&s)).contains("kernel path"));
        let mut s = spec(d);
        s.run_dir = PathBuf::from(format!("/tmp/{}", "x".repeat(100)));
        assert!(msg(check_spec(&s)).contains("QMP socket"));
        let mut s = spec(d);
        s.agent_socket = Some(PathBuf::from(format!("/tmp/{}", "y".repeat(103))));
        assert!(msg(check_spec(&s)).contains("limited to 107 bytes"));
        let mut s = spec(d);
        s.serial = SerialOut::File(PathBuf::from(std::ffi::OsString::from_vec(
            b"/s\0".to_vec(),
        )));
        assert!(msg(check_spec(&s)).contains("serial"));
        let mut s = spec(d);
        s.memory = MemoryBacking::File {
            path: PathBuf::from(std::ffi::OsString::from_vec(b"/m\0".to_vec())),
            shared: true,
        };
        assert!(msg(check_spec(&s)).contains("memory"));
    }

    /// The start of an x86-64 ELF executable.
    fn x86_elf() -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 62;
        h
    }

    #[test]
    fn only_elf_and_bzimage_kernels_pass() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = spec(d);
        s.initrd = None;
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        for ok in [x86_elf(), bz] {
            std::fs::write(d.join("vmlinux"), ok).unwrap();
            assert!(check_files(&s).is_ok());
        }
        // An arm64 Image is refused for an x86 machine and taken for an arm64 one.
        let mut image = vec![0u8; 0x100];
        image[56..60].copy_from_slice(b"ARM\x64");
        std::fs::write(d.join("vmlinux"), &image).unwrap();
        let e = check_files(&s).unwrap_err().to_string();
        assert!(
            e.contains("built for aarch64, but the machine is x86_64"),
            "{e}"
        );
        s.arch = Arch::Aarch64;
        assert!(check_files(&s).is_ok());
        std::fs::write(d.join("vmlinux"), b"junk").unwrap();
        let e = check_files(&s).unwrap_err().to_string();
        assert!(e.contains("an arm64 Image"), "{e}");
        s.arch = Arch::X86_64;
        for bad in [&b""[..], b"\x7fEL", b"this is not a kernel image at all"] {
            std::fs::write(d.join("vmlinux"), bad).unwrap();
            let e = check_files(&s).unwrap_err().to_string();
            assert!(e.contains("neither an ELF"), "{e}");
            assert!(e.contains(&d.join("vmlinux").display().to_string()), "{e}");
        }
    }

    fn file_what(r: Result<(), EngineError>) -> (&'static str, PathBuf) {
        match r {
            Err(EngineError::File { what, path, .. }) => (what, path),
            other => panic!("expected a File error, got {other:?}"),
        }
    }

    #[test]
    fn missing_or_unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = spec(d);
        assert_eq!(file_what(check_files(&s)), ("kernel", d.join("vmlinux")));
        std::fs::write(d.join("vmlinux"), x86_elf()).unwrap();
        assert_eq!(file_what(check_files(&s)), ("initrd", d.join("initrd")));
        std::fs::create_dir(d.join("initrd")).unwrap();
        let e = check_files(&s).unwrap_err();
        assert!(e.to_string().contains("Is a directory"), "{e}");
        s.initrd = None;
        assert!(check_files(&s).is_ok());

        s.drives = vec![drive("root", d.join("root.img"), true)];
        assert_eq!(
            file_what(check_files(&s)),
            ("drive image", d.join("root.img"))
        );
        std::fs::write(d.join("root.img"), b"r").unwrap();
        assert!(check_files(&s).is_ok());

        s.run_dir = d.join("nope");
        assert_eq!(
            file_what(check_files(&s)),
            ("run directory", d.join("nope"))
        );
        s.run_dir = d.join("vmlinux");
        assert_eq!(
            file_what(check_files(&s)),
            ("run directory", d.join("vmlinux"))
        );
    }

    #[test]
    fn memory_files_are_checked_by_sharing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = spec(d);
        s.initrd = None;
        std::fs::write(d.join("vmlinux"), x86_elf()).unwrap();
        s.memory = MemoryBacking::File {
            path: d.join("mem"),
            shared: false,
        };
        assert_eq!(file_what(check_files(&s)), ("memory file", d.join("mem")));
        s.memory = MemoryBacking::File {
            path: d.join("mem"),
            shared: true,
        };
        assert!(check_files(&s).is_ok(), "a shared file is created by QEMU");
        s.memory = MemoryBacking::File {
            path: d.join("no/dir/mem"),
            shared: true,
        };
        assert_eq!(
            file_what(check_files(&s)),
            ("memory file directory", d.join("no/dir"))
        );
        std::fs::write(d.join("mem"), b"").unwrap();
        for shared in [false, true] {
            s.memory = MemoryBacking::File {
                path: d.join("mem"),
                shared,
            };
            assert!(check_files(&s).is_ok());
        }
    }

    #[test]
    fn read_write_drives_must_be_writable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut s = spec(d);
        s.initrd = None;
        std::fs::write(d.join("vmlinux"), x86_elf()).unwrap();
        let img = d.join("ro.img");
        std::fs::write(&img, b"r").unwrap();
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o444)).unwrap();
        s.drives = vec![drive("root", img.clone(), false)];
        // root ignores file modes; only check the message shape when the open fails.
        match check_files(&s) {
            Ok(()) => assert!(is_root()),
            Err(e) => assert!(e.to_string().contains("read-write"), "{e}"),
        }
        s.drives = vec![drive("root", img, true)];
        assert!(check_files(&s).is_ok());
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
}
