//! ec1's snapshot file on the QEMU engine (Firecracker's `snapshot_path`).
//!
//! ```text
//! offset  size  field
//!      0     8  magic "EC1SNAP\n"
//!      8     2  format major version (u16 LE); a reader refuses other majors
//!     10     2  format minor version (u16 LE); additions a reader may ignore
//!     12     4  header length (u32 LE) = 128
//!     16     4  description length (u32 LE)
//!     20     4  reserved, 0
//!     24     8  device-state offset (u64 LE), a multiple of 4096
//!     32     8  device-state length (u64 LE)
//!     40    24  reserved, 0
//!     64    32  SHA-256 over bytes 0..64, the description and the device state
//!     96    32  reserved, 0
//!    128     n  description: JSON of the machine (see `machine.rs`)
//!      …        zero padding up to the device-state offset
//! offset     m  device state: QEMU's migration stream, written with the
//!               `x-ignore-shared` capability (guest RAM is not in it: it is the
//!               separate memory file, Firecracker's `mem_file_path`)
//! ```
//!
//! The file ends exactly at the end of the device state. A file that is shorter
//! (truncated), does not start with the magic (foreign, e.g. a Firecracker snapshot),
//! has another major version, or whose checksum does not match (corrupted) is refused
//! before anything is started. QEMU reads the device state in place (its `file`
//! migration transport takes an offset), so a restore copies nothing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::machine::Machine;

/// The first bytes of every ec1 snapshot file.
pub const MAGIC: &[u8; 8] = b"EC1SNAP\n";
/// The format version this build writes (and the major version it reads). v2: the
/// agent channel's virtio-serial device has 2 ports, not QEMU's default 31, so a v1
/// file's device state would not load into the machine this build recreates. v2.1:
/// interfaces carry their metadata service's address and settings.
pub const FORMAT_MAJOR: u16 = 2;
pub const FORMAT_MINOR: u16 = 1;
/// The fixed header's length.
pub const HEADER_LEN: usize = 128;
/// Where the device state may start: page-aligned, as QEMU's file transport likes.
const ALIGN: u64 = 4096;
/// The longest description accepted (it is a few hundred bytes in practice).
const MAX_DESCRIPTION: usize = 1 << 20;

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("cannot read snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an ec1 snapshot (it does not start with ec1's snapshot header); \
             snapshots from Firecracker or other tools cannot be loaded by ec1"
    )]
    Foreign { path: PathBuf },
    #[error("snapshot {path} has format version v{major}.{minor}, but this ec1 reads v{FORMAT_MAJOR}.x; \
             use the ec1 version that made it")]
    Version {
        path: PathBuf,
        major: u16,
        minor: u16,
    },
    #[error("snapshot {path} is truncated: {what} (was it copied completely?)")]
    Truncated { path: PathBuf, what: String },
    #[error("snapshot {path} is corrupted: {what}")]
    Corrupted { path: PathBuf, what: String },
}

impl From<SnapshotFileError> for ec1_engine::EngineError {
    fn from(e: SnapshotFileError) -> Self {
        ec1_engine::EngineError::InvalidSpec(e.to_string())
    }
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub major: u16,
    pub minor: u16,
    pub description_len: u32,
    pub state_offset: u64,
    pub state_len: u64,
    pub digest: [u8; 32],
}

