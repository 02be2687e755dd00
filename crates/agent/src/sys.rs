//! Thin wrappers over the few system calls the agent makes outside `std`.

use ec1_proto::Termination;
use std::io;
use std::os::fd::RawFd;

/// Turns a `-1` return into the thread's `errno`.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_BOOTTIME` in nanoseconds: time since the guest kernel started.
pub fn boottime_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Reads at most `max` bytes from `fd` and appends them to `buf`, without
/// zero-filling the space first: the stdout path allocates one buffer per frame (see
/// [`crate::outbox::frame_buf`]) and this keeps it to that one allocation. Retries on
/// `EINTR`.
pub fn read_into_vec(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let len = buf.len();
    loop {
        // SAFETY: the pointer is to at least `max` bytes of spare capacity owned by
        // `buf`; read(2) writes at most `max` bytes there and reports how many.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().add(len).cast(), max) };
        if n >= 0 {
            // SAFETY: read(2) initialised the `n` <= `max` bytes after `len`.
            unsafe { buf.set_len(len + n as usize) };
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends `sig` to the process group `pgid`. A group that is already gone is fine.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid targets a process group; no memory involved.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// How a raw `waitpid` status ended the process.
pub fn termination(status: libc::c_int) -> Termination {
    if libc::WIFSIGNALED(status) {
        Termination::Signal {
            signal: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
        }
    } else {
        Termination::Code(libc::WEXITSTATUS(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn clocks_move_forward() {
        let a = boottime_ns();
        let b = boottime_ns();
        assert!(b >= a && a > 0);
        assert!(realtime_ns() > 1_600_000_000 * 1_000_000_000);
    }

    #[test]
    fn read_into_vec_reads_what_is_there() {
        let (r, mut w) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut w, b"hello").unwrap();
        drop(w);
        let mut v = Vec::new();
        assert_eq!(read_into_vec(r.as_raw_fd(), &mut v, 3).unwrap(), 3);
        assert_eq!(v, b"hel");
        let mut v = b"prefix:".to_vec();
        assert_eq!(read_into_vec(r.as_raw_fd(), &mut v, 64).unwrap(), 2);
        assert_eq!(v, b"prefix:lo");
        let mut v = Vec::new();
        assert_eq!(read_into_vec(r.as_raw_fd(), &mut v, 64).unwrap(), 0);
        assert!(read_into_vec(-1, &mut Vec::new(), 1).is_err());
        assert!(cvt(-1).is_err());
        assert_eq!(cvt(5).unwrap(), 5);
    }

    #[test]
    fn wait_statuses_map_to_terminations() {
        assert_eq!(termination(3 << 8), Termination::Code(3));
        assert_eq!(
            termination(9),
            Termination::Signal {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            termination(11 | 0x80),
            Termination::Signal {
                signal: 11,
                core_dumped: true
            }
        );
    }
}
