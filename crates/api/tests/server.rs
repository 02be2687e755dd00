//! HTTP behaviour: keep-alive, concurrent clients, payload limits.

mod common;

use common::*;

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let t = TestVmm::new();
    let mut c = t.client();
    for i in 0..20 {
        let r = c.get("/machine-config");
        assert_eq!(r.status, 200, "request {i}");
        c.ok(
            "PATCH",
            "/machine-config",
            &format!(r#"{{"mem_size_mib":{}}}"#, 128 + i),
        );
    }
    assert_eq!(c.get("/machine-config").body.unwrap()["mem_size_mib"], 147);
    // Pipelined: two requests written at once, two answers in order.
    c.send_raw(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let a = c.read_response().unwrap();
    let b = c.read_response().unwrap();
    assert!(a.body.unwrap().get("firecracker_version").is_some());
    assert_eq!(b.body.unwrap()["app_name"], "Firecracker");
}

#[test]
fn several_clients_at_once() {
    let t = TestVmm::new();
    let sock = t.sock.clone();
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&sock);
                for _ in 0..10 {
                    c.ok("PUT", "/mmds", &format!(r#"{{"client":{n}}}"#));
                    let r = c.get("/mmds");
                    assert_eq!(r.status, 200);
                    assert!(r.body.unwrap()["client"].is_u64());
                }
            })
        })
        .collect();
    // A slow client holding its connection open does not block the others.
    let mut idle = t.client();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(idle.get("/").status, 200);
}

#[test]
fn oversized_bodies_are_refused_before_being_read() {
    let t = TestVmm::with(FakeBehaviour::default(), 100);
    let mut c = t.client();
    // Declared too large: refused at once, though the body never comes.
    c.send_raw(b"PUT /mmds HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.fault(),
        "Request payload with size 1000000 is larger than the limit of 100 allowed by server."
    );
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "connection" && v == "close"));
    // A chunked body is cut off once it passes the limit.
    let mut c = t.client();
    let chunk = "x".repeat(80);
    c.send_raw(
        format!(
            "PUT /mmds HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n{chunk}\r\n50\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 400);
    assert!(r.fault().contains("larger than the limit of 100"), "{r:?}");
    // At the limit is fine.
    let mut c = t.client();
    let body = format!(r#"{{"k":"{}"}}"#, "v".repeat(92));
    assert_eq!(body.len(), 100);
    c.ok("PUT", "/mmds", &body);
}

#[test]
fn the_socket_path_must_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("taken.sock");
    std::fs::write(&p, b"").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(async { ec1_api::server::bind(&p) })
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = rt
        .block_on(async { ec1_api::server::bind(&dir.path().join("no/such/dir/s.sock")) })
        .unwrap_err();
    assert!(
        e.to_string().starts_with("cannot create the API socket"),
        "{e}"
    );
}
