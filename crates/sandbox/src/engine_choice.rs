//! The one place that turns `--engine` into an engine, through the registry: this
//! crate names no engine implementation (the binary registers them).

use ec1_engine::{registry, Arch, Engine, EngineChoice, EngineError};
use std::sync::Arc;

/// An engine for `choice` that runs `arch` guests. Host checks the engine may
/// remember (QEMU's version) are kept under ec1's cache directory (`engine/`), so
/// that they are not paid on every boot.
pub fn make_engine(choice: &EngineChoice, arch: Arch) -> Result<Arc<dyn Engine>, EngineError> {
    match ec1_guest::kernel::cache_root() {
        Some(root) => make_engine_cached(choice, arch, &root.join("qemu")),
        None => registry::create(choice, arch, None),
    }
}

/// As [`make_engine`], remembering host checks in `cache_dir`.
pub fn make_engine_cached(
    choice: &EngineChoice,
    arch: Arch,
    cache_dir: &std::path::Path,
) -> Result<Arc<dyn Engine>, EngineError> {
    registry::create(choice, arch, Some(cache_dir))
}
