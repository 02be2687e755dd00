//! ec1's virtio-vsock device: a vhost-user backend run on threads of the ec1 process.
//!
//! Where ec1 runs, `/dev/vhost-vsock` is absent (and would not give Firecracker's
//! host-side semantics anyway). QEMU's `vhost-user-vsock-device` hands the guest's
//! queues to this backend over a vhost-user control socket; the backend maps guest RAM
//! (which must therefore be shared memory) and serves Firecracker's hybrid convention
//! on `uds_path` (see [`muxer`]).
//!
//! rust-vmm's `vhost-device-vsock` does the same as a separate program; measured on
//! this machine class it stalled or broke connections in full-duplex transfers, which
//! is why ec1 has its own, with half-close in both directions.

mod conn;
mod device;
pub mod muxer;
pub mod proto;

use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use device::{VsockBackend, MUXER_EVENT};
pub use muxer::Muxer;

/// Why the device could not start.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("cannot listen on the vsock socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the vhost-user socket {}: {source}", path.display())]
    Control {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the vsock device: {0}")]
    Start(String),
}

/// A running vsock device. Dropping it stops it.
pub struct VsockDevice {
    control: PathBuf,
    backend: Arc<VsockBackend>,
    thread: Option<JoinHandle<()>>,
}

/// The vhost-user daemon serving `backend`, with the host sockets watched.
fn daemon(backend: Arc<VsockBackend>) -> Result<VhostUserDaemon<Arc<VsockBackend>>, VsockError> {
    let daemon = VhostUserDaemon::new(
        "ec1-vsock".into(),
        backend.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| VsockError::Start(e.to_string()))?;
    for h in daemon.get_epoll_handlers() {
        h.register_listener(backend.muxer_fd(), EventSet::IN, MUXER_EVENT)
            .map_err(|e| VsockError::Start(format!("watching host sockets: {e}")))?;
    }
    Ok(daemon)
}

impl VsockDevice {
    /// Listens on `uds_path` for host clients and on `control` for QEMU, and serves the
    /// guest `guest_cid` once QEMU connects. Both sockets exist when this returns.
    pub fn start(
        guest_cid: u32,
        control: &Path,
        uds_path: &Path,
    ) -> Result<VsockDevice, VsockError> {
        let muxer = Muxer::new(uds_path).map_err(|source| VsockError::Bind {
            path: uds_path.to_path_buf(),
            source,
        })?;
        let backend = Arc::new(
            VsockBackend::new(u64::from(guest_cid), muxer)
                .map_err(|e| VsockError::Start(e.to_string()))?,
        );
        let _ = std::fs::remove_file(control);
        let bound = std::os::unix::net::UnixListener::bind(control).map_err(|source| {
            VsockError::Control {
                path: control.to_path_buf(),
                source,
            }
        })?;
        // SAFETY: the descriptor comes from a listener this function just bound and
        // gives up. A listener made from a descriptor does not remove its path when
        // dropped (`Listener::new`'s does): the device thread that drops it is
        // confined and may not unlink; `stop` removes the socket.
        let listener = unsafe { Listener::from_raw_fd(bound.into_raw_fd()) };
        let exit = backend
            .exit
            .try_clone()
            .map_err(|e| VsockError::Start(e.to_string()))?;
        // The daemon is made on the device thread, after the filter: making it starts
        // the vring worker threads, which parse guest packets and inherit the filter
        // only from a thread that already has it.
        let (ready, started) = std::sync::mpsc::channel::<Result<(), VsockError>>();
        let device_backend = backend.clone();
        let thread = std::thread::Builder::new()
            .name("ec1-vsock".into())
            .spawn(move || {
                let daemon = ec1_seccomp::confine(ec1_seccomp::Role::Device)
                    .map_err(|e| VsockError::Start(e.to_string()))
                    .and_then(|()| daemon(device_backend));
                let mut daemon = match daemon {
                    Ok(d) => {
                        let _ = ready.send(Ok(()));
                        d
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                match daemon.start(listener).and_then(|()| daemon.wait()) {
                    Ok(()) => log::debug!("vsock: QEMU disconnected"),
                    Err(e) => log::debug!("vsock: the vhost-user connection ended: {e}"),
                }
                let _ = exit.write(1);
            })
            .map_err(|e| VsockError::Start(e.to_string()))?;
        if let Err(e) = started
            .recv()
            .unwrap_or_else(|_| Err(VsockError::Start("the device thread ended".into())))
        {
            let _ = thread.join();
            let _ = std::fs::remove_file(control);
            return Err(e);
        }
        Ok(VsockDevice {
            control: control.to_path_buf(),
            backend,
            thread: Some(thread),
        })
    }

    /// Stops the device: closes every connection and removes both sockets. Waits for
    /// QEMU to have let go of the control socket (it has, once QEMU exited); if QEMU
    /// never connected, the control socket is connected to once to unblock it.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if !thread.is_finished() {
            // Unblocks a daemon still waiting for QEMU (a start that failed early); a
            // daemon serving a live QEMU ends when QEMU does.
            let _ = UnixStream::connect(&self.control);
        }
        let _ = self.backend.exit.write(1);
        let _ = thread.join();
        let _ = std::fs::remove_file(&self.control);
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_stops_without_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("ctl.sock");
        let uds = dir.path().join("v.sock");
        let mut d = VsockDevice::start(3, &control, &uds).unwrap();
        assert!(control.exists() && uds.exists());
        d.stop();
        assert!(!control.exists());
        drop(d);
        assert!(!uds.exists(), "the backend (and its muxer) are gone");
    }

    #[test]
    fn an_existing_socket_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        std::fs::write(&uds, "").unwrap();
        let e = VsockDevice::start(3, &dir.path().join("c.sock"), &uds)
            .err()
            .unwrap();
        assert!(e.to_string().contains("v.sock"), "{e}");
    }
}
