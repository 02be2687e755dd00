//! `ec1 bench`'s arguments (parsed by the `ec1` CLI through clap's `Args`).

use crate::error::BenchError;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// A fresh VM: boot → agent ready → exec `true` → shutdown, phase by phase.
    Cold,
    /// Round trips of `true` on one running VM.
    Exec,
    /// Latency of `GET /` and `PUT /machine-config` against a live `ec1 --api-sock`.
    Api,
    /// stdout throughput of a command in the guest.
    Stream,
    /// Restore from a boot template → `true` (`--pool`: whole `ec1 run -- true`
    /// processes against a warm pool).
    Template,
    /// `-n` paused pool clones at once: memory per clone, idle CPU, start time.
    Density,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Cold => "cold",
            Scenario::Exec => "exec",
            Scenario::Api => "api",
            Scenario::Stream => "stream",
            Scenario::Template => "template",
            Scenario::Density => "density",
        }
    }

    /// Runs when `-n` is not given: boots are slow, round trips are fast and need
    /// many samples for a stable p99.
    pub fn default_runs(self) -> usize {
        match self {
            Scenario::Cold | Scenario::Stream | Scenario::Template => 10,
            Scenario::Exec => 200,
            Scenario::Api => 500,
            Scenario::Density => 100,
        }
    }
}

