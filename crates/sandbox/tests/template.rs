//! Boot templates with real guests (TCG): the first start builds the template, later
//! starts restore it (also when several first starts race); clones are distinct (random
//! bytes, host name, clock), many run at once, a changed input makes a new template,
//! and a broken one falls back to a cold boot. The guests share one template where they can: a build is a cold boot.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ec1_client::Command;
use ec1_sandbox::template::{MEM_FILE, STATE_FILE};
use ec1_sandbox::{BootPath, RootMode, Sandbox, SandboxOptions, TemplateCache};

fn opts() -> SandboxOptions {
    ec1_engine_qemu::register();
    SandboxOptions {
        kernel: Some(ec1_testkit::kernel()),
        mem_mib: 128,
        engine: ec1_engine::EngineChoice::parse("qemu-tcg"),
        ..SandboxOptions::default()
    }
}

fn sh(sb: &Sandbox, script: &str) -> String {
    let out = sb
        .client()
        .output(&Command::new("sh").arg("-c").arg(script))
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn key(sb: &Sandbox) -> String {
    match sb.boot_path() {
        BootPath::Template { key, .. } => key.clone(),
        other => panic!("not from a template: {other}"),
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn templates_are_built_once_and_clones_are_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = TemplateCache::at(tmp.path().join("templates"));
    let o = opts();

    let first = Sandbox::from_template(&o, &cache).unwrap();
    let k = key(&first);
    let r = first.restore_timings().unwrap();
    assert!(r.build.is_some(), "the first start builds the template");
    assert!(cache.has(&k));
    assert_eq!(sh(&first, "echo hi"), "hi\n");
    first.shutdown().unwrap();
    let meta = cache.meta(&k).unwrap();
    assert_eq!(meta.inputs.mem_mib, 128);
    assert_eq!(meta.inputs.kernel.path, ec1_testkit::kernel());

    // Time passes between the template and its clones: their clocks must follow.
    std::thread::sleep(Duration::from_secs(2));
    let a = Sandbox::from_template(
        &SandboxOptions {
            hostname: Some("clone-a".into()),
            ..o.clone()
        },
        &cache,
    )
    .unwrap();
    let b = Sandbox::from_template(
        &SandboxOptions {
            hostname: Some("clone-b".into()),
            ..o.clone()
        },
        &cache,
    )
    .unwrap();
    assert_eq!(key(&a), k);
    assert!(a.restore_timings().unwrap().build.is_none(), "reused");
    assert!(
        a.restore_timings().unwrap().clock_step_ns > 1_000_000_000,
        "the clone's clock was behind by the time since the snapshot"
    );
    // Both run at once and differ.
    let script = "head -c 16 /dev/urandom | od -x | head -1; hostname";
    let (out_a, out_b) = (sh(&a, script), sh(&b, script));
    let (rand_a, host_a) = out_a.split_once('\n').unwrap();
    let (rand_b, host_b) = out_b.split_once('\n').unwrap();
    assert_ne!(rand_a, rand_b, "two clones produced the same random bytes");
    assert_eq!((host_a, host_b), ("clone-a\n", "clone-b\n"));
    for sb in [&a, &b] {
        let guest: u64 = sh(sb, "date +%s").trim().parse().unwrap();
        let host = now_s();
        assert!(
            guest.abs_diff(host) <= 2,
            "guest clock {guest}, host clock {host}"
        );
    }
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    let state = cache.dir(&k).join(STATE_FILE);
    let state_before = std::fs::read(&state).unwrap();
    let mem_len = std::fs::metadata(cache.dir(&k).join(MEM_FILE))
        .unwrap()
        .len();
    assert_eq!(mem_len, 128 << 20);

    // 20 clones at once, all answering.
    let clones: Vec<Sandbox> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|_| s.spawn(|| Sandbox::from_template(&o, &cache)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let kr = &k;
    std::thread::scope(|s| {
        for (i, c) in clones.iter().enumerate() {
            s.spawn(move || {
                assert_eq!(&key(c), kr);
                assert_eq!(sh(c, &format!("echo {i}")), format!("{i}\n"));
            });
        }
    });
    drop(clones);
    assert!(
        std::fs::read(&state).unwrap() == state_before,
        "clones never write the template"
    );

    // A changed kernel makes a new template; the old one is stale.
    let kernel = tmp.path().join("vmlinux");
    std::fs::copy(ec1_testkit::kernel(), &kernel).unwrap();
    let ko = SandboxOptions {
        kernel: Some(kernel.clone()),
        ..o.clone()
    };
    let c = Sandbox::from_template(&ko, &cache).unwrap();
    let k2 = key(&c);
    assert_ne!(k2, k);
    assert!(c.restore_timings().unwrap().build.is_some());
    c.shutdown().unwrap();
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&kernel)
        .unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let stale: Vec<_> = cache
        .list()
        .unwrap()
        .into_iter()
        .filter(|t| !t.stale.is_empty())
        .map(|t| t.key)
        .collect();
    assert_eq!(stale, vec![k2.clone()]);
    assert_eq!(cache.prune().unwrap(), vec![k2]);
    assert!(cache.has(&k));
}

#[test]
fn broken_templates_and_writable_roots_boot_cold() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = TemplateCache::at(tmp.path().join("templates"));
    let o = SandboxOptions { vcpus: 2, ..opts() };
    let sb = Sandbox::from_template(&o, &cache).unwrap();
    let k = key(&sb);
    sb.shutdown().unwrap();
    // A corrupted template is refused, removed, and the start boots cold.
    let state = cache.dir(&k).join(STATE_FILE);
    let mut bytes = std::fs::read(&state).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    let sb = Sandbox::from_template(&o, &cache).unwrap();
    match sb.boot_path() {
        BootPath::Cold { why: Some(w) } => assert!(w.contains("corrupted"), "{w}"),
        other => panic!("{other}"),
    }
    assert_eq!(sh(&sb, "nproc"), "2\n");
    sb.shutdown().unwrap();
    assert!(!cache.has(&k), "the broken template was removed");

    // The next start builds it again; a memory file torn short (a crash while it was
    // copied, a full disk) is refused likewise, and the template rebuilt after.
    let sb = Sandbox::from_template(&o, &cache).unwrap();
    assert!(sb.restore_timings().unwrap().build.is_some(), "rebuilt");
    sb.shutdown().unwrap();
    let mem = cache.dir(&k).join(MEM_FILE);
    let f = std::fs::OpenOptions::new().write(true).open(&mem).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let sb = Sandbox::from_template(&o, &cache).unwrap();
    match sb.boot_path() {
        BootPath::Cold { why: Some(w) } => assert!(w.contains("memory file"), "{w}"),
        other => panic!("{other}"),
    }
    sb.shutdown().unwrap();
    assert!(!cache.has(&k), "the torn template was removed");
    let sb = Sandbox::from_template(&o, &cache).unwrap();
    assert!(sb.restore_timings().unwrap().build.is_some(), "rebuilt");
    assert_eq!(sh(&sb, "nproc"), "2\n");
    sb.shutdown().unwrap();

    // A writable root image is never templated.
    let tree = tmp.path().join("root-tree");
    ec1_testkit::busybox_root_tree(&tree, &[], &["sh", "hostname"]);
    let img: PathBuf = tmp.path().join("root.img");
    ec1_testkit::ext4_image(&tree, &img, "8M");
    let ro = SandboxOptions {
        rootfs: Some(img),
        mode: RootMode::Rootfs,
        hostname: Some("cold-one".into()),
        ..opts()
    };
    let sb = Sandbox::from_template(&ro, &cache).unwrap();
    match sb.boot_path() {
        BootPath::Cold { why: Some(w) } => assert!(w.contains("--rootfs-ro"), "{w}"),
        other => panic!("{other}"),
    }
    assert!(sb.restore_timings().is_none());
    assert_eq!(
        sh(&sb, "hostname"),
        "cold-one\n",
        "host names reach cold boots too"
    );
    sb.shutdown().unwrap();
    let keys: Vec<String> = cache.list().unwrap().into_iter().map(|t| t.key).collect();
    assert_eq!(
        keys,
        vec![k],
        "only the rebuilt template: none for the writable root"
    );
}

/// A guest flooding its console: the log ec1 keeps stays within twice its cap and
/// holds the end of what was written.
#[test]
fn a_console_flood_is_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = TemplateCache::at(tmp.path().join("templates"));
    let sb = Sandbox::from_template(&opts(), &cache).unwrap();
    sh(
        &sb,
        "head -c 3000000 /dev/zero | tr '\\0' x > /dev/console; echo the-end > /dev/console",
    );
    let log = std::fs::read(sb.console_log()).unwrap();
    assert!(
        log.len() as u64 <= 2 * ec1_sandbox::CONSOLE_LOG_MAX,
        "{} bytes",
        log.len()
    );
    assert!(
        log.len() as u64 >= ec1_sandbox::CONSOLE_LOG_MAX,
        "{} bytes",
        log.len()
    );
    assert!(String::from_utf8_lossy(&log)
        .trim_end()
        .ends_with("the-end"));
    sb.shutdown().unwrap();
}

