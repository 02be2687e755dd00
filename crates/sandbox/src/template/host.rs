//! The host-side inputs of a template, found without the slow calls a cold boot makes
//! (`dpkg-query` for the default kernel, `busybox --list-full` and hashing for the
//! initramfs, `qemu --version` for the engine): a template start must stay far below
//! their ~70 ms.

use std::path::{Path, PathBuf};

use ec1_engine::{file_identity, Arch, Engine};

use super::key::HostFacts;
use crate::sandbox::spec_for;
use crate::{SandboxError, SandboxOptions};

/// Where dpkg records installed packages: the default kernel's path depends on the
/// installed `linux-source-6.1` version, so a change here means "resolve it again".
const DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// The file remembering the default kernel's path, in the template cache.
const DEFAULT_KERNEL_FILE: &str = ".default-kernel";

/// The default kernel for `arch` (`ec1 kernel build`'s), remembered in `dir` by the
/// identity of dpkg's database and of ec1 itself (which holds the kernel
/// configuration): the lookup asks `dpkg-query` (~10 ms) only when either changed.
pub fn default_kernel(dir: &Path, ec1: &Path, arch: Arch) -> Result<PathBuf, SandboxError> {
    let stamp = format!(
        "{}\n{}\n",
        file_identity(Path::new(DPKG_STATUS)).unwrap_or_default(),
        file_identity(ec1).unwrap_or_default()
    );
    let memo = match arch {
        Arch::X86_64 => dir.join(DEFAULT_KERNEL_FILE),
        _ => dir.join(format!("{DEFAULT_KERNEL_FILE}-{arch}")),
    };
    if let Ok(text) = std::fs::read_to_string(&memo) {
        if let Some(path) = text.strip_prefix(&stamp) {
            let p = PathBuf::from(path.trim_end_matches('\n'));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let k = ec1_guest::kernel::path(arch)?;
    let tmp = memo.with_extension(format!("tmp{}", std::process::id()));
    let saved = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, format!("{stamp}{}\n", k.display())))
        .and_then(|()| std::fs::rename(&tmp, &memo));
    if saved.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(k)
}

/// The facts for `opts` with `engine` (a template's key inputs besides the options).
pub fn facts(
    opts: &SandboxOptions,
    engine: &dyn Engine,
    cache_dir: &Path,
) -> Result<HostFacts, SandboxError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| SandboxError::Io {
            context: what,
            source,
        }
    };
    let ec1 = std::env::current_exe().map_err(io("finding ec1's own executable"))?;
    let arch = opts.guest_arch()?;
    let kernel = match &opts.kernel {
        Some(k) => k.clone(),
        None => default_kernel(cache_dir, &ec1, arch)?,
    };
    let busybox = ec1_guest::initramfs::Options::for_arch(arch)?.busybox;
    // The command line as the sandbox gives it. The engine's additions are not part
    // of the key: its device parameters follow from the machine (in the key), and the
    // host's TSC rate does not change on a host, while `cpu MHz` (where the engine
    // reads it) may wobble with frequency scaling and would churn keys.
    let spec = spec_for(opts, kernel.clone(), PathBuf::new(), Path::new("/"))?;
    Ok(HostFacts {
        engine: engine.cache_identity(),
        arch,
        ec1,
        busybox,
        kernel,
        cmdline: spec.cmdline.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_kernel_is_remembered_until_dpkg_or_ec1_change() {
        let d = tempfile::tempdir().unwrap();
        let ec1 = d.path().join("ec1");
        std::fs::write(&ec1, "v1").unwrap();
        let x = Arch::X86_64;
        let real = default_kernel(d.path(), &ec1, x).expect("the default kernel is built");
        let memo = d.path().join(DEFAULT_KERNEL_FILE);
        let text = std::fs::read_to_string(&memo).unwrap();
        assert!(text.ends_with(&format!("{}\n", real.display())), "{text}");
        // A planted answer is used while the stamp matches...
        let fake = d.path().join("vmlinux");
        std::fs::write(&fake, "k").unwrap();
        let stamp = text.strip_suffix(&format!("{}\n", real.display())).unwrap();
        std::fs::write(&memo, format!("{stamp}{}\n", fake.display())).unwrap();
        assert_eq!(default_kernel(d.path(), &ec1, x).unwrap(), fake);
        // ...and not once ec1 changed.
        std::fs::write(&ec1, "v2, rebuilt").unwrap();
        assert_eq!(default_kernel(d.path(), &ec1, x).unwrap(), real);
        // A remembered kernel that vanished is looked up again.
        let text = std::fs::read_to_string(&memo).unwrap();
        let stamp = text.strip_suffix(&format!("{}\n", real.display())).unwrap();
        std::fs::write(&memo, format!("{stamp}/nonexistent/vmlinux\n")).unwrap();
        assert_eq!(default_kernel(d.path(), &ec1, x).unwrap(), real);
    }
}
