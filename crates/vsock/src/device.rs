//! The virtio side: a vhost-user backend (rust-vmm's `vhost-user-backend`) whose three
//! queues (receive, transmit, event) carry packets between the guest and the
//! [`Muxer`].
//!
//! One worker thread handles every event: queue kicks from QEMU and the muxer's epoll
//! descriptor. Without `VIRTIO_RING_F_EVENT_IDX`, the guest kicks on every new buffer
//! and the device signals after each batch of used buffers.

use std::ops::Deref;
use std::sync::Mutex;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::{VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_VERSION_1};
use virtio_queue::QueueOwnedT;
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::muxer::Muxer;
use crate::proto::{GuestPacket, HOST_CID, TYPE_STREAM};

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const EVENT_QUEUE: u16 = 2;
const NUM_QUEUES: usize = 3;
/// The event data of the muxer's epoll descriptor (`0..=NUM_QUEUES` are taken by the
/// queues and the exit event).
pub(crate) const MUXER_EVENT: u64 = NUM_QUEUES as u64 + 1;
const QUEUE_SIZE: usize = 1024;
/// The largest payload the device accepts or produces in one packet.
const MAX_PKT_DATA: u32 = 64 * 1024;

struct Inner {
    muxer: Muxer,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    buf: Vec<u8>,
}

/// The vhost-user vsock backend.
pub(crate) struct VsockBackend {
    guest_cid: u64,
    inner: Mutex<Inner>,
    pub exit: EventFd,
}

impl VsockBackend {
    pub fn new(guest_cid: u64, muxer: Muxer) -> std::io::Result<VsockBackend> {
        Ok(VsockBackend {
            guest_cid,
            inner: Mutex::new(Inner {
                muxer,
                mem: None,
                buf: vec![0; MAX_PKT_DATA as usize],
            }),
            exit: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    pub fn muxer_fd(&self) -> std::os::fd::RawFd {
        self.lock().muxer.epoll_fd()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn io_err(what: &str, e: impl std::fmt::Debug) -> std::io::Error {
    std::io::Error::other(format!("vsock: {what}: {e:?}"))
}

impl Inner {
    /// Takes every packet the guest queued for transmission.
    fn process_tx(&mut self, vring: &VringRwLock, guest_cid: u64) -> std::io::Result<()> {
        let Some(atomic) = self.mem.clone() else {
            return Ok(());
        };
        let mut used = false;
        loop {
            let mem = atomic.memory();
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .iter(mem.clone())
                .map_err(|e| io_err("reading the transmit queue", e))?
                .next();
            let Some(mut chain) = chain else { break };
            let head = chain.head_index();
            let parsed = VsockPacket::from_tx_virtq_chain(mem.deref(), &mut chain, MAX_PKT_DATA)
                .map(|p| {
                    let mut data = vec![0u8; p.data_slice().map_or(0, |d| d.len())];
                    if let Some(d) = p.data_slice() {
                        d.copy_to(&mut data[..]);
                    }
                    data.truncate(p.len() as usize);
                    GuestPacket {
                        src_cid: p.src_cid(),
                        dst_cid: p.dst_cid(),
                        src_port: p.src_port(),
                        dst_port: p.dst_port(),
                        type_: p.type_(),
                        op: p.op(),
                        flags: p.flags(),
                        buf_alloc: p.buf_alloc(),
                        fwd_cnt: p.fwd_cnt(),
                        data,
                    }
                });
            vring
                .add_used(head, 0)
                .map_err(|e| io_err("returning a transmit buffer", e))?;
            used = true;
            match parsed {
                Ok(pkt) => self.muxer.handle_guest(pkt, guest_cid),
                Err(e) => log::warn!("vsock: dropping a malformed packet from the guest: {e:?}"),
            }
        }
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    /// Fills the guest's receive buffers with whatever the muxer has for it.
    fn process_rx(&mut self, vring: &VringRwLock, guest_cid: u64) -> std::io::Result<()> {
        let Some(atomic) = self.mem.clone() else {
            return Ok(());
        };
        let mut used = false;
        while self.muxer.has_rx() {
            let mem = atomic.memory();
            let mut queue = vring.get_mut();
            let chain = queue
                .get_queue_mut()
                .iter(mem.clone())
                .map_err(|e| io_err("reading the receive queue", e))?
                .next();
            let Some(mut chain) = chain else { break };
            let head = chain.head_index();
            let mut pkt =
                match VsockPacket::from_rx_virtq_chain(mem.deref(), &mut chain, MAX_PKT_DATA) {
                    Ok(p) => p,
                    Err(e) => {
                        log::warn!("vsock: unusable receive buffer from the guest: {e:?}");
                        queue
                            .add_used(head, 0)
                            .map_err(|e| io_err("returning a receive buffer", e))?;
                        used = true;
                        continue;
                    }
                };
            let room = pkt.data_slice().map_or(0, |d| d.len()).min(self.buf.len());
            let Some((h, n)) = self.muxer.next_for_guest(&mut self.buf[..room]) else {
                queue.get_queue_mut().go_to_previous_position();
                break;
            };
            if n > 0 {
                if let Some(d) = pkt.data_slice() {
                    d.copy_from(&self.buf[..n]);
                }
            }
            pkt.set_src_cid(HOST_CID)
                .set_dst_cid(guest_cid)
                .set_src_port(h.src_port)
                .set_dst_port(h.dst_port)
                .set_type(TYPE_STREAM)
                .set_op(h.op)
                .set_flags(h.flags)
                .set_buf_alloc(h.buf_alloc)
                .set_fwd_cnt(h.fwd_cnt)
                .set_len(n as u32);
            queue
                .add_used(head, (PKT_HEADER_SIZE + n) as u32)
                .map_err(|e| io_err("returning a receive buffer", e))?;
            used = true;
        }
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

impl VhostUserBackend for VsockBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_F_NOTIFY_ON_EMPTY)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&self, _enabled: bool) {}

    /// The device configuration: the guest's CID, a little-endian u64.
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.guest_cid.to_le_bytes();
        let (o, s) = (offset as usize, size as usize);
        cfg.get(o..o.saturating_add(s))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.lock().mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<EventFd> {
        self.exit.try_clone().ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let (rx, tx) = (&vrings[RX_QUEUE as usize], &vrings[TX_QUEUE as usize]);
        let mut inner = self.lock();
        match device_event {
            RX_QUEUE => {}
            TX_QUEUE => inner.process_tx(tx, self.guest_cid)?,
            EVENT_QUEUE => return Ok(()),
            e if u64::from(e) == MUXER_EVENT => inner.muxer.process_host_events(),
            other => return Err(io_err("unexpected event", other)),
        }
        inner.process_rx(rx, self.guest_cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_holds_the_cid() {
        let dir = tempfile::tempdir().unwrap();
        let m = Muxer::new(&dir.path().join("v.sock")).unwrap();
        let b = VsockBackend::new(0x0102_0304_0506_0708, m).unwrap();
        assert_eq!(b.get_config(0, 8), 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(b.get_config(4, 4), [4, 3, 2, 1]);
        assert!(b.get_config(6, 4).is_empty());
        assert_eq!(b.num_queues(), 3);
        assert!(b.features() & (1 << VIRTIO_F_VERSION_1) != 0);
        assert!(b.muxer_fd() >= 0);
    }
}
