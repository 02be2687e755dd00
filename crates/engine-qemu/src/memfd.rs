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
    memfd(mem_mib, libc::MFD_CLOEXEC)
}

/// The host's `/proc/meminfo` (empty if unreadable).
pub(crate) fn meminfo() -> String {
    std::fs::read_to_string("/proc/meminfo").unwrap_or_default()
}

/// The free 2 MiB huge pages in `meminfo`, if its default huge page size is 2 MiB.
fn free_2m_pages(meminfo: &str) -> Option<u64> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    (field("Hugepagesize:")? == 2048).then(|| field("HugePages_Free:"))?
}

/// A memfd of `mem_mib` MiB on 2 MiB huge pages, refused with what the host lacks
/// (`meminfo`: `/proc/meminfo`) when its pool cannot hold the guest: QEMU would
/// otherwise fail to map it, or the guest would die at its first touch of a page the
/// pool cannot give.
pub(crate) fn guest_ram_huge(mem_mib: u32, meminfo: &str) -> Result<OwnedFd, EngineError> {
    let need = u64::from(mem_mib).div_ceil(2);
    match free_2m_pages(meminfo) {
        Some(free) if free >= need => {}
        found => {
            return Err(EngineError::InvalidSpec(format!(
                "huge_pages 2M: the guest's {mem_mib} MiB need {need} free 2 MiB huge pages and the host has {} (HugePages_Free in /proc/meminfo); reserve them first, e.g. `echo {need} > /proc/sys/vm/nr_hugepages` as root",
                found.map_or_else(|| "no 2 MiB huge page pool".to_string(), |f| f.to_string())
            )))
        }
    }
    memfd(
        mem_mib,
        libc::MFD_CLOEXEC | libc::MFD_HUGETLB | libc::MFD_HUGE_2MB,
    )
}

fn memfd(mem_mib: u32, flags: libc::c_uint) -> Result<OwnedFd, EngineError> {
    const NAME: &CStr = c"ec1-guest-ram";
    // SAFETY: memfd_create with a NUL-terminated name and valid flags; on success the
    // returned descriptor is new and owned by nobody else.
    let fd = unsafe { libc::memfd_create(NAME.as_ptr(), flags) };
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
    #[test]
    fn huge_page_ram_is_refused_with_what_the_pool_lacks() {
        let info = "MemTotal: 100 kB\nHugePages_Total:       4\nHugePages_Free:        3\nHugepagesize:       2048 kB\n";
        assert_eq!(free_2m_pages(info), Some(3));
        let e = guest_ram_huge(8, info).unwrap_err().to_string();
        assert!(
            e.contains("need 4 free 2 MiB huge pages and the host has 3")
                && e.contains("nr_hugepages"),
            "{e}"
        );
        let one_gig = info.replace("2048 kB", "1048576 kB");
        assert_eq!(free_2m_pages(&one_gig), None);
        let e = guest_ram_huge(2, &one_gig).unwrap_err().to_string();
        assert!(e.contains("no 2 MiB huge page pool"), "{e}");
        assert_eq!(free_2m_pages(""), None);
    }
}