/// `ec1 bench <scenario> [options]`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Measured runs (default: 10 for cold/stream/template, 200 for exec, 500 for api);
    /// for density, the number of clones (default 100).
    #[arg(short = 'n', long = "runs", value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: Option<u64>,
    /// Unmeasured runs first (caches, page cache, CPU frequency).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Where to write the JSON report (default: target/bench/<scenario>.json).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Where to write the SVG waterfall (default: target/bench/<scenario>.svg).
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
    /// cold: also boot the same kernel and agent with plain QEMU (no ec1), alternating.
    #[arg(long)]
    pub baseline_qemu: bool,
    /// cold, api: drive this Firecracker-compatible binary through the API, alternating
    /// with `ec1 --api-sock` driven the same way (api: one fresh process per run; 20
    /// runs unless -n).
    #[arg(long, value_name = "BIN")]
    pub compare: Option<PathBuf>,
    /// Guest kernel (default: the kernel `ec1 kernel build` made).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The guest architecture (default: the kernel's, or the host's for the default
    /// kernel): `aarch64` measures arm64 guests.
    #[arg(long, value_parser = ec1_engine::Arch::parse)]
    pub arch: Option<ec1_engine::Arch>,
    /// Extra guest kernel command-line argument (repeatable), to measure boot tuning.
    #[arg(long = "boot-arg", value_name = "ARG")]
    pub boot_args: Vec<String>,
    /// The ec1 binary that `api` and `--compare` start (default: this program).
    #[arg(long, value_name = "PATH")]
    pub ec1: Option<PathBuf>,
    /// template: measure whole `ec1 run -- true` processes against a warm pool (wall
    /// clock) instead of restores of the template.
    #[arg(long)]
    pub pool: bool,
    /// Guest memory in MiB (guest scenarios).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..))]
    pub mem: u32,
    /// density: clones without the pool's warm-up (less memory each; a claimant's
    /// first command then pays for TCG's translation).
    #[arg(long)]
    pub lean: bool,
    /// stream: MiB the guest writes to stdout per run.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub stream_mib: u32,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl BenchArgs {
    /// Measured runs for this scenario.
    pub fn runs(&self) -> usize {
        self.runs
            .map(|n| n as usize)
            .unwrap_or_else(|| self.scenario.default_runs())
    }

    /// Refuses combinations that would silently measure something else.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.baseline_qemu && self.scenario != Scenario::Cold {
            return Err(BenchError::Usage(format!(
                "--baseline-qemu applies to the cold scenario, not {}",
                self.scenario.name()
            )));
        }
        if self.compare.is_some() && !matches!(self.scenario, Scenario::Cold | Scenario::Api) {
            return Err(BenchError::Usage(format!(
                "--compare applies to the cold and api scenarios, not {}",
                self.scenario.name()
            )));
        }
        if self.pool && self.scenario != Scenario::Template {
            return Err(BenchError::Usage(format!(
                "--pool applies to the template scenario, not {}",
                self.scenario.name()
            )));
        }
        if self.lean && self.scenario != Scenario::Density {
            return Err(BenchError::Usage(format!(
                "--lean applies to the density scenario, not {}",
                self.scenario.name()
            )));
        }
        if self.baseline_qemu && self.compare.is_some() {
            return Err(BenchError::Usage(
                "--baseline-qemu and --compare are separate measurements: run them one at a time"
                    .into(),
            ));
        }
        if let Some(bad) = self
            .boot_args
            .iter()
            .find(|a| a.trim().is_empty() || a.contains('\n'))
        {
            return Err(BenchError::Usage(format!(
                "--boot-arg {bad:?} is empty or has a line break"
            )));
        }
        Ok(())
    }

    /// The JSON report's path.
    pub fn json_path(&self) -> PathBuf {
        self.json
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("target/bench/{}.json", self.scenario.name())))
    }

    /// The SVG waterfall's path.
    pub fn svg_path(&self) -> PathBuf {
        self.svg
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("target/bench/{}.svg", self.scenario.name())))
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

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn defaults_depend_on_the_scenario() {
        let a = parse(&["cold"]).unwrap();
        assert_eq!((a.runs(), a.warmup, a.stream_mib), (10, 1, 64));
        assert_eq!(a.json_path(), PathBuf::from("target/bench/cold.json"));
        assert_eq!(a.svg_path(), PathBuf::from("target/bench/cold.svg"));
        assert_eq!(parse(&["exec"]).unwrap().runs(), 200);
        assert_eq!(parse(&["api"]).unwrap().runs(), 500);
        assert_eq!(parse(&["stream"]).unwrap().runs(), 10);
        assert_eq!(parse(&["template"]).unwrap().scenario.name(), "template");
        a.validate().unwrap();
    }

    #[test]
    fn every_option_parses() {
        let a = parse(&[
            "cold",
            "-n",
            "2",
            "--warmup",
            "0",
            "--json",
            "r.json",
            "--svg",
            "w.svg",
            "--baseline-qemu",
            "--kernel",
            "/k",
            "--boot-arg",
            "lpj=1",
            "--boot-arg",
            "quiet",
            "--ec1",
            "/e",
            "--stream-mib",
            "8",
            "-q",
        ])
        .unwrap();
        assert_eq!((a.runs(), a.warmup), (2, 0));
        assert_eq!(a.json_path(), PathBuf::from("r.json"));
        assert_eq!(a.svg_path(), PathBuf::from("w.svg"));
        assert!(a.baseline_qemu && a.quiet);
        assert_eq!(a.kernel, Some(PathBuf::from("/k")));
        assert_eq!(a.boot_args, ["lpj=1", "quiet"]);
        assert_eq!(a.ec1, Some(PathBuf::from("/e")));
        assert_eq!(a.stream_mib, 8);
        assert_eq!(
            parse(&["cold", "--compare", "/bin/fc"]).unwrap().compare,
            Some(PathBuf::from("/bin/fc"))
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["warm"]).is_err());
        assert!(parse(&["cold", "-n", "0"]).is_err());
        assert!(parse(&["stream", "--stream-mib", "0"]).is_err());
        let e = parse(&["exec", "--baseline-qemu"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("cold scenario"), "{e}");
        let e = parse(&["cold", "--baseline-qemu", "--compare", "x"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("one at a time"), "{e}");
        let e = parse(&["cold", "--pool"]).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("template scenario"), "{e}");
        parse(&["template", "--pool"]).unwrap().validate().unwrap();
        let e = parse(&["cold", "--lean"]).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("density scenario"), "{e}");
        let d = parse(&["density", "--lean", "--mem", "128"]).unwrap();
        d.validate().unwrap();
        assert_eq!((d.runs(), d.mem), (100, 128));
        assert!(parse(&["density", "--mem", "8"]).is_err());
        assert!(parse(&["cold", "--boot-arg", " "])
            .unwrap()
            .validate()
            .is_err());
    }
}
