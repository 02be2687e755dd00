//! ec1's command line: Firecracker's flags for the VMM mode, plus ec1's own
//! subcommands (`kernel`, `run`, `exec`, `cp`, ...).

mod args;
mod cp_cmd;
mod exec_cmd;
mod kernel_cmd;
mod pool_cmd;
mod run_cmd;
mod signals;
mod stdio;
mod template_cmd;
mod vmm_cmd;

pub use args::{
    Cli, Command, CpArgs, ExecArgs, FirecrackerArgs, GuestCommandArgs, KernelAction, MachineArgs,
    ModeArg, PoolArgs, RunArgs, TemplateAction,
};

use clap::Parser;

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
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
