//! A metadata service reachable from the guest over one of its network interfaces
//! (Firecracker's MMDS): the engine (or its frame relay) carries the guest's HTTP
//! requests to the service's IPv4 address and hands each parsed request to a
//! [`MetadataService`], which the API layer implements on top of its data store.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// One HTTP request from the guest, as the service needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataRequest {
    /// The method, as sent (`GET`, `PUT`, ...).
    pub method: String,
    /// The request target, as sent (a path, or an absolute URI).
    pub target: String,
    /// The headers, names as sent.
    pub headers: Vec<(String, String)>,
}

impl MetadataRequest {
    /// The value of header `name` (compared case-insensitively), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_of(&[name]).map(|(_, v)| v)
    }

    /// The first header named like any of `names` (compared case-insensitively), as
    /// (name as sent, value): for headers with aliases, and errors that quote the name.
    pub fn header_of(&self, names: &[&str]) -> Option<(&str, &str)> {
        self.headers
            .iter()
            .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub status: u16,
    /// `Content-Type`, if the body has one.
    pub content_type: Option<&'static str>,
    /// `Allow` (for 405).
    pub allow: Option<&'static str>,
    pub body: Vec<u8>,
}

impl MetadataResponse {
    /// A `text/plain` answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        MetadataResponse {
            status,
            content_type: Some("text/plain"),
            allow: None,
            body: body.into().into_bytes(),
        }
    }
}

/// Answers the guest's metadata requests. Called from the thread that carries the
/// interface's frames: it must not block for long.
pub trait MetadataService: Send + Sync {
    fn answer(&self, req: &MetadataRequest) -> MetadataResponse;
}

/// The metadata service an interface serves, and where: frames of the guest for
/// `ipv4` (ARP, and TCP to port 80) go to `service` instead of the host.
#[derive(Clone)]
pub struct MetadataSpec {
    pub ipv4: Ipv4Addr,
    pub service: Arc<dyn MetadataService>,
    /// The service's settings as its owner wrote them (opaque to the engine): saved
    /// with a snapshot and given back by [`crate::Engine::snapshot_metadata`], so that
    /// a restored guest gets the same service again.
    pub settings: String,
}

impl fmt::Debug for MetadataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataSpec")
            .field("ipv4", &self.ipv4)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Equal when at the same address and backed by the same service object.
impl PartialEq for MetadataSpec {
    fn eq(&self, other: &Self) -> bool {
        self.ipv4 == other.ipv4
            && self.settings == other.settings
            && Arc::ptr_eq(&self.service, &other.service)
    }
}

impl Eq for MetadataSpec {}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl MetadataService for Echo {
        fn answer(&self, req: &MetadataRequest) -> MetadataResponse {
            MetadataResponse::text(200, req.target.clone())
        }
    }

    #[test]
    fn headers_are_case_insensitive_and_specs_compare_by_service() {
        let r = MetadataRequest {
            method: "GET".into(),
            target: "/a".into(),
            headers: vec![("X-Metadata-Token".into(), "t".into())],
        };
        assert_eq!(r.header("x-metadata-token"), Some("t"));
        assert_eq!(r.header("accept"), None);
        assert_eq!(
            r.header_of(&["x-aws-ec2-metadata-token", "x-metadata-token"]),
            Some(("X-Metadata-Token", "t"))
        );
        let s: Arc<dyn MetadataService> = Arc::new(Echo);
        let a = MetadataSpec {
            ipv4: Ipv4Addr::new(169, 254, 169, 254),
            service: s.clone(),
            settings: String::new(),
        };
        let b = MetadataSpec {
            ipv4: a.ipv4,
            service: s,
            settings: String::new(),
        };
        assert_eq!(a, b);
        let c = MetadataSpec {
            ipv4: a.ipv4,
            service: Arc::new(Echo),
            settings: String::new(),
        };
        assert_ne!(a, c);
        assert_eq!(a.service.answer(&r).body, b"/a");
        assert!(format!("{a:?}").contains("169.254.169.254"));
    }
}
