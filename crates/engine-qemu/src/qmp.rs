//! A synchronous QMP client on top of the [`qapi`] crate.
//!
//! QEMU interleaves asynchronous events with command responses on one socket. A
//! reader thread owns the socket's read side: events go to a callback as they arrive
//! (so they are seen even while no command runs, e.g. `SHUTDOWN` at the guest's
//! reboot), every other line goes to the [`qapi::Qmp`] the client drives. That split
//! also gives each command a deadline, and keeps events QEMU's newer schema has but the
//! crate does not know from derailing a command.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use ec1_engine::EngineError;
use qapi::qmp::{Event, QmpCommand, QMP};

/// What went wrong talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP I/O failed: {0}")]
    Io(std::io::Error),
    #[error("QEMU refused `{command}`: {desc}")]
    Refused { command: &'static str, desc: String },
    #[error("QEMU did not answer `{0}` within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the QMP connection closed (QEMU has exited)")]
    Closed,
    #[error("the QMP connection is unusable after an earlier timeout")]
    Desynchronised,
}

impl QmpError {
    /// Whether the error means the connection is gone, i.e. QEMU is exiting.
    pub fn means_exit(&self) -> bool {
        matches!(self, QmpError::Closed | QmpError::Io(_))
    }
}

impl From<QmpError> for EngineError {
    fn from(e: QmpError) -> Self {
        match e {
            QmpError::Timeout(what, d) => {
                EngineError::Timeout(d, format!("QEMU to answer `{what}`"))
            }
            other => EngineError::Control(other.to_string()),
        }
    }
}

/// The response side of the socket as the reader thread hands it over: one line per
/// message, with a deadline per read.
struct Responses {
    lines: Receiver<Vec<u8>>,
    line: Vec<u8>,
    pos: usize,
    timeout: Duration,
}

impl Read for Responses {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Responses {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos >= self.line.len() {
            match self.lines.recv_timeout(self.timeout) {
                Ok(line) => {
                    self.line = line;
                    self.pos = 0;
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer from QEMU",
                    ))
                }
                // The reader thread saw the end of the socket: EOF.
                Err(RecvTimeoutError::Disconnected) => return Ok(&[]),
            }
        }
        Ok(&self.line[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.line.len());
    }
}

type Qmp = qapi::Qmp<qapi::Stream<Responses, UnixStream>>;

/// A connected QMP session (capabilities negotiated).
pub struct QmpClient {
    qmp: Qmp,
    socket: UnixStream,
    greeting: QMP,
    timeout: Duration,
    broken: bool,
    reader: Option<JoinHandle<()>>,
}

/// Whether a QMP line is an asynchronous event (`{"event": ...}`).
fn is_event(v: &serde_json::Value) -> bool {
    v.get("event").is_some()
}

/// Reads lines until the socket ends, routing events to `on_event` and everything else
/// to `responses`.
fn read_lines(
    socket: UnixStream,
    responses: mpsc::Sender<Vec<u8>>,
    mut on_event: Box<dyn FnMut(Event) + Send>,
) {
    let mut reader = BufReader::new(socket);
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(v) if is_event(&v) => match serde_json::from_value::<Event>(v) {
                Ok(event) => on_event(event),
                Err(e) => log::debug!(
                    "ignoring a QMP event this client does not know ({e}): {}",
                    String::from_utf8_lossy(&line).trim_end()
                ),
            },
            // Responses, the greeting, and anything unparseable (which then fails the
            // command that reads it) go to the client.
            _ => {
                // The client may be gone (dropped); keep reading so that events are
                // still delivered until QEMU closes the socket.
                let _ = responses.send(line);
            }
        }
    }
}

