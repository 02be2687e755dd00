//! Snapshots on the QEMU engine: Firecracker's `snapshot_path` + `mem_file_path`.
//!
//! * **Guest RAM** of a guest started for snapshotting is a `memory-backend-file` with
//!   `share=on`: the paused guest's memory is that file. The snapshot's memory file is
//!   a sparse copy of it ([`memfile`]), or the file itself when the caller stops the
//!   guest afterwards (ec1's templates).
//! * **Device state** is QEMU's migration stream with `x-ignore-shared` (RAM left
//!   out), written into ec1's snapshot file after a versioned, checksummed header and
//!   the machine description ([`format`], [`machine`]).
//! * **Restore** starts QEMU with the described machine, RAM mapped `share=off` from
//!   the memory file (private copy-on-write: nothing is read up front, the file is
//!   never written, and any number of clones share its page cache), `-incoming
//!   defer`, then `migrate-incoming` from the snapshot file in place ([`migrate`]).
//!
//! Not supported, with clear errors: `Diff` snapshots (QEMU keeps no dirty log that
//! maps onto Firecracker's diff memory files), snapshots of a guest whose RAM is not a
//! shared file (a guest that was itself restored: its RAM is a private mapping), and
//! guests with a vsock device (QEMU cannot migrate vhost-user-vsock).

pub mod format;
pub mod machine;
pub mod memfile;
pub mod migrate;

use std::path::Path;

pub use format::{SnapshotFile, SnapshotFileError, FORMAT_MAJOR, FORMAT_MINOR};
pub use machine::Machine;

/// What `--describe-snapshot` prints: the snapshot file's format version (`v2.1.0`).
/// Fails, naming the problem, for a file that is not a valid ec1 snapshot.
pub fn describe_snapshot(path: &Path) -> Result<String, SnapshotFileError> {
    Ok(SnapshotFile::open(path)?.version_string())
}
