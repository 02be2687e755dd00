//! Snapshots and boot templates through the `ec1` binary: Firecracker's
//! `PUT /snapshot/create` and `/snapshot/load` across two ec1 processes,
//! `--describe-snapshot`, and `ec1 run`: its templates (reuse, rebuild on a changed
//! kernel or agent, `--cold`, `ec1 template ls|prune`), its stdin, output and status.

use ec1_testkit::{http, kernel, output_with_input, processes_matching, spawn_tied, wait_for};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

mod common;

use common::{exec, ok, put, vmm, EC1};

#[test]
fn firecracker_snapshot_create_and_load_in_a_fresh_process() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let a = vmm(d, "a");
    let (code, body) = put(
        &a.sock,
        "/boot-source",
        json!({"kernel_image_path": kernel(), "boot_args": "console=ttyS0 reboot=k panic=1 quiet"}),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = put(
        &a.sock,
        "/machine-config",
        json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = put(&a.sock, "/actions", json!({"action_type": "InstanceStart"}));
    assert_eq!(code, 204, "{body}");
    // A file in the guest's tmpfs, written before the snapshot.
    ok(&exec(&a.sock, "echo written-before > /tmp/marker"));

    let snap = d.join("vm.snap");
    let mem = d.join("vm.mem");
    let create = json!({"snapshot_type": "Full", "snapshot_path": snap, "mem_file_path": mem});
    let (code, body) = put(&a.sock, "/snapshot/create", create.clone());
    assert_eq!(code, 400, "a running VM cannot be snapshotted: {body}");
    let (code, body) = http(&a.sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(code, 204, "{body}");
    let (code, body) = put(&a.sock, "/snapshot/create", create);
    assert_eq!(code, 204, "{body}");
    drop(a);

    let described = Command::new(EC1)
        .arg("--describe-snapshot")
        .arg(&snap)
        .output()
        .unwrap();
    assert_eq!(ok(&described), "v2.1.0\n");
    let not_ours = d.join("not-a-snapshot");
    std::fs::write(&not_ours, "hello").unwrap();
    let described = Command::new(EC1)
        .arg("--describe-snapshot")
        .arg(&not_ours)
        .output()
        .unwrap();
    assert_eq!(described.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&described.stderr).contains("not an ec1 snapshot"));

    // A corrupted snapshot is refused by a fresh process, which can still load a good one.
    let mut bytes = std::fs::read(&snap).unwrap();
    let bad = d.join("bad.snap");
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&bad, &bytes).unwrap();
    let b = vmm(d, "b");
    let load = |path: &Path| {
        json!({"snapshot_path": path,
               "mem_backend": {"backend_type": "File", "backend_path": mem},
               "resume_vm": true})
    };
    let (code, body) = put(&b.sock, "/snapshot/load", load(&bad));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("corrupted"), "{body}");
    drop(b);
    let c = vmm(d, "c");
    let (code, body) = put(&c.sock, "/snapshot/load", load(&snap));
    assert_eq!(code, 204, "{body}");
    let (code, body) = http(&c.sock, "GET", "/", None);
    assert_eq!(code, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "Running", "{body}");
    // The guest carries on: its file is there, and commands run.
    assert_eq!(ok(&exec(&c.sock, "cat /tmp/marker")), "written-before\n");
    assert_eq!(ok(&exec(&c.sock, "echo $((6 * 7))")), "42\n");
}

