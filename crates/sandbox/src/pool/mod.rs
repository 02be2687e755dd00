//! Warm pools of template clones (`ec1 pool`), and claiming one (`ec1 run`).
//!
//! See [`server`] for why a pool makes a TCG start several times faster than a plain
//! template restore, and [`protocol`] for its requests.

mod claim;
pub mod protocol;
mod remote;
pub mod server;

pub(crate) use claim::{claim, Claim};
pub use protocol::{socket_path, PoolStatus, Request, AGENT_SOCKET, CONSOLE_LOG};
pub use remote::ClaimedEngine;
pub use server::{ask, list, lock, serve, status, PoolConfig, PoolInfo, PoolLock};
