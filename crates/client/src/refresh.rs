//! Making a guest restored from a snapshot distinct from its siblings: fresh entropy,
//! the host's clock and a host name, sent before any command runs (see
//! [`ec1_proto::Refresh`]).

use crate::conn::Client;
use crate::error::{Error, Result};
use crate::session::End;
use ec1_proto::{Msg, Refresh};
use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many bytes of host entropy a refresh carries: a full reseed of the guest's
/// CRNG (256 bits) with margin.
pub const REFRESH_ENTROPY: usize = 64;

/// How long the agent may take to apply a refresh (a few system calls).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of [`Client::refresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    /// How far the guest's wall clock was stepped, in ns (positive: forward).
    pub clock_step_ns: i64,
    /// Host-side round trip of the refresh.
    pub took: Duration,
}

/// What a clone needs right after its restore: [`REFRESH_ENTROPY`] bytes from the
/// host's `/dev/urandom`, the host's wall clock now, and `hostname` if given.
pub fn fresh_refresh(hostname: Option<&str>) -> Result<Refresh> {
    let mut entropy = vec![0u8; REFRESH_ENTROPY];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut entropy))
        .map_err(|source| Error::Io {
            context: "reading host entropy from /dev/urandom",
            source,
        })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Refresh {
        entropy,
        realtime_ns: Some(now.as_nanos() as u64),
        hostname: hostname.map(|h| h.as_bytes().to_vec()),
    })
}

impl Client {
    /// Re-identifies the guest: use it on a guest restored from a snapshot before
    /// anything else runs, so that clones do not share random numbers, a stale clock or
    /// a host name. Sends [`fresh_refresh`].
    pub fn refresh(&self, hostname: Option<&str>) -> Result<Refreshed> {
        self.refresh_with(&fresh_refresh(hostname)?)
    }

    /// Sends `r` and waits until the agent applied it.
    pub fn refresh_with(&self, r: &Refresh) -> Result<Refreshed> {
        let t = Instant::now();
        let what = "the agent to apply a refresh";
        match self.request(&Msg::Refresh(r.clone()), REFRESH_TIMEOUT, what)? {
            End::Refreshed(step) => Ok(Refreshed {
                clock_step_ns: step,
                took: t.elapsed(),
            }),
            other => Err(Error::Disconnected(format!(
                "the agent ended a refresh with {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_refreshes_differ_and_carry_the_clock() {
        let a = fresh_refresh(Some("box")).unwrap();
        let b = fresh_refresh(None).unwrap();
        assert_eq!(a.entropy.len(), REFRESH_ENTROPY);
        assert_ne!(a.entropy, b.entropy);
        assert_eq!(a.hostname.as_deref(), Some(&b"box"[..]));
        assert_eq!(b.hostname, None);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let t = a.realtime_ns.unwrap();
        assert!(t <= now && now - t < 60_000_000_000);
        assert!(a.validate().is_ok());
    }
}
