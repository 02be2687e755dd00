//! A console log of bounded size: QEMU writes the guest's serial output to one end of a
//! socket pair, and a thread here appends it to a file that it trims to its last
//! `max_bytes` whenever it grows past twice that. A guest that floods its console
//! costs the host at most `2 * max_bytes` of disk and a 64 KiB buffer.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::drain::{read_chunks, ReaderGuard};

/// Appends to `path`, keeping it within `2 * max_bytes`.
pub(crate) struct CappedLog {
    file: File,
    len: u64,
    max_bytes: u64,
}

impl CappedLog {
    pub fn create(path: &Path, max_bytes: u64) -> std::io::Result<CappedLog> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(CappedLog {
            file,
            len: 0,
            max_bytes: max_bytes.max(1),
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // A write larger than the cap keeps only its end.
        let keep = &bytes[bytes.len().saturating_sub(self.max_bytes as usize)..];
        if self.len + keep.len() as u64 > 2 * self.max_bytes {
            self.trim(self.max_bytes.saturating_sub(keep.len() as u64))?;
        }
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(keep)?;
        self.len += keep.len() as u64;
        Ok(())
    }

    /// Keeps the last `keep` bytes of the file, moved to its start.
    fn trim(&mut self, keep: u64) -> std::io::Result<()> {
        let keep = keep.min(self.len);
        let mut tail = vec![0u8; keep as usize];
        self.file.seek(SeekFrom::Start(self.len - keep))?;
        self.file.read_exact(&mut tail)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&tail)?;
        self.file.set_len(keep)?;
        self.len = keep;
        Ok(())
    }
}

/// Copies what QEMU writes to `socket` into a [`CappedLog`] at `path` until QEMU
/// closes its end.
pub(crate) fn spawn_writer(
    mut socket: UnixStream,
    path: PathBuf,
    max_bytes: u64,
    guard: ReaderGuard,
) -> std::io::Result<JoinHandle<()>> {
    let mut log = CappedLog::create(&path, max_bytes)?;
    std::thread::Builder::new()
        .name("ec1-console".into())
        .spawn(move || {
            let _guard = guard;
            // The guest's console bytes pass through here. Without the filter the
            // thread still drains (QEMU must never block on its console).
            if let Err(e) = ec1_seccomp::confine(ec1_seccomp::Role::Device) {
                log::error!("console log: {e}");
            }
            read_chunks(&mut socket, &mut vec![0u8; 64 * 1024], |chunk| {
                if let Err(e) = log.write(chunk) {
                    log::warn!("console log {}: {e}", path.display());
                    // Keep draining so that QEMU never blocks on its console.
                }
            });
        })
}

/// Where a rate-limited serial console goes: a file or FIFO opened for appending, or
/// ec1's stdout.
fn limited_sink(to: Option<&Path>) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match to {
        Some(p) => Box::new(File::options().append(true).create(true).open(p)?),
        None => Box::new(std::io::stdout()),
    })
}

/// Copies what QEMU writes to `socket` to `to` (ec1's stdout without one) through
/// Firecracker's serial rate limiter: bytes beyond `bucket` are dropped and counted in
/// `dropped`, never held, so the guest never stalls on its console.
pub(crate) fn spawn_limited(
    mut socket: UnixStream,
    to: Option<PathBuf>,
    bucket: ec1_engine::TokenBucket,
    dropped: ec1_engine::DroppedBytes,
    guard: ReaderGuard,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ec1-serial".into())
        .spawn(move || {
            let _guard = guard;
            // Opened here, as QEMU would open it: a FIFO waits for its reader.
            let mut sink = match limited_sink(to.as_deref()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::warn!("serial output: {e}");
                    None
                }
            };
            if let Err(e) = ec1_seccomp::confine(ec1_seccomp::Role::Device) {
                log::error!("serial output: {e}");
            }
            let mut limit = ec1_net::Bucket::new(&bucket, std::time::Instant::now());
            read_chunks(&mut socket, &mut vec![0u8; 64 * 1024], |chunk| {
                let pass = limit.take_up_to(chunk.len() as u64, std::time::Instant::now()) as usize;
                dropped.add((chunk.len() - pass) as u64);
                if let Some(w) = sink.as_mut() {
                    if pass > 0
                        && w.write_all(&chunk[..pass])
                            .and_then(|()| w.flush())
                            .is_err()
                    {
                        // A reader that went away: keep draining, write no more.
                        sink = None;
                    }
                }
            });
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_keeps_only_the_end_within_twice_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.log");
        let mut log = CappedLog::create(&p, 1000).unwrap();
        let mut all = Vec::new();
        for i in 0..5000u32 {
            let line = format!("line {i}\n");
            all.extend_from_slice(line.as_bytes());
            log.write(line.as_bytes()).unwrap();
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 2000, "{len}");
        }
        let kept = std::fs::read(&p).unwrap();
        assert!(kept.len() >= 1000);
        assert!(
            all.ends_with(&kept),
            "the file is the end of what was written"
        );
        // A single write beyond the cap keeps its last bytes.
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        log.write(&big).unwrap();
        let kept = std::fs::read(&p).unwrap();
        assert!(kept.len() <= 2000 && kept.ends_with(&big[big.len() - 1000..]));
    }

    #[test]
    fn the_writer_drains_the_socket_into_the_log() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.log");
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let readers = std::sync::Arc::new(crate::drain::Readers::default());
        let t = spawn_writer(ours, p.clone(), 100, readers.enter()).unwrap();
        for _ in 0..100 {
            qemu.write_all(b"0123456789").unwrap();
        }
        drop(qemu);
        t.join().unwrap();
        let kept = std::fs::read(&p).unwrap();
        assert!(kept.len() <= 200 && kept.len() >= 100, "{}", kept.len());
        assert!(kept.ends_with(b"0123456789"));
        assert!(spawn_writer(
            UnixStream::pair().unwrap().0,
            d.path().join("no/such"),
            1,
            readers.enter()
        )
        .is_err());
    }
    #[test]
    fn the_limited_serial_passes_its_bucket_and_counts_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("serial.out");
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let readers = std::sync::Arc::new(crate::drain::Readers::default());
        let dropped = ec1_engine::DroppedBytes::default();
        let bucket = ec1_engine::TokenBucket {
            size: 1000,
            one_time_burst: 0,
            refill_time_ms: 60_000,
        };
        let t = spawn_limited(
            ours,
            Some(p.clone()),
            bucket,
            dropped.clone(),
            readers.enter(),
        )
        .unwrap();
        // 10,000 bytes at once: the bucket's 1,000 pass (its refill is a minute away).
        qemu.write_all(&[b'x'; 10_000]).unwrap();
        drop(qemu);
        t.join().unwrap();
        let out = std::fs::read(&p).unwrap();
        assert!((1000..1010).contains(&out.len()), "{}", out.len());
        assert_eq!(dropped.get() + out.len() as u64, 10_000);
        // No file to write to: still drained and counted.
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let dropped = ec1_engine::DroppedBytes::default();
        let t = spawn_limited(
            ours,
            Some(d.path().join("no/such/dir")),
            bucket,
            dropped.clone(),
            readers.enter(),
        )
        .unwrap();
        qemu.write_all(&[b'y'; 5000]).unwrap();
        drop(qemu);
        t.join().unwrap();
        assert!(dropped.get() >= 4000);
    }
}
