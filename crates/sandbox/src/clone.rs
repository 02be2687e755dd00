//! [`Sandbox::from_template`]: starting a sandbox from a boot template.

use std::sync::Arc;
use std::time::Instant;

use ec1_engine::{Engine, MemoryBacking, SerialOut, SnapshotSource, VmSpec};

use crate::sandbox::{connect_agent, new_run_dir, tail};
use crate::template::{self, TemplateCache, MEM_FILE, STATE_FILE};
use crate::{make_engine_cached, RestoreTimings, Sandbox, SandboxError, SandboxOptions};

impl Sandbox {
    /// Starts `opts` from its boot template in `cache`, building the template first if
    /// there is none (a cold boot plus a snapshot, once per configuration; concurrent
    /// first starts build it once). Options a template cannot serve (a writable root
    /// image) and a template that fails to restore (it is then removed) fall back to a
    /// cold boot; [`Sandbox::boot_path`] says which it was and why.
    pub fn from_template(
        opts: &SandboxOptions,
        cache: &TemplateCache,
    ) -> Result<Sandbox, SandboxError> {
        let t0 = Instant::now();
        if let Some(why) = template::unsupported_reason(opts) {
            return Ok(Sandbox::boot(opts)?.with_cold_reason(why));
        }
        let engine = make_engine_cached(opts.engine, cache.root())?;
        let facts = template::facts(opts, &engine, cache.root())?;
        let inputs = template::gather(opts, &facts)?;
        let key = inputs.key();
        let build = cache.ensure(&key, |dir| {
            let builder = make_engine_cached(opts.engine, cache.root())?;
            template::build(dir, opts, &inputs, builder)
        })?;
        let lookup = t0.elapsed();
        let engine: Arc<dyn Engine> = engine;
        match restore(opts, cache, &key, engine, t0, lookup, build) {
            Ok(sb) => Ok(sb),
            Err(e) => {
                log::warn!(
                    "the boot template {key} did not restore ({e}); removing it and booting cold"
                );
                let _ = cache.remove(&key);
                Ok(Sandbox::boot(opts)?.with_cold_reason(format!("template failed: {e}")))
            }
        }
    }
}

/// Restores the template `key` on `engine` and reconnects to its agent.
fn restore(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    key: &str,
    engine: Arc<dyn Engine>,
    t0: Instant,
    lookup: std::time::Duration,
    build: Option<crate::TemplateBuild>,
) -> Result<Sandbox, SandboxError> {
    let dir = cache.dir(key);
    let run_dir = new_run_dir()?;
    let console = run_dir.path().join("console.log");
    let socket = run_dir.path().join("agent.sock");
    // The host side of the restored machine; the hardware comes from the snapshot.
    let host = VmSpec {
        id: "ec1-sandbox".into(),
        kernel: Default::default(),
        initrd: None,
        cmdline: String::new(),
        vcpus: opts.vcpus,
        smt: false,
        mem_mib: opts.mem_mib,
        drives: Vec::new(),
        serial: SerialOut::File(console.clone()),
        agent_socket: Some(socket.clone()),
        memory: MemoryBacking::Anonymous,
        run_dir: run_dir.path().to_path_buf(),
        devices: Default::default(),
    };
    let t1 = Instant::now();
    engine.restore(
        &host,
        &SnapshotSource {
            state_path: dir.join(STATE_FILE),
            mem_path: dir.join(MEM_FILE),
            resume: true,
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
        key.to_string(),
        timings,
        run_dir,
    ))
}
