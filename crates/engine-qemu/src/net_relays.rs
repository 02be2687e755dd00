//! The frame relays (`ec1-net`) of a guest's network interfaces, one per interface
//! (they carry its rate limiters and MMDS): started before QEMU (which connects to
//! them), updated by `PATCH /network-interfaces`, stopped after QEMU.

use std::os::unix::net::UnixDatagram;

use ec1_engine::{EngineError, NetUpdate, RateLimit, VmSpec};
use ec1_net::Relay;

use crate::devices::net_sockets;

/// Every interface's id and relay.
pub(crate) struct NetRelays(Vec<(String, Relay)>);

/// A direction of a [`NetUpdate`] for a relay: `Some(None)` lifts the limit.
fn relay_limit(r: Option<RateLimit>) -> Option<Option<RateLimit>> {
    r.map(|r| (r != RateLimit::default()).then_some(r))
}

impl NetRelays {
    /// Attaches a relay to every interface.
    pub fn start(spec: &VmSpec) -> Result<NetRelays, EngineError> {
        let mut out = Vec::new();
        for (i, n) in spec.devices.nets.iter().enumerate() {
            let (ours, qemu) = net_sockets(&spec.run_dir, i);
            for p in [&ours, &qemu] {
                let _ = std::fs::remove_file(p);
            }
            let tap =
                ec1_net::open_tap(&n.tap).map_err(|e| EngineError::InvalidSpec(e.to_string()))?;
            let sock = UnixDatagram::bind(&ours)
                .map_err(|e| EngineError::io(format!("creating {}", ours.display()), e))?;
            let relay = Relay::start(
                &n.id,
                tap,
                sock,
                &qemu,
                n.rx_rate_limit,
                n.tx_rate_limit,
                n.mmds.clone(),
            )
            .map_err(|e| {
                EngineError::io(
                    format!("starting the frame relay of interface {}", n.id),
                    std::io::Error::other(e.to_string()),
                )
            })?;
            out.push((n.id.clone(), relay));
        }
        Ok(NetRelays(out))
    }

    /// Applies `update` to its interface's relay.
    pub fn update(&self, update: &NetUpdate) -> Result<(), EngineError> {
        let (_, relay) = self
            .0
            .iter()
            .find(|(id, _)| *id == update.id)
            .ok_or_else(|| {
                EngineError::InvalidSpec(format!(
                    "the guest has no network interface {:?}",
                    update.id
                ))
            })?;
        relay.set_limits(
            relay_limit(update.rx_rate_limit),
            relay_limit(update.tx_rate_limit),
        );
        Ok(())
    }

    /// Stops every relay.
    pub fn stop(&mut self) {
        for (_, r) in &mut self.0 {
            r.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_engine::TokenBucket;

    #[test]
    fn updates_translate_and_unknown_interfaces_fail() {
        let b = RateLimit {
            bandwidth: Some(TokenBucket {
                size: 1,
                one_time_burst: 0,
                refill_time_ms: 1,
            }),
            ops: None,
        };
        assert_eq!(relay_limit(None), None);
        assert_eq!(relay_limit(Some(RateLimit::default())), Some(None));
        assert_eq!(relay_limit(Some(b)), Some(Some(b)));
        let r = NetRelays(Vec::new());
        let u = NetUpdate {
            id: "eth1".into(),
            rx_rate_limit: None,
            tx_rate_limit: None,
        };
        let e = r.update(&u).unwrap_err();
        assert!(
            e.to_string().contains("no network interface \"eth1\""),
            "{e}"
        );
    }
}
