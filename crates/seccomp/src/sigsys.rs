//! What happens when a filter refuses a system call: a line on stderr naming the call
//! and the thread, then exit 148 (Firecracker's code for a bad system call). The
//! default for SIGSYS would end ec1 with a core dump and no word of why.

use std::sync::Once;

static HANDLER: Once = Once::new();

/// Installs the SIGSYS handler for the process, once.
pub(crate) fn install_handler() {
    HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the
        // handler below is async-signal-safe (it formats on the stack and calls only
        // prctl, write and _exit).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
        }
    });
}

/// The system call number of a SIGSYS from seccomp: `siginfo_t`'s `_sigsys` member
/// (`void *_call_addr; int _syscall; unsigned _arch;`) follows the three leading ints,
/// aligned to 8 bytes on 64-bit Linux.
const SYSCALL_OFFSET: usize = 16 + std::mem::size_of::<usize>();

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; for
    // SIGSYS from seccomp its `_sigsys` member holds the call at SYSCALL_OFFSET.
    let nr = unsafe {
        (info as *const u8)
            .add(SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes and a NUL into the buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(16);
    let mut line = [0u8; 160];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        let take = bytes.len().min(line.len() - n);
        line[n..n + take].copy_from_slice(&bytes[..take]);
        n += take;
    };
    put(b"ec1: seccomp: the device filter refused system call ");
    put(decimal(nr, &mut [0u8; 12]));
    put(b" in thread ");
    put(&name[..name_len]);
    put(b"; --no-seccomp turns the filters off\n");
    // SAFETY: write and _exit are async-signal-safe; `line[..n]` is initialised.
    unsafe {
        libc::write(2, line.as_ptr().cast(), n);
        libc::_exit(crate::BAD_SYSCALL_EXIT);
    }
}

/// `v` in decimal, in `buf`.
fn decimal(v: i32, buf: &mut [u8; 12]) -> &[u8] {
    let mut i = buf.len();
    let neg = v < 0;
    let mut u = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_formats_without_allocating() {
        assert_eq!(super::decimal(0, &mut [0; 12]), b"0");
        assert_eq!(super::decimal(59, &mut [0; 12]), b"59");
        assert_eq!(super::decimal(i32::MIN, &mut [0; 12]), b"-2147483648");
    }
}
