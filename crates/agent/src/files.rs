//! File transfers: uploads land in a temporary file next to the target and are
//! renamed into place only when complete (a reader never sees half a file, a failed
//! upload leaves nothing behind); downloads stream a regular file.

use crate::server::Shared;
use crate::session::{Chunk, Session};
use crate::sys;
use ec1_proto::{ErrorCode, Kind, Msg, Stream, DATA_CHUNK};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

fn abs(path: &[u8]) -> PathBuf {
    Path::new("/").join(OsStr::from_bytes(path))
}

/// Where an upload to `target` is written before the rename: same directory, so the
/// rename is atomic.
pub fn temp_path(target: &Path, session: u32) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(
        ".{name}.ec1-upload-{}-{session}",
        std::process::id()
    ))
}

fn io_fail(sh: &Shared, s: &Session, what: &str, path: &Path, e: std::io::Error) {
    sh.fail(
        s,
        ErrorCode::from_io(&e),
        format!("{what} {}: {e}", path.display()),
    );
}

/// Starts receiving an upload into `path` with permissions `mode`.
pub fn start_upload(sh: Arc<Shared>, s: Arc<Session>, path: Vec<u8>, mode: u32) {
    let (tx, rx) = mpsc::channel();
    s.set_input(tx);
    let r = crate::workers::run({
        let (sh, s) = (sh.clone(), s.clone());
        move || upload(&sh, &s, &abs(&path), mode & 0o7777, rx)
    });
    if let Err(e) = r {
        sh.fail(&s, ErrorCode::Io, format!("cannot start a thread: {e}"));
    }
}

fn upload(sh: &Shared, s: &Session, path: &Path, mode: u32, rx: Receiver<Chunk>) {
    let tmp = temp_path(path, s.id);
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
    {
        Ok(f) => f,
        Err(e) => return io_fail(sh, s, "cannot create", &tmp, e),
    };
    let mut written = 0u64;
    let mut complete = false;
    for c in rx {
        if let Err(e) = f.write_all(&c.data) {
            let _ = std::fs::remove_file(&tmp);
            return io_fail(sh, s, "cannot write", &tmp, e);
        }
        written += c.data.len() as u64;
        if let Some(n) = s.consumed(c.data.len()) {
            sh.outbox.msg(
                s.epoch,
                s.id,
                &Msg::Credit {
                    stream: Stream::File,
                    bytes: n,
                },
            );
        }
        if c.eof {
            complete = true;
            break;
        }
    }
    if !complete {
        // Closed or reset before the end: leave nothing behind.
        let _ = std::fs::remove_file(&tmp);
        return sh.fail(s, ErrorCode::Io, "upload abandoned before its end".into());
    }
    // Set the mode explicitly: the umask must not change what the host asked for.
    if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(mode)) {
        let _ = std::fs::remove_file(&tmp);
        return io_fail(sh, s, "cannot set the mode of", &tmp, e);
    }
    drop(f);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return io_fail(sh, s, "cannot rename the upload to", path, e);
    }
    sh.end(s, &Msg::UploadDone { bytes: written });
}

/// Starts sending the file at `path`.
pub fn start_download(sh: Arc<Shared>, s: Arc<Session>, path: Vec<u8>) {
    let r = crate::workers::run({
        let (sh, s) = (sh.clone(), s.clone());
        move || download(&sh, &s, &abs(&path))
    });
    if let Err(e) = r {
        sh.fail(&s, ErrorCode::Io, format!("cannot start a thread: {e}"));
    }
}

fn download(sh: &Shared, s: &Session, path: &Path) {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return io_fail(sh, s, "cannot open", path, e),
    };
    let meta = match f.metadata() {
        Ok(m) => m,
        Err(e) => return io_fail(sh, s, "cannot stat", path, e),
    };
    if !meta.is_file() {
        return sh.fail(
            s,
            ErrorCode::Io,
            format!("{} is not a regular file", path.display()),
        );
    }
    sh.outbox.msg(
        s.epoch,
        s.id,
        &Msg::FileInfo {
            mode: meta.permissions().mode() & 0o7777,
            size: meta.len(),
        },
    );
    loop {
        let Some(n) = s.file.acquire(DATA_CHUNK, None) else {
            return; // closed by the host
        };
        let mut buf = crate::outbox::frame_buf(n);
        match sys::read_into_vec(f.as_raw_fd(), &mut buf, n) {
            Ok(0) => {
                sh.outbox
                    .data(s.epoch, Kind::File, s.id, crate::outbox::frame_buf(0), true);
                // The end of the data is the end of the session.
                return sh.end_quietly(s);
            }
            Ok(m) => {
                s.file.refund(n - m);
                sh.outbox.data(s.epoch, Kind::File, s.id, buf, false);
            }
            Err(e) => return io_fail(sh, s, "cannot read", path, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_sit_next_to_the_target() {
        let t = temp_path(Path::new("/a/b/file.txt"), 7);
        assert_eq!(t.parent(), Some(Path::new("/a/b")));
        let n = t.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            n.starts_with(".file.txt.ec1-upload-") && n.ends_with("-7"),
            "{n}"
        );
        assert_eq!(abs(b"rel/x"), PathBuf::from("/rel/x"));
        assert_eq!(abs(b"/abs"), PathBuf::from("/abs"));
    }
}
