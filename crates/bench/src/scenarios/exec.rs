//! `exec`: round trips of `true` on one running VM — the agent protocol, the guest's
//! fork/exec and the exit status, without any boot.

use crate::error::BenchError;
use crate::progress::Progress;
use crate::sample::{Run, Stage};
use crate::schedule::repeat;
use ec1_client::{Client, Command};
use ec1_sandbox::{Sandbox, SandboxOptions};
use std::time::Instant;

/// One round trip of `true`.
pub fn exec_true(client: &Client) -> Result<Run, BenchError> {
    let t = Instant::now();
    let out = client.output(&Command::new("true"))?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(BenchError::Guest(format!(
            "`true` exited with {}",
            out.status
        )));
    }
    Ok(Run::default().phase("exec true", Stage::Work, d))
}

/// Boots one sandbox and measures `runs` round trips after `warmup`.
pub fn exec_runs(
    opts: &SandboxOptions,
    progress: &Progress,
    warmup: usize,
    runs: usize,
) -> Result<Vec<Run>, BenchError> {
    progress.say("booting the VM…");
    let sb = Sandbox::boot(opts)?;
    let client = sb.client().clone();
    let mut f = || exec_true(&client);
    let out = repeat(progress, ("ec1", &mut f), warmup, runs, (runs / 10).max(1))?;
    sb.shutdown()?;
    Ok(out)
}
