//! The boot timer: the guest writes [`BOOT_SIGNAL`](crate::BOOT_SIGNAL) to
//! [`BOOT_TIMER_PORT`](crate::BOOT_TIMER_PORT); QEMU's `isa-debugcon` forwards every
//! byte written to that port to one end of a socket pair, and a thread here turns each
//! boot signal into an [`EngineEvent::GuestBootSignal`].

use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Instant;

use ec1_engine::{EngineEvent, EventSink};

use crate::drain::ReaderGuard;
use crate::BOOT_SIGNAL;

/// How many boot signals `bytes` holds (other bytes written to the port are ignored).
fn count_signals(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == BOOT_SIGNAL).count()
}

/// Reads the engine's end of the boot-timer socket until QEMU closes its end.
pub(crate) fn spawn_reader(
    mut socket: UnixStream,
    events: EventSink,
    guard: ReaderGuard,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ec1-boot-timer".into())
        .spawn(move || {
            let _guard = guard;
            crate::drain::read_chunks(&mut socket, &mut [0u8; 256], |chunk| {
                let at = Instant::now();
                for _ in 0..count_signals(chunk) {
                    log::debug!("guest boot signal");
                    ec1_trace::event_at!("guest.boot_signal", at);
                    events(EngineEvent::GuestBootSignal { at });
                }
            });
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::Readers;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn each_signal_byte_is_one_event_and_eof_ends_the_reader() {
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink: EventSink = Arc::new(move |e| s.lock().unwrap().push(e));
        let readers = Arc::new(Readers::default());
        let h = spawn_reader(ours, sink, readers.enter()).unwrap();
        qemu.write_all(&[1, BOOT_SIGNAL, b'x', BOOT_SIGNAL])
            .unwrap();
        drop(qemu);
        assert!(readers.wait_idle(Duration::from_secs(10)));
        h.join().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen
            .iter()
            .all(|e| matches!(e, EngineEvent::GuestBootSignal { .. })));
        assert_eq!(count_signals(b"abc"), 0);
    }
}
