//! Translation of the Firecracker configuration ([`VmResources`]) into the engine-neutral
//! [`VmSpec`], following what Firecracker's `builder.rs` puts on the kernel command line.

use std::path::{Path, PathBuf};

use ec1_engine::{
    BalloonSpec, CacheType, Cmdline, Devices, DriveSpec, DroppedBytes, EntropySpec, MemoryBacking,
    NetSpec, SerialOut, VmSpec, VsockSpec,
};

use crate::models;
use crate::resources::VmResources;
use crate::validation::CMDLINE_MAX_SIZE;

/// Firecracker's `DEFAULT_KERNEL_CMDLINE` (`src/vmm/src/vmm_config/boot_source.rs`), used
/// when `boot_args` is absent. Note that it disables the serial console
/// (`8250.nr_uarts=0`), as Firecracker's does.
pub const DEFAULT_KERNEL_CMDLINE: &str = "reboot=k panic=1 nomodule 8250.nr_uarts=0 \
     i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce";

/// Why the configuration cannot be turned into a machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("Cannot start microvm without kernel configuration.")]
    MissingKernel,
    #[error("The kernel command line is invalid: with the arguments ec1 appends it is {len} bytes long, the limit is {} bytes.", CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong { len: usize },
    #[error("The memory size ({0} MiB) does not fit in 32 bits.")]
    MemoryTooLarge(usize),
}

/// Builds the kernel command line as Firecracker does: the user's (or the default)
/// arguments, then `root=/dev/vda` or `root=PARTUUID=...` with `ro`/`rw` for the root
/// drive, then `pci=off` because the guest gets no PCI bus.
/// Like Firecracker, the root device and `pci=off` go with the kernel's parameters,
/// before any `--` and the init's arguments after it.
pub fn kernel_cmdline(res: &VmResources) -> Result<Cmdline, SpecError> {
    let boot = res.boot_source.as_ref().ok_or(SpecError::MissingKernel)?;
    let args = boot.boot_args.as_deref().unwrap_or(DEFAULT_KERNEL_CMDLINE);
    let mut cmdline = Cmdline::new(args.trim_start());
    if let Some(root) = res.drives.first().filter(|d| d.is_root_device) {
        match &root.partuuid {
            Some(uuid) => cmdline.push(&format!("root=PARTUUID={uuid}")),
            None => cmdline.push("root=/dev/vda"),
        }
        cmdline.push(if root.is_read_only.unwrap_or(false) {
            "ro"
        } else {
            "rw"
        });
    }
    cmdline.push("pci=off");
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(SpecError::CmdlineTooLong { len: cmdline.len() });
    }
    Ok(cmdline)
}

/// The engine's view of a configured drive.
pub fn drive_spec(d: &models::BlockDeviceConfig) -> DriveSpec {
    DriveSpec {
        id: d.drive_id.clone(),
        // A vhost-user drive's backend socket stands where an image path would.
        path: PathBuf::from(
            d.socket
                .clone()
                .or_else(|| d.path_on_host.clone())
                .unwrap_or_default(),
        ),
        read_only: d.is_read_only.unwrap_or(false),
        cache: match d.cache_type {
            models::CacheType::Unsafe => CacheType::Unsafe,
            models::CacheType::Writeback => CacheType::Writeback,
        },
        rate_limit: d.rate_limiter.and_then(|r| r.to_engine()),
        vhost_user: d.socket.is_some(),
    }
}

/// The engine's view of the configured entropy, balloon, vsock and network devices.
pub fn devices(res: &VmResources) -> Devices {
    Devices {
        entropy: res.entropy.as_ref().map(|e| EntropySpec {
            rate_limit: e.rate_limiter.and_then(|r| r.to_engine()),
        }),
        balloon: res.balloon.as_ref().map(|b| BalloonSpec {
            amount_mib: b.amount_mib,
            deflate_on_oom: b.deflate_on_oom,
            stats_polling_interval_s: b.stats_polling_interval_s,
            free_page_hinting: b.free_page_hinting,
            free_page_reporting: b.free_page_reporting,
        }),
        vsock: res.vsock.as_ref().map(|v| VsockSpec {
            guest_cid: v.guest_cid,
            uds_path: PathBuf::from(&v.uds_path),
        }),
        nets: res
            .net
            .iter()
            .map(|n| NetSpec {
                id: n.iface_id.clone(),
                tap: n.host_dev_name.clone(),
                mac: n.guest_mac.map(|m| m.0),
                mtu: n.mtu,
                rx_rate_limit: n.rx_rate_limiter.and_then(|r| r.to_engine()),
                tx_rate_limit: n.tx_rate_limiter.and_then(|r| r.to_engine()),
                mmds: None,
            })
            .collect(),
    }
}

/// Where the serial console goes (`PUT /serial`): ec1's stdout by default, the
/// `serial_out_path` given, and through the rate limiter if one is set, whose dropped
/// bytes `dropped` counts.
pub fn serial_out(cfg: Option<&models::SerialConfig>, dropped: &DroppedBytes) -> SerialOut {
    let to = cfg.and_then(|s| s.serial_out_path.clone());
    match (cfg.and_then(|s| s.rate_limiter?.to_engine()), to) {
        (Some(bucket), to) => SerialOut::Limited {
            to,
            bucket,
            dropped: dropped.clone(),
        },
        (None, Some(p)) => SerialOut::File(p),
        (None, None) => SerialOut::Stdio,
    }
}

