//! ec1's command line: Firecracker's flags for the VMM mode, plus ec1's own
//! subcommands (`kernel`, `run`, `exec`, `cp`, ...).

mod args;
mod cp_cmd;
mod exec_cmd;
pub mod jailer;
mod kernel_cmd;
mod pool_cmd;
mod privileges;
mod run_cmd;
mod signals;
mod stdio;
mod template_cmd;
mod vmm_cmd;

pub use args::{
    Cli, Command, CpArgs, ExecArgs, FirecrackerArgs, GuestCommandArgs, KernelAction, MachineArgs,
    ModeArg, PoolAction, PoolArgs, RunArgs, TemplateAction,
};

use clap::Parser;

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    // Firecracker's jailer: `ec1 jailer ...`, or this binary under the name `jailer`.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if invoked_as.as_deref() == Some("jailer") || argv.get(1).is_some_and(|a| a == "jailer") {
        if invoked_as.as_deref() != Some("jailer") {
            argv.remove(1);
        }
        return match <jailer::JailerArgs as clap::Parser>::try_parse_from(&argv) {
            Ok(a) => jailer::run(&a),
            Err(e) => {
                let _ = e.print();
                if e.use_stderr() {
                    2
                } else {
                    0
                }
            }
        };
    }
    ec1_trace::init();
    register_engines();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout with status 0, usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    dispatch(cli)
}

/// Registers the engines this binary is built with: the layers above
/// `ec1_engine` ask the registry for one and never name an engine crate.
pub fn register_engines() {
    ec1_engine_qemu::register();
}

fn dispatch(cli: Cli) -> i32 {
    let trace_file = match &cli.command {
        Some(Command::Run(a)) => a.trace_file.as_ref(),
        None => cli.vmm.trace_file.as_ref(),
        _ => None,
    };
    if let Some(path) = trace_file {
        if let Err(e) = ec1_trace::open_file(path) {
            eprintln!("ec1: cannot open the trace file {}: {e}", path.display());
            return 1;
        }
    }
    match cli.command {
        Some(Command::Kernel { action }) => kernel_cmd::run(action),
        Some(Command::Template { action }) => template_cmd::run(&action),
        Some(Command::Pool(args)) => pool_cmd::run(&args),
        Some(Command::Run(args)) => run_cmd::run(&args),
        Some(Command::Bench(args)) => ec1_bench::run(&args),
        Some(Command::Exec(args)) => exec_cmd::run(&args),
        Some(Command::Cp(args)) => cp_cmd::run(&args),
        None => vmm_cmd::run(&cli.vmm),
    }
}
