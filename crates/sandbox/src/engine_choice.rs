//! The one place that turns `--engine` into an engine implementation.

use ec1_engine::{detect_accel, AccelChoice, Engine, EngineError, HostProbe};
use std::sync::Arc;

/// An engine for `choice` on this host: QEMU with KVM where it is usable hardware
/// virtualization, QEMU with TCG elsewhere.
pub fn make_engine(choice: AccelChoice) -> Result<Arc<dyn Engine>, EngineError> {
    let accel =
        detect_accel(choice, &HostProbe::default()).map_err(EngineError::AccelUnavailable)?;
    let engine = ec1_engine_qemu::QemuEngine::new(accel, ec1_engine_qemu::QemuOptions::default())?;
    Ok(Arc::new(engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_engine_is_always_available_here() {
        let e = make_engine(AccelChoice::Tcg).unwrap();
        assert_eq!(e.name(), "qemu-tcg");
    }
}
