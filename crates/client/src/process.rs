//! A running guest command and its stdio handles.

use crate::conn::{Client, Handle, Inner};
use crate::error::{Error, Result};
use crate::session::{End, OutBuf, Session};
use crate::status::ExitStatus;
use crate::Command;
use ec1_proto::{Kind, Msg, PtySize, Stream, DATA_CHUNK};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keeps a session's command alive while any handle to it exists; the last handle to
/// go abandons the session (the agent kills the command) unless it has ended.
pub(crate) struct Guard {
    h: Arc<Handle>,
    s: Arc<Session>,
}

impl Guard {
    pub(crate) fn new(client: &Client, s: Arc<Session>) -> Arc<Guard> {
        Arc::new(Guard {
            h: client.h.clone(),
            s,
        })
    }
    pub(crate) fn inner(&self) -> &Inner {
        &self.h.inner
    }
    pub(crate) fn session(&self) -> &Session {
        &self.s
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.s.lock().end.is_none() {
            let _ = self.h.inner.send_msg(self.s.id, &Msg::Close);
            self.h.inner.forget(self.s.id);
        }
    }
}

/// What [`Process::wait_with_output`] and [`Client::output`] collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A command running in the guest.
///
/// Read its output through [`Process::stdout`] / [`Process::stderr`] while it runs:
/// the agent sends at most a window (256 KiB) per stream ahead of what you read, so
/// an unread stream pauses the command (as a full pipe would), never the channel.
/// Dropping every handle of a command that has not ended kills it.
pub struct Process {
    g: Arc<Guard>,
    pid: u32,
    stdin: Option<Stdin>,
    stdout: Option<OutputStream>,
    stderr: Option<OutputStream>,
}

impl Client {
    /// Starts `cmd` and returns once the guest runs it (or refused to).
    pub fn spawn(&self, cmd: &Command) -> Result<Process> {
        let inner = &self.h.inner;
        let s = inner.open_session()?;
        let g = Guard::new(self, s.clone());
        inner.send_msg(s.id, &Msg::Exec(cmd.req.clone()))?;
        ec1_trace::event!(
            "exec.start",
            session = s.id,
            program = cmd
                .req
                .argv
                .first()
                .map(|a| String::from_utf8_lossy(a).into_owned())
        );
        let pid = {
            let mut st = s.lock();
            loop {
                if let Some(pid) = st.pid {
                    break pid;
                }
                match &st.end {
                    Some(End::Failed(f)) => return Err(f.to_error()),
                    // A hostile or broken agent ended it as something else.
                    Some(other) => {
                        return Err(Error::Protocol(format!(
                            "an exec session ended with {other:?} before it started"
                        )))
                    }
                    None => {}
                }
                st = s.cv.wait(st).unwrap();
            }
        };
        let stdin = cmd.req.stdin.then(|| Stdin {
            g: g.clone(),
            closed: false,
        });
        let out = |stream| OutputStream {
            g: g.clone(),
            stream,
        };
        Ok(Process {
            pid,
            stdin,
            stdout: Some(out(Stream::Stdout)),
            stderr: Some(out(Stream::Stderr)),
            g,
        })
    }

    /// Runs `cmd` to the end and collects its output (stdin is `/dev/null` unless the
    /// command asked for it, in which case it is closed at once).
    pub fn output(&self, cmd: &Command) -> Result<Output> {
        self.spawn(cmd)?.wait_with_output()
    }
}

impl Process {
    /// The command's pid in the guest.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The session id on the channel (for logs).
    pub fn session_id(&self) -> u32 {
        self.g.session().id
    }

    /// Takes the stdin handle (present if the command was built with `stdin(true)`).
    pub fn stdin(&mut self) -> Option<Stdin> {
        self.stdin.take()
    }

    /// Takes the stdout handle.
    pub fn stdout(&mut self) -> Option<OutputStream> {
        self.stdout.take()
    }

    /// Takes the stderr handle (always empty for a pty session).
    pub fn stderr(&mut self) -> Option<OutputStream> {
        self.stderr.take()
    }

    /// A handle that signals or resizes the command from another thread (e.g. one
    /// that forwards the signals ec1 itself receives) while this one streams it.
    pub fn controller(&self) -> Controller {
        Controller { g: self.g.clone() }
    }

