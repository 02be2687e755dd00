//! The static guest agent binary, built by this crate's `build.rs` (a nested cargo
//! build of `ec1-agent` with `+crt-static` and the size-optimised `agent` profile) and
//! embedded here, so every ec1 binary carries the agent matching its own protocol.

mod elf;

pub use elf::check_static_x86_64;

static AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ec1-agent"));

/// SHA-256 of [`agent_binary`] (hex), computed at build time.
pub const AGENT_SHA256: &str = env!("EC1_AGENT_SHA256");

/// The agent executable: the `/init` of the injected initramfs.
pub fn agent_binary() -> &'static [u8] {
    AGENT
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
