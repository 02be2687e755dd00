//! "Guest up" for a VMM whose agent channel the benchmark cannot use (a foreign
//! Firecracker-compatible binary has no ec1 agent socket): the guest prints a marker on
//! its serial console before anything else in user space, and the host watches the
//! VMM's stdout for it.
//!
//! The guest is the same agent initramfs plus one small archive holding
//! [`MARKER_INIT`], a shell script that prints [`MARKER`] and `exec`s the agent as PID 1;
//! the kernel runs it through `rdinit=`. Both compared binaries boot exactly this.

use crate::error::BenchError;
use ec1_guest::initramfs::NewcWriter;
use std::io::Write;
use std::path::Path;

/// What the guest prints when its user space starts.
pub const MARKER: &str = "EC1-BENCH-GUEST-UP";
/// The guest path of the marker script.
pub const MARKER_INIT: &str = "/ec1-bench-init";

/// The archive with the marker script.
pub fn marker_archive() -> Vec<u8> {
    let script = format!("#!/bin/sh\necho {MARKER}\nexec /init \"$@\"\n");
    let mut w = NewcWriter::new();
    w.file(&MARKER_INIT[1..], 0o755, script.as_bytes());
    w.finish()
}

/// Writes `base` (an initramfs) followed by the marker archive to `dest`. The kernel
/// unpacks concatenated archives in order; each starts 4-byte aligned.
pub fn write_marker_initrd(base: &Path, dest: &Path) -> Result<(), BenchError> {
    let mut bytes =
        std::fs::read(base).map_err(BenchError::io(format!("reading {}", base.display())))?;
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes.extend_from_slice(&marker_archive());
    let mut f = std::fs::File::create(dest)
        .map_err(BenchError::io(format!("creating {}", dest.display())))?;
    f.write_all(&bytes)
        .map_err(BenchError::io(format!("writing {}", dest.display())))
}

/// The kernel command line for marker boots: the sandbox's, the extra arguments under
/// test, and `rdinit=` pointing at the marker script.
pub fn marker_boot_args(base: &str, extra: &[String]) -> String {
    let mut s = base.to_string();
    for a in extra {
        s.push(' ');
        s.push_str(a);
    }
    s.push_str(" rdinit=");
    s.push_str(MARKER_INIT);
    s
}

/// Finds [`MARKER`]-like text in a byte stream read in arbitrary pieces (a read may
/// end in the middle of the marker).
pub struct MarkerScanner {
    marker: Vec<u8>,
    window: Vec<u8>,
}

impl MarkerScanner {
    pub fn new(marker: &str) -> MarkerScanner {
        MarkerScanner {
            marker: marker.as_bytes().to_vec(),
            window: Vec::new(),
        }
    }

    /// Feeds the next bytes; true once the marker has been seen in the stream.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.marker.is_empty() {
            return true;
        }
        self.window.extend_from_slice(chunk);
        if self
            .window
            .windows(self.marker.len())
            .any(|w| w == self.marker)
        {
            return true;
        }
        let keep = self.marker.len() - 1;
        let excess = self.window.len().saturating_sub(keep);
        self.window.drain(..excess);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec1_guest::initramfs::parse;

    #[test]
    fn archive_holds_an_executable_script_that_execs_the_agent() {
        let a = marker_archive();
        let e = parse(&a).unwrap();
        let s = e.iter().find(|x| x.0 == "ec1-bench-init").unwrap();
        assert_eq!(s.1 & 0o777, 0o755);
        let text = String::from_utf8(s.3.clone()).unwrap();
        assert!(
            text.starts_with("#!/bin/sh\necho EC1-BENCH-GUEST-UP\n"),
            "{text}"
        );
        assert!(text.contains("exec /init"));
    }

    #[test]
    fn initrd_is_the_base_aligned_then_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::write(&base, b"12345").unwrap();
        let dest = dir.path().join("out");
        write_marker_initrd(&base, &dest).unwrap();
        let out = std::fs::read(&dest).unwrap();
        assert_eq!(&out[..8], b"12345\0\0\0");
        assert_eq!(&out[8..], marker_archive().as_slice());
        assert!(write_marker_initrd(&dir.path().join("none"), &dest).is_err());
    }

    #[test]
    fn boot_args_end_with_rdinit() {
        assert_eq!(
            marker_boot_args("console=ttyS0", &["lpj=1".into()]),
            "console=ttyS0 lpj=1 rdinit=/ec1-bench-init"
        );
    }

    #[test]
    fn marker_split_across_reads_is_found() {
        let mut s = MarkerScanner::new("GUEST-UP");
        assert!(!s.feed(b"noise GUE"));
        assert!(!s.feed(b"ST"));
        assert!(s.feed(b"-UP\r\n"));
        let mut s = MarkerScanner::new("XY");
        assert!(!s.feed(&[b'a'; 10000]));
        assert!(s.window.len() <= 1);
        assert!(MarkerScanner::new("").feed(b""));
    }
}
