//! Shared support for ec1's integration tests.
//!
//! Tests boot real guests, so they need a kernel ([`kernel`]) and something to run as
//! `/init`. [`test_initramfs`] packs a tiny static program the project owns
//! (`fixtures/test_init.rs`, built with plain `rustc` and cached by content) whose
//! behaviour the kernel command line picks (`ec1test.action=...`).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TEST_INIT_SOURCE: &str = include_str!("../fixtures/test_init.rs");

/// The kernel tests boot: `$EC1_KERNEL`, else the cached default kernel. Panics with
/// how to get one: a test that needs a guest must fail, not skip, without it.
pub fn kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("EC1_KERNEL") {
        return PathBuf::from(k);
    }
    ec1_guest::kernel::path()
        .unwrap_or_else(|e| panic!("no guest kernel for the tests ({e}); run `ec1 kernel build` or set EC1_KERNEL"))
}

/// A per-workspace scratch directory for built test artefacts.
fn artefact_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testkit");
    std::fs::create_dir_all(&d).expect("creating target/testkit");
    d
}

fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds `fixtures/test_init.rs` into a static binary (once per source version).
pub fn test_init_binary() -> PathBuf {
    let out = artefact_dir().join(format!("test-init-{}", short_hash(TEST_INIT_SOURCE.as_bytes())));
    if out.is_file() {
        return out;
    }
    let src = artefact_dir().join(format!("test_init-{}.rs", std::process::id()));
    std::fs::write(&src, TEST_INIT_SOURCE).expect("writing the test init source");
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["-C", "target-feature=+crt-static", "-C", "opt-level=s", "-C", "strip=symbols"])
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("running rustc for the test init");
    let _ = std::fs::remove_file(&src);
    assert!(status.success(), "rustc failed to build the test init");
    std::fs::rename(&tmp, &out).expect("moving the test init into place");
    out
}

/// A newc initramfs whose `/init` is the test init; cached by content.
pub fn test_initramfs() -> PathBuf {
    let init = std::fs::read(test_init_binary()).expect("reading the test init");
    let out = artefact_dir().join(format!("test-initramfs-{}.cpio", short_hash(&init)));
    if out.is_file() {
        return out;
    }
    let mut w = ec1_guest::initramfs::NewcWriter::new();
    w.dir("proc", 0o755);
    w.dir("dev", 0o755);
    w.char_dev("dev/console", 0o600, 5, 1);
    w.file("init", 0o755, &init);
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, w.finish()).expect("writing the test initramfs");
    std::fs::rename(&tmp, &out).expect("moving the test initramfs into place");
    out
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PIDs of live processes whose command line contains `needle` (zombies excluded).
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = status
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmd).contains(needle)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_holds_the_init() {
        let cpio = std::fs::read(test_initramfs()).unwrap();
        let entries = ec1_guest::initramfs::parse(&cpio).unwrap();
        assert!(entries.iter().any(|e| e.0 == "init"), "no /init");
    }

    #[test]
    fn wait_for_times_out_and_succeeds() {
        assert_eq!(wait_for(Duration::from_millis(50), || None::<()>), None);
        let mut n = 0;
        assert_eq!(
            wait_for(Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
    }

    #[test]
    fn finds_this_process() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(processes_matching(name).contains(&me));
        assert!(!processes_matching("ec1-no-such-process-xyz-123").contains(&me));
    }
}
