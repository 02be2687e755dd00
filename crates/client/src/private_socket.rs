//! Sockets that only their owner may use: the agent channel's multiplexer socket
//! (`<api-sock>.agent`) and a pool's socket give whoever connects the power to run
//! commands in a guest, so they are `0600` and each connection's peer must be the same
//! user as this process (or root), checked with `SO_PEERCRED`.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Binds `path` and makes it `0600`.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// The uid of the process at the other end of `stream`.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    // SAFETY: ucred is plain data; all-zero is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Whether `stream`'s peer may use this process's private sockets: the same user, or
/// root.
pub fn peer_is_trusted(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match peer_uid(stream) {
        Ok(uid) => uid == me || uid == 0,
        Err(e) => {
            log::warn!("cannot check a connection's peer: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_sockets_are_0600_and_know_their_peer() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sock");
        let l = bind_private(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let c = UnixStream::connect(&p).unwrap();
        let (s, _) = l.accept().unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(peer_uid(&s).unwrap(), unsafe { libc::geteuid() });
        assert!(peer_is_trusted(&s) && peer_is_trusted(&c));
        assert!(bind_private(&p).is_err(), "already there");
    }

    /// A peer of another user is not trusted: a child that drops to `nobody` connects.
    #[test]
    fn another_users_peer_is_refused() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "the test suite runs as root (README): it takes another uid here"
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sock");
        let l = bind_private(&p).unwrap();
        // The directory and socket must be reachable for the other user to try.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let status = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["/usr/bin/python3", "-c"])
            .arg(format!(
                "import socket,time; s=socket.socket(socket.AF_UNIX); s.connect({:?}); time.sleep(1)",
                p.to_str().unwrap()
            ))
            .spawn()
            .unwrap();
        l.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "nobody connected");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(peer_uid(&s).unwrap(), 65534);
        assert!(!peer_is_trusted(&s));
        let mut status = status;
        status.wait().unwrap();
    }
}
