//! Copying files into and out of the guest, chunked and flow-controlled like stdio.
//! Permission bits travel with the file; the receiving side writes a temporary file
//! and renames it into place only when it is complete.

use crate::conn::Client;
use crate::error::{Error, Result};
use crate::process::{take_credit, Guard};
use crate::session::End;
use ec1_proto::{Kind, Msg, Stream, DATA_CHUNK};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a download reported about the guest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Bytes received.
    pub size: u64,
}

fn file_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::File { what, path, source }
}

impl Client {
    /// Copies the local file `local` to `remote` in the guest, keeping its permission
    /// bits. Returns the number of bytes written.
    pub fn upload(&self, local: &Path, remote: &str) -> Result<u64> {
        let f = std::fs::File::open(local).map_err(file_err("cannot open", local))?;
        let mode = f
            .metadata()
            .map_err(file_err("cannot stat", local))?
            .permissions()
            .mode()
            & 0o7777;
        self.upload_from(f, remote, mode)
    }

    /// Streams everything `src` yields into `remote` in the guest with mode `mode`.
    pub fn upload_from(&self, mut src: impl Read, remote: &str, mode: u32) -> Result<u64> {
        let inner = &self.h.inner;
        let s = inner.open_session()?;
        // Held to the end: an early return abandons the upload in the guest.
        let _g = Guard::new(self, s.clone());
        inner.send_msg(
            s.id,
            &Msg::Upload {
                path: remote.as_bytes().to_vec(),
                mode,
            },
        )?;
        let mut buf = vec![0u8; DATA_CHUNK];
        loop {
            let n = take_credit(&s, DATA_CHUNK)?;
            let got = loop {
                match src.read(&mut buf[..n]) {
                    Ok(k) => break k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(Error::Io {
                            context: "reading the file to upload",
                            source,
                        })
                    }
                }
            };
            // Unused credit goes back.
            s.lock().send_credit += (n - got) as u64;
            inner.send_data(Kind::File, s.id, &buf[..got], got == 0)?;
            if got == 0 {
                break;
            }
        }
        let mut st = s.lock();
        loop {
            match &st.end {
                Some(End::UploadDone(n)) => return Ok(*n),
                Some(End::Failed(f)) => return Err(f.to_error()),
                // A hostile or broken agent: an error for this upload, not a panic.
                Some(other) => {
                    return Err(Error::Protocol(format!(
                        "an upload ended with {other:?} instead of its completion"
                    )))
                }
                None => st = s.cv.wait(st).unwrap(),
            }
        }
    }

    /// Copies the guest file `remote` to `local` (written to a temporary file beside
    /// it, then renamed), with the guest file's permission bits.
    ///
    /// The guest is not trusted with the host: the temporary has an unpredictable
    /// name and is created exclusively without following a symlink (nothing planted
    /// in the directory redirects the write), and the guest's mode is reduced to
    /// permission bits under the host's umask (never setuid, setgid or sticky).
    pub fn download(&self, remote: &str, local: &Path) -> Result<FileMeta> {
        let dir = local
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.ec1-download-{:016x}",
            local.file_name().unwrap_or_default().to_string_lossy(),
            crate::conn::random_u64()
        ));
        let res = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(file_err("cannot create", &tmp))?;
            let mut meta = self.download_to(remote, &mut f)?;
            meta.mode = host_mode(meta.mode, process_umask());
            f.set_permissions(std::fs::Permissions::from_mode(meta.mode))
                .map_err(file_err("cannot set the mode of", &tmp))?;
            drop(f);
            std::fs::rename(&tmp, local).map_err(file_err("cannot rename into", local))?;
            Ok(meta)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Streams the guest file `remote` into `dst` (its [`FileMeta::mode`] is the
    /// guest's, unfiltered).
    pub fn download_to(&self, remote: &str, mut dst: impl Write) -> Result<FileMeta> {
        let inner = &self.h.inner;
        let s = inner.open_session()?;
        let _g = Guard::new(self, s.clone());
        inner.send_msg(
            s.id,
            &Msg::Download {
                path: remote.as_bytes().to_vec(),
            },
        )?;
        let mut mode = None;
        let mut size = 0u64;
        loop {
            let mut st = s.lock();
            let chunk = loop {
                if mode.is_none() {
                    mode = st.file_info.map(|(m, _)| m);
                }
                if let Some(End::Failed(f)) = &st.end {
                    return Err(f.to_error());
                }
                if let Some(c) = st.file.take_chunk() {
                    break Some(c);
                }
                if st.file.eof {
                    break None;
                }
                st = s.cv.wait(st).unwrap();
            };
            drop(st);
            let Some((data, credit)) = chunk else {
                break;
            };
            inner.credit(s.id, Stream::File, credit);
            dst.write_all(&data).map_err(|source| Error::Io {
                context: "writing the downloaded file",
                source,
            })?;
            size += data.len() as u64;
        }
        dst.flush().map_err(|source| Error::Io {
            context: "writing the downloaded file",
            source,
        })?;
        Ok(FileMeta {
            mode: mode.unwrap_or(0o644),
            size,
        })
    }
}

/// The mode a file from the guest gets on the host: its permission bits only (no
/// setuid, setgid or sticky bit), under `umask`.
pub(crate) fn host_mode(guest_mode: u32, umask: u32) -> u32 {
    guest_mode & 0o777 & !umask
}

/// This process's umask, read without changing it (`umask(2)` would, for every
/// thread): Linux reports it in `/proc/self/status`. `022` if it cannot be read.
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_modes_lose_special_bits_and_follow_the_umask() {
        assert_eq!(host_mode(0o4755, 0o022), 0o755);
        assert_eq!(host_mode(0o6777, 0o022), 0o755);
        assert_eq!(host_mode(0o1777, 0o077), 0o700);
        assert_eq!(host_mode(0o100644, 0), 0o644, "file type bits are dropped");
        let u = process_umask();
        assert!(u <= 0o777, "{u:o}");
    }
}
