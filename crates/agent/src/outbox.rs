//! Everything the agent sends goes through one queue and one writer thread.
//!
//! A FIFO gives fairness between sessions: a flooding session has at most one window
//! of frames queued (its credit), so a short answer from another session waits behind
//! at most that. Frames are tagged with the connection epoch they belong to; after a
//! reset (new hello, host gone, framing lost) frames of the old epoch are dropped
//! instead of reaching the next host.

use ec1_proto::{write_frame, write_preamble, Kind, Msg, FLAG_EOF};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

enum Out {
    Frame {
        epoch: u64,
        kind: Kind,
        flags: u8,
        session: u32,
        payload: Vec<u8>,
    },
    Preamble {
        epoch: u64,
    },
}

/// A handle for queueing frames; cheap to clone, one per session thread.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    epoch: Arc<AtomicU64>,
}

impl Outbox {
    /// Starts the writer thread on `w`. It ends once every `Outbox` clone is dropped.
    pub fn spawn(mut w: Box<dyn Write + Send>) -> (Outbox, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Out>();
        let epoch = Arc::new(AtomicU64::new(1));
        let current = epoch.clone();
        let handle = std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || {
                let mut broken = false;
                for out in rx {
                    let (e, res) = match out {
                        Out::Frame {
                            epoch,
                            kind,
                            flags,
                            session,
                            payload,
                        } => {
                            if epoch != current.load(Ordering::Acquire) || broken {
                                crate::debug!(
                                    "dropping a {kind:?} frame of session {session} (epoch {epoch}, broken {broken})"
                                );
                                continue;
                            }
                            (epoch, write_frame(&mut w, kind, flags, session, &payload))
                        }
                        Out::Preamble { epoch } => {
                            if epoch != current.load(Ordering::Acquire) {
                                continue;
                            }
                            // A new connection may work where the old one failed.
                            broken = false;
                            (epoch, write_preamble(&mut w))
                        }
                    };
                    if let Err(err) = res {
                        // The host went away mid-write; drop this epoch's remaining frames.
                        crate::debug!("write failed (epoch {e}): {err}");
                        broken = true;
                    }
                }
            })
            .expect("spawning the writer thread");
        (Outbox { tx, epoch }, handle)
    }

    /// The current connection epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Starts a new epoch: frames queued for earlier ones will not be written.
    pub fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Queues a control message.
    pub fn msg(&self, epoch: u64, session: u32, msg: &Msg) {
        match msg.encode() {
            Ok(payload) => self.push(Out::Frame {
                epoch,
                kind: Kind::Control,
                flags: 0,
                session,
                payload,
            }),
            Err(e) => crate::warn!("cannot encode {} for session {session}: {e}", msg.name()),
        }
    }

    /// Queues a data frame.
    pub fn data(&self, epoch: u64, kind: Kind, session: u32, payload: Vec<u8>, eof: bool) {
        self.push(Out::Frame {
            epoch,
            kind,
            flags: if eof { FLAG_EOF } else { 0 },
            session,
            payload,
        });
    }

    /// Queues the resynchronising preamble.
    pub fn preamble(&self, epoch: u64) {
        self.push(Out::Preamble { epoch });
    }

    fn push(&self, out: Out) {
        // The writer only stops when every sender is gone, so this cannot fail while
        // `self` exists.
        let _ = self.tx.send(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_proto::{Frame, FrameReader, ReadEvent};
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn frames_of_old_epochs_are_dropped() {
        let sink = Shared::default();
        let (ob, h) = Outbox::spawn(Box::new(sink.clone()));
        let e1 = ob.epoch();
        // Hold the writer back until both epochs' frames are queued: frames are judged
        // when written, so queue everything before the epoch changes only in order.
        ob.data(e1, Kind::Stdout, 1, b"old".to_vec(), false);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let e2 = ob.next_epoch();
        ob.data(e1, Kind::Stdout, 1, b"stale".to_vec(), true);
        ob.preamble(e2);
        ob.msg(e2, 0, &Msg::Pong { token: 7 });
        drop(ob);
        h.join().unwrap();
        let bytes = sink.0.lock().unwrap().clone();
        let mut r = FrameReader::new(&bytes[..]);
        let mut got = Vec::new();
        while let ReadEvent::Frame(f) = r.next_event().unwrap() {
            got.push(Frame::parse(f).unwrap());
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Frame::Data { payload, .. } if payload == b"old"));
        assert_eq!(
            got[1],
            Frame::Control {
                session: 0,
                msg: Msg::Pong { token: 7 }
            }
        );
    }
}
