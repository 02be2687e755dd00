//! The QEMU engine's accelerator: its one option (`--engine qemu-tcg`).

use std::path::{Path, PathBuf};

use ec1_engine::Arch;

/// The acceleration QEMU runs guests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm` (Linux).
    Kvm,
    /// Software emulation (QEMU's TCG); works everywhere, for any guest architecture.
    Tcg,
    /// Apple's Hypervisor.framework (macOS on Apple Silicon, arm64 guests).
    Hvf,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Hvf => "hvf",
        }
    }
}

/// What the user asked for (the variant of `--engine qemu-<accel>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// The host's hardware virtualization where it is usable for the guest's
    /// architecture, TCG elsewhere.
    #[default]
    Auto,
    Kvm,
    Tcg,
    Hvf,
}

impl AccelChoice {
    /// `None` (plain `qemu`) is `Auto`; otherwise `kvm`, `tcg` or `hvf`.
    pub fn parse(variant: Option<&str>) -> Result<AccelChoice, String> {
        match variant {
            None | Some("auto") => Ok(AccelChoice::Auto),
            Some("kvm") => Ok(AccelChoice::Kvm),
            Some("tcg") => Ok(AccelChoice::Tcg),
            Some("hvf") => Ok(AccelChoice::Hvf),
            Some(other) => Err(format!(
                "the qemu engine has no accelerator {other:?}: use qemu-kvm, qemu-tcg, qemu-hvf or qemu"
            )),
        }
    }
}

/// Where to look for the host's virtualization support; tests point it at a fake tree.
#[derive(Debug, Clone)]
pub struct HostProbe {
    pub dev_kvm: PathBuf,
    pub sys_module: PathBuf,
    /// `/proc/modules`: where a PVM KVM shows when `/sys` is not there (in a jail).
    pub proc_modules: PathBuf,
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe {
            dev_kvm: PathBuf::from("/dev/kvm"),
            sys_module: PathBuf::from("/sys/module"),
            proc_modules: PathBuf::from("/proc/modules"),
        }
    }
}

impl HostProbe {
    /// `Ok(())` if `/dev/kvm` is hardware KVM we can open; otherwise why not.
    ///
    /// A nested "PVM" KVM (`kvm_pvm` module loaded) runs a stock guest kernel in an
    /// instruction emulator: far slower than TCG and unreliable, so it counts as absent.
    pub fn kvm_usable(&self) -> Result<(), String> {
        // /proc/modules is read only when /sys has no answer (this runs on every start).
        let pvm_loaded = || {
            std::fs::read_to_string(&self.proc_modules)
                .is_ok_and(|m| m.lines().any(|l| l.starts_with("kvm_pvm ")))
        };
        if self.sys_module.join("kvm_pvm").exists() || pvm_loaded() {
            return Err(format!(
                "{} is a nested PVM KVM ({} is loaded), which cannot run a stock guest kernel at speed",
                self.dev_kvm.display(),
                self.sys_module.join("kvm_pvm").display()
            ));
        }
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.dev_kvm)
        {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{} is not usable: {e}", self.dev_kvm.display())),
        }
    }
}

/// Chooses the acceleration for `choice` and `arch` guests on the host `probe`
/// describes. An explicit `Kvm` or `Hvf` that cannot run the guest is an error, not a
/// silent fallback; hardware acceleration only runs guests of the host's own
/// architecture.
pub fn detect_accel(choice: AccelChoice, arch: Arch, probe: &HostProbe) -> Result<Accel, String> {
    let native = |accel: Accel| {
        if arch == Arch::host() {
            Ok(())
        } else {
            Err(format!(
                "{} runs only {} guests on this host, not {arch}: use qemu-tcg",
                accel.as_str(),
                Arch::host()
            ))
        }
    };
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => native(Accel::Kvm)
            .and_then(|()| probe.kvm_usable())
            .map(|_| Accel::Kvm),
        AccelChoice::Hvf => native(Accel::Hvf)
            .and_then(|()| hvf_usable())
            .map(|_| Accel::Hvf),
        AccelChoice::Auto => Ok(
            if native(Accel::Kvm).is_ok() && probe.kvm_usable().is_ok() {
                Accel::Kvm
            } else if native(Accel::Hvf).is_ok() && hvf_usable().is_ok() {
                Accel::Hvf
            } else {
                Accel::Tcg
            },
        ),
    }
}

/// Whether Hypervisor.framework can run guests: on macOS (arm64) only.
fn hvf_usable() -> Result<(), String> {
    if cfg!(target_os = "macos") {
        Ok(())
    } else {
        Err("hvf (Hypervisor.framework) exists only on macOS".into())
    }
}

