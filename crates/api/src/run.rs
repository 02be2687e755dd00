//! `run`: what the `ec1` binary does with Firecracker's flags once parsed.
//!
//! As Firecracker: the API socket is created (an existing path is an error) and removed
//! at exit; `--config-file` configures and boots at once; `--no-api` needs a config
//! file; the process lives until the guest ends and exits 0 when it rebooted or powered
//! off. SIGTERM/SIGINT stop the engine cleanly first.

use std::path::PathBuf;
use std::sync::Arc;

use ec1_engine::ExitReason;
use tokio::signal::unix::{signal, SignalKind};

use crate::config_file::{self, VmConfigFile};
use crate::error::ApiError;
use crate::logger::{self, Logger};
use crate::metrics::{Metrics, METRICS_PERIOD};
use crate::models::{LevelFilter, LoggerConfig, MetricsConfig, VmState};
use crate::router::VmmAction;
use crate::server;
use crate::vmm::{EngineFactory, Vmm, VmmOptions, FIRECRACKER_API_VERSION};

/// Firecracker's default `--api-sock`.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";
/// Firecracker's default `--id`.
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// Firecracker's default `--http-api-max-payload-size` (and `--mmds-size-limit`).
pub const DEFAULT_MAX_PAYLOAD: usize = 51200;

/// Everything `run` needs: Firecracker's flags, already parsed, plus the engine.
#[derive(Clone)]
pub struct RunOptions {
    /// `--api-sock`; `None` is `--no-api`.
    pub api_sock: Option<PathBuf>,
    /// `--config-file`.
    pub config_file: Option<PathBuf>,
    /// `--metadata`: a JSON file loaded into the MMDS data store at start.
    pub metadata: Option<PathBuf>,
    /// `--id`.
    pub id: String,
    /// `--boot-timer`.
    pub boot_timer: bool,
    /// `--http-api-max-payload-size`.
    pub http_api_max_payload_size: usize,
    /// `--mmds-size-limit` (Firecracker defaults it to the payload limit).
    pub mmds_size_limit: usize,
    /// `--log-path`: an existing file or named pipe.
    pub log_path: Option<PathBuf>,
    /// `--level` (Error, Warning, Info, Debug, Trace, Off; any case).
    pub level: Option<String>,
    /// `--show-level`.
    pub show_level: bool,
    /// `--show-log-origin`.
    pub show_log_origin: bool,
    /// `--module`: only log from modules under this path.
    pub module: Option<String>,
    /// `--metrics-path`: an existing file or named pipe.
    pub metrics_path: Option<PathBuf>,
    /// `--start-time-us` (CLOCK_MONOTONIC µs when the process was started).
    pub start_time_us: Option<u64>,
    /// `--start-time-cpu-us`.
    pub start_time_cpu_us: Option<u64>,
    /// `--parent-cpu-time-us`.
    pub parent_cpu_time_us: Option<u64>,
    /// The engine's short name for messages, e.g. `qemu`.
    pub engine_name: String,
    /// What the engine offers (its provider's declaration): configurations it cannot
    /// run are refused when they are made. `Default` offers nothing optional.
    pub capabilities: ec1_engine::Capabilities,
    /// Builds the engine at `InstanceStart` (or snapshot load).
    pub engine_factory: EngineFactory,
    /// Scratch directory for the engine; `None` creates (and later removes) a private
    /// one under `$TMPDIR`.
    pub run_dir: Option<PathBuf>,
    /// Lines logged (at Warning) once the logger is up, e.g. flags without effect.
    pub startup_notes: Vec<String>,
}

