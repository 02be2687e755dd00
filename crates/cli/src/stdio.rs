//! Connecting a guest command's stdio to ec1's own, shared by `ec1 run` and `ec1 exec`.

use crate::args::GuestCommandArgs;
use ec1_client::{Command, ExitStatus, Process};
use std::io::{Read, Write};
use std::time::Duration;

/// The guest command for `args`; `stdin` streams ec1's stdin, `pty` (rows, cols) runs
/// it on a pseudo-terminal.
pub fn guest_command(
    args: &GuestCommandArgs,
    stdin: bool,
    pty: Option<(u16, u16)>,
) -> Result<Command, String> {
    let (program, rest) = args.command.split_first().ok_or("no command given")?;
    let mut cmd = Command::new(program).args(rest).stdin(stdin);
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--env {kv:?} is not KEY=VALUE"))?;
        cmd = cmd.env(k, v);
    }
    if let Some(dir) = &args.workdir {
        cmd = cmd.cwd(dir);
    }
    if let Some(secs) = args.timeout {
        cmd = cmd.timeout(Duration::from_secs(secs));
    }
    if let Some((rows, cols)) = pty {
        cmd = cmd.pty(rows, cols);
    }
    Ok(cmd)
}

/// Whether ec1's stdin is `/dev/null`: then the guest command needs no stdin stream
/// (it gets its own `/dev/null`), which saves a stream and a thread per run.
pub fn stdin_is_null() -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: stat is plain data; fstat writes into it and reads nothing else. fd 0
    // is only examined (reopening it could block on a FIFO).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above: `st` is a valid, writable stat.
    if unsafe { libc::fstat(libc::STDIN_FILENO, &mut st) } != 0 {
        return false;
    }
    let null = std::fs::metadata("/dev/null");
    (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && null.is_ok_and(|n| n.rdev() == st.st_rdev)
}

/// Streams ec1's stdin into the command (if it takes stdin) and its stdout/stderr to
/// ec1's, each on its own thread so that neither stream can hold up the other; returns
/// the command's status once both output streams are drained.
pub fn stream(mut p: Process) -> Result<ExitStatus, ec1_client::Error> {
    if let Some(mut stdin) = p.stdin() {
        // Detached: ec1's stdin may never reach EOF (a terminal); the process exits
        // when the command is done regardless.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdin.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = stdin.close();
        });
    }
    let out = p
        .stdout()
        .map(|s| std::thread::spawn(move || copy(s, std::io::stdout())));
    let err = p
        .stderr()
        .map(|s| std::thread::spawn(move || copy(s, std::io::stderr())));
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    p.wait()
}

fn copy(mut from: ec1_client::OutputStream, to: impl Write) -> std::io::Result<()> {
    let mut to = to;
    while let Ok(Some(chunk)) = from.next_chunk() {
        to.write_all(&chunk)?;
        to.flush()?;
    }
    Ok(())
}

/// The shell convention for a command's status: its exit code, or 128 + signal.
pub fn exit_code(status: &ExitStatus) -> i32 {
    status.shell_code()
}
