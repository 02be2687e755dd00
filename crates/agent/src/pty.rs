//! Pseudo-terminals for interactive sessions.

use ec1_proto::PtySize;
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

use crate::sys::cvt;

/// Both ends of a new pty. Both are close-on-exec, so no other command inherits them
/// (an inherited slave would keep the master from ever seeing the end).
pub struct Pty {
    pub master: File,
    pub slave: File,
}

/// Opens a pty of `size`.
pub fn open(size: PtySize) -> io::Result<Pty> {
    // SAFETY: posix_openpt returns a new fd or -1; we take ownership at once.
    let m = cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: `m` is a freshly opened fd that nothing else owns.
    let master = unsafe { File::from_raw_fd(m) };
    // SAFETY: grantpt/unlockpt only act on the master fd we own.
    cvt(unsafe { libc::grantpt(m) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::unlockpt(m) })?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is a writable buffer of the length passed.
    let r = unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated path.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is a valid C string; open returns a new fd or -1.
    let s = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `s` is a freshly opened fd that nothing else owns.
    let slave = unsafe { File::from_raw_fd(s) };
    resize(&master, size)?;
    Ok(Pty { master, slave })
}

/// Sets the terminal size (the kernel sends `SIGWINCH` to the foreground group).
pub fn resize(master: &File, size: PtySize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from the pointer, which is valid.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// In the child, between fork and exec: a new session whose controlling terminal is
/// the pty on fd 0. Only async-signal-safe calls.
pub fn make_controlling_terminal() -> io::Result<()> {
    // SAFETY: setsid has no memory effects; the child is single-threaded here.
    cvt(unsafe { libc::setsid() })?;
    // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is the pty slave.
    cvt(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_opens_and_resizes() {
        let p = open(PtySize {
            rows: 30,
            cols: 100,
        })
        .unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a `winsize` into the valid pointer.
        unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!((ws.ws_row, ws.ws_col), (30, 100));
        resize(&p.master, PtySize { rows: 5, cols: 6 }).unwrap();
        // SAFETY: as above.
        unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!((ws.ws_row, ws.ws_col), (5, 6));
        // SAFETY: isatty only inspects the fd.
        assert_eq!(unsafe { libc::isatty(p.slave.as_raw_fd()) }, 1);
    }
}
