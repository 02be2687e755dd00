// Shared with build.rs (through `#[path]`), so it uses nothing outside `core`/`std`.

/// ELF `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// ELF `e_machine` of aarch64.
pub const EM_AARCH64: u16 = 183;

/// Checks that `bytes` is an x86-64 ELF executable with no program interpreter: a
/// static binary the kernel can run as `/init` with nothing else in the initramfs.
pub fn check_static_x86_64(bytes: &[u8]) -> Result<(), String> {
    check_static(bytes, EM_X86_64)
}

/// As [`check_static_x86_64`], for the machine `machine` (an ELF `e_machine`).
pub fn check_static(bytes: &[u8], machine: u16) -> Result<(), String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let e_type = u16_at(16);
    if e_type != 2 && e_type != 3 {
        return Err(format!("ELF type {e_type} is not an executable"));
    }
    if u16_at(18) != machine {
        let name = |m: u16| match m {
            EM_X86_64 => "x86-64".to_string(),
            EM_AARCH64 => "aarch64".to_string(),
            m => format!("machine {m}"),
        };
        return Err(format!(
            "ELF machine {} is not {}",
            u16_at(18),
            name(machine)
        ));
    }
    let phoff = u64_at(32) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    if phentsize < 56 || phoff.saturating_add(phentsize * phnum) > bytes.len() {
        return Err("truncated program headers".into());
    }
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize) == PT_INTERP {
            return Err(
                "it has a program interpreter (dynamically linked); build it with \
                 RUSTFLAGS=\"-C target-feature=+crt-static\""
                    .into(),
            );
        }
    }
    Ok(())
}
