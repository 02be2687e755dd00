//! Where the optional devices ([`ec1_engine::Devices`]) sit on `microvm`'s virtio-mmio
//! transports and the QEMU options that create them.
//!
//! Transports are handed out in a fixed order: drives, the agent channel, then
//! entropy, balloon, vsock and the network interfaces. The order only has to be stable
//! for one command line; the guest finds each device by its virtio device id.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ec1_engine::{Arch, Cmdline, EngineError, MemoryBacking, NetSpec, RateLimit, VmSpec};

/// The qdev id of the balloon device; its QOM path is `/machine/peripheral/<id>`.
pub(crate) const BALLOON_ID: &str = "balloon0";
/// The file name of the vhost-user control socket in the run directory, where the vsock
/// backend listens and QEMU connects.
pub(crate) const VSOCK_CONTROL_SOCKET: &str = "vsock.vhost.sock";

/// The QOM path of the balloon device.
pub(crate) fn balloon_qom_path() -> String {
    format!("/machine/peripheral/{BALLOON_ID}")
}

/// How the guest learns where its virtio-mmio transports are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discovery {
    /// `microvm` without ACPI: one I/O APIC, and a `virtio_mmio.device=` kernel
    /// parameter per transport, which the engine writes. The fastest boot.
    KernelParams,
    /// `microvm` with ACPI and its second I/O APIC: 24 transports on their own
    /// interrupt lines (GSI 24-47), listed in the DSDT. Taken only when a guest has
    /// more devices than [`Discovery::KernelParams`] has lines for; the guest kernel
    /// needs `CONFIG_ACPI` (ec1's has it, as have Firecracker's guest configs).
    Acpi,
    /// arm64's `virt`: the device tree lists 32 transports, each with its own SPI.
    DeviceTree,
}

/// Which [`Discovery`] `spec`'s machine uses: the device count decides, so a restore
/// (the same devices and command line) builds the same machine.
pub(crate) fn discovery(spec: &VmSpec) -> Discovery {
    if spec.arch == Arch::Aarch64 {
        Discovery::DeviceTree
    } else if transport_count(spec) > legacy_transports(&spec.cmdline).len() {
        Discovery::Acpi
    } else {
        Discovery::KernelParams
    }
}

/// The transports of `microvm` without ACPI whose interrupt a guest can own.
///
/// `microvm` without ACPI wires transport `i` to GSI `5 + i`. Two of those lines are
/// not free in the guest: GSI 8 belongs to the RTC (`rtc=on`, which Linux's `rtc_cmos`
/// requests unshared, so a virtio device there never gets its interrupt) and GSI 12 to
/// the i8042 mouse port, unless the guest is told `i8042.noaux`.
fn legacy_transports(cmdline: &Cmdline) -> Vec<usize> {
    let aux_free = cmdline.has("i8042.noaux");
    (0..crate::validate::VIRTIO_TRANSPORTS)
        .filter(|&i| i != 3 && (i != 7 || aux_free))
        .collect()
}

/// The transports `spec`'s devices take, in the order they take them.
///
/// With ACPI, QEMU lists the transports in its DSDT from the last to the first and
/// Linux probes them in that order: handing them out from the last keeps drive 0 the
/// guest's first disk (`/dev/vda`), as with kernel parameters.
pub(crate) fn usable_transports(spec: &VmSpec) -> Vec<usize> {
    match discovery(spec) {
        Discovery::DeviceTree => (0..crate::validate::VIRT_TRANSPORTS).collect(),
        Discovery::Acpi => (0..crate::validate::ACPI_TRANSPORTS).rev().collect(),
        Discovery::KernelParams => legacy_transports(&spec.cmdline),
    }
}

/// The number of virtio-mmio transports `spec` needs.
pub(crate) fn transport_count(spec: &VmSpec) -> usize {
    let d = &spec.devices;
    spec.drives.len()
        + usize::from(spec.agent_socket.is_some())
        + usize::from(d.entropy.is_some())
        + usize::from(d.balloon.is_some())
        + usize::from(d.vsock.is_some())
        + d.nets.len()
}

