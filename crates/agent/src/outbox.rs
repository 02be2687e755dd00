//! Everything the agent sends goes through one queue and one writer thread.
//!
//! A FIFO gives fairness between sessions: a flooding session has at most one window
//! of frames queued (its credit), so a short answer from another session waits behind
//! at most that. Frames are tagged with the connection epoch they belong to; after a
//! reset (new hello, host gone, framing lost) frames of the old epoch are dropped
//! instead of reaching the next host.
//!
//! Each `write` to a virtio-serial port is one buffer handed to the host (a VM exit
//! under emulation, and at most 32 KiB): so a frame is built in one buffer with room
//! for its header in front ([`frame_buf`]) instead of a `writev` of two pieces, and
//! small frames that are queued together are coalesced into one write.

use ec1_proto::{write_preamble, Header, Kind, Msg, FLAG_EOF, HEADER_LEN};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Frames smaller than this are coalesced with their neighbours in the queue.
const SMALL: usize = 8 * 1024;
/// Coalesced writes stop growing here (the virtio console takes 32 KiB per write).
const BATCH: usize = 32 * 1024;

enum Out {
    Frame {
        epoch: u64,
        kind: Kind,
        flags: u8,
        session: u32,
        /// `HEADER_LEN` reserved bytes, then the payload.
        buf: Vec<u8>,
    },
    Preamble {
        epoch: u64,
    },
}

/// A buffer for a frame of up to `payload` bytes: header space, then nothing yet.
/// Append the payload (e.g. with [`crate::sys::read_into_vec`]) and hand it to
/// [`Outbox::data`].
pub fn frame_buf(payload: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload);
    v.resize(HEADER_LEN, 0);
    v
}

/// A handle for queueing frames; cheap to clone, one per session thread.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    epoch: Arc<AtomicU64>,
}

/// The writer thread's state.
struct Writer {
    w: Box<dyn Write + Send>,
    current: Arc<AtomicU64>,
    batch: Vec<u8>,
    /// A write of this epoch failed (the host went away): drop the rest of it.
    broken: Option<u64>,
}

impl Writer {
    fn write(&mut self, epoch: u64, bytes: &[u8]) {
        if self.broken == Some(epoch) {
            return;
        }
        if let Err(e) = self.w.write_all(bytes) {
            crate::debug!("write failed (epoch {epoch}): {e}");
            self.broken = Some(epoch);
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let b = std::mem::take(&mut self.batch);
            self.write(self.current.load(Ordering::Acquire), &b);
            self.batch = b;
            self.batch.clear();
        }
    }

    fn handle(&mut self, out: Out) {
        let now = self.current.load(Ordering::Acquire);
        match out {
            Out::Frame {
                epoch,
                kind,
                flags,
                session,
                mut buf,
            } => {
                if epoch != now || self.broken == Some(epoch) {
                    crate::debug!("dropping a {kind:?} frame of session {session} (epoch {epoch})");
                    return;
                }
                let h = Header::new(kind, flags, session, &buf[HEADER_LEN..]).encode();
                buf[..HEADER_LEN].copy_from_slice(&h);
                if buf.len() < SMALL {
                    if self.batch.len() + buf.len() > BATCH {
                        self.flush();
                    }
                    self.batch.extend_from_slice(&buf);
                } else {
                    self.flush();
                    self.write(epoch, &buf);
                }
            }
            Out::Preamble { epoch } => {
                if epoch != now {
                    return;
                }
                self.flush();
                if let Err(e) = write_preamble(&mut self.w) {
                    crate::debug!("write failed (epoch {epoch}): {e}");
                    self.broken = Some(epoch);
                }
            }
        }
    }
}

