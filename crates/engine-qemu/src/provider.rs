//! The QEMU engine as the registry sees it: `--engine qemu[-kvm|-tcg|-hvf]`.

use std::path::Path;
use std::sync::Arc;

use ec1_engine::{
    Arch, Capabilities, Engine, EngineError, EngineProvider, EngineRequest, SnapshotInfo,
};

use crate::accel::{detect_accel, AccelChoice, HostProbe};
use crate::version::resolve_binary;
use crate::version_cache::find_in_path;
use crate::{QemuEngine, QemuOptions};

/// The QEMU engine's registration.
#[derive(Debug, Default)]
pub struct QemuProvider {
    probe: HostProbe,
}

/// Registers the QEMU engine with [`ec1_engine::registry`].
pub fn register() {
    ec1_engine::registry::register(Arc::new(QemuProvider::default()));
}

impl EngineProvider for QemuProvider {
    fn name(&self) -> &str {
        "qemu"
    }

    fn available(&self, arch: Arch, variant: Option<&str>) -> Result<(), String> {
        let choice = AccelChoice::parse(variant)?;
        detect_accel(choice, arch, &self.probe)?;
        let binary = resolve_binary(None, arch);
        match find_in_path(&binary) {
            Some(_) => Ok(()),
            None => Err(format!(
                "{} is not installed ({})",
                binary.display(),
                crate::version::install_command_for(&binary)
            )),
        }
    }

    fn capabilities(&self, arch: Arch) -> Capabilities {
        crate::capabilities::of(arch)
    }

    fn create(&self, request: &EngineRequest) -> Result<Arc<dyn Engine>, EngineError> {
        let choice =
            AccelChoice::parse(request.variant.as_deref()).map_err(EngineError::Unavailable)?;
        let accel =
            detect_accel(choice, request.arch, &self.probe).map_err(EngineError::Unavailable)?;
        let opts = QemuOptions {
            arch: request.arch,
            ..QemuOptions::default()
        };
        let engine = match &request.cache_dir {
            Some(dir) => QemuEngine::new_cached(accel, opts, dir)?,
            None => QemuEngine::new(accel, opts)?,
        };
        Ok(Arc::new(engine))
    }

    fn describe_snapshot(&self, state_path: &Path) -> Option<Result<SnapshotInfo, EngineError>> {
        match crate::snapshot::SnapshotFile::open(state_path) {
            Err(crate::snapshot::SnapshotFileError::Foreign { .. }) => None,
            Err(e) => Some(Err(e.into())),
            Ok(snap) => Some(Ok(SnapshotInfo {
                format_version: snap.version_string(),
                arch: snap.machine.guest_arch(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_makes_engines_for_both_architectures() {
        let p = QemuProvider::default();
        assert_eq!(p.name(), "qemu");
        p.available(Arch::X86_64, Some("tcg")).unwrap();
        p.available(Arch::Aarch64, None).unwrap();
        let err = p.available(Arch::X86_64, Some("xen")).unwrap_err();
        assert!(err.contains("xen"), "{err}");
        let d = tempfile::tempdir().unwrap();
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let e = p
                .create(&EngineRequest {
                    arch,
                    variant: Some("tcg".into()),
                    cache_dir: Some(d.path().to_path_buf()),
                })
                .unwrap();
            assert_eq!(e.name(), "qemu-tcg");
            let id = e.cache_identity();
            assert_eq!(id.engine, format!("qemu-tcg-{arch}"));
            assert!(id.files[0].is_absolute(), "{:?}", id.files);
            assert_eq!(id.files.len(), if arch == Arch::X86_64 { 2 } else { 1 });
            assert_eq!(e.capabilities().ctrl_alt_del, arch == Arch::X86_64);
        }
        let err = p
            .create(&EngineRequest {
                arch: Arch::Aarch64,
                variant: Some("kvm".into()),
                cache_dir: None,
            })
            .err()
            .unwrap();
        assert!(err.to_string().contains("qemu-tcg"), "{err}");
        // Snapshots: a foreign file is someone else's; a missing one is an error.
        let foreign = d.path().join("foreign");
        std::fs::write(&foreign, b"not a snapshot at all, but long enough to read").unwrap();
        assert!(p.describe_snapshot(&foreign).is_none());
        assert!(p
            .describe_snapshot(&d.path().join("missing"))
            .unwrap()
            .is_err());
    }
}
