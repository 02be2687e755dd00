//! ec1 as Firecracker driven through its REST API, with the agent injected
//! (`--inject-agent`), and `ec1 exec` (also `-t`, with and without a local terminal) /
//! `ec1 cp` against that VM, and pausing it. One VM is booted for all the exec tests of
//! this file; each test uses it independently (one pauses it for a moment).

use ec1_testkit::{
    http, kernel, output_with_input, processes_matching, pseudo_random, sha256_hex,
    shared_temp_dir, test_initramfs, wait_for,
};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use common::EC1;

struct SharedVm {
    /// Removed when the test process exits.
    dir: PathBuf,
    sock: PathBuf,
    // Killed (with its engine) when the test process exits: see `spawn_tied`.
    _ec1: std::sync::Mutex<common::Vmm>,
}

/// Boots the shared VM through the API: boot-source, machine-config, InstanceStart.
fn vm() -> &'static SharedVm {
    static VM: OnceLock<SharedVm> = OnceLock::new();
    VM.get_or_init(|| {
        let dir = shared_temp_dir("ec1-api-exec");
        let ec1 = common::vmm(&dir, "shared_vm");
        let sock = ec1.sock.clone();
        let boot = json!({
            "kernel_image_path": kernel(),
            "boot_args": "console=ttyS0 reboot=k panic=1 quiet"
        });
        let (code, body) = http(&sock, "PUT", "/boot-source", Some(&boot.to_string()));
        assert_eq!(code, 204, "{body}");
        let mc = json!({"vcpu_count": 2, "mem_size_mib": 256}).to_string();
        let (code, body) = http(&sock, "PUT", "/machine-config", Some(&mc));
        assert_eq!(code, 204, "{body}");
        let (code, body) = http(
            &sock,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#),
        );
        assert_eq!(code, 204, "{body}");
        SharedVm {
            dir,
            sock,
            _ec1: std::sync::Mutex::new(ec1),
        }
    })
}

fn exec(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    exec_with(if stdin.is_some() { &["-i"] } else { &[] }, args, stdin)
}

/// `ec1 exec` on the shared VM with `flags` (e.g. `-t`) before the command; ec1's
/// stdin is a pipe that carries `stdin` (if any) and then ends.
fn exec_with(flags: &[&str], args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut cmd = Command::new(EC1);
    cmd.arg("exec")
        .arg("--api-sock")
        .arg(&vm().sock)
        .args(flags)
        .arg("--")
        .args(args);
    output_with_input(cmd, stdin.unwrap_or_default())
}

