//! The agent's root-drive modes in a real guest: commands inside a disk image
//! (`ec1.root=`), and hand-off to the image's own init (`ec1.mode=handoff`).

mod common;

use common::Guest;
use ec1_engine::{CacheType, DriveSpec, Engine};
use ec1_testkit::sha256_hex;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A small ext4 image: busybox, a marker file, and an init script that records that
/// it ran and then idles.
fn make_image(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    ec1_testkit::busybox_root_tree(
        &root,
        &["sbin", "etc"],
        &["sh", "cat", "echo", "sleep", "touch", "ls", "id", "test"],
    );
    std::fs::write(root.join("etc/marker"), "from-the-image\n").unwrap();
    let init = root.join("sbin/init");
    std::fs::write(
        &init,
        "#!/bin/sh\necho \"image init, pid $$\" > /run/image-init\nexec sleep 100000\n",
    )
    .unwrap();
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let img = dir.join("root.ext4");
    ec1_testkit::ext4_image(&root, &img, "16M");
    img
}

fn drive(img: &Path) -> Vec<DriveSpec> {
    vec![DriveSpec {
        id: "rootfs".into(),
        path: img.to_path_buf(),
        read_only: false,
        cache: CacheType::Unsafe,
        rate_limit: None,
        vhost_user: false,
    }]
}

/// A guest named `name` whose agent mounts `img` read-only as its ext4 root.
fn boot_read_only_root(name: &str, img: &Path) -> Guest {
    Guest::boot_with(
        name,
        128,
        1,
        "ec1.root=/dev/vda ec1.rootfstype=ext4 ro",
        drive(img),
    )
}

#[test]
fn commands_run_inside_the_root_drive_which_stays_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path());
    let before = sha256_hex(&std::fs::read(&img).unwrap());
    let g = boot_read_only_root("rootdrive", &img);
    assert_eq!(g.client.ready_info().mode, "root", "{}", g.serial());
    assert_eq!(g.sh_ok("cat /etc/marker"), "from-the-image\n");
    // The initramfs is gone from view; the image is mounted read-only.
    assert!(!g.sh("test -e /.ec1").status.success());
    assert!(!g.sh("touch /written").status.success());
    // The API filesystems and a scratch /tmp are there.
    assert_eq!(
        g.sh_ok("ls /proc/self/fd >/dev/null && touch /tmp/ok && echo fine"),
        "fine\n"
    );
    g.engine.stop().unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&img).unwrap()),
        before,
        "the image changed"
    );
}

#[test]
fn hand_off_boots_the_images_init_and_exec_keeps_working() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path());
    let g = Guest::boot_with(
        "handoff",
        128,
        1,
        "ec1.root=/dev/vda ec1.rootfstype=ext4 ro ec1.mode=handoff ec1.init=/sbin/init",
        drive(&img),
    );
    assert_eq!(g.client.ready_info().mode, "handoff", "{}", g.serial());
    // The image's init runs as PID 1 (it wrote its pid), the agent beside it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let marker = loop {
        // The file may exist a moment before its line is written.
        let o = g.sh("cat /run/image-init");
        if o.status.success() && o.stdout.ends_with(b"\n") {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the image's init never ran\n{}",
            g.serial()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(marker, "image init, pid 1\n");
    let pid1 = g.sh_ok("cat /proc/1/cmdline | tr '\\0' ' '");
    assert!(pid1.starts_with("sleep"), "PID 1 is {pid1:?}");
    assert_eq!(g.sh_ok("cat /etc/marker"), "from-the-image\n");
    // Commands still stream and report their status.
    let o = g.sh("echo out; echo err >&2; exit 3");
    assert_eq!(
        (o.stdout.as_slice(), o.stderr.as_slice(), o.status.code()),
        (&b"out\n"[..], &b"err\n"[..], Some(3))
    );
}

/// A read-only root whose ext4 journal needs recovery (the image of a guest that was
/// not shut down cleanly) is mounted without replaying the journal (`noload`), as the
/// kernel refuses to replay it on a read-only device: the commands run in the image,
/// and the image is not written to.
#[test]
fn a_dirty_read_only_root_is_mounted_without_replaying_its_journal() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path());
    ec1_testkit::mark_needs_recovery(&img);
    let before = sha256_hex(&std::fs::read(&img).unwrap());
    let g = boot_read_only_root("dirtyroot", &img);
    assert_eq!(g.client.ready_info().mode, "root", "{}", g.serial());
    assert_eq!(g.sh_ok("cat /etc/marker"), "from-the-image\n");
    g.engine.stop().unwrap();
    assert_eq!(sha256_hex(&std::fs::read(&img).unwrap()), before);
}

/// A root drive that cannot be mounted as asked: the agent comes up only to say so,
/// and no command runs in its initramfs instead.
#[test]
fn a_root_drive_that_cannot_be_mounted_runs_nothing_elsewhere() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("garbage.img");
    std::fs::write(&img, ec1_testkit::pseudo_random(4 << 20, 7)).unwrap();
    let g = boot_read_only_root("badroot", &img);
    let e = g
        .client
        .output(&ec1_client::Command::new("true"))
        .unwrap_err();
    assert_eq!(
        e.remote_code(),
        Some(ec1_proto::ErrorCode::Refused),
        "{e}\n{}",
        g.serial()
    );
    assert!(
        e.to_string()
            .contains("could not mount its root drive /dev/vda"),
        "{e}"
    );
    g.engine.stop().unwrap();
}