impl RunOptions {
    /// Firecracker's defaults with the given engine.
    pub fn new(engine_name: impl Into<String>, engine_factory: EngineFactory) -> Self {
        RunOptions {
            api_sock: Some(PathBuf::from(DEFAULT_API_SOCK)),
            config_file: None,
            metadata: None,
            id: DEFAULT_INSTANCE_ID.to_string(),
            boot_timer: false,
            http_api_max_payload_size: DEFAULT_MAX_PAYLOAD,
            mmds_size_limit: DEFAULT_MAX_PAYLOAD,
            log_path: None,
            level: None,
            show_level: false,
            show_log_origin: false,
            module: None,
            metrics_path: None,
            start_time_us: None,
            start_time_cpu_us: None,
            parent_cpu_time_us: None,
            engine_name: engine_name.into(),
            capabilities: ec1_engine::Capabilities::default(),
            engine_factory,
            run_dir: None,
            startup_notes: Vec::new(),
        }
    }
}

/// Removes a path when dropped.
struct Cleanup {
    path: PathBuf,
    dir: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = if self.dir {
            std::fs::remove_dir_all(&self.path)
        } else {
            std::fs::remove_file(&self.path)
        };
    }
}

fn make_run_dir(opts: &RunOptions) -> Result<(PathBuf, Option<Cleanup>), ApiError> {
    if let Some(dir) = &opts.run_dir {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::RunDir {
            path: dir.clone(),
            source,
        })?;
        return Ok((dir.clone(), None));
    }
    let id: String = opts
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let mut n = 0u32;
    loop {
        let dir = std::env::temp_dir().join(format!("ec1-{id}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
                return Ok((
                    dir.clone(),
                    Some(Cleanup {
                        path: dir,
                        dir: true,
                    }),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(source) => return Err(ApiError::RunDir { path: dir, source }),
        }
    }
}

/// Runs one microVM to its end. `Ok(code)` is the process exit code: 0 when the guest
/// shut down, 128 + signal number when SIGTERM/SIGINT stopped it. Failures are `Err`
/// with [`ApiError::exit_code`] as the exit code.
pub fn run(opts: RunOptions) -> Result<i32, ApiError> {
    if opts.api_sock.is_none() && opts.config_file.is_none() {
        return Err(ApiError::NoApiWithoutConfig);
    }
    let config = match &opts.config_file {
        Some(p) => Some((config_file::load(p)?, p.clone())),
        None => None,
    };
    let level = match &opts.level {
        Some(l) => Some(LevelFilter::parse(l).ok_or_else(|| {
            ApiError::Logger(format!(
                "invalid log level `{l}`: expected one of Error, Warning, Info, Debug, Trace, Off"
            ))
        })?),
        None => None,
    };
    let logger = Arc::new(Logger::new(opts.id.clone()));
    logger
        .configure(&LoggerConfig {
            log_path: opts.log_path.clone(),
            level,
            show_level: Some(opts.show_level),
            show_log_origin: Some(opts.show_log_origin),
            module: opts.module.clone(),
        })
        .map_err(ApiError::Logger)?;
    logger::install_global(logger.clone());
    let metrics = Arc::new(Metrics::new(opts.id.clone()));
    if let Some(p) = &opts.metrics_path {
        metrics
            .init(&MetricsConfig {
                metrics_path: p.clone(),
                emit_id: false,
                properties: Default::default(),
            })
            .map_err(ApiError::Metrics)?;
    }
    let (run_dir, run_dir_cleanup) = make_run_dir(&opts)?;
    let vmm = Vmm::new(
        VmmOptions {
            instance_id: opts.id.clone(),
            engine_name: opts.engine_name.clone(),
            capabilities: opts.capabilities,
            engine_factory: opts.engine_factory.clone(),
            boot_timer: opts.boot_timer,
            mmds_size_limit: opts.mmds_size_limit,
            run_dir,
            start_time_us: opts.start_time_us,
            start_time_cpu_us: opts.start_time_cpu_us,
        },
        logger,
        metrics.clone(),
    );
    if let Some(path) = &opts.metadata {
        let meta = |message: String| ApiError::Metadata {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| meta(e.to_string()))?;
        let value = serde_json::from_str(&text).map_err(|e| meta(e.to_string()))?;
        vmm.handle(VmmAction::PutMmds(value))
            .map_err(|e| meta(e.to_string()))?;
    }
    log::info!("Running ec1 (Firecracker API v{FIRECRACKER_API_VERSION})");
    for note in &opts.startup_notes {
        log::warn!("{note}");
    }
    // One thread drives the API (as Firecracker's one API thread does): requests are
    // parsed here and run on the blocking pool, so a slow engine call never holds the
    // socket. Worker threads bought nothing but start-up time (see docs/performance.md).
    let rt = tokio::runtime::Builder::new_current_thread()
        .thread_name("fc_api")
        .enable_all()
        .build()
        .map_err(ApiError::Runtime)?;
    // Firecracker's start-up time: from `--start-time-us` until the API is about to serve.
    metrics.report_process_startup(
        opts.start_time_us,
        opts.start_time_cpu_us,
        opts.parent_cpu_time_us,
    );
    let result = rt.block_on(main_loop(&opts, vmm.clone(), config));
    // Always: `stop` also releases what the engine held after the guest ended itself.
    if let Err(e) = vmm.stop() {
        log::warn!("Stopping the engine failed: {e}");
    }
    let _ = metrics.write();
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    drop(run_dir_cleanup);
    match &result {
        Ok(code) => log::info!("ec1 exiting with code {code}"),
        Err(e) => log::error!("ec1 exiting: {e}"),
    }
    result
}

async fn main_loop(
    opts: &RunOptions,
    vmm: Arc<Vmm>,
    config: Option<(VmConfigFile, PathBuf)>,
) -> Result<i32, ApiError> {
    let (exit_tx, mut exit_rx) = tokio::sync::mpsc::unbounded_channel::<ExitReason>();
    vmm.set_exit_notifier(Arc::new(move |r| {
        let _ = exit_tx.send(r);
    }));
    let mut term = signal(SignalKind::terminate()).map_err(ApiError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ApiError::Runtime)?;
    let _socket = match &opts.api_sock {
        Some(path) => {
            let listener = server::bind(path)?;
            ec1_trace::event!("api.socket_ready", path = path.display().to_string());
            let guard = Cleanup {
                path: path.clone(),
                dir: false,
            };
            tokio::spawn(server::serve(
                listener,
                vmm.clone(),
                opts.http_api_max_payload_size,
            ));
            Some(guard)
        }
        None => None,
    };
    if let Some((cfg, path)) = config {
        let v = vmm.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
            config_file::apply(&v, cfg, &path)?;
            v.handle(VmmAction::StartMicroVm)
                .map_err(|e| ApiError::Start(e.to_string()))?;
            Ok(())
        })
        .await
        .map_err(|e| ApiError::Start(format!("configuring the microVM panicked: {e}")))??;
    }
    let mut tick = tokio::time::interval(METRICS_PERIOD);
    tick.tick().await;
    loop {
        tokio::select! {
            reason = exit_rx.recv() => match reason {
                Some(ExitReason::GuestShutdown) | Some(ExitReason::Stopped) => {
                    log::info!("The guest has shut down.");
                    return Ok(0);
                }
                Some(ExitReason::EngineCrashed { status, stderr }) => {
                    return Err(ApiError::EngineCrashed { status, stderr });
                }
                None => std::future::pending::<()>().await,
            },
            _ = term.recv() => return Ok(stop_on_signal(&vmm, "SIGTERM", libc::SIGTERM).await),
            _ = int.recv() => return Ok(stop_on_signal(&vmm, "SIGINT", libc::SIGINT).await),
            _ = tick.tick() => {
                if vmm.state() != VmState::NotStarted {
                    if let Err(e) = vmm.metrics().write() {
                        log::warn!("Failed to write metrics: {e}");
                    }
                }
            }
        }
    }
}

async fn stop_on_signal(vmm: &Arc<Vmm>, name: &str, signo: i32) -> i32 {
    log::info!("Received {name}: stopping the guest.");
    let v = vmm.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || v.stop()).await {
        log::warn!("Stopping the engine failed: {e}");
    }
    128 + signo
}
