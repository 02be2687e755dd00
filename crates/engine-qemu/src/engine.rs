//! [`QemuEngine`]: the [`Engine`] implementation.

mod cached;
mod snapshots;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ec1_engine::{
    Arch, BalloonStats, CacheIdentity, Capabilities, DriveUpdate, Engine, EngineError, EventSink,
    ExitReason, NetUpdate, SerialOut, SnapshotSource, SnapshotTarget, VmSpec,
};
use qapi::qmp::{
    cont, quit, send_key, stop, Event, KeyValue, QKeyCode, QKeyCodeWrapper, QmpCommand,
    ShutdownCause,
};

use crate::accel::Accel;
use crate::args::{qemu_args, ArgsContext, DriveNames};
use crate::drain::Readers;
use crate::exit::{classify, ExitCell};
use crate::media::{change_medium, DriveState};
use crate::net_relays::NetRelays;
use crate::process::{self, Child, ProcessExit, SpawnConfig};
use crate::qmp::{QmpClient, QmpError};
use crate::throttle::Throttle;
use crate::validate::{check_files, check_spec, QMP_SOCKET};
use crate::version::{check_qemu, resolve_binary, QemuVersion, INSTALL_COMMAND};
use ec1_vsock::VsockDevice;

/// How long the supervisor waits for the socket readers after QEMU exited.
const READER_DRAIN: Duration = Duration::from_secs(1);
/// How long a `SIGKILL`ed QEMU may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Settings of the QEMU engine; `Default` suits ec1 for guests of the host's
/// architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuOptions {
    /// The guests' architecture: x86_64 runs on `microvm`, aarch64 on `virt`.
    pub arch: Arch,
    /// The QEMU binary; `None` means `$EC1_QEMU`, else `qemu-system-x86_64` in `PATH`
    /// (for aarch64: `$EC1_QEMU_AARCH64`, else `qemu-system-aarch64`).
    pub binary: Option<PathBuf>,
    /// The firmware image (`-bios`) of x86_64's `microvm`; arm64's `virt` boots the
    /// kernel with QEMU's own loader.
    pub firmware: PathBuf,
    /// How long QEMU may take from spawn to answering QMP (normally ~30 ms).
    pub start_timeout: Duration,
    /// How long one QMP command may take.
    pub command_timeout: Duration,
    /// How long `stop()` waits after QMP `quit` before it kills QEMU.
    pub stop_grace: Duration,
}

impl Default for QemuOptions {
    fn default() -> Self {
        QemuOptions {
            arch: Arch::host(),
            binary: None,
            firmware: PathBuf::from(crate::DEFAULT_FIRMWARE),
            start_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(5),
            stop_grace: Duration::from_secs(2),
        }
    }
}

/// One guest's QEMU and everything attached to it.
struct Vm {
    child: Child,
    qmp: Mutex<Option<QmpClient>>,
    exit: Arc<ExitCell>,
    stop_requested: Arc<AtomicBool>,
    drives: Mutex<Vec<DriveState>>,
    qmp_path: PathBuf,
    /// The vhost-user backend of the vsock device (threads of this process); stopped
    /// after QEMU.
    vsock: Mutex<Option<VsockDevice>>,
    /// The frame relays of rate-limited network interfaces; stopped after QEMU.
    nets: Mutex<NetRelays>,
    /// The balloon's settings as last set, if the guest has a balloon.
    balloon: Mutex<Option<BalloonState>>,
    mem_mib: u32,
    /// The machine QEMU runs (a snapshot describes it).
    spec: VmSpec,
    /// The memfd of [`MemoryBacking::Shared`] guest RAM (QEMU maps its own copy).
    ram: Option<OwnedFd>,
}

/// What the engine remembers of the balloon: QEMU reports sizes, not these.
#[derive(Debug, Clone, Copy)]
struct BalloonState {
    target_mib: u32,
    stats_interval_s: u16,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs guests in QEMU's `microvm` machine. One engine runs one guest: create a new
/// engine for the next.
pub struct QemuEngine {
    name: String,
    accel: Accel,
    opts: QemuOptions,
    binary: PathBuf,
    version: QemuVersion,
    tsc_khz: Option<u64>,
    vm: Mutex<Option<Arc<Vm>>>,
}

impl QemuEngine {
    /// Checks the host (QEMU binary and version, firmware) and prepares an engine.
    /// Installs nothing: what is missing comes back as [`EngineError::NotInstalled`]
    /// or [`EngineError::WrongVersion`] with the command that fixes it.
    pub fn new(accel: Accel, opts: QemuOptions) -> Result<Self, EngineError> {
        let binary = resolve_binary(opts.binary.as_deref(), opts.arch);
        let version = check_qemu(&binary)?;
        Self::with_version(accel, opts, binary, version)
    }

