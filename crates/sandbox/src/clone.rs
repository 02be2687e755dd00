//! [`Sandbox::from_template`]: starting a sandbox from a boot template.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ec1_engine::{Engine, EngineError, MemoryBacking, SerialOut, SnapshotSource, VmSpec};

use crate::pool::Claim;
use crate::sandbox::{connect_agent, new_run_dir, tail, RUN_DIR_PREFIX};
use crate::template::{self, TemplateCache, MEM_FILE, STATE_FILE};
use crate::{
    make_engine_cached, BootPath, PoolSeen, RestoreTimings, Sandbox, SandboxError, SandboxOptions,
    TemplateBuild,
};

/// The key of `opts`'s template (stats only: no file is read or hashed).
pub(crate) fn key_of(
    opts: &SandboxOptions,
    cache: &TemplateCache,
) -> Result<(String, template::TemplateInputs, Arc<dyn Engine>), SandboxError> {
    cache.check_trusted()?;
    let engine = make_engine_cached(&opts.engine, opts.guest_arch()?, cache.root())?;
    let facts = template::facts(opts, engine.as_ref(), cache.root())?;
    let inputs = template::gather(opts, &facts)?;
    Ok((inputs.key(), inputs, engine))
}

/// The key of `opts`'s boot template in `cache` (stats only: no file is read).
pub fn template_key(opts: &SandboxOptions, cache: &TemplateCache) -> Result<String, SandboxError> {
    key_of(opts, cache).map(|(key, _, _)| key)
}

/// Finds `opts`'s template in `cache`, building it first if there is none; returns its
/// key.
pub(crate) fn find_or_build(
    opts: &SandboxOptions,
    cache: &TemplateCache,
) -> Result<String, SandboxError> {
    let (key, inputs, _) = key_of(opts, cache)?;
    ensure(opts, cache, &key, &inputs)?;
    Ok(key)
}

/// Makes sure the template `key` (of `opts`, with `inputs`) exists, building it on an
/// engine of its own if not; returns the build's timings when this call built it.
fn ensure(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    key: &str,
    inputs: &template::TemplateInputs,
) -> Result<Option<TemplateBuild>, SandboxError> {
    cache.ensure(key, |dir| {
        let builder = make_engine_cached(&opts.engine, opts.guest_arch()?, cache.root())?;
        template::build(dir, opts, inputs, builder)
    })
}

impl Sandbox {
    /// Starts `opts` from a warm clone that a running `ec1 pool` keeps for it (a clone
    /// restored from the template and already run once: it only resumes). Fails with
    /// [`SandboxError::NoPool`] when no pool serves this configuration or none of its
    /// clones is ready.
    pub fn from_pool(
        opts: &SandboxOptions,
        cache: &TemplateCache,
    ) -> Result<Sandbox, SandboxError> {
        let t0 = Instant::now();
        let (key, _, _) = key_of(opts, cache)?;
        match crate::pool::claim(opts, cache, &key, t0) {
            Claim::Claimed(sb) => Ok(*sb),
            Claim::Empty | Claim::NoPool => Err(SandboxError::NoPool {
                key: key.chars().take(12).collect(),
            }),
        }
    }

