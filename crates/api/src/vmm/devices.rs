//! The device endpoints: entropy, balloon, vsock, network interfaces and the MMDS
//! configuration. Pre-boot requests are checked and stored in [`VmResources`]; post-boot
//! ones go to the engine. A request that fails changes nothing.
//!
//! What the engine cannot do (its declared [`ec1_engine::Capabilities`]) is refused
//! here, at `PUT` time, with a 400 that names why, rather than at `InstanceStart`.

use std::sync::{Arc, Mutex};

use ec1_engine::{BalloonStats, MetadataSpec, NetUpdate, VmSpec};
use serde_json::{json, Value};

use super::{engine_call, engine_err, Inner, Vmm};
use crate::error::VmmActionError;
use crate::mmds::{MmdsService, MmdsStore, DEFAULT_MMDS_IPV4};
use crate::models::*;
use crate::resources::tap_exists;
use crate::validation;

/// Pages of 4 KiB in a MiB: Firecracker reports balloon sizes in both.
const PAGES_PER_MIB: u64 = 256;

fn balloon_err(m: impl Into<String>) -> VmmActionError {
    VmmActionError::BalloonConfig(m.into())
}

fn no_balloon() -> VmmActionError {
    balloon_err("No balloon device found.")
}

/// Firecracker's `BalloonStats` JSON: the sizes always, the guest's statistics when
/// it has reported them.
pub(crate) fn stats_json(s: &BalloonStats) -> Value {
    let mut v = json!({
        "target_pages": u64::from(s.target_mib) * PAGES_PER_MIB,
        "actual_pages": u64::from(s.actual_mib) * PAGES_PER_MIB,
        "target_mib": s.target_mib,
        "actual_mib": s.actual_mib,
    });
    let optional = [
        ("swap_in", s.swap_in),
        ("swap_out", s.swap_out),
        ("major_faults", s.major_faults),
        ("minor_faults", s.minor_faults),
        ("free_memory", s.free_memory),
        ("total_memory", s.total_memory),
        ("available_memory", s.available_memory),
        ("disk_caches", s.disk_caches),
        ("hugetlb_allocations", s.hugetlb_allocations),
        ("hugetlb_failures", s.hugetlb_failures),
        ("oom_kill", s.oom_kill),
        ("alloc_stall", s.alloc_stall),
        ("async_scan", s.async_scan),
        ("direct_scan", s.direct_scan),
        ("async_reclaim", s.async_reclaim),
        ("direct_reclaim", s.direct_reclaim),
    ];
    if let Some(obj) = v.as_object_mut() {
        for (k, val) in optional {
            if let Some(n) = val {
                obj.insert(k.into(), json!(n));
            }
        }
    }
    v
}

impl Vmm {
    pub(super) fn put_entropy(
        &self,
        inner: &mut Inner,
        cfg: EntropyDeviceConfig,
    ) -> Result<(), VmmActionError> {
        if let Some(rl) = cfg.rate_limiter.and_then(|r| r.to_engine()) {
            if rl.ops.is_some() {
                self.require(
                    self.opts.capabilities.entropy_ops_limit,
                    "operations (ops) rate limits on the entropy device are",
                )?;
            }
        }
        inner.resources.entropy = Some(cfg);
        Ok(())
    }

    pub(super) fn put_balloon(
        &self,
        inner: &mut Inner,
        cfg: BalloonDeviceConfig,
    ) -> Result<(), VmmActionError> {
        validation::validate_balloon(&cfg, inner.resources.machine_config.mem_size_mib)
            .map_err(VmmActionError::BalloonConfig)?;
        if cfg.free_page_hinting {
            self.require(
                self.opts.capabilities.free_page_hinting,
                "free page hinting is",
            )?;
        }
        inner.resources.balloon = Some(cfg);
        Ok(())
    }

    pub(super) fn get_balloon(&self, inner: &Inner) -> Result<Value, VmmActionError> {
        inner
            .resources
            .balloon
            .as_ref()
            .map(|b| json!(b))
            .ok_or_else(no_balloon)
    }

    pub(super) fn patch_balloon(
        &self,
        inner: &mut Inner,
        u: BalloonUpdateConfig,
    ) -> Result<(), VmmActionError> {
        if inner.resources.balloon.is_none() {
            return Err(no_balloon());
        }
        let mem = inner.resources.machine_config.mem_size_mib;
        if u.amount_mib as usize > mem {
            return Err(balloon_err(format!(
                "Amount of pages requested is too large: {} MiB is more than the guest's {mem} MiB.",
                u.amount_mib
            )));
        }
        engine_call(inner.engine.clone(), |e| e.set_balloon(u.amount_mib))
            .map_err(|e| engine_err(e, balloon_err))?;
        if let Some(b) = inner.resources.balloon.as_mut() {
            b.amount_mib = u.amount_mib;
        }
        Ok(())
    }

