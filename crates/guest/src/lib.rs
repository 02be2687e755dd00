//! What ec1 puts into a guest: the default kernel (built from Debian's
//! `linux-source-6.1` with ec1's config fragment) and the injected agent initramfs.

pub mod agent;
pub mod busybox;
pub mod initramfs;
pub mod kernel;
pub mod lock;
