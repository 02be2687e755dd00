//! The template cache: `<cache>/templates/<key>/` holds `state` (the engine's snapshot
//! file), `mem` (guest RAM, mapped copy-on-write by every clone) and `meta.json`.
//!
//! A template is built in `.build-<key>-<pid>/` and renamed into place, so a reader
//! never sees a partial one. Builders of one key take `.lock-<key>` (`flock`) and check
//! again under it, so concurrent first runs build it once; the others wait and then
//! use it. Removing a template while clones run is safe: they keep their mappings.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ec1_guest::lock::FileLock;
use serde::{Deserialize, Serialize};

use super::key::TemplateInputs;
use crate::SandboxError;

/// The snapshot file of a template.
pub const STATE_FILE: &str = "state";
/// The memory file of a template.
pub const MEM_FILE: &str = "mem";
/// What the template was made from.
pub const META_FILE: &str = "meta.json";

const BUILD_PREFIX: &str = ".build-";
const LOCK_PREFIX: &str = ".lock-";

/// What `meta.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateMeta {
    pub inputs: TemplateInputs,
    /// When it was made, in ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// The cold boot it was made from, to the agent's readiness.
    pub boot_ms: f64,
    /// Pausing and snapshotting that guest.
    pub snapshot_ms: f64,
}

/// One cached template, as `ec1 template ls` shows it.
#[derive(Debug, Clone)]
pub struct TemplateInfo {
    pub key: String,
    pub dir: PathBuf,
    /// Disk space it takes (its memory file is sparse).
    pub disk_bytes: u64,
    pub meta: Option<TemplateMeta>,
    /// Recorded inputs that changed since: such a template is never used again.
    pub stale: Vec<PathBuf>,
}

/// A directory of templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateCache {
    root: PathBuf,
}

fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// Whether process `pid` exists.
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Syncs every file of the directory `dir` (not recursive: templates are flat) and
/// the directory itself.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            ec1_engine::durable::sync_file(&e.path())?;
        }
    }
    ec1_engine::durable::sync_dir(dir)
}

impl TemplateCache {
    /// The cache under `root` (created when first written).
    pub fn at(root: impl Into<PathBuf>) -> TemplateCache {
        TemplateCache { root: root.into() }
    }

