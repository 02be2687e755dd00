//! The controller: Firecracker's `PrebootApiController` and `RuntimeApiController` in
//! one state machine, "Not started" → "Running" ↔ "Paused".
//!
//! Before `InstanceStart` it holds the [`VmResources`]; `InstanceStart` (or a snapshot
//! load) turns them into a [`VmSpec`], asks the injected [`EngineFactory`] for an engine
//! and starts the guest; from then on requests go to that `Arc<dyn Engine>`. Requests
//! are handled one at a time, as in Firecracker. Devices the engine cannot provide are
//! parsed and validated in full, then refused with a 400 naming the missing capability:
//! never a 204 for something that did not happen.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ec1_engine::{
    DriveUpdate, Engine, EngineError, EngineEvent, EventSink, ExitReason, MemoryBacking,
    NetOverride, SnapshotSource, SnapshotTarget, VmSpec,
};
use serde_json::{json, Value};

use crate::clock::{now_us, Clock};
use crate::config_file;
use crate::error::VmmActionError;
use crate::logger::Logger;
use crate::metrics::Metrics;
use crate::mmds::MmdsStore;
use crate::models::*;
use crate::resources::VmResources;
use crate::router::VmmAction;
use crate::spec;
use crate::validation;

mod devices;

/// The Firecracker API version ec1 implements (the spec is 1.17.0-dev). Clients such as
/// the Go SDK pick features from `GET /version`, so this is Firecracker's number.
pub const FIRECRACKER_API_VERSION: &str = "1.17.0";
/// `InstanceInfo.app_name`: Firecracker's, because clients and Firecracker's own test
/// framework check it (ec1 says what it is in `ec1 --version`'s later lines).
pub const APP_NAME: &str = "Firecracker";

/// Builds the engine for a machine. Injected so tests (and other engines) plug in.
pub type EngineFactory = Arc<dyn Fn(&VmSpec) -> Result<Arc<dyn Engine>, EngineError> + Send + Sync>;

/// Told once when the guest has ended.
pub type ExitNotifier = Arc<dyn Fn(ExitReason) + Send + Sync>;

/// What the controller needs to know about its process.
#[derive(Clone)]
pub struct VmmOptions {
    pub instance_id: String,
    /// Named in "not supported" messages, e.g. `qemu`.
    pub engine_name: String,
    /// What the engine offers; what it does not is refused at configuration time.
    pub capabilities: ec1_engine::Capabilities,
    pub engine_factory: EngineFactory,
    pub boot_timer: bool,
    pub mmds_size_limit: usize,
    /// Handed to the engine as [`VmSpec::run_dir`]; the caller creates and removes it.
    pub run_dir: PathBuf,
    /// `--start-time-us` (CLOCK_MONOTONIC): the boot timer's origin when given.
    pub start_time_us: Option<u64>,
    /// `--start-time-cpu-us` (process CPU clock).
    pub start_time_cpu_us: Option<u64>,
}

/// A successful answer: 204, or 200 with a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub enum VmmData {
    Empty,
    Json(Value),
}

/// When an action is allowed, per Firecracker's controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Any,
    PreBoot,
    PostBoot,
}

