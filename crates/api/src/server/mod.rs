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
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    if path.symlink_metadata().is_ok() {
        return Err(ApiError::SocketExists {
            path: path.to_path_buf(),
        });
    }
    UnixListener::bind(path).map_err(|source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    })
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
