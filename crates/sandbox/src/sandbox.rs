use crate::{make_engine, BootPath, BootTimings, RestoreTimings, SandboxError};
use ec1_client::{Client, ConnectOptions, Refresh};
use ec1_engine::{
    Arch, CacheType, Cmdline, DriveSpec, Engine, EngineChoice, EngineEvent, MemoryBacking,
    SerialOut, VmSpec,
};
use ec1_guest::initramfs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the agent may take to write back and close a writable root drive's
/// filesystem when a sandbox shuts down (what is dirty in a guest of a few hundred MiB
/// goes to the image in well under this, even under TCG).
pub const QUIESCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The guest console a sandbox keeps (to explain a failure): its last 1 MiB, so at
/// most 2 MiB of disk whatever the guest writes to its console.
pub const CONSOLE_LOG_MAX: u64 = 1 << 20;

/// How much of the console's end [`tail`] reads.
const TAIL_READ: u64 = 64 * 1024;

/// How long the image's own init (hand-off mode) may take to shut the guest down once
/// asked, before the VM is stopped anyway (what was written had been synced first).
pub const INIT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The kernel command line of a sandbox, before the root-mode keys: console on the
/// serial port (written to a file, read only on failure), reboot through the keyboard
/// controller, reboot at once on panic, and no boot chatter.
///
/// `lapic_khz` is read by ec1's kernel patch (`kernel/patches/`): QEMU's local APIC
/// timer counts at 1 GHz under both TCG and KVM, and telling the guest so skips about
/// 200 ms of timer calibration under TCG. A kernel without the patch passes it on to
/// `/init`'s environment, which the agent ignores. `noreplace-smp` keeps the `lock`
/// prefixes that a one-vCPU kernel would otherwise rewrite one by one at boot (~35 ms
/// of self-patching under TCG; atomics stay correct, a little slower).
pub const DEFAULT_BOOT_ARGS: &str =
    "console=ttyS0 reboot=k panic=-1 quiet loglevel=0 no_timer_check \
     i8042.noaux i8042.nomux i8042.dumbkbd lapic_khz=1000000 noreplace-smp";

/// [`DEFAULT_BOOT_ARGS`] for arm64 guests: no keyboard controller, no local APIC
/// (the architected timer needs no calibration), and `lock` prefixes are x86's.
/// `console=ttyS0` is Firecracker's console; the engine points it at its machine's
/// UART.
pub const DEFAULT_BOOT_ARGS_AARCH64: &str = "console=ttyS0 panic=-1 quiet loglevel=0";

/// The default kernel command line of `arch` guests.
pub fn default_boot_args(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => DEFAULT_BOOT_ARGS,
        Arch::Aarch64 => DEFAULT_BOOT_ARGS_AARCH64,
    }
}

/// Where the agent runs the commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootMode {
    /// In the injected initramfs (busybox).
    #[default]
    Initramfs,
    /// Inside the root drive, which the agent mounts (the image stays unchanged).
    Rootfs,
    /// The image's own init runs as PID 1; the agent serves beside it.
    Handoff,
}

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOptions {
    /// `None`: the default kernel (`ec1 kernel build`).
    pub kernel: Option<PathBuf>,
    /// The user's own initrd; the agent archive is appended to it.
    pub initrd: Option<PathBuf>,
    /// A raw disk image with a root filesystem (needed by `Rootfs` and `Handoff`).
    pub rootfs: Option<PathBuf>,
    pub rootfs_read_only: bool,
    pub mode: RootMode,
    pub vcpus: u8,
    pub mem_mib: u32,
    /// The guest's architecture; `None` follows the kernel (its image header), or the
    /// host's for the default kernel.
    pub arch: Option<Arch>,
    pub engine: EngineChoice,
    /// Appended to [`DEFAULT_BOOT_ARGS`].
    pub extra_boot_args: Vec<String>,
    /// How long the guest may take to boot to its agent.
    pub ready_timeout: Duration,
    /// The guest's host name. Not part of a boot template's key: it is set after the
    /// boot (or restore), so clones of one template can differ.
    pub hostname: Option<String>,
    /// [`Sandbox::from_template`] restores the template itself even when a pool of
    /// warm clones serves it.
    pub no_pool: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            kernel: None,
            initrd: None,
            rootfs: None,
            rootfs_read_only: false,
            mode: RootMode::Initramfs,
            vcpus: 1,
            mem_mib: 256,
            arch: None,
            engine: EngineChoice::auto(),
            extra_boot_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            hostname: None,
            no_pool: false,
        }
    }
}

