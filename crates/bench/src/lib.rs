//! ec1's performance toolkit: `ec1 bench`.
//!
//! Measures where the time goes, so that optimisation work targets the real
//! bottleneck: a cold boot phase by phase (host-side timings from the sandbox, the
//! guest's own from the agent's readiness announcement), exec round trips, Firecracker
//! API latency, stdout throughput, and side-by-side runs against plain QEMU
//! (`--baseline-qemu`, ec1's own overhead) or another Firecracker-compatible binary
//! (`--compare`). Every run prints a table with the bottleneck named, and writes a JSON
//! report (raw runs included) and an SVG waterfall of the median run.
//!
//! Timings on a shared machine are noisy: the report records the load average, runs
//! variants alternately, and leads with medians.

pub mod args;
pub mod baseline;
pub mod bottleneck;
pub mod compare;
pub mod cpu;
pub mod error;
pub mod fmt;
pub mod host;
pub mod http;
pub mod marker;
pub mod process;
pub mod progress;
pub mod ratio;
pub mod report;
pub mod sample;
pub mod scenarios;
pub mod schedule;
pub mod stats;
pub mod svg;
pub mod table;
pub mod vmm_process;

pub use args::{BenchArgs, Scenario};
pub use error::BenchError;
pub use report::Report;

use crate::baseline::QemuDirect;
use crate::compare::{api_boot, label_for, CompareGuest};
use crate::fmt::duration_ms;
use crate::host::{load_now, HostInfo};
use crate::progress::Progress;
use crate::report::{Settings, VariantReport};
use crate::scenarios::{
    api, api_compare, cold, density, exec, pool, sandbox_options, stream, template,
};
use crate::schedule::{alternate, repeat};
use std::path::PathBuf;

/// What a benchmark produced.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    pub json: PathBuf,
    pub svg: PathBuf,
}

/// The measured variants of `args`' scenario, whether they alternated, and notes.
fn measure(
    args: &BenchArgs,
    progress: &Progress,
) -> Result<(Vec<VariantReport>, bool, Vec<String>), BenchError> {
    let opts = sandbox_options(args);
    let (w, n) = (args.warmup, args.runs());
    let mut notes = Vec::new();
    let variants = match args.scenario {
        Scenario::Cold if args.baseline_qemu => {
            progress.say("preparing the plain-QEMU baseline…");
            let q = QemuDirect::prepare(&opts)?;
            let mut a = || cold::cold_run(&opts);
            let mut b = || q.run_once();
            let (ra, rb) = alternate(progress, ("ec1", &mut a), ("plain qemu", &mut b), w, n)?;
            notes.push(
                "plain qemu: the same qemu_args() command line without -S (ec1 starts QEMU paused and releases it over QMP)"
                    .into(),
            );
            vec![
                VariantReport::from_runs("ec1", ra)?,
                VariantReport::from_runs("plain qemu", rb)?,
            ]
        }
        Scenario::Cold if args.compare.is_some() => {
            let bin = args.compare.clone().unwrap_or_default();
            let ec1 = process::ec1_binary(args.ec1.as_deref())?;
            let guest = CompareGuest::prepare(&opts)?;
            let (la, lb) = ("ec1 --api-sock".to_string(), label_for(&bin, &ec1));
            let mut a = || api_boot(&ec1, &guest);
            let mut b = || api_boot(&bin, &guest);
            let (ra, rb) = alternate(progress, (&la, &mut a), (&lb, &mut b), w, n)?;
            notes.push(
                "guest up = the guest's serial marker on the VMM's stdout (a foreign binary has no ec1 agent channel); \
                 both boot the same kernel, agent initramfs + marker script, and command line"
                    .into(),
            );
            vec![
                VariantReport::from_runs(&la, ra)?,
                VariantReport::from_runs(&lb, rb)?,
            ]
        }
        Scenario::Cold => {
            let mut f = || cold::cold_run(&opts);
            vec![VariantReport::from_runs(
                "ec1",
                repeat(progress, ("ec1", &mut f), w, n, 1)?,
            )?]
        }
        Scenario::Exec => vec![VariantReport::from_runs(
            "ec1",
            exec::exec_runs(&opts, progress, w, n)?,
        )?],
        Scenario::Stream => vec![VariantReport::from_runs(
            "ec1",
            stream::stream_runs(&opts, progress, w, n, args.stream_mib)?,
        )?],
        Scenario::Api if args.compare.is_some() => {
            let bin = args.compare.clone().unwrap_or_default();
            let ec1 = process::ec1_binary(args.ec1.as_deref())?;
            let (la, lb) = ("ec1 --api-sock".to_string(), label_for(&bin, &ec1));
            let n = args.runs.map_or(20, |n| n as usize);
            let mut a = || api_compare::api_compare_run(&ec1);
            let mut b = || api_compare::api_compare_run(&bin);
            let (ra, rb) = alternate(progress, (&la, &mut a), (&lb, &mut b), w, n)?;
            notes.push(format!(
                "one fresh process per run; latencies: median of {} requests on one keep-alive connection; requests/s and CPU: {} clients sending GET / for 0.3 s",
                api_compare::LATENCY_SAMPLES,
                api_compare::CLIENTS
            ));
            vec![
                VariantReport::from_runs(&la, ra)?,
                VariantReport::from_runs(&lb, rb)?,
            ]
        }
        Scenario::Api => {
            let ec1 = process::ec1_binary(args.ec1.as_deref())?;
            let (runs, up) = api::api_runs(&ec1, progress, w, n)?;
            notes.push(format!(
                "ec1 --api-sock: socket up {} after spawn",
                duration_ms(up.as_secs_f64() * 1e3)
            ));
            vec![VariantReport::from_runs("ec1 --api-sock", runs)?]
        }
        Scenario::Density => {
            let xdg = std::path::absolute("target/bench/xdg-density")
                .unwrap_or_else(|_| "target/bench/xdg-density".into());
            let run = density::density_run(&opts, &xdg, n, !args.lean, progress)?;
            notes.push(format!(
                "{n} clones of a {} MiB guest{}, paused in one pool (this process; cache {}); PSS = private pages + a share of shared ones, USS = private pages only",
                args.mem,
                if args.lean { " without warm-up (--lean)" } else { ", warmed up" },
                xdg.display()
            ));
            vec![VariantReport::from_runs("ec1 pool", vec![run])?]
        }
        Scenario::Template if args.pool => {
            let ec1 = process::ec1_binary(args.ec1.as_deref())?;
            let xdg = std::path::absolute("target/bench/xdg")
                .unwrap_or_else(|_| "target/bench/xdg".into());
            progress.say("starting the benchmark's pool (it builds the template first)…");
            let p = pool::BenchPool::start(&opts, &xdg, pool::SIZE, true, &|_| {})?;
            let mut f = || p.run_once(&ec1);
            let runs = repeat(progress, ("ec1 run (pool)", &mut f), w, n, 1)?;
            notes.push(format!(
                "whole `ec1 run -- true` processes, wall clock; the pool (2 clones, in this process, cache {}) is full before each run",
                xdg.display()
            ));
            vec![VariantReport::from_runs("ec1 run (pool)", runs)?]
        }
        Scenario::Template => {
            let cache = template::cache_in(std::path::Path::new("target/bench"));
            let mut f = || template::template_run(&opts, &cache);
            // At least one warm-up: it builds the template.
            let runs = repeat(progress, ("ec1 template", &mut f), w.max(1), n, 1)?;
            notes.push(format!(
                "template cache: {} (the first warm-up run builds it)",
                cache.root().display()
            ));
            vec![VariantReport::from_runs("ec1 template", runs)?]
        }
    };
    Ok((
        variants,
        (matches!(args.scenario, Scenario::Cold) && args.baseline_qemu) || args.compare.is_some(),
        notes,
    ))
}

