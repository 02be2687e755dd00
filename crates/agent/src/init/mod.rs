//! What the agent does as the guest's first process, before serving the host.

pub mod bootsig;
pub mod cmdline;
pub mod mounts;
pub mod net;
pub mod partuuid;
pub mod port;
pub mod power;
pub mod root;

use crate::reaper::{DirectReaper, InitReaper, Reaper};
use crate::server::{default_env, Config, Server};
use crate::sys;
use cmdline::Mode;
use std::sync::Arc;
use std::time::Duration;

/// Sets the guest up as the command line asks and serves the host for ever.
/// `start_ns` is `CLOCK_BOOTTIME` at the top of `main`.
pub fn boot(start_ns: u64) -> ! {
    for e in mounts::mount_basics() {
        crate::warn!("{e}");
    }
    mounts::ensure_stdio();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cfg = cmdline::parse(&cmdline);
    crate::log::set_debug(cfg.debug);
    for w in &cfg.warnings {
        crate::warn!("{w}");
    }
    if let Err(e) = net::loopback_up() {
        crate::warn!("cannot bring up lo: {e}");
    }
    if let Err(e) = net::set_hostname(&cfg.hostname) {
        crate::warn!("cannot set the host name: {e}");
    }

    let mut mode = cfg.mode;
    let mut refusal = None;
    if matches!(mode, Mode::Root | Mode::Handoff) && cfg.root.is_some() {
        if let Err(e) = root::switch_to_root_drive(&cfg, mode == Mode::Root) {
            // No silent fallback: a command must never run anywhere but where it was
            // asked to, so the agent serves only to say why.
            let why = format!(
                "the guest could not mount its root drive {}: {e}; ec1 runs no command in its initramfs instead",
                cfg.root.as_deref().unwrap_or_default()
            );
            crate::warn!("{why}");
            refusal = Some(why);
            mode = Mode::Initramfs;
        }
    }
    let mut pid1 = true;
    if mode == Mode::Handoff {
        match root::check_init(&cfg.init).and_then(|_| root::hand_off(&cfg.init)) {
            Ok(()) => pid1 = false, // we are the forked agent now
            Err(e) => {
                crate::warn!("cannot hand off: {e}; staying PID 1");
                mode = Mode::Root;
            }
        }
    }

    let reaper: Arc<dyn Reaper> = if pid1 {
        match power::install_handlers() {
            Ok(()) => power::start_signal_thread(),
            Err(e) => crate::warn!("cannot handle shutdown signals: {e}"),
        }
        match InitReaper::start() {
            Ok(r) => r,
            Err(e) => {
                crate::warn!("cannot start the reaper: {e}");
                power::shutdown();
            }
        }
    } else {
        Arc::new(DirectReaper)
    };

    let path = match port::wait_for_port(&cfg.port, Duration::from_secs(10)) {
        Ok(p) => p,
        Err(e) => {
            // Without a channel there is nothing to serve, but PID 1 must not exit.
            crate::warn!("{e}");
            loop {
                std::thread::park();
            }
        }
    };
    bootsig::signal_boot_complete();
    let ready_ns = sys::boottime_ns();
    crate::debug!(
        "ready in {} mode after {} ms of boot ({} ms in the agent)",
        mode.as_str(),
        ready_ns / 1_000_000,
        (ready_ns - start_ns) / 1_000_000
    );
    loop {
        let served = port::Port::open(&path).and_then(|p| {
            let w = p.writer()?;
            let server = Server::new(
                Config {
                    mode: mode.as_str().into(),
                    agent_start_ns: start_ns,
                    agent_ready_ns: ready_ns,
                    base_env: default_env(),
                    reaper: reaper.clone(),
                    refusal: refusal.clone(),
                },
                Box::new(w),
            );
            server.serve(p)
        });
        if let Err(e) = served {
            crate::warn!("agent channel failed: {e}; reopening");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
