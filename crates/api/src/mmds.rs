//! The MMDS data store: a JSON object kept by the VMM, replaced by `PUT /mmds`, merged
//! by `PATCH /mmds` (RFC 7396 JSON merge patch, as Firecracker) and bounded by
//! `--mmds-size-limit` (413 past it, leaving the store unchanged).
//!
//! [`MmdsService`] answers the guest's HTTP requests from that store (the engine
//! carries them from the guest's network interface), with Firecracker's V1/V2 rules.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ec1_engine::{MetadataRequest, MetadataResponse, MetadataService};
use serde_json::Value;

use crate::error::VmmActionError;
use crate::models::{MmdsConfig, MmdsVersion};

/// Firecracker's default MMDS address.
pub const DEFAULT_MMDS_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Session token lifetimes allowed, in seconds (Firecracker's bounds).
pub const MIN_TOKEN_TTL_SECONDS: u32 = 1;
pub const MAX_TOKEN_TTL_SECONDS: u32 = 21600;
/// The path a session token is requested at.
pub const PATH_TO_TOKEN: &str = "/latest/api/token";
/// Live tokens kept at most; past it the one closest to expiry is forgotten.
const MAX_TOKENS: usize = 4096;

/// The store and its size limit in bytes of serialized JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct MmdsStore {
    data: Option<Value>,
    limit: usize,
}

fn too_big() -> VmmActionError {
    VmmActionError::MmdsLimitExceeded("The MMDS patch request doesn't fit.".into())
}

fn must_be_object(v: &Value) -> Result<(), VmmActionError> {
    if v.is_object() {
        Ok(())
    } else {
        Err(VmmActionError::Mmds(
            "The MMDS data store must be a JSON object.".into(),
        ))
    }
}

/// RFC 7396: `null` removes a key, objects merge recursively, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl MmdsStore {
    pub fn new(limit: usize) -> Self {
        MmdsStore { data: None, limit }
    }

    /// The value at JSON pointer `pointer` (`""` is the whole store), if any.
    pub fn lookup(&self, pointer: &str) -> Option<Value> {
        match &self.data {
            Some(d) => d.pointer(pointer).cloned(),
            None if pointer.is_empty() => Some(Value::Object(Default::default())),
            None => None,
        }
    }

    fn fits(&self, v: &Value) -> bool {
        serde_json::to_string(v).is_ok_and(|s| s.len() <= self.limit)
    }

    /// The contents; `{}` before anything was stored, as Firecracker answers.
    pub fn get(&self) -> Value {
        self.data
            .clone()
            .unwrap_or_else(|| Value::Object(Default::default()))
    }

    pub fn put(&mut self, v: Value) -> Result<(), VmmActionError> {
        must_be_object(&v)?;
        if !self.fits(&v) {
            return Err(too_big());
        }
        self.data = Some(v);
        Ok(())
    }

    pub fn patch(&mut self, patch: Value) -> Result<(), VmmActionError> {
        must_be_object(&patch)?;
        let Some(current) = &self.data else {
            return Err(VmmActionError::Mmds(
                "The MMDS data store is not initialized.".into(),
            ));
        };
        let mut next = current.clone();
        merge_patch(&mut next, &patch);
        if !self.fits(&next) {
            return Err(too_big());
        }
        self.data = Some(next);
        Ok(())
    }
}

