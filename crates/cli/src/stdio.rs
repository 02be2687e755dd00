//! Connecting a guest command's stdio to ec1's own, shared by `ec1 run` and `ec1 exec`.

use ec1_client::{ExitStatus, Process};
use std::io::{Read, Write};

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
    let out = p.stdout().map(|s| std::thread::spawn(move || copy(s, std::io::stdout())));
    let err = p.stderr().map(|s| std::thread::spawn(move || copy(s, std::io::stderr())));
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
