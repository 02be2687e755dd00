//! Applying a [`Refresh`]: what makes a guest restored from a snapshot distinct.
//!
//! Clones of one snapshot resume with identical kernel RNG state: the same
//! `/dev/urandom` bytes would come out of each. Mixing in fresh host entropy alone is
//! not enough on Linux ≥ 5.18, where the CRNG reseeds from the pool only periodically
//! (up to a minute apart) once it is initialised; `RNDRESEEDCRNG` forces the reseed at
//! once (as a VM generation ID change would). The wall clock is stepped to the host's,
//! because the restored guest's clock resumes at the moment of the snapshot.

use crate::sys::cvt;
use ec1_proto::Refresh;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// What a refresh did, for [`ec1_proto::Msg::Refreshed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Guest wall clock after minus before the step, in ns (0 without a clock).
    pub clock_step_ns: i64,
}

/// Applies `r` to this system: entropy (with a CRNG reseed), then the clock, then the
/// host name. Stops at the first failure, naming the step.
pub fn apply(r: &Refresh) -> io::Result<Applied> {
    if !r.entropy.is_empty() {
        add_entropy("/dev/random", &r.entropy)
            .map_err(|e| io::Error::new(e.kind(), format!("reseeding the kernel RNG: {e}")))?;
    }
    let mut clock_step_ns = 0;
    if let Some(ns) = r.realtime_ns {
        let before = crate::sys::realtime_ns();
        set_realtime(ns)
            .map_err(|e| io::Error::new(e.kind(), format!("setting the clock: {e}")))?;
        clock_step_ns = step(before, ns);
    }
    if let Some(h) = &r.hostname {
        // SAFETY: the pointer and length describe `h`'s bytes, which outlive the call.
        cvt(unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) })
            .map_err(|e| io::Error::new(e.kind(), format!("setting the host name: {e}")))?;
    }
    Ok(Applied { clock_step_ns })
}

/// `after - before` in ns, saturating instead of wrapping.
fn step(before: u64, after: u64) -> i64 {
    let d = after as i128 - before as i128;
    d.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The `struct rand_pool_info` `RNDADDENTROPY` takes: a header and the bytes.
fn pool_info(entropy: &[u8]) -> Vec<u8> {
    let bits = (entropy.len() * 8).min(i32::MAX as usize) as i32;
    let mut buf = Vec::with_capacity(8 + entropy.len());
    buf.extend_from_slice(&bits.to_ne_bytes()); // entropy_count (bits credited)
    buf.extend_from_slice(&(entropy.len() as i32).to_ne_bytes()); // buf_size
    buf.extend_from_slice(entropy);
    buf
}

/// Mixes `entropy` into the pool behind `device` (crediting it in full: it comes from
/// the host's CSPRNG) and forces a CRNG reseed.
fn add_entropy(device: &str, entropy: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(device)?;
    let info = pool_info(entropy);
    // SAFETY: `info` is a valid rand_pool_info (two ints then `buf_size` bytes) that
    // lives across the call; the kernel only reads it.
    cvt(unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    cvt(unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG as _) })?;
    Ok(())
}

/// Steps `CLOCK_REALTIME` to `ns` since the epoch.
fn set_realtime(ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as _,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec the kernel only reads.
    cvt(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_info_has_the_kernel_layout() {
        let b = pool_info(&[1, 2, 3]);
        assert_eq!(&b[..4], &24i32.to_ne_bytes());
        assert_eq!(&b[4..8], &3i32.to_ne_bytes());
        assert_eq!(&b[8..], &[1, 2, 3]);
    }

    #[test]
    fn steps_are_signed_and_saturate() {
        assert_eq!(step(10, 15), 5);
        assert_eq!(step(15, 10), -5);
        assert_eq!(step(0, u64::MAX), i64::MAX);
        assert_eq!(step(u64::MAX, 0), i64::MIN);
    }

    #[test]
    fn ioctl_constants_match_the_kernel_headers() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr.
        let ioc = |dir: libc::c_ulong, nr: libc::c_ulong, size: libc::c_ulong| {
            dir << 30 | size << 16 | libc::c_ulong::from(b'R') << 8 | nr
        };
        assert_eq!(RNDADDENTROPY, ioc(1, 3, 8));
        assert_eq!(RNDRESEEDCRNG, ioc(0, 7, 0));
    }

    #[test]
    fn entropy_on_something_that_is_not_an_rng_fails() {
        let f = tempfile_path();
        std::fs::write(&f, b"").unwrap();
        let e = add_entropy(f.to_str().unwrap(), &[1; 16]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY), "{e}");
        std::fs::remove_file(&f).unwrap();
        assert!(add_entropy("/nonexistent/random", &[1]).is_err());
    }

    #[test]
    fn an_empty_refresh_changes_nothing() {
        assert_eq!(apply(&Refresh::default()).unwrap().clock_step_ns, 0);
    }

    fn tempfile_path() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ec1-refresh-test-{}", std::process::id()))
    }
}
