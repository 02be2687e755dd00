//! The client against the real agent server running in this process over a
//! socketpair: everything but PID-1 duties and the virtio port, fast and on the host.

use ec1_agent::{default_env, Config, DirectReaper, Server};
use ec1_client::{Client, Command, Error, ErrorCode};
use ec1_proto::{write_frame, write_msg, Kind, Msg};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Fixture {
    client: Client,
    server: Server,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

fn start() -> Fixture {
    start_with(None)
}

/// An agent in this process; with `refusal`, one whose root drive could not be mounted.
fn start_with(refusal: Option<String>) -> Fixture {
    ec1_agent::log::set_debug(std::env::var_os("EC1_AGENT_DEBUG").is_some());
    // A test runner started in the background inherits SIGINT and SIGQUIT ignored, and
    // so would every command (a shell cannot trap what it inherited ignored). The
    // guest's PID 1 starts with default dispositions; so should these tests.
    // SAFETY: resetting dispositions to the default has no memory effects.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
    }
    let (a, b) = UnixStream::pair().unwrap();
    let w = a.try_clone().unwrap();
    let server = Server::new(
        Config {
            mode: "test".into(),
            agent_start_ns: 1,
            agent_ready_ns: 2,
            base_env: default_env(),
            reaper: Arc::new(DirectReaper),
            refusal,
        },
        Box::new(w),
    );
    let s2 = server.clone();
    let thread = Some(std::thread::spawn(move || s2.serve(a)));
    let client = Client::handshake(b, Duration::from_secs(10)).unwrap();
    Fixture {
        client,
        server,
        thread,
    }
}

impl Fixture {
    /// Drops the client and waits for the server to notice and stop.
    fn stop(mut self) -> Server {
        self.client.close();
        assert!(!self.client.is_connected());
        self.thread.take().unwrap().join().unwrap().unwrap();
        self.server.clone()
    }
}

/// Whether `pid` is alive: present and not a zombie (an orphan killed here may wait a
/// while for the host's init to reap it).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

fn sh(c: &Client, script: &str) -> ec1_client::Output {
    c.output(&Command::shell(script)).unwrap()
}

#[test]
fn handshake_reports_the_agent() {
    let f = start();
    let r = f.client.ready_info();
    assert_eq!(r.mode, "test");
    assert_eq!(r.version, ec1_proto::PROTOCOL_VERSION);
    assert!(r.uptime_ns > 0 && r.realtime_ns > 0);
    assert!(f.client.ping(Duration::from_secs(5)).unwrap() < Duration::from_secs(5));
    assert!(f.client.is_connected());
    f.stop();
}

#[test]
fn exit_codes_and_signals() {
    let f = start();
    for code in [0, 1, 3] {
        let o = sh(&f.client, &format!("exit {code}"));
        assert_eq!(o.status.code(), Some(code));
        assert_eq!(o.status.success(), code == 0);
    }
    let o = sh(&f.client, "kill -TERM $$");
    assert_eq!(o.status.signal(), Some(15));
    assert_eq!(o.status.shell_code(), 143);
    let e = f
        .client
        .output(&Command::new("no-such-command-ec1"))
        .unwrap_err();
    assert_eq!(e.remote_code(), Some(ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("command not found"), "{e}");
    let e = f
        .client
        .output(&Command::new("true").cwd("/nonexistent-dir"))
        .unwrap_err();
    assert!(matches!(e, Error::Remote { .. }), "{e}");
    f.stop();
}

#[test]
fn stdout_and_stderr_are_separate_complete_and_binary_safe() {
    let f = start();
    // 4 MiB of every byte value on stdout, a different 1 MiB on stderr, interleaved.
    let o = sh(
        &f.client,
        "i=0; while [ $i -lt 64 ]; do head -c 65536 /dev/zero | tr '\\0' '\\377'; \
         head -c 16384 /dev/zero >&2; i=$((i+1)); done",
    );
    assert!(o.status.success());
    assert_eq!(o.stdout.len(), 4 << 20);
    assert!(o.stdout.iter().all(|&b| b == 0xff));
    assert_eq!(o.stderr.len(), 1 << 20);
    assert!(o.stderr.iter().all(|&b| b == 0));
    let o = sh(&f.client, "printf 'a\\000b\\nc'; printf err >&2");
    assert_eq!(o.stdout, b"a\0b\nc");
    assert_eq!(o.stderr, b"err");
    f.stop();
}

#[test]
fn stdin_is_streamed_with_backpressure() {
    let f = start();
    let mut p = f
        .client
        .spawn(&Command::new("sha256sum").stdin(true))
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    let mut stdout = p.stdout().unwrap();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let want = ec1_testkit::sha256_hex(&data);
    let t = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
        stdin.close().unwrap();
    });
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    t.join().unwrap();
    assert!(p.wait().unwrap().success());
    assert_eq!(out.split_whitespace().next(), Some(want.as_str()));
    f.stop();
}

