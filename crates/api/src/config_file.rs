//! Firecracker's `--config-file` schema (`VmmConfig` in `src/vmm/src/resources.rs`),
//! which is also what `GET /vm/config` answers, so that output can be fed back.
//!
//! A config file is applied through the same [`Vmm::handle`] path as API requests, in
//! Firecracker's order, so it is validated exactly like the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::models::*;
use crate::resources::VmResources;
use crate::router::VmmAction;
use crate::vmm::Vmm;

/// The whole configuration of a microVM.
///
/// Like Firecracker's `VmmConfig`, the top level has no `deny_unknown_fields`: unknown
/// keys are ignored (clients write `"balloon_device": null` and such), while each
/// section refuses unknown fields where Firecracker's struct for it does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonDeviceConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<BlockDeviceConfig>,
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSourceConfig>,
    /// Firecracker takes a path to a JSON CPU template here; the spec (and
    /// `GET /vm/config`) an inline template object. Both are accepted.
    #[serde(
        rename = "cpu-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<LoggerConfig>,
    #[serde(
        rename = "machine-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_config: Option<MachineConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<MmdsConfig>,
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub network_interfaces: Vec<NetworkInterfaceConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pmem: Vec<PmemConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockDeviceConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyDeviceConfig>,
    #[serde(
        rename = "memory-hotplug",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_hotplug: Option<MemoryHotplugConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialConfig>,
}

/// Why a configuration file was refused. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {} is not valid: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the configuration file {} has no `boot-source`: a kernel is needed to boot (add \"boot-source\": {{\"kernel_image_path\": ...}})", path.display())]
    MissingBootSource { path: PathBuf },
    #[error("the configuration file {}: `{section}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        section: String,
        message: String,
    },
}

