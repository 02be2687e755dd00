//! The frame relay of one interface: QEMU's `dgram` netdev on one side (one Ethernet
//! frame per datagram over a Unix socket), the host TAP device on the other, and the
//! interface's two limiters in between.
//!
//! A frame a limiter refuses is held, and its source is not read until the bucket has
//! refilled: the guest's sends then back up into QEMU and the virtqueue (as with
//! Firecracker), and frames for the guest wait in the TAP device's queue.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use ec1_engine::{MetadataSpec, RateLimit};

use crate::bucket::Limiter;
use crate::mmds::MmdsStack;
use crate::NetError;

/// The largest frame carried (the MTU QEMU's dgram netdev can deliver, plus headers).
const MAX_FRAME: usize = 65_550;
/// Frames moved per direction before the other direction gets a turn.
const BATCH: usize = 64;

/// A limiter change waiting for the relay thread: `None` keeps a direction as it is.
#[derive(Debug, Default)]
struct Update {
    rx: Option<Option<RateLimit>>,
    tx: Option<Option<RateLimit>>,
}

struct Shared {
    stop: AtomicBool,
    update: Mutex<Update>,
    wake: OwnedFd,
}

impl Shared {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// A running relay; stopped on drop.
pub struct Relay {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Everything the relay thread owns.
struct Pump {
    tap: File,
    sock: UnixDatagram,
    qemu: PathBuf,
    connected: bool,
    rx: Limiter,
    tx: Limiter,
    /// A frame for the guest that its limiter (or QEMU's full queue) holds back.
    rx_held: Option<Vec<u8>>,
    rx_until: Option<Instant>,
    /// A frame from the guest that its limiter holds back.
    tx_held: Option<Vec<u8>>,
    tx_until: Option<Instant>,
    qemu_full: bool,
    /// The MMDS stack, if this interface serves MMDS.
    mmds: Option<MmdsStack>,
}

impl Relay {
    /// Starts relaying between `tap` and QEMU's socket `qemu` (which QEMU creates
    /// once it runs), receiving QEMU's frames on `sock`. With `mmds`, the guest's
    /// frames for the MMDS address go to an MMDS stack instead of `tap`.
    pub fn start(
        name: &str,
        tap: File,
        sock: UnixDatagram,
        qemu: &Path,
        rx: Option<RateLimit>,
        tx: Option<RateLimit>,
        mmds: Option<MetadataSpec>,
    ) -> Result<Relay, NetError> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(NetError::Io(std::io::Error::last_os_error()));
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            update: Mutex::new(Update::default()),
            // SAFETY: `wake` is a fresh descriptor nothing else owns.
            wake: unsafe { OwnedFd::from_raw_fd(wake) },
        });
        sock.set_nonblocking(true).map_err(NetError::Io)?;
        let now = Instant::now();
        let pump = Pump {
            tap,
            sock,
            qemu: qemu.to_path_buf(),
            connected: false,
            rx: Limiter::new(rx.as_ref(), now),
            tx: Limiter::new(tx.as_ref(), now),
            rx_held: None,
            rx_until: None,
            tx_held: None,
            tx_until: None,
            qemu_full: false,
            mmds: mmds.map(MmdsStack::new),
        };
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!(
                "ec1-net-{}",
                name.chars().take(7).collect::<String>()
            ))
            // Guest frames are parsed here (and answered by the MMDS stack).
            .spawn(
                move || match ec1_seccomp::confine(ec1_seccomp::Role::Device) {
                    Ok(()) => pump.run(&s),
                    Err(e) => log::error!("network relay: {e}"),
                },
            )
            .map_err(NetError::Io)?;
        Ok(Relay {
            shared,
            thread: Some(thread),
        })
    }

    /// Replaces the limiters: `None` keeps a direction, `Some(None)` removes its limit.
    pub fn set_limits(&self, rx: Option<Option<RateLimit>>, tx: Option<Option<RateLimit>>) {
        {
            let mut u = self.shared.update.lock().unwrap_or_else(|e| e.into_inner());
            if rx.is_some() {
                u.rx = rx;
            }
            if tx.is_some() {
                u.tx = tx;
            }
        }
        self.shared.wake();
    }

    /// Stops the relay thread and waits for it.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

