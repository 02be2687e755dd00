//! Guest RAM in an anonymous shared-memory file (`memfd`), for guests that may be
//! snapshotted later: QEMU maps it shared and leaves it out of the migration stream
//! (`x-ignore-shared`), and the engine keeps a descriptor to save it from. Nothing is
//! left on any filesystem, whatever way ec1 ends: the memory goes with the last
//! descriptor.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};

use ec1_engine::EngineError;

/// A memfd of `mem_mib` MiB (sparse: pages are allocated as the guest touches them).
pub(crate) fn guest_ram(mem_mib: u32) -> Result<OwnedFd, EngineError> {
    const NAME: &CStr = c"ec1-guest-ram";
    // SAFETY: memfd_create with a NUL-terminated name and valid flags; on success the
    // returned descriptor is new and owned by nobody else.
    let fd = unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(EngineError::io(
            "creating the guest RAM (memfd_create)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by no one else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(u64::from(mem_mib) << 20)
        .map_err(|e| EngineError::io(format!("sizing the guest RAM to {mem_mib} MiB"), e))?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn guest_ram_is_a_sparse_file_of_the_asked_size_readable_by_path() {
        let fd = guest_ram(4).unwrap();
        let mut f = File::from(fd);
        assert_eq!(f.metadata().unwrap().len(), 4 << 20);
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"ram").unwrap();
        // The engine saves it through /proc/self/fd, as QEMU maps it.
        use std::os::fd::AsRawFd;
        let mut again = File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        again.seek(SeekFrom::Start(1 << 20)).unwrap();
        let mut buf = [0u8; 3];
        again.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ram");
        assert!(f.metadata().unwrap().blocks() * 512 < 4 << 20);
    }
}
