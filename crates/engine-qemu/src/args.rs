//! The QEMU command line for a [`VmSpec`]: a pure translation, tested without a VM.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use ec1_engine::{
    Arch, CacheType, Cmdline, EngineError, MemoryBacking, SerialOut, VmSpec, MAX_CMDLINE,
};

use crate::accel::Accel;

use crate::devices::Discovery;
use crate::throttle::Throttle;
use crate::validate::check_spec;
use crate::BOOT_TIMER_PORT;

/// QEMU's `-sandbox` setting (see [`qemu_args`]).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// The console Firecracker's guests are told to use, and what it is on arm64's `virt`
/// (a PL011 UART, where Firecracker's arm64 machine has an 8250).
const X86_CONSOLE: &str = "console=ttyS0";
const VIRT_CONSOLE: &str = "console=ttyAMA0";

/// Where `microvm` maps its virtio-mmio transports, how far apart, and the first one's
/// IRQ (without ACPI there is one I/O APIC and 8 transports). The engine places devices
/// on explicit transports and writes the guest's `virtio_mmio.device=` parameters itself
/// (`auto-kernel-cmdline=off`), because QEMU would append them after any `--`.
const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
const VIRTIO_MMIO_SIZE: u64 = 512;
const VIRTIO_IRQ_BASE: u64 = 5;

/// The name QEMU gives the virtio-mmio transport bus number `index`.
fn virtio_bus(index: usize) -> String {
    format!("virtio-mmio-bus.{index}")
}

/// The guest kernel parameter that makes Linux probe transport `index`.
fn virtio_param(index: usize) -> String {
    let i = index as u64;
    format!(
        "virtio_mmio.device={VIRTIO_MMIO_SIZE}@{:#x}:{}",
        VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE,
        VIRTIO_IRQ_BASE + i
    )
}

/// QEMU's names for the drive at position `index` of [`VmSpec::drives`]. Firecracker
/// drive ids are not valid QEMU ids in general, so the engine numbers its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DriveNames {
    /// The `-drive` id (the block backend).
    pub backend: String,
    /// The raw format node the device reads through; a media change re-points its file.
    pub format_node: String,
    /// The qdev id of the virtio-blk device (throttling is set through it).
    pub device: String,
}

impl DriveNames {
    pub fn new(index: usize) -> DriveNames {
        DriveNames {
            backend: format!("drive{index}"),
            format_node: format!("drive{index}-fmt"),
            device: format!("blk{index}"),
        }
    }

    /// The protocol (file) node of generation `generation` of the medium.
    pub fn file_node(&self, generation: u64) -> String {
        format!("{}-file{generation}", self.backend)
    }
}

/// What the command line depends on besides the [`VmSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsContext {
    pub accel: Accel,
    /// The firmware image (`-bios`), normally [`crate::DEFAULT_FIRMWARE`] on x86_64;
    /// `None` boots the kernel with QEMU's own loader (arm64's `virt`).
    pub firmware: Option<PathBuf>,
    /// The host TSC rate in kHz, passed to the guest under TCG (see `host.rs`); `None`
    /// leaves the guest to calibrate.
    pub tsc_khz: Option<u64>,
    /// A listening Unix socket QEMU inherits and serves QMP on.
    pub qmp_fd: RawFd,
    /// QEMU's end of a connected socket pair that carries the boot-timer port's bytes.
    pub boot_timer_fd: RawFd,
    /// For [`SerialOut::Capped`] and [`SerialOut::Limited`]: QEMU's end of the socket
    /// pair its console goes to.
    pub console_fd: Option<RawFd>,
    /// For a rate-limited entropy device: QEMU's end of the socket pair its `rng-egd`
    /// backend asks ec1 for bytes on (see `entropy.rs`).
    pub entropy_fd: Option<RawFd>,
    /// For [`MemoryBacking::Shared`]: the memfd that QEMU inherits and maps as guest
    /// RAM (the engine keeps its own descriptor of it to save the RAM).
    pub ram_fd: Option<RawFd>,
}