fn phase(a: &VmmAction) -> Phase {
    use VmmAction as A;
    match a {
        A::GetInstanceInfo
        | A::GetVersion
        | A::GetMachineConfig
        | A::GetFullVmConfig
        | A::GetBalloon
        | A::GetMmds
        | A::PutMmds(_)
        | A::PatchMmds(_) => Phase::Any,
        A::StartMicroVm
        | A::PutBalloon(_)
        | A::PutBootSource(_)
        | A::PutCpuConfig(_)
        | A::PutDrive(_)
        | A::PutPmem(_)
        | A::PutLogger(_)
        | A::PutMachineConfig(_)
        | A::PatchMachineConfig(_)
        | A::PutMetrics(_)
        | A::PutMmdsConfig(_)
        | A::PutEntropy(_)
        | A::PutSerial(_)
        | A::PutMemoryHotplug(_)
        | A::PutNetwork(_)
        | A::LoadSnapshot(_)
        | A::PutVsock(_) => Phase::PreBoot,
        A::FlushMetrics
        | A::SendCtrlAltDel
        | A::PatchBalloon(_)
        | A::PatchBalloonStats(_)
        | A::GetBalloonStats
        | A::StartBalloonHinting(_)
        | A::GetBalloonHintingStatus
        | A::StopBalloonHinting
        | A::PatchDrive(_)
        | A::DeleteDrive(_)
        | A::PatchPmem(_)
        | A::DeletePmem(_)
        | A::GetMemoryHotplug
        | A::PatchMemoryHotplug(_)
        | A::PatchNetwork(_)
        | A::DeleteNetwork(_)
        | A::CreateSnapshot(_)
        | A::PatchVm(_) => Phase::PostBoot,
    }
}

struct Inner {
    state: VmState,
    resources: VmResources,
    engine: Option<Arc<dyn Engine>>,
    /// A boot-specific resource was configured: snapshot load is no longer allowed.
    boot_path: bool,
    /// Shared with the guest's MMDS service once the guest runs.
    mmds: Arc<Mutex<MmdsStore>>,
}

/// Where the boot timer measures from.
#[derive(Debug, Clone, Copy)]
struct BootOrigin {
    wall_us: u64,
    cpu_us: u64,
}

/// The VMM controller of one ec1 process.
pub struct Vmm {
    opts: VmmOptions,
    logger: Arc<Logger>,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    on_exit: Mutex<Option<ExitNotifier>>,
    exited: AtomicBool,
    boot_origin: Mutex<Option<BootOrigin>>,
    boot_logged: AtomicBool,
}

fn lock_store(m: &Mutex<MmdsStore>) -> MutexGuard<'_, MmdsStore> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Maps an engine failure: a capability the engine lacks is "not supported"; anything
/// else is wrapped by `wrap` with the engine's own message.
fn engine_err(e: EngineError, wrap: fn(String) -> VmmActionError) -> VmmActionError {
    match e {
        EngineError::Unsupported { .. } => VmmActionError::NotSupported(e.to_string()),
        other => wrap(other.to_string()),
    }
}

impl Vmm {
    pub fn new(opts: VmmOptions, logger: Arc<Logger>, metrics: Arc<Metrics>) -> Arc<Vmm> {
        let mmds = Arc::new(Mutex::new(MmdsStore::new(opts.mmds_size_limit)));
        Arc::new(Vmm {
            opts,
            logger,
            metrics,
            inner: Mutex::new(Inner {
                state: VmState::NotStarted,
                resources: VmResources::default(),
                engine: None,
                boot_path: false,
                mmds,
            }),
            on_exit: Mutex::new(None),
            exited: AtomicBool::new(false),
            boot_origin: Mutex::new(None),
            boot_logged: AtomicBool::new(false),
        })
    }

