//! Test harness: a VMM with a fake engine served on a real Unix socket, and a small
//! HTTP/1.1 client that keeps its connection alive.

#![allow(dead_code)]

pub mod fake_engine;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ec1_api::logger::Logger;
use ec1_api::metrics::Metrics;
use ec1_api::{Vmm, VmmOptions};
use serde_json::Value;

pub use fake_engine::{factory, FakeBehaviour, FakeEngine};

/// A served VMM.
pub struct TestVmm {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub vmm: Arc<Vmm>,
    pub engine: Arc<FakeEngine>,
    _rt: tokio::runtime::Runtime,
}

impl TestVmm {
    pub fn new() -> TestVmm {
        TestVmm::with(FakeBehaviour::default(), 51200)
    }

    pub fn with(behaviour: FakeBehaviour, max_payload: usize) -> TestVmm {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let capabilities = fake_engine::capabilities(&behaviour);
        let engine = FakeEngine::new(behaviour);
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        let vmm = Vmm::new(
            VmmOptions {
                instance_id: "test-vm".into(),
                engine_name: "fake".into(),
                capabilities,
                engine_factory: factory(engine.clone()),
                boot_timer: true,
                mmds_size_limit: 1024,
                run_dir,
                start_time_us: None,
                start_time_cpu_us: None,
            },
            Arc::new(Logger::new("test-vm")),
            Arc::new(Metrics::new("test-vm")),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(async { ec1_api::server::bind(&sock) }).unwrap();
        rt.spawn(ec1_api::server::serve(listener, vmm.clone(), max_payload));
        TestVmm {
            dir,
            sock,
            vmm,
            engine,
            _rt: rt,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.sock)
    }

    /// A file in the test's directory (created empty).
    pub fn file(&self, name: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, b"").unwrap();
        p.to_str().unwrap().to_string()
    }

    /// Configures a kernel and starts the guest.
    pub fn boot(&self) -> Client {
        let mut c = self.client();
        let k = self.file("vmlinux");
        c.ok(
            "PUT",
            "/boot-source",
            &format!(r#"{{"kernel_image_path":"{k}","boot_args":"console=ttyS0"}}"#),
        );
        c.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
        c
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Resp {
    pub fn fault(&self) -> String {
        self.body
            .as_ref()
            .and_then(|b| b["fault_message"].as_str())
            .unwrap_or_else(|| panic!("no fault_message in {self:?}"))
            .to_string()
    }
}

/// One keep-alive connection.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(sock: &Path) -> Client {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one response; `None` when the server closed the connection.
    pub fn read_response(&mut self) -> Option<Resp> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().unwrap();
            }
            headers.push((k, v));
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).unwrap();
        let body = if len == 0 {
            None
        } else {
            Some(serde_json::from_slice(&body).unwrap())
        };
        Some(Resp {
            status,
            headers,
            body,
        })
    }

    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        self.send_raw(req.as_bytes());
        self.read_response()
            .expect("the server closed the connection")
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, None)
    }

    /// A request that must answer 204.
    pub fn ok(&mut self, method: &str, path: &str, body: &str) {
        let r = self.request(method, path, Some(body));
        assert_eq!(r.status, 204, "{method} {path} {body}: {r:?}");
        assert!(r.body.is_none());
    }

    /// A request that must answer 400; returns the fault message.
    pub fn bad(&mut self, method: &str, path: &str, body: Option<&str>) -> String {
        let r = self.request(method, path, body);
        assert_eq!(r.status, 400, "{method} {path} {body:?}: {r:?}");
        r.fault()
    }
}

pub const PRE_BOOT: &str = "The requested operation is not supported before starting the microVM.";
pub const POST_BOOT: &str = "The requested operation is not supported after starting the microVM.";

/// The "not supported by this engine" message for `what`.
pub fn unsupported(what: &str) -> String {
    format!(
        "The requested operation is not supported: {what} not supported yet by ec1's fake engine"
    )
}
