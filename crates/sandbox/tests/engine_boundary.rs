//! The sandbox drives whatever engine is registered, through the trait only: here an
//! engine that is not QEMU — ec1's real agent server running in this process on the
//! agent socket the machine description names — takes `Sandbox::boot`'s whole path
//! (architecture, machine description, agent initramfs, start, handshake, commands,
//! shutdown) for both architectures, and its lack of snapshots reaches the template
//! path as a clear error. No QEMU runs in this file.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ec1_agent::{default_env, Config, DirectReaper, Server};
use ec1_client::Command;
use ec1_engine::{
    Arch, Capabilities, Engine, EngineChoice, EngineError, EngineEvent, EngineProvider,
    EngineRequest, EventSink, ExitReason, VmSpec,
};
use ec1_sandbox::{Sandbox, SandboxError, SandboxOptions, TemplateCache};

/// The name this file registers its engine under.
const NAME: &str = "hostagent";

/// Runs no guest: serves the agent protocol on `spec.agent_socket` from this process.
struct HostAgentEngine {
    arch: Arch,
    started: Mutex<Option<VmSpec>>,
    conn: Arc<Mutex<Option<UnixStream>>>,
    server: Mutex<Option<JoinHandle<()>>>,
    stopped: AtomicBool,
}

/// The machines the engines of this file were asked to run, in order.
static STARTED: Mutex<Vec<VmSpec>> = Mutex::new(Vec::new());

