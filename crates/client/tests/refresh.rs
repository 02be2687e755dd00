//! `Client::refresh` against the real agent server in this process (over a
//! socketpair). On the host only the parts that cannot disturb it are applied: entropy
//! (mixed into the host's pool and a CRNG reseed, both harmless) — never the clock or
//! the host name. The guest side is tested with real clones in `ec1-sandbox`.

use ec1_agent::{default_env, Config, DirectReaper, Server};
use ec1_client::{Client, ErrorCode, Refresh};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

fn client() -> Client {
    let (a, b) = UnixStream::pair().unwrap();
    let w = a.try_clone().unwrap();
    let server = Server::new(
        Config {
            mode: "test".into(),
            agent_start_ns: 1,
            agent_ready_ns: 2,
            base_env: default_env(),
            reaper: Arc::new(DirectReaper),
            refusal: None,
        },
        Box::new(w),
    );
    std::thread::spawn(move || server.serve(a));
    Client::handshake(b, Duration::from_secs(10)).unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn entropy_is_applied_or_refused_for_lack_of_privilege() {
    let c = client();
    let r = Refresh {
        entropy: vec![0x5a; 64],
        realtime_ns: None,
        hostname: None,
    };
    match c.refresh_with(&r) {
        Ok(done) => {
            assert!(is_root(), "only root may add entropy");
            assert_eq!(done.clock_step_ns, 0, "the clock was not touched");
        }
        Err(e) => {
            assert!(!is_root(), "root must be able to add entropy: {e}");
            assert_eq!(e.remote_code(), Some(ErrorCode::PermissionDenied), "{e}");
            assert!(e.to_string().contains("reseeding the kernel RNG"), "{e}");
        }
    }
    // The connection goes on after a refresh.
    assert!(c.ping(Duration::from_secs(10)).is_ok());
}

#[test]
fn an_empty_refresh_is_acknowledged() {
    let c = client();
    let done = c.refresh_with(&Refresh::default()).unwrap();
    assert_eq!(done.clock_step_ns, 0);
    assert!(done.took < Duration::from_secs(10));
}
