//! Engines register here; everything above this crate asks for one by name.
//!
//! The binary (`ec1`'s `main`) registers the engines it was built with; the layers
//! above (`ec1 run`, the Firecracker API, the pool) ask [`create`] for an engine that
//! runs guests of an architecture, by the user's [`EngineChoice`], and never name an
//! engine crate. A test registers its own engine the same way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::{Arch, Capabilities, Engine, EngineError};

/// What `--engine` names: an engine, and after a `-` an option of that engine
/// (`qemu-tcg` is the QEMU engine with TCG). `auto` (the default) is the first
/// registered engine that can run the guest on this host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EngineChoice {
    /// The engine's name; `None` for `auto`.
    pub engine: Option<String>,
    /// The engine's option (QEMU: its accelerator); `None` lets the engine choose.
    pub variant: Option<String>,
}

impl EngineChoice {
    /// `auto`.
    pub fn auto() -> EngineChoice {
        EngineChoice::default()
    }

    /// `NAME` or `NAME-VARIANT`; `auto` or the empty string is [`EngineChoice::auto`].
    pub fn parse(s: &str) -> EngineChoice {
        match s {
            "" | "auto" => EngineChoice::auto(),
            _ => match s.split_once('-') {
                Some((engine, variant)) => EngineChoice {
                    engine: Some(engine.to_string()),
                    variant: Some(variant.to_string()),
                },
                None => EngineChoice {
                    engine: Some(s.to_string()),
                    variant: None,
                },
            },
        }
    }
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.engine, &self.variant) {
            (None, _) => f.write_str("auto"),
            (Some(e), None) => f.write_str(e),
            (Some(e), Some(v)) => write!(f, "{e}-{v}"),
        }
    }
}

/// What an engine is created for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRequest {
    /// The guest's architecture.
    pub arch: Arch,
    /// The engine's option from [`EngineChoice::variant`].
    pub variant: Option<String>,
    /// A directory the engine may remember host checks in (so that a start does not
    /// repeat a slow one); `None` checks every time.
    pub cache_dir: Option<PathBuf>,
}

/// An engine implementation, as registered.
pub trait EngineProvider: Send + Sync {
    /// The name `--engine` uses (`qemu`).
    fn name(&self) -> &str;

    /// Whether this engine can run `arch` guests here with `variant`; the error says
    /// why not and what to install. Cheap: `auto` asks every engine in turn.
    fn available(&self, arch: Arch, variant: Option<&str>) -> Result<(), String>;

    /// What the engine's guests of `arch` can have: read before any engine exists,
    /// so that a configuration it cannot run is refused when it is made.
    fn capabilities(&self, arch: Arch) -> Capabilities;

    /// A new engine (one engine runs one guest).
    fn create(&self, request: &EngineRequest) -> Result<Arc<dyn Engine>, EngineError>;

    /// What a snapshot this engine wrote holds, or `None` if the file is not one of
    /// its snapshots.
    fn describe_snapshot(&self, state_path: &Path) -> Option<Result<SnapshotInfo, EngineError>>;
}

/// What a snapshot file says about itself, before anything is restored from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file's format version, as `--describe-snapshot` prints it (`v2.1.0`).
    pub format_version: String,
    /// The architecture of the guest in it: the engine that restores it must run it.
    pub arch: Arch,
}

static REGISTRY: RwLock<Vec<Arc<dyn EngineProvider>>> = RwLock::new(Vec::new());

fn providers() -> Vec<Arc<dyn EngineProvider>> {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Registers `provider`, replacing an engine of the same name. The first registered
/// is the first `auto` tries.
pub fn register(provider: Arc<dyn EngineProvider>) {
    let mut r = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    match r.iter().position(|p| p.name() == provider.name()) {
        Some(i) => r[i] = provider,
        None => r.push(provider),
    }
}

/// The names of the registered engines, in registration order.
pub fn registered() -> Vec<String> {
    providers().iter().map(|p| p.name().to_string()).collect()
}

/// The provider `choice` names, or for `auto` the first that can run `arch` here.
pub fn provider(choice: &EngineChoice, arch: Arch) -> Result<Arc<dyn EngineProvider>, EngineError> {
    let all = providers();
    if all.is_empty() {
        return Err(EngineError::Unavailable(
            "no engine is registered in this program".into(),
        ));
    }
    match &choice.engine {
        Some(name) => all.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            EngineError::Unavailable(format!(
                "there is no engine named {name:?}; this ec1 has: {}",
                registered().join(", ")
            ))
        }),
        None => {
            let mut why = Vec::new();
            for p in all {
                match p.available(arch, choice.variant.as_deref()) {
                    Ok(()) => return Ok(p),
                    Err(e) => why.push(format!("{}: {e}", p.name())),
                }
            }
            Err(EngineError::Unavailable(format!(
                "no engine can run {arch} guests here ({})",
                why.join("; ")
            )))
        }
    }
}

