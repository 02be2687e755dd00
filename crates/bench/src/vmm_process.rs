//! A Firecracker-compatible VMM process (`ec1 --api-sock`, `firecracker`, ...) under
//! the benchmark's control: started with an API socket in a private directory, its
//! stdout (the guest's serial console, in Firecracker's default setup) watched for a
//! marker, and ended with SIGTERM.

use crate::error::BenchError;
use crate::http::HttpClient;
use crate::marker::MarkerScanner;
use crate::process::{spawn_with_fds, tail_file, terminate};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much of the VMM's stdout to keep for error messages.
const STDOUT_TAIL: usize = 8192;

/// A running VMM.
pub struct VmmProcess {
    pub program: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
    marker: Receiver<Instant>,
    stdout_tail: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl VmmProcess {
    /// Starts `program --api-sock <dir>/api.sock --id ec1-bench`, watching its stdout
    /// for `marker`.
    pub fn start(program: &Path, marker: &str) -> Result<VmmProcess, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("ec1-bench-vmm-")
            .tempdir()
            .map_err(BenchError::io("creating a directory for the VMM"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr"))
            .map_err(BenchError::io("creating the VMM's stderr file"))?;
        let mut cmd = Command::new(program);
        cmd.arg("--api-sock")
            .arg(dir.path().join("api.sock"))
            .args(["--id", "ec1-bench"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = spawn_with_fds(&mut cmd, &[]).map_err(|e| BenchError::Process {
            program: program.display().to_string(),
            why: format!("cannot start it: {e}"),
            output: String::new(),
        })?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let tail = Arc::new(Mutex::new(Vec::new()));
        let tail2 = tail.clone();
        let mut scanner = MarkerScanner::new(marker);
        let reader = std::thread::Builder::new()
            .name("ec1-bench-stdout".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                let mut sent = false;
                // Drains until EOF so the VMM never blocks on a full pipe.
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if !sent && scanner.feed(&buf[..n]) {
                        sent = true;
                        let _ = tx.send(Instant::now());
                    }
                    let mut t = tail2.lock().unwrap_or_else(|e| e.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(STDOUT_TAIL);
                    t.drain(..excess);
                }
            })
            .map_err(BenchError::io("starting the stdout reader"))?;
        Ok(VmmProcess {
            program: program.to_path_buf(),
            child,
            dir,
            marker: rx,
            stdout_tail: tail,
            reader: Some(reader),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn api_socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// Connects to the API socket as soon as it accepts (polling every 200 µs: the
    /// wait is a measured phase), failing early if the process exits first.
    pub fn connect_api(&mut self, timeout: Duration) -> Result<HttpClient, BenchError> {
        let start = Instant::now();
        let sock = self.api_socket();
        loop {
            match HttpClient::connect(&sock) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    let exited = matches!(self.child.try_wait(), Ok(Some(_)));
                    if exited || start.elapsed() > timeout {
                        return Err(BenchError::Process {
                            program: self.program.display().to_string(),
                            why: format!("its API socket did not come up: {e}"),
                            output: self.diagnostics(),
                        });
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    /// Waits for the marker on stdout; returns when it was read.
    pub fn wait_marker(&mut self, timeout: Duration) -> Result<Instant, BenchError> {
        self.marker
            .recv_timeout(timeout)
            .map_err(|_| BenchError::Timeout {
                what: format!(
                    "the guest's marker on {}'s serial console",
                    self.program.display()
                ),
                waited_ms: timeout.as_millis(),
                hint: self.diagnostics(),
            })
    }

    /// The end of the VMM's stderr and stdout, for error messages.
    pub fn diagnostics(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("the process has exited ({s})\n"),
            _ => String::new(),
        };
        let out = self
            .stdout_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        format!(
            "{status}stderr:\n{}\nstdout (serial):\n{}",
            tail_file(&self.dir.path().join("stderr"), 15),
            String::from_utf8_lossy(&out)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// SIGTERM (SIGKILL after 5 s); returns how long the process took to exit.
    pub fn stop(mut self) -> Result<Duration, BenchError> {
        let d = terminate(&mut self.child, Duration::from_secs(5))?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(d)
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child, Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in "VMM": a shell script that prints the marker and waits.
    #[test]
    fn marker_on_stdout_is_seen_and_the_process_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-vmm");
        std::fs::write(
            &script,
            "#!/bin/sh\necho booting\necho MARK-UP\necho oops >&2\nexec sleep 30\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut v = VmmProcess::start(&script, "MARK-UP").unwrap();
        assert!(v.api_socket().ends_with("api.sock"));
        let e = v
            .connect_api(Duration::from_millis(20))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("API socket did not come up"), "{e}");
        v.wait_marker(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let d = v.diagnostics();
        assert!(d.contains("oops") && d.contains("booting"), "{d}");
        assert!(v.stop().unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_marker_times_out_with_diagnostics() {
        let mut v = VmmProcess::start(Path::new("/bin/echo"), "NEVER").unwrap();
        let e = v
            .wait_marker(Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("NEVER") || e.contains("marker"), "{e}");
        assert!(e.contains("--api-sock"), "echo prints its arguments: {e}");
        assert!(VmmProcess::start(Path::new("/nonexistent/vmm"), "x").is_err());
    }
}