impl SandboxOptions {
    /// The guest's architecture: [`SandboxOptions::arch`], else the kernel's, else
    /// the host's. A kernel of another architecture than the one asked for is an
    /// error, not a guest that never boots.
    pub fn guest_arch(&self) -> Result<Arch, SandboxError> {
        // A kernel that is not there is reported by the engine, naming the file.
        let of_kernel = self
            .kernel
            .as_deref()
            .filter(|k| k.exists())
            .map(Arch::of_kernel)
            .transpose()
            .map_err(SandboxError::Arch)?;
        match (self.arch, of_kernel) {
            (Some(asked), Some(found)) if asked != found => Err(SandboxError::Arch(format!(
                "--arch {asked} was asked for, but the kernel {} is built for {found}",
                self.kernel.as_deref().unwrap_or(Path::new("")).display()
            ))),
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => Ok(Arch::host()),
        }
    }
}

/// A booted guest whose agent answers. Dropping it stops the VM and removes its files.
pub struct Sandbox {
    engine: Arc<dyn Engine>,
    client: Client,
    timings: BootTimings,
    path: BootPath,
    restore: Option<RestoreTimings>,
    console: PathBuf,
    /// The guest has a writable root drive whose filesystem must be flushed and left
    /// clean before the VM is stopped (cleared once done). Only cold boots have one:
    /// templates refuse writable roots.
    quiesce_pending: bool,
    // Last: removed after the engine has stopped (see Drop).
    run_dir: Option<tempfile::TempDir>,
}

impl Sandbox {
    /// Boots a fresh microVM (always cold: see [`Sandbox::from_template`] for the fast
    /// way) and waits for its agent.
    pub fn boot(opts: &SandboxOptions) -> Result<Sandbox, SandboxError> {
        let t0 = Instant::now();
        let engine = make_engine(&opts.engine, opts.guest_arch()?)?;
        let mut sb = Sandbox::cold_boot(opts, engine, MemoryBacking::Anonymous, t0)?;
        if let Some(h) = &opts.hostname {
            sb.set_hostname(h)?;
        }
        Ok(sb)
    }

    /// Boots `opts` cold on `engine`, with guest RAM in `memory`. `t0` is when
    /// preparation began.
    pub(crate) fn cold_boot(
        opts: &SandboxOptions,
        engine: Arc<dyn Engine>,
        memory: MemoryBacking,
        t0: Instant,
    ) -> Result<Sandbox, SandboxError> {
        let arch = opts.guest_arch()?;
        let kernel = match &opts.kernel {
            Some(k) => k.clone(),
            None => ec1_guest::kernel::path(arch)?,
        };
        let initrd = initramfs::combined_initrd(
            opts.initrd.as_deref(),
            &initramfs::Options::for_arch(arch)?,
        )?;
        let run_dir = new_run_dir(RUN_DIR_PREFIX)?;
        let mut spec = spec_for(opts, kernel, initrd, run_dir.path())?;
        spec.memory = memory;
        let prepare = t0.elapsed();
        ec1_trace::event!("sandbox.prepared", ms = prepare.as_secs_f64() * 1000.0);

        let t1 = Instant::now();
        let signal = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let seen = signal.clone();
        engine.start(
            &spec,
            Arc::new(move |e| {
                if let EngineEvent::GuestBootSignal { at } = e {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(at);
                }
            }),
        )?;
        let engine_start = t1.elapsed();

        let t2 = Instant::now();
        let socket = spec.agent_socket.clone().unwrap_or_default();
        let console = run_dir.path().join("console.log");
        let client = connect_agent(&engine, &socket, &console, opts.ready_timeout)?;
        let guest_boot = t2.elapsed();
        let ready = client.ready_info();
        let timings = BootTimings {
            prepare,
            engine_start,
            guest_boot,
            guest_kernel: Duration::from_nanos(ready.agent_start_ns),
            guest_agent_ready: Duration::from_nanos(ready.agent_ready_ns),
            boot_signal: signal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(|at| at.saturating_duration_since(t2).min(guest_boot)),
            total: prepare + engine_start + guest_boot,
        };
        Ok(Sandbox {
            engine,
            client,
            timings,
            path: BootPath::Cold { why: None },
            restore: None,
            console,
            quiesce_pending: opts.rootfs.is_some() && !opts.rootfs_read_only,
            run_dir: Some(run_dir),
        })
    }