#[test]
fn many_concurrent_sessions() {
    let f = start();
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let c = f.client.clone();
            std::thread::spawn(move || {
                let o = c
                    .output(&Command::shell(format!("echo $((6*{i})); exit {}", i % 4)))
                    .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&o.stdout).trim(),
                    (6 * i).to_string()
                );
                assert_eq!(o.status.code(), Some(i % 4));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    f.stop();
}

#[test]
fn timeouts_kill_the_whole_group() {
    let f = start();
    let t = Instant::now();
    let o = f
        .client
        .output(&Command::shell("sleep 30 & echo $!; sleep 30").timeout(Duration::from_millis(300)))
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(o.status.timed_out());
    assert_eq!(o.status.signal(), Some(9));
    let child: i32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    // The background child was in the group: it is gone too.
    assert!(wait_gone(child), "child {child} survived");
    f.stop();
}

#[test]
fn signals_reach_the_command() {
    let f = start();
    let mut p = f
        .client
        .spawn(&Command::shell(
            "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.05; done",
        ))
        .unwrap();
    let mut out = p.stdout().unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    p.signal(libc::SIGINT).unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got-int\n");
    assert_eq!(p.wait().unwrap().code(), Some(7));
    let mut p = f.client.spawn(&Command::new("sleep").arg("30")).unwrap();
    p.kill().unwrap();
    assert_eq!(p.wait().unwrap().signal(), Some(9));
    f.stop();
}

/// An agent whose root drive could not be mounted runs no command and moves no file,
/// and says why, instead of running them in its initramfs.
#[test]
fn a_guest_not_where_it_was_asked_to_be_runs_nothing() {
    let why = "the guest could not mount its root drive /dev/vda: EINVAL";
    let f = start_with(Some(why.into()));
    let marker = tempfile::tempdir().unwrap().path().join("ran");
    let e = f
        .client
        .output(&Command::new("touch").arg(marker.to_str().unwrap()))
        .unwrap_err();
    assert_eq!(e.remote_code(), Some(ErrorCode::Refused), "{e}");
    assert!(e.to_string().contains(why), "{e}");
    assert!(!marker.exists(), "the command ran");
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("f");
    std::fs::write(&src, b"x").unwrap();
    let e = f
        .client
        .upload(&src, d.path().join("g").to_str().unwrap())
        .unwrap_err();
    assert_eq!(e.remote_code(), Some(ErrorCode::Refused), "{e}");
    assert!(!d.path().join("g").exists());
    let e = f
        .client
        .download(src.to_str().unwrap(), &d.path().join("h"))
        .unwrap_err();
    assert_eq!(e.remote_code(), Some(ErrorCode::Refused), "{e}");
    f.stop();
}