/// A guest with every virtio transport the x86 machine has in use (5 drives, the
/// injected agent and entropy: 7, which needs `i8042.noaux`) is snapshotted and
/// restored by a fresh process with the same layout: each drive where it was.
#[test]
fn a_snapshot_of_seven_virtio_devices_restores_with_its_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let a = vmm(d, "seven");
    let (code, body) = put(
        &a.sock,
        "/boot-source",
        json!({"kernel_image_path": kernel(),
               "boot_args": "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux quiet"}),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = put(
        &a.sock,
        "/machine-config",
        json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    assert_eq!(code, 204, "{body}");
    let names = ["d0", "d1", "d2", "d3", "d4"];
    for name in names {
        let img = d.join(format!("{name}.img"));
        let mut bytes = format!("drive-{name}").into_bytes();
        bytes.resize(1 << 20, 0);
        std::fs::write(&img, bytes).unwrap();
        let (code, body) = put(
            &a.sock,
            &format!("/drives/{name}"),
            json!({"drive_id": name, "path_on_host": img,
                   "is_root_device": false, "is_read_only": false}),
        );
        assert_eq!(code, 204, "{body}");
    }
    let (code, body) = put(&a.sock, "/entropy", json!({}));
    assert_eq!(code, 204, "{body}");
    let (code, body) = put(&a.sock, "/actions", json!({"action_type": "InstanceStart"}));
    assert_eq!(code, 204, "{body}");
    let layout = "for b in vda vdb vdc vdd vde; do head -c 8 /dev/$b; echo; done; \
                  cat /sys/class/misc/hw_random/rng_current";
    let before = ok(&exec(&a.sock, layout));
    assert_eq!(
        before,
        "drive-d0\ndrive-d1\ndrive-d2\ndrive-d3\ndrive-d4\nvirtio_rng.0\n"
    );
    let (code, body) = http(&a.sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(code, 204, "{body}");
    let snap = d.join("seven.snap");
    let mem = d.join("seven.mem");
    let (code, body) = put(
        &a.sock,
        "/snapshot/create",
        json!({"snapshot_type": "Full", "snapshot_path": snap, "mem_file_path": mem}),
    );
    assert_eq!(code, 204, "{body}");
    drop(a);
    let b = vmm(d, "seven-restored");
    let (code, body) = put(
        &b.sock,
        "/snapshot/load",
        json!({"snapshot_path": snap,
               "mem_backend": {"backend_type": "File", "backend_path": mem},
               "resume_vm": true}),
    );
    assert_eq!(code, 204, "{body}");
    assert_eq!(ok(&exec(&b.sock, layout)), before);
    // And the restored drives are live: a write reaches the right image.
    ok(&exec(&b.sock, "printf rewritten > /dev/vdd && sync"));
    assert!(std::fs::read(d.join("d3.img"))
        .unwrap()
        .starts_with(b"rewritten"));
}

/// `kill -9` of `ec1 run` while it builds its first template: QEMU dies with it, the
/// half-built template is never used (the next run builds a whole one), and `ec1
/// prune` removes what the dead build left.
#[test]
fn a_template_build_killed_midway_leaves_nothing_usable_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("cache");
    let templates = xdg.join("ec1").join("templates");
    let ec1 = Path::new(EC1);
    let ks = kernel();
    let mut cmd = run_command(&xdg, ec1, &["--kernel", ks.to_str().unwrap(), "--", "true"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn_tied(cmd);
    let build_dir = wait_for(Duration::from_secs(30), || {
        std::fs::read_dir(&templates).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(".build-").then(|| e.path())
        })
    })
    .expect("the template build did not start");
    // Let QEMU come up inside the build (its initrd is in this test's cache), then kill
    // ec1 without a chance to clean up.
    let needle = xdg.to_string_lossy().into_owned();
    wait_for(Duration::from_secs(30), || {
        (!processes_matching(&needle).is_empty()).then_some(())
    })
    .expect("no QEMU for the template build");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || processes_matching(&needle)
            .is_empty()
            .then_some(()))
        .is_some(),
        "QEMU outlived the killed ec1"
    );
    // No template is complete; the next run builds one and uses it.
    let (out, err) = run(
        &xdg,
        ec1,
        &["--kernel", ks.to_str().unwrap(), "--", "echo", "after"],
    );
    assert_eq!(out, "after\n");
    assert!(err.contains("template built first"), "{err}");
    assert!(
        build_dir.exists(),
        "the dead build's directory is still there"
    );
    template(&xdg, &["prune"]);
    assert!(
        !build_dir.exists(),
        "prune removes what the killed build left"
    );
    let (out, err) = run(
        &xdg,
        ec1,
        &["--kernel", ks.to_str().unwrap(), "--", "echo", "again"],
    );
    assert_eq!(out, "again\n");
    assert!(
        !err.contains("built first"),
        "the whole template is used: {err}"
    );
}

/// `ec1 run` on TCG with 128 MiB, its cache in `xdg` (so templates are this test's
/// own), then `args`. Without the background pool (`EC1_POOL=off`): these tests are
/// about templates; `crates/cli/tests/pool.rs` is about the pool.
fn run_command(xdg: &Path, ec1: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(ec1);
    cmd.env("XDG_CACHE_HOME", xdg)
        .env("EC1_POOL", "off")
        .args(["run", "--engine", "qemu-tcg", "--mem", "128"])
        .args(args);
    cmd
}

