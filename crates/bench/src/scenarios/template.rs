//! `template`: restore from a boot template → `true`.
//!
//! Templates (snapshot a booted guest once, restore clones from it) are being built in
//! another issue. Until the engine can snapshot *and* ec1-sandbox can boot from a
//! template, this scenario fails and says which of the two is missing: a benchmark that
//! printed cold-boot numbers under a "template" label would mislead.

use crate::error::BenchError;
use ec1_engine::Capabilities;
use ec1_sandbox::{make_engine, SandboxOptions};

/// Why templates cannot be measured with an engine that has `caps`.
pub fn unavailable_reason(caps: Capabilities) -> String {
    if caps.snapshots {
        "the engine can snapshot, but ec1-sandbox has no boot-template API to restore a sandbox from yet".into()
    } else {
        "it reports no snapshot support".into()
    }
}

/// Checks the engine the sandbox would use; always an error today (see the module
/// documentation).
pub fn template_runs(opts: &SandboxOptions) -> Result<Vec<crate::sample::Run>, BenchError> {
    let engine = make_engine(opts.engine)?;
    Err(BenchError::TemplatesUnavailable {
        engine: engine.name().to_string(),
        why: unavailable_reason(engine.capabilities()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_piece_is_named() {
        assert!(unavailable_reason(Capabilities::default()).contains("no snapshot support"));
        let caps = Capabilities {
            snapshots: true,
            ..Default::default()
        };
        assert!(unavailable_reason(caps).contains("boot-template API"));
    }

    #[test]
    fn the_scenario_fails_clearly_on_todays_engine() {
        let e = template_runs(&SandboxOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("templates are not available yet on this engine"),
            "{e}"
        );
    }
}
