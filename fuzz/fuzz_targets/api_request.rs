//! What an API client sends: a method, a path and a body, routed and parsed into an
//! action as the server does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // method \n path \n body
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let method = std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or("PUT");
    let path = std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or("/");
    let body = parts.next().filter(|b| !b.is_empty());
    let _ = ec1_api::router::parse_request(method, path, body);
});
