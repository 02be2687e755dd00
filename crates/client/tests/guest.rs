//! The agent in a real guest (QEMU microvm under TCG, ec1's kernel and the agent
//! initramfs), driven through the client. One guest is shared by every test in this
//! file; each test uses its own sessions, as concurrent users of one VM would.

mod common;

use common::Guest;
use ec1_client::{Command, Error, ErrorCode};
use ec1_testkit::{pseudo_random, sha256_hex};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn guest() -> &'static Guest {
    static G: OnceLock<Guest> = OnceLock::new();
    G.get_or_init(|| Guest::boot("guest", 512, 2, ""))
}

#[test]
fn the_agent_announces_itself_and_the_boot() {
    let g = guest();
    let r = g.client.ready_info();
    assert_eq!(r.mode, "initramfs");
    assert!(r.agent_start_ns > 0 && r.agent_ready_ns >= r.agent_start_ns);
    assert!(r.uptime_ns >= r.agent_ready_ns);
    assert!(!r.agent_version.is_empty());
    // The boot-complete byte reached the engine's debug port.
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.boot_signals.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(g.boot_signals.lock().unwrap().len(), 1, "{}", g.serial());
    assert!(g.client.ping(Duration::from_secs(10)).is_ok());
    // PID 1 set the system up.
    let out = g.sh_ok("hostname; cat /proc/1/cmdline; echo; grep -c ' /proc \\| /sys \\| /dev \\| /dev/pts \\| /tmp \\| /run ' /proc/mounts; cat /sys/class/net/lo/operstate; ls -l /bin/sh");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines[0], "ec1");
    assert!(lines[1].starts_with("/init"), "{out}");
    assert_eq!(lines[2], "6", "{out}");
    assert!(matches!(lines[3], "unknown" | "up"), "{out}");
    assert!(lines[4].contains("/.ec1/bin/busybox"), "{out}");
}

#[test]
fn exit_codes_and_death_by_signal() {
    let g = guest();
    for code in [0, 1, 3] {
        let o = g.sh(&format!("exit {code}"));
        assert_eq!(o.status.code(), Some(code), "{}", o.status);
    }
    let o = g.sh("kill -9 $$");
    assert_eq!(o.status.signal(), Some(9));
    assert_eq!(o.status.shell_code(), 137);
    let o = g.sh("kill -TERM $$");
    assert_eq!(o.status.signal(), Some(15));
    let e = g
        .client
        .output(&Command::new("no-such-program"))
        .unwrap_err();
    assert_eq!(e.remote_code(), Some(ErrorCode::NotFound), "{e}");
}

#[test]
fn stdout_and_stderr_carry_100_mib_separately_and_completely() {
    let g = guest();
    // Two different binary megabytes, written 50 times each, to stdout and stderr at
    // once: the host knows exactly what must arrive on each stream.
    let a = pseudo_random(1 << 20, 21);
    let b = pseudo_random(1 << 20, 22);
    g.client.upload_from(&a[..], "/tmp/out.bin", 0o644).unwrap();
    g.client.upload_from(&b[..], "/tmp/err.bin", 0o644).unwrap();
    let script = "for i in $(seq 50); do cat /tmp/out.bin; done & \
                  for i in $(seq 50); do cat /tmp/err.bin >&2; done; wait";
    let t = Instant::now();
    let o = g.client.output(&Command::shell(script)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", o.status);
    assert_eq!(o.stdout.len(), 50 << 20);
    assert_eq!(o.stderr.len(), 50 << 20);
    assert_eq!(
        sha256_hex(&o.stdout),
        sha256_hex(&a.repeat(50)),
        "stdout is not what was sent"
    );
    assert_eq!(
        sha256_hex(&o.stderr),
        sha256_hex(&b.repeat(50)),
        "stderr is not what was sent"
    );
    g.sh_ok("rm /tmp/out.bin /tmp/err.bin");
    eprintln!(
        "100 MiB of stdout+stderr in {secs:.2} s ({:.1} MiB/s)",
        100.0 / secs
    );
}

#[test]
fn stdin_is_piped_in_completely() {
    let g = guest();
    let data = pseudo_random(20 << 20, 7);
    let want = sha256_hex(&data);
    let mut p = g
        .client
        .spawn(&Command::new("sha256sum").stdin(true))
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
        stdin.close().unwrap();
    });
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).unwrap();
    writer.join().unwrap();
    assert!(p.wait().unwrap().success());
    assert_eq!(out.split_whitespace().next(), Some(want.as_str()));
}

#[test]
fn thirty_two_concurrent_execs() {
    let g = guest();
    let threads: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                let o = g
                    .client
                    .output(&Command::shell(format!(
                        "echo $(({i} * 6)); exit {}",
                        i % 4
                    )))
                    .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&o.stdout).trim(),
                    (i * 6).to_string()
                );
                assert_eq!(o.status.code(), Some(i % 4));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_children() {
    let g = guest();
    let t = Instant::now();
    let o = g
        .client
        .output(&Command::shell("sleep 1000 & echo $!; sleep 1000").timeout(Duration::from_secs(2)))
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(o.status.timed_out(), "{}", o.status);
    assert_eq!(o.status.signal(), Some(9));
    let child = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!child.is_empty());
    // PID 1 (the agent) reaped the killed orphan: no such process, not even a zombie.
    let o = g.sh(&format!("test -e /proc/{child}"));
    assert_eq!(
        o.status.code(),
        Some(1),
        "child {child} survived the timeout"
    );
}