impl QmpClient {
    /// Takes over a connected QMP socket: starts the reader thread, reads QEMU's
    /// greeting and negotiates capabilities, waiting at most `timeout` for each answer.
    /// `on_event` receives every event QEMU sends, on the reader thread, until QEMU
    /// closes the socket.
    pub fn connect(
        socket: UnixStream,
        timeout: Duration,
        on_event: Box<dyn FnMut(Event) + Send>,
    ) -> Result<QmpClient, QmpError> {
        let read_side = socket.try_clone().map_err(QmpError::Io)?;
        socket
            .set_write_timeout(Some(timeout))
            .map_err(QmpError::Io)?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("ec1-qmp-reader".into())
            .spawn(move || read_lines(read_side, tx, on_event))
            .map_err(QmpError::Io)?;
        let responses = Responses {
            lines: rx,
            line: Vec::new(),
            pos: 0,
            timeout,
        };
        let write_side = socket.try_clone().map_err(QmpError::Io)?;
        let mut qmp: Qmp = qapi::Qmp::new(qapi::Stream::new(responses, write_side));
        let mut client_socket = Some(socket);
        let fail = |e: QmpError, s: &mut Option<UnixStream>, reader: JoinHandle<()>| {
            if let Some(s) = s.take() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            let _ = reader.join();
            e
        };
        // qapi panics on an empty greeting: make sure there is a line first.
        match qmp.inner_mut().fill_buf() {
            Ok([]) => return Err(fail(QmpError::Closed, &mut client_socket, reader)),
            Ok(_) => {}
            Err(e) => {
                return Err(fail(
                    classify_io(e, "the QMP greeting", timeout),
                    &mut client_socket,
                    reader,
                ))
            }
        }
        let greeting = match qmp.handshake() {
            Ok(g) => g,
            Err(e) => {
                return Err(fail(
                    classify_execute(e, "qmp_capabilities", timeout),
                    &mut client_socket,
                    reader,
                ))
            }
        };
        Ok(QmpClient {
            qmp,
            socket: client_socket.take().ok_or(QmpError::Closed)?,
            greeting,
            timeout,
            broken: false,
            reader: Some(reader),
        })
    }

    /// The QEMU version from the greeting.
    pub fn version(&self) -> (i64, i64, i64) {
        let v = &self.greeting.version.qemu;
        (v.major, v.minor, v.micro)
    }

    /// Sets the deadline for each following answer.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.qmp.inner_mut().get_mut_read().timeout = timeout;
        let _ = self.socket.set_write_timeout(Some(timeout));
    }

    /// Runs one command and returns its typed answer.
    ///
    /// After a timeout the session is unusable (a late answer would be taken for the
    /// next command's) and every further call fails with [`QmpError::Desynchronised`].
    pub fn execute<C: QmpCommand>(&mut self, command: &C) -> Result<C::Ok, QmpError> {
        if self.broken {
            return Err(QmpError::Desynchronised);
        }
        let r = self
            .qmp
            .execute(command)
            .map_err(|e| classify_execute(e, C::NAME, self.timeout));
        if matches!(r, Err(QmpError::Timeout(..))) {
            self.broken = true;
        }
        r
    }
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        // Ends the reader thread even if QEMU still runs.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn classify_io(e: std::io::Error, what: &'static str, timeout: Duration) -> QmpError {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            QmpError::Timeout(what, timeout)
        }
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset => QmpError::Closed,
        _ => QmpError::Io(e),
    }
}

