//! Builds the static guest agent with a nested cargo and leaves it in `OUT_DIR` for
//! `include_bytes!` (see `src/agent.rs`).
//!
//! The nested build uses its own target directory (`<workspace>/target/agent`, or
//! `EC1_AGENT_TARGET_DIR`) so it never waits on the lock of the build running this
//! script, and it drops inherited compiler flags and wrappers (coverage
//! instrumentation, clippy) that have no place in a binary shipped into guests.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/agent/elf.rs"]
mod elf;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let ws = manifest
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    for p in [
        "crates/agent/src",
        "crates/agent/Cargo.toml",
        "crates/proto/src",
        "crates/proto/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", ws.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=EC1_AGENT_TARGET_DIR");
    let target_dir = std::env::var_os("EC1_AGENT_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target").join("agent"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&ws)
        .args(["build", "--quiet", "-p", "ec1-agent", "--bin", "ec1-agent"])
        .args(["--profile", "agent", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .arg("--manifest-path")
        .arg(ws.join("Cargo.toml"));
    // Flags and wrappers of the outer build are not for the agent.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let drop = matches!(
            k.as_str(),
            "RUSTFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "CARGO_BUILD_TARGET_DIR"
                | "CARGO_BUILD_RUSTFLAGS"
                | "CARGO_INCREMENTAL"
                | "LLVM_PROFILE_FILE"
                | "RUSTDOCFLAGS"
                | "CARGO_ENCODED_RUSTDOCFLAGS"
        ) || k.starts_with("CARGO_LLVM_COV")
            || k.starts_with("CARGO_PROFILE_")
            || (k.starts_with("CARGO_TARGET_") && k.ends_with("_RUSTFLAGS"));
        if drop {
            cmd.env_remove(&k);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");

    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "ec1-guest: cannot run {} to build the guest agent: {e}",
            Path::new(&cargo).display()
        )
    });
    if !status.success() {
        panic!(
            "ec1-guest: building the static guest agent failed ({status}). Reproduce with:\n  \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p ec1-agent --profile agent \
             --target {TARGET} --target-dir {}",
            target_dir.display()
        );
    }
    let built = target_dir.join(TARGET).join("agent").join("ec1-agent");
    let bytes = std::fs::read(&built)
        .unwrap_or_else(|e| panic!("ec1-guest: reading {}: {e}", built.display()));
    if let Err(e) = elf::check_static_x86_64(&bytes) {
        panic!(
            "ec1-guest: {} cannot be the guest's /init: {e}",
            built.display()
        );
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("ec1-agent");
    std::fs::write(&out, &bytes)
        .unwrap_or_else(|e| panic!("ec1-guest: writing {}: {e}", out.display()));
    // The agent's identity for cache keys, computed once here instead of hashing
    // 1.5 MB on every `ec1 run`.
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=EC1_AGENT_SHA256={digest}");
}
