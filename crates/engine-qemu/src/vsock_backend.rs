//! The vhost-user backend behind a guest's vsock device.
//!
//! `/dev/vhost-vsock` is not available where ec1 runs (and would not give Firecracker's
//! Unix-socket semantics anyway), so the guest's virtio-vsock queues are served by
//! rust-vmm's `vhost-device-vsock`, which implements Firecracker's hybrid convention on
//! `uds_path`: the host connects and writes `CONNECT <port>\n`, gets `OK <port>\n`; a
//! guest connection to CID 2 port P reaches a listener on `<uds_path>_P`.
//!
//! The backend is a supervised child like QEMU (it dies with ec1); it listens on a
//! vhost-user control socket in the run directory, to which QEMU connects, and maps
//! guest RAM from the memfd QEMU hands it (hence shared guest memory).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ec1_engine::{EngineError, VsockSpec};

use crate::process::{self, Child, ProcessExit, SpawnConfig};

/// The backend program, looked up in `PATH` and in cargo's install directory.
pub const VSOCK_BACKEND_PROGRAM: &str = "vhost-device-vsock";
/// The environment variable that overrides the backend's path.
pub const VSOCK_BACKEND_ENV: &str = "EC1_VHOST_VSOCK";
/// How to install the backend (what `scripts/setup.sh` does).
pub const VSOCK_BACKEND_INSTALL: &str =
    "cargo install --locked vhost-device-vsock --version 0.3.0 (or run scripts/setup.sh)";

/// How long the backend may take to create its control socket (normally ~5 ms).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed backend may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Finds the backend: `$EC1_VHOST_VSOCK`, else `PATH`, else `~/.cargo/bin`.
pub fn resolve_vsock_backend() -> Result<PathBuf, EngineError> {
    resolve_from(
        std::env::var_os(VSOCK_BACKEND_ENV),
        std::env::var_os("PATH"),
        std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo"))),
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn resolve_from(
    env: Option<OsString>,
    path: Option<OsString>,
    cargo_home: Option<PathBuf>,
) -> Result<PathBuf, EngineError> {
    let not_installed = |program: String| EngineError::NotInstalled {
        program,
        install: VSOCK_BACKEND_INSTALL.into(),
    };
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(not_installed(format!(
                "{} (from ${VSOCK_BACKEND_ENV})",
                p.display()
            )))
        };
    }
    let dirs = path
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.into_iter()
        .chain(cargo_home.map(|h| h.join("bin")))
        .map(|d| d.join(VSOCK_BACKEND_PROGRAM))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            not_installed(format!(
                "{VSOCK_BACKEND_PROGRAM} (the vsock device's vhost-user backend)"
            ))
        })
}

/// The backend's arguments.
pub(crate) fn backend_args(v: &VsockSpec, control: &Path) -> Vec<OsString> {
    let mut socket = OsString::from("--socket=");
    socket.push(control);
    let mut uds = OsString::from("--uds-path=");
    uds.push(&v.uds_path);
    vec![format!("--guest-cid={}", v.guest_cid).into(), socket, uds]
}

/// A running backend; stopped (and reaped) on drop.
pub(crate) struct VsockBackend {
    child: Child,
    ended: Arc<(Mutex<Option<ProcessExit>>, std::sync::Condvar)>,
    control: PathBuf,
    uds_path: PathBuf,
}

impl VsockBackend {
    /// Starts `program` (see [`resolve_vsock_backend`]) for `v` and returns once its
    /// control socket exists.
    pub fn start(
        program: &Path,
        v: &VsockSpec,
        control: &Path,
        id: &str,
    ) -> Result<VsockBackend, EngineError> {
        let _ = std::fs::remove_file(control);
        let ended = Arc::new((Mutex::new(None::<ProcessExit>), std::sync::Condvar::new()));
        let on_exit = {
            let ended = ended.clone();
            Box::new(move |e: ProcessExit| {
                if !e.status.success() {
                    log::warn!(
                        "the vsock backend ended ({}): {}",
                        e.status,
                        e.stderr.trim()
                    );
                }
                *ended.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                ended.1.notify_all();
            })
        };
        let child = process::spawn(
            SpawnConfig {
                program: program.to_path_buf(),
                args: backend_args(v, control),
                pass_fds: vec![],
                inherit_stdio: false,
                thread_name: format!("ec1-vsock-{}", id.chars().take(5).collect::<String>()),
            },
            on_exit,
        )?;
        let backend = VsockBackend {
            child,
            ended,
            control: control.to_path_buf(),
            uds_path: v.uds_path.clone(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if control.exists() {
                return Ok(backend);
            }
            if let Some(e) = backend.exit() {
                return Err(EngineError::Crashed {
                    status: format!("{} {}", program.display(), e.0),
                    stderr: e.1,
                });
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Timeout(
                    READY_TIMEOUT,
                    format!("{} to create {}", program.display(), control.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The backend's exit status and stderr, if it has ended.
    fn exit(&self) -> Option<(String, String)> {
        self.ended
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|e| (e.status.to_string(), e.stderr.clone()))
    }

    /// The backend's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Kills the backend, reaps it and removes its sockets.
    pub fn stop(&self) {
        self.child.kill();
        let (lock, cv) = &*self.ended;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cv
            .wait_timeout_while(guard, KILL_WAIT, |e| e.is_none())
            .map(drop);
        self.child.join_supervisor();
        let _ = std::fs::remove_file(&self.control);
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

impl Drop for VsockBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_cid_and_sockets() {
        let v = VsockSpec {
            guest_cid: 7,
            uds_path: "/tmp/v,1.sock".into(),
        };
        let a = backend_args(&v, Path::new("/run/x/vsock.vhost.sock"));
        assert_eq!(
            a,
            [
                "--guest-cid=7",
                "--socket=/run/x/vsock.vhost.sock",
                "--uds-path=/tmp/v,1.sock"
            ]
        );
    }

    #[test]
    fn resolution_order_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let prog = bin.join(VSOCK_BACKEND_PROGRAM);
        // Missing everywhere: the error names the program and how to install it.
        let e = resolve_from(None, Some(bin.clone().into()), None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(VSOCK_BACKEND_PROGRAM), "{msg}");
        assert!(msg.contains("cargo install"), "{msg}");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        // Not executable yet.
        assert!(resolve_from(None, Some(bin.clone().into()), None).is_err());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            resolve_from(None, Some(bin.clone().into()), None).unwrap(),
            prog
        );
        // Found through cargo's home when not in PATH.
        assert_eq!(
            resolve_from(None, None, Some(dir.path().to_path_buf())).unwrap(),
            prog
        );
        // The environment wins, and a wrong one is an error (not a silent fallback).
        assert_eq!(
            resolve_from(Some(prog.clone().into()), None, None).unwrap(),
            prog
        );
        let e = resolve_from(Some("/nonexistent/x".into()), Some(bin.into()), None).unwrap_err();
        assert!(e.to_string().contains(VSOCK_BACKEND_ENV), "{e}");
    }

    #[test]
    fn a_backend_that_fails_at_once_reports_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-backend");
        std::fs::write(&fake, "#!/bin/sh\necho 'bad socket' >&2\nexit 4\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let v = VsockSpec {
            guest_cid: 3,
            uds_path: dir.path().join("v.sock"),
        };
        let r = VsockBackend::start(&fake, &v, &dir.path().join("ctl.sock"), "t");
        let e = r.err().expect("the fake backend exits");
        assert!(e.to_string().contains("bad socket"), "{e}");
    }
}
