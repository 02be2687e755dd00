//! The frame relays (`ec1-net`) of a guest's network interfaces that have rate
//! limiters or serve MMDS: started before QEMU (which connects to them), updated by
//! `PATCH /network-interfaces`, stopped after QEMU.

use std::os::unix::net::UnixDatagram;

use ec1_engine::{EngineError, NetUpdate, RateLimit, VmSpec};
use ec1_net::Relay;

use crate::devices::{net_sockets, net_uses_relay};

/// Every interface's id and, if it is relayed, its relay.
pub(crate) struct NetRelays(Vec<(String, Option<Relay>)>);

/// A direction of a [`NetUpdate`] for a relay: `Some(None)` lifts the limit.
fn relay_limit(r: Option<RateLimit>) -> Option<Option<RateLimit>> {
    r.map(|r| (r != RateLimit::default()).then_some(r))
}

impl NetRelays {
    /// Attaches a relay to every interface that needs one.
    pub fn start(spec: &VmSpec) -> Result<NetRelays, EngineError> {
        let mut out = Vec::new();
        for (i, n) in spec.devices.nets.iter().enumerate() {
            if !net_uses_relay(n) {
                out.push((n.id.clone(), None));
                continue;
            }
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
            out.push((n.id.clone(), Some(relay)));
        }
        Ok(NetRelays(out))
    }

    /// Applies `update` to its interface's relay.
    pub fn update(&self, engine: &str, update: &NetUpdate) -> Result<(), EngineError> {
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
        match relay {
            Some(r) => {
                r.set_limits(
                    relay_limit(update.rx_rate_limit),
                    relay_limit(update.tx_rate_limit),
                );
                Ok(())
            }
            None if update.rx_rate_limit.is_none() && update.tx_rate_limit.is_none() => Ok(()),
            None => Err(EngineError::Unsupported {
                engine: engine.to_string(),
                what: format!(
                    "adding a rate limiter to interface {:?}, which booted without one (QEMU then attaches the TAP device itself; give it a limiter before boot to put ec1's relay in its frame path)",
                    update.id
                ),
            }),
        }
    }

    /// Stops every relay.
    pub fn stop(&mut self) {
        for (_, r) in &mut self.0 {
            if let Some(r) = r.as_mut() {
                r.stop();
            }
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
        let r = NetRelays(vec![("eth0".into(), None)]);
        let u = |id: &str, rx| NetUpdate {
            id: id.into(),
            rx_rate_limit: rx,
            tx_rate_limit: None,
        };
        assert!(r.update("qemu", &u("eth1", None)).is_err());
        r.update("qemu", &u("eth0", None)).unwrap();
        let e = r.update("qemu", &u("eth0", Some(b))).unwrap_err();
        assert!(e.to_string().contains("booted without one"), "{e}");
    }
}