impl Outbox {
    /// Starts the writer thread on `w`. It ends once every `Outbox` clone is dropped.
    pub fn spawn(w: Box<dyn Write + Send>) -> (Outbox, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Out>();
        let epoch = Arc::new(AtomicU64::new(1));
        let mut writer = Writer {
            w,
            current: epoch.clone(),
            batch: Vec::with_capacity(BATCH),
            broken: None,
        };
        let handle = std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    writer.handle(first);
                    // Coalesce whatever else is queued already, then write.
                    loop {
                        match rx.try_recv() {
                            Ok(out) => writer.handle(out),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                writer.flush();
                                return;
                            }
                        }
                    }
                    writer.flush();
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
            Ok(payload) => {
                let mut buf = frame_buf(payload.len());
                buf.extend_from_slice(&payload);
                self.push(Out::Frame {
                    epoch,
                    kind: Kind::Control,
                    flags: 0,
                    session,
                    buf,
                })
            }
            Err(e) => crate::warn!("cannot encode {} for session {session}: {e}", msg.name()),
        }
    }

    /// Queues a data frame built in a [`frame_buf`].
    pub fn data(&self, epoch: u64, kind: Kind, session: u32, buf: Vec<u8>, eof: bool) {
        debug_assert!(buf.len() >= HEADER_LEN);
        self.push(Out::Frame {
            epoch,
            kind,
            flags: if eof { FLAG_EOF } else { 0 },
            session,
            buf,
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
        let mut old = frame_buf(3);
        old.extend_from_slice(b"old");
        ob.data(e1, Kind::Stdout, 1, old, false);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let e2 = ob.next_epoch();
        let mut stale = frame_buf(5);
        stale.extend_from_slice(b"stale");
        ob.data(e1, Kind::Stdout, 1, stale, true);
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

#[cfg(test)]
mod batching {
    use super::*;
    use ec1_proto::{Frame, FrameReader, ReadEvent};
    use std::sync::Mutex;

    /// Records the size of every write.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn small_frames_are_coalesced_and_large_ones_written_whole() {
        let sink = Writes::default();
        let (ob, h) = Outbox::spawn(Box::new(sink.clone()));
        let e = ob.epoch();
        for i in 0..200u32 {
            let mut b = frame_buf(100);
            b.extend_from_slice(&[i as u8; 100]);
            ob.data(e, Kind::Stdout, 1, b, false);
        }
        let mut big = frame_buf(60_000);
        big.extend_from_slice(&[9; 60_000]);
        ob.data(e, Kind::Stderr, 2, big, true);
        drop(ob);
        h.join().unwrap();
        let writes = sink.0.lock().unwrap().clone();
        // Every frame arrives, in order, each header in one piece with its payload.
        let all: Vec<u8> = writes.concat();
        let mut r = FrameReader::new(&all[..]);
        let mut n = 0;
        while let ReadEvent::Frame(f) = r.next_event().unwrap() {
            match Frame::parse(f).unwrap() {
                Frame::Data {
                    session: 1,
                    payload,
                    ..
                } => {
                    assert_eq!(payload, vec![n as u8; 100]);
                    n += 1;
                }
                Frame::Data {
                    session: 2,
                    payload,
                    eof,
                    ..
                } => {
                    assert!(eof);
                    assert_eq!(payload.len(), 60_000);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(n, 200);
        // Fewer writes than frames, none of the small ones beyond the batch size.
        assert!(writes.len() < 201, "{} writes", writes.len());
        assert!(writes
            .iter()
            .all(|w| w.len() <= BATCH || w.len() == HEADER_LEN + 60_000));
    }

    #[test]
    fn a_failed_write_drops_the_rest_of_its_epoch_only() {
        struct FailOnce(bool, Arc<Mutex<Vec<u8>>>);
        impl Write for FailOnce {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if !self.0 {
                    self.0 = true;
                    return Err(std::io::Error::other("host gone"));
                }
                self.1.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let (ob, h) = Outbox::spawn(Box::new(FailOnce(false, got.clone())));
        let e1 = ob.epoch();
        ob.msg(e1, 0, &Msg::Pong { token: 1 });
        std::thread::sleep(std::time::Duration::from_millis(50));
        ob.msg(e1, 0, &Msg::Pong { token: 2 });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let e2 = ob.next_epoch();
        ob.preamble(e2);
        ob.msg(e2, 0, &Msg::Pong { token: 3 });
        drop(ob);
        h.join().unwrap();
        let bytes = got.lock().unwrap().clone();
        let mut r = FrameReader::new(&bytes[..]);
        let mut tokens = Vec::new();
        while let ReadEvent::Frame(f) = r.next_event().unwrap() {
            if let Frame::Control {
                msg: Msg::Pong { token },
                ..
            } = Frame::parse(f).unwrap()
            {
                tokens.push(token);
            }
        }
        assert_eq!(tokens, vec![3]);
    }
}