/// A hostile guest's file: its setuid bit is dropped on the host, and a symlink
/// planted where a predictable temporary name would be redirects nothing.
#[test]
fn downloads_take_no_special_bits_and_follow_no_planted_symlink() {
    let f = start();
    let d = tempfile::tempdir().unwrap();
    let guest_file = d.path().join("suid");
    std::fs::write(&guest_file, b"from the guest").unwrap();
    std::fs::set_permissions(&guest_file, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    let local = d.path().join("copy");
    // The name the temporary had before it was unpredictable.
    std::os::unix::fs::symlink(
        &victim,
        d.path()
            .join(format!(".copy.ec1-download-{}", std::process::id())),
    )
    .unwrap();
    let m = f
        .client
        .download(guest_file.to_str().unwrap(), &local)
        .unwrap();
    assert_eq!(m.mode & 0o7000, 0, "no special bits: {:o}", m.mode);
    let mode = std::fs::metadata(&local).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode & 0o7000, 0, "{mode:o}");
    assert_eq!(std::fs::read(&local).unwrap(), b"from the guest");
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    f.stop();
}

#[test]
fn files_round_trip_with_their_mode() {
    let f = start();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.bin");
    let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).unwrap();
    let remote = d.path().join("remote.bin");
    let n = f.client.upload(&src, remote.to_str().unwrap()).unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(&remote).unwrap(), data);
    assert_eq!(
        std::fs::metadata(&remote).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    let back = d.path().join("back.bin");
    let m = f.client.download(remote.to_str().unwrap(), &back).unwrap();
    assert_eq!(m.mode, 0o751);
    assert_eq!(m.size, data.len() as u64);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    // Errors name the file, and leave nothing behind.
    let e = f
        .client
        .download("/nonexistent/x", &d.path().join("y"))
        .unwrap_err();
    assert_eq!(e.remote_code(), Some(ErrorCode::NotFound), "{e}");
    assert!(!d.path().join("y").exists());
    let e = f
        .client
        .download(d.path().to_str().unwrap(), &d.path().join("y"))
        .unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let e = f.client.upload(&src, "/nonexistent-dir/file").unwrap_err();
    assert!(e.to_string().contains("nonexistent-dir"), "{e}");
    let e = f
        .client
        .upload(&d.path().join("missing"), "/tmp/x")
        .unwrap_err();
    assert!(matches!(e, Error::File { .. }), "{e}");
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    f.stop();
}

#[test]
fn a_pty_session_has_a_terminal() {
    let f = start();
    let mut p = f
        .client
        .spawn(&Command::shell("tty; stty size").pty(33, 101))
        .unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).unwrap();
    let mut err = Vec::new();
    p.stderr().unwrap().read_to_end(&mut err).unwrap();
    assert!(p.wait().unwrap().success());
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("33 101"), "{out:?}");
    assert!(err.is_empty());
    // Resizing and typing into it.
    let mut p = f
        .client
        .spawn(
            &Command::shell("read line; stty size; echo got:$line")
                .pty(10, 20)
                .stdin(true),
        )
        .unwrap();
    p.resize(40, 120).unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"hi\n").unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("40 120"), "{out:?}");
    assert!(out.contains("got:hi"), "{out:?}");
    drop(stdin);
    assert!(p.wait().unwrap().success());
    f.stop();
}

#[test]
fn a_flood_does_not_stall_other_sessions() {
    let f = start();
    // A command writing without end, whose output nobody reads.
    let mut flood = f.client.spawn(&Command::new("yes")).unwrap();
    let _unread = flood.stdout();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(sh(&f.client, "echo hi").stdout, b"hi\n");
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    flood.kill().unwrap();
    drop(_unread);
    assert_eq!(flood.wait().unwrap().signal(), Some(9));
    f.stop();
}

#[test]
fn malformed_frames_close_only_their_session() {
    let f = start();
    let mut live = f.client.spawn(&Command::new("cat").stdin(true)).unwrap();
    // A control frame with an undecodable message for session 999.
    let mut raw = Vec::new();
    write_frame(&mut raw, Kind::Control, 0, 999, &[0xEE]).unwrap();
    // A data frame of a kind the host may not send.
    write_frame(&mut raw, Kind::Stdout, 0, 998, b"x").unwrap();
    // A message for the host, sent to the agent.
    write_msg(&mut raw, 997, &Msg::Started { pid: 1 }).unwrap();
    f.client.send_raw(&raw).unwrap();
    // The live session is untouched.
    let mut stdin = live.stdin().unwrap();
    stdin.write_all(b"still here").unwrap();
    stdin.close().unwrap();
    let mut out = Vec::new();
    live.stdout().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, b"still here");
    assert!(live.wait().unwrap().success());
    f.stop();
}

