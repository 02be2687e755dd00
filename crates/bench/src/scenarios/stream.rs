//! `stream`: how fast a command's stdout reaches the host. The guest runs
//! `dd if=/dev/zero bs=64K count=<16 per MiB>`; the host reads every chunk as the agent
//! sends it and checks the byte count, so a short read cannot pass for a fast one.
//!
//! Not `head -c`: busybox `head` copies in small pieces, and under TCG it produced only
//! ~13 MiB/s into `/dev/null` inside the guest (1.2 s for 16 MiB), so the benchmark
//! would have measured `head`, not the channel. `dd` with 64 KiB blocks writes large
//! pieces at little CPU cost. dd's summary goes to stderr, which is discarded.

use crate::error::BenchError;
use crate::progress::Progress;
use crate::sample::{Run, Stage};
use crate::schedule::repeat;
use ec1_client::{Client, Command};
use ec1_sandbox::{Sandbox, SandboxOptions};
use std::time::Instant;

const MIB: u64 = 1024 * 1024;
/// dd's block size: large writes, few system calls.
const BLOCK: u64 = 64 * 1024;

/// MiB/s for `bytes` in `secs`.
pub fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return f64::INFINITY;
    }
    bytes as f64 / MIB as f64 / secs
}

/// One transfer of `mib` MiB.
pub fn stream_once(client: &Client, mib: u32) -> Result<Run, BenchError> {
    let want = u64::from(mib) * MIB;
    let t = Instant::now();
    let count = u64::from(mib) * (MIB / BLOCK);
    let mut p = client.spawn(&Command::new("dd").args([
        "if=/dev/zero".to_string(),
        format!("bs={BLOCK}"),
        format!("count={count}"),
    ]))?;
    drop(p.stderr());
    let mut out = p
        .stdout()
        .ok_or_else(|| BenchError::Guest("the command has no stdout stream".into()))?;
    let mut got = 0u64;
    while let Some(chunk) = out.next_chunk()? {
        got += chunk.len() as u64;
    }
    let status = p.wait()?;
    let d = t.elapsed();
    if !status.success() || got != want {
        return Err(BenchError::Guest(format!(
            "`dd if=/dev/zero bs={BLOCK} count={count}` exited with {status} after {got} of {want} bytes"
        )));
    }
    Ok(Run::default()
        .phase(&format!("stream {mib} MiB"), Stage::Work, d)
        .metric(
            "stdout throughput",
            "MiB/s",
            mib_per_s(got, d.as_secs_f64()),
        ))
}

/// Boots one sandbox and measures `runs` transfers after `warmup`.
pub fn stream_runs(
    opts: &SandboxOptions,
    progress: &Progress,
    warmup: usize,
    runs: usize,
    mib: u32,
) -> Result<Vec<Run>, BenchError> {
    progress.say("booting the VM…");
    let sb = Sandbox::boot(opts)?;
    let client = sb.client().clone();
    let mut f = || stream_once(&client, mib);
    let out = repeat(progress, ("ec1", &mut f), warmup, runs, 1)?;
    sb.shutdown()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_in_mib_per_second() {
        assert_eq!(mib_per_s(64 * MIB, 0.5), 128.0);
        assert!(mib_per_s(1, 0.0).is_infinite());
    }
}
