//! Boots real guests in QEMU (TCG) through [`QemuEngine`].
//!
//! The guest kernel is `ec1_testkit::kernel()` (`$EC1_KERNEL`, else the cached default
//! kernel `ec1 kernel build` makes); without one these tests fail, on purpose. The
//! guest's `/init` is the testkit's (`ec1_testkit::test_initramfs()`), told what to do
//! by `ec1test.action=` on the kernel command line: `probe` reports the guest (and
//! `/dev/vda`) and reboots; `watch` prints `EC1TEST tick N` every 10 ms and reports
//! `/dev/vda` again whenever its medium changes.
//!
//! Boots are serialised (one VM at a time): the machine has two cores, and pause
//! timing must not depend on another guest's load.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use ec1_engine::{
    CacheType, DriveSpec, DriveUpdate, Engine, EngineError, EngineEvent, EventSink, ExitReason,
    MemoryBacking, RateLimit, SerialOut, TokenBucket, VmSpec,
};
use ec1_engine_qemu::{qapi, Accel, QemuEngine, QemuOptions};

const MARKER: &str = "EC1TEST marker";
const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";
/// Report the guest and `/dev/vda`, signal boot, reboot.
const PROBE: &str = "probe";
/// Report, signal boot, then tick every 10 ms, watching `/dev/vda` for a new medium.
const WATCH: &str = "watch";
/// Bounds every wait for the guest: generous for a loaded 2-core machine.
const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
const HELPER_ENV: &str = "EC1_QEMU_TEST_HELPER_DIR";

/// One VM at a time (see the module docs).
fn serial_boots() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine() -> QemuEngine {
    QemuEngine::new(Accel::Tcg, QemuOptions::default()).expect("QEMU 10 is installed")
}

/// Collects events for assertions.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<EngineEvent>>>);

