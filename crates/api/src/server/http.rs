//! One request → one response: bounded body reading, routing, the controller call on a
//! blocking thread (engines block), and Firecracker's response shapes and log lines.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::{header, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::error::{RequestError, VmmActionError};
use crate::router::{parse_request, resource_of};
use crate::vmm::{Vmm, VmmData};

/// A response before it becomes an HTTP message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Option<Value>,
    /// Close the connection afterwards (the request body was not read).
    pub close: bool,
}

impl ApiResponse {
    fn fault(status: u16, message: String) -> Self {
        log::error!(
            "Received Error. Status code: {status} {}. Message: {message}",
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
        );
        ApiResponse {
            status,
            body: Some(json!({ "fault_message": message })),
            close: false,
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        // Every answer says JSON, 204s included, and names its server, as Firecracker's does.
        let mut b = Response::builder()
            .status(status)
            .header(header::SERVER, "Firecracker API")
            .header(header::CONTENT_TYPE, "application/json");
        if self.close {
            b = b.header(header::CONNECTION, "close");
        }
        let body = match self.body {
            Some(v) => Full::new(Bytes::from(v.to_string())),
            None => Full::new(Bytes::new()),
        };
        b.body(body)
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

fn method_name(m: &hyper::Method) -> &'static str {
    match *m {
        hyper::Method::GET => "GET",
        hyper::Method::PUT => "PUT",
        hyper::Method::PATCH => "PATCH",
        hyper::Method::DELETE => "DELETE",
        hyper::Method::POST => "POST",
        hyper::Method::HEAD => "HEAD",
        hyper::Method::OPTIONS => "OPTIONS",
        _ => "UNKNOWN",
    }
}

/// Reads at most `limit` bytes of body. A declared length over the limit is refused
/// without reading a byte; a streamed body is cut off as soon as it passes the limit.
async fn read_body<B>(req: Request<B>, limit: usize) -> Result<Bytes, RequestError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared {
        if size > limit {
            return Err(RequestError::PayloadTooLarge { size, limit });
        }
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(RequestError::PayloadTooLarge {
                size: declared.unwrap_or(limit + 1),
                limit,
            })
        }
        Err(e) => Err(RequestError::Generic(format!(
            "Failed to read the request body: {e}"
        ))),
    }
}

/// Handles one HTTP request against `vmm`, and records it as an `api.request` phase
/// event (method, path, status, time taken).
pub async fn handle_request<B>(req: Request<B>, vmm: Arc<Vmm>, max_payload: usize) -> ApiResponse
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let t0 = std::time::Instant::now();
    let method = method_name(req.method());
    let path = req.uri().path().to_string();
    let r = respond(req, method, &path, vmm, max_payload).await;
    ec1_trace::event!(
        "api.request",
        method = method,
        path = path,
        status = r.status,
        us = t0.elapsed().as_micros() as u64
    );
    r
}

async fn respond<B>(
    req: Request<B>,
    method: &'static str,
    path: &str,
    vmm: Arc<Vmm>,
    max_payload: usize,
) -> ApiResponse
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = path.to_string();
    let body = match read_body(req, max_payload).await {
        Ok(b) => b,
        Err(e) => {
            vmm.metrics()
                .record_api_request(method, resource_of(&path), false);
            let mut r = ApiResponse::fault(400, e.to_string());
            r.close = true;
            return r;
        }
    };
    let body_text = String::from_utf8_lossy(&body).to_string();
    if body.is_empty() || path == "/mmds" || path == "/cpu-config" {
        log::info!("The API server received a {method} request on \"{path}\".");
    } else {
        log::info!(
            "The API server received a {method} request on \"{path}\" with body {body_text:?}."
        );
    }
    let vmm2 = vmm.clone();
    let path2 = path.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let body = if body.is_empty() {
            None
        } else {
            Some(&body[..])
        };
        let action = parse_request(method, &path2, body).map_err(Fault::Request)?;
        vmm2.handle(action).map_err(Fault::Action)
    })
    .await;
    let ok = matches!(outcome, Ok(Ok(_)));
    vmm.metrics()
        .record_api_request(method, resource_of(&path), ok);
    match outcome {
        Ok(Ok(VmmData::Empty)) => {
            log::info!("The request was executed successfully. Status code: 204 No Content.");
            ApiResponse {
                status: 204,
                body: None,
                close: false,
            }
        }
        Ok(Ok(VmmData::Json(v))) => {
            log::info!("The request was executed successfully. Status code: 200 OK.");
            ApiResponse {
                status: 200,
                body: Some(v),
                close: false,
            }
        }
        Ok(Err(Fault::Request(e))) => ApiResponse::fault(400, e.to_string()),
        Ok(Err(Fault::Action(e))) => ApiResponse::fault(e.status(), e.to_string()),
        Err(join) => {
            vmm.metrics().inc("api_server", "sync_response_fails");
            ApiResponse::fault(
                500,
                format!("Internal error while handling the request: {join}"),
            )
        }
    }
}

enum Fault {
    Request(RequestError),
    Action(VmmActionError),
}