/// Convenience for tests and callers holding paths.
pub fn probe_at(root: &Path) -> HostProbe {
    HostProbe {
        dev_kvm: root.join("dev/kvm"),
        sys_module: root.join("sys/module"),
        proc_modules: root.join("proc/modules"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(pvm: bool, kvm: bool) -> (tempdir::Dir, HostProbe) {
        let d = tempdir::Dir::new();
        std::fs::create_dir_all(d.0.join("dev")).unwrap();
        std::fs::create_dir_all(d.0.join("sys/module")).unwrap();
        if pvm {
            std::fs::create_dir_all(d.0.join("sys/module/kvm_pvm")).unwrap();
        }
        if kvm {
            std::fs::write(d.0.join("dev/kvm"), b"").unwrap();
        }
        let p = probe_at(&d.0);
        (d, p)
    }

    /// A tiny self-cleaning temp dir, to keep this crate dependency-free.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "ec1-accel-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn pvm_host_falls_back_to_tcg() {
        let (_d, p) = tree(true, true);
        let x = Arch::X86_64;
        assert_eq!(detect_accel(AccelChoice::Auto, x, &p), Ok(Accel::Tcg));
        let err = detect_accel(AccelChoice::Kvm, x, &p).unwrap_err();
        assert!(err.contains("PVM"), "{err}");
    }

    #[test]
    fn a_pvm_kvm_is_seen_in_proc_modules_without_sys() {
        let (d, p) = tree(false, true);
        std::fs::create_dir_all(d.0.join("proc")).unwrap();
        std::fs::write(
            d.0.join("proc/modules"),
            "kvm_pvm 1 0 - Live 0x0\nkvm 2 1 kvm_pvm, Live 0x0\n",
        )
        .unwrap();
        assert_eq!(
            detect_accel(AccelChoice::Auto, Arch::X86_64, &p),
            Ok(Accel::Tcg)
        );
        assert!(detect_accel(AccelChoice::Kvm, Arch::X86_64, &p)
            .unwrap_err()
            .contains("PVM"));
    }

    #[test]
    fn usable_kvm_is_chosen_by_auto() {
        let (_d, p) = tree(false, true);
        let x = Arch::X86_64;
        assert_eq!(detect_accel(AccelChoice::Auto, x, &p), Ok(Accel::Kvm));
        assert_eq!(detect_accel(AccelChoice::Kvm, x, &p), Ok(Accel::Kvm));
        // KVM cannot run another architecture's guest: auto emulates it.
        let a = Arch::Aarch64;
        assert_eq!(detect_accel(AccelChoice::Auto, a, &p), Ok(Accel::Tcg));
        let err = detect_accel(AccelChoice::Kvm, a, &p).unwrap_err();
        assert!(
            err.contains("not aarch64") && err.contains("qemu-tcg"),
            "{err}"
        );
    }

    #[test]
    fn missing_kvm_means_tcg() {
        let (_d, p) = tree(false, false);
        let x = Arch::X86_64;
        assert_eq!(detect_accel(AccelChoice::Auto, x, &p), Ok(Accel::Tcg));
        assert!(detect_accel(AccelChoice::Kvm, x, &p).is_err());
        assert_eq!(detect_accel(AccelChoice::Tcg, x, &p), Ok(Accel::Tcg));
        assert_eq!(Accel::Tcg.as_str(), "tcg");
        assert_eq!(Accel::Kvm.as_str(), "kvm");
        assert_eq!(Accel::Hvf.as_str(), "hvf");
        let err = detect_accel(AccelChoice::Hvf, x, &p).unwrap_err();
        assert!(err.contains("macOS") || err.contains("only"), "{err}");
    }

    #[test]
    fn accelerators_parse_from_the_engine_variant() {
        assert_eq!(AccelChoice::parse(None), Ok(AccelChoice::Auto));
        assert_eq!(AccelChoice::parse(Some("tcg")), Ok(AccelChoice::Tcg));
        assert_eq!(AccelChoice::parse(Some("kvm")), Ok(AccelChoice::Kvm));
        assert_eq!(AccelChoice::parse(Some("hvf")), Ok(AccelChoice::Hvf));
        assert_eq!(AccelChoice::parse(Some("auto")), Ok(AccelChoice::Auto));
        let err = AccelChoice::parse(Some("whpx")).unwrap_err();
        assert!(err.contains("whpx") && err.contains("qemu-tcg"), "{err}");
    }
}
