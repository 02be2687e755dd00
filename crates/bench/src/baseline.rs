//! `--baseline-qemu`: the same guest booted by plain QEMU, with no ec1 in the way.
//!
//! The command line is exactly what [`ec1_engine_qemu::qemu_args`] produces for the
//! sandbox's machine (same kernel, same agent initramfs, same kernel command line,
//! devices, memory and TSC settings) minus `-S`: ec1 starts QEMU paused and releases
//! the vCPUs over QMP once its control channel is up, and that handshake is part of the
//! overhead being measured. The host then connects to the agent socket as ec1 does
//! and runs `true`. What differs from a cold ec1 run is therefore ec1's own work:
//! kernel/initramfs lookup, the QMP handshake, the engine's supervision, its teardown.

use crate::error::BenchError;
use crate::process::{spawn_with_fds, tail_file, terminate};
use crate::sample::{Run, Stage};
use ec1_client::{Client, Command};
use ec1_engine::{EngineError, VmSpec};
use ec1_engine_qemu::{
    detect_accel, qemu_args, AccelChoice, ArgsContext, HostProbe, QemuEngine, QemuOptions,
};
use ec1_guest::initramfs;
use ec1_sandbox::SandboxOptions;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The phase names of a plain-QEMU run.
pub const PHASES: [&str; 3] = ["spawn → agent ready", "exec true", "teardown"];

/// A prepared plain-QEMU boot.
pub struct QemuDirect {
    binary: PathBuf,
    ctx: ArgsContext,
    kernel: PathBuf,
    initrd: PathBuf,
    opts: SandboxOptions,
}

/// The machine ec1's sandbox boots for `opts`: the sandbox's own translation, so the
/// baseline cannot drift from what ec1 runs.
pub fn sandbox_spec(
    opts: &SandboxOptions,
    kernel: &Path,
    initrd: &Path,
    run_dir: &Path,
) -> Result<VmSpec, BenchError> {
    Ok(ec1_sandbox::spec_for(
        opts,
        kernel.to_path_buf(),
        initrd.to_path_buf(),
        run_dir,
    )?)
}

/// `args` without the `-S` flag (start the vCPUs at once).
pub fn without_pause(args: Vec<OsString>) -> Vec<OsString> {
    args.into_iter().filter(|a| a != "-S").collect()
}

impl QemuDirect {
    /// Resolves what the sandbox would boot, and QEMU's binary and settings.
    pub fn prepare(opts: &SandboxOptions) -> Result<QemuDirect, BenchError> {
        let arch = opts.guest_arch()?;
        let kernel = match &opts.kernel {
            Some(k) => k.clone(),
            None => ec1_guest::kernel::path(arch)?,
        };
        let initrd = initramfs::combined_initrd(
            opts.initrd.as_deref(),
            &initramfs::Options::for_arch(arch)?,
        )?;
        // The baseline is plain QEMU whatever engine ec1 runs: its accelerator is the
        // one `--engine qemu-<accel>` names (auto otherwise).
        let choice =
            AccelChoice::parse(opts.engine.variant.as_deref()).map_err(EngineError::Unavailable)?;
        let accel =
            detect_accel(choice, arch, &HostProbe::default()).map_err(EngineError::Unavailable)?;
        let engine = QemuEngine::new(
            accel,
            QemuOptions {
                arch,
                ..QemuOptions::default()
            },
        )?;
        Ok(QemuDirect {
            binary: engine.binary().to_path_buf(),
            ctx: engine.args_context(),
            kernel,
            initrd,
            opts: opts.clone(),
        })
    }

    /// The QEMU argv for a run in `run_dir` with the given inherited descriptors.
    pub fn argv(
        &self,
        run_dir: &Path,
        qmp_fd: i32,
        boot_timer_fd: i32,
    ) -> Result<Vec<OsString>, BenchError> {
        let spec = sandbox_spec(&self.opts, &self.kernel, &self.initrd, run_dir)?;
        let ctx = ArgsContext {
            qmp_fd,
            boot_timer_fd,
            ..self.ctx.clone()
        };
        Ok(without_pause(qemu_args(&spec, &ctx)?))
    }

