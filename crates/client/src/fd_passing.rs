//! Handing a connected socket to another process (`SCM_RIGHTS`): a pool keeps each warm
//! clone's agent connection open and gives it to the claimant with its answer, so the
//! claimant skips connecting to the agent (the guest noticing a new host connection
//! costs milliseconds under TCG; a hello on an open connection is one round trip).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Room for one descriptor's control message.
const CMSG_ROOM: usize = 64;

/// Sends all of `bytes` on `stream`, with `fd` attached to the first byte.
pub fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: RawFd) -> io::Result<()> {
    let mut cbuf = [0u8; CMSG_ROOM];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: the control buffer is CMSG_ROOM bytes, more than CMSG_SPACE(one int), so
    // the first header and its data lie inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` points at live buffers (iov, control) for the call's duration.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // The descriptor went with the first byte; the rest, if any, is plain data.
    let mut rest = &bytes[n as usize..];
    while !rest.is_empty() {
        let n = io::Write::write(&mut &*stream, rest)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        rest = &rest[n..];
    }
    Ok(())
}

/// Reads one line (up to and including `\n`, at most `max` bytes) from `stream`, and
/// the descriptor that came with it, if one did. Descriptors beyond the first are
/// closed; a line longer than `max` is an error.
pub fn recv_line_with_fd(stream: &UnixStream, max: usize) -> io::Result<(String, Option<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fd: Option<OwnedFd> = None;
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        let mut cbuf = [0u8; CMSG_ROOM];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            // Never past the line: what follows it is not ours to take.
            iov_len: 1,
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = CMSG_ROOM as _;
        // SAFETY: `msg` points at live buffers for the call's duration.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for got in take_fds(&msg) {
            if fd.is_none() {
                fd = Some(got);
            } // else: dropped, closed
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
        if line.len() > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {max} bytes"),
            ));
        }
    }
    let line = String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a line that is not UTF-8"))?;
    Ok((line, fd))
}

/// The descriptors in `msg`'s control messages, owned (so closed when dropped).
fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    // SAFETY: the kernel filled `msg`'s control buffer; the CMSG macros walk it within
    // msg_controllen, and each SCM_RIGHTS payload holds whole ints, each a descriptor
    // now open in this process that nothing else owns.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    out.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_socket_travels_with_a_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut inner_here, inner_there) = UnixStream::pair().unwrap();
        send_with_fd(&a, b"ok /run/x\n", inner_there.as_raw_fd()).unwrap();
        drop(inner_there);
        (&a).write_all(b"after").unwrap();
        let (line, fd) = recv_line_with_fd(&b, 100).unwrap();
        assert_eq!(line, "ok /run/x\n");
        let mut got = UnixStream::from(fd.expect("a descriptor came along"));
        got.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        inner_here.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        // What followed the line is still in the socket.
        let mut rest = [0u8; 5];
        (&b).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"after");
    }

    #[test]
    fn lines_without_a_descriptor_and_bad_lines() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"empty\n").unwrap();
        let (line, fd) = recv_line_with_fd(&b, 100).unwrap();
        assert_eq!((line.as_str(), fd.is_none()), ("empty\n", true));
        (&a).write_all(&[b'x'; 20]).unwrap();
        let e = recv_line_with_fd(&b, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[0xff, b'\n']).unwrap();
        assert_eq!(
            recv_line_with_fd(&b, 10).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        drop(a);
        assert_eq!(
            recv_line_with_fd(&b, 10).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