/// The vhost-user control socket of `spec`'s vsock device.
pub(crate) fn vsock_control_socket(run_dir: &Path) -> PathBuf {
    run_dir.join(VSOCK_CONTROL_SOCKET)
}

/// Whether guest RAM must be a shared mapping a second process can map too: a
/// vhost-user backend (vsock) reads and writes the guest's queues directly.
pub(crate) fn needs_shared_memory(spec: &VmSpec) -> bool {
    spec.devices.vsock.is_some() || spec.drives.iter().any(|d| d.vhost_user)
}

/// Rejects device settings QEMU cannot provide. Pure.
pub(crate) fn check_devices(spec: &VmSpec) -> Result<(), EngineError> {
    let invalid = |m: String| EngineError::InvalidSpec(m);
    if let Some(b) = &spec.devices.balloon {
        if u64::from(b.amount_mib) > u64::from(spec.mem_mib) {
            return Err(invalid(format!(
                "the balloon's amount_mib {} is more than the guest's {} MiB",
                b.amount_mib, spec.mem_mib
            )));
        }
        if b.free_page_hinting {
            return Err(invalid(
                "free page hinting: QEMU runs hinting only while it migrates a guest, so ec1 cannot start or stop hinting runs; use free_page_reporting".into(),
            ));
        }
    }
    if let Some(v) = &spec.devices.vsock {
        if v.guest_cid < 3 {
            return Err(invalid(format!(
                "vsock guest_cid {} is reserved; it must be 3 or more",
                v.guest_cid
            )));
        }
        if matches!(spec.memory, MemoryBacking::File { shared: false, .. }) {
            return Err(invalid(
                "a vsock device needs guest RAM the vhost-user backend can map, but this guest's RAM is a private copy-on-write file mapping".into(),
            ));
        }
    }
    let mut ids = std::collections::HashSet::new();
    let mut taps = std::collections::HashSet::new();
    for n in &spec.devices.nets {
        if !ids.insert(n.id.as_str()) {
            return Err(invalid(format!(
                "network interface id {:?} is used twice",
                n.id
            )));
        }
        if !taps.insert(n.tap.as_str()) {
            return Err(invalid(format!(
                "TAP device {:?} is given to two network interfaces",
                n.tap
            )));
        }
        let (ours, _) = net_sockets(&spec.run_dir, spec.devices.nets.len());
        if ours.as_os_str().len() > crate::validate::MAX_SOCKET_PATH {
            return Err(invalid(format!(
                "the network relay's socket {} is too long for a Unix socket path: use a shorter run directory",
                ours.display()
            )));
        }
        if n.tap.is_empty() || n.tap.len() > 15 || n.tap.contains(['/', ',', '\0']) {
            return Err(invalid(format!(
                "TAP device name {:?} is not a valid interface name",
                n.tap
            )));
        }
    }
    Ok(())
}

/// Whether `name` is a TUN/TAP interface in this network namespace (`/sys/class/net`
/// shows the namespace of the process that reads it).
pub(crate) fn tap_exists(name: &str) -> Result<(), String> {
    let dir = Path::new("/sys/class/net").join(name);
    if !dir.exists() {
        return Err(format!(
            "there is no network interface {name:?} here: create the TAP device first (`ip tuntap add {name} mode tap`)"
        ));
    }
    if !dir.join("tun_flags").exists() {
        return Err(format!(
            "network interface {name:?} is not a TAP device: give host_dev_name a TAP device (`ip tuntap add NAME mode tap`)"
        ));
    }
    Ok(())
}

/// Checks a vsock `uds_path` the way binding it would: the directory exists and the
/// path is free (Firecracker refuses a path in use too; the owner must remove it).
pub(crate) fn check_uds_path(p: &Path) -> Result<(), String> {
    let len = p.as_os_str().len();
    // The backend listens on `<uds_path>_<port>` paths too: keep room for a port.
    if len + 11 > crate::validate::MAX_SOCKET_PATH {
        return Err(format!(
            "uds_path {} is {len} bytes long; with a `_<port>` suffix it must fit the {} bytes of a Unix socket path",
            p.display(),
            crate::validate::MAX_SOCKET_PATH
        ));
    }
    if p.symlink_metadata().is_ok() {
        return Err(format!(
            "uds_path {} already exists: remove it (or pick another path) first",
            p.display()
        ));
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "the directory of uds_path {} does not exist",
            p.display()
        ));
    }
    Ok(())
}

