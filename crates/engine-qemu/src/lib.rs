//! ec1-engine-qemu
