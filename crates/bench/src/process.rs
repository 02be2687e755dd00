//! Child processes the benchmark starts itself (plain QEMU, `ec1 --api-sock`, another
//! VMM): spawning with inherited descriptors, ending them, and finding `ec1`.

use crate::error::BenchError;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Spawns `cmd` so that the child inherits `fds` (under their numbers) and dies with
/// the benchmark: a benchmark killed with Ctrl-C must not leave VMs running.
pub fn spawn_with_fds(cmd: &mut Command, fds: &[RawFd]) -> std::io::Result<Child> {
    let fds = fds.to_vec();
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (fcntl, prctl) on plain integers, allocating
    // nothing (the Vec was built before fork).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `signal` to `child` unless it has exited already.
fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill() only sends a signal; the pid is our own unreaped child, so it
    // cannot have been reused by another process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Ends `child` as an operator would: SIGTERM, then SIGKILL after `grace`. Returns how
/// long it took until the process had exited (and was reaped).
pub fn terminate(child: &mut Child, grace: Duration) -> Result<Duration, BenchError> {
    let t = Instant::now();
    if child
        .try_wait()
        .map_err(BenchError::io("checking a child process"))?
        .is_some()
    {
        return Ok(t.elapsed());
    }
    signal(child, libc::SIGTERM);
    loop {
        if child
            .try_wait()
            .map_err(BenchError::io("waiting for a child process"))?
            .is_some()
        {
            return Ok(t.elapsed());
        }
        if t.elapsed() > grace {
            signal(child, libc::SIGKILL);
            child
                .wait()
                .map_err(BenchError::io("waiting for a killed child process"))?;
            return Ok(t.elapsed());
        }
        std::thread::sleep(Duration::from_micros(250));
    }
}

/// The ec1 binary to drive: `explicit`, else this very program when it is `ec1`
/// (`ec1 bench` runs the `ec1` it is part of).
pub fn ec1_binary(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(BenchError::Ec1NotFound {
                why: format!("{} is not a file", p.display()),
            })
        };
    }
    let me = std::env::current_exe().map_err(|e| BenchError::Ec1NotFound { why: e.to_string() })?;
    if me.file_name().is_some_and(|n| n == "ec1") {
        Ok(me)
    } else {
        Err(BenchError::Ec1NotFound {
            why: format!("this program is {}, not ec1", me.display()),
        })
    }
}

/// The last `lines` lines of a text file (empty if it cannot be read).
pub fn tail_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn passed_descriptors_are_inherited() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("echo hi >&{fd}"));
        let mut child = spawn_with_fds(&mut c, &[fd]).unwrap();
        drop(theirs);
        assert!(child.wait().unwrap().success());
        let mut s = String::new();
        use std::io::Read;
        (&ours).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi\n");
    }

    #[test]
    fn terminate_ends_a_child_and_escalates() {
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        let d = terminate(&mut c, Duration::from_secs(5)).unwrap();
        assert!(d < Duration::from_secs(5));
        // Already exited: returns at once.
        assert!(terminate(&mut c, Duration::from_secs(5)).unwrap() < Duration::from_millis(100));
        // A child that ignores SIGTERM is killed after the grace period.
        let mut c = Command::new("sh")
            .arg("-c")
            .arg("trap '' TERM; sleep 30")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let d = terminate(&mut c, Duration::from_millis(100)).unwrap();
        assert!(d >= Duration::from_millis(100), "{d:?}");
    }

    #[test]
    fn ec1_binary_needs_a_real_path_or_ec1_itself() {
        assert!(matches!(
            ec1_binary(Some(Path::new("/nonexistent/ec1"))),
            Err(BenchError::Ec1NotFound { .. })
        ));
        assert_eq!(
            ec1_binary(Some(Path::new("/bin/sh"))).unwrap(),
            PathBuf::from("/bin/sh")
        );
        // The test harness is not ec1.
        let e = ec1_binary(None).unwrap_err().to_string();
        assert!(e.contains("not ec1") && e.contains("--ec1"), "{e}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail_file(&p, 2), "b\nc");
        assert_eq!(tail_file(&dir.path().join("none"), 2), "");
    }
}
