//! Boots a guest (QEMU microvm, TCG) with the agent initramfs and prints the agent's
//! numbers: time to ready, exec round trip, stdout throughput, idle memory.
//!
//! ```text
//! EC1_KERNEL=/path/to/vmlinux cargo run --release -p ec1-client --example measure
//! ```

use ec1_client::{Client, Command, ConnectOptions};
use ec1_engine::{Engine, MemoryBacking, SerialOut, VmSpec};
use ec1_engine_qemu::{Accel, QemuEngine, QemuOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let kernel = ec1_testkit::kernel();
    let dir = tempfile::tempdir().unwrap();
    let opts = ec1_guest::initramfs::Options::from_env().unwrap();
    let initrd = ec1_guest::initramfs::agent_initramfs(&opts).unwrap();
    let socket = dir.path().join("agent.sock");
    let mem_mib = 256;
    let spec = VmSpec {
        id: "measure".into(),
        arch: ec1_engine::Arch::X86_64,
        kernel,
        initrd: Some(initrd),
        cmdline: "console=ttyS0 reboot=k panic=-1 quiet".into(),
        vcpus: 1,
        smt: false,
        mem_mib,
        drives: vec![],
        serial: SerialOut::File(dir.path().join("serial.log")),
        agent_socket: Some(socket.clone()),
        memory: MemoryBacking::Anonymous,
        run_dir: dir.path().to_path_buf(),
        devices: Default::default(),
    };
    let engine = QemuEngine::new(Accel::Tcg, QemuOptions::default()).unwrap();
    let t0 = Instant::now();
    engine.start(&spec, Arc::new(|_| {})).unwrap();
    let c = Client::connect(
        &socket,
        &ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(60),
        },
    )
    .unwrap();
    let ready = t0.elapsed();
    let r = c.ready_info();
    println!(
        "launch -> ready {ready:?} (guest: agent main at {:.0} ms, ready at {:.0} ms of uptime)",
        r.agent_start_ns as f64 / 1e6,
        r.agent_ready_ns as f64 / 1e6
    );
    let mem = c
        .output(&Command::shell(
            "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo",
        ))
        .unwrap();
    println!(
        "idle {mem_mib} MiB guest:\n{}",
        String::from_utf8_lossy(&mem.stdout).trim()
    );

    let mut pings: Vec<Duration> = (0..200)
        .map(|_| c.ping(Duration::from_secs(5)).unwrap())
        .collect();
    pings.sort();
    println!(
        "ping over 200: median {:?}, p99 {:?}",
        pings[100], pings[198]
    );
    let mut rt: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            assert!(c.output(&Command::new("true")).unwrap().status.success());
            t.elapsed()
        })
        .collect();
    rt.sort();
    println!(
        "exec `true` over 200: median {:?}, p99 {:?}",
        rt[100], rt[198]
    );

    // Guest-only baselines: how fast the producers are without the channel.
    for script in [
        "time head -c 52428800 /dev/zero >/dev/null",
        "time sh -c 'i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done'",
        "time head -c 52428800 /dev/zero | cat >/dev/null",
    ] {
        let o = c.output(&Command::shell(script)).unwrap();
        println!(
            "guest only `{script}`: {}",
            String::from_utf8_lossy(&o.stderr)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for script in [
        "head -c 209715200 /dev/zero",
        "dd if=/dev/zero bs=65536 count=3200 2>/dev/null",
    ] {
        let t = Instant::now();
        let mut p = c.spawn(&Command::shell(script)).unwrap();
        let mut out = p.stdout().unwrap();
        let mut n = 0usize;
        while let Some(chunk) = out.next_chunk().unwrap() {
            n += chunk.len();
        }
        assert!(p.wait().unwrap().success());
        let s = t.elapsed().as_secs_f64();
        println!(
            "stdout `{script}`: {} MiB in {s:.2} s = {:.1} MiB/s",
            n >> 20,
            (n >> 20) as f64 / s
        );
    }
    let t = Instant::now();
    let data = vec![7u8; 100 << 20];
    c.upload_from(&data[..], "/tmp/x", 0o644).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!("upload 100 MiB: {s:.2} s = {:.1} MiB/s", 100.0 / s);
    let t = Instant::now();
    let mut sink = std::io::sink();
    c.download_to("/tmp/x", &mut sink).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!("download 100 MiB: {s:.2} s = {:.1} MiB/s", 100.0 / s);
    engine.stop().unwrap();
}
