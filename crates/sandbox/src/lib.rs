//! A fresh microVM with ec1's agent as `/init`, ready for commands.
//!
//! [`Sandbox::boot`] picks the engine ([`make_engine`]), builds (or reuses) the agent
//! initramfs, boots the guest and waits for the agent's readiness announcement; the
//! [`ec1_client::Client`] it returns runs commands. Every phase is timed
//! ([`BootTimings`]) so that `ec1 run --timings` and the benchmark can say where the
//! time goes. Dropping a sandbox stops its VM and removes its files.

mod engine_choice;
mod error;
mod inject;
mod sandbox;
mod timings;

pub use engine_choice::make_engine;
pub use error::SandboxError;
pub use inject::{agent_socket_for, InjectAgent};
pub use sandbox::{RootMode, Sandbox, SandboxOptions, DEFAULT_BOOT_ARGS};
pub use timings::BootTimings;