impl Header {
    /// The header for a description of `description_len` bytes (digest and state
    /// length still to be filled in).
    pub fn new(description_len: usize) -> Header {
        let end = HEADER_LEN as u64 + description_len as u64;
        Header {
            major: FORMAT_MAJOR,
            minor: FORMAT_MINOR,
            description_len: description_len as u32,
            state_offset: end.div_ceil(ALIGN) * ALIGN,
            state_len: 0,
            digest: [0; 32],
        }
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.description_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.state_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.state_len.to_le_bytes());
        b[64..96].copy_from_slice(&self.digest);
        b
    }

    /// Parses the first [`HEADER_LEN`] bytes of a file of `file_len` bytes, checking
    /// everything but the digest.
    pub fn decode(path: &Path, b: &[u8], file_len: u64) -> Result<Header, SnapshotFileError> {
        let path = path.to_path_buf();
        if b.len() < MAGIC.len() || &b[..MAGIC.len()] != MAGIC {
            if MAGIC.starts_with(b) {
                return Err(SnapshotFileError::Truncated {
                    path,
                    what: format!("it is only {} bytes long", b.len()),
                });
            }
            return Err(SnapshotFileError::Foreign { path });
        }
        if b.len() < 12 {
            return Err(SnapshotFileError::Truncated {
                path,
                what: format!("it is only {} bytes long", b.len()),
            });
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let (major, minor) = (u16_at(8), u16_at(10));
        if major != FORMAT_MAJOR {
            return Err(SnapshotFileError::Version { path, major, minor });
        }
        if b.len() < HEADER_LEN {
            return Err(SnapshotFileError::Truncated {
                path,
                what: format!(
                    "it is {} bytes long, shorter than the {HEADER_LEN}-byte header",
                    b.len()
                ),
            });
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let corrupted = |what: String| SnapshotFileError::Corrupted {
            path: path.clone(),
            what,
        };
        if u32_at(12) as usize != HEADER_LEN {
            return Err(corrupted(format!("header length {}", u32_at(12))));
        }
        let h = Header {
            major,
            minor,
            description_len: u32_at(16),
            state_offset: u64_at(24),
            state_len: u64_at(32),
            digest: b[64..96].try_into().unwrap(),
        };
        if h.description_len as usize > MAX_DESCRIPTION
            || h.state_offset < HEADER_LEN as u64 + u64::from(h.description_len)
        {
            return Err(corrupted(format!(
                "impossible layout (description {} bytes, device state at {})",
                h.description_len, h.state_offset
            )));
        }
        let end = h
            .state_offset
            .checked_add(h.state_len)
            .ok_or_else(|| corrupted("device state length overflows".into()))?;
        if file_len < end {
            return Err(SnapshotFileError::Truncated {
                path,
                what: format!("{file_len} bytes where the header promises {end}"),
            });
        }
        if file_len > end {
            return Err(corrupted(format!(
                "{} bytes after the end of the device state",
                file_len - end
            )));
        }
        Ok(h)
    }
}

/// The digest of a snapshot: `head` (the header's bytes 0..64 as stored, reserved
/// fields included), then the description, then the device state, read from `file`.
fn digest(
    head: &[u8],
    header: &Header,
    description: &[u8],
    file: &mut File,
) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(&head[..64]);
    h.update(description);
    file.seek(SeekFrom::Start(header.state_offset))?;
    let mut left = header.state_len;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        file.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finalize().into())
}

/// A validated snapshot file.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub header: Header,
    pub machine: Machine,
}

impl SnapshotFile {
    /// Reads and checks `path`: header, length, digest, description.
    pub fn open(path: &Path) -> Result<SnapshotFile, SnapshotFileError> {
        let io = |source| SnapshotFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut head = Vec::with_capacity(HEADER_LEN);
        (&mut f)
            .take(HEADER_LEN as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        let header = Header::decode(path, &head, len)?;
        let mut description = vec![0u8; header.description_len as usize];
        f.read_exact(&mut description).map_err(io)?;
        if digest(&head, &header, &description, &mut f).map_err(io)? != header.digest {
            return Err(SnapshotFileError::Corrupted {
                path: path.to_path_buf(),
                what: "its checksum does not match its content".into(),
            });
        }
        let machine =
            serde_json::from_slice(&description).map_err(|e| SnapshotFileError::Corrupted {
                path: path.to_path_buf(),
                what: format!("unreadable machine description: {e}"),
            })?;
        Ok(SnapshotFile {
            path: path.to_path_buf(),
            header,
            machine,
        })
    }

    /// The format version as `--describe-snapshot` prints it, e.g. `v2.1.0`.
    pub fn version_string(&self) -> String {
        format!("v{}.{}.0", self.header.major, self.header.minor)
    }
}

/// Writes a snapshot file in two steps around QEMU: [`Writer::create`] lays down the
/// header and description, QEMU appends its device state at
/// [`Writer::state_offset`], then [`Writer::finish`] seals the file with its length and
/// digest.
#[derive(Debug)]
pub struct Writer {
    file: File,
    header: Header,
    description: Vec<u8>,
}

impl Writer {
    /// Creates `path` (truncating it) with the header and `machine`.
    pub fn create(path: &Path, machine: &Machine) -> std::io::Result<Writer> {
        let description = serde_json::to_vec_pretty(machine).map_err(std::io::Error::other)?;
        let header = Header::new(description.len());
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.write_all(&header.encode())?;
        file.write_all(&description)?;
        file.set_len(header.state_offset)?;
        Ok(Writer {
            file,
            header,
            description,
        })
    }

    /// Where the device state goes.
    pub fn state_offset(&self) -> u64 {
        self.header.state_offset
    }

