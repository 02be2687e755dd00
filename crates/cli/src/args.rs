//! The command line. Without a subcommand `ec1` is Firecracker: the same flags, with
//! the same defaults, so existing tooling starts it unchanged.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Firecracker's default API socket path.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";
/// Firecracker's default instance id.
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// Firecracker's default limit on an API request body.
pub const DEFAULT_MAX_PAYLOAD: usize = 51200;

#[derive(Debug, Parser)]
#[command(
    name = "ec1",
    about = "Firecracker's API, anywhere: microVMs on QEMU with commands in the guest and no SSH",
    args_conflicts_with_subcommands = true,
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub vmm: FirecrackerArgs,
}

/// Firecracker's own flags (`firecracker --help`), plus `--engine`.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct FirecrackerArgs {
    /// Path to unix domain socket used by the API.
    #[arg(long, default_value = DEFAULT_API_SOCK)]
    pub api_sock: PathBuf,
    /// MicroVM unique identifier.
    #[arg(long, default_value = DEFAULT_INSTANCE_ID)]
    pub id: String,
    /// Path to a file that contains the microVM configuration in JSON format.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Optional parameter which allows starting and using a microVM without an active API socket.
    #[arg(long)]
    pub no_api: bool,
    /// Whether or not to load boot timer device for logging elapsed time since InstanceStart command.
    #[arg(long)]
    pub boot_timer: bool,
    /// Path to a fifo or a file used for configuring the logger on startup.
    #[arg(long)]
    pub log_path: Option<PathBuf>,
    /// Set the logger level.
    #[arg(long)]
    pub level: Option<String>,
    /// Set the logger module filter.
    #[arg(long)]
    pub module: Option<String>,
    /// Whether or not to output the level in the logs.
    #[arg(long)]
    pub show_level: bool,
    /// Whether or not to include the file path and line number of the log's origin.
    #[arg(long)]
    pub show_log_origin: bool,
    /// Path to a fifo or a file used for configuring the metrics on startup.
    #[arg(long)]
    pub metrics_path: Option<PathBuf>,
    /// Http API request payload max size, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_PAYLOAD)]
    pub http_api_max_payload_size: usize,
    /// Mmds data store limit, in bytes.
    #[arg(long)]
    pub mmds_size_limit: Option<usize>,
    /// Print the data format version of the provided snapshot state file.
    #[arg(long)]
    pub describe_snapshot: Option<PathBuf>,
    /// Disables seccomp filtering of ec1's device threads (QEMU keeps its -sandbox).
    #[arg(long, conflicts_with = "seccomp_filter")]
    pub no_seccomp: bool,
    /// A Firecracker compiled seccomp filter: refused (ec1's threads are not
    /// Firecracker's); ec1 installs its own filters.
    #[arg(long)]
    pub seccomp_filter: Option<PathBuf>,
    /// Process start time (wall clock, microseconds).
    #[arg(long)]
    pub start_time_us: Option<u64>,
    /// Process start CPU time (wall clock, microseconds).
    #[arg(long)]
    pub start_time_cpu_us: Option<u64>,
    /// Parent process CPU time (wall clock, microseconds).
    #[arg(long)]
    pub parent_cpu_time_us: Option<u64>,
    /// Enables PCI support (accepted; the microvm engine uses virtio-mmio).
    #[arg(long)]
    pub enable_pci: bool,
    /// Print the binary version number.
    #[arg(long)]
    pub version: bool,
    /// Path to a file that contains metadata in JSON format to add to the mmds.
    #[arg(long)]
    pub metadata: Option<PathBuf>,
    /// ec1: inject ec1's agent as the guest's /init, so that `ec1 exec --api-sock` can
    /// run commands in it (the agent socket is `<api-sock>.agent`).
    #[arg(long)]
    pub inject_agent: bool,
    /// ec1: which engine runs the guest: `auto`, `qemu`, or `qemu-kvm`/`qemu-tcg`/
    /// `qemu-hvf` (the QEMU engine with that accelerator).
    #[arg(long, default_value = "auto", value_parser = parse_engine)]
    pub engine: ec1_engine::EngineChoice,
    /// ec1: append phase events (process start, API socket ready, each API request,
    /// engine spawned and ready, guest started, boot signal, teardown, ...) to this file
    /// as JSON lines, each with `t_us` since the process started.
    #[arg(long)]
    pub trace_file: Option<PathBuf>,
}