/// Translates the pre-boot configuration into a [`VmSpec`]; `serial_dropped` counts
/// what a serial rate limiter drops.
pub fn build_vm_spec(
    res: &VmResources,
    id: &str,
    run_dir: &Path,
    serial_dropped: &DroppedBytes,
) -> Result<VmSpec, SpecError> {
    let boot = res.boot_source.as_ref().ok_or(SpecError::MissingKernel)?;
    let cmdline = kernel_cmdline(res)?;
    let mc = &res.machine_config;
    let mem_mib =
        u32::try_from(mc.mem_size_mib).map_err(|_| SpecError::MemoryTooLarge(mc.mem_size_mib))?;
    let serial = serial_out(res.serial.as_ref(), serial_dropped);
    Ok(VmSpec {
        id: id.to_string(),
        // Firecracker runs its host's architecture; ec1 runs the kernel's. A kernel
        // that cannot be read is refused by the engine, naming the file.
        arch: ec1_engine::Arch::of_kernel(Path::new(&boot.kernel_image_path))
            .unwrap_or(ec1_engine::Arch::host()),
        kernel: PathBuf::from(&boot.kernel_image_path),
        initrd: boot.initrd_path.as_ref().map(PathBuf::from),
        cmdline,
        vcpus: mc.vcpu_count,
        smt: mc.smt,
        mem_mib,
        drives: res.drives.iter().map(drive_spec).collect(),
        serial,
        agent_socket: None,
        // Guest RAM the engine can save: any Firecracker guest may be snapshotted later
        // (`PUT /snapshot/create`).
        memory: match mc.huge_pages {
            models::HugePageConfig::Hugetlbfs2M => MemoryBacking::HugePages,
            _ => MemoryBacking::Shared,
        },
        run_dir: run_dir.to_path_buf(),
        devices: devices(res),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{BlockDeviceConfig, BootSourceConfig, RateLimiterConfig, SerialConfig};

    fn res(boot_args: Option<&str>) -> VmResources {
        VmResources {
            boot_source: Some(BootSourceConfig {
                kernel_image_path: "/k/vmlinux".into(),
                initrd_path: Some("/k/initrd".into()),
                boot_args: boot_args.map(String::from),
            }),
            ..Default::default()
        }
    }

    fn drive(id: &str, root: bool, ro: bool, partuuid: Option<&str>) -> BlockDeviceConfig {
        BlockDeviceConfig {
            drive_id: id.into(),
            partuuid: partuuid.map(String::from),
            is_root_device: root,
            cache_type: crate::models::CacheType::Writeback,
            is_read_only: Some(ro),
            path_on_host: Some(format!("/img/{id}")),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }
    }

    #[test]
    fn default_cmdline_is_firecrackers() {
        let r = res(None);
        assert_eq!(
            kernel_cmdline(&r).unwrap(),
            "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce pci=off"
        );
    }

    #[test]
    fn root_device_arguments_are_appended() {
        let mut r = res(Some("console=ttyS0"));
        r.drives = vec![
            drive("rootfs", true, true, None),
            drive("data", false, false, None),
        ];
        assert_eq!(
            kernel_cmdline(&r).unwrap(),
            "console=ttyS0 root=/dev/vda ro pci=off"
        );
        r.drives[0] = drive("rootfs", true, false, Some("0eaa91a0-01"));
        assert_eq!(
            kernel_cmdline(&r).unwrap(),
            "console=ttyS0 root=PARTUUID=0eaa91a0-01 rw pci=off"
        );
        // A non-root first drive adds nothing.
        r.drives = vec![drive("data", false, false, None)];
        assert_eq!(kernel_cmdline(&r).unwrap(), "console=ttyS0 pci=off");
        r.boot_source.as_mut().unwrap().boot_args = Some(String::new());
        assert_eq!(kernel_cmdline(&r).unwrap(), "pci=off");
    }

    #[test]
    fn spec_carries_machine_drives_and_serial() {
        let mut r = res(Some("console=ttyS0"));
        r.machine_config.vcpu_count = 2;
        r.machine_config.smt = true;
        r.machine_config.mem_size_mib = 512;
        let mut data = drive("data", false, false, None);
        data.rate_limiter = Some(RateLimiterConfig {
            bandwidth: Some(crate::models::TokenBucketConfig {
                size: 100,
                one_time_burst: None,
                refill_time: 10,
            }),
            ops: None,
        });
        r.drives = vec![drive("rootfs", true, true, None), data];
        let s = build_vm_spec(&r, "vm1", Path::new("/run/x"), &Default::default()).unwrap();
        assert_eq!(s.id, "vm1");
        assert_eq!(s.kernel, PathBuf::from("/k/vmlinux"));
        assert_eq!(s.initrd, Some(PathBuf::from("/k/initrd")));
        assert_eq!((s.vcpus, s.smt, s.mem_mib), (2, true, 512));
        assert_eq!(s.drives.len(), 2);
        assert_eq!(s.drives[0].id, "rootfs");
        assert!(s.drives[0].read_only);
        assert_eq!(s.drives[0].cache, CacheType::Writeback);
        assert_eq!(s.drives[1].path, PathBuf::from("/img/data"));
        assert_eq!(
            s.drives[1]
                .rate_limit
                .unwrap()
                .bandwidth
                .unwrap()
                .refill_time_ms,
            10
        );
        assert_eq!(s.serial, SerialOut::Stdio);
        assert_eq!(s.memory, MemoryBacking::Shared);
        assert_eq!(s.run_dir, PathBuf::from("/run/x"));
        assert_eq!(s.agent_socket, None);

        r.serial = Some(SerialConfig {
            serial_out_path: Some("/tmp/serial.out".into()),
            rate_limiter: None,
        });
        let s = build_vm_spec(&r, "vm1", Path::new("/run/x"), &Default::default()).unwrap();
        assert_eq!(s.serial, SerialOut::File("/tmp/serial.out".into()));
    }

    #[test]
    fn devices_carry_over() {
        use crate::models::*;
        let mut r = res(None);
        assert_eq!(devices(&r), Devices::default());
        r.entropy = Some(EntropyDeviceConfig {
            rate_limiter: Some(RateLimiterConfig {
                bandwidth: Some(TokenBucketConfig {
                    size: 100,
                    one_time_burst: None,
                    refill_time: 10,
                }),
                ops: None,
            }),
        });
        r.balloon = Some(BalloonDeviceConfig {
            amount_mib: 8,
            deflate_on_oom: true,
            stats_polling_interval_s: 2,
            free_page_hinting: false,
            free_page_reporting: true,
        });
        r.vsock = Some(VsockDeviceConfig {
            vsock_id: None,
            guest_cid: 5,
            uds_path: "/tmp/v.sock".into(),
        });
        r.net = vec![NetworkInterfaceConfig {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("06:00:00:00:00:01".parse().unwrap()),
            mtu: Some(1400),
            rx_rate_limiter: Some(RateLimiterConfig::default()),
            tx_rate_limiter: None,
        }];
        let d = build_vm_spec(&r, "x", Path::new("/r"), &Default::default())
            .unwrap()
            .devices;
        assert_eq!(
            d.entropy
                .unwrap()
                .rate_limit
                .unwrap()
                .bandwidth
                .unwrap()
                .size,
            100
        );
        let b = d.balloon.unwrap();
        assert_eq!(
            (b.amount_mib, b.deflate_on_oom, b.stats_polling_interval_s),
            (8, true, 2)
        );
        assert!(b.free_page_reporting && !b.free_page_hinting);
        let v = d.vsock.unwrap();
        assert_eq!((v.guest_cid, v.uds_path), (5, PathBuf::from("/tmp/v.sock")));
        assert_eq!(d.nets.len(), 1);
        assert_eq!(d.nets[0].mac, Some([6, 0, 0, 0, 0, 1]));
        assert_eq!(d.nets[0].mtu, Some(1400));
        // An empty limiter is no limit.
        assert_eq!(d.nets[0].rx_rate_limit, None);
    }

    #[test]
    fn errors() {
        let r = VmResources::default();
        assert_eq!(
            build_vm_spec(&r, "x", Path::new("/"), &Default::default()).unwrap_err(),
            SpecError::MissingKernel
        );
        assert_eq!(
            SpecError::MissingKernel.to_string(),
            "Cannot start microvm without kernel configuration."
        );
        let mut r = res(Some(&"a".repeat(2040)));
        r.drives = vec![drive("rootfs", true, true, None)];
        assert!(matches!(
            build_vm_spec(&r, "x", Path::new("/"), &Default::default()),
            Err(SpecError::CmdlineTooLong { .. })
        ));
        let mut r = res(None);
        r.machine_config.mem_size_mib = 1 << 33;
        assert!(matches!(
            build_vm_spec(&r, "x", Path::new("/"), &Default::default()),
            Err(SpecError::MemoryTooLarge(_))
        ));
    }
    #[test]
    fn the_serial_console_follows_put_serial() {
        let d = DroppedBytes::default();
        assert_eq!(serial_out(None, &d), SerialOut::Stdio);
        let mut cfg = models::SerialConfig {
            serial_out_path: Some("/s".into()),
            rate_limiter: None,
        };
        assert_eq!(serial_out(Some(&cfg), &d), SerialOut::File("/s".into()));
        cfg.rate_limiter = Some(models::TokenBucketConfig {
            size: 10,
            one_time_burst: None,
            refill_time: 100,
        });
        let SerialOut::Limited { to, dropped, .. } = serial_out(Some(&cfg), &d) else {
            panic!("a limiter makes a Limited console");
        };
        assert_eq!(to, Some("/s".into()));
        assert_eq!(dropped, d, "the metrics' counter");
        cfg.serial_out_path = None;
        assert!(matches!(
            serial_out(Some(&cfg), &d),
            SerialOut::Limited { to: None, .. }
        ));
    }
}
