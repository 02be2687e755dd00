//! The agent's end of the channel: a named virtio-serial port.
//!
//! The guest finds it by name (there is no udev): `/sys/class/virtio-ports/*/name`
//! holds each port's name, the directory name is the device (`/dev/vportNpM`).
//! `read()` returns 0 while no host is connected; the port's wait queue is woken when
//! one connects, which edge-triggered epoll reports without polling in a loop.

use crate::server::Link;
use crate::sys::cvt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The device node of the port named `name`, looked up under `sysfs_ports` (normally
/// `/sys/class/virtio-ports`) and `dev` (normally `/dev`).
pub fn find_port(sysfs_ports: &Path, dev: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sysfs_ports).ok()?;
    for e in entries.flatten() {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim_end() == name {
            return Some(dev.join(e.file_name()));
        }
    }
    None
}

/// Waits up to `timeout` for the port to appear (drivers may still be probing).
pub fn wait_for_port(name: &str, timeout: Duration) -> io::Result<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = find_port(
            Path::new("/sys/class/virtio-ports"),
            Path::new("/dev"),
            name,
        ) {
            if p.exists() {
                return Ok(p);
            }
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no virtio-serial port named {name:?} after {timeout:?}: was the guest started \
                     with an agent socket (and a kernel with CONFIG_VIRTIO_CONSOLE)?"
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An open port: reads, and waits for a host after end-of-stream.
pub struct Port {
    file: File,
    epoll: OwnedFd,
}

impl Port {
    pub fn open(path: &Path) -> io::Result<Port> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        // SAFETY: epoll_create1 returns a new fd or -1.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `ep` is fresh and owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both fds are valid; `ev` is a valid event the kernel copies.
        cvt(unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                file.as_raw_fd(),
                &mut ev,
            )
        })?;
        Ok(Port { file, epoll })
    }

    /// A second handle for writing (the writer thread owns it).
    pub fn writer(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

impl Read for Port {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Link for Port {
    fn wait_reconnect(&mut self) -> bool {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a valid buffer for one event. The 1 s timeout is a safety net
        // against a missed edge; the caller reads again either way.
        unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut ev, 1, 1000) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_found_by_name() {
        let d = std::env::temp_dir().join(format!("ec1-ports-{}", std::process::id()));
        for (dir, name) in [("vport0p1", "other\n"), ("vport0p2", "ec1.agent\n")] {
            std::fs::create_dir_all(d.join("sys").join(dir)).unwrap();
            std::fs::write(d.join("sys").join(dir).join("name"), name).unwrap();
        }
        assert_eq!(
            find_port(&d.join("sys"), Path::new("/dev"), "ec1.agent"),
            Some(PathBuf::from("/dev/vport0p2"))
        );
        assert_eq!(find_port(&d.join("sys"), Path::new("/dev"), "nope"), None);
        assert_eq!(find_port(&d.join("missing"), Path::new("/dev"), "x"), None);
        std::fs::remove_dir_all(&d).unwrap();
        let e = wait_for_port("ec1.test.absent", Duration::from_millis(30)).unwrap_err();
        assert!(e.to_string().contains("CONFIG_VIRTIO_CONSOLE"), "{e}");
    }

    #[test]
    fn a_port_over_a_fifo_reads_and_waits() {
        // A FIFO stands in for the device: open, read, and a bounded wait.
        let d = std::env::temp_dir().join(format!("ec1-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("p");
        let c = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
        // SAFETY: valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut p = Port::open(&f).unwrap();
        let mut w = p.writer().unwrap();
        std::io::Write::write_all(&mut w, b"hi").unwrap();
        let mut b = [0u8; 8];
        assert_eq!(p.read(&mut b).unwrap(), 2);
        let t = Instant::now();
        assert!(p.wait_reconnect());
        assert!(t.elapsed() < Duration::from_secs(3));
        std::fs::remove_dir_all(&d).unwrap();
        assert!(Port::open(&d.join("gone")).is_err());
    }
}
