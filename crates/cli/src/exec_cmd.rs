//! `ec1 exec`: run a command in a VM that a running `ec1 --inject-agent` serves.

use crate::args::ExecArgs;
use crate::signals::{self, Blocked};
use crate::stdio;
use ec1_client::{Client, ConnectOptions};
use ec1_sandbox::agent_socket_for;
use std::os::fd::AsRawFd;
use std::time::Duration;

pub fn run(args: &ExecArgs) -> i32 {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ec1 exec: {e}");
            125
        }
    }
}

/// A connection to a VM's agent.
pub struct AgentConnection {
    pub client: Client,
}

/// Connects to the agent of the VM served on `api_sock`. The socket is ec1's
/// multiplexer over the VM's agent channel: any number of `ec1 exec`/`ec1 cp`
/// processes connect at once.
pub fn connect(api_sock: &std::path::Path) -> Result<AgentConnection, String> {
    let socket = agent_socket_for(api_sock);
    if !socket.exists() {
        return Err(format!(
            "no agent channel at {}: start ec1 with --inject-agent (and boot the VM) first",
            socket.display()
        ));
    }
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        ready_timeout: Duration::from_secs(30),
    };
    let client =
        Client::connect(&socket, &opts).map_err(|e| format!("{}: {e}", socket.display()))?;
    Ok(AgentConnection { client })
}

fn run_inner(args: &ExecArgs) -> Result<i32, String> {
    // Before any thread starts. With a pty, a resized local terminal resizes the
    // guest's.
    let mut wanted = signals::TERMINATION.to_vec();
    if args.tty {
        wanted.push(libc::SIGWINCH);
    }
    let signals = Blocked::block(&wanted).map_err(|e| format!("blocking signals: {e}"))?;
    let pty = args.tty.then(|| terminal_size().unwrap_or((24, 80)));
    let cmd = stdio::guest_command(&args.guest, args.interactive || args.tty, pty)?;
    let conn = connect(&args.api_sock)?;
    let _raw = if args.tty { RawTerminal::enter() } else { None };
    let p = conn.client.spawn(&cmd).map_err(|e| e.to_string())?;
    let ctl = p.controller();
    signals::forward(signals, move |sig| {
        let _ = match sig {
            libc::SIGWINCH => match terminal_size() {
                Some((rows, cols)) => ctl.resize(rows, cols),
                None => Ok(()),
            },
            _ => ctl.signal(sig),
        };
    })
    .map_err(|e| format!("starting the signal thread: {e}"))?;
    let status = stdio::stream(p).map_err(|e| e.to_string())?;
    Ok(stdio::exit_code(&status))
}

/// The size of the terminal on stdout, if it is one.
fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it for a valid descriptor.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: ioctl with a pointer to a live, correctly typed winsize.
    let rc = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Puts the local terminal in raw mode (keys go to the guest's pty as typed) and
/// restores it when dropped. `None` when stdin is not a terminal.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data filled by tcgetattr on success.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer to a live termios.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: cfmakeraw only edits the struct we own.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: valid fd and pointer to a live termios.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter` on the same descriptor.
        unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_agent_socket_says_how_to_fix_it() {
        let e = connect(std::path::Path::new("/nonexistent/fc.sock"))
            .err()
            .expect("no agent there");
        assert!(e.contains("--inject-agent"), "{e}");
    }
}