    /// A sandbox around a guest restored from a template (or claimed from a pool) and
    /// its reconnected agent.
    pub(crate) fn restored(
        engine: Arc<dyn Engine>,
        client: Client,
        path: BootPath,
        restore: RestoreTimings,
        console: PathBuf,
        run_dir: Option<tempfile::TempDir>,
    ) -> Sandbox {
        // The cold-boot view of the phases: preparation (lookup, and the build if there
        // was one), the engine (the restore), and the guest (reconnect and refresh).
        let prepare = restore
            .total
            .saturating_sub(restore.restore + restore.reconnect + restore.refresh);
        Sandbox {
            engine,
            client,
            timings: BootTimings {
                prepare,
                engine_start: restore.restore,
                guest_boot: restore.reconnect + restore.refresh,
                guest_kernel: Duration::ZERO,
                guest_agent_ready: Duration::ZERO,
                boot_signal: None,
                total: restore.total,
            },
            path,
            restore: Some(restore),
            console,
            quiesce_pending: false,
            run_dir,
        }
    }

    /// The directory of the sandbox's agent socket and console log.
    pub(crate) fn run_dir_path(&self) -> Option<&Path> {
        self.run_dir.as_ref().map(|d| d.path())
    }

    /// Sets the guest's host name (through the agent).
    fn set_hostname(&mut self, hostname: &str) -> Result<(), SandboxError> {
        let r = Refresh {
            hostname: Some(hostname.as_bytes().to_vec()),
            ..Refresh::default()
        };
        self.client
            .refresh_with(&r)
            .map_err(|error| SandboxError::Agent {
                error,
                console: tail(&self.console, 20),
            })?;
        Ok(())
    }

    /// Marks a cold boot with why no template was used.
    pub(crate) fn with_cold_reason(mut self, why: String) -> Sandbox {
        self.path = BootPath::Cold { why: Some(why) };
        self
    }

    /// Records whether a pool served this start's template (see [`PoolSeen`]).
    pub(crate) fn set_pool_seen(&mut self, seen: crate::PoolSeen) {
        if let BootPath::Template { pool, .. } = &mut self.path {
            *pool = seen;
        }
    }

    /// Whether the guest was booted cold or restored from a template.
    pub fn boot_path(&self) -> &BootPath {
        &self.path
    }

    /// The phases of a start from a template (`None` for a cold boot).
    pub fn restore_timings(&self) -> Option<&RestoreTimings> {
        self.restore.as_ref()
    }

    /// The agent connection: runs commands and moves files.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The file the guest's console goes to (its last [`CONSOLE_LOG_MAX`] bytes or so).
    pub fn console_log(&self) -> &Path {
        &self.console
    }

