//! ec1 in the frame path of a guest's network interface.
//!
//! QEMU has no per-interface throttle, so an interface with Firecracker rate limiters
//! is not attached to its TAP device directly: QEMU's `dgram` netdev hands every
//! Ethernet frame to ec1 over a Unix datagram socket, and a [`Relay`] thread forwards
//! it to (or from) the TAP device through the interface's token buckets, which
//! `PATCH /network-interfaces/{id}` can replace on a running guest.
//!
//! An interface that serves Firecracker's MMDS is relayed too: the guest's frames for
//! the MMDS address go to an [`MmdsStack`] (smoltcp) whose HTTP requests are answered by
//! the engine's [`ec1_engine::MetadataService`], and never reach the TAP device.

mod bucket;
mod mmds;
mod relay;
mod tap;

pub use bucket::{Bucket, Limiter};
pub use mmds::{frame_is_for, MmdsStack, MMDS_MAC};
pub use relay::Relay;
pub use tap::open_tap;

/// Why an interface could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("TAP device {name}: {reason}")]
    Tap { name: String, reason: String },
    #[error("network relay: {0}")]
    Io(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_engine::{RateLimit, TokenBucket};
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    /// A relay between a fake TAP device (one end of a datagram pair) and a fake
    /// QEMU socket bound in a temporary directory.
    struct Rig {
        _dir: tempfile::TempDir,
        relay: Relay,
        tap_peer: UnixDatagram,
        qemu: UnixDatagram,
    }

    fn rig(rx: Option<RateLimit>, tx: Option<RateLimit>) -> Rig {
        rig_with(rx, tx, None)
    }

    fn rig_with(
        rx: Option<RateLimit>,
        tx: Option<RateLimit>,
        mmds: Option<ec1_engine::MetadataSpec>,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (tap, tap_peer) = UnixDatagram::pair().unwrap();
        tap.set_nonblocking(true).unwrap();
        let ours = dir.path().join("net0.ec1");
        let qemu_path = dir.path().join("net0.qemu");
        let sock = UnixDatagram::bind(&ours).unwrap();
        let qemu = UnixDatagram::bind(&qemu_path).unwrap();
        qemu.connect(&ours).unwrap();
        qemu.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tap_peer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let relay = Relay::start(
            "t",
            File::from(OwnedFd::from(tap)),
            sock,
            &qemu_path,
            rx,
            tx,
            mmds,
        )
        .unwrap();
        Rig {
            _dir: dir,
            relay,
            tap_peer,
            qemu,
        }
    }

    fn bytes_per_s(size: u64) -> RateLimit {
        RateLimit {
            bandwidth: Some(TokenBucket {
                size,
                one_time_burst: 0,
                refill_time_ms: 1000,
            }),
            ops: None,
        }
    }

    #[test]
    fn frames_cross_both_ways() {
        let r = rig(None, None);
        let mut buf = [0u8; 2000];
        r.qemu.send(b"from the guest").unwrap();
        let n = r.tap_peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from the guest");
        r.tap_peer.send(b"to the guest").unwrap();
        let n = r.qemu.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"to the guest");
    }

    #[test]
    fn limits_delay_frames_and_can_be_replaced() {
        let mut r = rig(Some(bytes_per_s(10_000)), Some(bytes_per_s(10_000)));
        let frame = [1u8; 1000];
        let mut buf = [0u8; 2000];
        // The bucket holds 10 frames; 15 need about half a second more.
        let t0 = Instant::now();
        for _ in 0..15 {
            r.qemu.send(&frame).unwrap();
        }
        for _ in 0..15 {
            assert_eq!(r.tap_peer.recv(&mut buf).unwrap(), 1000);
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        // Lifting the limit: the next 15 pass at once (well within the 10 s timeout).
        r.relay.set_limits(Some(None), Some(None));
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..15 {
            r.tap_peer.send(&frame).unwrap();
        }
        for _ in 0..15 {
            assert_eq!(r.qemu.recv(&mut buf).unwrap(), 1000);
        }
        r.relay.stop();
    }

    #[test]
    fn mmds_frames_are_answered_in_the_relay_and_never_reach_the_tap() {
        use crate::mmds::tests::{arp_request, Echo, MMDS_IP};
        let r = rig_with(
            Some(bytes_per_s(1_000_000)),
            None,
            Some(ec1_engine::MetadataSpec {
                ipv4: MMDS_IP,
                service: std::sync::Arc::new(Echo),
                settings: String::new(),
            }),
        );
        let mut buf = [0u8; 2000];
        r.qemu.send(&arp_request(MMDS_IP)).unwrap();
        let n = r.qemu.recv(&mut buf).unwrap();
        assert_eq!(&buf[12..14], &[0x08, 0x06], "an ARP frame");
        assert_eq!(&buf[6..12], &MMDS_MAC, "from the MMDS MAC address");
        assert_eq!(&buf[22..28], &MMDS_MAC, "saying MMDS is at its MAC address");
        assert!(n >= 42);
        // Anything else still goes to the TAP device, and is the first frame there.
        r.qemu
            .send(&arp_request(std::net::Ipv4Addr::new(10, 0, 0, 1)))
            .unwrap();
        let n = r.tap_peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[38..42], &[10, 0, 0, 1]);
        assert_eq!(n, 42);
    }
}
