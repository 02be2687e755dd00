//! `ec1 pool`: serves warm clones of one configuration's boot template to `ec1 run`
//! until SIGINT or SIGTERM (or its idle timeout); `ec1 pool ls|stop` for the pools
//! that run. `ec1 run` starts one in the background (see [`start_background`]).

use crate::args::{MachineArgs, PoolAction, PoolArgs};
use crate::run_cmd::sandbox_options;
use crate::signals::Blocked;
use ec1_sandbox::pool::{self, PoolConfig, PoolInfo, PoolStatus, Request};
use ec1_sandbox::{SandboxError, TemplateCache};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub fn run(args: &PoolArgs) -> i32 {
    let r = TemplateCache::default_location().and_then(|cache| match &args.action {
        None => serve(args, &cache),
        Some(action) => act(&cache, action, &mut std::io::stdout()),
    });
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ec1 pool: {e}");
            1
        }
    }
}

fn serve(args: &PoolArgs, cache: &TemplateCache) -> Result<(), SandboxError> {
    let opts = sandbox_options(&args.machine);
    // Before any thread starts, so that the signal thread alone takes them.
    let signals = Blocked::block(&[libc::SIGINT, libc::SIGTERM])
        .map_err(SandboxError::io("blocking signals"))?;
    let Some(lock) = pool::lock(&opts, cache)? else {
        if args.background {
            // Another `ec1 run` started it first: nothing to do.
            return Ok(());
        }
        return Err(SandboxError::Options(format!(
            "a pool for this configuration already serves on {} (`ec1 pool ls`)",
            pool::socket_path(cache.root(), &ec1_sandbox::template_key(&opts, cache)?).display()
        )));
    };
    if args.background {
        log_to(lock.log_path())?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("ec1-pool-signals".into())
            .spawn(move || {
                let sig = signals.wait();
                eprintln!("ec1 pool: stopping (signal {sig})");
                stop.store(true, Ordering::SeqCst);
            })
            .map_err(SandboxError::io("starting the signal thread"))?;
    }
    let config = PoolConfig {
        size: args.size as usize,
        idle_timeout: args.idle_timeout.map(Duration::from_secs),
        warm: !args.lean,
    };
    let why = pool::serve(&opts, cache, lock, config, stop, |info: &PoolInfo| {
        eprintln!(
            "ec1 pool: serving {} warm clone(s) of template {} on {}",
            args.size,
            info.key,
            info.socket.display()
        );
    })?;
    eprintln!("ec1 pool: ended ({why})");
    Ok(())
}

/// Sends this process's stderr (and so its log) to `path`, truncated: a background
/// pool has no terminal.
fn log_to(path: &std::path::Path) -> Result<(), SandboxError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path)
        .map_err(SandboxError::io(format!("creating {}", path.display())))?;
    // SAFETY: dup2 onto the standard error descriptor; `f` is a valid open file.
    if unsafe { libc::dup2(f.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
        return Err(SandboxError::io("redirecting stderr to the pool's log")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `ec1 pool ls|stop`, printing to `out`.
pub(crate) fn act(
    cache: &TemplateCache,
    action: &PoolAction,
    out: &mut dyn Write,
) -> Result<(), SandboxError> {
    let w = |e| SandboxError::io("writing to stdout")(e);
    let (live, dead) = pool::list(cache);
    match action {
        PoolAction::Ls => {
            if live.is_empty() {
                writeln!(out, "no pools run for {}", cache.root().display()).map_err(w)?;
            }
            for s in &live {
                writeln!(out, "{}", line(s)).map_err(w)?;
            }
        }
        PoolAction::Stop { key, all } => {
            let chosen: Vec<&PoolStatus> = live
                .iter()
                .filter(|s| *all || key.as_deref().is_some_and(|k| s.key.starts_with(k)))
                .collect();
            if !*all && chosen.len() != 1 {
                return Err(SandboxError::Options(format!(
                    "{} pools have a template key starting with {:?} (see `ec1 pool ls`)",
                    chosen.len(),
                    key.as_deref().unwrap_or_default()
                )));
            }
            for s in chosen {
                let socket = pool::socket_path(cache.root(), &s.key);
                pool::ask(&socket, Request::Stop).map_err(SandboxError::io(format!(
                    "asking the pool on {} to stop",
                    socket.display()
                )))?;
                writeln!(
                    out,
                    "stopping the pool of template {} (pid {})",
                    s.key, s.pid
                )
                .map_err(w)?;
            }
        }
    }
    // Sockets nobody answers on: their pool was killed. The next pool of that template
    // replaces them; until then they mislead nobody but `ls`.
    for d in dead {
        let _ = std::fs::remove_file(&d);
    }
    Ok(())
}

/// One `ls` line.
fn line(s: &PoolStatus) -> String {
    let idle = match s.idle_timeout_s {
        Some(t) => format!("idle {} s of {} s", s.idle_s, t),
        None => format!("idle {} s", s.idle_s),
    };
    format!(
        "{}  pid {}  {}/{} ready{}  {} running  {} claims  {} vcpu {} MiB  up {} s  {}",
        &s.key[..s.key.len().min(16)],
        s.pid,
        s.ready,
        s.size,
        if s.warm { "" } else { " (lean)" },
        s.claimed,
        s.claims,
        s.vcpus,
        s.mem_mib,
        s.uptime_s,
        idle
    )
}

/// Leaves a pool for `machine` running in the background: a detached `ec1 pool
/// --background` in its own session, with no terminal, `/` as its directory and its
/// log in the template cache. It exits at once if another `ec1 run` started one first,
/// so concurrent first runs leave exactly one.
pub(crate) fn start_background(machine: &MachineArgs, size: u32, idle: u64) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("pool")
        .arg("--background")
        .args([
            "--size",
            &size.to_string(),
            "--idle-timeout",
            &idle.to_string(),
        ])
        .args(machine.to_argv())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: setsid and
    // sigprocmask on a local set.
    unsafe {
        cmd.pre_exec(|| {
            // Its own session: no terminal, and a Ctrl-C of the shell does not reach it.
            libc::setsid();
            // `ec1 run` blocks the termination signals for its signal thread; the
            // pool must not inherit that mask.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    // Not waited for: it outlives this process, which exits next.
    cmd.spawn().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(key: &str) -> PoolStatus {
        PoolStatus {
            key: key.into(),
            pid: 42,
            size: 2,
            ready: 1,
            claims: 7,
            claimed: 0,
            uptime_s: 100,
            idle_s: 3,
            idle_timeout_s: Some(300),
            warm: true,
            mem_mib: 256,
            vcpus: 1,
        }
    }

    #[test]
    fn ls_lines_say_what_runs() {
        let l = line(&status("0123456789abcdef0123"));
        assert_eq!(
            l,
            "0123456789abcdef  pid 42  1/2 ready  0 running  7 claims  1 vcpu 256 MiB  up 100 s  idle 3 s of 300 s"
        );
    }

    #[test]
    fn ls_and_stop_without_pools() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = TemplateCache::at(tmp.path().to_path_buf());
        // A socket whose pool was killed: nobody answers; ls removes it.
        let dead = pool::socket_path(tmp.path(), "deadbeefdeadbeef");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let mut out = Vec::new();
        act(&cache, &PoolAction::Ls, &mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("no pools run"));
        assert!(!dead.exists());
        let e = act(
            &cache,
            &PoolAction::Stop {
                key: Some("ab".into()),
                all: false,
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("0 pools"), "{e}");
        act(
            &cache,
            &PoolAction::Stop {
                key: None,
                all: true,
            },
            &mut Vec::new(),
        )
        .unwrap();
    }
}