#[test]
fn concurrent_first_starts_build_one_template() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = TemplateCache::at(tmp.path().join("templates"));
    let o = opts();
    // Three starts of one key at once on an empty cache: one builds, all restore.
    let go = std::sync::Barrier::new(3);
    let firsts: Vec<Sandbox> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    go.wait();
                    Sandbox::from_template(&o, &cache)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let k = key(&firsts[0]);
    let built = firsts
        .iter()
        .filter(|sb| sb.restore_timings().unwrap().build.is_some())
        .count();
    assert_eq!(built, 1, "the template was built {built} times");
    for (i, sb) in firsts.iter().enumerate() {
        assert_eq!(key(sb), k);
        assert_eq!(sh(sb, &format!("echo ok {i}")), format!("ok {i}\n"));
    }
    for sb in firsts {
        sb.shutdown().unwrap();
    }
    let templates = cache.list().unwrap();
    assert_eq!(templates.len(), 1, "{templates:?}");
    assert_eq!(templates[0].key, k);
    assert!(templates[0].stale.is_empty(), "{templates:?}");
    let leftovers: Vec<_> = std::fs::read_dir(cache.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".build-") || n.starts_with(".trash-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "build directories left: {leftovers:?}"
    );

    // A later start restores that template.
    let sb = Sandbox::from_template(&o, &cache).unwrap();
    assert_eq!(key(&sb), k);
    assert!(sb.restore_timings().unwrap().build.is_none());
    assert_eq!(sh(&sb, "echo ok"), "ok\n");
    sb.shutdown().unwrap();
}
