//! The HTTP/1.1 API server on a Unix socket (hyper 1 on tokio): keep-alive, any number
//! of concurrent clients, bodies bounded by `--http-api-max-payload-size` both by
//! `Content-Length` (refused before reading) and while streaming.

mod http;

pub use http::{handle_request, ApiResponse};

use std::path::Path;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::error::ApiError;
use crate::vmm::Vmm;

/// Creates the API socket. Like Firecracker, an existing path is an error: ec1 never
/// removes a file it did not create.
///
/// The path appears only once the socket listens. Clients (the Go SDK, Kata, tests)
/// poll for the file and connect as soon as it exists, but bind(2) creates it before
/// listen(2), and a connect in between is refused. So the socket is bound and listening
/// under a sibling name first and then linked into place (link(2) never replaces an
/// existing file). Where the sibling name would not fit in a socket address, the path
/// is bound directly.
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    if path.symlink_metadata().is_ok() {
        return Err(ApiError::SocketExists {
            path: path.to_path_buf(),
        });
    }
    let bind_err = |source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let staging = staging_name(path);
    let listener = match std::os::unix::net::UnixListener::bind(&staging) {
        Ok(l) => {
            let linked = std::fs::hard_link(&staging, path);
            let _ = std::fs::remove_file(&staging);
            match linked {
                Ok(()) => l,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(ApiError::SocketExists {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) => return Err(bind_err(e)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            std::os::unix::net::UnixListener::bind(path).map_err(bind_err)?
        }
        Err(e) => return Err(bind_err(e)),
    };
    listener.set_nonblocking(true).map_err(bind_err)?;
    UnixListener::from_std(listener).map_err(bind_err)
}

/// A name beside `path`, private to this process, to bind the socket under first.
fn staging_name(path: &Path) -> std::path::PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.bind", std::process::id()));
    path.with_file_name(name)
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, vmm: Arc<Vmm>, max_payload: usize) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::error!("Failed to accept an API connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let vmm = vmm.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let vmm = vmm.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        handle_request(req, vmm, max_payload).await.into_response(),
                    )
                }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("API connection ended with an error: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[tokio::test]
    async fn the_socket_appears_listening_and_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fc.sock");
        let _l = bind(&path).unwrap();
        assert!(path.symlink_metadata().unwrap().file_type().is_socket());
        // Connecting works at once, and nothing but the socket is left in the directory.
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(matches!(bind(&path), Err(ApiError::SocketExists { .. })));

        // A path whose staging name would not fit in a socket address: bound directly.
        let long = dir
            .path()
            .join("s".repeat(100 - dir.path().as_os_str().len()));
        let _l = bind(&long).unwrap();
        std::os::unix::net::UnixStream::connect(&long).unwrap();
    }
}
