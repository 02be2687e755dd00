//! Boot templates: a command in a fresh microVM in tens of milliseconds, even under TCG.
//!
//! The first start of a configuration boots cold with guest RAM in a file, waits for
//! the agent, and snapshots the guest into the cache ([`TemplateCache`], keyed by every
//! input: [`TemplateInputs`]). Every later start restores that snapshot: QEMU maps the
//! memory file copy-on-write (nothing is read up front, and all clones share its
//! pages), loads ~50 KB of device state and resumes; the host then reconnects to the
//! agent and makes the clone distinct (fresh entropy, the host's clock, its host
//! name) before anything runs. See [`crate::Sandbox::from_template`].

mod build;
mod cache;
mod host;
mod key;

pub use cache::{TemplateCache, TemplateInfo, TemplateMeta, MEM_FILE, META_FILE, STATE_FILE};
pub use key::{FileId, TemplateInputs, TEMPLATE_FORMAT};

pub(crate) use build::build;
pub(crate) use host::facts;
pub(crate) use key::{gather, unsupported_reason};