#[test]
fn exec_returns_exit_codes_and_signals() {
    for (script, code) in [
        ("true", 0),
        ("exit 1", 1),
        ("exit 3", 3),
        ("kill -9 $$", 137),
    ] {
        let out = exec(&["sh", "-c", script], None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn execs_run_side_by_side_and_a_vanished_client_loses_only_its_command() {
    use std::io::{BufRead, BufReader, Write};
    let sock = &vm().sock;
    let spawn = |args: &[&str]| {
        Command::new(EC1)
            .arg("exec")
            .arg("--api-sock")
            .arg(sock)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Holds its session until its stdin ends.
    let mut long = spawn(&["-i", "--", "sh", "-c", "echo up; cat >/dev/null; echo done"]);
    let mut out = BufReader::new(long.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "up\n");
    // Meanwhile other execs start and finish.
    for i in 0..3 {
        let o = exec(&["sh", "-c", &format!("echo $(({i} * 2))")], None);
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{}\n", i * 2));
    }
    long.stdin.take().unwrap().write_all(b"bye").unwrap(); // then EOF
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "done\n");
    assert!(long.wait().unwrap().success());

    // A client killed mid-command: its command goes, the others' sessions stay.
    let pid_file = format!("/tmp/victim-{}", std::process::id());
    let mut victim = spawn(&[
        "--",
        "sh",
        "-c",
        &format!("echo $$ > {pid_file}; echo up; exec sleep 600"),
    ]);
    let mut out = BufReader::new(victim.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "up\n");
    victim.kill().unwrap(); // SIGKILL: ec1 exec gets no chance to say goodbye
    victim.wait().unwrap();
    let gone = wait_for(Duration::from_secs(10), || {
        let o = exec(&["sh", "-c", &format!("kill -0 $(cat {pid_file})")], None);
        (!o.status.success()).then_some(())
    });
    assert!(gone.is_some(), "the vanished client's command still runs");
    let o = exec(&["rm", &pid_file], None);
    assert!(o.status.success());
}

#[test]
fn the_default_kernel_has_what_programs_expect() {
    // Each line proves one part of kernel/ec1-guest.config at run time.
    let script = "unshare -u sh -c 'hostname inner; hostname'; \
                  ip -6 addr show dev lo | grep -o '::1/128'; \
                  cat /proc/sys/kernel/seccomp/actions_avail | grep -o user_notif; \
                  test -e /proc/sysvipc/shm && echo sysvipc; \
                  test -e /proc/sys/fs/inotify/max_user_watches && echo inotify; \
                  test -c /dev/loop-control && echo loop; \
                  grep -o overlay /proc/filesystems; \
                  test -e /proc/sys/fs/aio-max-nr && echo aio; \
                  ls /proc/self/ns | grep -c -E '^(ipc|net|pid|user|uts)$'";
    let out = exec(&["sh", "-c", script], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "inner\n::1/128\nuser_notif\nsysvipc\ninotify\nloop\noverlay\naio\n5\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exec_separates_stdout_and_stderr_and_pipes_stdin() {
    let out = exec(&["sh", "-c", "echo to-out; echo to-err >&2"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-err\n");
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let out = exec(&["cat"], Some(&data));
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "stdin came back altered");
}

#[test]
fn cp_round_trip_keeps_bytes_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let v = vm();
    let src = v.dir.join("up.bin");
    let data = pseudo_random(50 << 20, 5);
    std::fs::write(&src, &data).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();
    let back = v.dir.join("down.bin");
    let cp = |a: &Path, b: &str, reverse: bool| {
        let mut c = Command::new(EC1);
        c.arg("cp").arg("--api-sock").arg(&v.sock);
        if reverse {
            c.arg(b).arg(a);
        } else {
            c.arg(a).arg(b);
        }
        c.stdin(Stdio::null()).output().unwrap()
    };
    let out = cp(&src, "vm:/tmp/up.bin", false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec(
        &[
            "sh",
            "-c",
            "stat -c '%a %s' /tmp/up.bin; sha256sum < /tmp/up.bin",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("750 {}\n{}  -\n", data.len(), sha256_hex(&data)),
        "the upload arrived altered: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cp(&back, "vm:/tmp/up.bin", true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = exec(&["rm", "/tmp/up.bin"], None);
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the download came back altered");
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o777,
        0o750
    );
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&back);
}

#[test]
fn exec_t_gives_the_command_a_pty_even_without_a_local_terminal() {
    // ec1's stdin and stdout are pipes here (a script, CI): `-t` still runs the command
    // on a pty, of the default 24x80 size, with stdin passed as with `-i`, and its one
    // output stream (the terminal's, so with CRLF line ends) on ec1's stdout.
    let script = "test -t 0 && test -t 1 && test -t 2 && echo tty; tty; stty size; exit 5";
    let out = exec_with(&["-t"], &["sh", "-c", script], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}");
    let lines: Vec<&str> = stdout.split("\r\n").collect();
    assert_eq!(lines.len(), 4, "{stdout:?}");
    assert_eq!(lines[0], "tty", "{stdout:?}");
    assert!(lines[1].starts_with("/dev/pts/"), "{stdout:?}");
    assert_eq!((lines[2], lines[3]), ("24 80", ""), "{stdout:?}");
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Piped input reaches the pty, which echoes it like a terminal does.
    let out = exec_with(
        &["-t"],
        &["sh", "-c", "read x; echo got:$x"],
        Some(b"hello\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\r\ngot:hello\r\n"
    );
}

/// A pseudo-terminal for ec1 to run on, as a user's terminal: (master, slave), both
/// close-on-exec so that no other test's child keeps the slave open.
fn local_terminal(rows: u16, cols: u16) -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let cloexec = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: posix_openpt returns a new descriptor or -1; it is owned at once.
    let m = unsafe { libc::posix_openpt(cloexec) };
    assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
    // SAFETY: `m` is a fresh descriptor that nothing else owns.
    let master = unsafe { std::fs::File::from_raw_fd(m) };
    // SAFETY: grantpt/unlockpt act only on the master we own.
    assert_eq!(unsafe { libc::grantpt(m) + libc::unlockpt(m) }, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is writable for the length passed.
    assert_eq!(
        unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) },
        0
    );
    // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
    let s = unsafe { libc::open(name.as_ptr(), cloexec) };
    assert!(
        s >= 0,
        "opening the pty slave: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `s` is a fresh descriptor that nothing else owns.
    let slave = unsafe { std::fs::File::from_raw_fd(s) };
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    assert_eq!(unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &ws) }, 0);
    (master, slave)
}

fn termios_of(f: &std::fs::File) -> libc::termios {
    use std::os::fd::AsRawFd;
    // SAFETY: termios is plain data, filled by tcgetattr on success.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a pointer to a live termios.
    assert_eq!(unsafe { libc::tcgetattr(f.as_raw_fd(), &mut t) }, 0);
    t
}

#[test]
fn exec_t_on_a_local_terminal_is_raw_sized_and_restored() {
    let v = vm();
    let (mut master, slave) = local_terminal(30, 100);
    let before = termios_of(&slave);
    let script = "echo ready; read x; echo got:$x; stty size";
    let mut child = Command::new(EC1)
        .arg("exec")
        .arg("--api-sock")
        .arg(&v.sock)
        .args(["-t", "--", "sh", "-c", script])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .spawn()
        .unwrap();
    let mut reader = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    // Ends with EIO once no one holds the slave (ec1 has exited, ours is dropped).
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let read_until = |needle: &str, seen: &mut Vec<u8>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(seen).contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.extend(chunk),
                Err(_) => return false,
            }
        }
        true
    };
    let ready = read_until("ready\r\n", &mut seen);
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        ready,
        "no prompt from the guest: {:?}",
        String::from_utf8_lossy(&seen)
    );
    // ec1 put the local terminal in raw mode before starting the command.
    let during = termios_of(&slave);
    // Enter sends CR; the guest's terminal turns it into a line end and echoes it.
    master.write_all(b"hello\r").unwrap();
    let status = wait_for(Duration::from_secs(30), || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = status.expect("ec1 exec -t did not exit");
    let after = termios_of(&slave);
    drop(slave);
    let finished = read_until("30 100\r\n", &mut seen);
    drop(rx);
    reader.join().unwrap();
    assert!(
        status.success(),
        "{status:?}: {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(finished, "{:?}", String::from_utf8_lossy(&seen));
    assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO), 0, "not raw");
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "ready\r\nhello\r\ngot:hello\r\n30 100\r\n",
        "the guest's pty has the local terminal's size"
    );
    assert_eq!(
        (after.c_iflag, after.c_oflag, after.c_lflag),
        (before.c_iflag, before.c_oflag, before.c_lflag),
        "ec1 left the local terminal changed"
    );
}

