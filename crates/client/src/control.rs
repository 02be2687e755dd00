//! Requests that are not commands: one message on a session of its own, answered by
//! one message that ends it ([`Client::refresh`], [`Client::quiesce`]).

use crate::conn::Client;
use crate::error::{Error, Result};
use crate::process::Guard;
use crate::session::End;
use ec1_proto::Msg;
use std::time::{Duration, Instant};

/// The outcome of [`Client::quiesce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quiesced {
    /// Filesystems on drives remounted read-only.
    pub remounted: u32,
    /// Filesystems on drives frozen, because a writer kept them busy.
    pub frozen: u32,
    /// The image's init (hand-off mode) was asked to shut the guest down: the guest
    /// ends on its own once its filesystems are unmounted.
    pub init_shutdown: bool,
    /// Host-side round trip.
    pub took: Duration,
}

impl Client {
    /// Sends `msg` on a new session and waits up to `timeout` (`what` names the wait
    /// in the error) for the message that ends it; an agent error is an `Err`.
    pub(crate) fn request(&self, msg: &Msg, timeout: Duration, what: &'static str) -> Result<End> {
        let inner = &self.h.inner;
        let s = inner.open_session()?;
        let _g = Guard::new(self, s.clone());
        inner.send_msg(s.id, msg)?;
        let deadline = Instant::now() + timeout;
        let mut st = s.lock();
        loop {
            match &st.end {
                Some(End::Failed(f)) => return Err(f.to_error()),
                Some(end) => return Ok(end.clone()),
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(timeout, what));
            }
            st = s.cv.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Call right before the VM is stopped: the agent syncs and leaves every writable
    /// filesystem on a drive clean (remounted read-only, or frozen where a writer
    /// keeps it busy), so that what commands wrote is on the drive images and they
    /// need no journal recovery. Nothing may write to those filesystems afterwards.
    pub fn quiesce(&self, timeout: Duration) -> Result<Quiesced> {
        let t = Instant::now();
        let what = "the agent to flush and quiesce the guest's filesystems";
        match self.request(&Msg::Quiesce, timeout, what)? {
            End::Quiesced {
                remounted,
                frozen,
                init_shutdown,
            } => Ok(Quiesced {
                remounted,
                frozen,
                init_shutdown,
                took: t.elapsed(),
            }),
            other => Err(Error::Disconnected(format!(
                "the agent ended a quiesce with {other:?}"
            ))),
        }
    }
}