    pub(super) fn balloon_stats(&self, inner: &Inner) -> Result<Value, VmmActionError> {
        let b = inner.resources.balloon.as_ref().ok_or_else(no_balloon)?;
        if b.stats_polling_interval_s == 0 {
            return Err(balloon_err(
                "Statistics for the balloon device are not enabled: set stats_polling_interval_s when configuring the balloon.",
            ));
        }
        let s = engine_call(inner.engine.clone(), |e| e.balloon_stats())
            .map_err(|e| engine_err(e, balloon_err))?;
        Ok(stats_json(&s))
    }

    pub(super) fn patch_balloon_stats(
        &self,
        inner: &mut Inner,
        u: BalloonUpdateStatsConfig,
    ) -> Result<(), VmmActionError> {
        let b = inner.resources.balloon.as_ref().ok_or_else(no_balloon)?;
        if (b.stats_polling_interval_s == 0) != (u.stats_polling_interval_s == 0) {
            return Err(balloon_err(
                "Cannot enable or disable balloon statistics after boot: only a non-zero interval can be changed to another.",
            ));
        }
        engine_call(inner.engine.clone(), |e| {
            e.set_balloon_stats_interval(u.stats_polling_interval_s)
        })
        .map_err(|e| engine_err(e, balloon_err))?;
        if let Some(b) = inner.resources.balloon.as_mut() {
            b.stats_polling_interval_s = u.stats_polling_interval_s;
        }
        Ok(())
    }

    /// Hinting runs: refused, since no balloon here can have hinting enabled.
    pub(super) fn balloon_hinting(&self, inner: &Inner) -> VmmActionError {
        if inner.resources.balloon.is_none() {
            return no_balloon();
        }
        match self.require(
            self.opts.capabilities.free_page_hinting,
            "free page hinting is",
        ) {
            Err(e) => e,
            // The engine trait has no hinting commands yet.
            Ok(()) => self.unsupported("starting and stopping free page hinting is"),
        }
    }

    pub(super) fn put_vsock(
        &self,
        inner: &mut Inner,
        cfg: VsockDeviceConfig,
    ) -> Result<(), VmmActionError> {
        validation::validate_vsock(&cfg).map_err(VmmActionError::VsockConfig)?;
        inner
            .resources
            .set_vsock(cfg)
            .map_err(VmmActionError::VsockConfig)
    }

    pub(super) fn put_network(
        &self,
        inner: &mut Inner,
        cfg: NetworkInterfaceConfig,
    ) -> Result<(), VmmActionError> {
        validation::validate_net(&cfg).map_err(VmmActionError::NetworkConfig)?;
        inner
            .resources
            .insert_net(cfg, tap_exists)
            .map_err(VmmActionError::NetworkConfig)
    }

    pub(super) fn patch_network(
        &self,
        inner: &mut Inner,
        u: NetworkInterfaceUpdateConfig,
    ) -> Result<(), VmmActionError> {
        if !inner.resources.net.iter().any(|n| n.iface_id == u.iface_id) {
            return Err(VmmActionError::NetworkConfig(format!(
                "Invalid interface ID - not found: {}",
                u.iface_id
            )));
        }
        let update = NetUpdate {
            id: u.iface_id.clone(),
            rx_rate_limit: u.rx_rate_limiter.map(|r| r.to_engine().unwrap_or_default()),
            tx_rate_limit: u.tx_rate_limiter.map(|r| r.to_engine().unwrap_or_default()),
        };
        engine_call(inner.engine.clone(), |e| e.update_net(&update))
            .map_err(|e| engine_err(e, VmmActionError::NetworkConfig))?;
        if let Some(n) = inner
            .resources
            .net
            .iter_mut()
            .find(|n| n.iface_id == u.iface_id)
        {
            if u.rx_rate_limiter.is_some() {
                n.rx_rate_limiter = u.rx_rate_limiter;
            }
            if u.tx_rate_limiter.is_some() {
                n.tx_rate_limiter = u.tx_rate_limiter;
            }
        }
        Ok(())
    }

