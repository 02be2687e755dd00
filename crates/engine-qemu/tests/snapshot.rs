//! Snapshots through [`QemuEngine`] with real guests (TCG): save a paused guest,
//! restore it in new engines (one after another and two at once), and refuse bad
//! snapshot files before anything is started.
//!
//! The guest is the testkit's `/init` in `hang` mode: it prints `EC1TEST tick N` every
//! 100 ms, so the console shows whether a restored guest continues where it stopped.
//! Commands, files and clocks inside restored guests are tested with the agent in
//! `ec1-sandbox`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ec1_engine::{
    Engine, EngineError, MemoryBacking, SerialOut, SnapshotSource, SnapshotTarget, VmSpec,
};
use ec1_engine_qemu::snapshot::{describe_snapshot, SnapshotFile};
use ec1_engine_qemu::{Accel, QemuEngine, QemuOptions};

const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn engine() -> QemuEngine {
    QemuEngine::new(Accel::Tcg, QemuOptions::default()).expect("QEMU 10 is installed")
}

fn spec(run_dir: &Path) -> VmSpec {
    VmSpec {
        id: "snap".into(),
        arch: ec1_engine::Arch::X86_64,
        kernel: ec1_testkit::kernel(),
        initrd: Some(ec1_testkit::test_initramfs()),
        cmdline: "console=ttyS0 reboot=k panic=-1 quiet ec1test.action=hang".into(),
        vcpus: 1,
        smt: false,
        mem_mib: 128,
        drives: vec![],
        serial: SerialOut::File(run_dir.join("serial.log")),
        agent_socket: Some(run_dir.join("agent.sock")),
        memory: MemoryBacking::File {
            path: run_dir.join("guest.ram"),
            shared: true,
        },
        run_dir: run_dir.to_path_buf(),
        devices: Default::default(),
    }
}

/// The host side of a restore: what the API layer hands the engine.
fn host_spec(run_dir: &Path) -> VmSpec {
    VmSpec {
        arch: ec1_engine::Arch::X86_64,
        kernel: PathBuf::new(),
        initrd: None,
        cmdline: Default::default(),
        memory: MemoryBacking::Anonymous,
        ..spec(run_dir)
    }
}

fn serial(dir: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(dir.join("serial.log")).unwrap_or_default()).into_owned()
}

/// The last tick number on `dir`'s console.
fn last_tick(dir: &Path) -> Option<u64> {
    serial(dir)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("EC1TEST tick "))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

