//! A writer for the kernel's initramfs format: cpio "newc" (`070701`), uncompressed.
//!
//! Every header is 110 ASCII bytes (magic and 13 eight-digit hex fields), followed by
//! the NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes. The
//! archive ends with an entry named `TRAILER!!!`. Times and owners are zero so the
//! same inputs always give the same bytes (the cache is keyed by content).

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Builds an archive in memory.
#[derive(Debug, Default)]
pub struct NewcWriter {
    buf: Vec<u8>,
    next_ino: u32,
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl NewcWriter {
    pub fn new() -> NewcWriter {
        NewcWriter {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        pad4(&mut self.buf);
        self.buf.extend_from_slice(data);
        pad4(&mut self.buf);
    }

    /// A directory (parents must come first).
    pub fn dir(&mut self, path: &str, perm: u32) {
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[]);
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node (e.g. `/dev/console`, needed before devtmpfs exists).
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    /// Ends the archive and returns its bytes (a multiple of 4 long).
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.buf
    }
}

/// One parsed entry, for tests and checks: (name, mode, rdev, data).
pub type Entry = (String, u32, (u32, u32), Vec<u8>);

/// Reads back a newc archive (stops at the trailer). Used to verify what was built.
pub fn parse(mut b: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let total = b.len();
    loop {
        // Concatenated archives may be separated by zero padding.
        while b.first() == Some(&0) {
            b = &b[1..];
        }
        if b.is_empty() {
            return Ok(out);
        }
        if b.len() < 110 || &b[..6] != b"070701" {
            return Err(format!("bad header at offset {}", total - b.len()));
        }
        let field = |i: usize| -> Result<u32, String> {
            let s = std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).map_err(|e| e.to_string())?;
            u32::from_str_radix(s, 16).map_err(|e| e.to_string())
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_end = 110 + namesize;
        if namesize == 0 || b.len() < name_end {
            return Err("truncated name".into());
        }
        let name = String::from_utf8_lossy(&b[110..name_end - 1]).into_owned();
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start + size;
        if b.len() < data_end {
            return Err(format!("truncated data of {name}"));
        }
        let data = b[data_start..data_end].to_vec();
        b = &b[(data_end.div_ceil(4) * 4).min(b.len())..];
        if name == "TRAILER!!!" {
            // Another archive may follow (the kernel reads them all).
            continue;
        }
        out.push((name, mode, rdev, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_aligned() {
        let mut w = NewcWriter::new();
        w.dir("/bin", 0o755);
        w.file("/init", 0o755, b"abc");
        w.symlink("/bin/sh", "busybox");
        w.char_dev("/dev/console", 0o600, 5, 1);
        let a = w.finish();
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        let e = parse(&a).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].0, "bin");
        assert_eq!(e[0].1, S_IFDIR | 0o755);
        assert_eq!(
            e[1],
            ("init".into(), S_IFREG | 0o755, (0, 0), b"abc".to_vec())
        );
        assert_eq!(e[2].3, b"busybox");
        assert_eq!(e[2].1 & 0o170000, S_IFLNK);
        assert_eq!(e[3].2, (5, 1));
        assert_eq!(e[3].1 & 0o170000, S_IFCHR);
    }

    #[test]
    fn matches_what_gnu_cpio_reads() {
        // Cross-check with GNU cpio (Debian's `cpio`, priority important).
        let out = std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .expect("this test needs GNU cpio: apt-get install cpio");
        assert!(out.status.success());
        let mut w = NewcWriter::new();
        w.dir("d", 0o700);
        w.file("d/f", 0o640, b"hello\n");
        let a = w.finish();
        let mut child = std::process::Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&a).unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "d\nd/f\n");
    }

    #[test]
    fn garbage_is_reported() {
        assert!(parse(b"nonsense").is_err());
        let mut w = NewcWriter::new();
        w.file("x", 0o644, &[1; 100]);
        let a = w.finish();
        assert!(parse(&a[..150]).unwrap_err().contains("truncated"));
        // Zero padding and a second archive are fine.
        let mut two = a.clone();
        two.extend_from_slice(&[0; 8]);
        two.extend_from_slice(&a);
        assert_eq!(parse(&two).unwrap().len(), 2);
    }
}
