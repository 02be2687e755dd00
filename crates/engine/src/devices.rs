//! Devices beyond the drives and the agent channel, in engine-neutral terms: what the
//! Firecracker API configures (entropy, balloon, vsock, network) and what an engine
//! reports back about them (balloon statistics).

use std::path::PathBuf;

use crate::{MetadataSpec, RateLimit};

/// The optional devices of a machine. `Default` is none of them, so a [`crate::VmSpec`]
/// that predates a device needs only `devices: Default::default()`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Devices {
    /// A virtio-rng device fed from the host's random source.
    pub entropy: Option<EntropySpec>,
    /// A virtio-balloon device.
    pub balloon: Option<BalloonSpec>,
    /// A virtio-vsock device with Firecracker's host-side Unix socket convention.
    pub vsock: Option<VsockSpec>,
    /// Network interfaces, in the order the guest sees them (`eth0` first).
    pub nets: Vec<NetSpec>,
}

/// A virtio-rng device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntropySpec {
    /// Bytes (bandwidth) and requests (ops) the guest may draw per refill period.
    pub rate_limit: Option<RateLimit>,
}

/// A virtio-balloon device as Firecracker configures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BalloonSpec {
    /// The balloon's initial size: how much of the guest's RAM it takes back.
    pub amount_mib: u32,
    /// The guest may deflate the balloon when it runs out of memory.
    pub deflate_on_oom: bool,
    /// How often the guest reports memory statistics; 0 disables them.
    pub stats_polling_interval_s: u16,
    /// Free page hinting (Firecracker's host-driven hinting runs).
    pub free_page_hinting: bool,
    /// The guest reports freed pages, which the host then releases.
    pub free_page_reporting: bool,
}

/// A virtio-vsock device with Firecracker's "hybrid" host side: the host reaches guest
/// port P by connecting to `uds_path` and writing `CONNECT P\n` (answered with
/// `OK <host port>\n`); a guest connection to CID 2 port P reaches a listener on
/// `<uds_path>_P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockSpec {
    /// The guest's context id (3 or more).
    pub guest_cid: u32,
    /// The host-side Unix socket the engine listens on.
    pub uds_path: PathBuf,
}

/// A virtio-net interface attached to a host TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// Firecracker's `iface_id`.
    pub id: String,
    /// The host TAP device (`host_dev_name`); it must exist.
    pub tap: String,
    /// The guest's MAC address; `None` lets the engine pick one.
    pub mac: Option<[u8; 6]>,
    /// The MTU announced to the guest, if any.
    pub mtu: Option<u16>,
    /// Limits on frames delivered to the guest.
    pub rx_rate_limit: Option<RateLimit>,
    /// Limits on frames the guest sends.
    pub tx_rate_limit: Option<RateLimit>,
    /// The metadata service (MMDS) the guest reaches over this interface, if any.
    pub mmds: Option<MetadataSpec>,
}

/// A change to the rate limiters of a running guest's network interface. `None`
/// leaves a direction as it is; `Some(RateLimit::default())` removes its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetUpdate {
    pub id: String,
    pub rx_rate_limit: Option<RateLimit>,
    pub tx_rate_limit: Option<RateLimit>,
}

/// The balloon as the engine sees it on a running guest, in Firecracker's units.
/// The guest's own statistics are `None` when the guest has not reported them (or
/// statistics are disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BalloonStats {
    /// The size the balloon is asked to reach.
    pub target_mib: u32,
    /// The size the guest has actually given up.
    pub actual_mib: u32,
    pub swap_in: Option<u64>,
    pub swap_out: Option<u64>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    pub free_memory: Option<u64>,
    pub total_memory: Option<u64>,
    pub available_memory: Option<u64>,
    pub disk_caches: Option<u64>,
    pub hugetlb_allocations: Option<u64>,
    pub hugetlb_failures: Option<u64>,
    pub oom_kill: Option<u64>,
    pub alloc_stall: Option<u64>,
    pub async_scan: Option<u64>,
    pub direct_scan: Option<u64>,
    pub async_reclaim: Option<u64>,
    pub direct_reclaim: Option<u64>,
}
