//! A minimal HTTP/1.1 client over a Unix socket, for timing Firecracker's API.
//!
//! A full client (hyper) would add its own runtime and buffering to every measured
//! request; this one writes a request with one `write` and reads the response with a
//! buffered reader, so the latency measured is the server's plus one socket round trip.
//! It keeps the connection alive, as Firecracker clients do. It understands
//! `Content-Length` and chunked bodies, and bodiless 1xx/204/304 responses.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting to the API socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the server closed the connection before a complete response")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
}

/// A response: status, headers (names lower-cased) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The bytes of one request.
pub fn encode_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

fn read_line<R: BufRead>(r: &mut R, line: &mut String) -> Result<(), HttpError> {
    line.clear();
    let n = r.read_line(line).map_err(|source| HttpError::Io {
        context: "reading the response",
        source,
    })?;
    if n == 0 {
        return Err(HttpError::Closed);
    }
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(())
}

fn read_exact<R: Read>(r: &mut R, n: usize) -> Result<Vec<u8>, HttpError> {
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => HttpError::Closed,
        _ => HttpError::Io {
            context: "reading the response body",
            source: e,
        },
    })?;
    Ok(buf)
}

/// Reads one response from `r`.
pub fn read_response<R: BufRead>(r: &mut R) -> Result<HttpResponse, HttpError> {
    let mut line = String::new();
    read_line(r, &mut line)?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        read_line(r, &mut line)?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line {line:?}")))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            read_line(r, &mut line)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    read_line(r, &mut line)?;
                    if line.is_empty() {
                        break;
                    }
                }
                break;
            }
            resp.body.extend(read_exact(r, size)?);
            read_line(r, &mut line)?;
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| HttpError::Malformed(format!("content-length {len:?}")))?;
        resp.body = read_exact(r, len)?;
    } else {
        r.read_to_end(&mut resp.body)
            .map_err(|source| HttpError::Io {
                context: "reading the response body",
                source,
            })?;
    }
    Ok(resp)
}

/// One keep-alive connection to an API socket.
pub struct HttpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl HttpClient {
    pub fn connect(path: &Path) -> Result<HttpClient, HttpError> {
        let stream = UnixStream::connect(path).map_err(|source| HttpError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let io = |source| HttpError::Io {
            context: "setting up the API connection",
            source,
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(HttpClient {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Connects, retrying while the socket does not exist or refuses, for up to
    /// `timeout` (a VMM creates its socket a few ms after it starts). Polls every
    /// 200 µs: the wait is itself a measured phase.
    pub fn connect_when_up(path: &Path, timeout: Duration) -> Result<HttpClient, HttpError> {
        let start = Instant::now();
        loop {
            match HttpClient::connect(path) {
                Ok(c) => return Ok(c),
                Err(HttpError::Connect { source, .. })
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) && start.elapsed() < timeout =>
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one request and reads its response, whatever its status.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, HttpError> {
        self.writer
            .write_all(&encode_request(method, path, body))
            .map_err(|source| HttpError::Io {
                context: "sending the request",
                source,
            })?;
        read_response(&mut self.reader)
    }

    /// Like [`HttpClient::request`], but a non-2xx status is an error carrying the
    /// server's message.
    pub fn expect_ok(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, HttpError> {
        let r = self.request(method, path, body)?;
        if r.is_success() {
            Ok(r)
        } else {
            Err(HttpError::Status {
                method: method.into(),
                path: path.into(),
                status: r.status,
                body: String::from_utf8_lossy(&r.body).into_owned(),
            })
        }
    }
}

/// A stand-in API server's side of the exchange, for tests: one request's line and
/// body from a keep-alive connection.
#[cfg(test)]
pub(crate) fn read_test_request(
    r: &mut std::io::BufReader<std::os::unix::net::UnixStream>,
) -> (String, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("Content-Length: ") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (line.trim_end().to_string(), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn requests_are_encoded_with_length_only_when_there_is_a_body() {
        let g = String::from_utf8(encode_request("GET", "/", None)).unwrap();
        assert_eq!(
            g,
            "GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"
        );
        let p = String::from_utf8(encode_request("PUT", "/x", Some(b"{}"))).unwrap();
        assert!(p.contains("Content-Length: 2\r\n\r\n{}"), "{p}");
    }

    #[test]
    fn responses_with_length_chunks_or_nothing() {
        let mut r = &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: x\r\n\r\n{}HTTP/1.1 204 No Content\r\n\r\n"[..];
        let a = read_response(&mut r).unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"{}"[..]));
        assert_eq!(a.header("SERVER"), Some("x"));
        let b = read_response(&mut r).unwrap();
        assert_eq!(b.status, 204);
        assert!(b.body.is_empty() && b.is_success());
        let mut c = &b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n"[..];
        let c = read_response(&mut c).unwrap();
        assert_eq!(c.body, b"abcde");
        assert!(!c.is_success());
        let mut d = &b"HTTP/1.0 200 OK\r\n\r\nuntil close"[..];
        assert_eq!(read_response(&mut d).unwrap().body, b"until close");
    }

    #[test]
    fn broken_responses_are_errors() {
        for bad in [
            &b""[..],
            b"SMTP 200 OK\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut r = bad;
            assert!(
                read_response(&mut r).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A real socket: one keep-alive connection carries several requests, and a
    /// non-2xx status becomes an error with the server's message.
    #[test]
    fn client_talks_to_a_local_server() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut seen = Vec::new();
            for i in 0..3 {
                let (line, _body) = read_test_request(&mut r);
                seen.push(line);
                let resp = match i {
                    0 => {
                        "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"state\":\"x\"}".to_string()
                    }
                    1 => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
                    _ => "HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\n\r\nnope!!".to_string(),
                };
                w.write_all(resp.as_bytes()).unwrap();
            }
            seen
        });
        let mut c = HttpClient::connect_when_up(&sock, Duration::from_secs(5)).unwrap();
        assert_eq!(
            c.expect_ok("GET", "/", None).unwrap().body,
            br#"{"state":"x"}"#
        );
        assert_eq!(
            c.expect_ok("PUT", "/machine-config", Some(b"{}"))
                .unwrap()
                .status,
            204
        );
        let e = c.expect_ok("PUT", "/actions", Some(b"{}")).unwrap_err();
        assert!(e.to_string().contains("answered 400: nope!!"), "{e}");
        assert_eq!(
            server.join().unwrap(),
            [
                "GET / HTTP/1.1",
                "PUT /machine-config HTTP/1.1",
                "PUT /actions HTTP/1.1"
            ]
        );
    }

    #[test]
    fn connecting_to_nothing_times_out_with_the_path() {
        let e = HttpClient::connect_when_up(
            Path::new("/nonexistent/api.sock"),
            Duration::from_millis(5),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("/nonexistent/api.sock"), "{e}");
    }
}
