//! What makes a guest restored from a snapshot distinct from its siblings.
//!
//! Every clone of one snapshot resumes with the same kernel RNG state, the same wall
//! clock (the moment of the snapshot) and the same host name. Before a clone runs
//! anything, the host sends [`Refresh`]: fresh entropy (the agent mixes it in and
//! forces a reseed of the kernel's CRNG), the host's wall clock, and optionally a host
//! name. The agent answers [`crate::Msg::Refreshed`] or a session error.

use crate::error::DecodeError;

/// Most entropy bytes one refresh may carry (the kernel's pool takes any amount; 64
/// bytes are plenty for a reseed).
pub const MAX_ENTROPY: usize = 4096;

/// Longest host name Linux accepts (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME: usize = 64;

/// Host → agent, on a new session: re-identifies a restored guest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refresh {
    /// Mixed into the guest kernel's entropy pool and credited, then the CRNG is
    /// reseeded so that `/dev/urandom` of two clones differs from the next read on.
    /// Empty: no reseed.
    pub entropy: Vec<u8>,
    /// The host's `CLOCK_REALTIME` in ns since the Unix epoch; the guest steps its
    /// clock to it. `None` leaves the clock alone.
    pub realtime_ns: Option<u64>,
    /// A new host name (1..=[`MAX_HOSTNAME`] bytes, no NUL). `None` keeps the current.
    pub hostname: Option<Vec<u8>>,
}

impl Refresh {
    /// Checks what the decoder cannot: shapes the guest kernel would refuse.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.entropy.len() > MAX_ENTROPY {
            return Err(DecodeError::TooLong {
                what: "entropy",
                len: self.entropy.len(),
                max: MAX_ENTROPY,
            });
        }
        if let Some(h) = &self.hostname {
            if h.is_empty() || h.len() > MAX_HOSTNAME || h.contains(&0) {
                return Err(DecodeError::Invalid {
                    what: "hostname",
                    why: format!(
                        "{:?} must be 1 to {MAX_HOSTNAME} bytes without NUL",
                        String::from_utf8_lossy(h)
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        assert!(Refresh::default().validate().is_ok());
        let ok = Refresh {
            entropy: vec![1; MAX_ENTROPY],
            realtime_ns: Some(1),
            hostname: Some(vec![b'a'; MAX_HOSTNAME]),
        };
        assert!(ok.validate().is_ok());
        let e = Refresh {
            entropy: vec![0; MAX_ENTROPY + 1],
            ..Default::default()
        };
        assert!(matches!(
            e.validate(),
            Err(DecodeError::TooLong {
                what: "entropy",
                ..
            })
        ));
        for bad in [vec![], vec![b'a'; MAX_HOSTNAME + 1], b"a\0b".to_vec()] {
            let r = Refresh {
                hostname: Some(bad),
                ..Default::default()
            };
            assert!(matches!(
                r.validate(),
                Err(DecodeError::Invalid {
                    what: "hostname",
                    ..
                })
            ));
        }
    }
}
