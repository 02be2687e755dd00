//! `ec1` without a subcommand: Firecracker.

use crate::args::FirecrackerArgs;
use ec1_api::RunOptions;
use ec1_engine::{Engine, EngineError, VmSpec};
use ec1_sandbox::{agent_socket_for, make_engine, InjectAgent};
use std::sync::Arc;

/// `--version`: Firecracker's first line (`Firecracker v1.17.0`, the API version ec1
/// implements) and its blank line, because orchestrators take the second word of the
/// first line as the version and compare it with their minimum (Kata's `parseVersion`);
/// then what ec1 is, where a person looks.
pub fn version_text() -> String {
    format!(
        "Firecracker v{api}\n\nec1 v{ec1}: Firecracker's API v{api} on an engine (qemu: microvm for x86_64 and virt for aarch64 guests; KVM, TCG or HVF)\n",
        api = ec1_api::FIRECRACKER_API_VERSION,
        ec1 = env!("CARGO_PKG_VERSION"),
    )
}

/// Notes for the log about flags that turn something off or have no effect on this
/// engine.
pub fn ignored_flag_notes(a: &FirecrackerArgs) -> Vec<String> {
    let mut notes = Vec::new();
    if a.no_seccomp {
        notes.push("--no-seccomp: ec1's device threads run without their seccomp filters (QEMU keeps its own -sandbox)".into());
    }
    if a.enable_pci {
        notes.push("--enable-pci has no effect: the QEMU microvm engine uses virtio-mmio".into());
    }
    notes
}

/// Firecracker's flags as `ec1_api` takes them.
pub fn run_options(a: &FirecrackerArgs) -> RunOptions {
    let choice = a.engine.clone();
    let inject = a.inject_agent.then(|| agent_socket_for(&a.api_sock));
    let factory: ec1_api::EngineFactory = Arc::new(
        move |spec: &VmSpec| -> Result<Arc<dyn Engine>, EngineError> {
            let engine = make_engine(&choice, spec.arch)?;
            Ok(match &inject {
                Some(socket) => Arc::new(InjectAgent::new(engine, socket.clone())),
                None => engine,
            })
        },
    );
    // For messages ("... not supported yet by ec1's qemu engine"): the engine asked
    // for, or the one `auto` tries first.
    let engine_name = a.engine.engine.clone().unwrap_or_else(|| {
        ec1_engine::registry::registered()
            .into_iter()
            .next()
            .unwrap_or_else(|| "auto".into())
    });
    let capabilities = ec1_engine::registry::provider(&a.engine, ec1_engine::Arch::host())
        .map(|p| p.capabilities(ec1_engine::Arch::host()))
        .unwrap_or_default();
    let mut o = RunOptions::new(engine_name, factory);
    o.capabilities = capabilities;
    o.api_sock = (!a.no_api).then(|| a.api_sock.clone());
    o.config_file = a.config_file.clone();
    o.id = a.id.clone();
    o.boot_timer = a.boot_timer;
    o.http_api_max_payload_size = a.http_api_max_payload_size;
    o.mmds_size_limit = a.mmds_size_limit.unwrap_or(a.http_api_max_payload_size);
    o.log_path = a.log_path.clone();
    o.level = a.level.clone();
    o.show_level = a.show_level;
    o.show_log_origin = a.show_log_origin;
    o.module = a.module.clone();
    o.metrics_path = a.metrics_path.clone();
    o.start_time_us = a.start_time_us;
    o.start_time_cpu_us = a.start_time_cpu_us;
    o.parent_cpu_time_us = a.parent_cpu_time_us;
    o.metadata = a.metadata.clone();
    o.startup_notes = ignored_flag_notes(a);
    o
}

