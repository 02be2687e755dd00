use std::path::{Path, PathBuf};

/// The acceleration an engine runs guests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// Software emulation (QEMU's TCG); works everywhere.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the user asked for (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM where it is usable, TCG elsewhere.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// Where to look for the host's virtualization support; tests point it at a fake tree.
#[derive(Debug, Clone)]
pub struct HostProbe {
    pub dev_kvm: PathBuf,
    pub sys_module: PathBuf,
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe {
            dev_kvm: PathBuf::from("/dev/kvm"),
            sys_module: PathBuf::from("/sys/module"),
        }
    }
}

impl HostProbe {
    /// `Ok(())` if `/dev/kvm` is hardware KVM we can open; otherwise why not.
    ///
    /// A nested "PVM" KVM (`kvm_pvm` module loaded) runs a stock guest kernel in an
    /// instruction emulator: far slower than TCG and unreliable, so it counts as absent.
    pub fn kvm_usable(&self) -> Result<(), String> {
        if self.sys_module.join("kvm_pvm").exists() {
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

/// Chooses the acceleration for `choice` on the host `probe` describes.
/// An explicit `Kvm` on a host without usable KVM is an error, not a silent fallback.
pub fn detect_accel(choice: AccelChoice, probe: &HostProbe) -> Result<Accel, String> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => probe.kvm_usable().map(|_| Accel::Kvm),
        AccelChoice::Auto => Ok(if probe.kvm_usable().is_ok() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }),
    }
}

/// Convenience for tests and callers holding paths.
pub fn probe_at(root: &Path) -> HostProbe {
    HostProbe {
        dev_kvm: root.join("dev/kvm"),
        sys_module: root.join("sys/module"),
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
        assert_eq!(detect_accel(AccelChoice::Auto, &p), Ok(Accel::Tcg));
        let err = detect_accel(AccelChoice::Kvm, &p).unwrap_err();
        assert!(err.contains("PVM"), "{err}");
    }

    #[test]
    fn usable_kvm_is_chosen_by_auto() {
        let (_d, p) = tree(false, true);
        assert_eq!(detect_accel(AccelChoice::Auto, &p), Ok(Accel::Kvm));
        assert_eq!(detect_accel(AccelChoice::Kvm, &p), Ok(Accel::Kvm));
    }

    #[test]
    fn missing_kvm_means_tcg() {
        let (_d, p) = tree(false, false);
        assert_eq!(detect_accel(AccelChoice::Auto, &p), Ok(Accel::Tcg));
        assert!(detect_accel(AccelChoice::Kvm, &p).is_err());
        assert_eq!(detect_accel(AccelChoice::Tcg, &p), Ok(Accel::Tcg));
        assert_eq!(Accel::Tcg.as_str(), "tcg");
        assert_eq!(Accel::Kvm.as_str(), "kvm");
    }
}
