//! Firecracker's boot-complete signal: the byte 123 written to I/O port 0xe9. ec1's
//! engines watch that port (QEMU: an isa-debugcon) to time boots.

/// Writes the boot-complete byte. Errors (no I/O privilege, not x86) are ignored: the
/// signal is for timing only.
pub fn signal_boot_complete() {
    #[cfg(target_arch = "x86_64")]
    {
        extern "C" {
            fn ioperm(from: libc::c_ulong, num: libc::c_ulong, turn_on: libc::c_int)
                -> libc::c_int;
        }
        const PORT: u16 = 0xe9;
        const BOOT_COMPLETE: u8 = 123;
        // SAFETY: ioperm only changes this thread's I/O permission bitmap.
        if unsafe { ioperm(PORT as libc::c_ulong, 1, 1) } != 0 {
            crate::debug!("ioperm(0xe9): {}", std::io::Error::last_os_error());
            return;
        }
        // SAFETY: ioperm granted access to exactly this port; `out` has no memory
        // operands.
        unsafe {
            std::arch::asm!("out dx, al", in("dx") PORT, in("al") BOOT_COMPLETE,
                options(nomem, nostack, preserves_flags));
        }
    }
}