    /// Sets who is told when the guest ends.
    pub fn set_exit_notifier(&self, f: ExitNotifier) {
        *self.on_exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    pub fn logger(&self) -> &Arc<Logger> {
        &self.logger
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current lifecycle state.
    pub fn state(&self) -> VmState {
        self.lock().state
    }

    /// The running engine, if the guest was started.
    pub fn engine(&self) -> Option<Arc<dyn Engine>> {
        self.lock().engine.clone()
    }

    /// A copy of the pre-boot configuration.
    pub fn resources(&self) -> VmResources {
        self.lock().resources.clone()
    }

    fn unsupported(&self, what: &str) -> VmmActionError {
        VmmActionError::NotSupported(format!(
            "{what} not supported yet by ec1's {} engine",
            self.opts.engine_name
        ))
    }

    /// `Ok` if the engine offers `feature`, else [`Vmm::unsupported`] with the engine's
    /// reason.
    fn require(&self, feature: ec1_engine::Feature, what: &str) -> Result<(), VmmActionError> {
        match feature {
            ec1_engine::Feature::Supported => Ok(()),
            ec1_engine::Feature::Missing { why: "" } => Err(self.unsupported(what)),
            ec1_engine::Feature::Missing { why } => {
                Err(self.unsupported(&format!("{what} ({why})")))
            }
        }
    }

    /// Handles one request, checking first that it is allowed in the current state.
    pub fn handle(self: &Arc<Self>, action: VmmAction) -> Result<VmmData, VmmActionError> {
        let mut inner = self.lock();
        let started = inner.state != VmState::NotStarted;
        match phase(&action) {
            Phase::PreBoot if started => return Err(VmmActionError::OperationNotSupportedPostBoot),
            Phase::PostBoot if !started => {
                return Err(VmmActionError::OperationNotSupportedPreBoot)
            }
            _ => {}
        }
        use VmmAction as A;
        let empty = Ok(VmmData::Empty);
        match action {
            A::GetInstanceInfo => Ok(VmmData::Json(json!(InstanceInfo {
                id: self.opts.instance_id.clone(),
                state: inner.state.as_str().to_string(),
                vmm_version: FIRECRACKER_API_VERSION.to_string(),
                app_name: APP_NAME.to_string(),
            }))),
            A::GetVersion => Ok(VmmData::Json(
                json!({ "firecracker_version": FIRECRACKER_API_VERSION }),
            )),
            A::GetMachineConfig => Ok(VmmData::Json(json!(inner.resources.machine_config))),
            A::GetFullVmConfig => Ok(VmmData::Json(json!(config_file::export(&inner.resources)))),
            A::GetMmds => Ok(VmmData::Json(lock_store(&inner.mmds).get())),
            A::PutMmds(v) => lock_store(&inner.mmds).put(v).and(empty),
            A::PatchMmds(v) => lock_store(&inner.mmds).patch(v).and(empty),

            A::StartMicroVm => self.start_microvm(&mut inner).and(empty),
            A::PutBootSource(cfg) => {
                inner.boot_path = true;
                inner
                    .resources
                    .set_boot_source(cfg)
                    .map_err(VmmActionError::BootSource)
                    .and(empty)
            }
            A::PutMachineConfig(u) | A::PatchMachineConfig(u) => {
                inner.boot_path = true;
                let next = validation::update_machine_config(&inner.resources.machine_config, &u)
                    .map_err(VmmActionError::MachineConfig)?;
                if next.huge_pages == HugePageConfig::Transparent {
                    // "2M" (hugetlbfs pages) is the alternative.
                    return Err(self.unsupported("transparent huge pages are"));
                }
                if next.cpu_template.is_some() {
                    return Err(self.unsupported("static CPU templates are"));
                }
                inner.resources.machine_config = next;
                empty
            }
            A::PutCpuConfig(t) => {
                validation::validate_cpu_template(&t).map_err(VmmActionError::ConfigureCpu)?;
                if !t.is_empty() {
                    return Err(self.unsupported("custom CPU templates are"));
                }
                inner.resources.cpu_template = None;
                empty
            }
            A::PutDrive(cfg) => {
                inner.boot_path = true;
                inner
                    .resources
                    .insert_drive(cfg)
                    .map_err(VmmActionError::DriveConfig)
                    .and(empty)
            }
            A::PatchDrive(u) => self.patch_drive(&mut inner, u).and(empty),
            A::PutLogger(cfg) => {
                self.logger
                    .configure(&cfg)
                    .map_err(VmmActionError::Logger)?;
                inner.resources.logger = Some(cfg);
                empty
            }
            A::PutMetrics(cfg) => {
                self.metrics.init(&cfg).map_err(VmmActionError::Metrics)?;
                inner.resources.metrics = Some(cfg);
                empty
            }
            A::PutSerial(cfg) => {
                inner.resources.serial = Some(cfg);
                empty
            }
            A::FlushMetrics => self
                .metrics
                .write()
                .map_err(VmmActionError::InternalVmm)
                .and(empty),
            A::SendCtrlAltDel => {
                let engine = inner.engine.clone();
                engine_call(engine, |e| e.send_ctrl_alt_del())
                    .map_err(|e| engine_err(e, VmmActionError::InternalVmm))
                    .and(empty)
            }
            A::PatchVm(target) => self.set_paused(&mut inner, target).and(empty),
            A::CreateSnapshot(p) => self.create_snapshot(&mut inner, p).and(empty),
            A::LoadSnapshot(p) => self.load_snapshot(&mut inner, p).and(empty),

            A::PutNetwork(cfg) => {
                inner.boot_path = true;
                self.put_network(&mut inner, cfg).and(empty)
            }
            A::PatchNetwork(u) => self.patch_network(&mut inner, u).and(empty),
            A::PutVsock(cfg) => {
                inner.boot_path = true;
                self.put_vsock(&mut inner, cfg).and(empty)
            }
            A::PutEntropy(cfg) => {
                inner.boot_path = true;
                self.put_entropy(&mut inner, cfg).and(empty)
            }
            A::PutBalloon(cfg) => {
                inner.boot_path = true;
                self.put_balloon(&mut inner, cfg).and(empty)
            }
            A::GetBalloon => self.get_balloon(&inner).map(VmmData::Json),
            A::PatchBalloon(u) => self.patch_balloon(&mut inner, u).and(empty),
            A::GetBalloonStats => self.balloon_stats(&inner).map(VmmData::Json),
            A::PatchBalloonStats(u) => self.patch_balloon_stats(&mut inner, u).and(empty),
            A::StartBalloonHinting(_) | A::GetBalloonHintingStatus | A::StopBalloonHinting => {
                Err(self.balloon_hinting(&inner))
            }
            A::PutPmem(cfg) => {
                inner.boot_path = true;
                if cfg.path_on_host.is_empty() {
                    return Err(VmmActionError::PmemDevice(
                        "path_on_host cannot be empty.".into(),
                    ));
                }
                Err(self.unsupported("virtio-pmem devices are"))
            }
            A::PatchPmem(_) => Err(self.unsupported("virtio-pmem devices are")),
            A::DeleteDrive(_) | A::DeletePmem(_) | A::DeleteNetwork(_) => {
                Err(self.unsupported("hot-unplugging devices is"))
            }
            A::PutMmdsConfig(cfg) => {
                inner.boot_path = true;
                self.put_mmds_config(&mut inner, cfg).and(empty)
            }
            A::PutMemoryHotplug(cfg) => {
                inner.boot_path = true;
                validation::validate_memory_hotplug(&cfg)
                    .map_err(VmmActionError::MemoryHotplugConfig)?;
                Err(self.unsupported("memory hotplug (virtio-mem) is"))
            }
            A::GetMemoryHotplug | A::PatchMemoryHotplug(_) => {
                Err(self.unsupported("memory hotplug (virtio-mem) is"))
            }
        }
    }

    fn event_sink(self: &Arc<Self>) -> EventSink {
        let weak: Weak<Vmm> = Arc::downgrade(self);
        Arc::new(move |ev| {
            if let Some(vmm) = weak.upgrade() {
                match ev {
                    EngineEvent::GuestBootSignal { .. } => vmm.on_boot_signal(),
                    EngineEvent::Exited { reason, .. } => vmm.on_guest_exit(reason),
                }
            }
        })
    }

    /// Logs Firecracker's boot-time line once, if `--boot-timer` was given.
    fn on_boot_signal(&self) {
        if !self.opts.boot_timer || self.boot_logged.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(origin) = *self.boot_origin.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        let us = now_us(Clock::Monotonic).saturating_sub(origin.wall_us);
        let cpu_us = now_us(Clock::ProcessCpu).saturating_sub(origin.cpu_us);
        self.metrics.store("vmm", "guest_boot_time_us", us);
        self.metrics.store("vmm", "guest_boot_time_cpu_us", cpu_us);
        self.logger.log_at(
            log::Level::Info,
            module_path!(),
            format_args!(
                "Guest-boot-time = {:>6} us {} ms, {:>6} CPU us {} CPU ms",
                us,
                us / 1000,
                cpu_us,
                cpu_us / 1000
            ),
        );
    }

    /// Records the guest's end and tells the notifier, once.
    pub fn on_guest_exit(&self, reason: ExitReason) {
        if self.exited.swap(true, Ordering::SeqCst) {
            return;
        }
        let notify = self
            .on_exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(f) = notify {
            f(reason);
        }
    }

    /// Whether the guest has ended.
    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::SeqCst)
    }