/// Why `--seccomp-filter` is refused rather than loaded: Firecracker's compiled filters
/// list the system calls of Firecracker's own threads (`vmm`, `api`, `vcpu`); ec1's
/// threads make other calls and run no vCPU, so such a filter would either kill ec1 or
/// confine nothing that it names. Accepting it without effect would tell its user the
/// VMM is confined as they asked when it is not.
fn seccomp_filter_refusal(path: &std::path::Path) -> String {
    format!(
        "--seccomp-filter {}: ec1 does not load Firecracker's compiled seccomp filters (they list the system calls of Firecracker's vmm, api and vcpu threads, which ec1 does not have); ec1 confines its device threads with its own filters by default and QEMU with its -sandbox; run without --seccomp-filter, or with --no-seccomp to turn ec1's filters off",
        path.display()
    )
}

pub fn run(a: &FirecrackerArgs) -> i32 {
    if a.version {
        print!("{}", version_text());
        return 0;
    }
    if let Some(path) = &a.describe_snapshot {
        // As Firecracker: the snapshot's data format version on stdout.
        return match ec1_engine::registry::describe_snapshot(path) {
            Ok(info) => {
                println!("{}", info.format_version);
                0
            }
            Err(e) => {
                eprintln!("ec1: {e}");
                1
            }
        };
    }
    if let Some(path) = &a.seccomp_filter {
        eprintln!("ec1: {}", seccomp_filter_refusal(path));
        return 1;
    }
    if a.no_seccomp {
        ec1_seccomp::disable();
    }
    match ec1_api::run(run_options(a)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ec1: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn fc(args: &[&str]) -> FirecrackerArgs {
        crate::Cli::parse_from(std::iter::once("ec1").chain(args.iter().copied())).vmm
    }

    #[test]
    fn options_carry_every_flag() {
        let o = run_options(&fc(&[
            "--api-sock",
            "/tmp/x.sock",
            "--id",
            "a1",
            "--boot-timer",
            "--level",
            "Debug",
            "--http-api-max-payload-size",
            "4096",
            "--start-time-us",
            "7",
            "--no-seccomp",
        ]));
        assert_eq!(o.api_sock, Some("/tmp/x.sock".into()));
        assert_eq!(o.id, "a1");
        assert!(o.boot_timer);
        assert_eq!(o.level.as_deref(), Some("Debug"));
        assert_eq!(o.http_api_max_payload_size, 4096);
        assert_eq!(
            o.mmds_size_limit, 4096,
            "Firecracker defaults the MMDS limit to the payload limit"
        );
        assert_eq!(o.start_time_us, Some(7));
        assert_eq!(o.startup_notes.len(), 1);
        let o = run_options(&fc(&[
            "--no-api",
            "--config-file",
            "c.json",
            "--mmds-size-limit",
            "9",
        ]));
        assert_eq!(o.api_sock, None);
        assert_eq!(o.mmds_size_limit, 9);
    }

    #[test]
    fn version_names_the_api() {
        let text = version_text();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            format!("Firecracker v{}", ec1_api::FIRECRACKER_API_VERSION)
        );
        // Kata's parseVersion: the second word of the first line, less its `v`.
        let word = first.split(' ').nth(1).unwrap().trim_start_matches('v');
        assert_eq!(word.split('.').count(), 3);
        assert!(text.lines().nth(2).unwrap().starts_with("ec1 v"));
        assert_eq!(run(&fc(&["--version"])), 0);
        assert_eq!(run(&fc(&["--describe-snapshot", "/x"])), 1);
    }

    #[test]
    fn notes_for_flags_without_effect() {
        assert!(ignored_flag_notes(&fc(&[])).is_empty());
        assert_eq!(
            ignored_flag_notes(&fc(&["--enable-pci", "--no-seccomp"])).len(),
            2
        );
    }

    #[test]
    fn a_seccomp_filter_file_is_refused_with_the_reason() {
        assert_eq!(run(&fc(&["--seccomp-filter", "/f.bpf"])), 1);
        let m = seccomp_filter_refusal(std::path::Path::new("/f.bpf"));
        assert!(m.contains("/f.bpf") && m.contains("--no-seccomp"), "{m}");
    }
}
