//! `template`: restore a fresh clone from a boot template → `true` → teardown.
//!
//! The template lives in a cache of the benchmark's own (`target/bench/templates`), so
//! a run never picks up a user's template or a warm pool; the warm-up run builds it
//! (a cold boot plus a snapshot). A run that did not restore from the template (the
//! sandbox fell back to a cold boot) is an error, never a number under this label.

use crate::error::BenchError;
use crate::sample::{Run, Stage};
use ec1_client::Command;
use ec1_sandbox::{BootPath, RestoreTimings, Sandbox, SandboxOptions, TemplateCache};
use std::path::Path;
use std::time::{Duration, Instant};

/// Phase names, in order.
pub const PHASES: [&str; 6] = [
    "lookup",
    "restore",
    "agent reconnect",
    "refresh clone",
    "exec true",
    "teardown",
];

/// The run for restore timings `t`, an exec of `exec` and a teardown of `teardown`.
pub fn phases_of(t: &RestoreTimings, exec: Duration, teardown: Duration) -> Run {
    Run::default()
        .phase(PHASES[0], Stage::Boot, t.lookup)
        .phase(PHASES[1], Stage::Boot, t.restore)
        .phase(PHASES[2], Stage::Boot, t.reconnect)
        .phase(PHASES[3], Stage::Boot, t.refresh)
        .phase(PHASES[4], Stage::Work, exec)
        .phase(PHASES[5], Stage::Teardown, teardown)
}

/// The benchmark's private template cache under `target_dir`.
pub fn cache_in(target_dir: &Path) -> TemplateCache {
    TemplateCache::at(target_dir.join("templates"))
}

/// One start from the template (built first if the cache does not have it).
pub fn template_run(opts: &SandboxOptions, cache: &TemplateCache) -> Result<Run, BenchError> {
    let sb = Sandbox::from_template(opts, cache)?;
    let timings = match (sb.boot_path(), sb.restore_timings()) {
        (BootPath::Template { .. }, Some(t)) => *t,
        (path, _) => {
            return Err(BenchError::Guest(format!(
                "the sandbox did not start from a template ({path}); nothing to measure"
            )))
        }
    };
    let t = Instant::now();
    let out = sb
        .client()
        .output(&Command::new("true"))
        .map_err(|e| BenchError::Guest(format!("`true` failed after a restore: {e}")))?;
    let exec = t.elapsed();
    if !out.status.success() {
        return Err(BenchError::Guest(format!(
            "`true` exited with {}",
            out.status
        )));
    }
    let teardown = sb.shutdown()?;
    let mut run = phases_of(&timings, exec, teardown);
    if let Some(build) = &timings.build {
        // Only the warm-up run should build; say so in the run if a measured one did.
        run = run.metric(
            "template build",
            "ms",
            (build.boot + build.snapshot).as_secs_f64() * 1e3,
        );
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_restore_timings() {
        let t = RestoreTimings {
            lookup: Duration::from_millis(1),
            restore: Duration::from_millis(40),
            reconnect: Duration::from_millis(45),
            refresh: Duration::from_millis(15),
            ..Default::default()
        };
        let r = phases_of(&t, Duration::from_millis(100), Duration::from_millis(8));
        assert!((r.total_ms() - 209.0).abs() < 1e-6, "{}", r.total_ms());
    }

    #[test]
    fn the_cache_is_private_to_the_benchmark() {
        assert_eq!(cache_in(Path::new("/t")).root(), Path::new("/t/templates"));
    }
}