    /// Backs up the engine's events with a thread blocked in [`Engine::wait`], so an
    /// engine that ends without an `Exited` event is still noticed.
    fn watch(self: &Arc<Self>, engine: Arc<dyn Engine>) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("ec1_wait".into())
            .spawn(move || {
                if let Ok(Some(reason)) = engine.wait(None) {
                    if let Some(vmm) = weak.upgrade() {
                        vmm.on_guest_exit(reason);
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot watch the engine from a thread ({e}); relying on its events");
        }
    }

    fn mark_boot_origin(&self) {
        let origin = BootOrigin {
            wall_us: self
                .opts
                .start_time_us
                .unwrap_or_else(|| now_us(Clock::Monotonic)),
            cpu_us: self
                .opts
                .start_time_cpu_us
                .unwrap_or_else(|| now_us(Clock::ProcessCpu)),
        };
        *self.boot_origin.lock().unwrap_or_else(|e| e.into_inner()) = Some(origin);
    }

    fn start_microvm(self: &Arc<Self>, inner: &mut Inner) -> Result<(), VmmActionError> {
        let mut spec = spec::build_vm_spec(
            &inner.resources,
            &self.opts.instance_id,
            &self.opts.run_dir,
            &self.metrics.serial_dropped(),
        )
        .map_err(|e| VmmActionError::StartMicrovm(e.to_string()))?;
        if let Some(cfg) = &inner.resources.mmds_config {
            devices::attach_mmds(&mut spec, cfg, &inner.mmds);
        }
        let engine = (self.opts.engine_factory)(&spec)
            .map_err(|e| engine_err(e, VmmActionError::StartMicrovm))?;
        self.mark_boot_origin();
        if let Err(e) = engine.start(&spec, self.event_sink()) {
            let _ = engine.stop();
            return Err(engine_err(e, VmmActionError::StartMicrovm));
        }
        log::info!("Successfully started microvm.");
        inner.engine = Some(engine.clone());
        inner.state = VmState::Running;
        self.watch(engine);
        Ok(())
    }

    fn patch_drive(
        &self,
        inner: &mut Inner,
        u: BlockDeviceUpdateConfig,
    ) -> Result<(), VmmActionError> {
        let fail = |m: String| {
            VmmActionError::DriveConfig(format!(
                "Unable to patch the block device: {m} Please verify the request arguments."
            ))
        };
        let Some(index) = inner
            .resources
            .drives
            .iter()
            .position(|d| d.drive_id == u.drive_id)
        else {
            return Err(fail(format!(
                "no drive with id `{}` is attached.",
                u.drive_id
            )));
        };
        if u.path_on_host.is_none() && u.rate_limiter.is_none() {
            return Err(fail(
                "nothing to change: give path_on_host and/or rate_limiter.".into(),
            ));
        }
        if let Some(p) = &u.path_on_host {
            let read_only = inner.resources.drives[index].is_read_only.unwrap_or(false);
            std::fs::OpenOptions::new()
                .read(true)
                .write(!read_only)
                .open(p)
                .map_err(|e| fail(format!("cannot open {p}: {e}.")))?;
        }
        let update = DriveUpdate {
            id: u.drive_id.clone(),
            path: u.path_on_host.as_ref().map(PathBuf::from),
            rate_limit: u.rate_limiter.map(|r| ec1_engine::RateLimit {
                bandwidth: r.bandwidth.and_then(TokenBucketConfig::to_engine),
                ops: r.ops.and_then(TokenBucketConfig::to_engine),
            }),
        };
        engine_call(inner.engine.clone(), |e| e.update_drive(&update)).map_err(|e| match e {
            EngineError::Unsupported { .. } => VmmActionError::NotSupported(e.to_string()),
            other => fail(format!("{other}.")),
        })?;
        let d = &mut inner.resources.drives[index];
        if let Some(p) = u.path_on_host {
            d.path_on_host = Some(p);
        }
        if let Some(r) = u.rate_limiter {
            d.rate_limiter = Some(r);
        }
        Ok(())
    }

    fn set_paused(&self, inner: &mut Inner, target: VmStateUpdate) -> Result<(), VmmActionError> {
        let (want, latency) = match target {
            VmStateUpdate::Paused => (VmState::Paused, "pause_vm"),
            VmStateUpdate::Resumed => (VmState::Running, "resume_vm"),
        };
        if inner.state == want {
            return Ok(());
        }
        let t0 = now_us(Clock::Monotonic);
        engine_call(inner.engine.clone(), |e| match target {
            VmStateUpdate::Paused => e.pause(),
            VmStateUpdate::Resumed => e.resume(),
        })
        .map_err(|e| engine_err(e, VmmActionError::InternalVmm))?;
        let took = now_us(Clock::Monotonic).saturating_sub(t0);
        self.metrics.store("latencies_us", latency, took);
        self.metrics
            .store("latencies_us", &format!("vmm_{latency}"), took);
        inner.state = want;
        Ok(())
    }

    fn create_snapshot(
        &self,
        inner: &mut Inner,
        p: CreateSnapshotParams,
    ) -> Result<(), VmmActionError> {
        if inner.state != VmState::Paused {
            return Err(VmmActionError::CreateSnapshot(
                "The microVM must be paused before a snapshot is created: send PATCH /vm {\"state\": \"Paused\"} first.".into(),
            ));
        }
        let diff = p.snapshot_type == SnapshotType::Diff;
        let target = SnapshotTarget {
            state_path: p.snapshot_path,
            mem_path: p.mem_file_path,
            diff,
        };
        let t0 = now_us(Clock::Monotonic);
        engine_call(inner.engine.clone(), |e| e.snapshot(&target))
            .map_err(|e| engine_err(e, VmmActionError::CreateSnapshot))?;
        let name = if diff {
            "diff_create_snapshot"
        } else {
            "full_create_snapshot"
        };
        self.metrics.store(
            "latencies_us",
            name,
            now_us(Clock::Monotonic).saturating_sub(t0),
        );
        Ok(())
    }

    fn load_snapshot(
        self: &Arc<Self>,
        inner: &mut Inner,
        p: LoadSnapshotConfig,
    ) -> Result<(), VmmActionError> {
        if inner.boot_path {
            return Err(VmmActionError::LoadSnapshot(
                "Loading a microVM snapshot not allowed after configuring boot-specific resources."
                    .into(),
            ));
        }
        let mem_path = match (p.mem_backend, p.mem_file_path) {
            (Some(b), _) if b.backend_type == MemBackendType::Uffd => {
                return Err(self.unsupported("userfaultfd (Uffd) memory backends are"))
            }
            (Some(b), _) => b.backend_path,
            (None, Some(path)) => path,
            (None, None) => {
                return Err(VmmActionError::LoadSnapshot(
                    "either `mem_backend` or `mem_file_path` is required".into(),
                ))
            }
        };
        if p.vsock_override.is_some() {
            return Err(self.unsupported("vsock devices are"));
        }
        if matches!(
            p.huge_pages,
            Some(SnapshotHugePages::Hugetlbfs2M | SnapshotHugePages::Transparent)
        ) {
            return Err(self.unsupported("huge pages are"));
        }
        let mc = &inner.resources.machine_config;
        // A restore boots no kernel: the engine takes the machine from the snapshot.
        let spec = VmSpec {
            id: self.opts.instance_id.clone(),
            // The engine for the snapshot's guest; an unreadable snapshot is refused
            // by the engine, which says why.
            arch: ec1_engine::registry::describe_snapshot(&p.snapshot_path)
                .map(|info| info.arch)
                .unwrap_or(ec1_engine::Arch::host()),
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: Default::default(),
            vcpus: mc.vcpu_count,
            smt: mc.smt,
            mem_mib: u32::try_from(mc.mem_size_mib).unwrap_or(u32::MAX),
            drives: Vec::new(),
            serial: spec::serial_out(
                inner.resources.serial.as_ref(),
                &self.metrics.serial_dropped(),
            ),
            agent_socket: None,
            memory: MemoryBacking::Anonymous,
            run_dir: self.opts.run_dir.clone(),
            devices: Default::default(),
        };
        let mut source = SnapshotSource {
            state_path: p.snapshot_path,
            mem_path,
            resume: p.resume_vm,
            net_overrides: p
                .network_overrides
                .into_iter()
                .map(|o| NetOverride {
                    iface_id: o.iface_id,
                    tap: o.host_dev_name,
                })
                .collect(),
            metadata: None,
        };
        let t0 = now_us(Clock::Monotonic);
        let engine = (self.opts.engine_factory)(&spec)
            .map_err(|e| engine_err(e, VmmActionError::LoadSnapshot))?;
        // The MMDS comes back as it was configured (its data store starts empty, as
        // in Firecracker).
        let load_err = |m: String| {
            VmmActionError::LoadSnapshot(format!("Failed to restore from snapshot: {m}"))
        };
        let mmds = match engine.snapshot_metadata(&source.state_path) {
            Ok(Some(settings)) => Some(devices::mmds_config_of(&settings).map_err(load_err)?),
            Ok(None) => None,
            Err(e) => return Err(engine_err(e, load_err)),
        };
        if let Some(cfg) = &mmds {
            source.metadata = Some(devices::mmds_service(cfg, &inner.mmds));
        }
        self.mark_boot_origin();
        if let Err(e) = engine.restore(&spec, &source, self.event_sink()) {
            let _ = engine.stop();
            return Err(engine_err(e, |m| {
                VmmActionError::LoadSnapshot(format!("Failed to restore from snapshot: {m}"))
            }));
        }
        self.metrics.store(
            "latencies_us",
            "load_snapshot",
            now_us(Clock::Monotonic).saturating_sub(t0),
        );
        inner.engine = Some(engine.clone());
        if mmds.is_some() {
            inner.resources.mmds_config = mmds;
        }
        inner.state = if p.resume_vm {
            VmState::Running
        } else {
            VmState::Paused
        };
        self.watch(engine);
        Ok(())
    }

    /// Stops the guest (idempotent); used at exit and on SIGTERM/SIGINT.
    pub fn stop(&self) -> Result<(), EngineError> {
        match self.engine() {
            Some(e) => e.stop(),
            None => Ok(()),
        }
    }
}

/// Calls the engine of a started VM.
fn engine_call<T>(
    engine: Option<Arc<dyn Engine>>,
    f: impl FnOnce(&dyn Engine) -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    match engine {
        Some(e) => f(e.as_ref()),
        None => Err(EngineError::InvalidState(
            "the microVM has no engine: it was not started".into(),
        )),
    }
}
