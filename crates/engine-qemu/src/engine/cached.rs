//! [`QemuEngine::new_cached`]: an engine without running `qemu-system-x86_64
//! --version` each time.

use std::path::Path;

use ec1_engine::EngineError;

use crate::accel::Accel;

use super::{QemuEngine, QemuOptions};
use crate::version::resolve_binary;

impl QemuEngine {
    /// As [`QemuEngine::new`], but the QEMU version check (which runs QEMU, ~50 ms) is
    /// remembered in `cache_dir`, keyed by the binary's identity (path, inode, size,
    /// modification time): a fast start such as a template restore does not pay for it
    /// again until QEMU changes.
    pub fn new_cached(
        accel: Accel,
        opts: QemuOptions,
        cache_dir: &Path,
    ) -> Result<QemuEngine, EngineError> {
        let binary = resolve_binary(opts.binary.as_deref(), opts.arch);
        let version = crate::version_cache::check_qemu_cached(&binary, cache_dir)?;
        Self::with_version(accel, opts, binary, version)
    }
}