/// Runs the benchmark `args` asks for and writes its JSON report and SVG waterfall.
pub fn execute(args: &BenchArgs) -> Result<Outcome, BenchError> {
    args.validate()?;
    let mut host = HostInfo::probe();
    let progress = Progress::new(args.scenario.name(), args.quiet);
    let (variants, alternated, notes) = measure(args, &progress)?;
    host.load_end = load_now();
    let settings = Settings {
        runs: args.runs(),
        warmup: args.warmup,
        kernel: args.kernel.as_ref().map(|k| k.display().to_string()),
        boot_args: args.boot_args.clone(),
        alternated,
    };
    let mut report = Report::new(args.scenario.name(), host, settings, variants);
    report.notes.extend(notes);
    report.notes.extend(report.host.noise_note());
    let (json, svg) = (args.json_path(), args.svg_path());
    report.write_json(&json)?;
    svg::write_waterfall(&report, &svg)?;
    Ok(Outcome { report, json, svg })
}

/// `ec1 bench`: runs, prints the table and the files written; returns the exit code
/// (2 for unusable options, 1 for a failed measurement).
pub fn run(args: &BenchArgs) -> i32 {
    match execute(args) {
        Ok(o) => {
            print!("{}", table::render(&o.report));
            println!("\nJSON report: {}", o.json.display());
            println!("SVG waterfall: {}", o.svg.display());
            0
        }
        Err(e @ BenchError::Usage(_)) => {
            eprintln!("ec1 bench: {e}");
            2
        }
        Err(e) => {
            eprintln!("ec1 bench: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(a: &[&str]) -> BenchArgs {
        Cli::parse_from(std::iter::once("bench").chain(a.iter().copied())).bench
    }

    #[test]
    fn exit_codes_tell_usage_from_failure() {
        // Refused before anything runs.
        assert_eq!(run(&args(&["exec", "--baseline-qemu", "-q"])), 2);
        // `api` needs an ec1 binary; the test harness is not one.
        let e = execute(&args(&["api", "-q", "-n", "1"])).unwrap_err();
        assert!(matches!(e, BenchError::Ec1NotFound { .. }), "{e}");
    }
}