/// [`run_command`] with `--timings`, `input` on its stdin; whatever its status.
fn run_output(xdg: &Path, ec1: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = run_command(xdg, ec1, &["--timings"]);
    cmd.args(args);
    output_with_input(cmd, input)
}

/// [`run_output`] of a command that must succeed, with no input: (stdout, stderr).
fn run(xdg: &Path, ec1: &Path, args: &[&str]) -> (String, String) {
    let out = run_output(xdg, ec1, args, b"");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn template(xdg: &Path, action: &[&str]) -> String {
    let out = Command::new(EC1)
        .env("XDG_CACHE_HOME", xdg)
        .arg("template")
        .args(action)
        .output()
        .unwrap();
    ok(&out)
}

#[test]
fn run_reuses_templates_and_rebuilds_them_when_an_input_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("cache");
    let k = tmp.path().join("vmlinux");
    std::fs::copy(kernel(), &k).unwrap();
    let ks = k.to_str().unwrap();
    let ec1 = Path::new(EC1);

    let (out, err) = run(&xdg, ec1, &["--kernel", ks, "--", "echo", "one"]);
    assert_eq!(out, "one\n");
    assert!(err.contains("ec1 timings: template "), "{err}");
    assert!(err.contains("template built first"), "{err}");
    let (out, err) = run(&xdg, ec1, &["--kernel", ks, "--", "echo", "two"]);
    assert_eq!(out, "two\n");
    assert!(err.contains("ec1 timings: template "), "{err}");
    assert!(
        !err.contains("built first"),
        "the second run reuses it: {err}"
    );
    let (_, err) = run(&xdg, ec1, &["--kernel", ks, "--cold", "--", "true"]);
    assert!(err.contains("ec1 timings: cold\n"), "{err}");
    let ls = template(&xdg, &["ls"]);
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert!(ls.contains("128 MiB") && !ls.contains("STALE"), "{ls}");

    // A changed kernel: a new template.
    let f = std::fs::OpenOptions::new().append(true).open(&k).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    drop(f);
    let (_, err) = run(&xdg, ec1, &["--kernel", ks, "--", "true"]);
    assert!(err.contains("template built first"), "{err}");
    let ls = template(&xdg, &["ls"]);
    assert_eq!(ls.lines().count(), 2, "{ls}");
    assert_eq!(ls.matches("STALE").count(), 1, "{ls}");
    let pruned = template(&xdg, &["prune"]);
    assert!(
        pruned.ends_with("1 stale template(s) removed\n"),
        "{pruned}"
    );

    // Another ec1 binary (it embeds its own agent): a new template too.
    let other = tmp.path().join("ec1-other");
    std::fs::copy(ec1, &other).unwrap();
    let (_, err) = run(&xdg, &other, &["--kernel", ks, "--", "true"]);
    assert!(err.contains("template built first"), "{err}");
    let ls = template(&xdg, &["ls"]);
    assert_eq!(ls.lines().count(), 2, "{ls}");
    let key = ls
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(template(&xdg, &["rm", &key[..8]]).starts_with("removed "));
    assert_eq!(template(&xdg, &["ls"]).lines().count(), 1);
}