#[test]
fn files_of_50_mib_round_trip_with_their_mode() {
    let g = guest();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("big.bin");
    let data = pseudo_random(50 << 20, 11);
    std::fs::write(&src, &data).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).unwrap();
    let t = Instant::now();
    assert_eq!(
        g.client.upload(&src, "/tmp/big.bin").unwrap(),
        data.len() as u64
    );
    let up = t.elapsed();
    let out = g.sh_ok("stat -c %a /tmp/big.bin; sha256sum /tmp/big.bin");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("751"));
    assert_eq!(
        lines.next().unwrap().split_whitespace().next(),
        Some(sha256_hex(&data).as_str())
    );
    let back = d.path().join("back.bin");
    let t = Instant::now();
    let meta = g.client.download("/tmp/big.bin", &back).unwrap();
    let down = t.elapsed();
    assert_eq!(meta.mode, 0o751);
    assert_eq!(meta.size, data.len() as u64);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "downloaded bytes differ"
    );
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    g.sh_ok("rm /tmp/big.bin");
    eprintln!("50 MiB upload {up:?}, download {down:?}");
    let e = g.client.download("/tmp/does-not-exist", &back).unwrap_err();
    assert_eq!(e.remote_code(), Some(ErrorCode::NotFound), "{e}");
}

#[test]
fn a_pty_session_reports_a_terminal() {
    let g = guest();
    let mut p = g
        .client
        .spawn(&Command::shell("tty; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size").pty(25, 90))
        .unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).unwrap();
    assert!(p.wait().unwrap().success(), "{out}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert!(out.contains("25 90"), "{out:?}");
}

#[test]
fn signals_are_delivered() {
    let g = guest();
    let mut p = g
        .client
        .spawn(&Command::shell(
            "trap 'echo term; exit 4' TERM; echo up; while :; do sleep 1; done",
        ))
        .unwrap();
    let mut out = p.stdout().unwrap();
    let mut b = [0u8; 3];
    out.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"up\n");
    p.signal(15).unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "term\n");
    assert_eq!(p.wait().unwrap().code(), Some(4));
}

#[test]
fn a_stdout_flood_does_not_stall_a_concurrent_echo() {
    let g = guest();
    let mut flood = g.client.spawn(&Command::new("yes")).unwrap();
    let mut fl = flood.stdout().unwrap();
    // Let it fill its window, and keep it full (nobody reads further).
    let mut first = [0u8; 4096];
    fl.read_exact(&mut first).unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let o = g.client.output(&Command::new("echo").arg("hi")).unwrap();
        worst = worst.max(t.elapsed());
        assert_eq!(o.stdout, b"hi\n");
    }
    assert!(
        worst < Duration::from_secs(5),
        "an echo took {worst:?} beside the flood"
    );
    flood.kill().unwrap();
    drop(fl);
    assert_eq!(flood.wait().unwrap().signal(), Some(9));
}

#[test]
fn environment_cwd_and_user() {
    let g = guest();
    let o = g
        .client
        .output(
            &Command::shell("echo $FOO; pwd; id -u; id -g")
                .env("FOO", "bar baz")
                .cwd("/tmp")
                .uid(1000)
                .gid(1000),
        )
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "bar baz\n/tmp\n1000\n1000\n"
    );
    // Without a directory, and with `/` given, commands start in `/` (the agent skips
    // the chdir then, so that it can spawn without forking).
    for cmd in [Command::new("pwd"), Command::new("pwd").cwd("/")] {
        let o = g.client.output(&cmd).unwrap();
        assert_eq!(o.stdout, b"/\n");
    }
    let e = g
        .client
        .output(&Command::new("true").cwd("/no/such/dir"))
        .unwrap_err();
    assert!(matches!(e, Error::Remote { .. }), "{e}");
}

/// Prints the numbers the project tracks: exec round trip of `true` and idle memory.
#[test]
fn measurements() {
    let g = guest();
    let mut rt: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let o = g.client.output(&Command::new("true")).unwrap();
            assert!(o.status.success());
            t.elapsed()
        })
        .collect();
    rt.sort();
    let median = rt[rt.len() / 2];
    let p99 = rt[rt.len() * 99 / 100];
    let ping = g.client.ping(Duration::from_secs(5)).unwrap();
    let mem = g.sh_ok("grep -E 'MemTotal|MemAvailable|MemFree' /proc/meminfo | tr -s ' '");
    eprintln!(
        "exec `true` round trip over 200: median {median:?}, p99 {p99:?}; ping {ping:?}; \
         connect+ready after launch {:?}\n{mem}",
        g.connected_after
    );
    assert!(median < Duration::from_secs(2), "median {median:?}");
}
