//! The QEMU `microvm` engine: runs an ec1 guest in `qemu-system-x86_64`.
//!
//! [`QemuEngine`] implements [`ec1_engine::Engine`]. One engine runs one guest in one
//! QEMU process, started with `-S` (vCPUs stopped), controlled over QMP with the
//! [`qapi`] crate, and released with `cont` once the control channel is up.
//!
//! # Pieces
//! - [`qemu_args`] is a pure function from a [`VmSpec`](ec1_engine::VmSpec) to QEMU's
//!   argv, so the whole machine description can be read and tested without a VM.
//! - A per-VM supervisor thread spawns QEMU, waits for it and reaps it. QEMU gets
//!   `PR_SET_PDEATHSIG(SIGKILL)`, which the kernel ties to the *thread* that forked: the
//!   supervisor lives exactly as long as QEMU, so QEMU dies with ec1 even on `kill -9`.
//! - [`QmpClient`] speaks QMP over a listening socket the engine creates and hands to
//!   QEMU as a file descriptor; it is reusable for more commands (snapshots).
//!
//! # Boot timer
//! Like Firecracker, a guest may report "boot done" by writing the byte 123 to a debug
//! device. Here it is an I/O port, [`BOOT_TIMER_PORT`] (`0xe9`, the Bochs/QEMU debug
//! console): the guest's init does `outb(123, 0xe9)` (after `ioperm(0xe9, 1, 1)`, which
//! needs root and a kernel with `CONFIG_X86_IOPL_IOPERM=y`), and the engine delivers
//! [`EngineEvent::GuestBootSignal`](ec1_engine::EngineEvent::GuestBootSignal).
//!
//! # Host requirements
//! QEMU 10 or newer (`apt-get install -t bookworm-backports qemu-system-x86` on Debian
//! 12) with its qboot firmware. The engine never installs anything: [`check_qemu`] and
//! [`QemuEngine::new`] say what is missing.

mod accel;
mod args;
mod balloon;
mod boot_timer;
mod capabilities;
mod console;
mod devices;
mod drain;
mod engine;
mod entropy;
mod exit;
mod host;
mod image_lock;
mod media;
mod memfd;
mod net_relays;
mod process;
mod provider;
mod qmp;
pub mod snapshot;
mod throttle;
mod validate;
mod version;
pub mod version_cache;

pub use accel::{detect_accel, probe_at, Accel, AccelChoice, HostProbe};
pub use args::{qemu_args, ArgsContext};
pub use engine::{QemuEngine, QemuOptions};
pub use provider::{register, QemuProvider};
/// The QMP types [`QemuEngine::qmp`] takes, at the version this crate uses.
pub use qapi;
pub use qmp::{QmpClient, QmpError};
pub use version::{
    check_qemu, install_command_for, resolve_binary, QemuVersion, BINARY_ENV, BINARY_ENV_AARCH64,
    INSTALL_COMMAND, INSTALL_COMMAND_AARCH64, MIN_MAJOR, QEMU_PROGRAM, QEMU_PROGRAM_AARCH64,
};

/// The x86 I/O port of the boot timer: the guest writes [`BOOT_SIGNAL`] here when it
/// has booted. `0xe9` is the port of QEMU's `isa-debugcon` (the Bochs "port e9 hack").
pub const BOOT_TIMER_PORT: u16 = ec1_proto::channel::BOOT_TIMER_IO_PORT;

/// The byte that marks "boot complete", Firecracker's magic boot-timer value.
pub const BOOT_SIGNAL: u8 = ec1_proto::channel::BOOT_SIGNAL;

/// QEMU's qboot firmware as Debian's `qemu-system-data` installs it: the fastest
/// firmware for `microvm` (2 ms to the kernel entry).
pub const DEFAULT_FIRMWARE: &str = "/usr/share/qemu/qboot.rom";
