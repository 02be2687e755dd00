//! The static guest agent binaries, one per guest architecture, built by this crate's
//! `build.rs` (a nested cargo build of `ec1-agent` with `+crt-static` and the
//! size-optimised `agent` profile) and embedded here, so every ec1 binary carries the
//! agents matching its own protocol.

mod elf;

pub use elf::{check_static, check_static_x86_64, EM_AARCH64, EM_X86_64};

use ec1_engine::Arch;

static AGENT_X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ec1-agent-x86_64"));
static AGENT_AARCH64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ec1-agent-aarch64"));

/// SHA-256 (hex) of the x86_64 agent, computed at build time.
pub const AGENT_SHA256: &str = env!("EC1_AGENT_SHA256_X86_64");
/// SHA-256 (hex) of the aarch64 agent; empty when it was not built.
const AGENT_SHA256_AARCH64: &str = env!("EC1_AGENT_SHA256_AARCH64");

/// This ec1 was built without the agent for an architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this ec1 was built without the {0} guest agent: run `rustup target add aarch64-unknown-linux-musl` and build ec1 again"
)]
pub struct AgentMissing(pub Arch);

/// The x86_64 agent executable: the `/init` of the injected initramfs.
pub fn agent_binary() -> &'static [u8] {
    AGENT_X86_64
}

/// The agent executable for guests of `arch`, and its SHA-256 (hex).
pub fn agent_for(arch: Arch) -> Result<(&'static [u8], &'static str), AgentMissing> {
    match arch {
        Arch::X86_64 => Ok((AGENT_X86_64, AGENT_SHA256)),
        Arch::Aarch64 if !AGENT_AARCH64.is_empty() => Ok((AGENT_AARCH64, AGENT_SHA256_AARCH64)),
        Arch::Aarch64 => Err(AgentMissing(arch)),
    }
}

/// The ELF machine of `arch`'s executables.
pub fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => EM_X86_64,
        Arch::Aarch64 => EM_AARCH64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_agent_is_a_static_x86_64_executable() {
        let a = agent_binary();
        check_static_x86_64(a).unwrap();
        assert!(
            a.len() > 100_000,
            "suspiciously small agent: {} bytes",
            a.len()
        );
        assert!(a.len() < 4_000_000, "the agent grew to {} bytes", a.len());
        use sha2::Digest;
        let hex: String = sha2::Sha256::digest(a)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, AGENT_SHA256);
    }

    #[test]
    fn the_embedded_aarch64_agent_is_a_static_aarch64_executable() {
        // setup.sh adds the target; an ec1 built without it cannot run arm64 guests.
        let (a, digest) = agent_for(Arch::Aarch64).expect("the aarch64 agent is built");
        check_static(a, EM_AARCH64).unwrap();
        assert!(check_static_x86_64(a).unwrap_err().contains("not x86-64"));
        assert!(
            a.len() > 100_000 && a.len() < 4_000_000,
            "{} bytes",
            a.len()
        );
        assert_eq!(digest.len(), 64);
        assert_ne!(digest, AGENT_SHA256);
        assert_eq!(elf_machine(Arch::Aarch64), EM_AARCH64);
        assert_eq!(elf_machine(Arch::X86_64), EM_X86_64);
        assert_eq!(agent_for(Arch::X86_64).unwrap().0, agent_binary());
        assert!(AgentMissing(Arch::Aarch64)
            .to_string()
            .contains("rustup target add aarch64-unknown-linux-musl"));
        let mut other = a.to_vec();
        other[18] = 40;
        assert!(check_static(&other, EM_AARCH64)
            .unwrap_err()
            .contains("machine 40 is not aarch64"));
    }

    #[test]
    fn non_static_or_foreign_binaries_are_refused() {
        assert!(check_static_x86_64(b"#!/bin/sh\n").is_err());
        let mut fake = agent_binary().to_vec();
        fake[18] = 183; // aarch64
        assert!(check_static_x86_64(&fake).unwrap_err().contains("x86-64"));
        fake[18] = 62;
        fake[4] = 1;
        assert!(check_static_x86_64(&fake).unwrap_err().contains("64-bit"));
        fake[4] = 2;
        fake[16] = 1; // relocatable object
        assert!(check_static_x86_64(&fake).is_err());
        // A dynamically linked host binary has an interpreter.
        let sh = std::fs::read("/proc/self/exe").unwrap();
        assert!(check_static_x86_64(&sh)
            .unwrap_err()
            .contains("interpreter"));
        let mut trunc = agent_binary()[..64].to_vec();
        trunc[56] = 200; // phnum beyond the file
        assert!(check_static_x86_64(&trunc)
            .unwrap_err()
            .contains("truncated"));
    }
}
