use std::path::PathBuf;

/// A machine to run, in engine-neutral terms. The API layer builds it from
/// Firecracker's configuration; engines translate it into their own.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    /// The instance id (`--id`), used for process names and logs.
    pub id: String,
    /// The guest's architecture; [`crate::Arch::of_kernel`] reads it from the kernel.
    pub arch: crate::Arch,
    /// The kernel image: an ELF `vmlinux` or `bzImage` on x86_64, an `Image` on
    /// aarch64.
    pub kernel: PathBuf,
    /// One initrd; the layer above concatenates archives (e.g. the injected agent).
    pub initrd: Option<PathBuf>,
    /// The kernel command line, complete but for what the engine's machine needs
    /// (which it adds: `virtio_mmio.device=` entries, clock settings, the console's
    /// name).
    pub cmdline: crate::Cmdline,
    /// vCPUs, 1..=32.
    pub vcpus: u8,
    /// Two threads per core (`smt`), only with an even vCPU count.
    pub smt: bool,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// Block devices, in the order the guest sees them (root device first).
    pub drives: Vec<DriveSpec>,
    /// Where the guest's serial console goes.
    pub serial: SerialOut,
    /// Unix socket path for the host↔agent channel; `None` adds no channel.
    /// The engine creates the socket (listening); the host connects to it.
    pub agent_socket: Option<PathBuf>,
    /// How guest RAM is backed.
    pub memory: MemoryBacking,
    /// A private directory the engine may use for its sockets and scratch files;
    /// the caller creates it and removes it after [`crate::Engine::stop`].
    pub run_dir: PathBuf,
    /// Entropy, balloon, vsock and network devices.
    pub devices: crate::Devices,
}

/// Where the guest's serial console (ttyS0) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOut {
    /// ec1's own stdout (and stdin into the guest), as Firecracker does by default.
    Stdio,
    /// Output only, appended to a file or written to a FIFO.
    File(PathBuf),
    /// Output only, to a file that keeps at most the last `max_bytes` (it may hold up
    /// to twice that between trims): a guest flooding its console cannot fill the
    /// host's disk. For consoles ec1 keeps for itself (to explain a failure).
    Capped { path: PathBuf, max_bytes: u64 },
    /// Output only, through Firecracker's serial rate limiter: what the guest writes
    /// beyond `bucket` is dropped (never held back: the guest does not stall) and
    /// counted in `dropped`. To the file or FIFO `to`, or ec1's stdout without one.
    Limited {
        to: Option<PathBuf>,
        bucket: TokenBucket,
        dropped: DroppedBytes,
    },
    /// Discarded.
    Null,
}

/// A count of bytes dropped, shared between the engine that drops them and whoever
/// reports them (the API's `uart.rate_limiter_dropped_bytes`). Two counters are equal
/// when they are the same counter.
#[derive(Debug, Clone, Default)]
pub struct DroppedBytes(pub std::sync::Arc<std::sync::atomic::AtomicU64>);

impl DroppedBytes {
    /// Adds `n` dropped bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The bytes dropped so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl PartialEq for DroppedBytes {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DroppedBytes {}

/// How guest RAM is backed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryBacking {
    /// Private anonymous memory.
    Anonymous,
    /// Shared memory with no file behind it, which the engine can still save: the RAM
    /// of a guest that may be snapshotted later. (A file on disk would make every
    /// first write of the guest to a page a filesystem write fault, and write guest
    /// RAM back to the disk.)
    Shared,
    /// As [`MemoryBacking::Shared`], on the host's 2 MiB hugetlb pages (Firecracker's
    /// `huge_pages: "2M"`): the pages come from the host's reserved pool, which must
    /// hold the whole guest.
    HugePages,
    /// A file mapped shared (writes reach the file; a template source) or private
    /// (copy-on-write; a clone).
    File { path: PathBuf, shared: bool },
}

/// Host cache behaviour of a drive, in Firecracker's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    /// Flushes from the guest are ignored.
    #[default]
    Unsafe,
    /// Flushes from the guest reach the host file.
    Writeback,
}

/// A token bucket as Firecracker defines it: `size` tokens, refilled over
/// `refill_time_ms`, plus a one-time initial burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub size: u64,
    pub one_time_burst: u64,
    pub refill_time_ms: u64,
}

/// A rate limiter: bytes and operations per refill period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    pub bandwidth: Option<TokenBucket>,
    pub ops: Option<TokenBucket>,
}

/// A virtio block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveSpec {
    /// Firecracker's `drive_id`.
    pub id: String,
    /// Raw image on the host.
    pub path: PathBuf,
    pub read_only: bool,
    pub cache: CacheType,
    pub rate_limit: Option<RateLimit>,
    /// `path` is the socket of a vhost-user-blk backend (Firecracker's `socket`) that
    /// serves the disk, not an image: the engine connects the device to it.
    pub vhost_user: bool,
}

/// A change to a drive of a running guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveUpdate {
    pub id: String,
    /// New backing file (media change), if any.
    pub path: Option<PathBuf>,
    /// New rate limiter, if any.
    pub rate_limit: Option<RateLimit>,
}

/// Where a snapshot goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTarget {
    /// Device and vCPU state.
    pub state_path: PathBuf,
    /// Guest memory.
    pub mem_path: PathBuf,
    /// Only pages dirtied since the last snapshot (Firecracker's `Diff`).
    pub diff: bool,
}

/// Where a restore comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSource {
    pub state_path: PathBuf,
    pub mem_path: PathBuf,
    /// Resume the vCPUs once restored.
    pub resume: bool,
    /// Host devices that replace the saved ones of the restored network interfaces
    /// (Firecracker's `network_overrides`: each clone on a TAP of its own).
    pub net_overrides: Vec<NetOverride>,
    /// The metadata service for the interfaces that had one when the snapshot was
    /// taken (see [`crate::Engine::snapshot_metadata`]); without it they come back
    /// without one.
    pub metadata: Option<crate::MetadataSpec>,
}

/// A restored network interface's new host device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOverride {
    /// The interface, by its id in the snapshot.
    pub iface_id: String,
    /// The TAP device it uses from now on.
    pub tap: String,
}