    /// The engine running the guest.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn timings(&self) -> &BootTimings {
        &self.timings
    }

    /// The last `lines` lines of the guest's serial console.
    pub fn console_tail(&self, lines: usize) -> String {
        tail(&self.console, lines)
    }

    /// Asks the agent to flush the guest's filesystems on drives and leave them clean
    /// (see [`Client::quiesce`]), if the guest has a writable root drive and this was
    /// not done yet. Bounded by [`QUIESCE_TIMEOUT`].
    fn quiesce(&mut self) -> Result<(), SandboxError> {
        if !std::mem::take(&mut self.quiesce_pending) {
            return Ok(());
        }
        let q = self
            .client
            .quiesce(QUIESCE_TIMEOUT)
            .map_err(|error| SandboxError::Quiesce {
                error,
                console: tail(&self.console, 20),
            })?;
        ec1_trace::event!(
            "sandbox.quiesced",
            remounted = q.remounted,
            frozen = q.frozen,
            init_shutdown = q.init_shutdown,
            ms = q.took.as_secs_f64() * 1000.0
        );
        if q.init_shutdown {
            // The image's init unmounts its filesystems and ends the guest.
            let t = Instant::now();
            match self.engine.wait(Some(INIT_SHUTDOWN_TIMEOUT)) {
                Ok(Some(_)) => {
                    ec1_trace::event!("sandbox.init_shut_down", ms = t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(None) => log::warn!(
                    "the image's init did not shut the guest down within {INIT_SHUTDOWN_TIMEOUT:?}; \
                     stopping it (its filesystems were synced, but may need their journal replayed)"
                ),
                Err(e) => log::warn!("waiting for the image's init to shut down: {e}"),
            }
        }
        Ok(())
    }

    /// Flushes a writable root drive's filesystem (see [`Sandbox::quiesce`]), stops the
    /// VM and removes its files; returns how long that took. The VM is stopped even
    /// when the flush failed, and the error then says that the image may lack writes.
    pub fn shutdown(mut self) -> Result<Duration, SandboxError> {
        let t = Instant::now();
        let flushed = self.quiesce();
        self.engine.stop()?;
        flushed?;
        if let Some(dir) = self.run_dir.take() {
            dir.close().map_err(|source| SandboxError::Io {
                context: "removing the sandbox's run directory".into(),
                source,
            })?;
        }
        Ok(t.elapsed())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Best effort on paths that did not call `shutdown` (an error, a panic).
        let _ = self.quiesce();
        let _ = self.engine.stop();
        // run_dir (if still held) is removed by its own Drop, after the engine stopped.
    }
}

/// How a sandbox's run directory (in the temporary directory) begins.
pub(crate) const RUN_DIR_PREFIX: &str = "ec1-sandbox-";

/// A private directory for a sandbox's sockets and console log, named `prefix...`. It
/// lives under `$TMPDIR`, not in the cache, because socket paths are limited to 107
/// bytes.
pub(crate) fn new_run_dir(prefix: &str) -> Result<tempfile::TempDir, SandboxError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| SandboxError::Io {
            context: "creating the sandbox's run directory".into(),
            source,
        })
}

/// Connects to the agent of a guest that `engine` runs; on failure the guest is stopped
/// and the error carries the end of its console.
pub(crate) fn connect_agent(
    engine: &Arc<dyn Engine>,
    socket: &Path,
    console: &Path,
    ready_timeout: Duration,
) -> Result<Client, SandboxError> {
    let connect = ConnectOptions {
        connect_timeout: Duration::from_secs(10),
        ready_timeout,
    };
    Client::connect(socket, &connect).map_err(|error| {
        let _ = engine.stop();
        SandboxError::Agent {
            error,
            console: tail(console, 20),
        }
    })
}

/// The machine for `opts`; `run_dir` holds the agent socket and console log. Public so
/// that a baseline (the benchmark's plain-QEMU run) boots exactly what a sandbox boots.
pub fn spec_for(
    opts: &SandboxOptions,
    kernel: PathBuf,
    initrd: PathBuf,
    run_dir: &Path,
) -> Result<VmSpec, SandboxError> {
    let arch = opts.guest_arch()?;
    let mut cmdline = Cmdline::new(default_boot_args(arch));
    let mut drives = Vec::new();
    match (opts.mode, &opts.rootfs) {
        (RootMode::Initramfs, _) => {}
        (mode, Some(image)) => {
            drives.push(DriveSpec {
                id: "rootfs".into(),
                path: image.clone(),
                read_only: opts.rootfs_read_only,
                cache: CacheType::Unsafe,
                rate_limit: None,
                vhost_user: false,
            });
            cmdline.push_params(&[
                match mode {
                    RootMode::Handoff => "ec1.mode=handoff",
                    _ => "ec1.mode=root",
                },
                "ec1.root=/dev/vda",
                if opts.rootfs_read_only { "ro" } else { "rw" },
            ]);
        }
        (mode, None) => {
            return Err(SandboxError::Options(format!(
                "the {mode:?} root mode needs a root filesystem image (--rootfs)"
            )))
        }
    }
    cmdline.push_params(&opts.extra_boot_args);
    Ok(VmSpec {
        id: "ec1-sandbox".into(),
        arch,
        kernel,
        initrd: Some(initrd),
        cmdline,
        vcpus: opts.vcpus,
        smt: false,
        mem_mib: opts.mem_mib,
        drives,
        serial: SerialOut::Capped {
            path: run_dir.join("console.log"),
            max_bytes: CONSOLE_LOG_MAX,
        },
        agent_socket: Some(run_dir.join("agent.sock")),
        memory: MemoryBacking::Anonymous,
        run_dir: run_dir.to_path_buf(),
        devices: Default::default(),
    })
}

