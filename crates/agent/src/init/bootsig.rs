//! Firecracker's boot-complete signal: the byte 123 written where the engine listens.
//! On x86 that is I/O port 0xe9, as on Firecracker (QEMU: an isa-debugcon); machines
//! without I/O ports (arm64) have a virtio-serial port named `ec1.boot` for it.

use ec1_proto::channel::BOOT_SIGNAL;

/// Writes the boot-complete byte. Errors (no I/O privilege, no boot port) are
/// ignored: the signal is for timing only.
pub fn signal_boot_complete() {
    #[cfg(target_arch = "x86_64")]
    {
        use ec1_proto::channel::BOOT_TIMER_IO_PORT as PORT;
        extern "C" {
            fn ioperm(from: libc::c_ulong, num: libc::c_ulong, turn_on: libc::c_int)
                -> libc::c_int;
        }
        // SAFETY: ioperm only changes this thread's I/O permission bitmap.
        if unsafe { ioperm(PORT as libc::c_ulong, 1, 1) } != 0 {
            crate::debug!("ioperm(0xe9): {}", std::io::Error::last_os_error());
            return;
        }
        // SAFETY: ioperm granted access to exactly this port; `out` has no memory
        // operands.
        unsafe {
            std::arch::asm!("out dx, al", in("dx") PORT, in("al") BOOT_SIGNAL,
                options(nomem, nostack, preserves_flags));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::io::Write;
        let Some(path) = super::port::find_port(
            std::path::Path::new("/sys/class/virtio-ports"),
            std::path::Path::new("/dev"),
            ec1_proto::channel::BOOT_PORT,
        ) else {
            return;
        };
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&[BOOT_SIGNAL]));
        if let Err(e) = written {
            crate::debug!("boot signal on {}: {e}", path.display());
        }
    }
}
