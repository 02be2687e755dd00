//! Runs one command in a guest through its agent socket, streaming its output:
//!
//! ```text
//! cargo run -p ec1-client --example exec -- /path/to/agent.sock uname -a
//! ```
//!
//! The socket is `VmSpec::agent_socket` of a running ec1 guest. Exits with the
//! command's status (128 + N for a signal, as a shell does).

use ec1_client::{Client, Command, ConnectOptions};
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: exec AGENT_SOCKET PROGRAM [ARGS...]");
        std::process::exit(2);
    }
    let client = match Client::connect(args[0].as_ref(), &ConnectOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("exec: {e}");
            std::process::exit(1);
        }
    };
    let mut p = match client.spawn(&Command::new(&args[1]).args(&args[2..])) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("exec: {e}");
            std::process::exit(127);
        }
    };
    // stderr on a thread of its own, so neither stream waits for the other.
    let mut err = p.stderr().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 || std::io::stderr().write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut out = p.stdout().unwrap();
    let stdout = std::io::stdout();
    while let Ok(Some(chunk)) = out.next_chunk() {
        if stdout.lock().write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = t.join();
    match p.wait() {
        Ok(status) => std::process::exit(status.shell_code()),
        Err(e) => {
            eprintln!("exec: {e}");
            std::process::exit(1);
        }
    }
}