/// Checks what the devices need on the host: TAP devices, the vsock socket path.
pub(crate) fn check_device_files(spec: &VmSpec) -> Result<(), EngineError> {
    for n in &spec.devices.nets {
        tap_exists(&n.tap).map_err(EngineError::InvalidSpec)?;
    }
    if let Some(v) = &spec.devices.vsock {
        check_uds_path(&v.uds_path).map_err(EngineError::InvalidSpec)?;
    }
    Ok(())
}

/// Whether `spec`'s entropy device has a rate limiter, which ec1 serves (QEMU's
/// `rng-egd` backend over a socket pair; see `entropy.rs`).
pub(crate) fn entropy_limited(spec: &VmSpec) -> Option<RateLimit> {
    spec.devices
        .entropy
        .as_ref()
        .and_then(|e| e.rate_limit)
        .filter(|r| r.bandwidth.is_some() || r.ops.is_some())
}

/// A MAC address as QEMU writes it.
fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The Unix datagram sockets of relayed interface `index`: (ec1's, QEMU's).
pub(crate) fn net_sockets(run_dir: &Path, index: usize) -> (PathBuf, PathBuf) {
    (
        run_dir.join(format!("net{index}.ec1")),
        run_dir.join(format!("net{index}.qemu")),
    )
}

/// The `-netdev` and `-device` values of network interface `index` on transport `bus`.
///
/// Every interface goes through ec1's frame relay (`ec1-net`) rather than QEMU opening
/// the TAP device itself: as in Firecracker, whose net device does the same, rate
/// limiters can then be added, changed or lifted on a running guest, and MMDS answers
/// from within the relay. The cost is the TAP device's checksum and segmentation
/// offloads (measured under TCG: guest→host throughput alike, host→guest ~25% lower).
fn net_args(run_dir: &Path, index: usize, n: &NetSpec, bus: &str) -> (OsString, String) {
    let (ours, qemu) = net_sockets(run_dir, index);
    let mut netdev = OsString::from(format!("dgram,id=net{index},local.type=unix,local.path="));
    netdev.push(crate::args::escape(qemu.as_os_str()));
    netdev.push(",remote.type=unix,remote.path=");
    netdev.push(crate::args::escape(ours.as_os_str()));
    let mut device = format!("virtio-net-device,netdev=net{index},id=nic{index},bus={bus}");
    if let Some(mac) = &n.mac {
        device.push_str(&format!(",mac={}", mac_string(mac)));
    }
    if let Some(mtu) = n.mtu {
        device.push_str(&format!(",host_mtu={mtu}"));
    }
    (netdev, device)
}

