//! The agent in a real guest under abuse: malformed frames, lost framing, hosts that
//! disconnect mid-stream and reconnect. These tests reconnect and reset the channel,
//! so they share a guest of their own and run one at a time.

mod common;

use common::Guest;
use ec1_client::{Client, Command, ConnectOptions, Error};
use ec1_proto::{write_frame, write_msg, Kind, Msg};
use std::io::Read;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

struct Shared {
    guest: Guest,
    /// The current client (tests replace it when they disconnect).
    client: Mutex<Client>,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let guest = Guest::boot("robustness", 256, 1, "");
        let client = Mutex::new(guest.client.clone());
        Shared { guest, client }
    })
}

/// One test at a time: they reset the channel under each other otherwise.
fn serial() -> MutexGuard<'static, ()> {
    static L: Mutex<()> = Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

fn reconnect(s: &Shared) -> Client {
    let c = Client::connect(
        &s.guest.socket,
        &ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(30),
        },
    )
    .unwrap_or_else(|e| panic!("reconnecting: {e}\n{}", s.guest.serial()));
    *s.client.lock().unwrap() = c.clone();
    c
}

fn current(s: &Shared) -> Client {
    s.client.lock().unwrap().clone()
}

fn echo(c: &Client, word: &str) {
    let o = c.output(&Command::new("echo").arg(word)).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{word}\n"));
}

#[test]
fn a_malformed_frame_closes_only_its_session() {
    let _l = serial();
    let s = shared();
    let c = current(s);
    let mut live = c.spawn(&Command::new("cat").stdin(true)).unwrap();
    let mut raw = Vec::new();
    write_frame(&mut raw, Kind::Control, 0, 4000, &[0xEE, 1, 2]).unwrap();
    write_frame(&mut raw, Kind::Stderr, 0, 4001, b"wrong way").unwrap();
    write_msg(
        &mut raw,
        4002,
        &Msg::Exited {
            how: ec1_proto::Termination::Code(0),
            timed_out: false,
        },
    )
    .unwrap();
    c.send_raw(&raw).unwrap();
    let mut stdin = live.stdin().unwrap();
    std::io::Write::write_all(&mut stdin, b"unharmed").unwrap();
    stdin.close().unwrap();
    let mut out = Vec::new();
    live.stdout().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, b"unharmed");
    assert!(live.wait().unwrap().success());
    echo(&c, "after-malformed");
}

#[test]
fn lost_framing_resets_the_channel_and_the_agent_carries_on() {
    let _l = serial();
    let s = shared();
    let c = current(s);
    let mut victim = c.spawn(&Command::new("sleep").arg("100")).unwrap();
    c.send_raw(b"\x01garbage where a frame header belongs, and more of it")
        .unwrap();
    let e = victim.wait().unwrap_err();
    assert!(matches!(e, Error::ChannelReset(_)), "{e}");
    echo(&c, "after-reset");
    // The reset killed the victim's process.
    let o = c
        .output(&Command::shell("pidof sleep || echo none"))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "none");
}

#[test]
fn a_client_disconnecting_mid_stream_leaves_a_working_agent() {
    let _l = serial();
    let s = shared();
    for round in 0..3 {
        let c = current(s);
        // A flood in full swing, and a half-written frame, when the host goes away.
        let mut flood = c
            .spawn(&Command::new("yes").arg(format!("round{round}")))
            .unwrap();
        let mut out = flood.stdout().unwrap();
        let mut buf = vec![0u8; 100_000];
        out.read_exact(&mut buf).unwrap();
        let mut partial = Vec::new();
        write_frame(&mut partial, Kind::Stdin, 0, 77, &[b'x'; 5000]).unwrap();
        c.send_raw(&partial[..1000]).unwrap();
        c.close();
        drop((out, flood, c));
        let c = reconnect(s);
        echo(&c, &format!("reconnected{round}"));
        // The old flood was killed when its host went away.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = c.output(&Command::shell("pidof yes || echo none")).unwrap();
            if String::from_utf8_lossy(&o.stdout).trim() == "none" {
                break;
            }
            assert!(Instant::now() < deadline, "`yes` survived its host");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn idle_guest_numbers() {
    let _l = serial();
    let s = shared();
    let c = current(s);
    let mem = c
        .output(&Command::shell(
            "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo",
        ))
        .unwrap();
    let text = String::from_utf8_lossy(&mem.stdout).into_owned();
    let kb = |k: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let used_mib = (kb("MemTotal") - kb("MemAvailable")) / 1024;
    // Raw stdout throughput: 200 MiB of zeros through the channel.
    let t = Instant::now();
    let mut p = c
        .spawn(&Command::shell("head -c 209715200 /dev/zero"))
        .unwrap();
    let mut out = p.stdout().unwrap();
    let mut n = 0usize;
    while let Some(chunk) = out.next_chunk().unwrap() {
        n += chunk.len();
    }
    assert!(p.wait().unwrap().success());
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, 200 << 20);
    eprintln!(
        "idle guest (256 MiB): {used_mib} MiB in use (MemTotal - MemAvailable); \
         stdout throughput {:.1} MiB/s",
        200.0 / secs
    );
    assert!(
        used_mib < 64,
        "{used_mib} MiB used by an idle guest\n{text}"
    );
}
