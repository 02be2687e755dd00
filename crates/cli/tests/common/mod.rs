//! What the `ec1` binary's tests share: an `ec1 --inject-agent --api-sock` process, and
//! running commands in it.
#![allow(dead_code)] // each test file uses part of this

use ec1_testkit::{http, spawn_tied, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const EC1: &str = env!("CARGO_BIN_EXE_ec1");

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The stdout of a command that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// An `ec1 --inject-agent --api-sock` process (killed when dropped).
pub struct Vmm {
    pub child: std::process::Child,
    pub sock: PathBuf,
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one, its API socket `<dir>/<name>.sock`.
pub fn vmm(dir: &Path, name: &str) -> Vmm {
    let sock = dir.join(format!("{name}.sock"));
    let mut cmd = Command::new(EC1);
    cmd.args(["--inject-agent", "--id", name, "--api-sock"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_tied(cmd);
    wait_for(Duration::from_secs(10), || sock.exists().then_some(()))
        .expect("ec1 did not create its API socket");
    Vmm { child, sock }
}

/// `ec1 exec --api-sock SOCK -- sh -c SCRIPT`, whatever its status.
pub fn exec(sock: &Path, script: &str) -> Output {
    Command::new(EC1)
        .arg("exec")
        .arg("--api-sock")
        .arg(sock)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn put(sock: &Path, path: &str, body: Value) -> (u16, String) {
    http(sock, "PUT", path, Some(&body.to_string()))
}
