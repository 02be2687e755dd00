//! `api`: Firecracker API latency of a live `ec1 --api-sock` process, on one
//! keep-alive connection: `GET /` (instance info: routing and JSON only) and
//! `PUT /machine-config` (a body to parse and validate, state to update).

use crate::error::BenchError;
use crate::http::HttpClient;
use crate::progress::Progress;
use crate::sample::{Run, Stage};
use crate::schedule::repeat;
use crate::vmm_process::VmmProcess;
use std::path::Path;
use std::time::{Duration, Instant};

/// The machine configuration the benchmark PUTs (valid before InstanceStart).
pub const MACHINE_CONFIG: &[u8] = br#"{"vcpu_count": 1, "mem_size_mib": 128}"#;

/// One GET and one PUT.
pub fn api_round(client: &mut HttpClient) -> Result<Run, BenchError> {
    let t = Instant::now();
    client.expect_ok("GET", "/", None)?;
    let get = t.elapsed();
    let t = Instant::now();
    client.expect_ok("PUT", "/machine-config", Some(MACHINE_CONFIG))?;
    let put = t.elapsed();
    Ok(Run::default().phase("GET /", Stage::Work, get).phase(
        "PUT /machine-config",
        Stage::Work,
        put,
    ))
}

/// Starts `ec1` with an API socket and measures `runs` rounds after `warmup`. Returns
/// the runs and how long the socket took to come up.
pub fn api_runs(
    ec1: &Path,
    progress: &Progress,
    warmup: usize,
    runs: usize,
) -> Result<(Vec<Run>, Duration), BenchError> {
    let t = Instant::now();
    let mut vmm = VmmProcess::start(ec1, "\u{0}never\u{0}")?;
    let mut client = vmm.connect_api(Duration::from_secs(10))?;
    let up = t.elapsed();
    let mut f = || api_round(&mut client);
    let out = repeat(
        progress,
        ("ec1 --api-sock", &mut f),
        warmup,
        runs,
        (runs / 10).max(1),
    )?;
    drop(client);
    vmm.stop()?;
    Ok((out, up))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A stand-in API server: answers GET with 200 and a body, PUT with 204, after
    /// checking the PUT's body is the machine configuration.
    #[test]
    fn a_round_is_one_get_and_one_put() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut bodies = Vec::new();
            for _ in 0..2 {
                let (line, body) = crate::http::read_test_request(&mut r);
                bodies.push(body);
                let resp: &[u8] = if line.starts_with("GET / ") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
                } else {
                    b"HTTP/1.1 204 No Content\r\n\r\n"
                };
                w.write_all(resp).unwrap();
            }
            bodies
        });
        let mut c = HttpClient::connect(&sock).unwrap();
        let run = api_round(&mut c).unwrap();
        let names: Vec<&str> = run.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["GET /", "PUT /machine-config"]);
        assert!(run.phases.iter().all(|p| p.ms > 0.0));
        let bodies = server.join().unwrap();
        assert!(bodies[0].is_empty());
        assert_eq!(bodies[1], MACHINE_CONFIG);
        // The server is gone: the next round fails instead of measuring nothing.
        assert!(api_round(&mut c).is_err());
    }
}