/// `--engine`: `auto`, an engine's name, or `NAME-OPTION` (`qemu-tcg`). Which engines
/// exist is known when one is created (the error lists them).
pub fn parse_engine(s: &str) -> Result<ec1_engine::EngineChoice, String> {
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric());
    let ok = match s.split_once('-') {
        Some((e, v)) => word(e) && word(v),
        None => word(s),
    };
    if ok {
        Ok(ec1_engine::EngineChoice::parse(s))
    } else {
        Err(format!(
            "{s:?} is not an engine: use auto, qemu, qemu-kvm, qemu-tcg or qemu-hvf"
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a fresh microVM, run a command in it, and exit with its status.
    Run(RunArgs),
    /// Run a command in a running VM (started with --inject-agent).
    Exec(ExecArgs),
    /// Copy a file into or out of a running VM (started with --inject-agent).
    Cp(CpArgs),
    /// The default guest kernel ec1 boots.
    Kernel {
        #[command(subcommand)]
        action: KernelAction,
    },
    /// Keep warm clones of a configuration's boot template ready for `ec1 run` (until
    /// SIGINT/SIGTERM); `ls` and `stop` the pools that run.
    Pool(PoolArgs),
    /// The boot templates `ec1 run` restores (one per configuration).
    Template {
        #[command(subcommand)]
        action: TemplateAction,
    },
    /// Measure ec1: boot phases, exec, API, stream throughput
    Bench(ec1_bench::BenchArgs),
}

/// `ec1 run`: what to boot and what to run.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct RunArgs {
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Print the boot and command timings to stderr.
    #[arg(long)]
    pub timings: bool,
    /// Boot the kernel cold instead of restoring (or first building) the boot template
    /// of this configuration.
    #[arg(long, conflicts_with = "pool")]
    pub cold: bool,
    /// Only take a warm clone from a running `ec1 pool` of this configuration (fail if
    /// none is ready). Without it, `ec1 run` takes one when it can and restores the
    /// template otherwise.
    #[arg(long)]
    pub pool: bool,
    /// Neither take a warm clone from a pool nor leave one running in the background
    /// (as `EC1_POOL=off`).
    #[arg(long, conflicts_with = "pool")]
    pub no_pool: bool,
    /// Warm clones kept by the background pool this run starts (when none runs yet).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub pool_size: u32,
    /// Seconds without a claim after which the background pool this run starts ends.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub pool_idle: u64,
    /// Append phase events (engine spawned, guest started, boot signal, agent ready,
    /// command start and end, restore steps, teardown) to this file as JSON lines.
    #[arg(long)]
    pub trace_file: Option<PathBuf>,
    /// Run as this user (ec1 started as root): ec1 and its engine give up root before
    /// anything else, and use the user's cache. The kernel, initrd and images must be
    /// readable (and a writable root writable) by the user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    #[command(flatten)]
    pub guest: GuestCommandArgs,
}

/// `ec1 pool`: warm clones of one configuration's template for `ec1 run`.
#[derive(Debug, Args, Clone, PartialEq)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PoolArgs {
    #[command(subcommand)]
    pub action: Option<PoolAction>,
    #[command(flatten)]
    pub machine: MachineArgs,
    /// How many warm clones to keep ready.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub size: u32,
    /// End after this many seconds without a claim (default: never).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: Option<u64>,
    /// Keep clones without warming them up: about a third less memory each, but each
    /// claimant's first command pays for TCG translating it (tens of milliseconds).
    #[arg(long)]
    pub lean: bool,
    /// The pool `ec1 run` leaves in the background: exit at once if a pool already
    /// serves this configuration, else log to the template cache's `pool-<key>.log`.
    #[arg(long, hide = true)]
    pub background: bool,
}

/// `ec1 pool ls|stop`.
#[derive(Debug, Subcommand, Clone, PartialEq)]
pub enum PoolAction {
    /// The pools that run for this user: template, clones ready, claims, idle time.
    Ls,
    /// Stop the pool of the template whose key starts with KEY, or every pool.
    Stop {
        #[arg(required_unless_present = "all")]
        key: Option<String>,
        #[arg(long, conflicts_with = "key")]
        all: bool,
    },
}

/// The machine `ec1 run` and `ec1 pool` boot.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct MachineArgs {
    /// Guest kernel (default: the kernel `ec1 kernel build` made).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Your own initrd; ec1's agent is appended to it.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// A raw disk image with a root filesystem, for `--mode rootfs|handoff`.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Attach the root image read-only.
    #[arg(long)]
    pub rootfs_ro: bool,
    /// Where the command runs (default: rootfs when --rootfs is given, else initramfs).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..))]
    pub mem: u32,
    /// The engine: `auto`, `qemu`, `qemu-kvm`, `qemu-tcg` or `qemu-hvf`.
    #[arg(long, default_value = "auto", value_parser = parse_engine)]
    pub engine: ec1_engine::EngineChoice,
    /// The guest architecture (default: the kernel's; for the default kernel, the
    /// host's). `aarch64` boots the arm64 default kernel (`ec1 kernel build --arch
    /// aarch64`).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<ec1_engine::Arch>,
    /// Extra kernel command-line arguments.
    #[arg(long = "boot-arg", value_name = "ARG")]
    pub boot_args: Vec<String>,
}