fn classify_execute(e: qapi::ExecuteError, what: &'static str, timeout: Duration) -> QmpError {
    match e {
        qapi::ExecuteError::Qapi(err) => QmpError::Refused {
            command: what,
            desc: err.desc,
        },
        qapi::ExecuteError::Io(io) => classify_io(io, what, timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A scripted QEMU: sends `greeting`, then answers each command with its canned
    /// lines (events and responses). With `linger` it then reads until the client
    /// closes, instead of closing first.
    fn fake_qemu_with(
        greeting: &'static str,
        script: Vec<(&'static str, Vec<&'static str>)>,
        linger: bool,
    ) -> (UnixStream, JoinHandle<Vec<String>>) {
        let (client, server) = UnixStream::pair().unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut w = server.try_clone().unwrap();
            let mut r = BufReader::new(server);
            if !greeting.is_empty() {
                w.write_all(greeting.as_bytes()).unwrap();
            }
            for (expect, replies) in script {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                assert!(line.contains(expect), "expected {expect} in {line}");
                seen.push(line.trim_end().to_string());
                for reply in replies {
                    w.write_all(reply.as_bytes()).unwrap();
                }
            }
            if linger {
                let mut rest = String::new();
                let _ = r.read_to_string(&mut rest);
            }
            seen
        });
        (client, h)
    }

    fn fake_qemu(
        greeting: &'static str,
        script: Vec<(&'static str, Vec<&'static str>)>,
    ) -> (UnixStream, JoinHandle<Vec<String>>) {
        fake_qemu_with(greeting, script, false)
    }

    const GREETING: &str = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"test\"}, \"capabilities\": [\"oob\"]}}\n";
    const OK: &str = "{\"return\": {}}\n";

    #[test]
    fn handshake_commands_and_events() {
        let (sock, server) = fake_qemu(
            GREETING,
            vec![
                ("qmp_capabilities", vec![OK]),
                (
                    "\"stop\"",
                    vec![
                        "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\n",
                        "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"X_FUTURE_EVENT\", \"data\": {}}\n",
                        OK,
                    ],
                ),
                (
                    "\"human-monitor-command\"",
                    vec!["{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n"],
                ),
                (
                    "\"quit\"",
                    vec![
                        "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}}\n",
                        OK,
                    ],
                ),
            ],
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let mut c = QmpClient::connect(
            sock,
            Duration::from_secs(10),
            Box::new(move |e| ev.lock().unwrap().push(format!("{e:?}"))),
        )
        .unwrap();
        assert_eq!(c.version(), (10, 0, 2));
        c.execute(&qapi::qmp::stop {}).unwrap();
        let e = c
            .execute(&qapi::qmp::human_monitor_command {
                command_line: "x".into(),
                cpu_index: None,
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("refused `human-monitor-command`: nope"),
            "{e}"
        );
        c.execute(&qapi::qmp::quit {}).unwrap();
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 4);
        assert!(seen[1].contains("{\"execute\":\"stop\""), "{}", seen[1]);
        // The server is gone: the next command sees a closed connection.
        let e = c.execute(&qapi::qmp::cont {}).unwrap_err();
        assert!(matches!(e, QmpError::Closed | QmpError::Io(_)), "{e:?}");
        drop(c);
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].starts_with("STOP"));
        assert!(events[1].contains("host_qmp_quit"), "{}", events[1]);
    }

    #[test]
    fn a_silent_peer_times_out_and_poisons_the_session() {
        let (sock, server) = fake_qemu_with(
            GREETING,
            vec![("qmp_capabilities", vec![OK]), ("cont", vec![])],
            true,
        );
        let mut c = QmpClient::connect(sock, Duration::from_secs(10), Box::new(|_| {})).unwrap();
        c.set_timeout(Duration::from_millis(50));
        let e = c.execute(&qapi::qmp::cont {}).unwrap_err();
        assert!(matches!(e, QmpError::Timeout("cont", _)), "{e:?}");
        let ee: EngineError = e.into();
        assert!(matches!(ee, EngineError::Timeout(..)));
        assert!(matches!(
            c.execute(&qapi::qmp::cont {}),
            Err(QmpError::Desynchronised)
        ));
        drop(c);
        server.join().unwrap();
    }

    #[test]
    fn a_peer_that_closes_before_the_greeting_is_closed() {
        let (sock, server) = fake_qemu("", vec![]);
        server.join().unwrap();
        let e = QmpClient::connect(sock, Duration::from_secs(10), Box::new(|_| {}))
            .err()
            .unwrap();
        assert!(matches!(e, QmpError::Closed), "{e:?}");
        let ee: EngineError = e.into();
        assert!(ee.to_string().contains("QEMU has exited"), "{ee}");
    }

    #[test]
    fn a_peer_that_never_greets_times_out() {
        let (sock, keep) = UnixStream::pair().unwrap();
        let e = QmpClient::connect(sock, Duration::from_millis(50), Box::new(|_| {}))
            .err()
            .unwrap();
        assert!(
            matches!(e, QmpError::Timeout("the QMP greeting", _)),
            "{e:?}"
        );
        drop(keep);
    }

    #[test]
    fn a_refused_handshake_is_reported() {
        let (sock, server) = fake_qemu(
            GREETING,
            vec![(
                "qmp_capabilities",
                vec!["{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\n"],
            )],
        );
        let e = QmpClient::connect(sock, Duration::from_secs(10), Box::new(|_| {}))
            .err()
            .unwrap();
        assert!(matches!(e, QmpError::Refused { .. }), "{e:?}");
        server.join().unwrap();
    }

    #[test]
    fn io_errors_are_classified() {
        use std::io::{Error, ErrorKind};
        let t = Duration::from_secs(1);
        assert!(matches!(
            classify_io(Error::from(ErrorKind::BrokenPipe), "x", t),
            QmpError::Closed
        ));
        assert!(matches!(
            classify_io(Error::from(ErrorKind::WouldBlock), "x", t),
            QmpError::Timeout("x", _)
        ));
        let e = classify_io(Error::other("weird"), "x", t);
        assert!(matches!(e, QmpError::Io(_)));
        assert!(EngineError::from(e).to_string().contains("weird"));
    }
}