/// Escapes a QEMU option value: a `,` is written `,,`.
pub(crate) fn escape(v: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(v.len());
    for &b in v.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// `prefix` followed by the escaped `path` and `suffix`.
fn with_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(escape(path.as_os_str()));
    s.push(suffix);
    s
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The guest kernel command line: the spec's, plus the engine's device parameters and,
/// under TCG, a fixed TSC rate (unless the spec sets `tsc=` itself).
///
/// On arm64's `virt` the device tree describes the transports and the clock, so the
/// engine only points Firecracker's `console=ttyS0` at the machine's PL011.
pub(crate) fn kernel_cmdline(spec: &VmSpec, ctx: &ArgsContext) -> Result<String, EngineError> {
    if spec.arch == Arch::Aarch64 {
        return checked_length(spec, spec.cmdline.replacing(X86_CONSOLE, VIRT_CONSOLE));
    }
    let mut extra: Vec<String> = Vec::new();
    if crate::devices::discovery(spec) == Discovery::KernelParams {
        let transports = crate::devices::transport_count(spec);
        extra.extend(
            crate::devices::usable_transports(spec)
                .into_iter()
                .take(transports)
                .map(virtio_param),
        );
        // This machine has no ACPI tables: a kernel built with ACPI (ec1's, and
        // Firecracker's guest kernels) would scan for them and log an error.
        if !spec.cmdline.has("acpi") {
            extra.push("acpi=off".into());
        }
    }
    if ctx.accel == Accel::Tcg && !spec.cmdline.has("tsc") {
        if let Some(khz) = ctx.tsc_khz {
            if !spec.cmdline.has("tsc_early_khz") {
                extra.push(format!("tsc_early_khz={khz}"));
            }
            extra.push("tsc=reliable".into());
        }
    }
    checked_length(spec, spec.cmdline.with_params(&extra))
}

/// `cmdline` (`spec`'s with the engine's additions), if Linux accepts its length.
fn checked_length(spec: &VmSpec, cmdline: Cmdline) -> Result<String, EngineError> {
    if cmdline.len() >= MAX_CMDLINE {
        return Err(EngineError::InvalidSpec(format!(
            "the kernel command line is {} bytes with the engine's additions ({} bytes of it); Linux accepts at most {}",
            cmdline.len(),
            cmdline.len().saturating_sub(spec.cmdline.len()),
            MAX_CMDLINE - 1
        )));
    }
    Ok(cmdline.to_string())
}

/// The complete QEMU argv (without the program name) for `spec`.
///
/// The machine starts with its vCPUs stopped (`-S`): the engine connects to QMP first
/// and then sends `cont`. Fails with [`EngineError::InvalidSpec`] for a machine QEMU
/// cannot run; it looks at no file (see the engine for that).
pub fn qemu_args(spec: &VmSpec, ctx: &ArgsContext) -> Result<Vec<OsString>, EngineError> {
    check_spec(spec)?;
    let cmdline = kernel_cmdline(spec, ctx)?;
    let mut a = Argv::default();

    let mut machine = String::from(match crate::devices::discovery(spec) {
        Discovery::KernelParams => {
            "microvm,acpi=off,x-option-roms=off,isa-serial=on,rtc=on,auto-kernel-cmdline=off"
        }
        // qboot (`-bios`) loads QEMU's ACPI tables too; the second I/O APIC carries
        // the 24 transports.
        Discovery::Acpi => {
            "microvm,acpi=on,ioapic2=on,x-option-roms=off,isa-serial=on,rtc=on,auto-kernel-cmdline=off"
        }
        // GICv3 as on Firecracker's arm64 guests (and for more than 8 vCPUs); no
        // EL2/EL3, no ACPI tables and no PCIe window above 4 GiB to describe.
        Discovery::DeviceTree => {
            "virt,gic-version=3,acpi=off,highmem=off,virtualization=off,secure=off"
        }
    });
    if matches!(
        spec.memory,
        MemoryBacking::File { .. } | MemoryBacking::Shared | MemoryBacking::HugePages
    ) || crate::devices::needs_shared_memory(spec)
    {
        machine.push_str(",memory-backend=mem");
    }
    a.opt("-M", machine);
    match (ctx.accel, spec.arch) {
        (Accel::Tcg, Arch::X86_64) => a.opt("-accel", "tcg").opt("-cpu", "max"),
        // `max` with QEMU's own pointer-authentication algorithm: the architected
        // one (QARMA) costs the guest's every function return under TCG.
        (Accel::Tcg, Arch::Aarch64) => a.opt("-accel", "tcg").opt("-cpu", "max,pauth-impdef=on"),
        (Accel::Kvm, _) => a.opt("-accel", "kvm").opt("-cpu", "host"),
        (Accel::Hvf, _) => a.opt("-accel", "hvf").opt("-cpu", "host"),
    };
    let threads = if spec.smt && spec.vcpus > 1 { 2 } else { 1 };
    let cores = spec.vcpus / threads;
    a.opt(
        "-smp",
        format!("{},sockets=1,cores={cores},threads={threads}", spec.vcpus),
    );
    let mem = format!("{}M", spec.mem_mib);
    a.opt("-m", mem.as_str());
    for flag in ["-nodefaults", "-no-user-config"] {
        a.flag(flag);
    }
    // QEMU's own seccomp filter, as tight as its features allow: no obsolete system
    // calls, no setuid/setgid, no fork/exec (ec1 passes QEMU every socket and file
    // descriptor it needs), no scheduler or CPU-affinity changes. A guest that
    // escapes into QEMU meets it first.
    a.opt("-sandbox", SANDBOX);
    a.opt("-display", "none").flag("-no-reboot").flag("-S");
    if let Some(firmware) = &ctx.firmware {
        a.opt("-bios", firmware.as_os_str());
    }
    if let MemoryBacking::File { path, shared } = &spec.memory {
        a.opt(
            "-object",
            with_path(
                &format!("memory-backend-file,id=mem,size={mem},mem-path="),
                path,
                // A private mapping is a clone's copy-on-write view of a snapshot's
                // memory file: opened read-only (the file is never written, so many
                // clones share it) yet writable RAM for the guest (`rom=off`).
                if *shared {
                    ",share=on"
                } else {
                    ",share=off,readonly=on,rom=off"
                },
            ),
        );
    } else if matches!(
        spec.memory,
        MemoryBacking::Shared | MemoryBacking::HugePages
    ) {
        let huge = spec.memory == MemoryBacking::HugePages;
        a.opt(
            "-object",
            match ctx.ram_fd {
                // The engine's memfd, opened by QEMU through its own descriptor table
                // (on hugetlbfs for huge pages, which QEMU sees and aligns to).
                Some(fd) => format!(
                    "memory-backend-file,id=mem,size={mem},mem-path=/proc/self/fd/{fd},share=on"
                ),
                // Without one (a command line shown, not run): QEMU's own memfd.
                None if huge => format!(
                    "memory-backend-memfd,id=mem,size={mem},share=on,hugetlb=on,hugetlbsize=2M"
                ),
                None => format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            },
        );
    } else if crate::devices::needs_shared_memory(spec) {
        // A vhost-user backend maps guest RAM from the descriptor QEMU sends it.
        a.opt(
            "-object",
            format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        );
    }
    a.opt(
        "-chardev",
        format!("socket,id=qmp,fd={},server=on,wait=off", ctx.qmp_fd),
    )
    .opt("-mon", "chardev=qmp,mode=control");
    if spec.arch == Arch::X86_64 {
        // The AT keyboard controller: Ctrl-Alt-Del and the guest's `reboot=k` go
        // through it.
        a.opt("-device", "i8042");
    }

    let serial: OsString = match &spec.serial {
        SerialOut::Stdio => "stdio,id=ser0,signal=off".into(),
        SerialOut::File(p) => with_path("file,id=ser0,path=", p, ",append=on"),
        SerialOut::Null => "null,id=ser0".into(),
        SerialOut::Capped { path, .. } => match ctx.console_fd {
            Some(fd) => format!("socket,id=ser0,fd={fd}").into(),
            // Without one (a command line shown, not run): the file itself.
            None => with_path("file,id=ser0,path=", path, ""),
        },
        SerialOut::Limited { to, .. } => match (ctx.console_fd, to) {
            (Some(fd), _) => format!("socket,id=ser0,fd={fd}").into(),
            (None, Some(p)) => with_path("file,id=ser0,path=", p, ",append=on"),
            (None, None) => "stdio,id=ser0,signal=off".into(),
        },
    };
    a.opt("-chardev", serial).opt("-serial", "chardev:ser0");

    a.opt(
        "-chardev",
        format!("socket,id=boottimer,fd={}", ctx.boot_timer_fd),
    );
    if spec.arch == Arch::X86_64 {
        a.opt(
            "-device",
            format!("isa-debugcon,iobase={BOOT_TIMER_PORT:#x},chardev=boottimer"),
        );
    }

    let slots = crate::devices::usable_transports(spec);
    let slot = |i: usize| {
        slots.get(i).copied().ok_or_else(|| {
            EngineError::InvalidSpec(format!(
                "the guest needs more than the {} virtio transports the QEMU engine has",
                slots.len()
            ))
        })
    };
    if spec.drives.iter().any(|d| d.vhost_user) {
        // vhost-user backends (libvhost-user's among them) serve virtio 1.0 devices
        // only; microvm's transports are legacy (version 1) unless told otherwise.
        a.opt("-global", "virtio-mmio.force-legacy=false");
    }
    for (i, d) in spec.drives.iter().enumerate() {
        let n = DriveNames::new(i);
        if d.vhost_user {
            // The backend serves the disk; QEMU connects the device to its socket
            // (guest RAM is shared: the backend maps it).
            a.opt(
                "-chardev",
                with_path(&format!("socket,id=vub{i},path="), &d.path, ""),
            )
            .opt(
                "-device",
                format!(
                    "vhost-user-blk,chardev=vub{i},id={},num-queues=1,bus={}",
                    n.device,
                    virtio_bus(slot(i)?)
                ),
            );
            continue;
        }
        let mut opt = with_path(
            &format!(
                "if=none,id={},node-name={},format=raw,file.driver=file,file.filename=",
                n.backend, n.format_node
            ),
            &d.path,
            &format!(
                ",file.node-name={},file.locking={},readonly={},cache={},werror=report,rerror=report",
                n.file_node(0),
                on_off(crate::image_lock::locks(d.read_only)),
                on_off(d.read_only),
                match d.cache {
                    CacheType::Unsafe => "unsafe",
                    CacheType::Writeback => "writeback",
                }
            ),
        );
        if let Some(r) = &d.rate_limit {
            for t in Throttle::from_rate_limit(r).drive_options() {
                opt.push(",");
                opt.push(t);
            }
        }
        a.opt("-drive", opt).opt(
            "-device",
            format!(
                "virtio-blk-device,drive={},id={},bus={}",
                n.backend,
                n.device,
                virtio_bus(slot(i)?)
            ),
        );
    }
    if let Some(sock) = &spec.agent_socket {
        // Two ports (0 is reserved for a console, the agent's is 1) instead of QEMU's
        // 31: the guest driver sets up two virtqueues per port at probe, which took
        // ~60 ms of the boot under TCG with 31. A machine without I/O ports has a
        // third, where the agent writes the boot signal.
        let boot_port = spec.arch != Arch::X86_64;
        a.opt(
            "-device",
            format!(
                "virtio-serial-device,id=agentbus,max_ports={},bus={}",
                2 + u8::from(boot_port),
                virtio_bus(slot(spec.drives.len())?)
            ),
        )
        .opt(
            "-chardev",
            with_path("socket,id=agent,path=", sock, ",server=on,wait=off"),
        )
        .opt(
            "-device",
            format!(
                "virtserialport,chardev=agent,name={}",
                ec1_proto::channel::AGENT_PORT
            ),
        );
        if boot_port {
            a.opt(
                "-device",
                format!(
                    "virtserialport,chardev=boottimer,name={}",
                    ec1_proto::channel::BOOT_PORT
                ),
            );
        }
    }
    let mut devices = Vec::new();
    crate::devices::device_args(
        spec,
        spec.drives.len() + usize::from(spec.agent_socket.is_some()),
        virtio_bus,
        ctx.entropy_fd,
        &mut devices,
    )?;
    for (flag, value) in devices {
        a.opt(flag, value);
    }

    a.opt("-kernel", spec.kernel.as_os_str());
    if let Some(initrd) = &spec.initrd {
        a.opt("-initrd", initrd.as_os_str());
    }
    a.opt("-append", cmdline);
    Ok(a.0)
}

/// An argv under construction.
#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn flag(&mut self, flag: &str) -> &mut Self {
        self.0.push(flag.into());
        self
    }

    fn opt(&mut self, flag: &str, value: impl Into<OsString>) -> &mut Self {
        self.0.push(flag.into());
        self.0.push(value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_engine::{DriveSpec, RateLimit, TokenBucket};

    fn spec() -> VmSpec {
        VmSpec {
            id: "vm1".into(),
            arch: ec1_engine::Arch::X86_64,
            kernel: "/k/vmlinux".into(),
            initrd: Some("/k/initrd.cpio".into()),
            cmdline: "console=ttyS0 reboot=k panic=-1".into(),
            vcpus: 2,
            smt: false,
            mem_mib: 256,
            drives: vec![],
            serial: SerialOut::Null,
            agent_socket: None,
            memory: MemoryBacking::Anonymous,
            run_dir: "/run/ec1/vm1".into(),
            devices: Default::default(),
        }
    }

    fn ctx() -> ArgsContext {
        ArgsContext {
            accel: Accel::Tcg,
            firmware: Some("/usr/share/qemu/qboot.rom".into()),
            tsc_khz: Some(2_445_424),
            qmp_fd: 10,
            boot_timer_fd: 11,
            console_fd: None,
            entropy_fd: None,
            ram_fd: None,
        }
    }

    fn strings(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    fn args(s: &VmSpec, c: &ArgsContext) -> Vec<String> {
        strings(&qemu_args(s, c).unwrap())
    }

    /// The value following the `n`-th (0-based) occurrence of `flag`.
    fn values<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn an_arm64_machine_is_virt_with_its_console_and_a_boot_port() {
        let mut s = spec();
        s.arch = Arch::Aarch64;
        s.kernel = "/k/Image".into();
        s.agent_socket = Some("/run/a.sock".into());
        let mut c = ctx();
        c.firmware = None;
        let a = args(&s, &c);
        assert_eq!(
            values(&a, "-M"),
            ["virt,gic-version=3,acpi=off,highmem=off,virtualization=off,secure=off"]
        );
        assert_eq!(values(&a, "-cpu"), ["max,pauth-impdef=on"]);
        assert!(values(&a, "-bios").is_empty(), "QEMU's own loader");
        let devices = values(&a, "-device");
        assert!(!devices
            .iter()
            .any(|d| d.contains("i8042") || d.contains("isa-")));
        assert!(
            devices.contains(&"virtio-serial-device,id=agentbus,max_ports=3,bus=virtio-mmio-bus.0")
        );
        assert!(devices.contains(&"virtserialport,chardev=boottimer,name=ec1.boot"));
        assert!(devices.contains(&"virtserialport,chardev=agent,name=ec1.agent"));
        // No virtio_mmio.device= or TSC parameters; Firecracker's console is the PL011.
        assert_eq!(values(&a, "-append"), ["console=ttyAMA0 reboot=k panic=-1"]);
        assert_eq!(values(&a, "-sandbox"), [SANDBOX]);
        c.accel = Accel::Hvf;
        assert_eq!(values(&args(&s, &c), "-accel"), ["hvf"]);
    }

    #[test]
    fn typical_tcg_machine() {
        let a = args(&spec(), &ctx());
        let expected = [
            "-M",
            "microvm,acpi=off,x-option-roms=off,isa-serial=on,rtc=on,auto-kernel-cmdline=off",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2,sockets=1,cores=2,threads=1",
            "-m",
            "256M",
            "-nodefaults",
            "-no-user-config",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            "-display",
            "none",
            "-no-reboot",
            "-S",
            "-bios",
            "/usr/share/qemu/qboot.rom",
            "-chardev",
            "socket,id=qmp,fd=10,server=on,wait=off",
            "-mon",
            "chardev=qmp,mode=control",
            "-device",
            "i8042",
            "-chardev",
            "null,id=ser0",
            "-serial",
            "chardev:ser0",
            "-chardev",
            "socket,id=boottimer,fd=11",
            "-device",
            "isa-debugcon,iobase=0xe9,chardev=boottimer",
            "-kernel",
            "/k/vmlinux",
            "-initrd",
            "/k/initrd.cpio",
            "-append",
            "console=ttyS0 reboot=k panic=-1 acpi=off tsc_early_khz=2445424 tsc=reliable",
        ];
        assert_eq!(a, expected);
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_keeps_the_cmdline() {
        let c = ArgsContext {
            accel: Accel::Kvm,
            ..ctx()
        };
        let a = args(&spec(), &c);
        assert_eq!(values(&a, "-accel"), ["kvm"]);
        assert_eq!(values(&a, "-cpu"), ["host"]);
        assert_eq!(
            values(&a, "-append"),
            ["console=ttyS0 reboot=k panic=-1 acpi=off"]
        );
    }

    #[test]
    fn tsc_settings_respect_the_users_choice() {
        let mut s = spec();
        s.cmdline = "console=ttyS0 tsc=unstable".into();
        assert_eq!(
            values(&args(&s, &ctx()), "-append"),
            ["console=ttyS0 tsc=unstable acpi=off"]
        );
        s.cmdline = "tsc_early_khz=1000".into();
        assert_eq!(
            values(&args(&s, &ctx()), "-append"),
            ["tsc_early_khz=1000 acpi=off tsc=reliable"]
        );
        let c = ArgsContext {
            tsc_khz: None,
            ..ctx()
        };
        s.cmdline = "quiet".into();
        assert_eq!(values(&args(&s, &c), "-append"), ["quiet acpi=off"]);
        // The user's own `acpi=` wins.
        s.cmdline = "quiet acpi=force".into();
        assert_eq!(values(&args(&s, &c), "-append"), ["quiet acpi=force"]);
        s.cmdline = "quiet -- loop".into();
        assert_eq!(
            values(&args(&s, &ctx()), "-append"),
            ["quiet acpi=off tsc_early_khz=2445424 tsc=reliable -- loop"]
        );
    }

    #[test]
    fn smt_makes_two_threads_per_core() {
        let mut s = spec();
        s.vcpus = 4;
        s.smt = true;
        assert_eq!(
            values(&args(&s, &ctx()), "-smp"),
            ["4,sockets=1,cores=2,threads=2"]
        );
        s.vcpus = 1;
        assert_eq!(
            values(&args(&s, &ctx()), "-smp"),
            ["1,sockets=1,cores=1,threads=1"]
        );
    }

    #[test]
    fn serial_outputs() {
        let mut s = spec();
        s.serial = SerialOut::Stdio;
        assert_eq!(
            values(&args(&s, &ctx()), "-chardev")[1],
            "stdio,id=ser0,signal=off"
        );
        s.serial = SerialOut::File("/var/log/a,b.log".into());
        assert_eq!(
            values(&args(&s, &ctx()), "-chardev")[1],
            "file,id=ser0,path=/var/log/a,,b.log,append=on"
        );
    }

    #[test]
    fn drives_in_order_with_cache_read_only_and_limits() {
        let mut s = spec();
        s.drives = vec![
            DriveSpec {
                id: "rootfs".into(),
                path: "/img/root.ext4".into(),
                read_only: true,
                cache: CacheType::Unsafe,
                rate_limit: None,
                vhost_user: false,
            },
            DriveSpec {
                id: "data".into(),
                path: "/img/da,ta.img".into(),
                read_only: false,
                cache: CacheType::Writeback,
                rate_limit: Some(RateLimit {
                    bandwidth: Some(TokenBucket {
                        size: 1_048_576,
                        one_time_burst: 10_485_760,
                        refill_time_ms: 1000,
                    }),
                    ops: Some(TokenBucket {
                        size: 100,
                        one_time_burst: 0,
                        refill_time_ms: 100,
                    }),
                }),
                vhost_user: false,
            },
        ];
        let a = args(&s, &ctx());
        assert_eq!(
            values(&a, "-drive"),
            [
                "if=none,id=drive0,node-name=drive0-fmt,format=raw,file.driver=file,\
                 file.filename=/img/root.ext4,file.node-name=drive0-file0,file.locking=off,\
                 readonly=on,cache=unsafe,werror=report,rerror=report",
                "if=none,id=drive1,node-name=drive1-fmt,format=raw,file.driver=file,\
                 file.filename=/img/da,,ta.img,file.node-name=drive1-file0,file.locking=on,\
                 readonly=off,cache=writeback,werror=report,rerror=report,\
                 throttling.bps-total=1048576,throttling.bps-total-max=11534336,\
                 throttling.bps-total-max-length=1,throttling.iops-total=1000",
            ]
        );
        let devices = values(&a, "-device");
        assert_eq!(
            &devices[2..],
            [
                "virtio-blk-device,drive=drive0,id=blk0,bus=virtio-mmio-bus.0",
                "virtio-blk-device,drive=drive1,id=blk1,bus=virtio-mmio-bus.1",
            ]
        );
        assert_eq!(
            values(&a, "-append"),
            [
                "console=ttyS0 reboot=k panic=-1 virtio_mmio.device=512@0xfeb00000:5 \
              virtio_mmio.device=512@0xfeb00200:6 acpi=off tsc_early_khz=2445424 tsc=reliable"
            ]
        );
    }

    #[test]
    fn agent_channel_follows_the_drives() {
        let mut s = spec();
        s.drives = vec![DriveSpec {
            id: "rootfs".into(),
            path: "/img/root.ext4".into(),
            read_only: false,
            cache: CacheType::Unsafe,
            rate_limit: Some(RateLimit::default()),
            vhost_user: false,
        }];
        s.agent_socket = Some("/run/ec1/vm1/agent.sock".into());
        s.cmdline = "console=ttyS0 -- --agent".into();
        let a = args(&s, &ctx());
        assert!(!values(&a, "-drive")[0].contains("throttling"));
        let devices = values(&a, "-device");
        assert_eq!(
            &devices[3..],
            [
                "virtio-serial-device,id=agentbus,max_ports=2,bus=virtio-mmio-bus.1",
                "virtserialport,chardev=agent,name=ec1.agent",
            ]
        );
        assert_eq!(
            values(&a, "-chardev")[3],
            "socket,id=agent,path=/run/ec1/vm1/agent.sock,server=on,wait=off"
        );
        assert_eq!(
            values(&a, "-append"),
            ["console=ttyS0 virtio_mmio.device=512@0xfeb00000:5 virtio_mmio.device=512@0xfeb00200:6 \
              acpi=off tsc_early_khz=2445424 tsc=reliable -- --agent"]
        );
    }

    #[test]
    fn memory_file_backing() {
        let mut s = spec();
        s.memory = MemoryBacking::File {
            path: "/dev/shm/tmpl.ram".into(),
            shared: true,
        };
        let a = args(&s, &ctx());
        assert!(values(&a, "-M")[0].ends_with(",auto-kernel-cmdline=off,memory-backend=mem"));
        assert_eq!(
            values(&a, "-object"),
            ["memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/tmpl.ram,share=on"]
        );
        assert_eq!(values(&a, "-m"), ["256M"]);
        s.memory = MemoryBacking::File {
            path: "/x/clone.ram".into(),
            shared: false,
        };
        assert_eq!(
            values(&args(&s, &ctx()), "-object"),
            ["memory-backend-file,id=mem,size=256M,mem-path=/x/clone.ram,share=off,readonly=on,rom=off"]
        );
    }

    #[test]
    fn without_initrd_there_is_no_initrd_flag() {
        let mut s = spec();
        s.initrd = None;
        assert!(values(&args(&s, &ctx()), "-initrd").is_empty());
    }

    #[test]
    fn invalid_specs_and_oversized_cmdlines_are_rejected() {
        let mut s = spec();
        s.vcpus = 0;
        assert!(matches!(
            qemu_args(&s, &ctx()),
            Err(EngineError::InvalidSpec(_))
        ));
        let mut s = spec();
        s.cmdline = "x".repeat(2020).into();
        let e = qemu_args(&s, &ctx()).unwrap_err();
        assert!(e.to_string().contains("at most 2047"), "{e}");
        // Without the engine's additions it would have fitted.
        let c = ArgsContext {
            accel: Accel::Kvm,
            ..ctx()
        };
        assert!(qemu_args(&s, &c).is_ok());
    }

    #[test]
    fn non_utf8_paths_survive() {
        let mut s = spec();
        let p = PathBuf::from(OsString::from_vec(b"/img/\xff,x".to_vec()));
        s.serial = SerialOut::File(p);
        let a = qemu_args(&s, &ctx()).unwrap();
        let chardev = a
            .windows(2)
            .filter(|w| w[0] == "-chardev")
            .nth(1)
            .map(|w| w[1].clone())
            .unwrap();
        assert_eq!(
            chardev.as_bytes(),
            b"file,id=ser0,path=/img/\xff,,x,append=on"
        );
    }

    #[test]
    fn names_and_transports() {
        let n = DriveNames::new(3);
        assert_eq!(n.backend, "drive3");
        assert_eq!(n.format_node, "drive3-fmt");
        assert_eq!(n.device, "blk3");
        assert_eq!(n.file_node(2), "drive3-file2");
        assert_eq!(virtio_param(7), "virtio_mmio.device=512@0xfeb00e00:12");
        assert_eq!(virtio_bus(7), "virtio-mmio-bus.7");
    }
}