impl MachineArgs {
    /// These arguments as `ec1 run`/`ec1 pool` flags, with absolute paths (the
    /// background pool runs from `/`): parsing them again gives the same machine.
    pub fn to_argv(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = Vec::new();
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        for (flag, path) in [
            ("--kernel", &self.kernel),
            ("--initrd", &self.initrd),
            ("--rootfs", &self.rootfs),
        ] {
            if let Some(p) = path {
                v.push(flag.into());
                v.push(abs(p).into());
            }
        }
        if self.rootfs_ro {
            v.push("--rootfs-ro".into());
        }
        if let Some(m) = self.mode {
            v.push("--mode".into());
            v.push(
                m.to_possible_value()
                    .map(|p| p.get_name().to_string())
                    .unwrap_or_default()
                    .into(),
            );
        }
        for (flag, value) in [
            ("--vcpus", self.vcpus.to_string()),
            ("--mem", self.mem.to_string()),
            ("--engine", self.engine.to_string()),
        ] {
            v.push(flag.into());
            v.push(value.into());
        }
        if let Some(a) = self.arch {
            v.push("--arch".into());
            v.push(a.to_string().into());
        }
        for a in &self.boot_args {
            v.push("--boot-arg".into());
            v.push(a.into());
        }
        v
    }
}

/// What to run in the guest, shared by `ec1 run` and `ec1 exec`.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct GuestCommandArgs {
    /// Kill the command (and its process group) after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Environment variables for the command (KEY=VALUE).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory of the command in the guest.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// `ec1 exec`: a command in a VM that `ec1 --api-sock S --inject-agent` runs.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct ExecArgs {
    /// The API socket of the running ec1.
    #[arg(long)]
    pub api_sock: PathBuf,
    /// Pass ec1's stdin to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Run the command on a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    #[command(flatten)]
    pub guest: GuestCommandArgs,
}

/// `ec1 cp`: copy a file into or out of a running VM; the guest side is `vm:PATH`.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct CpArgs {
    /// The API socket of the running ec1.
    #[arg(long)]
    pub api_sock: PathBuf,
    /// Source: a host path, or `vm:PATH` in the guest.
    pub src: String,
    /// Destination: a host path, or `vm:PATH` in the guest.
    pub dst: String,
}

/// `--mode` of `ec1 run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Initramfs,
    Rootfs,
    Handoff,
}

/// `ec1 template ...`.
#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum TemplateAction {
    /// List the cached boot templates.
    Ls,
    /// Remove one template (by key or a unique prefix of it).
    Rm { key: String },
    /// Remove templates whose inputs changed (they are never used again) and what
    /// interrupted builds left behind.
    Prune,
}

#[derive(Debug, Subcommand, Clone, Copy, PartialEq, Eq)]
pub enum KernelAction {
    /// Build the default kernel if it is not cached; prints its path last.
    Build {
        /// The guest architecture (x86_64 or aarch64; arm64 is cross-compiled).
        #[arg(long, default_value_t = ec1_engine::Arch::host(), value_parser = parse_arch)]
        arch: ec1_engine::Arch,
    },
    /// Print the default kernel's path, or fail saying how to build it.
    Path {
        /// The guest architecture (x86_64 or aarch64).
        #[arg(long, default_value_t = ec1_engine::Arch::host(), value_parser = parse_arch)]
        arch: ec1_engine::Arch,
    },
}