    /// Sends `signal` to the command's process group.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.controller().signal(signal)
    }

    /// Kills the command's process group (SIGKILL).
    pub fn kill(&self) -> Result<()> {
        self.signal(9)
    }

    /// Changes the terminal size of a pty session.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.controller().resize(rows, cols)
    }

    /// Waits for the command to end. Closes stdin first if it is still held here.
    /// Output not taken with [`Process::stdout`]/[`Process::stderr`] is discarded.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.wait_timeout(None)?
            .ok_or(Error::Timeout(Duration::ZERO, "the command"))
    }

    /// [`Process::wait`] for at most `timeout` (`None`: for ever); `Ok(None)` if the
    /// command still runs.
    pub fn wait_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        self.stdin = None;
        self.stdout = None;
        self.stderr = None;
        let s = self.g.session();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = s.lock();
        loop {
            match &st.end {
                Some(End::Exited(how, timed_out)) => {
                    return Ok(Some(ExitStatus::new(*how, *timed_out)))
                }
                Some(End::Failed(f)) => return Err(f.to_error()),
                // A hostile or broken agent: an error for this session, not a panic.
                Some(other) => {
                    return Err(Error::Protocol(format!(
                        "an exec session ended with {other:?} instead of an exit"
                    )))
                }
                None => {}
            }
            st = match deadline {
                None => s.cv.wait(st).unwrap(),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    s.cv.wait_timeout(st, left).unwrap().0
                }
            };
        }
    }

    /// Closes stdin, reads stdout and stderr to their ends (concurrently) and waits.
    pub fn wait_with_output(mut self) -> Result<Output> {
        self.stdin = None;
        let mut out = self.stdout.take().expect("stdout was taken");
        let mut err = self.stderr.take().expect("stderr was taken");
        let t = std::thread::spawn(move || {
            let mut v = Vec::new();
            err.read_to_end(&mut v).map(|_| v)
        });
        let mut stdout = Vec::new();
        let r1 = out.read_to_end(&mut stdout);
        let r2 = t.join().expect("stderr reader panicked");
        let status = self.wait()?;
        r1.map_err(|e| Error::Io {
            context: "reading stdout",
            source: e,
        })?;
        let stderr = r2.map_err(|e| Error::Io {
            context: "reading stderr",
            source: e,
        })?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

/// The command's stdin. Writes wait for the agent's credit (so a command that does not
/// read stops the writer, not the channel). Dropping it or [`Stdin::close`] sends the
/// end of input.
pub struct Stdin {
    g: Arc<Guard>,
    closed: bool,
}

impl Stdin {
    /// Sends the end of input; the command reads end of file.
    pub fn close(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let s = self.g.session();
        if s.lock().end.is_some() {
            return Ok(());
        }
        self.g.inner().send_data(Kind::Stdin, s.id, &[], true)
    }
}

/// Waits for send credit on `s` and takes up to `max` bytes of it.
pub(crate) fn take_credit(s: &Session, max: usize) -> Result<usize> {
    let mut st = s.lock();
    loop {
        if let Some(end) = &st.end {
            return Err(match end {
                End::Failed(f) => f.to_error(),
                _ => Error::Io {
                    context: "writing",
                    source: io::ErrorKind::BrokenPipe.into(),
                },
            });
        }
        if st.send_credit > 0 {
            let n = (max as u64).min(st.send_credit) as usize;
            st.send_credit -= n as u64;
            return Ok(n);
        }
        st = s.cv.wait(st).unwrap();
    }
}

impl Write for Stdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let s = self.g.session();
        let n = take_credit(s, buf.len().min(DATA_CHUNK)).map_err(Error::into_io)?;
        self.g
            .inner()
            .send_data(Kind::Stdin, s.id, &buf[..n], false)
            .map_err(Error::into_io)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// stdout or stderr of a command. Reading returns credit to the agent; dropping it
/// discards the rest of the stream (without slowing the command).
pub struct OutputStream {
    g: Arc<Guard>,
    stream: Stream,
}

fn buf_of(st: &mut crate::session::State, stream: Stream) -> &mut OutBuf {
    match stream {
        Stream::Stdout => &mut st.stdout,
        Stream::Stderr => &mut st.stderr,
        _ => &mut st.file,
    }
}

impl OutputStream {
    /// The next chunk as the agent sent it (no copy), or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let s = self.g.session();
        let mut st = s.lock();
        loop {
            if let Some((c, credit)) = buf_of(&mut st, self.stream).take_chunk() {
                drop(st);
                self.g.inner().credit(s.id, self.stream, credit);
                return Ok(Some(c));
            }
            if buf_of(&mut st, self.stream).eof {
                return match &st.end {
                    Some(End::Failed(f)) => Err(f.to_error()),
                    _ => Ok(None),
                };
            }
            st = s.cv.wait(st).unwrap();
        }
    }
}

impl Read for OutputStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let s = self.g.session();
        let mut st = s.lock();
        loop {
            let b = buf_of(&mut st, self.stream);
            if b.has_data() {
                let (n, credit) = b.take(buf);
                drop(st);
                self.g.inner().credit(s.id, self.stream, credit);
                return Ok(n);
            }
            if b.eof {
                return match &st.end {
                    Some(End::Failed(f)) => Err(f.to_error().into_io()),
                    _ => Ok(0),
                };
            }
            st = s.cv.wait(st).unwrap();
        }
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        let s = self.g.session();
        let credit = buf_of(&mut s.lock(), self.stream).set_discard();
        self.g.inner().credit(s.id, self.stream, credit);
    }
}

/// Signals and resizes a running command; see [`Process::controller`]. Like every
/// handle it keeps the command alive while it exists.
#[derive(Clone)]
pub struct Controller {
    g: Arc<Guard>,
}

impl Controller {
    /// Sends `signal` to the command's process group.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.g
            .inner()
            .send_msg(self.g.session().id, &Msg::Signal { signal })
    }

    /// Changes the terminal size of a pty session.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.g
            .inner()
            .send_msg(self.g.session().id, &Msg::Resize(PtySize { rows, cols }))
    }
}