/// The last `lines` lines of the console log, reading only its last 64 KiB.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_READ)));
        let _ = f.take(TAIL_READ).read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(opts: &SandboxOptions) -> Result<VmSpec, SandboxError> {
        spec_for(opts, "/k".into(), "/i".into(), Path::new("/run/x"))
    }

    #[test]
    fn initramfs_mode_has_no_drive() {
        let s = spec(&SandboxOptions::default()).unwrap();
        assert!(s.drives.is_empty());
        assert_eq!(s.cmdline, DEFAULT_BOOT_ARGS);
        assert_eq!(s.agent_socket, Some(PathBuf::from("/run/x/agent.sock")));
        assert_eq!(
            s.serial,
            SerialOut::Capped {
                path: "/run/x/console.log".into(),
                max_bytes: CONSOLE_LOG_MAX
            }
        );
        assert_eq!((s.vcpus, s.mem_mib), (1, 256));
    }

    #[test]
    fn root_and_handoff_modes_attach_the_image() {
        let mut o = SandboxOptions {
            rootfs: Some("/img".into()),
            mode: RootMode::Rootfs,
            rootfs_read_only: true,
            extra_boot_args: vec!["x=1".into()],
            ..Default::default()
        };
        let s = spec(&o).unwrap();
        assert_eq!(s.drives.len(), 1);
        assert!(s.drives[0].read_only);
        assert!(
            s.cmdline
                .as_str()
                .ends_with(" ec1.mode=root ec1.root=/dev/vda ro x=1"),
            "{}",
            s.cmdline
        );
        o.mode = RootMode::Handoff;
        o.rootfs_read_only = false;
        let s = spec(&o).unwrap();
        assert!(
            s.cmdline
                .as_str()
                .contains(" ec1.mode=handoff ec1.root=/dev/vda rw"),
            "{}",
            s.cmdline
        );
    }

    #[test]
    fn root_modes_need_an_image() {
        let o = SandboxOptions {
            mode: RootMode::Handoff,
            ..Default::default()
        };
        let e = spec(&o).unwrap_err().to_string();
        assert!(e.contains("--rootfs"), "{e}");
    }

    #[test]
    fn the_architecture_follows_the_kernel_unless_asked() {
        let d = tempfile::tempdir().unwrap();
        let image = d.path().join("Image");
        let mut header = vec![0u8; 64];
        header[56..60].copy_from_slice(b"ARM\x64");
        std::fs::write(&image, &header).unwrap();
        let mut o = SandboxOptions {
            kernel: Some(image.clone()),
            ..Default::default()
        };
        assert_eq!(o.guest_arch().unwrap(), Arch::Aarch64);
        let s = spec_for(&o, image.clone(), "/i".into(), Path::new("/r")).unwrap();
        assert_eq!(s.arch, Arch::Aarch64);
        assert_eq!(s.cmdline, DEFAULT_BOOT_ARGS_AARCH64);
        o.arch = Some(Arch::X86_64);
        let e = o.guest_arch().unwrap_err().to_string();
        assert!(e.contains("--arch x86_64") && e.contains("aarch64"), "{e}");
        o.arch = Some(Arch::Aarch64);
        assert_eq!(o.guest_arch().unwrap(), Arch::Aarch64);
        // Not a kernel: said so; not there: the engine names the missing file.
        std::fs::write(&image, b"#!/bin/sh\n").unwrap();
        o.arch = None;
        assert!(matches!(o.guest_arch(), Err(SandboxError::Arch(_))));
        o.kernel = Some(d.path().join("missing"));
        assert_eq!(o.guest_arch().unwrap(), Arch::host());
        // The default kernel: the architecture asked for, else the host's.
        o.kernel = None;
        assert_eq!(o.guest_arch().unwrap(), Arch::host());
        o.arch = Some(Arch::Aarch64);
        assert_eq!(o.guest_arch().unwrap(), Arch::Aarch64);
        assert_eq!(default_boot_args(Arch::X86_64), DEFAULT_BOOT_ARGS);
    }

    #[test]
    fn tail_of_missing_file_is_empty() {
        assert_eq!(tail(Path::new("/nonexistent/x"), 5), "");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.log");
        let mut big = "x".repeat(1 << 20);
        big.push_str("\nsecond last\nlast");
        std::fs::write(&p, big).unwrap();
        assert_eq!(tail(&p, 2), "second last\nlast");
    }
}