    /// An engine for `binary`, already checked to be QEMU `version`.
    fn with_version(
        accel: Accel,
        opts: QemuOptions,
        binary: PathBuf,
        version: QemuVersion,
    ) -> Result<Self, EngineError> {
        if opts.arch == Arch::X86_64 && !opts.firmware.is_file() {
            return Err(EngineError::NotInstalled {
                program: format!("QEMU's qboot firmware {}", opts.firmware.display()),
                install: INSTALL_COMMAND.into(),
            });
        }
        let tsc_khz = match (accel, opts.arch) {
            (Accel::Tcg, Arch::X86_64) => crate::host::host_cpu_khz(),
            _ => None,
        };
        Ok(QemuEngine {
            name: format!("qemu-{}", accel.as_str()),
            accel,
            opts,
            binary,
            version,
            tsc_khz,
            vm: Mutex::new(None),
        })
    }

    /// The QEMU version found by [`QemuEngine::new`].
    pub fn version(&self) -> QemuVersion {
        self.version
    }

    /// The QEMU binary this engine runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The acceleration guests run with.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The architecture of the guests this engine runs.
    pub fn arch(&self) -> Arch {
        self.opts.arch
    }

    /// Refuses a guest of another architecture than this engine's.
    pub(crate) fn check_arch(&self, spec: &VmSpec) -> Result<(), EngineError> {
        if spec.arch == self.opts.arch {
            return Ok(());
        }
        Err(EngineError::InvalidSpec(format!(
            "this QEMU engine runs {} guests and the machine is {}",
            self.opts.arch, spec.arch
        )))
    }

    /// The firmware QEMU loads, if the machine has one.
    fn firmware(&self) -> Option<PathBuf> {
        (self.opts.arch == Arch::X86_64).then(|| self.opts.firmware.clone())
    }

    /// The command-line context for `spec`-independent settings, with placeholder
    /// descriptors: for showing the command line ([`qemu_args`]) without running it.
    pub fn args_context(&self) -> ArgsContext {
        ArgsContext {
            accel: self.accel,
            firmware: self.firmware(),
            tsc_khz: self.tsc_khz,
            qmp_fd: 3,
            boot_timer_fd: 4,
            console_fd: None,
            entropy_fd: None,
            ram_fd: None,
        }
    }

    /// QEMU's process id while a guest runs.
    pub fn qemu_pid(&self) -> Option<u32> {
        let vm = lock(&self.vm).clone()?;
        vm.exit.get().is_none().then(|| vm.child.pid())
    }

    /// Runs one typed QMP command on the running guest's QEMU: the extension point for
    /// what the [`Engine`] trait does not cover (e.g. snapshots).
    pub fn qmp<C: QmpCommand>(&self, command: &C) -> Result<C::Ok, EngineError> {
        self.with_qmp(|q| Ok(q.execute(command)?))
    }

    fn running(&self) -> Result<Arc<Vm>, EngineError> {
        let vm = lock(&self.vm)
            .clone()
            .ok_or_else(|| EngineError::InvalidState("no guest has been started".into()))?;
        if let Some(reason) = vm.exit.get() {
            return Err(EngineError::InvalidState(format!(
                "the guest has already ended ({reason:?})"
            )));
        }
        Ok(vm)
    }

    fn with_qmp<R>(
        &self,
        f: impl FnOnce(&mut QmpClient) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        let vm = self.running()?;
        let mut guard = lock(&vm.qmp);
        let client = guard
            .as_mut()
            .ok_or_else(|| EngineError::InvalidState("the guest has been stopped".into()))?;
        f(client)
    }

