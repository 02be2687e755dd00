//! `run` with an in-process fake engine: serves Firecracker's API on a socket without
//! QEMU, for API conformance runs (`tests/schemathesis.sh`) and manual poking.
//!
//! Usage: `cargo run -p ec1-api --example fake_vmm -- --api-sock <path>` (the flag
//! Firecracker and `ec1` take, so conformance scripts drive all three alike).
//! The guest "runs" until SIGTERM/SIGINT; the engine supports snapshots, drive updates
//! and Ctrl-Alt-Del so every endpoint can be exercised.

#[path = "../tests/common/fake_engine.rs"]
mod fake_engine;

use fake_engine::{factory, FakeBehaviour, FakeEngine};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sock = match args.as_slice() {
        [flag, path] if flag == "--api-sock" => path.clone(),
        [path] => path.clone(),
        _ => {
            eprintln!("usage: fake_vmm --api-sock <path>");
            std::process::exit(2);
        }
    };
    let engine = FakeEngine::new(FakeBehaviour {
        snapshots: true,
        drive_updates: true,
        ctrl_alt_del: true,
        ..Default::default()
    });
    let mut opts = ec1_api::RunOptions::new("fake", factory(engine));
    opts.api_sock = Some(sock.into());
    opts.id = "fake-vmm".into();
    opts.level = Some(std::env::var("EC1_LOG_LEVEL").unwrap_or_else(|_| "Warning".into()));
    match ec1_api::run(opts) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("fake_vmm: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