    /// `<ec1 cache>/templates`, i.e. `~/.cache/ec1/templates`.
    pub fn default_location() -> Result<TemplateCache, SandboxError> {
        let root = ec1_guest::kernel::cache_root().ok_or_else(|| {
            SandboxError::Options("no cache directory: set XDG_CACHE_HOME or HOME".into())
        })?;
        Ok(TemplateCache::at(root.join("templates")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Refuses a cache that another user could write: a template is a machine to
    /// restore, and one planted by someone else would run as this user (`sudo -E ec1
    /// run` must not load a normal user's templates). The root, if it exists, must
    /// belong to this user and not be writable by group or others.
    pub fn check_trusted(&self) -> Result<(), SandboxError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = match std::fs::metadata(&self.root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SandboxError::io(format!("reading {}", self.root.display()))(e)),
        };
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(SandboxError::Options(format!(
                "the template cache {} belongs to uid {}, not to this user (uid {me}): its templates could have been planted; use a cache of your own (XDG_CACHE_HOME) or remove it",
                self.root.display(),
                meta.uid()
            )));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(SandboxError::Options(format!(
                "the template cache {} is writable by other users (mode {:o}): chmod go-w it",
                self.root.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        Ok(())
    }

    /// Where the template `key` lives (whether or not it exists).
    pub fn dir(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Whether the template `key` is complete.
    pub fn has(&self, key: &str) -> bool {
        let d = self.dir(key);
        d.join(STATE_FILE).is_file() && d.join(MEM_FILE).is_file()
    }

    /// Reads a template's `meta.json`.
    pub fn meta(&self, key: &str) -> Option<TemplateMeta> {
        let text = std::fs::read(self.dir(key).join(META_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Makes sure the template `key` exists: if it does not, takes the key's lock and,
    /// if still missing, runs `build` on a fresh directory that is then renamed into
    /// place. Returns `build`'s result when this call built it.
    pub fn ensure<T>(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> Result<T, SandboxError>,
    ) -> Result<Option<T>, SandboxError> {
        if self.has(key) {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.root).map_err(SandboxError::io(format!(
            "creating {}",
            self.root.display()
        )))?;
        let _lock = FileLock::exclusive(&self.root.join(format!("{LOCK_PREFIX}{key}")))
            .map_err(SandboxError::io("locking the template cache"))?;
        if self.has(key) {
            return Ok(None); // another process built it while we waited
        }
        let tmp = self
            .root
            .join(format!("{BUILD_PREFIX}{key}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp)
            .map_err(SandboxError::io(format!("creating {}", tmp.display())))?;
        let built = build(&tmp).and_then(|v| {
            let dir = self.dir(key);
            // Every file's data, then the directory's names, then the directory's own
            // name: a template directory that exists after a crash is whole.
            sync_tree(&tmp).map_err(SandboxError::io(format!("syncing {}", tmp.display())))?;
            // A broken leftover (no state or memory file) would block the rename.
            let _ = std::fs::remove_dir_all(&dir);
            ec1_engine::durable::rename_durably(&tmp, &dir).map_err(SandboxError::io(format!(
                "moving the template into {}",
                dir.display()
            )))?;
            Ok(v)
        });
        if built.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        built.map(Some)
    }

    /// Writes `meta` into a template directory being built (synced with the rest when
    /// the directory is moved into place).
    pub fn write_meta(dir: &Path, meta: &TemplateMeta) -> Result<(), SandboxError> {
        let json = serde_json::to_vec_pretty(meta).map_err(|e| SandboxError::Io {
            context: "encoding the template's meta.json".into(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(dir.join(META_FILE), json)
            .map_err(SandboxError::io("writing the template's meta.json"))
    }

    /// Every template, sorted by key.
    pub fn list(&self) -> Result<Vec<TemplateInfo>, SandboxError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SandboxError::io(format!("listing {}", self.root.display()))(e)),
        };
        let mut out: Vec<TemplateInfo> = rd
            .flatten()
            .filter_map(|e| {
                let key = e.file_name().to_str()?.to_string();
                (!key.starts_with('.') && e.path().is_dir()).then_some(key)
            })
            .map(|key| {
                let meta = self.meta(&key);
                let stale = match &meta {
                    Some(m) => m
                        .inputs
                        .changed_files()
                        .into_iter()
                        .map(Path::to_path_buf)
                        .collect(),
                    None => vec![self.dir(&key).join(META_FILE)],
                };
                TemplateInfo {
                    disk_bytes: disk_usage(&self.dir(&key)),
                    dir: self.dir(&key),
                    key,
                    meta,
                    stale,
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The key of the one template whose key starts with `prefix`.
    pub fn resolve(&self, prefix: &str) -> Result<String, SandboxError> {
        let matches: Vec<String> = self
            .list()?
            .into_iter()
            .map(|t| t.key)
            .filter(|k| k.starts_with(prefix))
            .collect();
        match matches.as_slice() {
            [one] if !prefix.is_empty() => Ok(one.clone()),
            [] | [_] => Err(SandboxError::Options(format!(
                "no template {prefix:?} in {} (see `ec1 template ls`)",
                self.root.display()
            ))),
            many => Err(SandboxError::Options(format!(
                "{prefix:?} names {} templates; give more of the key",
                many.len()
            ))),
        }
    }

    /// Removes the template `key`. Clones running from it are not affected.
    pub fn remove(&self, key: &str) -> Result<(), SandboxError> {
        let dir = self.dir(key);
        // Renamed first, so that no run picks up a half-removed template.
        let trash = self
            .root
            .join(format!(".trash-{key}-{}", std::process::id()));
        std::fs::rename(&dir, &trash)
            .map_err(SandboxError::io(format!("removing {}", dir.display())))?;
        let _ = std::fs::remove_file(self.root.join(format!("{LOCK_PREFIX}{key}")));
        std::fs::remove_dir_all(&trash)
            .map_err(SandboxError::io(format!("removing {}", trash.display())))
    }

    /// Removes stale templates (an input changed: they can never be used again) and
    /// what interrupted builds left behind. Returns the keys removed.
    pub fn prune(&self) -> Result<Vec<String>, SandboxError> {
        let mut removed = Vec::new();
        for t in self.list()? {
            if !t.stale.is_empty() {
                self.remove(&t.key)?;
                removed.push(t.key);
            }
        }
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Ok(removed);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let leftover = name
                .strip_prefix(BUILD_PREFIX)
                .or_else(|| name.strip_prefix(".trash-"))
                .and_then(|rest| rest.rsplit_once('-'))
                .and_then(|(_, pid)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !process_alive(pid));
            if leftover {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(removed)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::key::FileId;

    fn inputs(file: &Path) -> TemplateInputs {
        let id = FileId::of(file).unwrap();
        TemplateInputs {
            template_format: 1,
            snapshot_format: "1.0".into(),
            engine: "qemu-tcg".into(),
            engine_files: vec![id.clone(), id.clone()],
            arch: "x86_64".into(),
            ec1: id.clone(),
            busybox: id.clone(),
            initramfs_format: 1,
            kernel: id,
            initrd: None,
            rootfs: None,
            mode: "Initramfs".into(),
            vcpus: 1,
            mem_mib: 128,
            cmdline: Default::default(),
        }
    }

    /// A fake build: the files a template has.
    fn fake_build(dir: &Path, input: &Path) -> Result<u32, SandboxError> {
        std::fs::write(dir.join(STATE_FILE), "s").unwrap();
        std::fs::write(dir.join(MEM_FILE), vec![1u8; 8192]).unwrap();
        TemplateCache::write_meta(
            dir,
            &TemplateMeta {
                inputs: inputs(input),
                created_unix_ms: now_unix_ms(),
                boot_ms: 1.0,
                snapshot_ms: 2.0,
            },
        )?;
        Ok(7)
    }

    #[test]
    fn a_cache_another_user_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let cache = TemplateCache::at(d.path().join("templates"));
        cache.check_trusted().unwrap(); // not there yet: it will be ours
        std::fs::create_dir(cache.root()).unwrap();
        cache.check_trusted().unwrap();
        std::fs::set_permissions(cache.root(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = cache.check_trusted().unwrap_err().to_string();
        assert!(e.contains("writable by other users"), "{e}");
        std::fs::set_permissions(cache.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another user's cache (the suite runs as root, which can make one).
        std::os::unix::fs::chown(cache.root(), Some(65534), Some(65534)).unwrap();
        let e = cache.check_trusted().unwrap_err().to_string();
        assert!(e.contains("belongs to uid 65534"), "{e}");
        let opts = crate::SandboxOptions::default();
        let e = crate::Sandbox::from_template(&opts, &cache)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("belongs to uid 65534"), "{e}");
    }

    #[test]
    fn build_once_list_resolve_remove() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("kernel");
        std::fs::write(&input, "k").unwrap();
        let c = TemplateCache::at(d.path().join("templates"));
        assert!(c.list().unwrap().is_empty());
        assert_eq!(
            c.ensure("abc123", |dir| fake_build(dir, &input)).unwrap(),
            Some(7)
        );
        assert!(c.has("abc123"));
        assert_eq!(
            c.ensure("abc123", |_| -> Result<u32, _> { panic!("built twice") })
                .unwrap(),
            None
        );
        let l = c.list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].key, "abc123");
        assert!(l[0].stale.is_empty());
        assert!(l[0].disk_bytes >= 8192);
        assert_eq!(l[0].meta.as_ref().unwrap().inputs.mem_mib, 128);
        assert_eq!(c.resolve("abc").unwrap(), "abc123");
        assert!(c.resolve("x").is_err());
        assert!(c.resolve("").is_err());
        c.ensure("abd999", |dir| fake_build(dir, &input)).unwrap();
        assert!(c
            .resolve("ab")
            .unwrap_err()
            .to_string()
            .contains("2 templates"));
        c.remove("abc123").unwrap();
        assert!(!c.has("abc123"));
        assert!(c.remove("abc123").is_err());
        assert_eq!(c.list().unwrap().len(), 1);
    }

    #[test]
    fn failed_builds_leave_nothing_and_prune_removes_stale_ones() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("kernel");
        std::fs::write(&input, "k").unwrap();
        let c = TemplateCache::at(d.path().join("t"));
        let e = c.ensure("k1", |_| -> Result<(), _> {
            Err(SandboxError::Options("boom".into()))
        });
        assert!(e.is_err());
        assert!(!c.has("k1"));
        let names: Vec<_> = std::fs::read_dir(c.root())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(LOCK_PREFIX))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        c.ensure("k1", |dir| fake_build(dir, &input)).unwrap();
        c.ensure("k2", |dir| fake_build(dir, &input)).unwrap();
        // A leftover of a dead builder, and one of a live one (this process).
        let dead = c.root().join(format!("{BUILD_PREFIX}k3-{}", u32::MAX - 1));
        let live = c
            .root()
            .join(format!("{BUILD_PREFIX}k4-{}", std::process::id()));
        std::fs::create_dir(&dead).unwrap();
        std::fs::create_dir(&live).unwrap();
        assert!(c.prune().unwrap().is_empty(), "nothing is stale yet");
        assert!(!dead.exists() && live.exists());
        // The input changes: both templates are stale now.
        std::fs::write(&input, "rebuilt kernel").unwrap();
        let l = c.list().unwrap();
        assert!(l.iter().all(|t| t.stale == vec![input.clone()]));
        let mut removed = c.prune().unwrap();
        removed.sort();
        assert_eq!(removed, vec!["k1", "k2"]);
        assert!(c.list().unwrap().is_empty());
        // A template without meta.json is stale too.
        std::fs::create_dir(c.dir("k5")).unwrap();
        assert_eq!(c.list().unwrap()[0].stale.len(), 1);
        assert!(c.meta("k5").is_none());
    }
}