impl Events {
    fn sink(&self) -> EventSink {
        let me = self.clone();
        Arc::new(move |e| me.0.lock().unwrap().push(e))
    }
    fn boot_signals(&self) -> usize {
        let v = self.0.lock().unwrap();
        v.iter()
            .filter(|e| matches!(e, EngineEvent::GuestBootSignal { .. }))
            .count()
    }
    fn exits(&self) -> Vec<ExitReason> {
        let v = self.0.lock().unwrap();
        v.iter()
            .filter_map(|e| match e {
                EngineEvent::Exited { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
    /// `Exited` is the last event and comes once.
    fn assert_single_exit(&self, reason: &ExitReason) {
        assert_eq!(self.exits(), std::slice::from_ref(reason));
        let v = self.0.lock().unwrap();
        assert!(matches!(v.last(), Some(EngineEvent::Exited { .. })));
    }
}

/// A 128 MiB, one-vCPU guest whose test init does `action` (see the module docs).
fn spec(dir: &Path, action: &str) -> VmSpec {
    VmSpec {
        id: "test".into(),
        arch: ec1_engine::Arch::X86_64,
        kernel: ec1_testkit::kernel(),
        initrd: Some(ec1_testkit::test_initramfs()),
        cmdline: format!("{CMDLINE} ec1test.action={action}").into(),
        vcpus: 1,
        smt: false,
        mem_mib: 128,
        drives: vec![],
        serial: SerialOut::File(dir.join("serial.log")),
        agent_socket: None,
        memory: MemoryBacking::Anonymous,
        run_dir: dir.to_path_buf(),
        devices: Default::default(),
    }
}

fn serial(dir: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(dir.join("serial.log")).unwrap_or_default()).into_owned()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_serial(dir: &Path, needle: &str) {
    wait_until(
        &format!("{needle:?} on the serial console"),
        GUEST_TIMEOUT,
        || serial(dir).contains(needle),
    );
}

/// The value after `key=` in the test init's report line (`EC1TEST cpus=.. mem_kib=..
/// cmdline=..`), looked for before its command line.
fn report_value(out: &str, key: &str) -> Option<u64> {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("EC1TEST "))
        .filter(|l| l.starts_with("cpus="))?;
    let fields = line.split_once(" cmdline=").map_or(line, |(f, _)| f);
    fields
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

fn image(dir: &Path, name: &str, fill: u8, size: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![fill; size]).unwrap();
    p
}

fn process_alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's reaping is pending.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[test]
fn guest_boots_reports_and_shuts_down() {
    let _one = serial_boots();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut s = spec(d, PROBE);
    s.vcpus = 2;
    s.smt = true;
    // Guest RAM in a shared file, as a snapshot template would have it.
    s.memory = MemoryBacking::File {
        path: d.join("guest.ram"),
        shared: true,
    };
    s.drives = vec![DriveSpec {
        id: "rootfs".into(),
        path: image(d, "a.img", b'A', 1 << 20),
        read_only: true,
        cache: CacheType::Unsafe,
        rate_limit: None,
        vhost_user: false,
    }];
    let events = Events::default();
    let e = engine();
    let t0 = Instant::now();
    e.start(&s, events.sink()).unwrap();
    let started = t0.elapsed();
    let reason = e.wait(Some(GUEST_TIMEOUT)).unwrap();
    let ended = t0.elapsed();
    let out = serial(d);
    eprintln!("start() took {started:?}; the guest ran to its reboot in {ended:?}");
    assert_eq!(reason, Some(ExitReason::GuestShutdown), "serial:\n{out}");
    assert!(out.contains(MARKER), "serial:\n{out}");
    assert_eq!(report_value(&out, "cpus"), Some(2), "serial:\n{out}");
    let mem_kb = report_value(&out, "mem_kib").unwrap_or(0);
    assert!(
        (100 * 1024..=128 * 1024).contains(&mem_kb),
        "MemTotal {mem_kb} kB for a 128 MiB guest"
    );
    assert!(
        out.contains("EC1TEST vda=AAAAAAAAAAAAAAAA sectors=2048"),
        "serial:\n{out}"
    );
    assert!(
        out.contains("tsc=reliable"),
        "the TCG clock settings reach the guest:\n{out}"
    );
    assert!(
        !out.contains("ioperm failed"),
        "the guest kernel {} lacks CONFIG_X86_IOPL_IOPERM, so no guest can write the boot \
         signal: rebuild it from kernel/ec1-guest.config (`ec1 kernel build`)\nserial:\n{out}",
        s.kernel.display()
    );
    assert_eq!(events.boot_signals(), 1, "serial:\n{out}");
    if let Some(EngineEvent::GuestBootSignal { at }) = events.0.lock().unwrap().first() {
        eprintln!("boot signal {:?} after start() was called", *at - t0);
    }
    events.assert_single_exit(&ExitReason::GuestShutdown);
    assert_eq!(e.qemu_pid(), None);
    e.stop().unwrap();
    assert_eq!(e.wait(None).unwrap(), Some(ExitReason::GuestShutdown));
}

#[test]
fn pause_resume_media_change_and_ctrl_alt_del() {
    let _one = serial_boots();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut s = spec(d, WATCH);
    s.drives = vec![DriveSpec {
        id: "data".into(),
        path: image(d, "a.img", b'A', 1 << 20),
        read_only: false,
        cache: CacheType::Writeback,
        rate_limit: Some(RateLimit {
            bandwidth: Some(TokenBucket {
                size: 1 << 20,
                one_time_burst: 1 << 20,
                refill_time_ms: 1000,
            }),
            ops: Some(TokenBucket {
                size: 100,
                one_time_burst: 0,
                refill_time_ms: 1000,
            }),
        }),
        vhost_user: false,
    }];
    s.agent_socket = Some(d.join("agent.sock"));
    let events = Events::default();
    let e = engine();
    e.start(&s, events.sink()).unwrap();
    assert!(
        d.join("agent.sock").exists(),
        "the agent socket listens once start() returns"
    );
    wait_for_serial(d, "EC1TEST tick 3");

    // The boot-timer path from the port to the event, whatever the guest kernel can do.
    let before = events.boot_signals();
    e.qmp(&qapi::qmp::human_monitor_command {
        command_line: format!("o /b {:#x} {}", ec1_engine_qemu::BOOT_TIMER_PORT, 123),
        cpu_index: None,
    })
    .unwrap();
    wait_until("the boot signal event", Duration::from_secs(10), || {
        events.boot_signals() > before
    });

    // A paused guest prints nothing.
    e.pause().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let paused_len = serial(d).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(serial(d).len(), paused_len, "output grew while paused");
    e.resume().unwrap();
    wait_until("output after resume", GUEST_TIMEOUT, || {
        serial(d).len() > paused_len
    });

    // Throttling, as QEMU reports it: first from the command line, then updated.
    let throttle = || {
        let blocks = e.qmp(&qapi::qmp::query_block {}).unwrap();
        let blk = blocks
            .into_iter()
            .find(|b| b.qdev.as_deref() == Some("blk0"))
            .and_then(|b| b.inserted)
            .expect("drive blk0 is in query-block");
        (blk.bps, blk.bps_max, blk.iops)
    };
    assert_eq!(throttle(), (1 << 20, Some(2 << 20), 100));
    e.update_drive(&DriveUpdate {
        id: "data".into(),
        path: None,
        rate_limit: Some(RateLimit {
            bandwidth: Some(TokenBucket {
                size: 1_000_000,
                one_time_burst: 0,
                refill_time_ms: 100,
            }),
            ops: None,
        }),
    })
    .unwrap();
    assert_eq!(throttle().0, 10_000_000);
    assert_eq!(throttle().2, 0);

    // A new medium of another size: the guest reads the new data and sees the new size.
    let b = image(d, "b.img", b'B', 2 << 20);
    e.update_drive(&DriveUpdate {
        id: "data".into(),
        path: Some(b.clone()),
        rate_limit: None,
    })
    .unwrap();
    wait_for_serial(d, "EC1TEST vda=BBBBBBBBBBBBBBBB sectors=4096");
    // And once more, which releases a medium added over QMP.
    let c = image(d, "c.img", b'C', 2 << 20);
    e.update_drive(&DriveUpdate {
        id: "data".into(),
        path: Some(c),
        rate_limit: None,
    })
    .unwrap();
    wait_for_serial(d, "EC1TEST vda=CCCCCCCCCCCCCCCC sectors=4096");
    let err = e
        .update_drive(&DriveUpdate {
            id: "nope".into(),
            path: Some(b),
            rate_limit: None,
        })
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidSpec(_)), "{err:?}");
    let err = e
        .update_drive(&DriveUpdate {
            id: "data".into(),
            path: Some(d.join("missing.img")),
            rate_limit: None,
        })
        .unwrap_err();
    assert!(matches!(err, EngineError::File { .. }), "{err:?}");

    // Ctrl-Alt-Del reboots the guest, which ends the VM as Firecracker does.
    e.send_ctrl_alt_del().unwrap();
    assert_eq!(
        e.wait(Some(GUEST_TIMEOUT)).unwrap(),
        Some(ExitReason::GuestShutdown)
    );
    events.assert_single_exit(&ExitReason::GuestShutdown);
    assert!(matches!(e.pause(), Err(EngineError::InvalidState(_))));
    assert!(matches!(
        e.start(&s, events.sink()),
        Err(EngineError::InvalidState(_))
    ));
    e.stop().unwrap();
    e.stop().unwrap();
    assert!(!d.join("qmp.sock").exists());
}

#[test]
fn stop_ends_a_running_guest() {
    let _one = serial_boots();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let events = Events::default();
    let e = engine();
    e.start(&spec(d, WATCH), events.sink()).unwrap();
    let pid = e.qemu_pid().unwrap();
    assert!(process_alive(pid));
    assert_eq!(e.wait(Some(Duration::from_millis(10))).unwrap(), None);
    let t0 = Instant::now();
    e.stop().unwrap();
    eprintln!("stop() took {:?}", t0.elapsed());
    assert!(!process_alive(pid));
    assert_eq!(
        e.wait(Some(Duration::ZERO)).unwrap(),
        Some(ExitReason::Stopped)
    );
    e.stop().unwrap();
    events.assert_single_exit(&ExitReason::Stopped);

    // A QEMU that does not answer `quit` (frozen here with SIGSTOP) is killed after
    // the grace period. A stale QMP socket in the run directory is replaced.
    std::fs::write(d.join("qmp.sock"), b"stale").unwrap();
    let events = Events::default();
    let e = QemuEngine::new(
        Accel::Tcg,
        QemuOptions {
            stop_grace: Duration::from_millis(300),
            ..QemuOptions::default()
        },
    )
    .unwrap();
    e.start(&spec(d, WATCH), events.sink()).unwrap();
    let pid = e.qemu_pid().unwrap();
    // SAFETY: plain kill(2) on QEMU's pid, which the engine has not reaped (it runs).
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
    let t0 = Instant::now();
    e.stop().unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(!process_alive(pid));
    events.assert_single_exit(&ExitReason::Stopped);
}

#[test]
fn qemu_killed_from_outside_is_a_crash() {
    let _one = serial_boots();
    for (signal, status) in [
        (libc::SIGKILL, "signal: 9 (SIGKILL)"),
        (libc::SIGTERM, "ended from outside by a termination signal"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let events = Events::default();
        // The handler of `Exited` stops the engine, as an API layer cleaning up might.
        let me: Arc<OnceLock<std::sync::Weak<QemuEngine>>> = Arc::new(OnceLock::new());
        let stopped_in_handler = Arc::new(Mutex::new(None));
        let sink: EventSink = {
            let (inner, me, stopped) = (events.sink(), me.clone(), stopped_in_handler.clone());
            Arc::new(move |ev| {
                if matches!(ev, EngineEvent::Exited { .. }) {
                    if let Some(e) = me.get().and_then(|w| w.upgrade()) {
                        *stopped.lock().unwrap() = Some(e.stop().is_ok());
                    }
                }
                inner(ev)
            })
        };
        let e = Arc::new(engine());
        let _ = me.set(Arc::downgrade(&e));
        e.start(&spec(dir.path(), WATCH), sink).unwrap();
        let pid = e.qemu_pid().unwrap();
        // SAFETY: plain kill(2) on QEMU's pid, which the engine has not reaped (it runs).
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
        let t0 = Instant::now();
        let reason = e.wait(Some(GUEST_TIMEOUT)).unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(*stopped_in_handler.lock().unwrap(), Some(true));
        match &reason {
            Some(ExitReason::EngineCrashed { status: s, .. }) => {
                assert!(s.contains(status), "{s:?} should contain {status:?}")
            }
            other => panic!("expected a crash, got {other:?}"),
        }
        events.assert_single_exit(reason.as_ref().unwrap());
        e.stop().unwrap();
        assert_eq!(
            e.wait(None).unwrap(),
            reason,
            "stop() after the end changes nothing"
        );
    }
}

#[test]
fn missing_files_fail_before_anything_is_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = engine();
    let mut s = spec(d, PROBE);
    s.kernel = d.join("no-vmlinux");
    match e.start(&s, Events::default().sink()) {
        Err(EngineError::File { what, path, .. }) => {
            assert_eq!(what, "kernel");
            assert_eq!(path, d.join("no-vmlinux"));
        }
        other => panic!("expected a File error, got {other:?}"),
    }
    let mut s = spec(d, PROBE);
    s.drives = vec![DriveSpec {
        id: "rootfs".into(),
        path: d.join("no.img"),
        read_only: true,
        cache: CacheType::Unsafe,
        rate_limit: None,
        vhost_user: false,
    }];
    assert!(matches!(
        e.start(&s, Events::default().sink()),
        Err(EngineError::File {
            what: "drive image",
            ..
        })
    ));
    let mut s = spec(d, PROBE);
    s.vcpus = 0;
    assert!(matches!(
        e.start(&s, Events::default().sink()),
        Err(EngineError::InvalidSpec(_))
    ));
    assert_eq!(e.qemu_pid(), None);
    assert!(matches!(e.wait(None), Err(EngineError::InvalidState(_))));
    assert!(matches!(e.pause(), Err(EngineError::InvalidState(_))));
    e.stop().unwrap();
    let left: Vec<_> = std::fs::read_dir(d).unwrap().collect();
    assert!(
        left.is_empty(),
        "nothing was created in the run directory: {left:?}"
    );
}

#[test]
fn qemu_failing_at_startup_reports_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = engine();
    let mut s = spec(d, PROBE);
    // A private memory file smaller than the guest RAM: QEMU refuses it at startup.
    std::fs::write(d.join("small.ram"), vec![0u8; 4096]).unwrap();
    s.memory = MemoryBacking::File {
        path: d.join("small.ram"),
        shared: false,
    };
    let events = Events::default();
    match e.start(&s, events.sink()) {
        Err(EngineError::Crashed { status, stderr }) => {
            assert_eq!(status, "exit status: 1");
            assert!(stderr.contains("qemu-system-x86_64"), "{stderr}");
        }
        other => panic!("expected Crashed, got {other:?}"),
    }
    assert!(
        events.exits().is_empty(),
        "a failed start announces no exit"
    );
    assert_eq!(e.qemu_pid(), None);
    assert!(
        !d.join("qmp.sock").exists(),
        "a failed start leaves no socket behind"
    );
}

