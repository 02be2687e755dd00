//! `api --compare BIN`: ec1's Firecracker API beside another Firecracker-compatible
//! binary, alternated, one fresh process per run. Each run measures the process's
//! start-up (spawn to the first `GET /` answered), the median latency of `GET /` and
//! `PUT /machine-config` on one keep-alive connection, requests per second with
//! [`CLIENTS`] concurrent connections, the server's CPU time per request during that,
//! and its resident memory once up and idle.

use crate::cpu::process_cpu_ns;
use crate::error::BenchError;
use crate::http::HttpClient;
use crate::sample::{Run, Stage};
use crate::scenarios::api::MACHINE_CONFIG;
use crate::vmm_process::VmmProcess;
use std::path::Path;
use std::time::{Duration, Instant};

/// Requests per latency sample (the run reports their median).
pub const LATENCY_SAMPLES: usize = 200;
/// Concurrent clients for the throughput measure.
pub const CLIENTS: usize = 8;
/// How long the concurrent clients send.
const LOAD_FOR: Duration = Duration::from_millis(300);

/// The median of `v` (sorted in place), 0 when empty.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn latency(
    c: &mut HttpClient,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Duration, BenchError> {
    let mut v = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        c.expect_ok(method, path, body)?;
        v.push(t.elapsed());
    }
    Ok(median(&mut v))
}

/// `CLIENTS` connections sending `GET /` for [`LOAD_FOR`]: requests answered.
fn load(sock: &Path) -> Result<u64, BenchError> {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| HttpClient::connect(sock))
        .collect::<Result<_, _>>()?;
    let until = Instant::now() + LOAD_FOR;
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || -> Result<u64, BenchError> {
                let mut n = 0;
                while Instant::now() < until {
                    c.expect_ok("GET", "/", None)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t
            .join()
            .map_err(|_| BenchError::Guest("a load client panicked".into()))??;
    }
    Ok(total)
}

/// One fresh process of `bin`, measured.
pub fn api_compare_run(bin: &Path) -> Result<Run, BenchError> {
    let t0 = Instant::now();
    let mut vmm = VmmProcess::start(bin, "\u{0}never\u{0}")?;
    let mut c = vmm.connect_api(Duration::from_secs(10))?;
    c.expect_ok("GET", "/", None)?;
    let up = t0.elapsed();
    let pid = vmm.pid();
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_vm_rss(&s))
        .unwrap_or(0);
    let get = latency(&mut c, "GET", "/", None)?;
    let put = latency(&mut c, "PUT", "/machine-config", Some(MACHINE_CONFIG))?;
    let cpu0 = process_cpu_ns(pid).unwrap_or(0);
    let t = Instant::now();
    let served = load(&vmm.api_socket())?;
    let elapsed = t.elapsed();
    let cpu = process_cpu_ns(pid).unwrap_or(0).saturating_sub(cpu0);
    drop(c);
    let stopped = vmm.stop()?;
    // In ms, so that the comparison puts each beside the other binary's with a ratio.
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Run::default()
        .phase("start-up to first GET /", Stage::Boot, up)
        .phase("stop", Stage::Teardown, stopped)
        .metric("GET / latency (median)", "ms", ms(get))
        .metric("PUT /machine-config latency (median)", "ms", ms(put))
        .metric(
            &format!("requests/s, {CLIENTS} clients"),
            "",
            served as f64 / elapsed.as_secs_f64(),
        )
        .metric(
            "server CPU per request",
            "ms",
            cpu as f64 / 1e6 / served.max(1) as f64,
        )
        .metric("idle RSS", "MiB", rss_kib as f64 / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_rss_are_read() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(&mut []), Duration::ZERO);
        let status = "Name:\tec1\nVmPeak:\t 9000 kB\nVmRSS:\t    5632 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5632));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }
}
