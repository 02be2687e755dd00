//! Running QEMU as a supervised child that never outlives ec1.
//!
//! Each QEMU is spawned by its own supervisor thread, which then waits for it and reaps
//! it. The child asks the kernel for `SIGKILL` when its parent dies
//! (`PR_SET_PDEATHSIG`), and the kernel sends it when the *thread* that forked exits:
//! so the forking thread must be one that lives exactly as long as the child, never a
//! short-lived or pooled thread. The supervisor is that thread.
//!
//! Killing by pid is only safe while the pid cannot be reused, i.e. until the child is
//! reaped. The supervisor first waits for the exit *without* reaping (`WNOWAIT`), marks
//! the child as exited under the same lock [`Child::kill`] takes, and only then reaps.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ec1_engine::EngineError;

/// How much of QEMU's stderr is kept for error messages.
pub(crate) const STDERR_TAIL_BYTES: usize = 4096;

/// How long the supervisor waits for the stderr reader after QEMU exited.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// What to run.
pub(crate) struct SpawnConfig {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Descriptors the child inherits under the same numbers (the parent's copies are
    /// closed once the child runs).
    pub pass_fds: Vec<OwnedFd>,
    /// Give the child ec1's stdin and stdout (the guest console on the terminal).
    /// Otherwise both are `/dev/null` and the child gets its own process group, so that
    /// a Ctrl-C on ec1's terminal reaches ec1, which then stops the guest itself.
    pub inherit_stdio: bool,
    /// The supervisor thread's name.
    pub thread_name: String,
}

/// How the child ended.
#[derive(Debug)]
pub(crate) struct ProcessExit {
    pub status: ExitStatus,
    /// The last [`STDERR_TAIL_BYTES`] of its stderr.
    pub stderr: String,
}

/// A running (or ended) supervised child.
pub(crate) struct Child {
    pid: libc::pid_t,
    /// `true` once the child has exited; from then on its pid may be reaped and reused.
    exited: Arc<Mutex<bool>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Sends `signal` unless the child has already exited. Returns whether it was sent.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        let exited = self.exited.lock().unwrap_or_else(|e| e.into_inner());
        if *exited {
            return false;
        }
        // SAFETY: `kill` has no memory-safety preconditions. The pid is still our
        // unreaped child (the supervisor reaps only after setting `exited`, which we
        // hold the lock of), so it cannot name another process.
        unsafe { libc::kill(self.pid, signal) == 0 }
    }

    /// Whether the child has exited (it may still be being reaped).
    pub fn has_exited(&self) -> bool {
        *self.exited.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the caller runs on this child's supervisor thread (i.e. in `on_exit`).
    pub fn on_supervisor_thread(&self) -> bool {
        self.supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|h| h.thread().id() == std::thread::current().id())
    }

    /// Kills the child at once.
    pub fn kill(&self) -> bool {
        self.signal(libc::SIGKILL)
    }

