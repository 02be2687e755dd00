//! Firecracker's validation rules for configuration values, with its wording where it
//! has one (`src/vmm/src/vmm_config/*`, `parsed_request.rs`'s `checked_id`).
//!
//! These are the checks that do not depend on which engine runs the guest; what an
//! engine cannot do is decided in [`crate::vmm`].

use crate::error::RequestError;
use crate::models::{
    BalloonDeviceConfig, CustomCpuTemplate, HugePageConfig, MachineConfig, MachineConfigUpdate,
    MemoryHotplugConfig, MmdsConfig, NetworkInterfaceConfig, VsockDeviceConfig,
};

/// Firecracker's vCPU limit (`MAX_SUPPORTED_VCPUS`).
pub const MAX_SUPPORTED_VCPUS: u8 = 32;
/// Firecracker's x86_64 kernel command line capacity, terminating NUL included.
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// Resource ids (`drive_id`, `iface_id`, ...) are non-empty and alphanumeric or `_`.
pub fn checked_id(id: &str) -> Result<(), RequestError> {
    if id.is_empty() {
        return Err(RequestError::EmptyId);
    }
    if !id.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return Err(RequestError::InvalidId);
    }
    Ok(())
}

/// Message of Firecracker's `InvalidVcpuCount`.
pub fn invalid_vcpu_count_message() -> String {
    format!(
        "The number of vCPUs must be greater than 0, less than {MAX_SUPPORTED_VCPUS} and must be 1 or an even number if SMT is enabled."
    )
}

/// Applies a machine-config update to `current` the way Firecracker's
/// `VmConfig::update` does: all or nothing.
pub fn update_machine_config(
    current: &MachineConfig,
    update: &MachineConfigUpdate,
) -> Result<MachineConfig, String> {
    let vcpu_count = update.vcpu_count.unwrap_or(current.vcpu_count);
    let smt = update.smt.unwrap_or(current.smt);
    if cfg!(target_arch = "aarch64") && smt {
        return Err("Enabling simultaneous multithreading is not supported on aarch64.".into());
    }
    if vcpu_count == 0 || vcpu_count > MAX_SUPPORTED_VCPUS {
        return Err(invalid_vcpu_count_message());
    }
    if smt && vcpu_count > 1 && vcpu_count % 2 == 1 {
        return Err(invalid_vcpu_count_message());
    }
    let mem_size_mib = update.mem_size_mib.unwrap_or(current.mem_size_mib);
    let huge_pages = update.huge_pages.unwrap_or(current.huge_pages);
    let multiple = match huge_pages {
        HugePageConfig::Hugetlbfs2M => 2,
        HugePageConfig::None | HugePageConfig::Transparent => 1,
    };
    if mem_size_mib == 0 || !mem_size_mib.is_multiple_of(multiple) {
        return Err(
            "The memory size (MiB) is either 0, or not a multiple of the configured page size."
                .into(),
        );
    }
    if u32::try_from(mem_size_mib).is_err() {
        return Err(format!(
            "The memory size ({mem_size_mib} MiB) is larger than the {} MiB ec1 can give a guest.",
            u32::MAX
        ));
    }
    let cpu_template = match update.cpu_template {
        None => current.cpu_template,
        Some(crate::models::CpuTemplate::None) => None,
        Some(t) => Some(t),
    };
    Ok(MachineConfig {
        vcpu_count,
        mem_size_mib,
        smt,
        cpu_template,
        track_dirty_pages: update
            .track_dirty_pages
            .unwrap_or(current.track_dirty_pages),
        huge_pages,
    })
}

/// A kernel command line must be printable ASCII and fit Firecracker's buffer.
pub fn validate_cmdline(cmdline: &str) -> Result<(), String> {
    if let Some(c) = cmdline.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "The kernel command line is invalid: it contains {c:?}, which is not printable ASCII."
        ));
    }
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(format!(
            "The kernel command line is invalid: it is {} bytes long, the limit is {} bytes.",
            cmdline.len(),
            CMDLINE_MAX_SIZE - 1
        ));
    }
    Ok(())
}

/// Vsock: CIDs 0-2 are reserved for the hypervisor and host; the socket path is needed.
pub fn validate_vsock(cfg: &VsockDeviceConfig) -> Result<(), String> {
    if cfg.guest_cid < 3 {
        return Err(format!(
            "guest_cid {} is reserved: a guest CID must be 3 or more.",
            cfg.guest_cid
        ));
    }
    if cfg.uds_path.is_empty() {
        return Err("uds_path cannot be empty.".into());
    }
    Ok(())
}

