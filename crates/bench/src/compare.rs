//! `--compare BIN`: any Firecracker-compatible binary against ec1, both driven through
//! the same API calls, alternating.
//!
//! Per run: start `BIN --api-sock S`; wait for the socket (phase "API socket up");
//! `PUT /boot-source` with the test kernel and the agent initramfs, `PUT
//! /machine-config` ("configure"); `PUT /actions InstanceStart` until its response
//! ("InstanceStart"); then the guest's serial marker on the VMM's stdout ("guest up",
//! see [`crate::marker`]: a foreign binary offers no ec1 agent channel); then SIGTERM
//! until the process has exited ("teardown").

use crate::error::BenchError;
use crate::marker::{marker_boot_args, write_marker_initrd, MARKER};
use crate::sample::{Run, Stage};
use crate::vmm_process::VmmProcess;
use ec1_guest::initramfs;
use ec1_sandbox::{SandboxOptions, DEFAULT_BOOT_ARGS};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The phase names of an API-driven run.
pub const PHASES: [&str; 5] = [
    "API socket up",
    "configure",
    "InstanceStart",
    "guest up (serial)",
    "teardown",
];

/// What both binaries boot.
pub struct CompareGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub boot_args: String,
    pub mem_mib: u32,
    pub timeout: Duration,
    _dir: tempfile::TempDir,
}

impl CompareGuest {
    /// The sandbox's kernel and agent initramfs, plus the marker script.
    pub fn prepare(opts: &SandboxOptions) -> Result<CompareGuest, BenchError> {
        let arch = opts.guest_arch()?;
        let kernel = match &opts.kernel {
            Some(k) => k.clone(),
            None => ec1_guest::kernel::path(arch)?,
        };
        let base = initramfs::combined_initrd(
            opts.initrd.as_deref(),
            &initramfs::Options::for_arch(arch)?,
        )?;
        let dir = tempfile::Builder::new()
            .prefix("ec1-bench-compare-")
            .tempdir()
            .map_err(BenchError::io("creating the compare directory"))?;
        let initrd = dir.path().join("initrd.cpio");
        write_marker_initrd(&base, &initrd)?;
        Ok(CompareGuest {
            kernel,
            initrd,
            boot_args: marker_boot_args(DEFAULT_BOOT_ARGS, &opts.extra_boot_args),
            mem_mib: opts.mem_mib,
            timeout: opts.ready_timeout,
            _dir: dir,
        })
    }

    /// The `PUT /boot-source` body.
    pub fn boot_source(&self) -> Vec<u8> {
        json!({
            "kernel_image_path": self.kernel,
            "initrd_path": self.initrd,
            "boot_args": self.boot_args,
        })
        .to_string()
        .into_bytes()
    }

    /// The `PUT /machine-config` body.
    pub fn machine_config(&self) -> Vec<u8> {
        json!({"vcpu_count": 1, "mem_size_mib": self.mem_mib})
            .to_string()
            .into_bytes()
    }
}

/// The label of `bin` in the report: its file name, marked when it is ec1 itself so
/// that the two variants keep distinct names.
pub fn label_for(bin: &Path, ec1: &Path) -> String {
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| bin.display().to_string());
    let same = match (bin.canonicalize(), ec1.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => bin == ec1,
    };
    if same {
        format!("{name} (as --compare BIN)")
    } else {
        name
    }
}

/// One API-driven boot of `bin`.
pub fn api_boot(bin: &Path, guest: &CompareGuest) -> Result<Run, BenchError> {
    let t0 = Instant::now();
    let mut vmm = VmmProcess::start(bin, MARKER)?;
    let mut steps = || -> Result<[Duration; 4], BenchError> {
        let mut c = vmm.connect_api(Duration::from_secs(10))?;
        let up = t0.elapsed();
        let t = Instant::now();
        c.expect_ok("PUT", "/boot-source", Some(&guest.boot_source()))?;
        c.expect_ok("PUT", "/machine-config", Some(&guest.machine_config()))?;
        let configure = t.elapsed();
        let t = Instant::now();
        c.expect_ok(
            "PUT",
            "/actions",
            Some(br#"{"action_type": "InstanceStart"}"#),
        )?;
        let start = t.elapsed();
        let t_started = Instant::now();
        let seen = vmm.wait_marker(guest.timeout)?;
        Ok([
            up,
            configure,
            start,
            seen.saturating_duration_since(t_started),
        ])
    };
    let [up, configure, start, guest_up] = match steps() {
        Ok(v) => v,
        Err(e @ (BenchError::Timeout { .. } | BenchError::Process { .. })) => return Err(e),
        Err(e) => {
            return Err(BenchError::Process {
                program: bin.display().to_string(),
                why: e.to_string(),
                output: vmm.diagnostics(),
            })
        }
    };
    let teardown = vmm.stop()?;
    Ok(Run::default()
        .phase(PHASES[0], Stage::Boot, up)
        .phase(PHASES[1], Stage::Boot, configure)
        .phase(PHASES[2], Stage::Boot, start)
        .phase(PHASES[3], Stage::Boot, guest_up)
        .phase(PHASES[4], Stage::Teardown, teardown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> CompareGuest {
        CompareGuest {
            kernel: "/k/vmlinux".into(),
            initrd: "/i/initrd.cpio".into(),
            boot_args: "console=ttyS0 rdinit=/ec1-bench-init".into(),
            mem_mib: 256,
            timeout: Duration::from_secs(1),
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    #[test]
    fn request_bodies_are_firecrackers() {
        let g = guest();
        let b: serde_json::Value = serde_json::from_slice(&g.boot_source()).unwrap();
        assert_eq!(b["kernel_image_path"], "/k/vmlinux");
        assert_eq!(b["initrd_path"], "/i/initrd.cpio");
        assert!(b["boot_args"]
            .as_str()
            .unwrap()
            .ends_with("rdinit=/ec1-bench-init"));
        let m: serde_json::Value = serde_json::from_slice(&g.machine_config()).unwrap();
        assert_eq!(
            (m["vcpu_count"].as_u64(), m["mem_size_mib"].as_u64()),
            (Some(1), Some(256))
        );
    }

    #[test]
    fn labels_tell_ec1_from_itself() {
        assert_eq!(
            label_for(Path::new("/usr/bin/firecracker"), Path::new("/x/ec1")),
            "firecracker"
        );
        assert_eq!(
            label_for(Path::new("/bin/sh"), Path::new("/bin/sh")),
            "sh (as --compare BIN)"
        );
    }

    /// A binary that is not a VMM fails with what it printed.
    #[test]
    fn a_binary_without_an_api_socket_fails_clearly() {
        let e = api_boot(Path::new("/bin/true"), &guest())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/bin/true failed") && e.contains("exited"),
            "{e}"
        );
        assert!(e.contains("API socket"), "{e}");
    }
}
