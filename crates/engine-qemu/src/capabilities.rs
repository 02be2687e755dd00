//! What the QEMU engine offers of Firecracker's optional features, and why not where
//! it does not (the API shows the reason in its 400).

use ec1_engine::{Arch, Capabilities, Feature};

/// The capabilities of QEMU guests of `arch`.
pub fn of(arch: Arch) -> Capabilities {
    let missing = |why| Feature::Missing { why };
    Capabilities {
        snapshots: true,
        drive_hot_update: true,
        // An i8042 exists on x86 only (as on Firecracker).
        ctrl_alt_del: arch == Arch::X86_64,
        // ec1 serves a rate-limited entropy device itself (rng-egd; see entropy.rs).
        entropy_ops_limit: Feature::Supported,
        free_page_hinting: missing(
            "QEMU runs hinting only while migrating; use free_page_reporting",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_differ_only_in_the_keyboard_controller() {
        let x86 = of(Arch::X86_64);
        let arm = of(Arch::Aarch64);
        assert!(x86.ctrl_alt_del && !arm.ctrl_alt_del);
        assert_eq!(
            Capabilities {
                ctrl_alt_del: true,
                ..arm
            },
            x86
        );
        assert!(x86.snapshots && x86.drive_hot_update);
        assert!(!x86.free_page_hinting.is_supported());
        assert!(x86.entropy_ops_limit.is_supported());
    }
}