fn wait_tick(dir: &Path, at_least: u64) -> u64 {
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        if let Some(t) = last_tick(dir).filter(|&t| t >= at_least) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no tick {at_least} on the console:\n{}",
            serial(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn refused(e: &QemuEngine, dir: &Path, source: &SnapshotSource) -> String {
    let err = e
        .restore(&host_spec(dir), source, Arc::new(|_| {}))
        .expect_err("the restore must be refused");
    assert_eq!(e.qemu_pid(), None, "nothing was started");
    assert!(!dir.join("qmp.sock").exists(), "nothing was started");
    err.to_string()
}

#[test]
fn snapshot_restore_clones_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    std::fs::create_dir(&src_dir).unwrap();
    let state = tmp.path().join("vm.snap");
    let mem = tmp.path().join("vm.mem");
    let target = SnapshotTarget {
        state_path: state.clone(),
        mem_path: mem.clone(),
        diff: false,
    };

    // A running guest with a read-only drive, snapshotted once paused.
    let image = tmp.path().join("data.img");
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    let mut s = spec(&src_dir);
    s.drives = vec![ec1_engine::DriveSpec {
        id: "data".into(),
        path: image.clone(),
        read_only: true,
        cache: ec1_engine::CacheType::Unsafe,
        rate_limit: None,
        vhost_user: false,
    }];
    let src = engine();
    assert!(src.capabilities().snapshots);
    src.start(&s, Arc::new(|_| {})).unwrap();
    wait_tick(&src_dir, 3);
    let e = src.snapshot(&target).unwrap_err().to_string();
    assert!(e.contains("pause it"), "{e}");
    src.pause().unwrap();
    let e = src
        .snapshot(&SnapshotTarget {
            diff: true,
            ..target.clone()
        })
        .unwrap_err();
    assert!(matches!(e, EngineError::Unsupported { .. }), "{e}");
    // Targets that cannot be written fail cleanly, and leave the guest snapshottable.
    let nowhere = tmp.path().join("no/such/dir");
    let e = src
        .snapshot(&SnapshotTarget {
            mem_path: nowhere.join("vm.mem"),
            ..target.clone()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("writing the snapshot memory file"), "{e}");
    let e = src
        .snapshot(&SnapshotTarget {
            state_path: nowhere.join("vm.snap"),
            ..target.clone()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("snapshot file"), "{e}");
    src.snapshot(&target).unwrap();
    let at_snapshot = last_tick(&src_dir).unwrap();
    let e = src.snapshot(&target).unwrap_err().to_string();
    assert!(
        e.contains("resume it"),
        "a second snapshot without a resume: {e}"
    );
    // The source may go on after its snapshot, as in Firecracker; that must not change
    // the snapshot.
    let mem_before = std::fs::read(&mem).unwrap();
    src.resume().unwrap();
    wait_tick(&src_dir, at_snapshot + 3);
    src.stop().unwrap();
    assert!(
        std::fs::read(&mem).unwrap() == mem_before,
        "the memory file changed"
    );

    assert_eq!(describe_snapshot(&state).unwrap(), "v2.1.0");
    let file = SnapshotFile::open(&state).unwrap();
    assert_eq!(file.machine.mem_mib, 128);
    assert_eq!(file.machine.drives.len(), 1);
    assert!(file.machine.agent_channel);
    assert!(
        file.header.state_len < 1 << 20,
        "guest RAM leaked into the device state ({} bytes)",
        file.header.state_len
    );
    let m = std::fs::metadata(&mem).unwrap();
    assert_eq!(m.len(), 128 << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(
        m.blocks() * 512 < 128 << 20,
        "the memory file is not sparse"
    );

    // Two clones at once, each continuing from the snapshot.
    let source = SnapshotSource {
        state_path: state.clone(),
        mem_path: mem.clone(),
        resume: true,
        net_overrides: Vec::new(),
        metadata: None,
    };
    let dirs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let d = tmp.path().join(format!("clone{i}"));
            std::fs::create_dir(&d).unwrap();
            d
        })
        .collect();
    let clones: Vec<QemuEngine> = dirs
        .iter()
        .map(|d| {
            let e = engine();
            e.restore(&host_spec(d), &source, Arc::new(|_| {})).unwrap();
            assert!(d.join("agent.sock").exists(), "the agent channel is back");
            e
        })
        .collect();
    for d in &dirs {
        let first = wait_tick(d, 0);
        assert!(
            first > at_snapshot,
            "a clone started over at tick {first} instead of after {at_snapshot}"
        );
        wait_tick(d, first + 2);
    }
    // A restored guest's RAM is a private mapping: it cannot be snapshotted again.
    clones[0].pause().unwrap();
    let e = clones[0]
        .snapshot(&SnapshotTarget {
            state_path: tmp.path().join("again.snap"),
            mem_path: tmp.path().join("again.mem"),
            diff: false,
        })
        .unwrap_err();
    assert!(e.to_string().contains("not a shared memory file"), "{e}");
    for c in &clones {
        c.stop().unwrap();
    }
    assert!(
        std::fs::read(&mem).unwrap() == mem_before,
        "a clone wrote the memory file"
    );

    // Restored paused, the guest waits for a resume.
    let d = tmp.path().join("paused");
    std::fs::create_dir(&d).unwrap();
    let e = engine();
    e.restore(
        &host_spec(&d),
        &SnapshotSource {
            resume: false,
            ..source.clone()
        },
        Arc::new(|_| {}),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(last_tick(&d), None, "a paused restore ran:\n{}", serial(&d));
    e.resume().unwrap();
    wait_tick(&d, at_snapshot + 1);
    let again = e.restore(&host_spec(&d), &source, Arc::new(|_| {}));
    assert!(matches!(again, Err(EngineError::InvalidState(_))));
    e.stop().unwrap();

    // Bad files are refused before QEMU starts.
    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    let good = std::fs::read(&state).unwrap();
    let bad = tmp.path().join("bad.snap");
    let with = |bytes: &[u8]| {
        std::fs::write(&bad, bytes).unwrap();
        refused(
            &engine(),
            &bad_dir,
            &SnapshotSource {
                state_path: bad.clone(),
                ..source.clone()
            },
        )
    };
    let mut corrupted = good.clone();
    let n = corrupted.len();
    corrupted[n - 100] ^= 0xff;
    assert!(with(&corrupted).contains("corrupted"));
    assert!(with(&good[..good.len() / 2]).contains("truncated"));
    let mut wrong_version = good.clone();
    wrong_version[8] = 9; // major 9, minor as written (1)
    assert!(with(&wrong_version).contains("format version v9.1"));
    assert!(with(b"Firecracker snapshot").contains("not an ec1 snapshot"));
    // A memory file of another size is not this snapshot's.
    let short = tmp.path().join("short.mem");
    std::fs::write(&short, vec![0u8; 4096]).unwrap();
    let e = refused(
        &engine(),
        &bad_dir,
        &SnapshotSource {
            mem_path: short,
            ..source.clone()
        },
    );
    assert!(e.contains("is it the memory file of this snapshot"), "{e}");
    let e = refused(
        &engine(),
        &bad_dir,
        &SnapshotSource {
            mem_path: tmp.path().join("missing.mem"),
            ..source.clone()
        },
    );
    assert!(e.contains("missing.mem"), "{e}");
    // The run directory and the snapshot's drive must exist.
    let e = engine()
        .restore(
            &host_spec(&tmp.path().join("no-run-dir")),
            &source,
            Arc::new(|_| {}),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("run directory"), "{e}");
    let e = engine()
        .restore(&host_spec(&image), &source, Arc::new(|_| {}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("run directory"), "{e}");
    std::fs::remove_file(&image).unwrap();
    let e = refused(&engine(), &bad_dir, &source);
    assert!(e.contains("drive image of the snapshot"), "{e}");
}
