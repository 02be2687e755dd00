//! `VmResources`: everything configured before `InstanceStart`, kept as the API
//! received it so that `GET /vm/config` can give it back and [`crate::spec`] can turn
//! it into an engine's [`ec1_engine::VmSpec`].

use std::fs::OpenOptions;

use crate::models::{
    BalloonDeviceConfig, BlockDeviceConfig, BootSourceConfig, CustomCpuTemplate,
    EntropyDeviceConfig, LoggerConfig, MachineConfig, MetricsConfig, MmdsConfig,
    NetworkInterfaceConfig, SerialConfig, VsockDeviceConfig,
};
use crate::validation;

/// The pre-boot configuration of one microVM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmResources {
    pub machine_config: MachineConfig,
    pub boot_source: Option<BootSourceConfig>,
    /// Block devices, the root device (if any) first, as Firecracker orders them.
    pub drives: Vec<BlockDeviceConfig>,
    pub serial: Option<SerialConfig>,
    pub cpu_template: Option<CustomCpuTemplate>,
    /// Kept only to export the configuration.
    pub logger: Option<LoggerConfig>,
    /// Kept only to export the configuration.
    pub metrics: Option<MetricsConfig>,
    pub entropy: Option<EntropyDeviceConfig>,
    /// The balloon; after boot `amount_mib` and `stats_polling_interval_s` follow the
    /// PATCHes, as Firecracker's `GET /balloon` does.
    pub balloon: Option<BalloonDeviceConfig>,
    pub vsock: Option<VsockDeviceConfig>,
    /// Network interfaces in the order they were first configured.
    pub net: Vec<NetworkInterfaceConfig>,
    pub mmds_config: Option<MmdsConfig>,
}

/// Opens a file for reading and checks that it is a regular file (a directory opens
/// fine on Linux but cannot be booted).
fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    Ok(f)
}

impl VmResources {
    /// Sets the boot source after checking, as Firecracker does at this moment, that the
    /// kernel and initrd can be opened and that the command line is valid.
    pub fn set_boot_source(&mut self, cfg: BootSourceConfig) -> Result<(), String> {
        open_regular(cfg.kernel_image_path.as_ref()).map_err(|e| {
            format!(
                "The kernel file cannot be opened: {e} ({})",
                cfg.kernel_image_path
            )
        })?;
        if let Some(initrd) = &cfg.initrd_path {
            open_regular(initrd.as_ref()).map_err(|e| {
                format!(
                    "The initrd file cannot be opened due to invalid path or invalid permissions. {e} ({})",
                    initrd
                )
            })?;
        }
        if let Some(args) = &cfg.boot_args {
            validation::validate_cmdline(args)?;
        }
        self.boot_source = Some(cfg);
        Ok(())
    }

    /// Inserts or replaces a virtio-blk drive with Firecracker's rules: one root device,
    /// kept first; the backing file must open with the requested access.
    pub fn insert_drive(&mut self, cfg: BlockDeviceConfig) -> Result<(), String> {
        let position = self.drives.iter().position(|d| d.drive_id == cfg.drive_id);
        let has_root = self.drives.first().is_some_and(|d| d.is_root_device);
        if cfg.is_root_device && has_root && position != Some(0) {
            return Err("A root block device already exists!".into());
        }
        match (&cfg.path_on_host, &cfg.socket) {
            (Some(path), None) => {
                let read_only = cfg.is_read_only.unwrap_or(false);
                OpenOptions::new()
                    .read(true)
                    .write(!read_only)
                    .open(path)
                    .map_err(|e| {
                        format!("Unable to create the virtio block device: cannot open {path}: {e}")
                    })?;
            }
            (None, None) => {
                return Err(
                    "Unable to create the virtio block device: path_on_host is required".into(),
                )
            }
            // A vhost-user drive has a socket and none of a file drive's settings
            // (Firecracker's VhostUserBlockConfig).
            (None, Some(socket))
                if cfg.is_read_only.is_none()
                    && cfg.rate_limiter.is_none()
                    && cfg.io_engine.is_none() =>
            {
                use std::os::unix::fs::FileTypeExt;
                let is_socket = std::fs::metadata(socket)
                    .map(|m| m.file_type().is_socket())
                    .unwrap_or(false);
                if !is_socket {
                    return Err(format!("Unable to create the block device: Vhost user backend error: Vhost-user error: no vhost-user-blk backend listens on {socket}"));
                }
            }
            (_, Some(_)) => return Err(
                "Unable to create the block device: Vhost user backend error: Cannot create config"
                    .into(),
            ),
        }
        let root = cfg.is_root_device;
        match position {
            None if root => self.drives.insert(0, cfg),
            None => self.drives.push(cfg),
            Some(i) => {
                self.drives[i] = cfg;
                if root && i != 0 {
                    self.drives.swap(0, i);
                }
            }
        }
        Ok(())
    }
}

