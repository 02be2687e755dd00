//! Running a command for a session: spawn, stream stdio with flow control, enforce the
//! timeout, report how it ended.

use crate::server::Shared;
use crate::session::{Chunk, Session};
use crate::sys;
use ec1_proto::{CreditGate, ErrorCode, ExecRequest, Kind, Msg, Stream, DATA_CHUNK};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After a timeout kill, how long to wait for the output to end before reporting
/// anyway (a process outside the group may hold the pipes).
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// Starts `req` for session `s` on a thread of its own.
pub fn start(sh: Arc<Shared>, s: Arc<Session>, req: ExecRequest) {
    // The input queue exists before the host can learn the command started: stdin it
    // sends right after `Started` must not find the session without one.
    let input = req.stdin.then(|| {
        let (tx, rx) = mpsc::channel();
        s.set_input(tx);
        rx
    });
    let s2 = s.clone();
    let sh2 = sh.clone();
    if let Err(e) = crate::workers::run(move || run(&sh2, &s2, req, input)) {
        sh.fail(&s, ErrorCode::Io, format!("cannot start a thread: {e}"));
    }
}

/// Finds `prog` the way a shell would: as a path if it has a `/` (relative to `cwd`),
/// else in the `PATH` entries.
pub fn resolve_program(prog: &OsStr, path_var: Option<&OsStr>, cwd: &Path) -> Option<PathBuf> {
    if prog.as_bytes().contains(&b'/') {
        return Some(cwd.join(prog));
    }
    let path_var = path_var?;
    for dir in path_var.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(OsStr::from_bytes(dir))
        };
        let cand = dir.join(prog);
        if let Ok(m) = std::fs::metadata(&cand) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Some(cand);
            }
        }
    }
    None
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// What the stdio of a started command is connected to on the agent's side.
struct Stdio3 {
    stdin: Option<File>,
    stdout: File,
    stderr: Option<File>,
    pty_master: Option<Arc<File>>,
}