const X_METADATA_TOKEN: [&str; 2] = ["x-metadata-token", "x-aws-ec2-metadata-token"];
const X_METADATA_TOKEN_TTL: [&str; 2] = [
    "x-metadata-token-ttl-seconds",
    "x-aws-ec2-metadata-token-ttl-seconds",
];
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The absolute path of a request target (an origin-form path or an absolute URI),
/// without its query, with runs of `/` collapsed as Firecracker does.
fn request_path(target: &str) -> String {
    let path = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("", |j| &rest[j..])
        }
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Firecracker's IMDS format: a string as is; an object as its keys, one a line,
/// objects' keys with a trailing `/`. Other values have no IMDS form.
fn imds_format(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => Some(
            m.iter()
                .map(|(k, v)| {
                    if v.is_object() {
                        format!("{k}/")
                    } else {
                        k.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// Fills `buf` from the OS's random source.
fn os_random(buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: writes at most `buf.len()` bytes into a live buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A session token of 32 random bytes from `fill`, or `None` if the random source
/// failed: the token then fails closed (none is issued) rather than falling back to
/// something guessable.
fn random_token(mut fill: impl FnMut(&mut [u8]) -> std::io::Result<usize>) -> Option<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        match fill(&mut bytes[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::error!("MMDS: no session token: the OS random source failed: {e}");
                return None;
            }
        }
    }
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The guest's MMDS: Firecracker's request handling over the shared [`MmdsStore`].
pub struct MmdsService {
    store: Arc<Mutex<MmdsStore>>,
    version: MmdsVersion,
    imds_compat: bool,
    /// Session tokens and when they expire.
    tokens: Mutex<HashMap<String, Instant>>,
}

impl MmdsService {
    pub fn new(store: Arc<Mutex<MmdsStore>>, cfg: &MmdsConfig) -> MmdsService {
        MmdsService {
            store,
            version: cfg.version,
            imds_compat: cfg.imds_compat,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn token_is_valid(&self, token: &str, now: Instant) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).is_some_and(|exp| *exp > now)
    }

    fn new_token(&self, ttl: u32, now: Instant) -> Option<String> {
        let token = random_token(os_random)?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, exp| *exp > now);
        }
        if tokens.len() >= MAX_TOKENS {
            if let Some(k) = tokens
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(k, _)| k.clone())
            {
                tokens.remove(&k);
            }
        }
        tokens.insert(token.clone(), now + Duration::from_secs(u64::from(ttl)));
        Some(token)
    }

    /// Answers `req` as of `now`.
    pub fn answer_at(&self, req: &MetadataRequest, now: Instant) -> MetadataResponse {
        let path = request_path(&req.target);
        if path.is_empty() {
            return MetadataResponse::text(400, "Invalid URI.");
        }
        match req.method.as_str() {
            "GET" => self.get(req, &path, now),
            "PUT" => self.put_token(req, &path, now),
            _ => MetadataResponse {
                allow: Some("GET, PUT"),
                ..MetadataResponse::text(405, "Not allowed HTTP method.")
            },
        }
    }

    fn get(&self, req: &MetadataRequest, path: &str, now: Instant) -> MetadataResponse {
        // V2 requires a live session token. V1 answers with or without one, even an
        // invalid one (as Firecracker: it only counts it in its metrics).
        if self.version == MmdsVersion::V2 {
            match req.header_of(&X_METADATA_TOKEN) {
                None => {
                    return MetadataResponse::text(
                        401,
                        "No MMDS token provided. Use `X-metadata-token` header to specify the session token.",
                    )
                }
                Some((_, token)) if !self.token_is_valid(token, now) => {
                    return MetadataResponse::text(401, "MMDS token not valid.");
                }
                Some(_) => {}
            }
        }
        let pointer = path.strip_suffix('/').unwrap_or(path);
        let value = self
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(pointer);
        let Some(value) = value else {
            return MetadataResponse::text(404, format!("Resource not found: {path}."));
        };
        let json = !self.imds_compat
            && req
                .header("accept")
                .is_some_and(|a| a.contains("application/json"));
        if json {
            return MetadataResponse {
                content_type: Some("application/json"),
                ..MetadataResponse::text(200, value.to_string())
            };
        }
        match imds_format(&value) {
            Some(body) => MetadataResponse::text(200, body),
            None => MetadataResponse::text(
                501,
                "Cannot retrieve value. The value has an unsupported type.",
            ),
        }
    }

    fn put_token(&self, req: &MetadataRequest, path: &str, now: Instant) -> MetadataResponse {
        if let Some((name, _)) = req.header_of(&[X_FORWARDED_FOR]) {
            return MetadataResponse::text(
                400,
                format!("Invalid header. Reason: Unsupported header name. Key: {name}"),
            );
        }
        if path.strip_suffix('/').unwrap_or(path) != PATH_TO_TOKEN {
            return MetadataResponse::text(404, format!("Resource not found: {path}."));
        }
        let Some((name, value)) = req.header_of(&X_METADATA_TOKEN_TTL) else {
            return MetadataResponse::text(
                400,
                "Token time to live value not found. Use `X-metadata-token-ttl-seconds` header to specify the token's lifetime.",
            );
        };
        let Ok(ttl) = value.parse::<u32>() else {
            return MetadataResponse::text(
                400,
                format!("Invalid header. Reason: Invalid value. Key:{name}; Value:{value}"),
            );
        };
        if !(MIN_TOKEN_TTL_SECONDS..=MAX_TOKEN_TTL_SECONDS).contains(&ttl) {
            return MetadataResponse::text(
                400,
                format!(
                    "Invalid time to live value provided for token: {ttl}. Please provide a value between {MIN_TOKEN_TTL_SECONDS} and {MAX_TOKEN_TTL_SECONDS}."
                ),
            );
        }
        match self.new_token(ttl, now) {
            Some(token) => MetadataResponse::text(200, token),
            None => MetadataResponse::text(500, "Failed to generate a session token.".to_string()),
        }
    }
}

impl MetadataService for MmdsService {
    fn answer(&self, req: &MetadataRequest) -> MetadataResponse {
        self.answer_at(req, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn put_patch_get() {
        let mut s = MmdsStore::new(1000);
        assert_eq!(s.get(), json!({}));
        assert!(matches!(
            s.patch(json!({"a":1})),
            Err(VmmActionError::Mmds(_))
        ));
        s.put(json!({"a": {"b": 1, "c": 2}, "d": 3})).unwrap();
        s.patch(json!({"a": {"b": null, "e": [1]}, "d": null, "f": "x"}))
            .unwrap();
        assert_eq!(s.get(), json!({"a": {"c": 2, "e": [1]}, "f": "x"}));
        assert!(s.put(json!([1])).is_err());
        assert!(s.patch(json!("x")).is_err());
    }

    #[test]
    fn the_limit_is_enforced_and_leaves_the_store_alone() {
        let mut s = MmdsStore::new(20);
        s.put(json!({"k": "v"})).unwrap();
        let e = s.put(json!({"k": "x".repeat(30)})).unwrap_err();
        assert_eq!(e.status(), 413);
        assert_eq!(
            e.to_string(),
            "MMDS limit exceeded error: The MMDS patch request doesn't fit."
        );
        assert_eq!(
            s.patch(json!({"k2": "y".repeat(30)})).unwrap_err().status(),
            413
        );
        assert_eq!(s.get(), json!({"k": "v"}));
    }

    fn service(version: MmdsVersion, imds_compat: bool) -> MmdsService {
        let mut store = MmdsStore::new(100_000);
        store
            .put(json!({
                "latest": {"meta-data": {"ami-id": "ami-12345678", "reservation-id": "r-1",
                                         "network": {"mac": "06:00"}}},
                "age": 43,
                "name": "box"
            }))
            .unwrap();
        MmdsService::new(
            Arc::new(Mutex::new(store)),
            &MmdsConfig {
                version,
                network_interfaces: vec!["eth0".into()],
                ipv4_address: None,
                imds_compat,
            },
        )
    }

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> MetadataRequest {
        MetadataRequest {
            method: method.into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// `PUT /latest/api/token` with `X-metadata-token-ttl-seconds: ttl`.
    fn ask_token(s: &MmdsService, ttl: &str, now: Instant) -> MetadataResponse {
        s.answer_at(
            &req(
                "PUT",
                PATH_TO_TOKEN,
                &[("X-metadata-token-ttl-seconds", ttl)],
            ),
            now,
        )
    }

    fn body(r: &MetadataResponse) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    #[test]
    fn v1_answers_without_a_token_in_both_formats() {
        let s = service(MmdsVersion::V1, false);
        let now = Instant::now();
        let r = s.answer_at(&req("GET", "/latest/meta-data/", &[]), now);
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, Some("text/plain"));
        assert_eq!(body(&r), "ami-id\nnetwork/\nreservation-id");
        let r = s.answer_at(&req("GET", "/latest/meta-data/ami-id", &[]), now);
        assert_eq!(body(&r), "ami-12345678");
        // Absolute URIs and doubled slashes, as Firecracker takes them.
        let r = s.answer_at(
            &req(
                "GET",
                "http://169.254.169.254//latest//meta-data/ami-id",
                &[],
            ),
            now,
        );
        assert_eq!(body(&r), "ami-12345678");
        let r = s.answer_at(
            &req(
                "GET",
                "/latest/meta-data/network",
                &[("Accept", "application/json")],
            ),
            now,
        );
        assert_eq!(r.content_type, Some("application/json"));
        assert_eq!(body(&r), r#"{"mac":"06:00"}"#);
        let r = s.answer_at(&req("GET", "/age", &[("accept", "application/json")]), now);
        assert_eq!(body(&r), "43");
        // A number has no IMDS form.
        let r = s.answer_at(&req("GET", "/age", &[]), now);
        assert_eq!(r.status, 501);
        let r = s.answer_at(&req("GET", "/", &[]), now);
        assert_eq!(body(&r), "age\nlatest/\nname");
        let r = s.answer_at(&req("GET", "/nope/x", &[]), now);
        assert_eq!(r.status, 404);
        assert_eq!(body(&r), "Resource not found: /nope/x.");
        assert_eq!(s.answer_at(&req("GET", "http://h", &[]), now).status, 400);
    }

    #[test]
    fn v1_takes_tokens_but_does_not_need_valid_ones() {
        let s = service(MmdsVersion::V1, false);
        let now = Instant::now();
        let t = ask_token(&s, "60", now);
        assert_eq!(t.status, 200);
        let token = body(&t);
        let r = s.answer_at(&req("GET", "/name", &[("X-metadata-token", &token)]), now);
        assert_eq!((r.status, body(&r)), (200, "box".into()));
        let r = s.answer_at(&req("GET", "/name", &[("X-metadata-token", "bogus")]), now);
        assert_eq!((r.status, body(&r)), (200, "box".into()));
    }

    #[test]
    fn v2_needs_a_live_token() {
        let s = service(MmdsVersion::V2, false);
        let now = Instant::now();
        let r = s.answer_at(&req("GET", "/name", &[]), now);
        assert_eq!(r.status, 401);
        assert!(
            body(&r).starts_with("No MMDS token provided."),
            "{}",
            body(&r)
        );
        let t = ask_token(&s, "2", now);
        assert_eq!((t.status, t.content_type), (200, Some("text/plain")));
        let token = body(&t);
        assert_eq!(token.len(), 64);
        let get = |token: &str, at: Instant| {
            s.answer_at(&req("GET", "/name", &[("X-metadata-token", token)]), at)
        };
        assert_eq!(body(&get(&token, now)), "box");
        assert_eq!(get(&token, now + Duration::from_millis(1999)).status, 200);
        let r = get(&token, now + Duration::from_secs(2));
        assert_eq!((r.status, body(&r)), (401, "MMDS token not valid.".into()));
        assert_eq!(get("bogus", now).status, 401);
        // The EC2 header names work too.
        let t2 = s.answer_at(
            &req(
                "PUT",
                "http://169.254.169.254/latest/api/token",
                &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
            ),
            now,
        );
        assert_eq!(t2.status, 200);
        let r = s.answer_at(
            &req("GET", "/name", &[("X-aws-ec2-metadata-token", &body(&t2))]),
            now,
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn token_requests_are_checked() {
        let s = service(MmdsVersion::V2, false);
        let now = Instant::now();
        let put = |path: &str, h: &[(&str, &str)]| s.answer_at(&req("PUT", path, h), now);
        let r = put("/latest/api/token", &[]);
        assert_eq!(r.status, 400);
        assert!(body(&r).starts_with("Token time to live value not found."));
        for bad in ["0", "21601"] {
            let r = ask_token(&s, bad, now);
            assert_eq!(r.status, 400);
            assert_eq!(
                body(&r),
                format!("Invalid time to live value provided for token: {bad}. Please provide a value between 1 and 21600.")
            );
        }
        let r = ask_token(&s, "x", now);
        assert_eq!(r.status, 400);
        let r = put(
            "/latest/api/token",
            &[
                ("X-metadata-token-ttl-seconds", "60"),
                ("X-Forwarded-For", "1.2.3.4"),
            ],
        );
        assert_eq!(r.status, 400);
        assert!(body(&r).contains("X-Forwarded-For"), "{}", body(&r));
        let r = put(
            "/latest/api/toke",
            &[("X-metadata-token-ttl-seconds", "60")],
        );
        assert_eq!(r.status, 404);
        assert_eq!(body(&r), "Resource not found: /latest/api/toke.");
        for m in ["POST", "PATCH", "DELETE", "HEAD"] {
            let r = s.answer_at(&req(m, "/name", &[]), now);
            assert_eq!(r.status, 405, "{m}");
            assert_eq!(r.allow, Some("GET, PUT"));
        }
    }

    #[test]
    fn imds_compat_ignores_accept_and_the_store_is_shared() {
        let s = service(MmdsVersion::V1, true);
        let now = Instant::now();
        let r = s.answer_at(
            &req(
                "GET",
                "/latest/meta-data/network",
                &[("Accept", "application/json")],
            ),
            now,
        );
        assert_eq!(
            (r.content_type, body(&r)),
            (Some("text/plain"), "mac".into())
        );
        s.store
            .lock()
            .unwrap()
            .patch(json!({"name": "renamed"}))
            .unwrap();
        assert_eq!(
            body(&s.answer_at(&req("GET", "/name", &[]), now)),
            "renamed"
        );
        // An empty store lists nothing and finds nothing.
        let empty = MmdsService::new(
            Arc::new(Mutex::new(MmdsStore::new(10))),
            &MmdsConfig {
                version: MmdsVersion::V1,
                network_interfaces: vec![],
                ipv4_address: None,
                imds_compat: false,
            },
        );
        assert_eq!(empty.answer_at(&req("GET", "/", &[]), now).status, 200);
        assert_eq!(empty.answer_at(&req("GET", "/a", &[]), now).status, 404);
    }

    #[test]
    fn tokens_fail_closed_without_randomness() {
        let t = random_token(os_random).unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(random_token(os_random).unwrap(), t);
        assert_eq!(
            random_token(|_| Err(std::io::Error::from_raw_os_error(libc::ENOSYS))),
            None
        );
        assert_eq!(random_token(|_| Ok(0)), None);
        let mut calls = 0;
        let partial = random_token(|b| {
            calls += 1;
            if calls == 1 {
                return Err(std::io::Error::from_raw_os_error(libc::EINTR));
            }
            b[0] = 1;
            Ok(1)
        });
        assert_eq!(
            partial.unwrap(),
            "01".repeat(32),
            "interrupted and short reads go on"
        );
    }

    #[test]
    fn tokens_are_bounded() {
        let s = service(MmdsVersion::V2, false);
        let now = Instant::now();
        for i in 0..MAX_TOKENS + 10 {
            s.new_token(1 + (i % 100) as u32, now);
        }
        assert_eq!(s.tokens.lock().unwrap().len(), MAX_TOKENS);
    }
}
