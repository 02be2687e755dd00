//! The machine description stored in a snapshot: everything needed to rebuild the
//! QEMU command line of the snapshotted guest (the device state only loads into a
//! machine with the same devices on the same transports).
//!
//! It mirrors [`VmSpec`] in serialisable form instead of deriving serde on the engine
//! types, so that the on-disk format changes only when this file does. Conversions
//! destructure the engine types exhaustively: a new device field fails to compile here
//! until the snapshot format covers it.

use std::path::{Path, PathBuf};

use crate::accel::Accel;
use ec1_engine::{
    Arch, BalloonSpec, CacheType, Devices, DriveSpec, EngineError, EntropySpec, MemoryBacking,
    MetadataSpec, NetOverride, NetSpec, RateLimit, TokenBucket, VmSpec,
};
use serde::{Deserialize, Serialize};

fn x86_64() -> String {
    Arch::X86_64.as_str().into()
}

/// The machine of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The engine that made it (`qemu`).
    pub engine: String,
    /// `tcg` or `kvm`: the CPU model differs, so a snapshot restores only under the
    /// acceleration it was made with.
    pub accel: String,
    /// The QEMU version that wrote the device state.
    pub qemu_version: String,
    /// The guest's architecture (`x86_64` in snapshots from before arm64 guests).
    #[serde(default = "x86_64")]
    pub arch: String,
    /// The instance id of the snapshotted guest (informational).
    pub id: String,
    pub vcpus: u8,
    pub smt: bool,
    pub mem_mib: u32,
    pub drives: Vec<Drive>,
    /// Whether the guest has ec1's agent channel (a virtio-serial device).
    pub agent_channel: bool,
    pub devices: DeviceSet,
    /// The kernel the guest booted (informational: a restore does not load it).
    pub kernel: String,
    /// The initrd the guest booted (informational).
    pub initrd: Option<String>,
    /// The kernel command line as given. A restore does not boot it, but the machine's
    /// layout follows from it (`i8042.noaux` frees a virtio transport, and the device
    /// count decides between the machines with and without ACPI), so the restored
    /// machine is built with it.
    pub cmdline: String,
}

/// A drive of the snapshotted guest; the image must be at `path` when restoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
    /// `unsafe` or `writeback`.
    pub cache: String,
    pub rate_limit: Option<Limit>,
}

/// A token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub size: u64,
    pub one_time_burst: u64,
    pub refill_time_ms: u64,
}

/// A rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub bandwidth: Option<Bucket>,
    pub ops: Option<Bucket>,
}

/// The optional devices (a vsock device cannot be snapshotted, so it has no entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSet {
    pub entropy: Option<Entropy>,
    pub balloon: Option<Balloon>,
    pub nets: Vec<Net>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entropy {
    pub rate_limit: Option<Limit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balloon {
    pub amount_mib: u32,
    pub deflate_on_oom: bool,
    pub stats_polling_interval_s: u16,
    pub free_page_hinting: bool,
    pub free_page_reporting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    pub id: String,
    pub tap: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u16>,
    pub rx_rate_limit: Option<Limit>,
    pub tx_rate_limit: Option<Limit>,
    /// The metadata service the interface served (format v2.1; absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SavedMetadata>,
}

/// Where an interface answered metadata requests, and the service's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMetadata {
    pub ipv4: std::net::Ipv4Addr,
    pub settings: String,
}

fn bucket(b: &TokenBucket) -> Bucket {
    Bucket {
        size: b.size,
        one_time_burst: b.one_time_burst,
        refill_time_ms: b.refill_time_ms,
    }
}

fn token_bucket(b: &Bucket) -> TokenBucket {
    TokenBucket {
        size: b.size,
        one_time_burst: b.one_time_burst,
        refill_time_ms: b.refill_time_ms,
    }
}

fn limit(r: &RateLimit) -> Limit {
    Limit {
        bandwidth: r.bandwidth.as_ref().map(bucket),
        ops: r.ops.as_ref().map(bucket),
    }
}

fn rate_limit(l: &Limit) -> RateLimit {
    RateLimit {
        bandwidth: l.bandwidth.as_ref().map(token_bucket),
        ops: l.ops.as_ref().map(token_bucket),
    }
}

