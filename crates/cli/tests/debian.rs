//! A real distribution: a Debian 12 image (debootstrap minbase with systemd, built
//! once and cached) run by `ec1 run` in each root mode. What a command writes to a
//! writable image is on it, and the filesystem clean, when `ec1 run` returns (checked
//! on the host with `e2fsck -n` and `debugfs`); a dirty image used read-only runs in
//! the image and is left as it was; systemd boots as PID 1 in hand-off mode and shuts
//! the guest down itself.

use ec1_testkit::{copy_image, debian_image, mark_needs_recovery, output_with_input};
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{ok, text, EC1};

/// `ec1 run` on TCG with 256 MiB, its templates in `xdg`, `input` on stdin.
fn run(xdg: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(EC1);
    cmd.env("XDG_CACHE_HOME", xdg)
        .env("EC1_POOL", "off")
        .args(["run", "--timings", "--engine", "qemu-tcg", "--kernel"])
        .arg(ec1_testkit::kernel())
        .args(args);
    output_with_input(cmd, input)
}

/// `e2fsck -fn`: the filesystem is clean (exit 0) and needs no recovery.
fn assert_clean(img: &Path) {
    let out = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} is not clean:\n{}{}",
        img.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A file of the image, read on the host.
fn host_read(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(img)
        .output()
        .unwrap();
    out.stdout
}

/// A private copy of the cached Debian image and a template cache of its own, in a
/// directory removed when the first item is dropped.
fn private_copy() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("debian.ext4");
    copy_image(&debian_image(), &img);
    let xdg = tmp.path().join("cache");
    (tmp, img, xdg)
}

fn sha256_of(bytes: &[u8]) -> String {
    ec1_testkit::sha256_hex(bytes)
}

#[test]
fn what_a_command_writes_to_a_debian_root_is_there_afterwards() {
    let (_tmp, img, xdg) = private_copy();
    let out = run(
        &xdg,
        &[
            "--rootfs",
            img.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "head -c 1000000 /dev/urandom > /root/file && sha256sum /root/file && cat /etc/debian_version",
        ],
        b"",
    );
    let stdout = ok(&out);
    let sum = stdout.split_whitespace().next().unwrap().to_string();
    assert!(
        stdout.contains("\n12."),
        "runs in the Debian image: {stdout}"
    );
    assert_clean(&img);
    assert_eq!(sha256_of(&host_read(&img, "/root/file")), sum);
}

#[test]
fn a_dirty_debian_image_read_only_runs_in_the_image_and_stays_as_it_was() {
    let (_tmp, img, xdg) = private_copy();
    mark_needs_recovery(&img);
    let before = sha256_of(&std::fs::read(&img).unwrap());
    let ro = ["--rootfs", img.to_str().unwrap(), "--rootfs-ro"];
    let args = |extra: &[&'static str]| -> Vec<String> {
        ro.iter()
            .chain(["--"].iter())
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let a = args(&["cat", "/etc/os-release"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run(&xdg, &a, b"");
    assert!(ok(&out).contains("Debian GNU/Linux 12 (bookworm)"));
    assert!(text(&out.stderr).contains("template built first"));
    // From the template now: stdin in, output and status out.
    let a = args(&[
        "sh",
        "-c",
        "read l; echo \"got $l\"; ls /usr/bin/apt-get; exit 5",
    ]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run(&xdg, &a, b"line\n");
    assert_eq!(text(&out.stdout), "got line\n/usr/bin/apt-get\n");
    assert_eq!(out.status.code(), Some(5));
    assert!(!text(&out.stderr).contains("built first"));
    assert_eq!(
        sha256_of(&std::fs::read(&img).unwrap()),
        before,
        "read-only means the image is not written"
    );
}

#[test]
fn systemd_boots_in_hand_off_mode_and_shuts_the_guest_down_cleanly() {
    let (_tmp, img, xdg) = private_copy();
    let out = run(
        &xdg,
        &[
            "--mode",
            "handoff",
            "--rootfs",
            img.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "readlink /proc/1/exe; echo kept > /root/handoff",
        ],
        b"",
    );
    assert_eq!(ok(&out), "/usr/lib/systemd/systemd\n", "systemd is PID 1");
    assert_clean(&img);
    assert_eq!(host_read(&img, "/root/handoff"), b"kept\n");
}
