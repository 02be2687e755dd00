//! PID 1's signals: shutdown requests end the guest.
//!
//! busybox's `halt`, `poweroff` and `reboot` signal PID 1 with SIGUSR1, SIGUSR2 and
//! SIGTERM; Ctrl-Alt-Del arrives as SIGINT once `RB_DISABLE_CAD` is set. Each of them
//! ends the guest: forward the signal to every process, give them a moment, then
//! sync and reboot. The guest has no ACPI, and ec1 runs it with reboot meaning "exit",
//! so a reboot is how a guest ends ec1.

use std::time::{Duration, Instant};

/// The signals PID 1 handles.
pub const SIGNALS: &[libc::c_int] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPWR,
    libc::SIGHUP,
];

fn sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data and sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the shutdown signals in this thread and every thread it starts later (std
/// resets the mask of spawned commands). Call first thing in `main`.
pub fn block_signals() {
    let set = sigset();
    // SAFETY: `set` is initialised; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an immediate reset.
    // SAFETY: reboot(RB_DISABLE_CAD) only sets a kernel flag.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

/// Starts the thread that waits for shutdown signals.
pub fn start_signal_thread() {
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(|| {
            let set = sigset();
            loop {
                let mut sig = 0;
                // SAFETY: `set` and `sig` are valid; the signals are blocked.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                if sig == libc::SIGHUP {
                    continue; // a console hang-up is no reason to stop
                }
                crate::warn!("signal {sig}: shutting down");
                let forward = if sig == libc::SIGINT {
                    libc::SIGINT
                } else {
                    libc::SIGTERM
                };
                terminate_all(forward, Duration::from_secs(2));
                shutdown();
            }
        });
}

/// Sends `sig` to every process but PID 1, waits up to `grace` for them to go, then
/// kills what is left.
fn terminate_all(sig: libc::c_int, grace: Duration) {
    // SAFETY: kill(-1, sig) signals every process we may signal except ourselves.
    unsafe { libc::kill(-1, sig) };
    let end = Instant::now() + grace;
    while Instant::now() < end && user_processes_left() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-1, libc::SIGKILL) };
}

/// Whether any process other than PID 1 and kernel threads is alive. (`kill(-1, 0)`
/// cannot tell: it counts kernel threads.) Kernel threads and zombies have an empty
/// command line.
fn user_processes_left() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        pid != 1
            && pid != std::process::id()
            && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty())
    })
}

/// Syncs and reboots: the end of the guest.
pub fn shutdown() -> ! {
    // SAFETY: sync and reboot have no memory effects; reboot does not return on success.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    crate::warn!("reboot failed: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}
