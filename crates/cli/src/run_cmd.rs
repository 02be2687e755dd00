//! `ec1 run`: boot a fresh microVM, run one command, exit with its status.

use crate::args::{MachineArgs, ModeArg, RunArgs};
use crate::signals::{self, Blocked};
use crate::stdio;
use ec1_sandbox::{RootMode, Sandbox, SandboxOptions, TemplateCache};
use std::time::Instant;

pub fn run(args: &RunArgs) -> i32 {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ec1 run: {e}");
            // Like `env`/`timeout`: 125 when ec1 itself failed, not the command.
            125
        }
    }
}

/// The sandbox for `args`.
pub(crate) fn sandbox_options(args: &MachineArgs) -> SandboxOptions {
    let mode = match (args.mode, &args.rootfs) {
        (Some(ModeArg::Initramfs), _) | (None, None) => RootMode::Initramfs,
        (Some(ModeArg::Rootfs), _) | (None, Some(_)) => RootMode::Rootfs,
        (Some(ModeArg::Handoff), _) => RootMode::Handoff,
    };
    SandboxOptions {
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        rootfs: args.rootfs.clone(),
        rootfs_read_only: args.rootfs_ro,
        mode,
        vcpus: args.vcpus,
        mem_mib: args.mem,
        arch: args.arch,
        engine: args.engine.clone(),
        extra_boot_args: args.boot_args.clone(),
        ..SandboxOptions::default()
    }
}

fn run_inner(args: &RunArgs) -> Result<i32, Box<dyn std::error::Error>> {
    if let Some(user) = &args.user {
        crate::privileges::become_user(user)?;
    }
    // Before any thread starts: a signal during the boot waits for the command.
    let signals = Blocked::block(signals::TERMINATION)?;
    let cmd = stdio::guest_command(&args.guest, true, None)?;
    let opts = sandbox_options(&args.machine);
    let sandbox = if args.cold {
        Sandbox::boot(&opts)?
    } else if args.pool {
        Sandbox::from_pool(&opts, &TemplateCache::default_location()?)?
    } else {
        Sandbox::from_template(&opts, &TemplateCache::default_location()?)?
    };
    let t = Instant::now();
    let process = sandbox.client().spawn(&cmd)?;
    let ctl = process.controller();
    signals::forward(signals, move |sig| {
        let _ = ctl.signal(sig);
    })?;
    let status = stdio::stream(process)?;
    let command_time = t.elapsed();
    let boot = *sandbox.timings();
    let path = sandbox.boot_path().clone();
    let restore = sandbox.restore_timings().copied();
    let teardown = sandbox.shutdown()?;
    if args.timings {
        eprintln!("ec1 timings: {path}");
        match restore {
            Some(r) => eprintln!("ec1 timings: {r}"),
            None => eprintln!("ec1 timings: {boot}"),
        }
        eprintln!(
            "ec1 timings: command {:.1} ms, teardown {:.1} ms, total {:.1} ms",
            command_time.as_secs_f64() * 1e3,
            teardown.as_secs_f64() * 1e3,
            (boot.total + command_time + teardown).as_secs_f64() * 1e3
        );
    }
    Ok(stdio::exit_code(&status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(a: &[&str]) -> RunArgs {
        match crate::Cli::parse_from(a).command {
            Some(crate::Command::Run(r)) => r,
            _ => panic!("not run"),
        }
    }

    fn machine(a: &[&str]) -> MachineArgs {
        args(a).machine
    }

    #[test]
    fn pool_and_cold_exclude_each_other() {
        assert!(args(&["ec1", "run", "--pool", "--", "true"]).pool);
        let both = crate::Cli::try_parse_from(["ec1", "run", "--pool", "--cold", "--", "true"]);
        assert!(both.is_err());
    }

    #[test]
    fn mode_follows_rootfs_unless_given() {
        let o = sandbox_options(&machine(&["ec1", "run", "--", "true"]));
        assert_eq!(o.mode, RootMode::Initramfs);
        let o = sandbox_options(&machine(&["ec1", "run", "--rootfs", "x.img", "--", "true"]));
        assert_eq!(o.mode, RootMode::Rootfs);
        let o = sandbox_options(&machine(&[
            "ec1", "run", "--rootfs", "x", "--mode", "handoff", "--", "true",
        ]));
        assert_eq!(o.mode, RootMode::Handoff);
        let o = sandbox_options(&machine(&[
            "ec1",
            "run",
            "--rootfs",
            "x",
            "--mode",
            "initramfs",
            "--rootfs-ro",
            "--",
            "true",
        ]));
        assert_eq!(o.mode, RootMode::Initramfs);
        assert!(o.rootfs_read_only);
    }

    #[test]
    fn command_carries_env_cwd_and_timeout() {
        let a = args(&[
            "ec1",
            "run",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "--timeout",
            "5",
            "--",
            "ls",
            "-l",
        ]);
        let c = stdio::guest_command(&a.guest, true, Some((24, 80))).unwrap();
        let r = c.request();
        assert_eq!(r.argv, vec![b"ls".to_vec(), b"-l".to_vec()]);
        let a = args(&["ec1", "run", "-e", "novalue", "--", "ls"]);
        assert!(stdio::guest_command(&a.guest, false, None).is_err());
    }
}