    /// Waits for the supervisor thread to finish (it does right after the child's exit
    /// was handled). Does nothing when called from the supervisor itself, e.g. from an
    /// event handler.
    pub fn join_supervisor(&self) {
        if self.on_supervisor_thread() {
            return;
        }
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Keeps the last `limit` bytes of a stream, starting at a line boundary when it can.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    buf: Vec<u8>,
    limit: usize,
}

impl Tail {
    pub fn new(limit: usize) -> Tail {
        Tail {
            buf: Vec::new(),
            limit,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.limit {
            let mut cut = self.buf.len() - self.limit;
            if let Some(nl) = self.buf[cut..].iter().position(|&b| b == b'\n') {
                if cut + nl + 1 < self.buf.len() {
                    cut += nl + 1;
                }
            }
            self.buf.drain(..cut);
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Reads the child's stderr into a [`Tail`] and logs each chunk.
fn spawn_stderr_reader(
    mut stderr: std::process::ChildStderr,
    tail: Arc<Mutex<Tail>>,
    done: mpsc::Sender<()>,
    name: &str,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{name}-stderr"))
        .spawn(move || {
            let mut buf = [0u8; 1024];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        log::debug!(
                            "qemu stderr: {}",
                            String::from_utf8_lossy(&buf[..n]).trim_end()
                        );
                        tail.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })
}

/// Blocks until `pid` has exited, leaving it unreaped.
fn wait_exit_no_reap(pid: libc::pid_t) {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value for waitid to overwrite.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; `pid` is our own child.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Prepares `cmd` so that the child dies with its forking thread, never starts if ec1
/// is already gone, and inherits `fds`.
fn configure_child(cmd: &mut Command, fds: Vec<RawFd>, own_process_group: bool) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe functions may be called: prctl, getppid, setpgid and fcntl
    // are, and nothing here allocates (the fd list was built before the fork, and
    // `from_raw_os_error`/`last_os_error` do not allocate).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // If ec1 died between fork and prctl, the death signal was never armed and
            // we were re-parented: give up instead of running unsupervised.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if own_process_group && libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Spawns `cfg` from a new supervisor thread and returns once the child runs.
/// `on_exit` is called on the supervisor thread, once, after the child was reaped.
pub(crate) fn spawn(
    cfg: SpawnConfig,
    on_exit: Box<dyn FnOnce(ProcessExit) + Send>,
) -> Result<Child, EngineError> {
    let program = cfg.program.display().to_string();
    let (tx, rx) = mpsc::channel::<std::io::Result<(libc::pid_t, Arc<Mutex<bool>>)>>();
    let name = cfg.thread_name.clone();
    let supervisor = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || supervise(cfg, tx, on_exit))
        .map_err(|e| EngineError::io("starting the QEMU supervisor thread", e))?;
    match rx.recv() {
        Ok(Ok((pid, exited))) => Ok(Child {
            pid,
            exited,
            supervisor: Mutex::new(Some(supervisor)),
        }),
        Ok(Err(source)) => {
            let _ = supervisor.join();
            Err(if source.kind() == std::io::ErrorKind::NotFound {
                EngineError::NotInstalled {
                    install: crate::version::install_command_for(Path::new(&program)).into(),
                    program,
                }
            } else {
                EngineError::Spawn { program, source }
            })
        }
        Err(_) => {
            let _ = supervisor.join();
            Err(EngineError::Spawn {
                program,
                source: std::io::Error::other("the supervisor thread ended without spawning"),
            })
        }
    }
}

type Started = std::io::Result<(libc::pid_t, Arc<Mutex<bool>>)>;

fn supervise(
    cfg: SpawnConfig,
    started: mpsc::Sender<Started>,
    on_exit: Box<dyn FnOnce(ProcessExit) + Send>,
) {
    let SpawnConfig {
        program,
        args,
        pass_fds,
        inherit_stdio,
        thread_name,
    } = cfg;
    let mut cmd = Command::new(&program);
    cmd.args(&args).stderr(Stdio::piped());
    if inherit_stdio {
        cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
    } else {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
    }
    configure_child(
        &mut cmd,
        pass_fds.iter().map(|f| f.as_raw_fd()).collect(),
        !inherit_stdio,
    );
    let spawned = cmd.spawn();
    // The child has its own copies now (or never will): close ours, so that the
    // child's death is the last close of these sockets.
    drop(pass_fds);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let pid = child.id() as libc::pid_t;
    let tail = Arc::new(Mutex::new(Tail::new(STDERR_TAIL_BYTES)));
    let (drained_tx, drained_rx) = mpsc::channel();
    let stderr_reader = child
        .stderr
        .take()
        .and_then(|s| spawn_stderr_reader(s, tail.clone(), drained_tx, &thread_name).ok());
    let exited = Arc::new(Mutex::new(false));
    if started.send(Ok((pid, exited.clone()))).is_err() {
        // Nobody waits for this child: do not leave it running.
        // SAFETY: `pid` is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_exit_no_reap(pid);
    *exited.lock().unwrap_or_else(|e| e.into_inner()) = true;
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("reaping QEMU (pid {pid}) failed: {e}");
                // Cannot happen for our own child; report it as a crash of unknown cause.
                break std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL);
            }
        }
    };
    if let Some(reader) = stderr_reader {
        if drained_rx.recv_timeout(STDERR_DRAIN).is_ok() {
            let _ = reader.join();
        }
    }
    let stderr = tail.lock().unwrap_or_else(|e| e.into_inner()).text();
    log::debug!("QEMU (pid {pid}) ended: {status}");
    on_exit(ProcessExit { status, stderr });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn run(program: &str, args: &[&str]) -> (Child, mpsc::Receiver<ProcessExit>) {
        let (tx, rx) = mpsc::channel();
        let child = spawn(
            SpawnConfig {
                program: program.into(),
                args: args.iter().map(OsString::from).collect(),
                pass_fds: vec![],
                inherit_stdio: false,
                thread_name: "test-supervisor".into(),
            },
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        )
        .unwrap();
        (child, rx)
    }

    #[test]
    fn exit_status_and_stderr_are_reported() {
        let (child, rx) = run("/bin/sh", &["-c", "echo oops >&2; exit 3"]);
        let exit = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(exit.status.code(), Some(3));
        assert_eq!(exit.stderr, "oops\n");
        child.join_supervisor();
        assert!(!child.kill(), "an exited child is never signalled");
    }

    #[test]
    fn kill_ends_a_running_child() {
        let (child, rx) = run("/bin/sleep", &["30"]);
        assert!(child.pid() > 0);
        assert!(child.kill());
        let exit = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
        child.join_supervisor();
    }

    #[test]
    fn passed_descriptors_are_inherited_and_closed_here() {
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let (tx, rx) = mpsc::channel();
        let child = spawn(
            SpawnConfig {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), format!("echo hi >&{fd}").into()],
                pass_fds: vec![OwnedFd::from(theirs)],
                inherit_stdio: false,
                thread_name: "test-supervisor".into(),
            },
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        )
        .unwrap();
        let mut got = String::new();
        mine.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (&mine).read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi\n", "EOF proves the parent's copy was closed");
        let exit = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(exit.status.success());
        child.join_supervisor();
    }