    /// Starts `opts` from its boot template in `cache`: from a warm clone of a running
    /// `ec1 pool` for it if there is one, else by restoring the template, which is
    /// built first if there is none (a cold boot plus a snapshot, once per
    /// configuration; concurrent first starts build it once). Options a template cannot
    /// serve (a writable root image) and a template that fails to restore (it is then
    /// removed) fall back to a cold boot; [`Sandbox::boot_path`] says which it was and
    /// why.
    pub fn from_template(
        opts: &SandboxOptions,
        cache: &TemplateCache,
    ) -> Result<Sandbox, SandboxError> {
        let t0 = Instant::now();
        if let Some(why) = template::unsupported_reason(opts) {
            return Ok(Sandbox::boot(opts)?.with_cold_reason(why));
        }
        let (key, inputs, engine) = key_of(opts, cache)?;
        let pool = match opts.no_pool {
            true => PoolSeen::None,
            false => match crate::pool::claim(opts, cache, &key, t0) {
                Claim::Claimed(sb) => return Ok(*sb),
                Claim::Empty => PoolSeen::Empty,
                Claim::NoPool => PoolSeen::None,
            },
        };
        let build = ensure(opts, cache, &key, &inputs)?;
        let run_dir = new_run_dir(RUN_DIR_PREFIX)?;
        match restore(opts, cache, &key, engine, t0, build, run_dir) {
            Ok(mut sb) => {
                sb.set_pool_seen(pool);
                Ok(sb)
            }
            // The template itself was refused (its files, or QEMU loading its state):
            // it is of no use to anyone. Other failures (resources, timeouts) are not
            // the template's fault and are reported as they are.
            Err(
                e @ SandboxError::Engine(EngineError::InvalidSpec(_) | EngineError::Control(_)),
            ) => {
                log::warn!(
                    "the boot template {key} did not restore ({e}); removing it and booting cold"
                );
                let _ = cache.remove(&key);
                Ok(Sandbox::boot(opts)?.with_cold_reason(format!("template failed: {e}")))
            }
            Err(e) => Err(e),
        }
    }
}

/// The host side of a restored machine: its console, agent socket and run directory
/// (the hardware comes from the snapshot).
fn host_spec(opts: &SandboxOptions, run_dir: &Path) -> VmSpec {
    VmSpec {
        id: "ec1-sandbox".into(),
        // (The snapshot's machine decides; this is what the options ask for.)
        arch: opts.arch.unwrap_or(ec1_engine::Arch::host()),
        kernel: Default::default(),
        initrd: None,
        cmdline: Default::default(),
        vcpus: opts.vcpus,
        smt: false,
        mem_mib: opts.mem_mib,
        drives: Vec::new(),
        serial: SerialOut::Capped {
            path: run_dir.join(crate::pool::CONSOLE_LOG),
            max_bytes: crate::sandbox::CONSOLE_LOG_MAX,
        },
        agent_socket: Some(run_dir.join(crate::pool::AGENT_SOCKET)),
        memory: MemoryBacking::Anonymous,
        run_dir: run_dir.to_path_buf(),
        devices: Default::default(),
    }
}

/// Restores the template `key` on `engine` with its files in `run_dir`, reconnects to
/// its agent and makes the clone distinct (entropy, clock, `opts.hostname`). `t0` is
/// when the start began; until now it was the lookup (and `build`).
pub(crate) fn restore(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    key: &str,
    engine: Arc<dyn Engine>,
    t0: Instant,
    build: Option<TemplateBuild>,
    run_dir: tempfile::TempDir,
) -> Result<Sandbox, SandboxError> {
    let lookup = t0.elapsed();
    let dir = cache.dir(key);
    let host = host_spec(opts, run_dir.path());
    let socket = host.agent_socket.clone().unwrap_or_default();
    let console = run_dir.path().join(crate::pool::CONSOLE_LOG);
    let t1 = Instant::now();
    engine.restore(
        &host,
        &SnapshotSource {
            state_path: dir.join(STATE_FILE),
            mem_path: dir.join(MEM_FILE),
            resume: true,
            net_overrides: Vec::new(),
            metadata: None,
        },
        Arc::new(|_| {}),
    )?;
    let restored = t1.elapsed();
    let t2 = Instant::now();
    let client = connect_agent(&engine, &socket, &console, opts.ready_timeout)?;
    let reconnect = t2.elapsed();
    let refreshed = client.refresh(opts.hostname.as_deref()).map_err(|error| {
        let _ = engine.stop();
        SandboxError::Agent {
            error,
            console: tail(&console, 20),
        }
    })?;
    let timings = RestoreTimings {
        lookup,
        build,
        restore: restored,
        reconnect,
        refresh: refreshed.took,
        clock_step_ns: refreshed.clock_step_ns,
        total: t0.elapsed(),
    };
    Ok(Sandbox::restored(
        engine,
        client,
        BootPath::Template {
            key: key.to_string(),
            pool: PoolSeen::None,
        },
        timings,
        console,
        Some(run_dir),
    ))
}
