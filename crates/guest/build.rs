//! Builds the static guest agents with a nested cargo and leaves them in `OUT_DIR` for
//! `include_bytes!` (see `src/agent.rs`): x86_64 (static glibc) always, and aarch64
//! (musl, linked by rustc's own `rust-lld`, so no cross C toolchain is needed) when
//! rustup has the `aarch64-unknown-linux-musl` target; without it the aarch64 agent is
//! empty and ec1 says how to add it when an arm64 guest is asked for.
//!
//! The nested build uses its own target directory (`<workspace>/target/agent`, or
//! `EC1_AGENT_TARGET_DIR`) so it never waits on the lock of the build running this
//! script, and it drops inherited compiler flags and wrappers (coverage
//! instrumentation, clippy) that have no place in a binary shipped into guests.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/agent/elf.rs"]
#[allow(dead_code)] // only the checks the build needs
mod elf;

/// `(Rust target, ELF machine, file name in OUT_DIR, env var of its digest, required)`.
const AGENTS: &[(&str, u16, &str, &str, bool)] = &[
    (
        "x86_64-unknown-linux-gnu",
        elf::EM_X86_64,
        "ec1-agent-x86_64",
        "EC1_AGENT_SHA256_X86_64",
        true,
    ),
    (
        "aarch64-unknown-linux-musl",
        elf::EM_AARCH64,
        "ec1-agent-aarch64",
        "EC1_AGENT_SHA256_AARCH64",
        false,
    ),
];

/// Whether rustc has the standard library for `target` (rustup installed it).
fn target_installed(target: &str) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| dir.is_dir())
}

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

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let targets: Vec<_> = AGENTS
        .iter()
        .filter(|(target, _, file, digest_var, required)| {
            if *required || target_installed(target) {
                return true;
            }
            println!(
                "cargo:warning=no aarch64 guest agent: rustup has no {target} target \
                 (`rustup target add {target}` adds it)"
            );
            std::fs::write(out_dir.join(file), b"").unwrap();
            println!("cargo:rustc-env={digest_var}=");
            false
        })
        .collect();

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&ws)
        .args(["build", "--quiet", "-p", "ec1-agent", "--bin", "ec1-agent"])
        .args(["--profile", "agent"]);
    for (target, ..) in &targets {
        cmd.args(["--target", target]);
    }
    cmd.arg("--target-dir")
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
    // musl targets link self-contained; rustc's bundled lld needs no cross gcc.
    cmd.env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld");

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
             --target {} --target-dir {}",
            targets
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>()
                .join(" --target "),
            target_dir.display()
        );
    }
    for (target, machine, file, digest_var, _) in targets {
        let built = target_dir.join(target).join("agent").join("ec1-agent");
        let bytes = std::fs::read(&built)
            .unwrap_or_else(|e| panic!("ec1-guest: reading {}: {e}", built.display()));
        if let Err(e) = elf::check_static(&bytes, *machine) {
            panic!(
                "ec1-guest: {} cannot be the guest's /init: {e}",
                built.display()
            );
        }
        let out = out_dir.join(file);
        std::fs::write(&out, &bytes)
            .unwrap_or_else(|e| panic!("ec1-guest: writing {}: {e}", out.display()));
        // The agent's identity for cache keys, computed once here instead of hashing
        // 1.5 MB on every `ec1 run`.
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        println!("cargo:rustc-env={digest_var}={digest}");
    }
}