    #[test]
    fn missing_program_is_not_installed() {
        let r = spawn(
            SpawnConfig {
                program: "/nonexistent/qemu".into(),
                args: vec![],
                pass_fds: vec![],
                inherit_stdio: false,
                thread_name: "test-supervisor".into(),
            },
            Box::new(|_| panic!("never started")),
        );
        assert!(matches!(r, Err(EngineError::NotInstalled { .. })));
        let r = spawn(
            SpawnConfig {
                program: "/".into(),
                args: vec![],
                pass_fds: vec![],
                inherit_stdio: false,
                thread_name: "test-supervisor".into(),
            },
            Box::new(|_| panic!("never started")),
        );
        assert!(matches!(r, Err(EngineError::Spawn { .. })));
    }

    #[test]
    fn child_dies_with_its_supervisor_thread() {
        // The death signal is tied to the forking thread: a child started by a thread
        // that then ends must die at once. The supervisor keeps its thread alive, so
        // check the mechanism with a bare thread that forks and exits.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut cmd = Command::new("/bin/sleep");
            cmd.arg("30");
            configure_child(&mut cmd, vec![], true);
            let child = cmd.spawn().unwrap();
            tx.send(child).unwrap();
        })
        .join()
        .unwrap();
        let mut child = rx.recv().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child outlived its thread"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Tail::new(10);
        t.push(b"first line\nsecond\n");
        assert_eq!(t.text(), "second\n");
        t.push(b"x");
        assert_eq!(t.text(), "second\nx");
        let mut t = Tail::new(4);
        t.push(b"abcdefgh");
        assert_eq!(t.text(), "efgh", "without a newline the cut is exact");
        let status = ExitStatus::from_raw(0);
        assert!(status.success());
    }
}
