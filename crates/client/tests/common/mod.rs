//! A real guest for integration tests: QEMU (TCG) through ec1's engine, booting the
//! guest kernel with the agent initramfs built by `ec1_guest::initramfs`, and a
//! connected [`Client`].

#![allow(dead_code)] // each test file uses part of this

use ec1_client::{Client, Command, ConnectOptions};
use ec1_engine::{Engine, EngineEvent, MemoryBacking, SerialOut, VmSpec};
use ec1_engine_qemu::{Accel, QemuEngine, QemuOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The guest kernel tests boot (`$EC1_KERNEL`, else ec1's cached kernel).
pub fn kernel() -> PathBuf {
    ec1_testkit::kernel()
}

/// A booted guest with a connected client.
pub struct Guest {
    pub engine: QemuEngine,
    pub client: Client,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub boot_signals: Arc<Mutex<Vec<Instant>>>,
    pub started: Instant,
    pub connected_after: Duration,
}

impl Guest {
    /// Boots a guest with `mem_mib` of RAM and `vcpus`, extra kernel arguments
    /// `extra_cmdline`, and connects to its agent.
    pub fn boot(name: &str, mem_mib: u32, vcpus: u8, extra_cmdline: &str) -> Guest {
        Guest::boot_with(name, mem_mib, vcpus, extra_cmdline, vec![])
    }

    /// [`Guest::boot`] with block devices (`/dev/vda`, ...).
    pub fn boot_with(
        name: &str,
        mem_mib: u32,
        vcpus: u8,
        extra_cmdline: &str,
        drives: Vec<ec1_engine::DriveSpec>,
    ) -> Guest {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ec1-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ec1_testkit::remove_at_exit(dir.clone());
        let opts = ec1_guest::initramfs::Options::from_env().expect("a cache directory");
        let initrd = ec1_guest::initramfs::combined_initrd(None, &opts)
            .unwrap_or_else(|e| panic!("building the agent initramfs: {e}"));
        let socket = dir.join("agent.sock");
        let spec = VmSpec {
            id: format!("client-test-{name}"),
            arch: ec1_engine::Arch::X86_64,
            kernel: kernel(),
            initrd: Some(initrd),
            cmdline: format!("console=ttyS0 reboot=k panic=-1 quiet {extra_cmdline}").into(),
            vcpus,
            smt: false,
            mem_mib,
            drives,
            serial: SerialOut::File(dir.join("serial.log")),
            agent_socket: Some(socket.clone()),
            memory: MemoryBacking::Anonymous,
            run_dir: dir.clone(),
            devices: Default::default(),
        };
        let engine = QemuEngine::new(Accel::Tcg, QemuOptions::default())
            .expect("QEMU 10 is installed (scripts/setup.sh)");
        let boot_signals = Arc::new(Mutex::new(Vec::new()));
        let bs = boot_signals.clone();
        let started = Instant::now();
        engine
            .start(
                &spec,
                Arc::new(move |e| {
                    if let EngineEvent::GuestBootSignal { at } = e {
                        bs.lock().unwrap().push(at);
                    }
                }),
            )
            .unwrap_or_else(|e| panic!("starting the guest: {e}"));
        let client = Client::connect(
            &socket,
            &ConnectOptions {
                connect_timeout: Duration::from_secs(20),
                ready_timeout: Duration::from_secs(60),
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "connecting to the guest agent: {e}\n--- serial console ---\n{}",
                String::from_utf8_lossy(&std::fs::read(dir.join("serial.log")).unwrap_or_default())
            )
        });
        let connected_after = started.elapsed();
        Guest {
            engine,
            client,
            dir,
            socket,
            boot_signals,
            started,
            connected_after,
        }
    }

    /// The serial console so far.
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("serial.log")).unwrap_or_default())
            .into_owned()
    }

    /// Runs a shell script to completion; panics with the console on failure to run.
    pub fn sh(&self, script: &str) -> ec1_client::Output {
        self.client
            .output(&Command::shell(script))
            .unwrap_or_else(|e| {
                panic!(
                    "running {script:?}: {e}\n--- console ---\n{}",
                    self.serial()
                )
            })
    }

    /// stdout of a script that must succeed, as text.
    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "{script:?}: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}