/// Appends the devices' options to `out` as (flag, value) pairs, taking the usable
/// transports (see [`usable_transports`]) from position `first_bus` on; `bus(i)` names
/// transport `i`.
pub(crate) fn device_args(
    spec: &VmSpec,
    first_bus: usize,
    bus: impl Fn(usize) -> String,
    entropy_fd: Option<std::os::fd::RawFd>,
    out: &mut Vec<(&'static str, OsString)>,
) -> Result<(), EngineError> {
    let usable = usable_transports(spec);
    let count = usable.len();
    let mut free = usable.into_iter().skip(first_bus).map(bus);
    let mut take = || {
        free.next().ok_or_else(|| {
            EngineError::InvalidSpec(format!(
                "the devices need {} virtio transports; the QEMU engine has {} for this guest",
                transport_count(spec),
                count
            ))
        })
    };
    let d = &spec.devices;
    if d.entropy.is_some() {
        if entropy_limited(spec).is_some() {
            // ec1 answers the backend's requests through the rate limiter.
            let chardev = match entropy_fd {
                Some(fd) => format!("socket,id=rngchr,fd={fd}"),
                // Without one (a command line shown, not run).
                None => "null,id=rngchr".into(),
            };
            out.push(("-chardev", chardev.into()));
            out.push(("-object", "rng-egd,id=rng0,chardev=rngchr".into()));
        } else {
            out.push(("-object", "rng-builtin,id=rng0".into()));
        }
        out.push((
            "-device",
            format!("virtio-rng-device,rng=rng0,id=rng,bus={}", take()?).into(),
        ));
    }
    if let Some(b) = &d.balloon {
        let on_off = |v: bool| if v { "on" } else { "off" };
        out.push((
            "-device",
            format!(
                "virtio-balloon-device,id={BALLOON_ID},bus={},deflate-on-oom={},free-page-reporting={}",
                take()?,
                on_off(b.deflate_on_oom),
                on_off(b.free_page_reporting)
            )
            .into(),
        ));
    }
    if d.vsock.is_some() {
        let mut chardev = OsString::from("socket,id=vsock,path=");
        chardev.push(crate::args::escape(
            vsock_control_socket(&spec.run_dir).as_os_str(),
        ));
        out.push(("-chardev", chardev));
        out.push((
            "-device",
            format!(
                "vhost-user-vsock-device,chardev=vsock,id=vsock0,bus={}",
                take()?
            )
            .into(),
        ));
    }
    for (i, n) in d.nets.iter().enumerate() {
        let (netdev, device) = net_args(&spec.run_dir, i, n, &take()?);
        out.push(("-netdev", netdev));
        out.push(("-device", device.into()));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ec1_engine::{BalloonSpec, EntropySpec, TokenBucket, VsockSpec};

    /// A minimal machine, for this crate's unit tests.
    pub(crate) fn spec() -> VmSpec {
        VmSpec {
            id: "t".into(),
            arch: ec1_engine::Arch::X86_64,
            kernel: "/k".into(),
            initrd: None,
            cmdline: Default::default(),
            vcpus: 1,
            smt: false,
            mem_mib: 128,
            drives: vec![],
            serial: ec1_engine::SerialOut::Null,
            agent_socket: None,
            memory: MemoryBacking::Anonymous,
            run_dir: "/run/x".into(),
            devices: Default::default(),
        }
    }

    fn bus(i: usize) -> String {
        format!("b{i}")
    }

    fn args(s: &VmSpec, first: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        device_args(s, first, bus, Some(9), &mut out).unwrap();
        out.into_iter()
            .map(|(f, v)| (f.to_string(), v.to_string_lossy().into_owned()))
            .collect()
    }

    fn bucket(size: u64, refill_time_ms: u64) -> TokenBucket {
        TokenBucket {
            size,
            one_time_burst: 0,
            refill_time_ms,
        }
    }

    fn net(id: &str, tap: &str) -> NetSpec {
        NetSpec {
            id: id.into(),
            tap: tap.into(),
            mac: None,
            mtu: None,
            rx_rate_limit: None,
            tx_rate_limit: None,
            mmds: None,
        }
    }

    #[test]
    fn every_device_in_order_on_its_own_transport() {
        let mut s = spec();
        s.devices.entropy = Some(EntropySpec {
            rate_limit: Some(RateLimit {
                bandwidth: Some(bucket(1000, 100)),
                ops: None,
            }),
        });
        s.devices.balloon = Some(BalloonSpec {
            amount_mib: 16,
            deflate_on_oom: true,
            stats_polling_interval_s: 1,
            free_page_hinting: false,
            free_page_reporting: true,
        });
        s.devices.vsock = Some(VsockSpec {
            guest_cid: 3,
            uds_path: "/tmp/v.sock".into(),
        });
        let mut n = net("eth0", "tap0");
        n.mac = Some([6, 0, 0xac, 0x10, 0, 2]);
        n.mtu = Some(1400);
        s.devices.nets = vec![n, net("eth1", "tap1")];
        s.cmdline = "i8042.noaux".into();
        assert_eq!(transport_count(&s), 5);
        assert!(needs_shared_memory(&s));
        check_devices(&s).unwrap();
        let a = args(&s, 2);
        let expect = [
            // A rate-limited entropy device is fed by ec1 over the socket it passes.
            ("-chardev", "socket,id=rngchr,fd=9"),
            ("-object", "rng-egd,id=rng0,chardev=rngchr"),
            ("-device", "virtio-rng-device,rng=rng0,id=rng,bus=b2"),
            (
                "-device",
                "virtio-balloon-device,id=balloon0,bus=b4,deflate-on-oom=on,free-page-reporting=on",
            ),
            ("-chardev", "socket,id=vsock,path=/run/x/vsock.vhost.sock"),
            (
                "-device",
                "vhost-user-vsock-device,chardev=vsock,id=vsock0,bus=b5",
            ),
            (
                "-netdev",
                "dgram,id=net0,local.type=unix,local.path=/run/x/net0.qemu,\
                 remote.type=unix,remote.path=/run/x/net0.ec1",
            ),
            (
                "-device",
                "virtio-net-device,netdev=net0,id=nic0,bus=b6,mac=06:00:ac:10:00:02,host_mtu=1400",
            ),
            (
                "-netdev",
                "dgram,id=net1,local.type=unix,local.path=/run/x/net1.qemu,\
                 remote.type=unix,remote.path=/run/x/net1.ec1",
            ),
            ("-device", "virtio-net-device,netdev=net1,id=nic1,bus=b7"),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(a, expect);
    }

    fn with_drives(n: usize, cmdline: &str) -> VmSpec {
        let mut s = spec();
        s.cmdline = cmdline.into();
        s.drives = (0..n)
            .map(|i| ec1_engine::DriveSpec {
                id: format!("d{i}"),
                path: format!("/d{i}").into(),
                read_only: false,
                cache: Default::default(),
                rate_limit: None,
                vhost_user: false,
            })
            .collect();
        s
    }

    #[test]
    fn transports_skip_the_rtc_and_mouse_interrupts() {
        let s = with_drives(1, "console=ttyS0");
        assert_eq!(discovery(&s), Discovery::KernelParams);
        assert_eq!(usable_transports(&s), [0, 1, 2, 4, 5, 6]);
        let s = with_drives(7, "console=ttyS0 i8042.noaux");
        assert_eq!(discovery(&s), Discovery::KernelParams);
        assert_eq!(usable_transports(&s), [0, 1, 2, 4, 5, 6, 7]);
        let mut s = with_drives(1, "console=ttyS0");
        s.arch = Arch::Aarch64;
        assert_eq!(discovery(&s), Discovery::DeviceTree);
        assert_eq!(usable_transports(&s).len(), 32);
    }

    #[test]
    fn more_devices_than_the_first_io_apic_take_the_acpi_machine() {
        // Kata's shape: root + 8 placeholders, the agent channel, vsock and entropy.
        let mut s = with_drives(9, "console=ttyS0");
        s.agent_socket = Some("/run/x/agent.sock".into());
        s.devices.entropy = Some(Default::default());
        assert_eq!(transport_count(&s), 11);
        assert_eq!(discovery(&s), Discovery::Acpi);
        let usable = usable_transports(&s);
        assert_eq!(usable.len(), 24);
        // Drive 0 on the transport the guest probes first (the DSDT's first entry).
        assert_eq!(usable[..3], [23, 22, 21]);
        // Seven drives fit the machine without ACPI only with `i8042.noaux`.
        assert_eq!(discovery(&with_drives(7, "console=ttyS0")), Discovery::Acpi);
    }

    #[test]
    fn no_devices_no_arguments() {
        let s = spec();
        assert!(args(&s, 0).is_empty());
        assert_eq!(transport_count(&s), 0);
        assert!(!needs_shared_memory(&s));
        assert_eq!(balloon_qom_path(), "/machine/peripheral/balloon0");
    }

    #[test]
    fn host_checks() {
        assert!(tap_exists("ec1-no-such-if")
            .unwrap_err()
            .contains("ip tuntap add"));
        assert!(tap_exists("lo").unwrap_err().contains("not a TAP"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.sock");
        check_uds_path(&p).unwrap();
        std::fs::write(&p, "").unwrap();
        assert!(check_uds_path(&p).unwrap_err().contains("already exists"));
        assert!(check_uds_path(Path::new("/nonexistent/dir/v.sock"))
            .unwrap_err()
            .contains("does not exist"));
        let long = dir.path().join("x".repeat(100));
        assert!(check_uds_path(&long).unwrap_err().contains("bytes long"));
        let mut s = spec();
        s.devices.nets = vec![net("eth0", "ec1-no-such-if")];
        assert!(check_device_files(&s).is_err());
        s.devices.nets.clear();
        s.devices.vsock = Some(VsockSpec {
            guest_cid: 3,
            uds_path: p,
        });
        assert!(check_device_files(&s).is_err());
    }

    #[test]
    fn too_many_devices_are_refused() {
        let mut s = spec();
        s.devices.nets = (0..5)
            .map(|i| net(&format!("e{i}"), &format!("t{i}")))
            .collect();
        let mut out = Vec::new();
        let e = device_args(&s, 2, bus, None, &mut out).unwrap_err();
        assert!(e.to_string().contains("has 6"), "{e}");
    }

    #[test]
    fn only_a_rate_limited_entropy_device_is_served_by_ec1() {
        let mut s = spec();
        assert_eq!(entropy_limited(&s), None);
        s.devices.entropy = Some(EntropySpec { rate_limit: None });
        assert_eq!(entropy_limited(&s), None);
        assert_eq!(
            args(&s, 0)[0],
            ("-object".into(), "rng-builtin,id=rng0".into())
        );
        s.devices.entropy = Some(EntropySpec {
            rate_limit: Some(RateLimit::default()),
        });
        assert_eq!(entropy_limited(&s), None, "an empty limiter limits nothing");
        let ops = RateLimit {
            bandwidth: None,
            ops: Some(bucket(1, 1)),
        };
        s.devices.entropy = Some(EntropySpec {
            rate_limit: Some(ops),
        });
        assert_eq!(entropy_limited(&s), Some(ops));
        check_devices(&s).unwrap();
    }

    #[test]
    fn invalid_devices_are_refused() {
        let mut s = spec();
        s.devices.balloon = Some(BalloonSpec {
            amount_mib: 1000,
            ..Default::default()
        });
        assert!(check_devices(&s)
            .unwrap_err()
            .to_string()
            .contains("more than"));
        s.devices.balloon = Some(BalloonSpec {
            free_page_hinting: true,
            ..Default::default()
        });
        assert!(check_devices(&s)
            .unwrap_err()
            .to_string()
            .contains("hinting"));
        s.devices.balloon = None;
        s.devices.vsock = Some(VsockSpec {
            guest_cid: 2,
            uds_path: "/v".into(),
        });
        assert!(check_devices(&s).is_err());
        s.devices.vsock = Some(VsockSpec {
            guest_cid: 3,
            uds_path: "/v".into(),
        });
        s.memory = MemoryBacking::File {
            path: "/m".into(),
            shared: false,
        };
        assert!(check_devices(&s)
            .unwrap_err()
            .to_string()
            .contains("private"));
        s.memory = MemoryBacking::Anonymous;
        s.devices.nets = vec![net("a", "tap0"), net("a", "tap1")];
        assert!(check_devices(&s).unwrap_err().to_string().contains("twice"));
        s.devices.nets = vec![net("a", "tap0"), net("b", "tap0")];
        assert!(check_devices(&s).unwrap_err().to_string().contains("two"));
        s.devices.nets = vec![net("a", "t,ap")];
        assert!(check_devices(&s).is_err());
        s.devices.entropy = Some(EntropySpec {
            rate_limit: Some(RateLimit {
                bandwidth: None,
                ops: Some(bucket(1, 1)),
            }),
        });
        assert!(check_devices(&s).is_err());
    }
}