/// Linux limits interface names to 15 bytes (`IFNAMSIZ` - 1).
const MAX_TAP_NAME_LEN: usize = 15;
const MIN_MTU: u16 = 68;

/// A network interface: TAP name, MTU range.
pub fn validate_net(cfg: &NetworkInterfaceConfig) -> Result<(), String> {
    checked_id(&cfg.iface_id).map_err(|e| e.to_string())?;
    if cfg.host_dev_name.is_empty() || cfg.host_dev_name.len() > MAX_TAP_NAME_LEN {
        return Err(format!(
            "Invalid TAP name `{}`: it must be 1 to {MAX_TAP_NAME_LEN} bytes long.",
            cfg.host_dev_name
        ));
    }
    if let Some(mtu) = cfg.mtu {
        if mtu < MIN_MTU {
            return Err(format!(
                "Invalid MTU {mtu}: it must be between {MIN_MTU} and 65535."
            ));
        }
    }
    Ok(())
}

/// MMDS: interfaces listed, link-local address (`169.254.1.0` - `169.254.254.255`).
pub fn validate_mmds_config(cfg: &MmdsConfig) -> Result<(), String> {
    if cfg.network_interfaces.is_empty() {
        return Err(
            "The list of network interface IDs that allow forwarding MMDS requests is empty."
                .into(),
        );
    }
    if let Some(ip) = cfg.ipv4_address {
        let o = ip.octets();
        if o[0] != 169 || o[1] != 254 || o[2] == 0 || o[2] == 255 {
            return Err(format!("The MMDS IPv4 address {ip} is not link local."));
        }
    }
    Ok(())
}

/// virtio-mem sizes, as Firecracker's `MemoryHotplugConfig::validate`.
pub fn validate_memory_hotplug(cfg: &MemoryHotplugConfig) -> Result<(), String> {
    if cfg.block_size_mib < 2 {
        return Err("Block size must not be lower than 2 MiB".into());
    }
    if !cfg.block_size_mib.is_power_of_two() {
        return Err("Block size must be a power of 2".into());
    }
    if cfg.slot_size_mib < 128 {
        return Err("Slot size must not be lower than 128 MiB".into());
    }
    if !cfg.slot_size_mib.is_multiple_of(cfg.block_size_mib) {
        return Err("Slot size must be a multiple of block size".into());
    }
    if cfg.total_size_mib == 0 {
        return Err("Total size must not be 0".into());
    }
    if !cfg.total_size_mib.is_multiple_of(cfg.slot_size_mib) {
        return Err("Total size must be a multiple of slot size".into());
    }
    Ok(())
}

/// A balloon cannot hold more than the guest's memory.
pub fn validate_balloon(cfg: &BalloonDeviceConfig, mem_size_mib: usize) -> Result<(), String> {
    if cfg.amount_mib as usize > mem_size_mib {
        return Err(format!(
            "Amount of pages requested is too large: {} MiB is more than the guest's {mem_size_mib} MiB.",
            cfg.amount_mib
        ));
    }
    Ok(())
}

/// Parses a number written in hex (`0x`), binary (`0b`) or decimal.
fn parse_number(s: &str) -> Option<u128> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x") {
        u128::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b") {
        u128::from_str_radix(b, 2).ok()
    } else {
        s.parse().ok()
    }
}

fn check_number(what: &str, s: &str, bits: u32) -> Result<(), String> {
    match parse_number(s) {
        Some(n) if bits >= 128 || n < (1u128 << bits) => Ok(()),
        _ => Err(format!(
            "{what} `{s}` is not a {bits}-bit number written in hex (0x), binary (0b) or decimal"
        )),
    }
}

/// A bitmap is `0b` followed by exactly `bits` (or, for aarch64 registers, at most
/// `bits`) characters `0`, `1` or `x`; underscores are ignored.
fn check_bitmap(what: &str, s: &str, bits: usize, exact: bool) -> Result<(), String> {
    let body: String = s
        .strip_prefix("0b")
        .unwrap_or("!")
        .chars()
        .filter(|c| *c != '_')
        .collect();
    let len_ok = if exact {
        body.len() == bits
    } else {
        !body.is_empty() && body.len() <= bits
    };
    if !len_ok || !body.chars().all(|c| matches!(c, '0' | '1' | 'x')) {
        return Err(format!(
            "{what} bitmap `{s}` must be `0b` followed by {}{bits} characters 0, 1 or x",
            if exact { "" } else { "up to " }
        ));
    }
    Ok(())
}