/// A new engine for `choice` that runs `arch` guests.
pub fn create(
    choice: &EngineChoice,
    arch: Arch,
    cache_dir: Option<&Path>,
) -> Result<Arc<dyn Engine>, EngineError> {
    provider(choice, arch)?.create(&EngineRequest {
        arch,
        variant: choice.variant.clone(),
        cache_dir: cache_dir.map(Path::to_path_buf),
    })
}

/// What the snapshot at `state_path` holds, by the engine that wrote it.
pub fn describe_snapshot(state_path: &Path) -> Result<SnapshotInfo, EngineError> {
    for p in providers() {
        if let Some(result) = p.describe_snapshot(state_path) {
            return result;
        }
    }
    Err(EngineError::InvalidSpec(format!(
        "{} is not an ec1 snapshot (none of this ec1's engines, {}, wrote it); \
         snapshots from Firecracker or other tools cannot be loaded by ec1",
        state_path.display(),
        registered().join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str, Option<Arch>);

    impl EngineProvider for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn available(&self, arch: Arch, _: Option<&str>) -> Result<(), String> {
            match self.1 {
                Some(a) if a == arch => Ok(()),
                _ => Err(format!("{} cannot", self.0)),
            }
        }
        fn capabilities(&self, _: Arch) -> Capabilities {
            Capabilities::default()
        }
        fn create(&self, r: &EngineRequest) -> Result<Arc<dyn Engine>, EngineError> {
            Err(EngineError::InvalidSpec(format!(
                "{} asked for {} {:?}",
                self.0, r.arch, r.variant
            )))
        }
        fn describe_snapshot(&self, p: &Path) -> Option<Result<SnapshotInfo, EngineError>> {
            (p == Path::new(self.0)).then(|| {
                Ok(SnapshotInfo {
                    format_version: format!("written by {}", self.0),
                    arch: Arch::Aarch64,
                })
            })
        }
    }

    #[test]
    fn choices_parse_and_print() {
        for s in ["auto", "qemu", "qemu-tcg", "vz"] {
            assert_eq!(EngineChoice::parse(s).to_string(), s);
        }
        assert_eq!(EngineChoice::parse(""), EngineChoice::auto());
        let c = EngineChoice::parse("qemu-kvm");
        assert_eq!(c.engine.as_deref(), Some("qemu"));
        assert_eq!(c.variant.as_deref(), Some("kvm"));
    }

    /// One test owns the process-wide registry (tests run in parallel threads).
    #[test]
    fn engines_are_found_by_name_or_by_what_they_can_run() {
        let err = create(&EngineChoice::auto(), Arch::X86_64, None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no engine is registered"), "{err}");
        register(Arc::new(Named("first", Some(Arch::Aarch64))));
        register(Arc::new(Named("second", Some(Arch::X86_64))));
        register(Arc::new(Named("first", Some(Arch::Aarch64)))); // replaces, keeps order
        assert_eq!(registered(), ["first", "second"]);
        // auto: the first that can run the architecture.
        let p = provider(&EngineChoice::auto(), Arch::X86_64).unwrap();
        assert_eq!(p.name(), "second");
        let p = provider(&EngineChoice::auto(), Arch::Aarch64).unwrap();
        assert_eq!(p.name(), "first");
        // By name, whatever it says about availability; the variant reaches it.
        let err = create(&EngineChoice::parse("first-fast"), Arch::X86_64, None)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("first asked for x86_64 Some(\"fast\")"),
            "{err}"
        );
        let err = provider(&EngineChoice::parse("third"), Arch::X86_64)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("no engine named \"third\"")
                && err.to_string().contains("first, second"),
            "{err}"
        );
        // Snapshots are described by whoever wrote them.
        let info = describe_snapshot(Path::new("second")).unwrap();
        assert_eq!(info.format_version, "written by second");
        assert_eq!(info.arch, Arch::Aarch64);
        let err = describe_snapshot(Path::new("/elsewhere")).unwrap_err();
        assert!(err.to_string().contains("not an ec1 snapshot"), "{err}");
        // No engine for the architecture: each says why.
        REGISTRY.write().unwrap().retain(|p| p.name() == "first");
        let err = provider(&EngineChoice::auto(), Arch::X86_64).err().unwrap();
        assert!(err.to_string().contains("first: first cannot"), "{err}");
        REGISTRY.write().unwrap().clear();
    }
}
