//! The one place that turns `--engine` into an engine implementation.

use ec1_engine::{detect_accel, AccelChoice, Engine, EngineError, HostProbe};
use std::sync::Arc;

/// An engine for `choice` on this host: QEMU with KVM where it is usable hardware
/// virtualization, QEMU with TCG elsewhere. QEMU's version check is remembered under
/// ec1's cache directory (`qemu/`), so that it is not paid on every boot.
pub fn make_engine(choice: AccelChoice) -> Result<Arc<dyn Engine>, EngineError> {
    match ec1_guest::kernel::cache_root() {
        Some(root) => Ok(make_engine_cached(choice, &root.join("qemu"))?),
        None => {
            let accel = detect_accel(choice, &HostProbe::default())
                .map_err(EngineError::AccelUnavailable)?;
            let engine =
                ec1_engine_qemu::QemuEngine::new(accel, ec1_engine_qemu::QemuOptions::default())?;
            Ok(Arc::new(engine))
        }
    }
}

/// As [`make_engine`], but without running QEMU to check its version when an earlier
/// check of the same binary is remembered in `cache_dir` (that check costs more than a
/// whole template restore).
pub fn make_engine_cached(
    choice: AccelChoice,
    cache_dir: &std::path::Path,
) -> Result<Arc<ec1_engine_qemu::QemuEngine>, EngineError> {
    let accel =
        detect_accel(choice, &HostProbe::default()).map_err(EngineError::AccelUnavailable)?;
    let engine = ec1_engine_qemu::QemuEngine::new_cached(
        accel,
        ec1_engine_qemu::QemuOptions::default(),
        cache_dir,
    )?;
    Ok(Arc::new(engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_engine_is_always_available_here() {
        let e = make_engine(AccelChoice::Tcg).unwrap();
        assert_eq!(e.name(), "qemu-tcg");
        let d = tempfile::tempdir().unwrap();
        let c = make_engine_cached(AccelChoice::Tcg, d.path()).unwrap();
        assert_eq!(c.name(), "qemu-tcg");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "remembered"
        );
    }
}
