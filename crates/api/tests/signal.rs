//! SIGTERM stops the engine cleanly and ends `run` with 128 + 15. Alone in its test
//! binary: the signal goes to the whole process.

mod common;

use std::time::Duration;

use common::*;
use ec1_api::{run, RunOptions};

#[test]
fn sigterm_stops_the_guest_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fc.sock");
    let engine = FakeEngine::new(FakeBehaviour::default());
    let mut o = RunOptions::new("fake", factory(engine.clone()));
    o.api_sock = Some(sock.clone());
    o.level = Some("Off".into());
    o.run_dir = Some(dir.path().join("run"));
    let runner = std::thread::spawn(move || run(o));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = Client::connect(&sock);
    let k = dir.path().join("vmlinux");
    std::fs::write(&k, b"").unwrap();
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{}"}}"#, k.display()),
    );
    c.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    // SAFETY: sending a signal to our own process; run() has installed its handler
    // before creating the socket we waited for.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    assert_eq!(runner.join().unwrap().unwrap(), 128 + libc::SIGTERM);
    // Stopped on the signal; `run` stops again (idempotently) to release everything.
    let calls = engine.calls();
    assert_eq!(calls[..2], ["start", "stop"]);
    assert!(calls[2..].iter().all(|c| c == "stop"), "{calls:?}");
    assert!(!sock.exists());
}
