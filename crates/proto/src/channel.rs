//! Names and values both ends of the guest channel agree on, beside the protocol.
//!
//! An engine gives the guest a channel named [`AGENT_PORT`] (a virtio-serial port on
//! QEMU; a virtio console port elsewhere) and a way to say "booted": Firecracker's
//! boot-timer byte [`BOOT_SIGNAL`], written where the engine listens for it. On x86
//! that is Firecracker's I/O port [`BOOT_TIMER_IO_PORT`]; machines without I/O ports
//! (arm64's `virt`) get a second named port, [`BOOT_PORT`].

/// The name of the agent's virtio-serial port.
pub const AGENT_PORT: &str = "ec1.agent";

/// The name of the boot-signal port on machines without I/O ports.
pub const BOOT_PORT: &str = "ec1.boot";

/// The byte that marks "boot complete", Firecracker's magic boot-timer value.
pub const BOOT_SIGNAL: u8 = 123;

/// The x86 I/O port of the boot timer (QEMU's `isa-debugcon`, the Bochs "port e9 hack").
pub const BOOT_TIMER_IO_PORT: u16 = 0xe9;