#[test]
fn api_reports_state_and_refuses_pre_boot_calls_after_start() {
    let v = vm();
    let (code, body) = http(&v.sock, "GET", "/", None);
    assert_eq!(code, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["id"], "shared_vm");
    assert_eq!(info["app_name"], "Firecracker");
    assert!(
        info["state"] == "Running" || info["state"] == "Paused",
        "{info}"
    );
    let (code, body) = http(&v.sock, "GET", "/machine-config", None);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["vcpu_count"],
        2
    );
    let mc = json!({"vcpu_count": 1, "mem_size_mib": 128}).to_string();
    let (code, body) = http(&v.sock, "PUT", "/machine-config", Some(&mc));
    assert_eq!(code, 400);
    assert!(body.contains("fault_message"), "{body}");
    let out = exec(&["nproc"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}

/// The guest's `/proc/uptime`, in seconds.
fn guest_uptime() -> f64 {
    let out = exec(&["cat", "/proc/uptime"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an uptime: {text:?} {out:?}"))
}

/// Resumes the VM on `.0` when dropped, so that a failing test leaves the shared VM
/// running for the others.
struct ResumeOnDrop<'a>(&'a Path);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        let (code, body) = http(self.0, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#));
        if !std::thread::panicking() {
            assert_eq!(code, 204, "{body}");
        }
    }
}

#[test]
fn a_paused_guest_is_reported_paused_and_its_clock_stops() {
    // The only test that pauses the shared VM (others may see it paused, and wait).
    let v = vm();
    let state = || {
        let (code, body) = http(&v.sock, "GET", "/", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["state"].clone()
    };
    assert_eq!(state(), "Running");
    let t0 = std::time::Instant::now();
    let up0 = guest_uptime();
    let (code, body) = http(&v.sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(code, 204, "{body}");
    let paused = ResumeOnDrop(&v.sock);
    assert_eq!(state(), "Paused");
    std::thread::sleep(Duration::from_millis(1500));
    drop(paused);
    assert_eq!(state(), "Running");
    let up1 = guest_uptime();
    let wall = t0.elapsed().as_secs_f64();
    // Everything between the two readings but the pause counts for the guest.
    assert!(
        up1 - up0 < wall - 1.0,
        "the guest's clock ran on while paused: guest {:.2} s, wall {wall:.2} s",
        up1 - up0
    );
}

/// Reads ec1's stdout (the serial console) on a thread, forwarding lines.
fn console_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no console line containing {needle:?}");
}

#[test]
fn pause_resume_ctrl_alt_del_and_vm_config_round_trip() {
    let dir = tempfile::Builder::new()
        .prefix("ec1-api-life")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("fc.sock");
    let initrd = dir.path().join("initrd.cpio");
    std::fs::copy(test_initramfs(), &initrd).unwrap();
    let mut child = Command::new(EC1)
        .args(["--id", "life", "--api-sock"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let console = console_lines(&mut child);
    wait_for(Duration::from_secs(10), || sock.exists().then_some(())).expect("no API socket");
    let boot = json!({
        "kernel_image_path": kernel(),
        "initrd_path": initrd,
        "boot_args": "console=ttyS0 reboot=k panic=1 quiet ec1test.action=hang"
    });
    assert_eq!(
        http(&sock, "PUT", "/boot-source", Some(&boot.to_string())).0,
        204
    );
    let mc = json!({"vcpu_count": 2, "mem_size_mib": 192}).to_string();
    assert_eq!(http(&sock, "PUT", "/machine-config", Some(&mc)).0, 204);
    let (code, body) = http(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(code, 204, "{body}");
    let (_, body) = http(&sock, "GET", "/", None);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "Running"
    );
    let first = wait_line(&console, "EC1TEST cpus=");
    wait_line(&console, "EC1TEST tick");

    // Paused: the guest prints nothing; resumed: it ticks again.
    assert_eq!(
        http(&sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0,
        204
    );
    let (_, body) = http(&sock, "GET", "/", None);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "Paused"
    );
    while console.recv_timeout(Duration::from_millis(300)).is_ok() {} // drain in-flight lines
    assert!(
        console.recv_timeout(Duration::from_millis(700)).is_err(),
        "a paused guest printed"
    );
    assert_eq!(
        http(&sock, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#)).0,
        204
    );
    wait_line(&console, "EC1TEST tick");

    let (code, config) = http(&sock, "GET", "/vm/config", None);
    assert_eq!(code, 200);

    // Ctrl-Alt-Del reaches the guest's keyboard; the kernel reboots; ec1 exits 0.
    assert_eq!(
        http(
            &sock,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#)
        )
        .0,
        204
    );
    let status =
        wait_for(Duration::from_secs(30), || child.try_wait().unwrap()).expect("ec1 did not exit");
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists(), "the API socket was not removed");

    // The exported configuration boots the same guest.
    let cfg = dir.path().join("exported.json");
    std::fs::write(&cfg, &config).unwrap();
    let mut again = Command::new(EC1)
        .args(["--no-api", "--id", "again", "--config-file"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let console = console_lines(&mut again);
    let second = wait_line(&console, "EC1TEST cpus=");
    assert_eq!(
        first, second,
        "the exported configuration booted a different guest"
    );
    // SIGTERM ends ec1 and its engine.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(again.id() as i32, libc::SIGTERM) };
    let status = wait_for(Duration::from_secs(20), || again.try_wait().unwrap())
        .expect("ec1 ignored SIGTERM");
    assert!(
        status.code().is_some(),
        "ec1 should exit on SIGTERM, not die by it: {status:?}"
    );
    let needle = dir.path().to_str().unwrap().to_string();
    assert!(
        wait_for(Duration::from_secs(5), || processes_matching(&needle)
            .is_empty()
            .then_some(()))
        .is_some(),
        "engine left behind"
    );
}