#[test]
fn a_broken_qemu_binary_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-qemu");
    std::fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version 10.0.0'; exit 0; fi\necho 'fake: cannot run' >&2\nexit 7\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let opts = QemuOptions {
        binary: Some(fake),
        ..QemuOptions::default()
    };
    // Another test thread forking just now may briefly hold the script open (ETXTBSY).
    let e = (0..100)
        .find_map(|_| match QemuEngine::new(Accel::Tcg, opts.clone()) {
            Ok(e) => Some(e),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        })
        .expect("the fake QEMU passes the version check");
    assert_eq!(e.version().to_string(), "10.0.0");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    match e.start(&spec(&run, PROBE), Events::default().sink()) {
        Err(EngineError::Crashed { status, stderr }) => {
            assert_eq!(status, "exit status: 7");
            assert_eq!(stderr.trim(), "fake: cannot run");
        }
        other => panic!("expected Crashed, got {other:?}"),
    }

    // A QEMU that never answers QMP is killed after the start timeout.
    let hang = dir.path().join("hang-qemu");
    std::fs::write(
        &hang,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version 10.0.0'; exit 0; fi\necho 'hanging' >&2\nexec sleep 30\n",
    )
    .unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let opts = QemuOptions {
        binary: Some(hang),
        start_timeout: Duration::from_millis(300),
        ..QemuOptions::default()
    };
    let e = (0..100)
        .find_map(|_| match QemuEngine::new(Accel::Tcg, opts.clone()) {
            Ok(e) => Some(e),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        })
        .expect("the hanging QEMU passes the version check");
    let t0 = Instant::now();
    match e.start(&spec(&run, PROBE), Events::default().sink()) {
        Err(EngineError::Timeout(d, what)) => {
            assert_eq!(d, Duration::from_millis(300));
            assert!(what.contains("QMP greeting"), "{what}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(e.qemu_pid(), None);

    let missing = QemuOptions {
        binary: Some(dir.path().join("nope")),
        ..QemuOptions::default()
    };
    let err = QemuEngine::new(Accel::Tcg, missing).err().unwrap();
    assert!(err
        .to_string()
        .contains("apt-get install -t bookworm-backports qemu-system-x86"));
    let no_firmware = QemuOptions {
        firmware: dir.path().join("qboot.rom"),
        ..QemuOptions::default()
    };
    let err = QemuEngine::new(Accel::Tcg, no_firmware).err().unwrap();
    assert!(matches!(err, EngineError::NotInstalled { .. }), "{err:?}");
    assert!(err.to_string().contains("qboot"), "{err}");
}

#[test]
fn engine_reports_its_identity() {
    let e = engine();
    assert_eq!(e.name(), "qemu-tcg");
    assert_eq!(e.accel(), Accel::Tcg);
    assert!(e.version().major >= 10);
    assert!(e.binary().ends_with("qemu-system-x86_64"));
    let caps = e.capabilities();
    assert!(caps.drive_hot_update && caps.ctrl_alt_del && caps.snapshots);
    // The command line can be shown without running anything.
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<OsString> =
        ec1_engine_qemu::qemu_args(&spec(dir.path(), PROBE), &e.args_context()).unwrap();
    assert!(args.iter().any(|a| a == "-S"));
    assert!(matches!(
        e.snapshot(&ec1_engine::SnapshotTarget {
            state_path: "/x".into(),
            mem_path: "/y".into(),
            diff: false
        }),
        Err(EngineError::InvalidState(_))
    ));
}

/// Run by `qemu_dies_with_a_killed_ec1` in a child process: starts a guest with its
/// console on this process's stdout, prints QEMU's pid and waits to be killed.
#[test]
#[ignore = "helper process for qemu_dies_with_a_killed_ec1"]
fn helper_hold_a_guest() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let e = engine();
    let mut s = spec(Path::new(&dir), WATCH);
    s.serial = SerialOut::Stdio;
    e.start(&s, Events::default().sink()).unwrap();
    // Straight to fd 1, where QEMU writes too (the test harness captures `println!`).
    use std::io::Write;
    let mut out = std::fs::File::options()
        .write(true)
        .open("/dev/stdout")
        .unwrap();
    writeln!(out, "QEMU_PID={}", e.qemu_pid().unwrap()).unwrap();
    // Killed by the parent test long before this ends.
    let _ = e.wait(Some(GUEST_TIMEOUT));
}

#[test]
fn qemu_dies_with_a_killed_ec1() {
    let _one = serial_boots();
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_hold_a_guest", "--include-ignored"])
        .env(HELPER_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = helper.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut pid = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(p) = line.strip_prefix("QEMU_PID=") {
                pid = p.trim().parse::<u32>().ok();
            }
            // With `SerialOut::Stdio` the guest console is ec1's stdout.
            if line.contains(MARKER) && pid.is_some() {
                let _ = tx.send(pid);
            }
        }
    });
    let pid = rx.recv_timeout(GUEST_TIMEOUT);
    let _ = helper.kill(); // SIGKILL: no destructor, no stop()
    let _ = helper.wait();
    let pid = pid
        .expect("the helper printed QEMU's pid and the guest's marker")
        .expect("a numeric pid");
    wait_until(
        "QEMU to die with its parent",
        Duration::from_secs(10),
        || !process_alive(pid),
    );
    // QEMU held the pipe too: the reader ends once QEMU is gone.
    let _ = reader.join();
}