    /// Spawns QEMU for `spec`, connects QMP and starts the vCPUs. With `incoming`, QEMU
    /// waits for a snapshot's device state instead of booting, loads it, and starts the
    /// vCPUs only if the restore asks to resume.
    fn launch(
        &self,
        spec: &VmSpec,
        events: EventSink,
        incoming: Option<&crate::snapshot::migrate::Incoming>,
    ) -> Result<Arc<Vm>, EngineError> {
        let t0 = Instant::now();
        let qmp_path = spec.run_dir.join(QMP_SOCKET);
        match std::fs::remove_file(&qmp_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EngineError::io(
                    format!("removing the stale socket {}", qmp_path.display()),
                    e,
                ))
            }
        }
        // The engine creates the QMP socket and QEMU inherits it: the connection made
        // now waits in the backlog until QEMU serves it, and if QEMU dies first the
        // socket's last close ends that connection at once. No polling for a path.
        let listener = UnixListener::bind(&qmp_path).map_err(|e| {
            EngineError::io(format!("creating the QMP socket {}", qmp_path.display()), e)
        })?;
        let qmp_conn = UnixStream::connect(&qmp_path)
            .map_err(|e| EngineError::io(format!("connecting to {}", qmp_path.display()), e))?;
        let (boot_ours, boot_qemu) = UnixStream::pair()
            .map_err(|e| EngineError::io("creating the boot-timer socket pair", e))?;
        // Consoles ec1 reads itself (capped, or rate-limited) come over a socket pair.
        let console = match &spec.serial {
            SerialOut::Capped { .. } | SerialOut::Limited { .. } => {
                let (ours, qemu) = UnixStream::pair()
                    .map_err(|e| EngineError::io("creating the console socket pair", e))?;
                Some((ours, qemu))
            }
            _ => None,
        };
        let entropy_limit = crate::devices::entropy_limited(spec);
        let entropy = match entropy_limit {
            Some(_) => Some(
                UnixStream::pair()
                    .map_err(|e| EngineError::io("creating the entropy socket pair", e))?,
            ),
            None => None,
        };
        let ram = match spec.memory {
            ec1_engine::MemoryBacking::Shared => Some(crate::memfd::guest_ram(spec.mem_mib)?),
            ec1_engine::MemoryBacking::HugePages => Some(crate::memfd::guest_ram_huge(
                spec.mem_mib,
                &crate::memfd::meminfo(),
            )?),
            _ => None,
        };
        let ram_qemu = ram
            .as_ref()
            .map(|f| f.try_clone())
            .transpose()
            .map_err(|e| EngineError::io("duplicating the guest RAM descriptor", e))?;
        let ctx = ArgsContext {
            qmp_fd: listener.as_raw_fd(),
            boot_timer_fd: boot_qemu.as_raw_fd(),
            console_fd: console.as_ref().map(|c| c.1.as_raw_fd()),
            entropy_fd: entropy.as_ref().map(|e| e.1.as_raw_fd()),
            ram_fd: ram_qemu.as_ref().map(|f| f.as_raw_fd()),
            ..self.args_context()
        };
        let args = match incoming {
            Some(_) => crate::snapshot::migrate::incoming_args(qemu_args(spec, &ctx)?),
            None => qemu_args(spec, &ctx)?,
        };
        // The backend listens first; QEMU connects to it while it starts.
        let vsock = match &spec.devices.vsock {
            Some(v) => Some(
                VsockDevice::start(
                    v.guest_cid,
                    &crate::devices::vsock_control_socket(&spec.run_dir),
                    &v.uds_path,
                )
                .map_err(|e| EngineError::InvalidSpec(e.to_string()))?,
            ),
            None => None,
        };
        let nets = NetRelays::start(spec)?;
        log::debug!(
            "starting {} {}",
            self.binary.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );

        let exit = Arc::new(ExitCell::new(events.clone()));
        let stop_requested = Arc::new(AtomicBool::new(false));
        let cause = Arc::new(Mutex::new(None::<ShutdownCause>));
        let last_exit = Arc::new(Mutex::new(None::<(String, String)>));
        let readers = Arc::new(Readers::default());
        let boot_guard = readers.enter();
        let console_guard = console.as_ref().map(|_| readers.enter());
        let entropy_guard = entropy.as_ref().map(|_| readers.enter());
        let qmp_guard = readers.enter();

