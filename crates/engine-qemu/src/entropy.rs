//! A rate-limited entropy source for the guest's virtio-rng, served by ec1.
//!
//! QEMU's own limit (`max-bytes` per `period`) has neither Firecracker's one-time
//! burst nor its operations bucket. With a rate limiter, the device's backend is
//! QEMU's `rng-egd` instead: QEMU asks over a socket for up to 255 bytes at a time
//! (`0x02 <len>`, the EGD protocol) and this thread answers from the host's random
//! source once Firecracker's token buckets allow it — `len` bytes from the bandwidth
//! bucket and one operation from the ops bucket per request (a guest request of up to
//! 255 bytes is one). A request the buckets refuse waits, as on Firecracker, which
//! holds the guest's virtio request until they refill.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ec1_engine::RateLimit;

use crate::drain::ReaderGuard;

/// The EGD command for a blocking read of `len` bytes.
const EGD_READ_BLOCKING: u8 = 0x02;

/// Serves QEMU's EGD requests on `socket` under `limit` until QEMU closes it.
pub(crate) fn spawn_egd(
    socket: UnixStream,
    limit: RateLimit,
    guard: ReaderGuard,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ec1-entropy".into())
        .spawn(move || {
            let _guard = guard;
            // The guest drives the requests: confined like the other device threads.
            if let Err(e) = ec1_seccomp::confine(ec1_seccomp::Role::Device) {
                log::error!("entropy: {e}");
                return;
            }
            if let Err(e) = serve(socket, &limit) {
                log::debug!("entropy: {e}");
            }
        })
}

/// Token buckets for bytes and requests.
struct Buckets {
    bytes: Option<ec1_net::Bucket>,
    ops: Option<ec1_net::Bucket>,
}

impl Buckets {
    fn new(limit: &RateLimit, now: Instant) -> Buckets {
        Buckets {
            bytes: limit.bandwidth.map(|b| ec1_net::Bucket::new(&b, now)),
            ops: limit.ops.map(|b| ec1_net::Bucket::new(&b, now)),
        }
    }

    /// Takes one request of `len` bytes, or says how long until both buckets allow
    /// it. The ops token is returned if the bytes must wait, so that a wait never
    /// costs twice.
    fn take(&mut self, len: u64, now: Instant) -> Result<(), Duration> {
        let ops_snapshot = self.ops.clone();
        if let Some(o) = self.ops.as_mut() {
            o.take(1, now)?;
        }
        if let Some(b) = self.bytes.as_mut() {
            if let Err(wait) = b.take(len, now) {
                self.ops = ops_snapshot;
                return Err(wait);
            }
        }
        Ok(())
    }
}

/// Waits up to `wait` for `socket` to close (QEMU exiting); true if it did.
fn closed_within(socket: &UnixStream, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis().max(1)).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    n > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

fn serve(mut socket: UnixStream, limit: &RateLimit) -> std::io::Result<()> {
    let mut buckets = Buckets::new(limit, Instant::now());
    let mut out = [0u8; 255];
    loop {
        let mut header = [0u8; 2];
        match socket.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        if header[0] != EGD_READ_BLOCKING {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected EGD command {:#04x}", header[0]),
            ));
        }
        let len = usize::from(header[1]);
        while let Err(wait) = buckets.take(len as u64, Instant::now()) {
            if closed_within(&socket, wait) {
                return Ok(());
            }
        }
        fill_random(&mut out[..len])?;
        socket.write_all(&out[..len])?;
    }
}

/// Fills `buf` from the kernel's random source.
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_engine::TokenBucket;

    fn bucket(size: u64, burst: u64, ms: u64) -> Option<TokenBucket> {
        Some(TokenBucket {
            size,
            one_time_burst: burst,
            refill_time_ms: ms,
        })
    }

    /// Asks for `len` bytes as QEMU does and reads the answer.
    fn ask(q: &mut UnixStream, len: u8) -> Vec<u8> {
        q.write_all(&[EGD_READ_BLOCKING, len]).unwrap();
        let mut got = vec![0u8; usize::from(len)];
        q.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn requests_are_answered_within_both_buckets_and_wait_beyond_them() {
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let readers = std::sync::Arc::new(crate::drain::Readers::default());
        // 2 requests per 200 ms (after a burst of 1), 10 KiB per 200 ms.
        let limit = RateLimit {
            bandwidth: bucket(10 * 1024, 0, 200),
            ops: bucket(2, 1, 200),
        };
        let t = spawn_egd(ours, limit, readers.enter()).unwrap();
        let t0 = Instant::now();
        let a = ask(&mut qemu, 255);
        assert_ne!(a, vec![0u8; 255], "random bytes");
        ask(&mut qemu, 16);
        ask(&mut qemu, 16);
        assert!(t0.elapsed() < Duration::from_millis(150), "burst + bucket");
        // The fourth waits for the ops bucket to refill a token (~100 ms).
        ask(&mut qemu, 16);
        assert!(
            t0.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t0.elapsed()
        );
        drop(qemu);
        t.join().unwrap();
    }

    #[test]
    fn a_waiting_request_ends_when_qemu_goes_and_bad_commands_end_the_stream() {
        let readers = std::sync::Arc::new(crate::drain::Readers::default());
        // One request per ten minutes: the second waits until the socket closes.
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let limit = RateLimit {
            bandwidth: None,
            ops: bucket(1, 0, 600_000),
        };
        let t = spawn_egd(ours, limit, readers.enter()).unwrap();
        ask(&mut qemu, 8);
        qemu.write_all(&[EGD_READ_BLOCKING, 8]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        drop(qemu);
        t.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        // A command other than a blocking read ends the stream.
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let t = spawn_egd(ours, RateLimit::default(), readers.enter()).unwrap();
        qemu.write_all(&[0x01, 8]).unwrap();
        t.join().unwrap();
        let mut rest = Vec::new();
        qemu.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