#[test]
fn run_passes_stdin_and_signals_and_exits_with_the_commands_status() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("cache");
    let k = kernel();
    let ks = k.to_str().unwrap();
    let ec1 = Path::new(EC1);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // The first run builds the template (one cold boot); the others restore it.
    let out = run_output(
        &xdg,
        ec1,
        &["--kernel", ks, "--", "sh", "-c", "cat; exit 3"],
        b"hello",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello");
    assert!(
        text(&out.stderr).contains("template built first"),
        "{}",
        text(&out.stderr)
    );

    let out = run_output(
        &xdg,
        ec1,
        &["--kernel", ks, "--", "sh", "-c", "echo err >&2; exit 1"],
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "", "stderr went to stdout");
    // The command's stderr, then ec1's own --timings report.
    let rest = stderr
        .strip_prefix("err\n")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        rest.lines().all(|l| l.starts_with("ec1 timings: ")),
        "{stderr}"
    );
    assert!(rest.starts_with("ec1 timings: template "), "{stderr}");
    assert!(!rest.contains("built first"), "{stderr}");

    let out = run_output(
        &xdg,
        ec1,
        &["--kernel", ks, "--", "sh", "-c", "kill -9 $$"],
        b"",
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");

    // SIGTERM and SIGINT to ec1 reach the command, which decides how to end; ec1
    // exits with its status and leaves nothing in its temporary directory.
    use std::io::{BufRead, BufReader};
    for (sig, script, code, said) in [
        (
            libc::SIGTERM,
            "trap 'echo got TERM; exit 7' TERM; echo started; while :; do sleep 0.1; done",
            7,
            "got TERM\n",
        ),
        (
            libc::SIGINT,
            "echo started; exec sleep 60",
            128 + libc::SIGINT,
            "",
        ),
    ] {
        let run_tmp = tmp.path().join(format!("tmp-{sig}"));
        std::fs::create_dir(&run_tmp).unwrap();
        let mut child = run_command(&xdg, Path::new(EC1), &["--kernel", ks])
            .env("TMPDIR", &run_tmp)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "started\n");
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let status = wait_for(Duration::from_secs(30), || child.try_wait().unwrap())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ec1 run did not end after signal {sig}")
            });
        assert_eq!(status.code(), Some(code), "signal {sig}");
        assert_eq!(rest, said, "signal {sig}");
        let left: Vec<_> = std::fs::read_dir(&run_tmp).unwrap().collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    }
}

#[test]
fn a_pool_serves_ec1_run_until_sigterm() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("cache");
    let k = kernel();
    let ks = k.to_str().unwrap();
    // The pool's own temporary directory: whatever it leaves there is a leak.
    let pool_tmp = tmp.path().join("pool-tmp");
    std::fs::create_dir(&pool_tmp).unwrap();
    let mut cmd = Command::new(EC1);
    cmd.env("XDG_CACHE_HOME", &xdg)
        .env("TMPDIR", &pool_tmp)
        .args([
            "pool", "--size", "1", "--engine", "qemu-tcg", "--mem", "128",
        ])
        .args(["--kernel", ks])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut pool = spawn_tied(cmd);
    let mut lines = BufReader::new(pool.stderr.take().unwrap()).lines();
    let serving = lines.next().unwrap().unwrap();
    assert!(
        serving.starts_with("ec1 pool: serving 1 warm clone"),
        "{serving}"
    );
    let socket = serving.rsplit(' ').next().unwrap().to_string();
    assert!(Path::new(&socket).exists());
    // Until the pool's member is warm, runs restore the template themselves.
    let ec1 = Path::new(EC1);
    let pooled = (0..300).any(|_| {
        let mut c = run_command(&xdg, ec1, &["--timings", "--kernel", ks]);
        c.env_remove("EC1_POOL").args(["--", "echo", "hi"]);
        let out = output_with_input(c, b"");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
        if err.contains("ec1 timings: pool of template") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    assert!(pooled, "no run was served by the pool");
    // `--pool` takes a warm clone or fails: the pool refills after each claim.
    let pooled = (0..300).any(|_| {
        let out = run_output(
            &xdg,
            ec1,
            &["--pool", "--kernel", ks, "--", "echo", "hi"],
            b"",
        );
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    assert!(pooled, "ec1 run --pool never got a warm clone");
    // Stop the pool while one of its clones runs a command: the pool stops that clone
    // too (the run ends with an error) and waits for it, leaving nothing behind.
    let claimed = (0..300).find_map(|_| {
        let mut c = run_command(&xdg, ec1, &["--pool", "--kernel", ks]);
        c.args(["--", "sh", "-c", "echo up; exec sleep 30"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = spawn_tied(c);
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        if first == "up\n" {
            return Some(child);
        }
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    let mut claimed = claimed.expect("no `ec1 run --pool` got a clone to keep");
    // SAFETY: kill has no memory effects; the pid is our unreaped child.
    unsafe { libc::kill(pool.id() as i32, libc::SIGTERM) };
    let status = pool.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let run_status = claimed.wait().unwrap();
    assert!(!run_status.success(), "the claimed run outlived its clone");
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "ec1 pool: stopping (signal 15)"
    );
    assert!(!Path::new(&socket).exists(), "the pool left its socket");
    let left: Vec<_> = std::fs::read_dir(&pool_tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "the pool left {left:?}");
    let out = run_output(&xdg, ec1, &["--pool", "--kernel", ks, "--", "true"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("start `ec1 pool`"), "{stderr}");
}