        let on_exit = {
            let (exit, stop_requested, cause, last_exit) = (
                exit.clone(),
                stop_requested.clone(),
                cause.clone(),
                last_exit.clone(),
            );
            Box::new(move |pe: ProcessExit| {
                if !readers.wait_idle(READER_DRAIN) {
                    log::warn!("QEMU's sockets were still open {READER_DRAIN:?} after it exited");
                }
                let c = *lock(&cause);
                let reason = classify(
                    pe.status,
                    stop_requested.load(Ordering::SeqCst),
                    c,
                    &pe.stderr,
                );
                *lock(&last_exit) = Some((pe.status.to_string(), pe.stderr));
                exit.record(reason);
            })
        };
        let (console_ours, console_qemu) = match console {
            Some((ours, qemu)) => (Some(ours), Some(OwnedFd::from(qemu))),
            None => (None, None),
        };
        let (entropy_ours, entropy_qemu) = match entropy {
            Some((ours, qemu)) => (Some(ours), Some(OwnedFd::from(qemu))),
            None => (None, None),
        };
        let child = process::spawn(
            SpawnConfig {
                program: self.binary.clone(),
                args,
                pass_fds: [OwnedFd::from(listener), OwnedFd::from(boot_qemu)]
                    .into_iter()
                    .chain(ram_qemu)
                    .chain(console_qemu)
                    .chain(entropy_qemu)
                    .collect(),
                inherit_stdio: spec.serial == SerialOut::Stdio,
                thread_name: thread_name(&spec.id),
            },
            on_exit,
        )?;
        let t_spawned = t0.elapsed();
        ec1_trace::event!("engine.spawned", vm = spec.id.as_str(), pid = child.pid());

        let abort = |err: EngineError, died: bool| -> EngineError {
            let err = fail_start(&child, &exit, &last_exit, err, died);
            crate::image_lock::explain(err, spec, child.pid())
        };
        if let Err(e) = crate::boot_timer::spawn_reader(boot_ours, events, boot_guard) {
            return Err(abort(
                EngineError::io("starting the boot-timer reader", e),
                false,
            ));
        }
        if let (Some(socket), Some(guard)) = (console_ours, console_guard) {
            let started = match &spec.serial {
                SerialOut::Capped { path, max_bytes } => {
                    crate::console::spawn_writer(socket, path.clone(), *max_bytes, guard)
                        .map_err(|e| (format!("writing the console log {}", path.display()), e))
                }
                SerialOut::Limited {
                    to,
                    bucket,
                    dropped,
                } => crate::console::spawn_limited(
                    socket,
                    to.clone(),
                    *bucket,
                    dropped.clone(),
                    guard,
                )
                .map_err(|e| ("starting the serial rate limiter".to_string(), e)),
                _ => Ok(std::thread::spawn(|| ())),
            };
            if let Err((what, e)) = started {
                return Err(abort(EngineError::io(what, e), false));
            }
        }
        if let (Some(socket), Some(limit), Some(guard)) =
            (entropy_ours, entropy_limit, entropy_guard)
        {
            if let Err(e) = crate::entropy::spawn_egd(socket, limit, guard) {
                return Err(abort(
                    EngineError::io("starting the entropy rate limiter", e),
                    false,
                ));
            }
        }
        let on_event = {
            let cause = cause.clone();
            Box::new(move |event: Event| {
                let _held_until_qemu_closes_qmp = &qmp_guard;
                if let Event::SHUTDOWN { data, .. } = event {
                    log::debug!("QEMU shutdown event: {:?}", data.reason);
                    *lock(&cause) = Some(data.reason);
                }
            })
        };
        let mut qmp = match QmpClient::connect(qmp_conn, self.opts.start_timeout, on_event) {
            Ok(q) => q,
            Err(e) => {
                let died = e.means_exit();
                return Err(abort(e.into(), died));
            }
        };
        let t_qmp = t0.elapsed();
        ec1_trace::event!("engine.ready", vm = spec.id.as_str());
        qmp.set_timeout(self.opts.command_timeout);
        if let Some(inc) = incoming {
            if let Err(e) = crate::snapshot::migrate::load_state(&mut qmp, inc) {
                drop(qmp);
                return Err(abort(e, false));
            }
            ec1_trace::event!("snapshot.restore.state_loaded", vm = spec.id.as_str());
        }
        if let Some(b) = &spec.devices.balloon {
            let setup =
                crate::balloon::set_target(&mut qmp, spec.mem_mib, b.amount_mib).and_then(|()| {
                    crate::balloon::set_stats_interval(&mut qmp, b.stats_polling_interval_s)
                });
            if let Err(e) = setup {
                drop(qmp);
                return Err(abort(e, false));
            }
        }
        let resume = incoming.is_none_or(|i| i.resume);
        if let Err(e) = resume.then(|| qmp.execute(&cont {})).transpose() {
            drop(qmp);
            let died = e.means_exit();
            return Err(abort(e.into(), died));
        }
        if resume {
            ec1_trace::event!("guest.started", vm = spec.id.as_str());
        }
        log::debug!(
            "QEMU pid {}: spawned in {t_spawned:?}, QMP ready at {t_qmp:?}, running at {:?}",
            child.pid(),
            t0.elapsed()
        );
        let drives = spec
            .drives
            .iter()
            .enumerate()
            .map(|(i, d)| DriveState {
                id: d.id.clone(),
                names: DriveNames::new(i),
                read_only: d.read_only,
                cache: d.cache,
                vhost_user: d.vhost_user,
                generation: 0,
                size: std::fs::metadata(&d.path).map(|m| m.size()).unwrap_or(0),
            })
            .collect();
        Ok(Arc::new(Vm {
            child,
            qmp: Mutex::new(Some(qmp)),
            exit,
            stop_requested,
            drives: Mutex::new(drives),
            qmp_path,
            vsock: Mutex::new(vsock),
            nets: Mutex::new(nets),
            balloon: Mutex::new(spec.devices.balloon.map(|b| BalloonState {
                target_mib: b.amount_mib,
                stats_interval_s: b.stats_polling_interval_s,
            })),
            mem_mib: spec.mem_mib,
            spec: spec.clone(),
            ram,
        }))
    }
}

