//! `VmResources`: everything configured before `InstanceStart`, kept as the API
//! received it so that `GET /vm/config` can give it back and [`crate::spec`] can turn
//! it into an engine's [`ec1_engine::VmSpec`].

use std::fs::OpenOptions;

use crate::models::{
    BlockDeviceConfig, BootSourceConfig, CustomCpuTemplate, LoggerConfig, MachineConfig,
    MetricsConfig, SerialConfig,
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
        let path = match (&cfg.path_on_host, &cfg.socket) {
            (Some(p), None) => p,
            (None, None) => {
                return Err(
                    "Unable to create the virtio block device: path_on_host is required".into(),
                )
            }
            (_, Some(_)) => {
                return Err("Unable to create the virtio block device: path_on_host and socket are mutually exclusive".into())
            }
        };
        let read_only = cfg.is_read_only.unwrap_or(false);
        OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| {
                format!("Unable to create the virtio block device: cannot open {path}: {e}")
            })?;
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
        d.socket = Some("/s".into());
        d.path_on_host = Some("/x".into());
        assert!(r.insert_drive(d).unwrap_err().contains("exclusive"));
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
