//! The guest's CPU architecture, and how to tell it from a kernel image.
//!
//! Firecracker's API has no architecture field: a Firecracker binary runs guests of
//! its own host's architecture. ec1 runs any guest its engine can emulate, so the
//! architecture follows from the kernel the user gives (an ELF `vmlinux`, an x86
//! `bzImage` or an arm64 `Image`), read from the image's header.

use std::io::Read;
use std::path::Path;

/// A guest CPU architecture ec1 can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// ELF `e_machine` values.
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
/// The arm64 `Image` header's magic, at byte 56 (Documentation/arm64/booting.rst).
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";
const ARM64_MAGIC_AT: usize = 56;
/// The x86 boot protocol's header signature, at byte 0x202 of a `bzImage`.
const X86_HDRS: &[u8; 4] = b"HdrS";
const X86_HDRS_AT: usize = 0x202;
/// Bytes of the image that identify it.
const HEADER_LEN: usize = 0x206;

impl Arch {
    /// The architecture of the machine ec1 was built for.
    pub const fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// The name Rust, Debian's multiarch tuples and `uname -m` use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// `x86_64`/`amd64` or `aarch64`/`arm64`.
    pub fn parse(s: &str) -> Result<Arch, String> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(format!(
                "unknown architecture {other:?}: ec1 runs x86_64 and aarch64 guests"
            )),
        }
    }

    /// The architecture a kernel image (its first bytes) is built for, or why it is
    /// not a kernel ec1 knows how to boot.
    pub fn of_kernel_header(head: &[u8]) -> Result<Arch, String> {
        if head.starts_with(b"\x7fELF") {
            if head.len() < 20 {
                return Err("a truncated ELF file".into());
            }
            let machine = if head[5] == 2 {
                u16::from_be_bytes([head[18], head[19]])
            } else {
                u16::from_le_bytes([head[18], head[19]])
            };
            return match machine {
                EM_X86_64 => Ok(Arch::X86_64),
                EM_AARCH64 => Ok(Arch::Aarch64),
                m => Err(format!(
                    "an ELF file for machine {m}, neither x86-64 ({EM_X86_64}) nor aarch64 ({EM_AARCH64})"
                )),
            };
        }
        if head.get(ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4) == Some(ARM64_MAGIC) {
            return Ok(Arch::Aarch64);
        }
        if head.get(X86_HDRS_AT..X86_HDRS_AT + 4) == Some(X86_HDRS) {
            return Ok(Arch::X86_64);
        }
        Err("neither an ELF vmlinux, an x86 bzImage nor an arm64 Image".into())
    }

    /// [`Arch::of_kernel_header`] for the file at `path`.
    pub fn of_kernel(path: &Path) -> Result<Arch, String> {
        let mut head = Vec::with_capacity(HEADER_LEN);
        std::fs::File::open(path)
            .and_then(|f| f.take(HEADER_LEN as u64).read_to_end(&mut head))
            .map_err(|e| format!("cannot read the kernel image {}: {e}", path.display()))?;
        Arch::of_kernel_header(&head)
            .map_err(|why| format!("the kernel image {} is {why}", path.display()))
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        Arch::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16, big_endian: bool) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = if big_endian { 2 } else { 1 };
        let m = if big_endian {
            machine.to_be_bytes()
        } else {
            machine.to_le_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    #[test]
    fn kernels_are_told_apart_by_their_headers() {
        assert_eq!(Arch::of_kernel_header(&elf(62, false)), Ok(Arch::X86_64));
        assert_eq!(Arch::of_kernel_header(&elf(183, false)), Ok(Arch::Aarch64));
        assert_eq!(Arch::of_kernel_header(&elf(183, true)), Ok(Arch::Aarch64));
        let err = Arch::of_kernel_header(&elf(40, false)).unwrap_err();
        assert!(err.contains("machine 40"), "{err}");
        assert!(Arch::of_kernel_header(b"\x7fELF\x02").is_err());

        let mut image = vec![0u8; 64];
        image[56..60].copy_from_slice(b"ARM\x64");
        assert_eq!(Arch::of_kernel_header(&image), Ok(Arch::Aarch64));
        let mut bz = vec![0u8; HEADER_LEN];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(Arch::of_kernel_header(&bz), Ok(Arch::X86_64));
        assert!(Arch::of_kernel_header(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn files_are_read_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("ec1-arch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("vmlinux");
        std::fs::write(&k, elf(183, false)).unwrap();
        assert_eq!(Arch::of_kernel(&k), Ok(Arch::Aarch64));
        std::fs::write(&k, b"junk").unwrap();
        let err = Arch::of_kernel(&k).unwrap_err();
        assert!(err.contains("vmlinux") && err.contains("neither"), "{err}");
        let err = Arch::of_kernel(&dir.join("missing")).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_parse_both_ways() {
        for a in [Arch::X86_64, Arch::Aarch64] {
            assert_eq!(a.as_str().parse::<Arch>(), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
        }
        assert_eq!(Arch::parse("arm64"), Ok(Arch::Aarch64));
        assert_eq!(Arch::parse("amd64"), Ok(Arch::X86_64));
        assert!(Arch::parse("riscv64").unwrap_err().contains("riscv64"));
        assert_eq!(Arch::host().as_str(), std::env::consts::ARCH);
    }
}