impl Engine for HostAgentEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn start(&self, spec: &VmSpec, events: EventSink) -> Result<(), EngineError> {
        if spec.arch != self.arch {
            return Err(EngineError::InvalidSpec("wrong architecture".into()));
        }
        for f in std::iter::once(&spec.kernel).chain(spec.initrd.iter()) {
            std::fs::metadata(f).map_err(|source| EngineError::File {
                what: "boot file",
                path: f.clone(),
                source,
            })?;
        }
        let socket = spec
            .agent_socket
            .clone()
            .ok_or_else(|| EngineError::InvalidSpec("no agent socket".into()))?;
        let listener =
            UnixListener::bind(&socket).map_err(|e| EngineError::io("binding the socket", e))?;
        let conn = self.conn.clone();
        let server = std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let Ok(writer) = stream.try_clone() else {
                return;
            };
            *conn.lock().unwrap() = stream.try_clone().ok();
            let server = Server::new(
                Config {
                    mode: "initramfs".into(),
                    agent_start_ns: 1,
                    agent_ready_ns: 2,
                    base_env: default_env(),
                    reaper: Arc::new(DirectReaper),
                    refusal: None,
                },
                Box::new(writer),
            );
            let _ = server.serve(stream);
        });
        *self.server.lock().unwrap() = Some(server);
        *self.started.lock().unwrap() = Some(spec.clone());
        STARTED.lock().unwrap().push(spec.clone());
        events(EngineEvent::GuestBootSignal { at: Instant::now() });
        Ok(())
    }

    fn pause(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn resume(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn send_ctrl_alt_del(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn stop(&self) -> Result<(), EngineError> {
        self.stopped.store(true, Ordering::SeqCst);
        let Some(t) = self.server.lock().unwrap().take() else {
            return Ok(());
        };
        match self.conn.lock().unwrap().take() {
            Some(c) => {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
            // Nobody connected: wake the accept, whose connection then ends at once.
            None => {
                let socket = self
                    .started
                    .lock()
                    .unwrap()
                    .as_ref()
                    .and_then(|s| s.agent_socket.clone());
                if let Some(s) = socket {
                    drop(UnixStream::connect(s));
                }
            }
        }
        let _ = t.join();
        Ok(())
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitReason>, EngineError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Ok(Some(ExitReason::Stopped));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

struct HostAgentProvider;

impl EngineProvider for HostAgentProvider {
    fn name(&self) -> &str {
        NAME
    }
    fn available(&self, _: Arch, _: Option<&str>) -> Result<(), String> {
        Ok(())
    }
    fn capabilities(&self, _: Arch) -> Capabilities {
        Capabilities::default()
    }
    fn create(&self, request: &EngineRequest) -> Result<Arc<dyn Engine>, EngineError> {
        Ok(Arc::new(HostAgentEngine {
            arch: request.arch,
            started: Mutex::new(None),
            conn: Arc::new(Mutex::new(None)),
            server: Mutex::new(None),
            stopped: AtomicBool::new(false),
        }))
    }
    fn describe_snapshot(&self, _: &Path) -> Option<Result<ec1_engine::SnapshotInfo, EngineError>> {
        None
    }
}

/// A file with the header of a kernel for `arch` (the engine never boots it).
fn fake_kernel(dir: &Path, arch: Arch) -> std::path::PathBuf {
    let mut h = vec![0u8; 0x300];
    match arch {
        Arch::X86_64 => {
            h[..4].copy_from_slice(b"\x7fELF");
            h[4] = 2;
            h[5] = 1;
            h[18] = 62;
        }
        Arch::Aarch64 => h[56..60].copy_from_slice(b"ARM\x64"),
    }
    let p = dir.join(format!("kernel-{arch}"));
    std::fs::write(&p, h).unwrap();
    p
}

fn opts(kernel: std::path::PathBuf) -> SandboxOptions {
    ec1_engine::registry::register(Arc::new(HostAgentProvider));
    SandboxOptions {
        kernel: Some(kernel),
        engine: EngineChoice::parse(NAME),
        ready_timeout: Duration::from_secs(10),
        ..SandboxOptions::default()
    }
}

#[test]
fn a_sandbox_runs_on_any_registered_engine_for_either_architecture() {
    let d = tempfile::tempdir().unwrap();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let o = opts(fake_kernel(d.path(), arch));
        let sb = Sandbox::boot(&o).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(sb.engine().name(), NAME);
        let out = sb
            .client()
            .output(&Command::new("sh").arg("-c").arg("echo through $0 engine"))
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"through sh engine\n");
        assert!(
            sb.timings().boot_signal.is_some(),
            "the engine's boot signal"
        );
        let spec = STARTED
            .lock()
            .unwrap()
            .iter()
            .rfind(|s| s.arch == arch)
            .cloned()
            .expect("the engine saw the machine");
        // The machine description is the sandbox's, for this architecture.
        assert_eq!(spec.cmdline, ec1_sandbox::default_boot_args(arch));
        assert!(spec.agent_socket.is_some() && spec.drives.is_empty());
        let initrd = std::fs::read(spec.initrd.as_ref().unwrap()).unwrap();
        let entries = ec1_guest::initramfs::parse(&initrd).unwrap();
        let init = entries.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(
            init.3,
            ec1_guest::agent::agent_for(arch).unwrap().0,
            "the {arch} agent is the guest's /init"
        );
        let engine = sb.engine().clone();
        sb.shutdown().unwrap();
        assert_eq!(
            engine.wait(Some(Duration::ZERO)).unwrap(),
            Some(ExitReason::Stopped)
        );
    }
}

#[test]
fn an_engine_without_snapshots_is_named_by_the_template_path() {
    let d = tempfile::tempdir().unwrap();
    let o = opts(fake_kernel(d.path(), Arch::X86_64));
    let cache = TemplateCache::at(d.path().join("templates"));
    let err = match Sandbox::from_template(&o, &cache) {
        Ok(_) => panic!("an engine without snapshots made a template"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        matches!(&err, SandboxError::Engine(EngineError::Unsupported { .. })),
        "{msg}"
    );
    assert!(msg.contains(NAME) && msg.contains("snapshot"), "{msg}");
    // And a kernel of the wrong architecture for what was asked is refused up front.
    let mut o = opts(fake_kernel(d.path(), Arch::Aarch64));
    o.arch = Some(Arch::X86_64);
    assert!(matches!(Sandbox::boot(&o), Err(SandboxError::Arch(_))));
}
