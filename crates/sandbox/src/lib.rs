//! A fresh microVM with ec1's agent as `/init`, ready for commands.
//!
//! [`Sandbox::boot`] picks the engine ([`make_engine`]), builds (or reuses) the agent
//! initramfs, boots the guest and waits for the agent's readiness announcement; the
//! [`ec1_client::Client`] it returns runs commands. [`Sandbox::from_template`] does the
//! same from a boot template ([`template`]): the first start of a configuration boots
//! cold and snapshots the ready guest, every later one restores it in tens of
//! milliseconds. Every phase is timed ([`BootTimings`], [`RestoreTimings`]) so that
//! `ec1 run --timings` and the benchmark can say where the time goes. Dropping a
//! sandbox stops its VM and removes its files.

mod clone;
mod engine_choice;
mod error;
mod inject;
pub mod pool;
mod sandbox;
pub mod template;
mod timings;

pub use clone::template_key;
pub use engine_choice::{make_engine, make_engine_cached};
pub use error::SandboxError;
pub use inject::{agent_socket_for, InjectAgent};
pub use sandbox::{
    default_boot_args, spec_for, RootMode, Sandbox, SandboxOptions, CONSOLE_LOG_MAX,
    DEFAULT_BOOT_ARGS, DEFAULT_BOOT_ARGS_AARCH64,
};
pub use template::TemplateCache;
pub use timings::{BootPath, BootTimings, PoolSeen, RestoreTimings, TemplateBuild};
