//! `ec1 run`: boot a fresh microVM, run one command, exit with its status.

use crate::args::{MachineArgs, ModeArg, RunArgs};
use crate::signals::{self, Blocked};
use crate::stdio;
use ec1_sandbox::{BootPath, PoolSeen, RootMode, Sandbox, SandboxOptions, TemplateCache};
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

/// Whether this run takes a warm clone from a pool and leaves one running: not with
/// `--no-pool`, `--cold` or `EC1_POOL=off` (or `0`, `false`, `no`).
fn pool_wanted(args: &RunArgs, env: Option<&std::ffi::OsStr>) -> bool {
    let off = env.is_some_and(|v| {
        ["off", "0", "false", "no"]
            .iter()
            .any(|o| v.eq_ignore_ascii_case(o))
    });
    !(args.no_pool || args.cold || off)
}

fn run_inner(args: &RunArgs) -> Result<i32, Box<dyn std::error::Error>> {
    if let Some(user) = &args.user {
        crate::privileges::become_user(user)?;
    }
    // Before any thread starts: a signal during the boot waits for the command.
    let signals = Blocked::block(signals::TERMINATION)?;
    let cmd = stdio::guest_command(&args.guest, !stdio::stdin_is_null(), None)?;
    let pooling = pool_wanted(args, std::env::var_os("EC1_POOL").as_deref());
    let opts = SandboxOptions {
        no_pool: !pooling,
        ..sandbox_options(&args.machine)
    };
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
    // After the command, so that the pool's first clones do not compete with it.
    let started_pool = pooling
        && matches!(
            path,
            BootPath::Template {
                pool: PoolSeen::None,
                ..
            }
        )
        && match crate::pool_cmd::start_background(&args.machine, args.pool_size, args.pool_idle) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("ec1 run: could not start a pool in the background: {e}");
                false
            }
        };
    let teardown = sandbox.shutdown()?;
    if args.timings {
        match started_pool {
            true => eprintln!(
                "ec1 timings: {path}; a pool of {} warm clone(s) starts in the background \
                 (`ec1 pool ls`)",
                args.pool_size
            ),
            false => eprintln!("ec1 timings: {path}"),
        }
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
    fn the_pool_is_the_default_unless_turned_off() {
        let a = args(&["ec1", "run", "--", "true"]);
        assert_eq!((a.pool_size, a.pool_idle), (2, 300));
        assert!(pool_wanted(&a, None));
        assert!(pool_wanted(&a, Some("on".as_ref())));
        for off in ["off", "OFF", "0", "false", "no"] {
            assert!(!pool_wanted(&a, Some(off.as_ref())), "{off}");
        }
        assert!(!pool_wanted(
            &args(&["ec1", "run", "--no-pool", "--", "true"]),
            None
        ));
        assert!(!pool_wanted(
            &args(&["ec1", "run", "--cold", "--", "true"]),
            None
        ));
        let both = crate::Cli::try_parse_from(["ec1", "run", "--pool", "--no-pool", "--", "true"]);
        assert!(both.is_err());
    }

    #[test]
    fn machine_arguments_survive_the_trip_to_the_background_pool() {
        let m = machine(&[
            "ec1",
            "run",
            "--kernel",
            "k",
            "--initrd",
            "/i",
            "--rootfs",
            "r.img",
            "--rootfs-ro",
            "--mode",
            "rootfs",
            "--vcpus",
            "2",
            "--mem",
            "128",
            "--engine",
            "qemu-tcg",
            "--arch",
            "aarch64",
            "--boot-arg",
            "quiet",
            "--",
            "true",
        ]);
        let mut argv: Vec<std::ffi::OsString> = vec!["ec1".into(), "run".into()];
        argv.extend(m.to_argv());
        argv.extend(["--".into(), "true".into()]);
        let again = match crate::Cli::parse_from(argv).command {
            Some(crate::Command::Run(r)) => r.machine,
            _ => panic!("not run"),
        };
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(again.kernel, Some(cwd.join("k")), "made absolute");
        assert_eq!(again.rootfs, Some(cwd.join("r.img")));
        assert_eq!(
            MachineArgs {
                kernel: m.kernel.clone(),
                rootfs: m.rootfs.clone(),
                ..again.clone()
            },
            m
        );
        let plain = machine(&["ec1", "run", "--", "true"]);
        let mut argv: Vec<std::ffi::OsString> = vec!["ec1".into(), "pool".into()];
        argv.extend(plain.to_argv());
        match crate::Cli::parse_from(argv).command {
            Some(crate::Command::Pool(p)) => assert_eq!(p.machine, plain),
            _ => panic!("not pool"),
        }
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
