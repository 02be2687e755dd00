//! ec1's guest agent.
//!
//! ec1 injects an initramfs whose `/init` is this program. As PID 1 it sets up the
//! guest ([`init`]), opens the virtio-serial port named `ec1.agent` and serves the
//! host over it ([`server`]): commands with streamed stdio, exit statuses, signals,
//! timeouts, ptys, file uploads and downloads, all multiplexed on that one port with
//! the [`ec1_proto`] protocol.
//!
//! The server does not depend on being PID 1 or on a virtio port: tests run it on the
//! host over a socketpair.

pub mod exec;
pub mod files;
pub mod init;
#[macro_use]
pub mod log;
pub mod outbox;
pub mod pty;
pub mod quiesce;
pub mod reaper;
pub mod refresh;
pub mod server;
pub mod session;
pub mod sys;
pub mod workers;

pub use reaper::{DirectReaper, InitReaper, Reaper};
pub use server::{default_env, Config, Link, Server};