/// Checks every modifier of a custom CPU template, as Firecracker's deserializer does.
pub fn validate_cpu_template(t: &CustomCpuTemplate) -> Result<(), String> {
    for cap in &t.kvm_capabilities {
        let n = cap.strip_prefix('!').unwrap_or(cap);
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) || n.parse::<u32>().is_err() {
            return Err(format!(
                "KVM capability `{cap}` must be a number, optionally prefixed with `!`"
            ));
        }
    }
    for leaf in &t.cpuid_modifiers {
        check_number("CPUID leaf", &leaf.leaf, 32)?;
        check_number("CPUID subleaf", &leaf.subleaf, 32)?;
        for m in &leaf.modifiers {
            check_bitmap("CPUID register", &m.bitmap, 32, true)?;
        }
    }
    for msr in &t.msr_modifiers {
        check_number("MSR address", &msr.addr, 32)?;
        check_bitmap("MSR", &msr.bitmap, 64, true)?;
    }
    for reg in &t.reg_modifiers {
        check_number("register address", &reg.addr, 64)?;
        check_bitmap("register", &reg.bitmap, 128, false)?;
    }
    for f in &t.vcpu_features {
        if f.index < 0 {
            return Err(format!("vCPU feature index {} is negative", f.index));
        }
        check_bitmap("vCPU feature", &f.bitmap, 32, true)?;
    }
    let arch_only = if cfg!(target_arch = "aarch64") {
        (!t.cpuid_modifiers.is_empty() || !t.msr_modifiers.is_empty())
            .then_some("cpuid_modifiers and msr_modifiers are x86_64-only")
    } else {
        (!t.reg_modifiers.is_empty() || !t.vcpu_features.is_empty())
            .then_some("reg_modifiers and vcpu_features are aarch64-only")
    };
    match arch_only {
        Some(m) => Err(m.to_string()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::*;

    #[test]
    fn ids_follow_firecracker() {
        assert!(checked_id("root_fs1").is_ok());
        assert_eq!(checked_id(""), Err(RequestError::EmptyId));
        assert_eq!(checked_id("a-b"), Err(RequestError::InvalidId));
        assert_eq!(checked_id("a b"), Err(RequestError::InvalidId));
    }

    fn upd(v: Option<u8>, m: Option<usize>, smt: Option<bool>) -> MachineConfigUpdate {
        MachineConfigUpdate {
            vcpu_count: v,
            mem_size_mib: m,
            smt,
            ..Default::default()
        }
    }

    #[test]
    fn machine_config_ranges() {
        let d = MachineConfig::default();
        let ok = update_machine_config(&d, &upd(Some(32), Some(1), None)).unwrap();
        assert_eq!((ok.vcpu_count, ok.mem_size_mib), (32, 1));
        for bad in [upd(Some(0), None, None), upd(Some(33), None, None)] {
            assert_eq!(
                update_machine_config(&d, &bad).unwrap_err(),
                invalid_vcpu_count_message()
            );
        }
        assert!(update_machine_config(&d, &upd(None, Some(0), None))
            .unwrap_err()
            .contains("either 0"));
        assert!(update_machine_config(&d, &upd(None, Some(1 << 33), None))
            .unwrap_err()
            .contains("larger than"));
        let hp = MachineConfigUpdate {
            mem_size_mib: Some(129),
            huge_pages: Some(HugePageConfig::Hugetlbfs2M),
            ..Default::default()
        };
        assert!(update_machine_config(&d, &hp).is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn smt_needs_one_or_an_even_vcpu_count() {
        let d = MachineConfig::default();
        assert!(update_machine_config(&d, &upd(Some(3), None, Some(true))).is_err());
        assert!(update_machine_config(&d, &upd(Some(1), None, Some(true))).is_ok());
        let two = update_machine_config(&d, &upd(Some(2), None, Some(true))).unwrap();
        assert!(two.smt);
        // SMT set earlier still constrains a later vCPU change.
        assert!(update_machine_config(&two, &upd(Some(5), None, None)).is_err());
    }

    #[test]
    fn cpu_template_from_put_is_kept_or_cleared() {
        let d = MachineConfig::default();
        let t2 = MachineConfigUpdate {
            cpu_template: Some(CpuTemplate::T2),
            ..Default::default()
        };
        let c = update_machine_config(&d, &t2).unwrap();
        assert_eq!(c.cpu_template, Some(CpuTemplate::T2));
        let c2 = update_machine_config(&c, &upd(Some(2), None, None)).unwrap();
        assert_eq!(c2.cpu_template, Some(CpuTemplate::T2));
        let none = MachineConfigUpdate {
            cpu_template: Some(CpuTemplate::None),
            ..Default::default()
        };
        assert_eq!(
            update_machine_config(&c2, &none).unwrap().cpu_template,
            None
        );
    }

    #[test]
    fn cmdlines() {
        assert!(validate_cmdline("console=ttyS0 reboot=k").is_ok());
        assert!(validate_cmdline("a\u{7}b")
            .unwrap_err()
            .contains("printable"));
        assert!(validate_cmdline("é").is_err());
        assert!(validate_cmdline(&"a".repeat(2047)).is_ok());
        assert!(validate_cmdline(&"a".repeat(2048))
            .unwrap_err()
            .contains("2047"));
    }

    #[test]
    fn devices() {
        let v = |cid, p: &str| VsockDeviceConfig {
            vsock_id: None,
            guest_cid: cid,
            uds_path: p.into(),
        };
        assert!(validate_vsock(&v(3, "/v.sock")).is_ok());
        assert!(validate_vsock(&v(2, "/v.sock")).is_err());
        assert!(validate_vsock(&v(3, "")).is_err());

        let mut n = NetworkInterfaceConfig {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: None,
            mtu: Some(1500),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        assert!(validate_net(&n).is_ok());
        n.mtu = Some(67);
        assert!(validate_net(&n).unwrap_err().contains("MTU"));
        n.mtu = None;
        n.host_dev_name = "a".repeat(16);
        assert!(validate_net(&n).unwrap_err().contains("TAP"));
        n.host_dev_name = "tap0".into();
        n.iface_id = "e-0".into();
        assert!(validate_net(&n).is_err());

        let mut m = MmdsConfig {
            version: MmdsVersion::V2,
            network_interfaces: vec![],
            ipv4_address: None,
            imds_compat: false,
        };
        assert!(validate_mmds_config(&m).unwrap_err().contains("empty"));
        m.network_interfaces = vec!["eth0".into()];
        assert!(validate_mmds_config(&m).is_ok());
        m.ipv4_address = Some("10.0.0.1".parse().unwrap());
        assert!(validate_mmds_config(&m).unwrap_err().contains("link local"));
        m.ipv4_address = Some("169.254.169.254".parse().unwrap());
        assert!(validate_mmds_config(&m).is_ok());

        let h = |t, s, b| MemoryHotplugConfig {
            total_size_mib: t,
            slot_size_mib: s,
            block_size_mib: b,
        };
        assert!(validate_memory_hotplug(&h(1024, 128, 2)).is_ok());
        assert!(validate_memory_hotplug(&h(1024, 128, 1)).is_err());
        assert!(validate_memory_hotplug(&h(1024, 128, 3)).is_err());
        assert!(validate_memory_hotplug(&h(1024, 64, 2)).is_err());
        assert!(validate_memory_hotplug(&h(1024, 130, 4)).is_err());
        assert!(validate_memory_hotplug(&h(0, 128, 2)).is_err());
        assert!(validate_memory_hotplug(&h(1000, 128, 2)).is_err());

        let b = BalloonDeviceConfig {
            amount_mib: 200,
            deflate_on_oom: true,
            stats_polling_interval_s: 0,
            free_page_hinting: false,
            free_page_reporting: false,
        };
        assert!(validate_balloon(&b, 128).is_err());
        assert!(validate_balloon(&b, 256).is_ok());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cpu_templates() {
        let t: CustomCpuTemplate = serde_json::from_str(
            r#"{"kvm_capabilities":["121","!55"],
                "cpuid_modifiers":[{"leaf":"0x1","subleaf":"0b0","flags":0,"modifiers":[
                    {"register":"eax","bitmap":"0bxxxxxxxxxxxxxxxxxxxxxxxxxxxx0001"}]}],
                "msr_modifiers":[{"addr":"0x10a","bitmap":"0b0000000000000000000000000000000000000000000000000000000000000001"}]}"#,
        )
        .unwrap();
        assert!(validate_cpu_template(&t).is_ok());
        let mut bad = t.clone();
        bad.kvm_capabilities = vec!["x1".into()];
        assert!(validate_cpu_template(&bad).is_err());
        let mut bad = t.clone();
        bad.cpuid_modifiers[0].leaf = "0x1ffffffff".into();
        assert!(validate_cpu_template(&bad).unwrap_err().contains("32-bit"));
        let mut bad = t.clone();
        bad.cpuid_modifiers[0].modifiers[0].bitmap = "0b01".into();
        assert!(validate_cpu_template(&bad).is_err());
        let mut bad = t.clone();
        bad.msr_modifiers[0].bitmap = "0x1".into();
        assert!(validate_cpu_template(&bad).is_err());
        let mut bad = t;
        bad.reg_modifiers = vec![ArmRegisterModifier {
            addr: "0x1".into(),
            bitmap: "0b1".into(),
        }];
        assert!(validate_cpu_template(&bad).unwrap_err().contains("aarch64"));
    }
}
