//! The agent's table of live sessions and what the channel reader may do to one.
//!
//! The channel reader never blocks on a session: it hands input to the session's own
//! thread through a queue bounded by the flow-control window, and wakes output
//! threads by granting credit.

use ec1_proto::{CreditGate, RecvWindow, Stream, WindowExceeded};
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// A chunk of stdin or upload data, `eof` on the last.
pub struct Chunk {
    pub data: Vec<u8>,
    pub eof: bool,
}

/// One exec, upload or download.
pub struct Session {
    pub id: u32,
    /// The connection epoch this session belongs to.
    pub epoch: u64,
    /// The data stream the host may send to this session (stdin or file data), if any.
    input_stream: Option<Stream>,
    input: Mutex<Option<(Sender<Chunk>, RecvWindow)>>,
    /// Credit for what this session sends.
    pub stdout: CreditGate,
    pub stderr: CreditGate,
    pub file: CreditGate,
    /// Process group of the command once started (0 before).
    pub pgid: AtomicI32,
    /// The pty master of a pty session, for resizing.
    pub pty: Mutex<Option<Arc<File>>>,
    closed: AtomicBool,
}

/// Why host input was not accepted.
#[derive(Debug)]
pub enum InputError {
    /// The session takes no data of this kind.
    WrongStream,
    /// The host exceeded its window.
    Window(WindowExceeded),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::WrongStream => write!(f, "this session takes no such data"),
            InputError::Window(w) => w.fmt(f),
        }
    }
}

impl std::error::Error for InputError {}

impl Session {
    pub fn new(id: u32, epoch: u64, input_stream: Option<Stream>) -> Session {
        Session {
            id,
            epoch,
            input_stream,
            input: Mutex::new(None),
            stdout: CreditGate::default(),
            stderr: CreditGate::default(),
            file: CreditGate::default(),
            pgid: AtomicI32::new(0),
            pty: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// Connects the queue the session thread reads its input from.
    pub fn set_input(&self, tx: Sender<Chunk>) {
        *self.input.lock().unwrap() = Some((tx, RecvWindow::default()));
    }

    /// Accepts host data for this session. Data after the input ended (or after the
    /// consumer went away) is dropped silently: the host may not know yet.
    pub fn push_input(&self, stream: Stream, data: Vec<u8>, eof: bool) -> Result<(), InputError> {
        if self.input_stream != Some(stream) {
            return Err(InputError::WrongStream);
        }
        let mut g = self.input.lock().unwrap();
        if let Some((tx, win)) = g.as_mut() {
            win.on_receive(data.len()).map_err(InputError::Window)?;
            let _ = tx.send(Chunk { data, eof });
            if eof {
                *g = None;
            }
        }
        Ok(())
    }

    /// Accounts input consumed by the session thread; returns credit to send.
    pub fn consumed(&self, n: usize) -> Option<u32> {
        self.input
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|(_, w)| w.on_consume(n))
    }

    /// The credit gate of an output stream.
    pub fn gate(&self, stream: Stream) -> Option<&CreditGate> {
        match stream {
            Stream::Stdout => Some(&self.stdout),
            Stream::Stderr => Some(&self.stderr),
            Stream::File => Some(&self.file),
            Stream::Stdin => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends the session from outside: kills its processes, wakes and stops its
    /// threads. Its threads send nothing more.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        crate::sys::kill_group(self.pgid.load(Ordering::Acquire), libc::SIGKILL);
        self.stdout.close();
        self.stderr.close();
        self.file.close();
        *self.input.lock().unwrap() = None;
    }
}

/// The live sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<u32, Arc<Session>>>,
}

impl Sessions {
    pub fn get(&self, id: u32) -> Option<Arc<Session>> {
        self.map.lock().unwrap().get(&id).cloned()
    }

    /// Adds `s`; `false` (and nothing added) if its id is in use.
    pub fn insert(&self, s: Arc<Session>) -> bool {
        let mut m = self.map.lock().unwrap();
        if m.contains_key(&s.id) {
            return false;
        }
        m.insert(s.id, s);
        true
    }

    /// Removes the session if it is still the same one (ids are per epoch).
    pub fn remove(&self, s: &Session) {
        let mut m = self.map.lock().unwrap();
        if m.get(&s.id).is_some_and(|x| std::ptr::eq(x.as_ref(), s)) {
            m.remove(&s.id);
        }
    }

    /// Closes and forgets one session.
    pub fn close(&self, id: u32) -> bool {
        let s = self.map.lock().unwrap().remove(&id);
        match s {
            Some(s) => {
                s.close();
                true
            }
            None => false,
        }
    }

    /// Closes every session (a new host, or the old one gone).
    pub fn close_all(&self) -> usize {
        let all: Vec<_> = self.map.lock().unwrap().drain().map(|(_, s)| s).collect();
        for s in &all {
            s.close();
        }
        all.len()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live process group, for forwarding a signal to PID 1's children.
    pub fn process_groups(&self) -> Vec<i32> {
        self.map
            .lock()
            .unwrap()
            .values()
            .map(|s| s.pgid.load(Ordering::Acquire))
            .filter(|&p| p > 1)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_proto::WINDOW;

    #[test]
    fn input_is_windowed_and_typed() {
        let s = Session::new(1, 1, Some(Stream::Stdin));
        let (tx, rx) = std::sync::mpsc::channel();
        s.set_input(tx);
        assert!(matches!(
            s.push_input(Stream::File, vec![1], false),
            Err(InputError::WrongStream)
        ));
        s.push_input(Stream::Stdin, vec![0; WINDOW as usize], false)
            .unwrap();
        let e = s.push_input(Stream::Stdin, vec![0], false).unwrap_err();
        assert!(e.to_string().contains("window"), "{e}");
        assert_eq!(rx.recv().unwrap().data.len(), WINDOW as usize);
        assert_eq!(s.consumed(WINDOW as usize), Some(WINDOW));
        s.push_input(Stream::Stdin, b"x".to_vec(), true).unwrap();
        assert!(rx.recv().unwrap().eof);
        // After EOF, more data is dropped silently.
        s.push_input(Stream::Stdin, b"late".to_vec(), false)
            .unwrap();
        assert!(rx.try_recv().is_err());
        assert_eq!(s.consumed(1), None);
    }

    #[test]
    fn table_tracks_and_closes_sessions() {
        let t = Sessions::default();
        let a = Arc::new(Session::new(1, 1, None));
        assert!(t.insert(a.clone()));
        assert!(!t.insert(Arc::new(Session::new(1, 1, None))));
        assert_eq!(t.len(), 1);
        a.pgid.store(0, Ordering::Release);
        assert!(t.process_groups().is_empty());
        // Removing a different session object with the same id does nothing.
        t.remove(&Session::new(1, 1, None));
        assert!(t.get(1).is_some());
        assert!(t.close(1));
        assert!(!t.close(1));
        assert!(a.is_closed());
        assert!(a.stdout.is_closed());
        assert!(a.gate(Stream::Stdin).is_none());
        assert!(t.insert(Arc::new(Session::new(2, 1, None))));
        assert!(t.insert(Arc::new(Session::new(3, 1, None))));
        assert_eq!(t.close_all(), 2);
        assert!(t.is_empty());
    }
}
