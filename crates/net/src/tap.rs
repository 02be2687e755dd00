//! Attaching to an existing host TAP device.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::NetError;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens the TAP device `name` (non-blocking, Ethernet frames without a packet-info
/// header). The device must exist: a missing one would be created by `TUNSETIFF` when
/// ec1 runs as root, which would hide a typo behind a device nobody configured.
pub fn open_tap(name: &str) -> Result<File, NetError> {
    let err = |reason: String| NetError::Tap {
        name: name.into(),
        reason,
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0']) {
        return Err(err("not a valid interface name".into()));
    }
    let sys = std::path::Path::new("/sys/class/net").join(name);
    if !sys.exists() {
        return Err(err(format!(
            "no such interface here (create it with `ip tuntap add {name} mode tap`)"
        )));
    }
    if !sys.join("tun_flags").exists() {
        return Err(err("not a TAP device".into()));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| err(format!("opening /dev/net/tun: {e}")))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an `ifreq` (name and flags) from a valid, live struct of
    // at least that size; the descriptor is ours.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(err(format!(
            "attaching to it: {} (is another program using it?)",
            std::io::Error::last_os_error()
        )));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_wrong_devices_are_named() {
        let e = open_tap("ec1nosuchtap0").unwrap_err().to_string();
        assert!(e.contains("ip tuntap add"), "{e}");
        assert!(open_tap("lo")
            .unwrap_err()
            .to_string()
            .contains("not a TAP"));
        assert!(open_tap("").is_err());
        assert!(open_tap("a/b").is_err());
        assert!(open_tap(&"x".repeat(16)).is_err());
    }
}
