//! Micro-benchmarks of ec1's own hot paths, the code every exec, API call and boot
//! goes through: protocol framing, API request parsing and dispatch, and building the
//! agent initramfs. Kept short (1 s warm-up, 2 s measurement) so that `cargo bench -p
//! ec1-bench` is usable on a shared 2-core machine.
//!
//! Run: `cargo bench -p ec1-bench --bench hot_paths`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ec1_api::logger::Logger;
use ec1_api::metrics::Metrics;
use ec1_api::router::{parse_request, VmmAction};
use ec1_api::{EngineFactory, Vmm, VmmOptions};
use ec1_engine::EngineError;
use ec1_guest::initramfs::{build_archive, Layout};
use ec1_proto::{write_frame, Frame, FrameReader, Kind, ReadEvent, DATA_CHUNK};
use std::sync::Arc;
use std::time::Duration;

/// Frames per decode iteration: enough that per-call overhead does not dominate.
const FRAMES: usize = 64;

fn framing(c: &mut Criterion) {
    let payload = vec![0xa5u8; DATA_CHUNK];
    let mut g = c.benchmark_group("proto");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("encode data frame", |b| {
        let mut out = Vec::with_capacity(DATA_CHUNK + 64);
        b.iter(|| {
            out.clear();
            write_frame(&mut out, Kind::Stdout, 0, black_box(7), black_box(&payload)).unwrap();
        })
    });
    let mut stream = Vec::new();
    for i in 0..FRAMES {
        write_frame(&mut stream, Kind::Stdout, 0, i as u32, &payload).unwrap();
    }
    g.throughput(Throughput::Bytes((payload.len() * FRAMES) as u64));
    g.bench_function("decode data frames", |b| {
        b.iter(|| {
            let mut r = FrameReader::new(black_box(&stream[..]));
            let mut n = 0;
            while let ReadEvent::Frame(raw) = r.next_event().unwrap() {
                if let Frame::Data { payload, .. } = Frame::parse(raw).unwrap() {
                    n += payload.len();
                }
            }
            assert_eq!(n, DATA_CHUNK * FRAMES);
        })
    });
    g.finish();
}

fn vmm() -> Arc<Vmm> {
    let factory: EngineFactory =
        Arc::new(|_| Err(EngineError::InvalidState("benchmark: no engine".into())));
    Vmm::new(
        VmmOptions {
            instance_id: "bench".into(),
            engine_name: "none".into(),
            capabilities: Default::default(),
            engine_factory: factory,
            boot_timer: false,
            mmds_size_limit: 51200,
            run_dir: std::env::temp_dir(),
            start_time_us: None,
            start_time_cpu_us: None,
        },
        Arc::new(Logger::new("bench")),
        Arc::new(Metrics::new("bench")),
    )
}

fn api(c: &mut Criterion) {
    let body = br#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#;
    let boot =
        br#"{"kernel_image_path": "/k/vmlinux", "boot_args": "console=ttyS0 reboot=k panic=-1"}"#;
    let mut g = c.benchmark_group("api");
    g.bench_function("parse GET /", |b| {
        b.iter(|| parse_request(black_box("GET"), black_box("/"), None).unwrap())
    });
    g.bench_function("parse PUT /machine-config", |b| {
        b.iter(|| {
            parse_request(
                "PUT",
                black_box("/machine-config"),
                Some(black_box(&body[..])),
            )
            .unwrap()
        })
    });
    g.bench_function("parse PUT /boot-source", |b| {
        b.iter(|| {
            parse_request("PUT", black_box("/boot-source"), Some(black_box(&boot[..]))).unwrap()
        })
    });
    let v = vmm();
    g.bench_function("dispatch GET /", |b| {
        b.iter(|| v.handle(black_box(VmmAction::GetInstanceInfo)).unwrap())
    });
    g.bench_function("parse+dispatch PUT /machine-config", |b| {
        b.iter(|| {
            let a = parse_request("PUT", "/machine-config", Some(black_box(&body[..]))).unwrap();
            v.handle(a).unwrap()
        })
    });
    g.finish();
}

fn initramfs(c: &mut Criterion) {
    // Sizes of the real inputs: a static agent of ~1 MiB, Debian's static busybox of
    // ~2 MiB with ~400 applets.
    let agent = vec![0x7fu8; 1 << 20];
    let busybox = vec![0x42u8; 2 << 20];
    let applets: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "{}/applet{i}",
                ["bin", "sbin", "usr/bin", "usr/sbin"][i % 4]
            )
        })
        .collect();
    let mut g = c.benchmark_group("initramfs");
    g.throughput(Throughput::Bytes((agent.len() + busybox.len()) as u64));
    g.bench_function("build standalone archive", |b| {
        b.iter(|| {
            build_archive(
                black_box(&agent),
                black_box(&busybox),
                &applets,
                Layout::Standalone,
            )
        })
    });
    g.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = hot_paths;
    config = quick();
    targets = framing, api, initramfs
}
criterion_main!(hot_paths);