fn build(
    sh: &Shared,
    req: &ExecRequest,
) -> Result<(Command, Option<crate::pty::Pty>), (ErrorCode, String)> {
    let cwd = PathBuf::from(os(req.cwd.as_deref().unwrap_or(b"/")));
    let mut env: Vec<(OsString, OsString)> = sh.config.base_env.clone();
    if req.pty.is_some() {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    for (k, v) in &req.env {
        env.retain(|(ek, _)| ek.as_bytes() != k.as_slice());
        env.push((os(k).to_owned(), os(v).to_owned()));
    }
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let argv0 = os(&req.argv[0]);
    let program = resolve_program(argv0, path_var, &cwd).ok_or_else(|| {
        (
            ErrorCode::NotFound,
            format!(
                "`{}`: command not found (PATH={})",
                argv0.to_string_lossy(),
                path_var.map(|p| p.to_string_lossy()).unwrap_or_default()
            ),
        )
    })?;
    let mut cmd = Command::new(&program);
    cmd.arg0(argv0)
        .args(req.argv[1..].iter().map(|a| os(a)))
        .env_clear()
        .envs(env);
    // The agent's own directory is always `/`, so `/` needs no chdir. A chdir costs a
    // fork: std's posix_spawn path needs
    // posix_spawn_file_actions_addchdir_np, which it looks up dynamically and a
    // static agent cannot find, so it falls back to fork + exec, copying the agent's
    // page tables. Without it, spawning is vfork-like: under TCG a restored clone's
    // first `true` took ~100 instead of ~110 ms.
    if cwd != Path::new("/") {
        cmd.current_dir(&cwd);
    }
    if let Some(u) = req.uid {
        cmd.uid(u);
    }
    if let Some(g) = req.gid {
        cmd.gid(g);
    }
    let pty = match req.pty {
        Some(size) => {
            let p = crate::pty::open(size)
                .map_err(|e| (ErrorCode::Io, format!("cannot open a pty: {e}")))?;
            let dup = |f: &File| {
                f.try_clone()
                    .map(Stdio::from)
                    .map_err(|e| (ErrorCode::Io, format!("cannot duplicate the pty: {e}")))
            };
            cmd.stdin(dup(&p.slave)?)
                .stdout(dup(&p.slave)?)
                .stderr(dup(&p.slave)?);
            // SAFETY: the closure only makes async-signal-safe system calls.
            unsafe {
                cmd.pre_exec(crate::pty::make_controlling_terminal);
            }
            Some(p)
        }
        None => {
            cmd.stdin(if req.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
            None
        }
    };
    Ok((cmd, pty))
}

fn run(sh: &Arc<Shared>, s: &Arc<Session>, req: ExecRequest, input: Option<Receiver<Chunk>>) {
    let (mut cmd, pty) = match build(sh, &req) {
        Ok(x) => x,
        Err((code, msg)) => return sh.fail(s, code, msg),
    };
    let started = Instant::now();
    let (mut child, status_rx) = match sh.config.reaper.spawn(&mut cmd) {
        Ok(x) => x,
        Err(e) => {
            let argv0 = String::from_utf8_lossy(&req.argv[0]);
            return sh.fail(
                s,
                ErrorCode::from_io(&e),
                format!("cannot run `{argv0}`: {e}"),
            );
        }
    };
    drop(cmd); // closes our copies of the pty slave
    let pid = child.id() as i32;
    s.pgid.store(pid, Ordering::Release);
    if s.is_closed() {
        // Closed while starting: `close` saw no process group yet.
        sys::kill_group(pid, libc::SIGKILL);
    }
    // Everything the host may touch once it knows the command runs (stdin, resize)
    // is in place before it is told.
    let master = pty.map(|p| {
        drop(p.slave);
        let m = Arc::new(p.master);
        *s.pty.lock().unwrap() = Some(m.clone());
        m
    });
    sh.outbox
        .msg(s.epoch, s.id, &Msg::Started { pid: pid as u32 });

    let io = match master {
        Some(m) => {
            // A pty has one output stream: say at once that stderr is empty.
            sh.outbox.data(
                s.epoch,
                Kind::Stderr,
                s.id,
                crate::outbox::frame_buf(0),
                true,
            );
            let w = if req.stdin { m.try_clone().ok() } else { None };
            let out = match m.try_clone() {
                Ok(f) => f,
                Err(e) => {
                    sys::kill_group(pid, libc::SIGKILL);
                    return sh.fail(s, ErrorCode::Io, format!("cannot duplicate the pty: {e}"));
                }
            };
            Stdio3 {
                stdin: w,
                stdout: out,
                stderr: None,
                pty_master: Some(m),
            }
        }
        None => Stdio3 {
            stdin: child.stdin.take().map(|x| File::from(OwnedFd::from(x))),
            stdout: big_pipe(File::from(OwnedFd::from(child.stdout.take().unwrap()))),
            stderr: child
                .stderr
                .take()
                .map(|x| big_pipe(File::from(OwnedFd::from(x)))),
            pty_master: None,
        },
    };
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut pumps = 0;
    for (f, kind) in [(Some(io.stdout), Kind::Stdout), (io.stderr, Kind::Stderr)] {
        let Some(f) = f else { continue };
        let (sh2, s2, tx) = (sh.clone(), s.clone(), done_tx.clone());
        let ok = crate::workers::run(move || {
            pump(&sh2, &s2, &f, kind);
            let _ = tx.send(());
        });
        if ok.is_ok() {
            pumps += 1;
        }
    }
    drop(done_tx);
    if let (Some(stdin), Some(rx)) = (io.stdin, input) {
        let (sh2, s2) = (sh.clone(), s.clone());
        let is_pty = io.pty_master.is_some();
        let _ = crate::workers::run(move || feed(&sh2, &s2, stdin, rx, is_pty));
    }

    let deadline = req.timeout_ms.map(|t| started + Duration::from_millis(t));
    let mut timed_out = false;
    let kill = |timed_out: &mut bool| {
        if !*timed_out {
            *timed_out = true;
            crate::debug!("session {}: timeout, killing group {pid}", s.id);
            sys::kill_group(pid, libc::SIGKILL);
        }
    };
    let status = loop {
        let r = match deadline {
            Some(d) if !timed_out => {
                status_rx.recv_timeout(d.saturating_duration_since(Instant::now()))
            }
            _ => status_rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match r {
            Ok(st) => break Some(st),
            Err(RecvTimeoutError::Timeout) => kill(&mut timed_out),
            Err(RecvTimeoutError::Disconnected) => break None,
        }
    };
    // The output ends when every process holding the pipes has gone: wait for it, up
    // to the deadline, then kill the group too.
    let mut left = pumps;
    while left > 0 {
        let r = match deadline {
            Some(d) if !timed_out => {
                done_rx.recv_timeout(d.saturating_duration_since(Instant::now()))
            }
            Some(_) => done_rx.recv_timeout(DRAIN_AFTER_KILL),
            None => done_rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match r {
            Ok(()) => left -= 1,
            Err(RecvTimeoutError::Timeout) if !timed_out => kill(&mut timed_out),
            Err(_) => break,
        }
    }
    drop(io.pty_master);
    match status {
        Some(st) => {
            let how = sys::termination(st);
            crate::debug!("session {}: {how:?} timed_out={timed_out}", s.id);
            sh.end(s, &Msg::Exited { how, timed_out });
        }
        None => sh.fail(s, ErrorCode::Io, "lost track of the process".into()),
    }
}

/// Enlarges an output pipe (64 KiB by default): the command can run ahead further
/// before it waits for the agent, and the agent reads bigger pieces per system call.
/// A failure (e.g. over `/proc/sys/fs/pipe-max-size`) keeps the default.
fn big_pipe(f: File) -> File {
    // SAFETY: F_SETPIPE_SZ takes an integer and only resizes the pipe buffer.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 256 * 1024) };
    f
}

/// Copies one output stream of the command to the host, never more than the host's
/// credit allows.
fn pump(sh: &Shared, s: &Session, f: &File, kind: Kind) {
    let gate: &CreditGate = s
        .gate(if kind == Kind::Stdout {
            Stream::Stdout
        } else {
            Stream::Stderr
        })
        .unwrap();
    loop {
        let Some(n) = gate.acquire(DATA_CHUNK, None) else {
            return; // session closed
        };
        let mut buf = crate::outbox::frame_buf(n);
        match sys::read_into_vec(f.as_raw_fd(), &mut buf, n) {
            Ok(m) if m > 0 => {
                gate.refund(n - m);
                sh.outbox.data(s.epoch, kind, s.id, buf, false);
            }
            r => {
                // 0 is the end; EIO is how a pty master says the same.
                if let Err(e) = r {
                    if e.raw_os_error() != Some(libc::EIO) {
                        crate::warn!("session {}: reading {kind:?}: {e}", s.id);
                    }
                }
                gate.refund(n);
                if !s.is_closed() {
                    sh.outbox
                        .data(s.epoch, kind, s.id, crate::outbox::frame_buf(0), true);
                }
                return;
            }
        }
    }
}

/// Writes the host's stdin data to the command, returning credit as it goes.
fn feed(sh: &Shared, s: &Session, mut w: File, rx: Receiver<Chunk>, is_pty: bool) {
    let mut broken = false;
    for c in rx {
        if !broken && !c.data.is_empty() {
            if let Err(e) = w.write_all(&c.data) {
                // The command closed its stdin: what follows is discarded, but still
                // credited so the host is not left waiting.
                crate::debug!("session {}: stdin: {e}", s.id);
                broken = true;
            }
        }
        if let Some(n) = s.consumed(c.data.len()) {
            sh.outbox.msg(
                s.epoch,
                s.id,
                &Msg::Credit {
                    stream: Stream::Stdin,
                    bytes: n,
                },
            );
        }
        if c.eof {
            if is_pty {
                // A terminal has no end of input; the line discipline's EOF character
                // is the closest thing (it ends a read at the start of a line).
                let _ = w.write_all(&[4]);
            }
            break;
        }
    }
    // Dropping `w` closes the pipe: the command reads end of file.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_like_a_shell() {
        let d = std::env::temp_dir().join(format!("ec1-resolve-{}", std::process::id()));
        std::fs::create_dir_all(d.join("bin")).unwrap();
        let exe = d.join("bin/tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("bin/plain"), "").unwrap();
        let path = format!("/nonexistent:{}", d.join("bin").display());
        let p = Some(OsStr::new(&path));
        assert_eq!(
            resolve_program(OsStr::new("tool"), p, &d),
            Some(exe.clone())
        );
        assert_eq!(
            resolve_program(OsStr::new("plain"), p, &d),
            None,
            "not executable"
        );
        assert_eq!(resolve_program(OsStr::new("nope"), p, &d), None);
        assert_eq!(resolve_program(OsStr::new("tool"), None, &d), None);
        assert_eq!(
            resolve_program(OsStr::new("./bin/tool"), None, &d),
            Some(d.join("./bin/tool"))
        );
        assert_eq!(
            resolve_program(OsStr::new("/bin/sh"), None, &d),
            Some(PathBuf::from("/bin/sh"))
        );
        // An empty PATH entry means the working directory.
        assert_eq!(
            resolve_program(OsStr::new("bin/tool"), Some(OsStr::new(":")), &d),
            Some(d.join("bin/tool"))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