    pub(super) fn put_mmds_config(
        &self,
        inner: &mut Inner,
        cfg: MmdsConfig,
    ) -> Result<(), VmmActionError> {
        validation::validate_mmds_config(&cfg).map_err(VmmActionError::MmdsConfig)?;
        if let Some(missing) = cfg
            .network_interfaces
            .iter()
            .find(|id| !inner.resources.net.iter().any(|n| &n.iface_id == *id))
        {
            return Err(VmmActionError::MmdsConfig(format!(
                "The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface: {missing}."
            )));
        }
        // Kept with its default address filled in, as Firecracker's `GET /vm/config`
        // shows it.
        inner.resources.mmds_config = Some(MmdsConfig {
            ipv4_address: Some(cfg.ipv4_address.unwrap_or(DEFAULT_MMDS_IPV4)),
            ..cfg
        });
        Ok(())
    }
}

/// Puts the guest's MMDS (one service over the shared `store`) on the interfaces
/// `cfg` lists.
pub(super) fn attach_mmds(spec: &mut VmSpec, cfg: &MmdsConfig, store: &Arc<Mutex<MmdsStore>>) {
    let service = mmds_service(cfg, store);
    for n in spec
        .devices
        .nets
        .iter_mut()
        .filter(|n| cfg.network_interfaces.contains(&n.id))
    {
        n.mmds = Some(service.clone());
    }
}

/// The guest's MMDS for `cfg` over the shared `store`; its settings are `cfg` itself,
/// so that a snapshot of the guest brings the same service back (see
/// [`mmds_config_of`]).
pub(super) fn mmds_service(cfg: &MmdsConfig, store: &Arc<Mutex<MmdsStore>>) -> MetadataSpec {
    MetadataSpec {
        ipv4: cfg.ipv4_address.unwrap_or(DEFAULT_MMDS_IPV4),
        service: Arc::new(MmdsService::new(store.clone(), cfg)),
        settings: serde_json::to_string(cfg).unwrap_or_default(),
    }
}

/// The MMDS configuration a snapshot's settings carry (written by [`mmds_service`]).
pub(super) fn mmds_config_of(settings: &str) -> Result<MmdsConfig, String> {
    serde_json::from_str(settings)
        .map_err(|e| format!("the snapshot's MMDS settings are not ec1's ({e}): {settings}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_firecrackers_names_and_units() {
        let s = BalloonStats {
            target_mib: 64,
            actual_mib: 32,
            free_memory: Some(1234),
            hugetlb_failures: Some(0),
            ..Default::default()
        };
        let v = stats_json(&s);
        assert_eq!(
            v,
            json!({"target_pages": 16384, "actual_pages": 8192, "target_mib": 64,
                   "actual_mib": 32, "free_memory": 1234, "hugetlb_failures": 0})
        );
    }

    #[test]
    fn mmds_goes_on_the_listed_interfaces_only() {
        use crate::resources::VmResources;
        let net = |id: &str| NetworkInterfaceConfig {
            iface_id: id.into(),
            host_dev_name: format!("tap-{id}"),
            guest_mac: None,
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        let res = VmResources {
            boot_source: Some(BootSourceConfig {
                kernel_image_path: "/k".into(),
                initrd_path: None,
                boot_args: None,
            }),
            net: vec![net("eth0"), net("eth1")],
            ..Default::default()
        };
        let mut spec = crate::spec::build_vm_spec(
            &res,
            "id",
            std::path::Path::new("/run/x"),
            &Default::default(),
        )
        .unwrap();
        assert!(spec.devices.nets.iter().all(|n| n.mmds.is_none()));
        let store = Arc::new(Mutex::new(MmdsStore::new(1000)));
        store.lock().unwrap().put(json!({"k": "v"})).unwrap();
        let cfg = MmdsConfig {
            version: MmdsVersion::V1,
            network_interfaces: vec!["eth1".into()],
            ipv4_address: Some("169.254.170.2".parse().unwrap()),
            imds_compat: false,
        };
        attach_mmds(&mut spec, &cfg, &store);
        assert!(spec.devices.nets[0].mmds.is_none());
        let m = spec.devices.nets[1].mmds.as_ref().unwrap();
        assert_eq!(m.ipv4.to_string(), "169.254.170.2");
        let r = m.service.answer(&ec1_engine::MetadataRequest {
            method: "GET".into(),
            target: "/k".into(),
            headers: vec![],
        });
        assert_eq!((r.status, r.body), (200, b"v".to_vec()));
    }
}