impl Pump {
    fn run(mut self, shared: &Shared) {
        let mut buf = vec![0u8; MAX_FRAME];
        while !shared.stop.load(Ordering::SeqCst) {
            self.apply(shared);
            let now = Instant::now();
            self.retry_held(now);
            let mmds_at = self.mmds.as_mut().and_then(|m| m.poll_at());
            if mmds_at.is_some_and(|t| t <= now) {
                self.poll_mmds();
                continue;
            }
            let wait = [self.rx_until, self.tx_until, mmds_at]
                .into_iter()
                .flatten()
                .map(|t| t.saturating_duration_since(now))
                .min();
            let mut fds = [
                pollfd(shared.wake.as_raw_fd(), libc::POLLIN),
                pollfd(
                    self.tap.as_raw_fd(),
                    if self.rx_held.is_none() {
                        libc::POLLIN
                    } else {
                        0
                    },
                ),
                pollfd(
                    self.sock.as_raw_fd(),
                    (if self.tx_held.is_none() {
                        libc::POLLIN
                    } else {
                        0
                    }) | (if self.qemu_full { libc::POLLOUT } else { 0 }),
                ),
            ];
            let timeout = wait.map_or(-1, |d| {
                i32::try_from(d.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
            });
            // SAFETY: `fds` is a live array of three pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                    continue;
                }
                log::error!(
                    "net relay: poll failed: {}",
                    std::io::Error::last_os_error()
                );
                return;
            }
            if fds[0].revents != 0 {
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into a live u64 from our eventfd.
                unsafe { libc::read(shared.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            }
            if fds[2].revents & libc::POLLOUT != 0 {
                self.qemu_full = false;
            }
            if fds[1].revents != 0 {
                self.pump_tap(&mut buf);
            }
            if fds[2].revents & (libc::POLLIN | libc::POLLERR) != 0 {
                self.pump_qemu(&mut buf);
            }
        }
    }

    fn apply(&mut self, shared: &Shared) {
        let u = std::mem::take(&mut *shared.update.lock().unwrap_or_else(|e| e.into_inner()));
        let now = Instant::now();
        if let Some(rx) = u.rx {
            self.rx = Limiter::new(rx.as_ref(), now);
            self.rx_until = None;
        }
        if let Some(tx) = u.tx {
            self.tx = Limiter::new(tx.as_ref(), now);
            self.tx_until = None;
        }
    }

    fn retry_held(&mut self, now: Instant) {
        if self.rx_until.is_some_and(|t| t <= now) || (self.rx_until.is_none() && !self.qemu_full) {
            if let Some(f) = self.rx_held.take() {
                self.send_guest(f, now);
            }
        }
        if self.tx_until.is_none_or(|t| t <= now) {
            if let Some(f) = self.tx_held.take() {
                self.send_tap(f, now);
            }
        }
    }

    /// Sends a frame to the guest if its limiter and QEMU's queue allow; holds it
    /// otherwise. Returns whether it left.
    fn send_guest(&mut self, frame: Vec<u8>, now: Instant) -> bool {
        if let Err(wait) = self.rx.admit(frame.len(), now) {
            self.rx_until = Some(now + wait);
            self.rx_held = Some(frame);
            return false;
        }
        self.rx_until = None;
        if !self.connect_qemu() {
            return true;
        }
        match self.sock.send(&frame) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // The frame was admitted: it goes first once QEMU drains its queue.
                self.qemu_full = true;
                self.rx_held = Some(frame);
                false
            }
            Err(e) => {
                log::debug!("net relay: frame for the guest dropped: {e}");
                true
            }
        }
    }

    /// Whether QEMU's socket is connected, connecting it if need be. QEMU binds it as
    /// it starts; until then frames for the guest are dropped, as on a link that is
    /// not up yet.
    fn connect_qemu(&mut self) -> bool {
        if !self.connected {
            self.connected = self.sock.connect(&self.qemu).is_ok();
        }
        self.connected
    }

    fn send_tap(&mut self, frame: Vec<u8>, now: Instant) -> bool {
        if let Err(wait) = self.tx.admit(frame.len(), now) {
            self.tx_until = Some(now + wait);
            self.tx_held = Some(frame);
            return false;
        }
        self.tx_until = None;
        if let Err(e) = self.tap.write(&frame) {
            log::debug!("net relay: frame from the guest dropped: {e}");
        }
        true
    }

    fn pump_tap(&mut self, buf: &mut [u8]) {
        for _ in 0..BATCH {
            if self.rx_held.is_some() {
                return;
            }
            match self.tap.read(buf) {
                Ok(n) => {
                    let now = Instant::now();
                    if !self.send_guest(buf[..n].to_vec(), now) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn pump_qemu(&mut self, buf: &mut [u8]) {
        let mut for_mmds = false;
        for _ in 0..BATCH {
            if self.tx_held.is_some() {
                break;
            }
            match self.sock.recv(buf) {
                Ok(n) => {
                    if let Some(m) = self.mmds.as_mut().filter(|m| m.wants(&buf[..n])) {
                        m.receive(buf[..n].to_vec());
                        for_mmds = true;
                        continue;
                    }
                    let now = Instant::now();
                    if !self.send_tap(buf[..n].to_vec(), now) {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if for_mmds {
            self.poll_mmds();
        }
    }

    /// Runs the MMDS stack and sends its frames to the guest. They bypass the rate
    /// limiter and the held frame; one QEMU cannot take now is dropped (TCP resends).
    fn poll_mmds(&mut self) {
        let Some(m) = self.mmds.as_mut() else {
            return;
        };
        for frame in m.poll() {
            if !self.connect_qemu() {
                return;
            }
            if let Err(e) = self.sock.send(&frame) {
                log::debug!("net relay: MMDS frame for the guest dropped: {e}");
            }
        }
    }
}
