//! A warm pool with real guests: claims get running, distinct clones whose agents
//! answer at once; a claim that ends stops its clone; the pool ends on request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ec1_client::Command;
use ec1_sandbox::pool::serve;
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
    let server = {
        let (cache, stop) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            serve(&opts(), &cache, 2, stop, |info| {
                tx.send(info.socket.clone()).unwrap();
            })
        })
    };
    let socket = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert!(socket.exists());
    // A second pool for the same template is refused.
    let again = serve(&opts(), &cache, 1, Arc::new(AtomicBool::new(false)), |_| {
        panic!("a second pool started")
    });
    assert!(again.unwrap_err().to_string().contains("already serves"));

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

    stop.store(true, Ordering::SeqCst);
    let _ = std::os::unix::net::UnixStream::connect(&socket);
    server.join().unwrap().unwrap();
    assert!(!socket.exists(), "the pool removed its socket");
}
