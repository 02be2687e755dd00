//! `density`: how many paused clones this host holds. A pool of `-n` clones of a
//! `--mem` MiB guest is started (in this process, on the benchmark's own cache), and
//! once it is full the benchmark reports what each clone costs: proportional set size
//! (PSS: private pages plus a share of the shared ones) of its QEMU and its share of
//! ec1's, the private part alone (USS, what one more clone adds), the TCG code buffer
//! within it, the total, the CPU all of them use while idle, how long starting them
//! took, and whether one still serves a command.

use crate::cpu::{children_named, process_cpu_ns};
use crate::error::BenchError;
use crate::progress::Progress;
use crate::sample::{Run, Stage};
use crate::scenarios::pool::BenchPool;
use ec1_client::Command;
use ec1_sandbox::{Sandbox, SandboxOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// Phase names, in order.
pub const PHASES: [&str; 3] = ["start the clones", "claim + uname", "stop them all"];

/// How long idle CPU is sampled.
const IDLE_SAMPLE: Duration = Duration::from_secs(5);

/// Memory of one process from `smaps_rollup` and `smaps`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub pss: u64,
    /// Private clean + private dirty.
    pub uss: u64,
    /// Private dirty pages of executable anonymous mappings: TCG's code buffer.
    pub code: u64,
}

/// Reads `smaps_rollup`'s `Pss`, `Private_Clean` and `Private_Dirty` (KiB).
pub fn parse_rollup(text: &str) -> Memory {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Memory {
        pss: field("Pss:"),
        uss: field("Private_Clean:") + field("Private_Dirty:"),
        code: 0,
    }
}

/// The private dirty KiB of anonymous `rwx` mappings in an `smaps` text (TCG's code
/// buffer is the only such mapping in QEMU).
pub fn parse_code(smaps: &str) -> u64 {
    let mut in_code = false;
    let mut total = 0;
    for l in smaps.lines() {
        let mut w = l.split_whitespace();
        let first = w.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let perms = w.next().unwrap_or_default();
            // address perms offset dev inode [path]: anonymous when there is no path.
            in_code = perms.starts_with("rwx") && w.nth(3).is_none();
        } else if in_code {
            if let Some(v) = l.strip_prefix("Private_Dirty:") {
                total += v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

fn memory_of(pid: u32) -> Memory {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    Memory {
        code: parse_code(&smaps),
        ..parse_rollup(&rollup)
    }
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// One density measurement of `n` clones of `opts` in the cache under `xdg`.
pub fn density_run(
    opts: &SandboxOptions,
    xdg: &Path,
    n: usize,
    warm: bool,
    progress: &Progress,
) -> Result<Run, BenchError> {
    let t = Instant::now();
    let step = (n / 20).max(1);
    let tell = |ready: usize| {
        if ready.is_multiple_of(step) {
            progress.say(&format!(
                "density: {ready}/{n} clones ready after {:.0} s",
                t.elapsed().as_secs_f64()
            ));
        }
    };
    let pool = BenchPool::start(opts, xdg, n, warm, &tell)?;
    let started = t.elapsed();
    let me = std::process::id();
    let qemus = children_named(me, "qemu-system");
    if qemus.len() != n {
        return Err(BenchError::Guest(format!(
            "{} QEMU processes for {n} clones",
            qemus.len()
        )));
    }
    progress.say(&format!(
        "density: {n} clones ready in {:.1} s; measuring",
        started.as_secs_f64()
    ));
    // Idle CPU of every clone and of ec1 over a few seconds.
    let cpu = |pids: &[u32]| -> u64 { pids.iter().filter_map(|p| process_cpu_ns(*p)).sum() };
    let mut all = qemus.clone();
    all.push(me);
    let c0 = cpu(&all);
    std::thread::sleep(IDLE_SAMPLE);
    let idle_cpu_pct =
        (cpu(&all).saturating_sub(c0)) as f64 / IDLE_SAMPLE.as_nanos() as f64 * 100.0;
    let per: Vec<Memory> = qemus.iter().map(|p| memory_of(*p)).collect();
    let ec1 = memory_of(me);
    let sum = |f: fn(&Memory) -> u64| per.iter().map(f).sum::<u64>() as f64;
    let qemu_pss = sum(|m| m.pss) / n as f64;
    let ec1_share = ec1.pss as f64 / n as f64;
    // One of them still serves a command.
    let t2 = Instant::now();
    let sb = Sandbox::from_pool(pool.options(), &pool.cache())?;
    let out = sb.client().output(&Command::new("uname").arg("-r"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(BenchError::Guest(format!(
            "a claimed clone did not run `uname -r`: {}",
            out.status
        )));
    }
    sb.shutdown()?;
    let served = t2.elapsed();
    let stopped = pool.stop();
    Ok(Run::default()
        .phase(PHASES[0], Stage::Boot, started)
        .phase(PHASES[1], Stage::Work, served)
        .phase(PHASES[2], Stage::Teardown, stopped)
        .metric("clones", "", n as f64)
        .metric("PSS per clone", "MiB", mib(qemu_pss + ec1_share))
        .metric("  QEMU PSS per clone", "MiB", mib(qemu_pss))
        .metric("  ec1 PSS share per clone", "MiB", mib(ec1_share))
        .metric(
            "USS per clone (QEMU)",
            "MiB",
            mib(sum(|m| m.uss) / n as f64),
        )
        .metric(
            "  TCG code per clone",
            "MiB",
            mib(sum(|m| m.code) / n as f64),
        )
        .metric("total PSS", "MiB", mib(sum(|m| m.pss) + ec1.pss as f64))
        .metric("idle CPU (all)", "% of a core", idle_cpu_pct))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_are_read() {
        let rollup = "00400000-7ffc [rollup]\nRss: 70000 kB\nPss: 37900 kB\nPrivate_Clean: 100 kB\nPrivate_Dirty: 20000 kB\n";
        assert_eq!(
            parse_rollup(rollup),
            Memory {
                pss: 37900,
                uss: 20100,
                code: 0
            }
        );
        let smaps = "\
7f00-7f10 rwxp 00000000 00:00 0 \n\
Private_Dirty:     12288 kB\n\
7f10-7f20 rw-p 00000000 00:00 0 \n\
Private_Dirty:       100 kB\n\
7f20-7f30 r-xp 00000000 08:01 42 /usr/bin/qemu\n\
Private_Dirty:        50 kB\n\
7f30-7f40 rwxp 00000000 08:01 43 /jit/file\n\
Private_Dirty:         7 kB\n";
        assert_eq!(parse_code(smaps), 12288);
        assert_eq!(parse_rollup(""), Memory::default());
    }
}