    /// One run: spawn → agent ready, exec `true`, teardown.
    pub fn run_once(&self) -> Result<Run, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("ec1-bench-qemu-")
            .tempdir()
            .map_err(BenchError::io("creating the QEMU run directory"))?;
        let run_dir = dir.path();
        // QEMU's monitor and boot-timer devices stay as ec1 configures them; nobody
        // talks to them here.
        let qmp = UnixListener::bind(run_dir.join("qmp.sock"))
            .map_err(BenchError::io("creating the QMP socket"))?;
        let (_boot_ours, boot_qemu) =
            UnixStream::pair().map_err(BenchError::io("creating the boot-timer socket pair"))?;
        let args = self.argv(run_dir, qmp.as_raw_fd(), boot_qemu.as_raw_fd())?;
        let stderr_path = run_dir.join("qemu.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(BenchError::io("creating QEMU's stderr file"))?;
        let agent = run_dir.join("agent.sock");

        let t0 = Instant::now();
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child =
            spawn_with_fds(&mut cmd, &[qmp.as_raw_fd(), boot_qemu.as_raw_fd()]).map_err(
                BenchError::io(format!("starting {}", self.binary.display())),
            )?;
        drop(boot_qemu);
        let fail = |child: &mut std::process::Child, why: String| {
            let _ = terminate(child, Duration::from_secs(1));
            BenchError::Process {
                program: self.binary.display().to_string(),
                why,
                output: format!(
                    "stderr:\n{}\nguest console:\n{}",
                    tail_file(&stderr_path, 10),
                    tail_file(&run_dir.join("console.log"), 20)
                ),
            }
        };
        // Poll for the agent socket at a fine grain: this wait is the measured phase.
        let stream = loop {
            match UnixStream::connect(&agent) {
                Ok(s) => break s,
                Err(e) if t0.elapsed() > self.opts.ready_timeout => {
                    return Err(fail(
                        &mut child,
                        format!("its agent socket never accepted: {e}"),
                    ))
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(fail(
                            &mut child,
                            format!("it exited with {status} before the guest was up"),
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        };
        let client =
            match Client::handshake(stream, self.opts.ready_timeout.saturating_sub(t0.elapsed())) {
                Ok(c) => c,
                Err(e) => return Err(fail(&mut child, format!("the agent did not answer: {e}"))),
            };
        let ready = t0.elapsed();
        let cpu = crate::cpu::process_cpu_ns(child.id());
        let t = Instant::now();
        let out = client.output(&Command::new("true"));
        let exec = t.elapsed();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(fail(&mut child, format!("`true` exited with {}", o.status))),
            Err(e) => return Err(fail(&mut child, format!("`true` failed: {e}"))),
        }
        let t = Instant::now();
        drop(client);
        terminate(&mut child, Duration::from_secs(2))?;
        drop(qmp);
        dir.close()
            .map_err(BenchError::io("removing the QEMU run directory"))?;
        let teardown = t.elapsed();
        let run = Run::default()
            .phase(PHASES[0], Stage::Boot, ready)
            .phase(PHASES[1], Stage::Work, exec)
            .phase(PHASES[2], Stage::Teardown, teardown);
        Ok(match cpu {
            Some(ns) => run.metric(crate::scenarios::cold::QEMU_CPU, "ms", ns as f64 / 1e6),
            None => run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_engine::SerialOut;
    use ec1_engine_qemu::Accel;
    use ec1_sandbox::DEFAULT_BOOT_ARGS;

    #[test]
    fn spec_is_the_sandboxs() {
        let opts = SandboxOptions {
            extra_boot_args: vec!["lpj=1".into(), "quiet".into()],
            ..Default::default()
        };
        let s = sandbox_spec(&opts, Path::new("/k"), Path::new("/i"), Path::new("/run/x")).unwrap();
        assert_eq!(s.cmdline, format!("{DEFAULT_BOOT_ARGS} lpj=1 quiet"));
        assert_eq!((s.vcpus, s.mem_mib), (1, 256));
        assert_eq!(s.agent_socket, Some(PathBuf::from("/run/x/agent.sock")));
        assert_eq!(
            s.serial,
            SerialOut::Capped {
                path: "/run/x/console.log".into(),
                max_bytes: ec1_sandbox::CONSOLE_LOG_MAX
            }
        );
        assert!(s.drives.is_empty());
        assert_eq!(s.initrd, Some(PathBuf::from("/i")));
    }

    /// Resolving QEMU and the agent initramfs, and the argv, without booting.
    #[test]
    fn prepared_command_line_boots_the_sandboxs_guest_unpaused() {
        let opts = SandboxOptions {
            kernel: Some("/k/vmlinux".into()),
            extra_boot_args: vec!["no_timer_check".into()],
            ..Default::default()
        };
        let q = QemuDirect::prepare(&opts).unwrap();
        let argv: Vec<String> = q
            .argv(Path::new("/run/d"), 5, 6)
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!argv.iter().any(|a| a == "-S"));
        let after = |flag: &str| {
            argv.iter()
                .position(|a| a == flag)
                .map(|i| argv[i + 1].clone())
        };
        assert_eq!(after("-kernel").as_deref(), Some("/k/vmlinux"));
        assert!(after("-initrd").unwrap().ends_with(".cpio"));
        assert!(after("-append").unwrap().contains("no_timer_check"));
        assert!(argv.iter().any(|a| a.contains("socket,id=qmp,fd=5")));
        assert!(argv.iter().any(|a| a.contains("path=/run/d/agent.sock")));
        assert!(
            q.binary.to_string_lossy().contains("qemu-system"),
            "{:?}",
            q.binary
        );
    }

    #[test]
    fn only_the_pause_flag_is_dropped() {
        let opts = SandboxOptions::default();
        let spec = sandbox_spec(&opts, Path::new("/k"), Path::new("/i"), Path::new("/r")).unwrap();
        let ctx = ArgsContext {
            accel: Accel::Tcg,
            firmware: Some("/fw".into()),
            tsc_khz: Some(1000),
            qmp_fd: 7,
            boot_timer_fd: 8,
            console_fd: None,
            entropy_fd: None,
            ram_fd: None,
        };
        let full = qemu_args(&spec, &ctx).unwrap();
        let plain = without_pause(full.clone());
        assert_eq!(plain.len() + 1, full.len());
        assert!(full.iter().any(|a| a == "-S") && !plain.iter().any(|a| a == "-S"));
        let rest: Vec<&OsString> = full.iter().filter(|a| *a != "-S").collect();
        assert_eq!(rest, plain.iter().collect::<Vec<_>>());
    }
}