impl VmResources {
    /// Adds or replaces a network interface with Firecracker's rules: an interface with
    /// the same `iface_id` is replaced; another one may not use the same TAP device or
    /// guest MAC. The TAP device must exist (`tap_check`): ec1 never creates one.
    pub fn insert_net(
        &mut self,
        cfg: NetworkInterfaceConfig,
        tap_check: impl Fn(&str) -> Result<(), String>,
    ) -> Result<(), String> {
        for other in self.net.iter().filter(|n| n.iface_id != cfg.iface_id) {
            if other.host_dev_name == cfg.host_dev_name {
                return Err(format!(
                    "The host device name {} is already in use (by interface {}).",
                    cfg.host_dev_name, other.iface_id
                ));
            }
            if cfg.guest_mac.is_some() && other.guest_mac == cfg.guest_mac {
                return Err(format!(
                    "The guest MAC address {} is already in use (by interface {}).",
                    cfg.guest_mac.map(|m| m.to_string()).unwrap_or_default(),
                    other.iface_id
                ));
            }
        }
        tap_check(&cfg.host_dev_name)
            .map_err(|e| format!("Cannot open TAP device {}: {e}", cfg.host_dev_name))?;
        match self.net.iter_mut().find(|n| n.iface_id == cfg.iface_id) {
            Some(n) => *n = cfg,
            None => self.net.push(cfg),
        }
        Ok(())
    }

    /// Sets the vsock device after checking that its socket path can be bound: the
    /// directory exists and nothing is at the path yet.
    pub fn set_vsock(&mut self, cfg: VsockDeviceConfig) -> Result<(), String> {
        let p = std::path::Path::new(&cfg.uds_path);
        // Re-configuring the same device keeps its (not yet created) path.
        let same = self
            .vsock
            .as_ref()
            .is_some_and(|v| v.uds_path == cfg.uds_path);
        if !same && p.symlink_metadata().is_ok() {
            return Err(format!(
                "Cannot create backend for vsock device: {} already exists: remove it (or pick another uds_path) first.",
                cfg.uds_path
            ));
        }
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        if !dir.is_dir() {
            return Err(format!(
                "Cannot create backend for vsock device: the directory {} of uds_path does not exist.",
                dir.display()
            ));
        }
        self.vsock = Some(cfg);
        Ok(())
    }
}