/// The supervisor thread's name: `ec1-qemu-` and the start of the VM id (Linux keeps
/// 15 bytes of a thread name, and a NUL in it would be refused).
fn thread_name(id: &str) -> String {
    let id: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(6)
        .collect();
    format!("ec1-qemu-{id}")
}

/// Cleans up after a start that failed once QEMU was spawned, and says why it failed:
/// QEMU's own exit status and stderr when it died, `err` otherwise.
fn fail_start(
    child: &Child,
    exit: &ExitCell,
    last_exit: &Mutex<Option<(String, String)>>,
    err: EngineError,
    died: bool,
) -> EngineError {
    // A control channel that closed means QEMU is exiting: give it a moment to report
    // its status. Anything else (a timeout) means it hangs: kill it now.
    if !died || exit.wait(Some(KILL_WAIT)).is_none() {
        child.kill();
        exit.wait(Some(KILL_WAIT));
    }
    child.join_supervisor();
    match lock(last_exit).take() {
        Some((status, stderr)) if died => EngineError::Crashed { status, stderr },
        Some((_, stderr)) => {
            if !stderr.trim().is_empty() {
                log::warn!("QEMU's stderr: {}", stderr.trim());
            }
            err
        }
        None => err,
    }
}

impl Engine for QemuEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        crate::capabilities::of(self.opts.arch)
    }

    fn cache_identity(&self) -> CacheIdentity {
        let binary =
            crate::version_cache::find_in_path(&self.binary).unwrap_or_else(|| self.binary.clone());
        CacheIdentity {
            engine: format!("{}-{}", self.name, self.opts.arch),
            files: std::iter::once(binary).chain(self.firmware()).collect(),
            snapshot_format: format!(
                "{}.{}",
                crate::snapshot::FORMAT_MAJOR,
                crate::snapshot::FORMAT_MINOR
            ),
        }
    }

    fn start(&self, spec: &VmSpec, events: EventSink) -> Result<(), EngineError> {
        let mut slot = lock(&self.vm);
        if slot.is_some() {
            return Err(EngineError::InvalidState(
                "this engine has already started a guest; use a new engine for another".into(),
            ));
        }
        self.check_arch(spec)?;
        check_spec(spec)?;
        check_files(spec)?;
        crate::devices::check_device_files(spec)?;
        let qmp_path = spec.run_dir.join(QMP_SOCKET);
        let vm = self.launch(spec, events, None).inspect_err(|_| {
            let _ = std::fs::remove_file(&qmp_path);
        })?;
        let exit = vm.exit.clone();
        *slot = Some(vm);
        drop(slot);
        exit.announce();
        Ok(())
    }

    fn pause(&self) -> Result<(), EngineError> {
        self.with_qmp(|q| Ok(q.execute(&stop {}).map(drop)?))?;
        ec1_trace::event!("guest.paused");
        Ok(())
    }

    fn resume(&self) -> Result<(), EngineError> {
        self.with_qmp(|q| Ok(q.execute(&cont {}).map(drop)?))?;
        ec1_trace::event!("guest.resumed");
        Ok(())
    }

    fn send_ctrl_alt_del(&self) -> Result<(), EngineError> {
        if !self.capabilities().ctrl_alt_del {
            return Err(EngineError::Unsupported {
                engine: self.name.clone(),
                what: format!(
                    "Ctrl-Alt-Del on {} guests (no keyboard controller)",
                    self.opts.arch
                ),
            });
        }
        let key = |data| KeyValue::qcode(QKeyCodeWrapper { data });
        self.with_qmp(|q| {
            Ok(q.execute(&send_key {
                keys: vec![
                    key(QKeyCode::ctrl),
                    key(QKeyCode::alt),
                    key(QKeyCode::delete),
                ],
                hold_time: None,
            })
            .map(drop)?)
        })
    }

    fn stop(&self) -> Result<(), EngineError> {
        let Some(vm) = lock(&self.vm).clone() else {
            return Ok(());
        };
        // Only the first stop of a guest is its teardown; later calls just wait.
        let first = !vm.stop_requested.swap(true, Ordering::SeqCst);
        if first {
            ec1_trace::event!("teardown.start", vm = vm.spec.id.as_str());
        }
        if vm.child.on_supervisor_thread() {
            // Called from the `Exited` event handler: QEMU is gone and the exit is
            // being announced right now; waiting for it here would wait for ourselves.
            lock(&vm.qmp).take();
            return Ok(());
        }
        if !vm.child.has_exited() {
            // Ask QEMU to quit; skip it if another thread is stuck in a command.
            if let Ok(mut guard) = vm.qmp.try_lock() {
                if let Some(q) = guard.as_mut() {
                    q.set_timeout(self.opts.stop_grace);
                    if let Err(e) = q.execute(&quit {}) {
                        log::debug!("QMP quit failed ({e}); killing QEMU");
                    }
                }
            }
            if vm.exit.wait(Some(self.opts.stop_grace)).is_none() {
                vm.child.kill();
            }
        }
        if vm.exit.wait(Some(KILL_WAIT)).is_none() {
            return Err(EngineError::Timeout(
                KILL_WAIT,
                format!("QEMU (pid {}) to end after SIGKILL", vm.child.pid()),
            ));
        }
        vm.child.join_supervisor();
        lock(&vm.qmp).take();
        let _ = std::fs::remove_file(&vm.qmp_path);
        if let Some(mut v) = lock(&vm.vsock).take() {
            v.stop();
        }
        lock(&vm.nets).stop();
        if first {
            ec1_trace::event!("teardown.end", vm = vm.spec.id.as_str());
        }
        Ok(())
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitReason>, EngineError> {
        let vm = lock(&self.vm)
            .clone()
            .ok_or_else(|| EngineError::InvalidState("no guest has been started".into()))?;
        Ok(vm.exit.wait(timeout))
    }

    fn snapshot(&self, target: &SnapshotTarget) -> Result<(), EngineError> {
        self.snapshot_impl(target)
    }

    fn snapshot_metadata(&self, state_path: &Path) -> Result<Option<String>, EngineError> {
        let snap = crate::snapshot::format::SnapshotFile::open(state_path)?;
        Ok(crate::snapshot::machine::saved_metadata(&snap.machine))
    }

    fn restore(
        &self,
        spec: &VmSpec,
        source: &SnapshotSource,
        events: EventSink,
    ) -> Result<(), EngineError> {
        self.restore_impl(spec, source, events)
    }

    fn update_drive(&self, update: &DriveUpdate) -> Result<(), EngineError> {
        let vm = self.running()?;
        let mut qmp_guard = lock(&vm.qmp);
        let qmp = qmp_guard
            .as_mut()
            .ok_or_else(|| EngineError::InvalidState("the guest has been stopped".into()))?;
        let mut drives = lock(&vm.drives);
        let drive = drives
            .iter_mut()
            .find(|d| d.id == update.id)
            .ok_or_else(|| {
                EngineError::InvalidSpec(format!("the guest has no drive {:?}", update.id))
            })?;
        if drive.vhost_user && (update.path.is_some() || update.rate_limit.is_some()) {
            return Err(EngineError::InvalidSpec(format!(
                "the drive {:?} is served by a vhost-user backend: its backend owns the disk and its rate (only a drive_id may be patched)",
                update.id
            )));
        }
        if let Some(path) = &update.path {
            change_medium(qmp, drive, path)?;
        }
        if let Some(r) = &update.rate_limit {
            let args = Throttle::from_rate_limit(r).to_qmp(&drive.names.device);
            qmp.execute(&qapi::qmp::block_set_io_throttle(args))
                .map_err(|e: QmpError| -> EngineError { e.into() })?;
        }
        Ok(())
    }

    fn set_balloon(&self, amount_mib: u32) -> Result<(), EngineError> {
        self.set_balloon_impl(amount_mib)
    }

    fn balloon_stats(&self) -> Result<BalloonStats, EngineError> {
        self.balloon_stats_impl()
    }

    fn set_balloon_stats_interval(&self, secs: u16) -> Result<(), EngineError> {
        self.set_balloon_stats_interval_impl(secs)
    }

    fn update_net(&self, update: &NetUpdate) -> Result<(), EngineError> {
        let vm = self.running()?;
        let nets = lock(&vm.nets);
        nets.update(update)
    }
}

