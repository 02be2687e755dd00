//! The host side of ec1's guest agent: run commands in a guest without SSH.
//!
//! ec1 boots every guest with its own agent as `/init`; the agent listens on a
//! virtio-serial port that the engine exposes on the host as a Unix socket
//! (`VmSpec::agent_socket`). A [`Client`] connected to that socket runs any number of
//! concurrent sessions over it: commands with streamed stdin/stdout/stderr, exit
//! statuses or signals, timeouts, ptys, and file uploads/downloads.
//!
//! ```no_run
//! use ec1_client::{Client, Command, ConnectOptions};
//! use std::io::{Read, Write};
//!
//! let client = Client::connect("/run/ec1/vm1/agent.sock".as_ref(), &ConnectOptions::default())?;
//! // Collect everything:
//! let out = client.output(&Command::new("uname").arg("-a"))?;
//! println!("{} ({})", String::from_utf8_lossy(&out.stdout), out.status);
//! // Or stream:
//! let mut p = client.spawn(&Command::new("sha256sum").stdin(true))?;
//! let mut stdin = p.stdin().unwrap();
//! stdin.write_all(b"hello")?;
//! stdin.close()?;
//! let mut sum = String::new();
//! p.stdout().unwrap().read_to_string(&mut sum)?;
//! assert!(p.wait()?.success());
//! // Files, with their permission bits:
//! client.upload("/etc/hostname".as_ref(), "/tmp/hostname")?;
//! client.download("/tmp/hostname", "/tmp/back".as_ref())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every handle is thread-safe; [`Client`] clones share the connection. A command
//! whose output is not read pauses (its window fills), without holding up other
//! sessions. Dropping every handle of a running command kills it.

mod command;
mod conn;
mod control;
mod error;
mod fd_passing;
mod files;
mod mux;
mod private_socket;
mod process;
mod refresh;
mod session;
mod status;

pub use command::Command;
pub use conn::{Client, ConnectOptions};
pub use control::Quiesced;
pub use ec1_proto::{ErrorCode, ReadyInfo, Refresh};
pub use error::{Error, Result};
pub use fd_passing::{recv_line_with_fd, send_with_fd};
pub use files::FileMeta;
pub use mux::Mux;
pub use private_socket::{bind_private, peer_is_trusted, peer_uid};
pub use process::{Controller, Output, OutputStream, Process, Stdin};
pub use refresh::{fresh_refresh, Refreshed, REFRESH_ENTROPY};
pub use status::ExitStatus;