#[test]
fn lost_framing_resets_and_the_agent_carries_on() {
    let f = start();
    let mut victim = f.client.spawn(&Command::new("sleep").arg("30")).unwrap();
    f.client
        .send_raw(b"\x01\x02 this is not a frame header at all ....")
        .unwrap();
    let e = victim.wait().unwrap_err();
    assert!(matches!(e, Error::ChannelReset(_)), "{e}");
    // New sessions work after the reset.
    assert_eq!(sh(&f.client, "echo back").stdout, b"back\n");
    f.stop();
}

#[test]
fn disconnecting_mid_stream_kills_the_sessions() {
    let f = start();
    let mut p = f
        .client
        .spawn(&Command::shell("echo $$; exec yes"))
        .unwrap();
    let mut out = p.stdout().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while b != [b'\n'] {
        out.read_exact(&mut b).unwrap();
        line.push(b[0]);
    }
    let pid: i32 = String::from_utf8_lossy(&line).trim().parse().unwrap();
    let mut chunk = [0u8; 4096];
    out.read_exact(&mut chunk).unwrap();
    // The handles stay: the disconnect, not an abandoned session, must stop it.
    let server = f.stop();
    assert_eq!(server.session_count(), 0);
    assert!(wait_gone(pid), "`yes` (pid {pid}) survived");
    drop((out, p));
}

#[test]
fn dropping_a_process_kills_it() {
    let f = start();
    let p = f
        .client
        .spawn(&Command::shell("echo $$; exec sleep 30"))
        .unwrap();
    let pid = p.id() as i32;
    drop(p);
    assert!(wait_gone(pid), "pid {pid} survived");
    f.stop();
}

#[test]
fn an_incompatible_host_is_told_so() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let server = Server::new(
        Config {
            mode: "test".into(),
            agent_start_ns: 0,
            agent_ready_ns: 0,
            base_env: default_env(),
            reaper: Arc::new(DirectReaper),
            refusal: None,
        },
        Box::new(a.try_clone().unwrap()),
    );
    let t = std::thread::spawn(move || server.serve(a));
    write_msg(
        &mut b,
        0,
        &Msg::Hello {
            min_version: 50,
            max_version: 60,
            nonce: 1,
        },
    )
    .unwrap();
    let mut r = ec1_proto::FrameReader::new(b.try_clone().unwrap());
    let msg = loop {
        if let ec1_proto::ReadEvent::Frame(raw) = r.next_event().unwrap() {
            break ec1_proto::Frame::parse(raw).unwrap();
        }
    };
    match msg {
        ec1_proto::Frame::Control {
            msg: Msg::Error { code, message },
            ..
        } => {
            assert_eq!(code, ErrorCode::Version);
            assert!(message.contains("rebuild"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    drop(b);
    drop(r);
    t.join().unwrap().unwrap();
}

#[test]
fn the_handshake_times_out_without_an_agent() {
    let (_a, b) = UnixStream::pair().unwrap();
    let t = Instant::now();
    let e = Client::handshake(b, Duration::from_millis(200))
        .err()
        .unwrap();
    assert!(matches!(e, Error::ReadyTimeout(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let (a, b) = UnixStream::pair().unwrap();
    drop(a);
    let e = Client::handshake(b, Duration::from_secs(5)).err().unwrap();
    assert!(
        matches!(e, Error::Disconnected(_) | Error::Io { .. }),
        "{e}"
    );
    let e = Client::connect(
        "/nonexistent/agent.sock".as_ref(),
        &ec1_client::ConnectOptions {
            connect_timeout: Duration::from_millis(50),
            ready_timeout: Duration::from_millis(50),
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("/nonexistent/agent.sock"), "{e}");
}
