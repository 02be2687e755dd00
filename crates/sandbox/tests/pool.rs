//! A warm pool with real guests: claims get running, distinct clones whose agents
//! answer at once; a claim that ends stops its clone; the pool ends on request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ec1_client::Command;
use ec1_sandbox::pool::{lock, serve, status, PoolConfig};
use ec1_sandbox::{BootPath, Sandbox, SandboxOptions, TemplateCache};

fn opts() -> SandboxOptions {
    ec1_engine_qemu::register();
    SandboxOptions {
        kernel: Some(ec1_testkit::kernel()),
        mem_mib: 128,
        engine: ec1_engine::EngineChoice::parse("qemu-tcg"),
        ..SandboxOptions::default()
    }
}

fn out(sb: &Sandbox, script: &str) -> String {
    let o = sb
        .client()
        .output(&Command::new("sh").arg("-c").arg(script))
        .unwrap();
    assert!(o.status.success(), "{script}: {}", o.status);
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn claims_get_warm_distinct_clones() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = TemplateCache::at(tmp.path().join("templates"));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let config = PoolConfig {
        size: 2,
        idle_timeout: None,
        warm: true,
    };
    let server = {
        let (cache, stop) = (cache.clone(), stop.clone());
        let held = lock(&opts(), &cache)
            .unwrap()
            .expect("nobody serves it yet");
        std::thread::spawn(move || {
            serve(&opts(), &cache, held, config, stop, |info| {
                tx.send(info.socket.clone()).unwrap();
            })
        })
    };
    let socket = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert!(socket.exists());
    // A second pool for the same template cannot start.
    assert!(lock(&opts(), &cache).unwrap().is_none());

    // Wait until both members are warm: a claim then never falls back.
    let claim = |host: &str| {
        let o = SandboxOptions {
            hostname: Some(host.into()),
            ..opts()
        };
        Sandbox::from_template(&o, &cache).unwrap()
    };
    let mut got = Vec::new();
    for attempt in 0..600 {
        let sb = claim(&format!("pooled-{attempt}"));
        if matches!(sb.boot_path(), BootPath::Pool { .. }) {
            got.push(sb);
            break;
        }
        sb.shutdown().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got.len(), 1, "no warm clone within a minute");
    let a = got.pop().unwrap();
    let b = loop {
        let sb = claim("other");
        if matches!(sb.boot_path(), BootPath::Pool { .. }) {
            break sb;
        }
        sb.shutdown().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    };
    let script = "head -c 16 /dev/urandom | od -x | head -1; hostname";
    let (oa, ob) = (out(&a, script), out(&b, script));
    assert_ne!(oa.lines().next(), ob.lines().next(), "same random bytes");
    assert!(oa.contains("\npooled-"), "{oa}");
    assert!(ob.ends_with("other\n"), "{ob}");
    let t = a.restore_timings().unwrap();
    assert!(t.build.is_none());
    assert!(a.engine().pause().is_err(), "the pool owns its clones");
    // Giving a clone back stops it: its agent goes away.
    let client = a.client().clone();
    a.shutdown().unwrap();
    let gone = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        client.ping(Duration::from_millis(200)).is_err()
    });
    assert!(gone, "the returned clone still answers");
    b.shutdown().unwrap();

    // The pool stops a returned clone after its claimant closed the claim.
    let st = (0..200)
        .find_map(|_| {
            let st = status(&socket).expect("the pool answers info");
            if st.claimed == 0 {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
            None
        })
        .expect("the returned clones are still counted as running");
    assert_eq!((st.size, st.mem_mib), (2, 128));
    assert!(st.claims >= 2, "{st:?}");

    stop.store(true, Ordering::SeqCst);
    let why = server.join().unwrap().unwrap();
    assert_eq!(why, "asked to stop");
    assert!(!socket.exists(), "the pool removed its socket");
    assert!(
        lock(&opts(), &cache).unwrap().is_some(),
        "the pool's lock went with it"
    );
}