    /// Seals the file once the device state has been written after the offset.
    pub fn finish(mut self) -> std::io::Result<Header> {
        let len = self.file.metadata()?.len();
        self.header.state_len = len.saturating_sub(self.header.state_offset);
        if self.header.state_len == 0 {
            return Err(std::io::Error::other("QEMU wrote no device state"));
        }
        let head = self.header.encode();
        self.header.digest = digest(&head, &self.header, &self.description, &mut self.file)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&self.header.encode())?;
        self.file.sync_all()?;
        Ok(self.header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::machine::{DeviceSet, Machine};

    fn machine() -> Machine {
        Machine {
            engine: "qemu".into(),
            accel: "tcg".into(),
            qemu_version: "10.0.2".into(),
            id: "vm".into(),
            vcpus: 1,
            smt: false,
            mem_mib: 128,
            drives: vec![],
            agent_channel: true,
            devices: DeviceSet::default(),
            arch: "x86_64".into(),
            kernel: "/k".into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
        }
    }

    /// A sealed snapshot with `state` as its device state.
    fn write(dir: &Path, state: &[u8]) -> PathBuf {
        let p = dir.join("snap");
        let w = Writer::create(&p, &machine()).unwrap();
        let mut f = File::options().append(true).open(&p).unwrap();
        assert_eq!(f.metadata().unwrap().len(), w.state_offset());
        f.write_all(state).unwrap();
        w.finish().unwrap();
        p
    }

    fn refused(p: &Path) -> SnapshotFileError {
        SnapshotFile::open(p).unwrap_err()
    }

    #[test]
    fn a_written_snapshot_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), b"QEVM device state");
        let s = SnapshotFile::open(&p).unwrap();
        assert_eq!(s.machine, machine());
        assert_eq!(s.header.state_offset % ALIGN, 0);
        assert_eq!(s.header.state_len, 17);
        assert_eq!(s.version_string(), "v2.1.0");
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(
            &bytes[s.header.state_offset as usize..],
            b"QEVM device state"
        );
    }

    #[test]
    fn truncated_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[7u8; 5000]);
        let full = std::fs::read(&p).unwrap();
        for cut in [0, 5, 10, 100, HEADER_LEN + 3, 4096, full.len() - 1] {
            std::fs::write(&p, &full[..cut]).unwrap();
            let e = refused(&p);
            assert!(
                matches!(e, SnapshotFileError::Truncated { .. }),
                "{cut}: {e}"
            );
            assert!(e.to_string().contains("truncated"), "{e}");
        }
    }

    #[test]
    fn corrupted_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[7u8; 5000]);
        let full = std::fs::read(&p).unwrap();
        // A flipped bit anywhere the digest covers: in the lengths, the description, the
        // state.
        for at in [20, 40, HEADER_LEN + 2, full.len() - 1, 64] {
            let mut b = full.clone();
            b[at] ^= 0x10;
            std::fs::write(&p, &b).unwrap();
            let e = refused(&p);
            assert!(
                matches!(e, SnapshotFileError::Corrupted { .. }),
                "{at}: {e}"
            );
        }
        let mut longer = full.clone();
        longer.push(0);
        std::fs::write(&p, &longer).unwrap();
        assert!(matches!(refused(&p), SnapshotFileError::Corrupted { .. }));
        // A lying layout.
        let mut b = full.clone();
        b[24..32].copy_from_slice(&1u64.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        assert!(refused(&p).to_string().contains("impossible layout"));
        let mut b = full.clone();
        b[12] = 99;
        std::fs::write(&p, &b).unwrap();
        assert!(refused(&p).to_string().contains("header length"));
        let mut b = full;
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        assert!(refused(&p).to_string().contains("overflows"));
    }

    #[test]
    fn a_valid_digest_over_a_bad_description_is_still_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("snap");
        let description = b"{not json".to_vec();
        let header = Header::new(description.len());
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all(&header.encode()).unwrap();
        f.write_all(&description).unwrap();
        f.set_len(header.state_offset).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(b"state").unwrap();
        let w = Writer {
            file: f,
            header,
            description,
        };
        w.finish().unwrap();
        let e = refused(&p);
        assert!(
            e.to_string().contains("unreadable machine description"),
            "{e}"
        );
    }

    #[test]
    fn foreign_and_wrong_version_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), b"state");
        let mut b = std::fs::read(&p).unwrap();
        // A file from an older ec1 (format v1.0).
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b[10..12].copy_from_slice(&0u16.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let e = refused(&p);
        assert!(
            matches!(e, SnapshotFileError::Version { major: 1, .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("v1.0") && e.to_string().contains("v2.x"),
            "{e}"
        );
        // A Firecracker snapshot starts with its own magic.
        std::fs::write(&p, [0x0au8; 300]).unwrap();
        assert!(matches!(refused(&p), SnapshotFileError::Foreign { .. }));
        assert!(matches!(
            refused(&d.path().join("missing")),
            SnapshotFileError::Io { .. }
        ));
        let e: ec1_engine::EngineError = refused(&p).into();
        assert!(e.to_string().contains("not an ec1 snapshot"), "{e}");
    }

    #[test]
    fn a_writer_without_state_fails() {
        let d = tempfile::tempdir().unwrap();
        let w = Writer::create(&d.path().join("s"), &machine()).unwrap();
        assert!(w.finish().is_err());
    }
}
