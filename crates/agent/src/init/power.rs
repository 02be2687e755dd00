//! PID 1's signals: shutdown requests end the guest.
//!
//! busybox's `halt`, `poweroff` and `reboot` signal PID 1 with SIGUSR1, SIGUSR2 and
//! SIGTERM; Ctrl-Alt-Del arrives as SIGINT once `RB_DISABLE_CAD` is set. Each of them
//! ends the guest: forward the signal to every process, give them a moment, then
//! sync and reboot. The guest has no ACPI, and ec1 runs it with reboot meaning "exit",
//! so a reboot is how a guest ends ec1.

use std::sync::atomic::{AtomicI32, Ordering};
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

/// Write end of the pipe the signal handler reports to.
static PIPE_W: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd stays open for the process's life.
    unsafe { libc::write(PIPE_W.load(Ordering::Relaxed), (&b as *const u8).cast(), 1) };
}

/// Installs handlers for the shutdown signals (they report to a pipe that the signal
/// thread reads) and disables Ctrl-Alt-Del's immediate reset, so it becomes SIGINT.
///
/// Handlers rather than a blocked mask and `sigwait`: a blocked mask is inherited by
/// every command the agent starts (through `posix_spawn`), which would then ignore
/// SIGTERM and SIGINT; caught signals go back to their defaults on `exec`.
pub fn install_handlers() -> std::io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    crate::sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    PIPE_R.store(fds[0], Ordering::Relaxed);
    PIPE_W.store(fds[1], Ordering::Relaxed);
    for &sig in SIGNALS {
        // SAFETY: sigaction is plain data, zero is a valid start; the handler only
        // calls async-signal-safe functions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: reboot(RB_DISABLE_CAD) only sets a kernel flag.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
    Ok(())
}

static PIPE_R: AtomicI32 = AtomicI32::new(-1);

/// Blocks until a handled signal arrives and returns it (`None` if the pipe failed).
pub fn next_signal() -> Option<libc::c_int> {
    let mut b = 0u8;
    // SAFETY: reads one byte into `b` from the pipe `install_handlers` made.
    let n = unsafe {
        libc::read(
            PIPE_R.load(Ordering::Relaxed),
            (&mut b as *mut u8).cast(),
            1,
        )
    };
    (n == 1).then_some(b as libc::c_int)
}

/// Starts the thread that acts on shutdown signals.
pub fn start_signal_thread() {
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(|| loop {
            let Some(sig) = next_signal() else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
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

/// Leaves every writable filesystem on a drive clean (synced, then remounted
/// read-only or frozen: see [`crate::quiesce`]) and reboots: the end of the guest. A
/// guest ended through the API (`SendCtrlAltDel`, a `reboot` in the guest) so keeps
/// what was written to its drives, with no journal left to replay.
pub fn shutdown() -> ! {
    if let Err(e) = crate::quiesce::quiesce() {
        crate::warn!("leaving the filesystems clean before the reboot: {e}");
    }
    // SAFETY: sync and reboot have no memory effects; reboot does not return on success.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    crate::warn!("reboot failed: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}