impl QemuEngine {
    fn balloon_state(vm: &Vm) -> Result<BalloonState, EngineError> {
        (*lock(&vm.balloon))
            .ok_or_else(|| EngineError::InvalidState("the guest has no balloon device".into()))
    }
}

/// The balloon methods of [`Engine`] for [`QemuEngine`].
impl QemuEngine {
    fn set_balloon_impl(&self, amount_mib: u32) -> Result<(), EngineError> {
        let vm = self.running()?;
        Self::balloon_state(&vm)?;
        if amount_mib > vm.mem_mib {
            return Err(EngineError::InvalidSpec(format!(
                "a balloon of {amount_mib} MiB is more than the guest's {} MiB",
                vm.mem_mib
            )));
        }
        self.with_qmp(|q| crate::balloon::set_target(q, vm.mem_mib, amount_mib))?;
        if let Some(b) = lock(&vm.balloon).as_mut() {
            b.target_mib = amount_mib;
        }
        Ok(())
    }

    fn balloon_stats_impl(&self) -> Result<BalloonStats, EngineError> {
        let vm = self.running()?;
        let b = Self::balloon_state(&vm)?;
        let mut stats = self.with_qmp(|q| crate::balloon::stats(q, vm.mem_mib, b.target_mib))?;
        if b.stats_interval_s == 0 {
            stats = BalloonStats {
                target_mib: stats.target_mib,
                actual_mib: stats.actual_mib,
                ..Default::default()
            };
        }
        Ok(stats)
    }

    fn set_balloon_stats_interval_impl(&self, secs: u16) -> Result<(), EngineError> {
        let vm = self.running()?;
        Self::balloon_state(&vm)?;
        self.with_qmp(|q| crate::balloon::set_stats_interval(q, secs))?;
        if let Some(b) = lock(&vm.balloon).as_mut() {
            b.stats_interval_s = secs;
        }
        Ok(())
    }
}

impl Drop for QemuEngine {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("stopping the guest on drop: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_are_short_and_safe() {
        assert_eq!(thread_name("vm1"), "ec1-qemu-vm1");
        assert_eq!(thread_name("a\0b/c d-long-name"), "ec1-qemu-abcd-l");
        assert!(thread_name("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}").len() <= 15);
    }

    #[test]
    fn default_options_fit_ec1() {
        let o = QemuOptions::default();
        assert_eq!(o.binary, None);
        assert_eq!(o.firmware, PathBuf::from(crate::DEFAULT_FIRMWARE));
        assert!(o.stop_grace < o.start_timeout);
    }
}