/// Checks that `name` is a TAP device in ec1's network namespace.
pub fn tap_exists(name: &str) -> Result<(), String> {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    if !dir.exists() {
        return Err(format!(
            "no network interface named {name} exists; create it first (`ip tuntap add {name} mode tap`)"
        ));
    }
    if !dir.join("tun_flags").exists() {
        return Err(format!(
            "{name} is not a TAP device; give a TAP device (`ip tuntap add NAME mode tap`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(id: &str, path: &str, root: bool) -> BlockDeviceConfig {
        BlockDeviceConfig {
            drive_id: id.into(),
            partuuid: None,
            is_root_device: root,
            cache_type: Default::default(),
            is_read_only: Some(false),
            path_on_host: Some(path.into()),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }
    }

    #[test]
    fn root_drive_goes_first_and_is_unique() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let p = f.path().to_str().unwrap();
        let mut r = VmResources::default();
        r.insert_drive(drive("a", p, false)).unwrap();
        r.insert_drive(drive("b", p, false)).unwrap();
        r.insert_drive(drive("root", p, true)).unwrap();
        let ids: Vec<_> = r.drives.iter().map(|d| d.drive_id.as_str()).collect();
        assert_eq!(ids, ["root", "a", "b"]);
        assert_eq!(
            r.insert_drive(drive("c", p, true)).unwrap_err(),
            "A root block device already exists!"
        );
        // Updating the root itself is fine; making `b` root after demoting works too.
        r.insert_drive(drive("root", p, false)).unwrap();
        r.insert_drive(drive("b", p, true)).unwrap();
        assert_eq!(r.drives[0].drive_id, "b");
        assert_eq!(r.drives.len(), 3);
    }

    #[test]
    fn drive_files_are_checked() {
        let mut r = VmResources::default();
        let e = r
            .insert_drive(drive("a", "/nonexistent/x", false))
            .unwrap_err();
        assert!(e.contains("cannot open /nonexistent/x"), "{e}");
        let mut d = drive("a", "/x", false);
        d.path_on_host = None;
        assert!(r.insert_drive(d.clone()).unwrap_err().contains("required"));
        // vhost-user: a socket and none of a file drive's settings, as Firecracker.
        d.socket = Some("/s".into());
        d.path_on_host = Some("/x".into());
        assert!(r
            .insert_drive(d.clone())
            .unwrap_err()
            .contains("Cannot create config"));
        d.path_on_host = None;
        d.is_read_only = None;
        assert!(r
            .insert_drive(d.clone())
            .unwrap_err()
            .contains("no vhost-user-blk backend listens on /s"));
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("blk.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        d.socket = Some(sock.to_str().unwrap().into());
        r.insert_drive(d.clone()).unwrap();
        d.is_read_only = Some(true);
        assert!(r
            .insert_drive(d)
            .unwrap_err()
            .contains("Cannot create config"));
    }

    #[test]
    fn boot_source_files_are_opened_at_put_time() {
        let k = tempfile::NamedTempFile::new().unwrap();
        let mut r = VmResources::default();
        let mut b = BootSourceConfig {
            kernel_image_path: "/nonexistent/vmlinux".into(),
            initrd_path: None,
            boot_args: None,
        };
        assert!(r
            .set_boot_source(b.clone())
            .unwrap_err()
            .starts_with("The kernel file cannot be opened: "));
        b.kernel_image_path = k.path().to_str().unwrap().into();
        b.initrd_path = Some("/nonexistent/initrd".into());
        assert!(r
            .set_boot_source(b.clone())
            .unwrap_err()
            .starts_with("The initrd file cannot be opened"));
        b.initrd_path = None;
        b.boot_args = Some("bad\u{1}".into());
        assert!(r.set_boot_source(b.clone()).is_err());
        b.boot_args = Some("console=ttyS0".into());
        r.set_boot_source(b.clone()).unwrap();
        assert_eq!(r.boot_source, Some(b));
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;
    use crate::models::MacAddr;

    fn net(id: &str, tap: &str, mac: Option<&str>) -> NetworkInterfaceConfig {
        NetworkInterfaceConfig {
            iface_id: id.into(),
            host_dev_name: tap.into(),
            guest_mac: mac.map(|m| m.parse::<MacAddr>().unwrap()),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }

    #[test]
    fn interfaces_are_unique_by_tap_and_mac() {
        let ok = |_: &str| Ok(());
        let mut r = VmResources::default();
        r.insert_net(net("eth0", "tap0", Some("06:00:00:00:00:01")), ok)
            .unwrap();
        r.insert_net(net("eth1", "tap1", None), ok).unwrap();
        let e = r.insert_net(net("eth2", "tap0", None), ok).unwrap_err();
        assert!(e.contains("tap0 is already in use"), "{e}");
        let e = r
            .insert_net(net("eth2", "tap2", Some("06:00:00:00:00:01")), ok)
            .unwrap_err();
        assert!(e.contains("MAC address 06:00:00:00:00:01"), "{e}");
        // Replacing eth0 itself is fine, and keeps its place.
        r.insert_net(net("eth0", "tap9", Some("06:00:00:00:00:01")), ok)
            .unwrap();
        assert_eq!(r.net[0].host_dev_name, "tap9");
        assert_eq!(r.net.len(), 2);
        let e = r
            .insert_net(net("eth3", "tapx", None), |_| Err("nope".into()))
            .unwrap_err();
        assert_eq!(e, "Cannot open TAP device tapx: nope");
        assert_eq!(r.net.len(), 2, "a refused interface changes nothing");
    }

    #[test]
    fn tap_check_names_the_fix() {
        assert!(tap_exists("ec1-nosuch0")
            .unwrap_err()
            .contains("ip tuntap add"));
        assert!(tap_exists("lo").unwrap_err().contains("not a TAP"));
    }

    #[test]
    fn vsock_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.sock");
        let cfg = |p: &std::path::Path| VsockDeviceConfig {
            vsock_id: None,
            guest_cid: 3,
            uds_path: p.to_str().unwrap().into(),
        };
        let mut r = VmResources::default();
        r.set_vsock(cfg(&p)).unwrap();
        std::fs::write(&p, "").unwrap();
        // The same device again is fine; another one on an existing path is not.
        r.set_vsock(cfg(&p)).unwrap();
        let mut r2 = VmResources::default();
        assert!(r2
            .set_vsock(cfg(&p))
            .unwrap_err()
            .contains("already exists"));
        assert!(r2
            .set_vsock(cfg(std::path::Path::new("/nonexistent/d/v.sock")))
            .unwrap_err()
            .contains("does not exist"));
        assert!(r2.vsock.is_none());
    }
}
