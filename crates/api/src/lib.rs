//! ec1-api: Firecracker's API for ec1.
//!
//! Serves Firecracker's REST API (v1.17) on a Unix socket with Firecracker's paths,
//! JSON, status codes, state rules and `{"fault_message": ...}` errors, reads its
//! `--config-file`, writes its log and metrics formats, and runs the guest on an
//! [`ec1_engine::Engine`] built by an injected [`EngineFactory`].
//!
//! The `ec1` binary calls [`run`] with [`RunOptions`]; the lower layers ([`Vmm`],
//! [`server::serve`], [`router::parse_request`], [`spec::build_vm_spec`]) are public for
//! tests and other front ends.

mod clock;
pub mod config_file;
pub mod error;
pub mod logger;
pub mod metrics;
pub mod mmds;
pub mod models;
pub mod resources;
pub mod router;
mod run;
pub mod server;
pub mod spec;
pub mod validation;
pub mod vmm;

pub use error::{ApiError, RequestError, VmmActionError};
pub use run::{run, RunOptions, DEFAULT_API_SOCK, DEFAULT_INSTANCE_ID, DEFAULT_MAX_PAYLOAD};
pub use vmm::{EngineFactory, Vmm, VmmData, VmmOptions, APP_NAME, FIRECRACKER_API_VERSION};