/// `--arch`: `x86_64`/`amd64` or `aarch64`/`arm64`.
pub fn parse_arch(s: &str) -> Result<ec1_engine::Arch, String> {
    ec1_engine::Arch::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ec1").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_match_firecracker() {
        let c = parse(&[]);
        assert!(c.command.is_none());
        assert_eq!(c.vmm.api_sock, PathBuf::from("/run/firecracker.socket"));
        assert_eq!(c.vmm.id, "anonymous-instance");
        assert_eq!(c.vmm.http_api_max_payload_size, 51200);
        assert_eq!(c.vmm.engine, ec1_engine::EngineChoice::auto());
        assert!(!c.vmm.no_api && !c.vmm.boot_timer);
    }

    #[test]
    fn every_firecracker_flag_is_accepted() {
        let c = parse(&[
            "--api-sock",
            "/tmp/a.sock",
            "--id",
            "vm_1",
            "--config-file",
            "vm.json",
            "--no-api",
            "--boot-timer",
            "--log-path",
            "log",
            "--level",
            "Debug",
            "--module",
            "vmm",
            "--show-level",
            "--show-log-origin",
            "--metrics-path",
            "m",
            "--http-api-max-payload-size",
            "1000",
            "--mmds-size-limit",
            "2000",
            "--seccomp-filter",
            "f.bpf",
            "--start-time-us",
            "1",
            "--start-time-cpu-us",
            "2",
            "--parent-cpu-time-us",
            "3",
            "--enable-pci",
            "--engine",
            "qemu-tcg",
        ]);
        let v = c.vmm;
        assert_eq!(v.api_sock, PathBuf::from("/tmp/a.sock"));
        assert_eq!(v.id, "vm_1");
        assert_eq!(v.config_file, Some(PathBuf::from("vm.json")));
        assert!(v.no_api && v.boot_timer && v.show_level && v.show_log_origin);
        assert_eq!(v.level.as_deref(), Some("Debug"));
        assert_eq!(v.module.as_deref(), Some("vmm"));
        assert_eq!(v.http_api_max_payload_size, 1000);
        assert_eq!(v.mmds_size_limit, Some(2000));
        assert!(!v.no_seccomp && v.enable_pci);
        assert_eq!(v.seccomp_filter, Some(PathBuf::from("f.bpf")));
        // As Firecracker: the two seccomp flags forbid each other.
        assert!(
            crate::Cli::try_parse_from(["ec1", "--no-seccomp", "--seccomp-filter", "f.bpf"])
                .is_err()
        );
        assert_eq!(
            (v.start_time_us, v.start_time_cpu_us, v.parent_cpu_time_us),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(v.engine, ec1_engine::EngineChoice::parse("qemu-tcg"));
    }

    #[test]
    fn version_and_describe_snapshot() {
        assert!(parse(&["--version"]).vmm.version);
        assert_eq!(
            parse(&["--describe-snapshot", "s"]).vmm.describe_snapshot,
            Some(PathBuf::from("s"))
        );
    }

    #[test]
    fn kernel_subcommands() {
        assert!(matches!(
            parse(&["kernel", "build"]).command,
            Some(Command::Kernel {
                action: KernelAction::Build {
                    arch: ec1_engine::Arch::X86_64
                }
            })
        ));
        assert!(matches!(
            parse(&["kernel", "path", "--arch", "arm64"]).command,
            Some(Command::Kernel {
                action: KernelAction::Path {
                    arch: ec1_engine::Arch::Aarch64
                }
            })
        ));
        assert!(Cli::try_parse_from(["ec1", "kernel", "build", "--arch", "mips"]).is_err());
    }

    #[test]
    fn run_arguments() {
        let c = parse(&[
            "run",
            "--vcpus",
            "2",
            "--mem",
            "512",
            "--timings",
            "-e",
            "A=b",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]);
        let Some(Command::Run(r)) = c.command else {
            panic!("not run")
        };
        assert_eq!((r.machine.vcpus, r.machine.mem, r.timings), (2, 512, true));
        assert_eq!(r.guest.env, vec!["A=b".to_string()]);
        assert_eq!(r.guest.command, vec!["sh", "-c", "exit 3"]);
        assert_eq!(r.machine.mode, None);
        assert!(
            Cli::try_parse_from(["ec1", "run"]).is_err(),
            "a command is required"
        );
        assert!(Cli::try_parse_from(["ec1", "run", "--vcpus", "0", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["ec1", "run", "--vcpus", "33", "--", "true"]).is_err());
    }

    #[test]
    fn exec_and_cp_arguments() {
        let c = parse(&["exec", "--api-sock", "/s", "-it", "--", "sh"]);
        let Some(Command::Exec(e)) = c.command else {
            panic!("not exec")
        };
        assert!(e.interactive && e.tty);
        assert_eq!(e.guest.command, vec!["sh"]);
        let c = parse(&["cp", "--api-sock", "/s", "a", "vm:/b"]);
        let Some(Command::Cp(cp)) = c.command else {
            panic!("not cp")
        };
        assert_eq!((cp.src.as_str(), cp.dst.as_str()), ("a", "vm:/b"));
    }

    #[test]
    fn bad_flags_are_rejected() {
        for bad in [
            &["--engine", "qemu tcg"][..],
            &["--engine", "qemu-"],
            &["run", "--arch", "mips", "true"],
            &["--http-api-max-payload-size", "-1"],
            &["--no-such-flag"],
            &["--no-api", "kernel", "path"],
        ] {
            assert!(
                Cli::try_parse_from(std::iter::once("ec1").chain(bad.iter().copied())).is_err(),
                "{bad:?}"
            );
        }
    }
}
