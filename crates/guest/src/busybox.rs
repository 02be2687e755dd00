//! Another architecture's busybox for the agent initramfs: Debian's `busybox-static`
//! for that architecture, downloaded with apt (after `dpkg --add-architecture`) and
//! unpacked into ec1's cache, without installing it (it would replace the host's own
//! `/bin/busybox`).

use std::path::{Path, PathBuf};
use std::process::Command;

use ec1_engine::Arch;

use crate::kernel::{io, run, KernelError};

/// Debian's name of `arch`.
pub fn debian_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Aarch64 => "arm64",
    }
}

/// Makes sure `<cache>/busybox/<arch>/busybox` holds Debian's static busybox for
/// `arch` (a guest architecture other than the host's) and returns its path.
pub fn ensure_foreign(
    cache_root: &Path,
    arch: Arch,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, KernelError> {
    let path = crate::initramfs::foreign_busybox_path(cache_root, arch);
    if path.is_file() {
        return Ok(path);
    }
    let deb_arch = debian_arch(arch);
    let foreign = run(
        Command::new("dpkg").arg("--print-foreign-architectures"),
        "dpkg --print-foreign-architectures",
    )?;
    if !foreign.lines().any(|l| l.trim() == deb_arch) {
        progress(&format!(
            "adding the {deb_arch} architecture to dpkg for its busybox-static"
        ));
        run(
            Command::new("dpkg").args(["--add-architecture", deb_arch]),
            &format!("dpkg --add-architecture {deb_arch}"),
        )?;
        run(
            Command::new("apt-get").args(["update", "-q"]),
            "apt-get update",
        )?;
    }
    let dir = path.parent().unwrap_or(cache_root).to_path_buf();
    let work = dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(format!("creating {}", work.display())))?;
    let result = (|| {
        progress(&format!("downloading busybox-static:{deb_arch}"));
        let pkg = format!("busybox-static:{deb_arch}");
        run(
            Command::new("apt-get")
                .current_dir(&work)
                .args(["download", "-q", &pkg]),
            &format!("apt-get download {pkg}"),
        )?;
        let deb = std::fs::read_dir(&work)
            .map_err(io(format!("reading {}", work.display())))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| KernelError::Command {
                command: format!("apt-get download {pkg}"),
                status: "exit status: 0".into(),
                tail: "no .deb was downloaded".into(),
            })?;
        let unpacked = work.join("x");
        run(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
            "dpkg-deb -x",
        )?;
        let bytes = std::fs::read(unpacked.join("bin/busybox"))
            .map_err(io(format!("reading busybox from {}", deb.display())))?;
        crate::agent::check_static(&bytes, crate::agent::elf_machine(arch)).map_err(|why| {
            KernelError::Command {
                command: format!("apt-get download {pkg}"),
                status: "exit status: 0".into(),
                tail: format!("its bin/busybox is not a static {arch} executable: {why}"),
            }
        })?;
        let tmp = work.join("busybox");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| {
                std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            })
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io(format!("installing {}", path.display())))
    })();
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aarch64_busybox_is_fetched_once_into_the_cache() {
        let root = crate::kernel::cache_root().unwrap();
        let mut lines = Vec::new();
        let p = ensure_foreign(&root, Arch::Aarch64, &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!(
            p,
            crate::initramfs::foreign_busybox_path(&root, Arch::Aarch64)
        );
        let bytes = std::fs::read(&p).unwrap();
        crate::agent::check_static(&bytes, crate::agent::EM_AARCH64).unwrap();
        // A second call finds it and says nothing.
        lines.clear();
        assert_eq!(
            ensure_foreign(&root, Arch::Aarch64, &mut |l| lines.push(l.to_string())).unwrap(),
            p
        );
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(debian_arch(Arch::Aarch64), "arm64");
        assert_eq!(debian_arch(Arch::X86_64), "amd64");
    }
}
