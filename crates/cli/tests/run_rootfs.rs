//! `ec1 run --rootfs`: what a command writes to a writable root image is on the image,
//! clean, when ec1 exits, however the command ended; a root that cannot be mounted as
//! asked runs nothing; a read-only root is never written. Each case checks the image
//! on the host with `e2fsck -fn` (clean: no journal to replay, no errors) and
//! `debugfs` (the file and its size).

use ec1_testkit::output_with_input;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const EC1: &str = env!("CARGO_BIN_EXE_ec1");
/// What each command writes before it ends.
const BYTES: u64 = 1_000_000;

/// A small ext4 root image: busybox, its applets the cases use, and `/root`.
fn root_image(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    ec1_testkit::busybox_root_tree(
        &tree,
        &["root"],
        &["sh", "head", "echo", "sleep", "kill", "cat"],
    );
    let img = dir.join("root.ext4");
    ec1_testkit::ext4_image(&tree, &img, "32M");
    img
}

fn run(img: &Path, extra: &[&str], script: &str) -> std::process::Output {
    let mut cmd = Command::new(EC1);
    cmd.args([
        "run", "--cold", "--engine", "qemu-tcg", "--mem", "128", "--rootfs",
    ])
    .arg(img)
    .args(extra)
    .args(["--", "sh", "-c", script]);
    output_with_input(cmd, b"")
}

/// The image is clean (`e2fsck -fn` finds nothing to do) and `/root/<name>` holds
/// [`BYTES`] bytes.
fn assert_written(img: &Path, name: &str) {
    let fsck = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {:?}\n{}{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let stat = Command::new("debugfs")
        .args(["-R", &format!("stat /root/{name}")])
        .arg(img)
        .output()
        .expect("this test needs debugfs: apt-get install e2fsprogs");
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(
        text.contains(&format!("Size: {BYTES}")),
        "/root/{name} on the image:\n{text}{}",
        String::from_utf8_lossy(&stat.stderr)
    );
}

fn write(name: &str) -> String {
    format!("head -c {BYTES} /dev/urandom > /root/{name}")
}

/// Starts `ec1 run --rootfs img -- sh -c "<script>; echo ready; sleep 100"` and
/// returns once the guest printed `ready`.
fn start_until_ready(img: &Path, script: &str) -> std::process::Child {
    let mut child = Command::new(EC1)
        .args([
            "run", "--cold", "--engine", "qemu-tcg", "--mem", "128", "--rootfs",
        ])
        .arg(img)
        .args(["--", "sh", "-c"])
        .arg(format!("{script}; echo ready; sleep 100"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// Sends SIGTERM to `child` (which forwards it to the command) and returns its exit
/// code; kills it if it has not exited within a minute.
fn terminate(mut child: std::process::Child) -> Option<i32> {
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = ec1_testkit::wait_for(Duration::from_secs(60), || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status.and_then(|s| s.code())
}

#[test]
fn writes_reach_the_image_however_the_command_ends() {
    let d = tempfile::tempdir().unwrap();
    let img = root_image(d.path());

    let out = run(&img, &[], &format!("{}; echo written", write("plain")));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"written\n");
    assert_written(&img, "plain");

    let out = run(&img, &[], &format!("{}; exit 3", write("failed")));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_written(&img, "failed");

    // Killed by a signal, with a process still holding a file open for writing: the
    // root cannot be remounted read-only, so the agent freezes it.
    let trace = d.path().join("trace.jsonl");
    let out = run(
        &img,
        &["--trace-file", trace.to_str().unwrap()],
        &format!(
            "{}; (exec 3>>/root/held; sleep 100) >/dev/null 2>&1 & sleep 1; kill -9 $$",
            write("killed")
        ),
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{out:?}");
    assert_written(&img, "killed");
    let trace = std::fs::read_to_string(&trace).unwrap();
    let quiesced = trace
        .lines()
        .find(|l| l.contains("\"sandbox.quiesced\""))
        .unwrap_or_else(|| panic!("no quiesce in the trace:\n{trace}"));
    let q: serde_json::Value = serde_json::from_str(quiesced).unwrap();
    assert_eq!(
        (q["remounted"].as_u64(), q["frozen"].as_u64()),
        (Some(0), Some(1)),
        "{q}"
    );

    let out = run(
        &img,
        &["--timeout", "2"],
        &format!("{}; sleep 100", write("timed-out")),
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert_written(&img, "timed-out");
}

/// SIGTERM to `ec1 run` goes to the command, which ends; ec1 then tears down as
/// usual, and the write is on the image.
#[test]
fn sigterm_to_ec1_keeps_what_the_command_wrote() {
    let d = tempfile::tempdir().unwrap();
    let img = root_image(d.path());
    let child = start_until_ready(&img, &write("termed"));
    assert_eq!(terminate(child), Some(128 + 15));
    assert_written(&img, "termed");
}

/// A root image that is not a filesystem: `ec1 run` fails with 125 and the reason,
/// and the command does not run in ec1's initramfs instead.
#[test]
fn a_root_that_cannot_be_mounted_fails_with_125() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("garbage.img");
    std::fs::write(&img, ec1_testkit::pseudo_random(8 << 20, 3)).unwrap();
    let out = run(&img, &["--rootfs-ro"], "echo ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(out.stdout.is_empty(), "the command ran");
    assert!(
        stderr.contains("could not mount its root drive /dev/vda"),
        "{stderr}"
    );
}

/// A read-only root whose journal needs recovery runs the command in the image and
/// leaves the image as it was.
#[test]
fn a_dirty_read_only_root_runs_in_the_image_and_is_not_written() {
    let d = tempfile::tempdir().unwrap();
    let img = root_image(d.path());
    ec1_testkit::mark_needs_recovery(&img);
    let before = ec1_testkit::sha256_hex(&std::fs::read(&img).unwrap());
    let out = run(&img, &["--rootfs-ro"], "test -d /root && echo in-the-image");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"in-the-image\n");
    assert_eq!(
        ec1_testkit::sha256_hex(&std::fs::read(&img).unwrap()),
        before
    );
}

/// Two writers of one image: the second is refused, naming the process that holds the
/// image; a read-only user may share it meanwhile.
#[test]
fn a_second_writer_of_an_image_is_refused_and_told_who_holds_it() {
    let d = tempfile::tempdir().unwrap();
    let img = root_image(d.path());
    let first = start_until_ready(&img, "true");
    let second = run(&img, &[], "echo ran");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let reader = run(&img, &["--rootfs-ro"], "test -d /root && echo shared");
    let first = terminate(first);
    assert_eq!(second.status.code(), Some(125), "{stderr}");
    assert!(second.stdout.is_empty(), "the second writer ran");
    assert!(
        stderr.contains(&format!(
            "{} is already open for writing by pid",
            img.display()
        )) && stderr.contains("qemu"),
        "{stderr}"
    );
    assert_eq!(reader.stdout, b"shared\n", "{reader:?}");
    assert_eq!(first, Some(128 + 15));
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{fsck:?}");
}