fn utf8(what: &str, p: &Path) -> Result<String, EngineError> {
    p.to_str().map(String::from).ok_or_else(|| {
        EngineError::InvalidSpec(format!(
            "{what} {} is not valid UTF-8, which a snapshot cannot record: rename it",
            p.display()
        ))
    })
}

/// Where the description is about to be used: the engine's settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineFacts<'a> {
    pub accel: Accel,
    pub arch: Arch,
    pub qemu_version: &'a str,
}

impl Machine {
    /// The guest's architecture (x86_64 for a name this ec1 does not know, which
    /// [`Machine::check_engine`] then refuses against the engine's).
    pub fn guest_arch(&self) -> Arch {
        Arch::parse(&self.arch).unwrap_or(Arch::X86_64)
    }

    /// The description of the running guest `spec`. Fails for what a snapshot cannot
    /// hold: a vsock device (QEMU refuses to migrate vhost-user-vsock) or paths that
    /// are not UTF-8.
    pub fn describe(spec: &VmSpec, facts: EngineFacts<'_>) -> Result<Machine, EngineError> {
        let Devices {
            entropy,
            balloon,
            vsock,
            nets,
        } = &spec.devices;
        if vsock.is_some() {
            return Err(EngineError::Unsupported {
                engine: format!("qemu-{}", facts.accel.as_str()),
                what: "snapshotting a guest with a vsock device (QEMU cannot migrate its \
                       vhost-user-vsock device; start the guest without vsock to snapshot it)"
                    .into(),
            });
        }
        if let Some(d) = spec.drives.iter().find(|d| d.vhost_user) {
            // Firecracker: "Snapshotting of vhost-user-blk devices is not supported".
            return Err(EngineError::Unsupported {
                engine: format!("qemu-{}", facts.accel.as_str()),
                what: format!(
                    "snapshotting a guest with a vhost-user-blk drive ({:?}): its backend holds state the snapshot cannot",
                    d.id
                ),
            });
        }
        let drives = spec
            .drives
            .iter()
            .map(|d| {
                Ok(Drive {
                    id: d.id.clone(),
                    path: utf8("the drive image", &d.path)?.into(),
                    read_only: d.read_only,
                    cache: match d.cache {
                        CacheType::Unsafe => "unsafe".into(),
                        CacheType::Writeback => "writeback".into(),
                    },
                    rate_limit: d.rate_limit.as_ref().map(limit),
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Machine {
            engine: "qemu".into(),
            accel: facts.accel.as_str().into(),
            qemu_version: facts.qemu_version.into(),
            arch: spec.arch.as_str().into(),
            id: spec.id.clone(),
            vcpus: spec.vcpus,
            smt: spec.smt,
            mem_mib: spec.mem_mib,
            drives,
            agent_channel: spec.agent_socket.is_some(),
            devices: DeviceSet {
                entropy: entropy.as_ref().map(|e| Entropy {
                    rate_limit: e.rate_limit.as_ref().map(limit),
                }),
                balloon: balloon.as_ref().map(|b| {
                    let BalloonSpec {
                        amount_mib,
                        deflate_on_oom,
                        stats_polling_interval_s,
                        free_page_hinting,
                        free_page_reporting,
                    } = *b;
                    Balloon {
                        amount_mib,
                        deflate_on_oom,
                        stats_polling_interval_s,
                        free_page_hinting,
                        free_page_reporting,
                    }
                }),
                nets: nets
                    .iter()
                    .map(|n| {
                        let NetSpec {
                            id,
                            tap,
                            mac,
                            mtu,
                            rx_rate_limit,
                            tx_rate_limit,
                            mmds,
                        } = n;
                        Net {
                            id: id.clone(),
                            tap: tap.clone(),
                            mac: *mac,
                            mtu: *mtu,
                            rx_rate_limit: rx_rate_limit.as_ref().map(limit),
                            tx_rate_limit: tx_rate_limit.as_ref().map(limit),
                            metadata: mmds.as_ref().map(|m| SavedMetadata {
                                ipv4: m.ipv4,
                                settings: m.settings.clone(),
                            }),
                        }
                    })
                    .collect(),
            },
            kernel: spec.kernel.to_string_lossy().into_owned(),
            initrd: spec
                .initrd
                .as_ref()
                .map(|i| i.to_string_lossy().into_owned()),
            cmdline: spec.cmdline.to_string(),
        })
    }

    /// Checks that this engine can load the description at all.
    pub fn check_engine(&self, facts: EngineFacts<'_>) -> Result<(), EngineError> {
        if self.engine != "qemu" {
            return Err(EngineError::InvalidSpec(format!(
                "the snapshot was made by the {} engine; only the qemu engine can restore it",
                self.engine
            )));
        }
        if self.arch != facts.arch.as_str() {
            return Err(EngineError::InvalidSpec(format!(
                "the snapshot is of an {} guest and this engine runs {} guests",
                self.arch, facts.arch
            )));
        }
        if self.accel != facts.accel.as_str() {
            return Err(EngineError::InvalidSpec(format!(
                "the snapshot was made with qemu-{} and this engine runs qemu-{}: the CPU \
                 models differ; restore it with --engine qemu-{}",
                self.accel,
                facts.accel.as_str(),
                self.accel
            )));
        }
        Ok(())
    }

    /// The machine to start for a restore: this description's hardware, with the
    /// host-side settings (id, console, sockets, run directory) of `host`, and guest
    /// RAM mapped privately (copy-on-write) from `mem_path`.
    pub fn restore_spec(&self, host: &VmSpec, mem_path: &Path) -> VmSpec {
        let agent_socket = self.agent_channel.then(|| {
            host.agent_socket
                .clone()
                .unwrap_or_else(|| host.run_dir.join("agent.sock"))
        });
        VmSpec {
            id: host.id.clone(),
            arch: self.guest_arch(),
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: self.cmdline.as_str().into(),
            vcpus: self.vcpus,
            smt: self.smt,
            mem_mib: self.mem_mib,
            drives: self
                .drives
                .iter()
                .map(|d| DriveSpec {
                    id: d.id.clone(),
                    path: d.path.clone(),
                    read_only: d.read_only,
                    cache: if d.cache == "writeback" {
                        CacheType::Writeback
                    } else {
                        CacheType::Unsafe
                    },
                    rate_limit: d.rate_limit.as_ref().map(rate_limit),
                    vhost_user: false,
                })
                .collect(),
            // The restoring host's console, whatever the snapshotted guest had.
            serial: host.serial.clone(),
            agent_socket,
            memory: MemoryBacking::File {
                path: mem_path.to_path_buf(),
                shared: false,
            },
            run_dir: host.run_dir.clone(),
            devices: Devices {
                entropy: self.devices.entropy.map(|e| EntropySpec {
                    rate_limit: e.rate_limit.as_ref().map(rate_limit),
                }),
                balloon: self.devices.balloon.map(|b| BalloonSpec {
                    amount_mib: b.amount_mib,
                    deflate_on_oom: b.deflate_on_oom,
                    stats_polling_interval_s: b.stats_polling_interval_s,
                    free_page_hinting: b.free_page_hinting,
                    free_page_reporting: b.free_page_reporting,
                }),
                vsock: None,
                nets: self
                    .devices
                    .nets
                    .iter()
                    .map(|n| NetSpec {
                        id: n.id.clone(),
                        tap: n.tap.clone(),
                        mac: n.mac,
                        mtu: n.mtu,
                        rx_rate_limit: n.rx_rate_limit.as_ref().map(rate_limit),
                        tx_rate_limit: n.tx_rate_limit.as_ref().map(rate_limit),
                        mmds: None,
                    })
                    .collect(),
            },
        }
    }
}

/// The saved settings of the snapshot's metadata service, if an interface had one.
pub fn saved_metadata(machine: &Machine) -> Option<String> {
    machine
        .devices
        .nets
        .iter()
        .find_map(|n| n.metadata.as_ref().map(|m| m.settings.clone()))
}

/// Gives the interfaces that had a metadata service `service` again, at the address
/// each had.
pub fn reattach_metadata(spec: &mut VmSpec, machine: &Machine, service: &MetadataSpec) {
    for n in &mut spec.devices.nets {
        let saved = machine
            .devices
            .nets
            .iter()
            .find(|s| s.id == n.id)
            .and_then(|s| s.metadata.as_ref());
        if let Some(saved) = saved {
            n.mmds = Some(MetadataSpec {
                ipv4: saved.ipv4,
                ..service.clone()
            });
        }
    }
}

/// Puts each restored interface named in `overrides` on its new TAP device
/// (Firecracker's `network_overrides`). An override for an interface the snapshot does
/// not have is refused, naming the ones it has: it is a typo, and the clone would
/// otherwise share the original's TAP.
pub fn override_nets(spec: &mut VmSpec, overrides: &[NetOverride]) -> Result<(), EngineError> {
    for o in overrides {
        let nets = &mut spec.devices.nets;
        match nets.iter_mut().find(|n| n.id == o.iface_id) {
            Some(n) => n.tap.clone_from(&o.tap),
            None => {
                let have: Vec<&str> = nets.iter().map(|n| n.id.as_str()).collect();
                return Err(EngineError::InvalidSpec(format!(
                    "network override for `{}`: the snapshot has no such network interface \
                     (it has: {})",
                    o.iface_id,
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_engine::{SerialOut, VsockSpec};

    #[test]
    fn network_overrides_change_the_named_interfaces_tap_only() {
        let mut s = spec();
        let o = |id: &str, tap: &str| NetOverride {
            iface_id: id.into(),
            tap: tap.into(),
        };
        override_nets(&mut s, &[o("eth0", "tap7")]).unwrap();
        assert_eq!(s.devices.nets[0].tap, "tap7");
        assert_eq!(s.devices.nets[0].mac, Some([2, 0, 0, 0, 0, 1]));
        let e = override_nets(&mut s, &[o("eth9", "tap8")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("no such network interface (it has: eth0)"),
            "{e}"
        );
        assert_eq!(s.devices.nets[0].tap, "tap7");
        s.devices.nets.clear();
        let e = override_nets(&mut s, &[o("eth0", "tap8")]).unwrap_err();
        assert!(e.to_string().contains("(it has: none)"), "{e}");
    }

    pub(crate) fn spec() -> VmSpec {
        let limit = RateLimit {
            bandwidth: Some(TokenBucket {
                size: 1,
                one_time_burst: 2,
                refill_time_ms: 3,
            }),
            ops: None,
        };
        VmSpec {
            id: "vm1".into(),
            arch: ec1_engine::Arch::X86_64,
            kernel: "/k/vmlinux".into(),
            initrd: Some("/k/initrd".into()),
            cmdline: "console=ttyS0".into(),
            vcpus: 2,
            smt: true,
            mem_mib: 256,
            drives: vec![DriveSpec {
                id: "rootfs".into(),
                path: "/img/root.ext4".into(),
                read_only: true,
                cache: CacheType::Writeback,
                rate_limit: Some(limit),
                vhost_user: false,
            }],
            serial: SerialOut::Null,
            agent_socket: Some("/run/a/agent.sock".into()),
            memory: MemoryBacking::File {
                path: "/run/a/guest.ram".into(),
                shared: true,
            },
            run_dir: "/run/a".into(),
            devices: Devices {
                entropy: Some(EntropySpec {
                    rate_limit: Some(limit),
                }),
                balloon: Some(BalloonSpec {
                    amount_mib: 10,
                    deflate_on_oom: true,
                    stats_polling_interval_s: 1,
                    free_page_hinting: false,
                    free_page_reporting: true,
                }),
                vsock: None,
                nets: vec![NetSpec {
                    id: "eth0".into(),
                    tap: "tap0".into(),
                    mac: Some([2, 0, 0, 0, 0, 1]),
                    mtu: Some(1400),
                    rx_rate_limit: None,
                    tx_rate_limit: Some(limit),
                    mmds: None,
                }],
            },
        }
    }

    const FACTS: EngineFacts<'static> = EngineFacts {
        accel: Accel::Tcg,
        arch: Arch::X86_64,
        qemu_version: "10.0.2",
    };

    #[test]
    fn a_description_round_trips_through_json_and_back_to_the_hardware() {
        let s = spec();
        let m = Machine::describe(&s, FACTS).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: Machine = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let host = VmSpec {
            id: "clone".into(),
            serial: SerialOut::File("/run/b/console".into()),
            agent_socket: Some("/run/b/agent.sock".into()),
            run_dir: "/run/b".into(),
            ..s.clone()
        };
        let r = back.restore_spec(&host, Path::new("/snap/mem"));
        assert_eq!(r.id, "clone");
        assert_eq!(r.run_dir, PathBuf::from("/run/b"));
        assert_eq!(r.agent_socket, Some("/run/b/agent.sock".into()));
        assert_eq!(r.serial, SerialOut::File("/run/b/console".into()));
        assert_eq!(
            r.memory,
            MemoryBacking::File {
                path: "/snap/mem".into(),
                shared: false
            }
        );
        assert_eq!(r.kernel, PathBuf::new());
        assert_eq!(r.cmdline, s.cmdline, "the layout follows the command line");
        // The hardware is the snapshot's.
        assert_eq!((r.vcpus, r.smt, r.mem_mib), (2, true, 256));
        assert_eq!(r.drives, s.drives);
        assert_eq!(r.devices, s.devices);
        assert_eq!(m.kernel, "/k/vmlinux");
        assert_eq!(m.initrd.as_deref(), Some("/k/initrd"));
    }

    #[test]
    fn a_missing_agent_socket_goes_to_the_run_directory() {
        let mut s = spec();
        let m = Machine::describe(&s, FACTS).unwrap();
        s.agent_socket = None;
        let r = m.restore_spec(&s, Path::new("/m"));
        assert_eq!(r.agent_socket, Some("/run/a/agent.sock".into()));
        let mut m = m;
        m.agent_channel = false;
        assert_eq!(m.restore_spec(&s, Path::new("/m")).agent_socket, None);
        s.serial = SerialOut::Stdio;
        assert_eq!(m.restore_spec(&s, Path::new("/m")).serial, SerialOut::Stdio);
        s.serial = SerialOut::Null;
        assert_eq!(m.restore_spec(&s, Path::new("/m")).serial, SerialOut::Null);
        m.drives[0].cache = "unsafe".into();
        assert_eq!(
            m.restore_spec(&s, Path::new("/m")).drives[0].cache,
            CacheType::Unsafe
        );
    }

    #[test]
    fn vsock_and_non_utf8_paths_cannot_be_described() {
        let mut s = spec();
        s.devices.vsock = Some(VsockSpec {
            guest_cid: 3,
            uds_path: "/v.sock".into(),
        });
        let e = Machine::describe(&s, FACTS).unwrap_err().to_string();
        assert!(e.contains("vsock"), "{e}");
        let mut s = spec();
        use std::os::unix::ffi::OsStringExt;
        s.drives[0].path = PathBuf::from(std::ffi::OsString::from_vec(b"/img/\xff".to_vec()));
        let e = Machine::describe(&s, FACTS).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8"), "{e}");
        let mut s = spec();
        s.drives[0].vhost_user = true;
        let e = Machine::describe(&s, FACTS).unwrap_err().to_string();
        assert!(e.contains("vhost-user-blk drive"), "{e}");
    }

    #[test]
    fn only_the_same_engine_and_acceleration_restore() {
        let m = Machine::describe(&spec(), FACTS).unwrap();
        assert!(m.check_engine(FACTS).is_ok());
        let kvm = EngineFacts {
            accel: Accel::Kvm,
            ..FACTS
        };
        let e = m.check_engine(kvm).unwrap_err().to_string();
        assert!(e.contains("--engine qemu-tcg"), "{e}");
        let arm = EngineFacts {
            arch: Arch::Aarch64,
            ..FACTS
        };
        let e = m.check_engine(arm).unwrap_err().to_string();
        assert!(e.contains("x86_64 guest") && e.contains("aarch64"), "{e}");
        // Snapshots from before arm64 guests carry no architecture: x86_64.
        let mut json: serde_json::Value = serde_json::to_value(&m).unwrap();
        json.as_object_mut().unwrap().remove("arch");
        let old: Machine = serde_json::from_value(json).unwrap();
        assert_eq!(old.arch, "x86_64");
        // The restored machine has the recorded architecture.
        let mut a = m.clone();
        a.arch = "aarch64".into();
        assert_eq!(a.restore_spec(&spec(), Path::new("/m")).arch, Arch::Aarch64);
        let mut other = m.clone();
        other.engine = "firecracker".into();
        let e = other.check_engine(FACTS).unwrap_err().to_string();
        assert!(e.contains("firecracker engine"), "{e}");
    }
}