impl VmConfigFile {
    /// Parses the text of a configuration file.
    pub fn parse(text: &str) -> Result<VmConfigFile, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<VmConfigFile, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    VmConfigFile::parse(&text).map_err(|source| ConfigFileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// The CPU template of a `cpu-config` entry: inline, or read from the file it names.
fn cpu_template(path: &Path, v: &serde_json::Value) -> Result<CustomCpuTemplate, String> {
    match v {
        serde_json::Value::String(file) => {
            let base = path.parent().unwrap_or(Path::new("."));
            let file = base.join(file);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
        }
        other => serde_json::from_value(other.clone()).map_err(|e| e.to_string()),
    }
}

/// Applies `cfg` to a fresh VMM in Firecracker's order (logger, metrics,
/// machine-config, cpu-config, boot-source, drives, pmem, network-interfaces, vsock,
/// balloon, mmds-config, entropy, memory-hotplug, serial). `path` names the file in
/// errors and anchors a relative `cpu-config` path.
pub fn apply(vmm: &Arc<Vmm>, cfg: VmConfigFile, path: &Path) -> Result<(), ConfigFileError> {
    let Some(boot_source) = cfg.boot_source else {
        return Err(ConfigFileError::MissingBootSource {
            path: path.to_path_buf(),
        });
    };
    let invalid = |section: &str, message: String| ConfigFileError::Invalid {
        path: path.to_path_buf(),
        section: section.to_string(),
        message,
    };
    let mut steps: Vec<(&str, VmmAction)> = Vec::new();
    if let Some(l) = cfg.logger {
        steps.push(("logger", VmmAction::PutLogger(l)));
    }
    if let Some(m) = cfg.metrics {
        steps.push(("metrics", VmmAction::PutMetrics(m)));
    }
    if let Some(m) = cfg.machine_config {
        steps.push(("machine-config", VmmAction::PutMachineConfig(m.into())));
    }
    if let Some(c) = &cfg.cpu_config {
        let t = cpu_template(path, c).map_err(|m| invalid("cpu-config", m))?;
        steps.push(("cpu-config", VmmAction::PutCpuConfig(t)));
    }
    steps.push(("boot-source", VmmAction::PutBootSource(boot_source)));
    for d in cfg.drives {
        steps.push(("drives", VmmAction::PutDrive(d)));
    }
    for p in cfg.pmem {
        steps.push(("pmem", VmmAction::PutPmem(p)));
    }
    for n in cfg.network_interfaces {
        steps.push(("network-interfaces", VmmAction::PutNetwork(n)));
    }
    if let Some(v) = cfg.vsock {
        steps.push(("vsock", VmmAction::PutVsock(v)));
    }
    if let Some(b) = cfg.balloon {
        steps.push(("balloon", VmmAction::PutBalloon(b)));
    }
    if let Some(m) = cfg.mmds_config {
        steps.push(("mmds-config", VmmAction::PutMmdsConfig(m)));
    }
    if let Some(e) = cfg.entropy {
        steps.push(("entropy", VmmAction::PutEntropy(e)));
    }
    if let Some(h) = cfg.memory_hotplug {
        steps.push(("memory-hotplug", VmmAction::PutMemoryHotplug(h)));
    }
    if let Some(s) = cfg.serial {
        steps.push(("serial", VmmAction::PutSerial(s)));
    }
    for (section, action) in steps {
        // Drive and interface ids are checked by the router for API requests.
        if let VmmAction::PutDrive(d) = &action {
            crate::validation::checked_id(&d.drive_id)
                .map_err(|e| invalid(section, e.to_string()))?;
        }
        if let VmmAction::PutPmem(p) = &action {
            crate::validation::checked_id(&p.id).map_err(|e| invalid(section, e.to_string()))?;
        }
        vmm.handle(action)
            .map_err(|e| invalid(section, e.to_string()))?;
    }
    Ok(())
}

/// The configuration as `GET /vm/config` answers it.
pub fn export(res: &VmResources) -> VmConfigFile {
    VmConfigFile {
        drives: res.drives.clone(),
        boot_source: res.boot_source.clone(),
        cpu_config: res
            .cpu_template
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok()),
        logger: res.logger.clone(),
        machine_config: Some(res.machine_config.clone()),
        metrics: res.metrics.clone(),
        serial: res.serial.clone(),
        balloon: res.balloon.clone(),
        vsock: res.vsock.clone(),
        entropy: res.entropy.clone(),
        network_interfaces: res.net.clone(),
        mmds_config: res.mmds_config.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `base` with the keys of the object `extra` set on it.
    fn merged(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        for (k, x) in extra.as_object().unwrap() {
            base[k] = x.clone();
        }
        base
    }

    /// A configuration with `extra` merged into its top level.
    fn with(extra: serde_json::Value) -> Result<VmConfigFile, serde_json::Error> {
        let base = serde_json::json!({"boot-source": {"kernel_image_path": "k"}});
        VmConfigFile::parse(&merged(base, extra).to_string())
    }

    fn refused(r: Result<VmConfigFile, serde_json::Error>, field: &str) {
        let e = r.unwrap_err();
        assert!(
            e.to_string().contains(&format!("unknown field `{field}`")),
            "{e}"
        );
    }

    /// Firecracker's `VmmConfig` ignores unknown top-level keys (clients in the wild
    /// write `"balloon_device": null` and the like), and so does ec1.
    #[test]
    fn unknown_top_level_keys_are_ignored_as_firecracker_does() {
        let c = with(serde_json::json!({
            "balloon_device": null, "vsock_device": null, "logger_system": null, "bogus": {"x": 1}
        }))
        .unwrap();
        assert_eq!(c.boot_source.unwrap().kernel_image_path, "k");
        assert!(VmConfigFile::parse("{not json").is_err());
    }

    /// Below the top level, level by level, what Firecracker's structs refuse
    /// (`deny_unknown_fields`) ec1 refuses, and what they let through ec1 lets through.
    #[test]
    fn nested_levels_refuse_or_ignore_as_firecracker_does() {
        use serde_json::json;
        refused(
            with(json!({"boot-source": {"kernel_image_path": "k", "kernel": "x"}})),
            "kernel",
        );
        refused(
            with(json!({"machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "x": 1}})),
            "x",
        );
        let drive = |extra: serde_json::Value| {
            let d = json!({"drive_id": "root", "path_on_host": "r", "is_root_device": true, "is_read_only": false});
            with(json!({ "drives": [merged(d, extra)] }))
        };
        refused(drive(json!({"x": 1})), "x");
        refused(drive(json!({"rate_limiter": {"x": 1}})), "x");
        // The token bucket itself (`TokenBucketConfig`) has no `deny_unknown_fields`.
        let c =
            drive(json!({"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "x": 1}}}));
        assert!(c.unwrap().drives[0].rate_limiter.is_some());
        refused(
            with(json!({"network-interfaces": [{"iface_id": "e", "host_dev_name": "t", "x": 1}]})),
            "x",
        );
        refused(
            with(json!({"vsock": {"guest_cid": 3, "uds_path": "v", "x": 1}})),
            "x",
        );
        refused(
            with(json!({"balloon": {"amount_mib": 1, "deflate_on_oom": false, "x": 1}})),
            "x",
        );
        refused(with(json!({"entropy": {"x": 1}})), "x");
        refused(with(json!({"logger": {"x": 1}})), "x");
        refused(
            with(json!({"mmds-config": {"network_interfaces": [], "x": 1}})),
            "x",
        );
        refused(
            with(json!({"pmem": [{"id": "p", "path_on_host": "p", "x": 1}]})),
            "x",
        );
        refused(
            with(json!({"memory-hotplug": {"total_size_mib": 1, "x": 1}})),
            "x",
        );
        // `MetricsConfig` has no `deny_unknown_fields` either.
        let c = with(json!({"metrics": {"metrics_path": "m", "x": 1}})).unwrap();
        assert!(c.metrics.is_some());
        let e =
            with(json!({"machine-config": {"vcpu_count": 300, "mem_size_mib": 1}})).unwrap_err();
        assert!(e.to_string().contains("u8"), "{e}");
    }

    #[test]
    fn export_parses_back() {
        let res = VmResources {
            boot_source: Some(BootSourceConfig {
                kernel_image_path: "/k".into(),
                initrd_path: None,
                boot_args: Some("console=ttyS0".into()),
            }),
            logger: Some(LoggerConfig {
                level: Some(LevelFilter::Warn),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = serde_json::to_string(&export(&res)).unwrap();
        assert!(!text.contains("null"), "{text}");
        let back = VmConfigFile::parse(&text).unwrap();
        assert_eq!(back, export(&res));
        assert_eq!(back.machine_config, Some(MachineConfig::default()));
    }

    #[test]
    fn cpu_config_can_be_a_file_or_inline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.json"), r#"{"kvm_capabilities":["1"]}"#).unwrap();
        let cfg = dir.path().join("vm.json");
        let t = cpu_template(&cfg, &serde_json::json!("t.json")).unwrap();
        assert_eq!(t.kvm_capabilities, vec!["1".to_string()]);
        let t = cpu_template(&cfg, &serde_json::json!({"msr_modifiers": []})).unwrap();
        assert!(t.is_empty());
        assert!(cpu_template(&cfg, &serde_json::json!("missing.json"))
            .unwrap_err()
            .contains("cannot read"));
        assert!(cpu_template(&cfg, &serde_json::json!({"x": 1})).is_err());
    }
}
