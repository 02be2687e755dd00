//! Firecracker's metrics: one JSON object per line, written on `FlushMetrics`, every
//! [`METRICS_PERIOD`] while the guest runs, and at exit, to a file or named pipe opened
//! like Firecracker's (`O_NONBLOCK`, read-write, never created).
//!
//! Counters are deltas since the previous line (Firecracker's `SharedIncMetric`);
//! stored values (start-up and boot times, latencies) persist. Every key of
//! Firecracker's schema is present, zero where ec1 has nothing to count (devices the
//! engine emulates out of ec1's sight, or does not have).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::clock::{now_us, Clock};
use crate::models::MetricsConfig;

/// Firecracker's `WRITE_METRICS_PERIOD_MS`.
pub const METRICS_PERIOD: Duration = Duration::from_secs(60);

/// A field name ending in `*` is a latency aggregate: `{min_us, max_us, sum_us}`.
const SCHEMA: &[(&str, &[&str])] = &[
    (
        "api_server",
        &[
            "process_startup_time_us",
            "process_startup_time_cpu_us",
            "sync_response_fails",
            "sync_vmm_send_timeout_count",
        ],
    ),
    (
        "balloon",
        &[
            "activate_fails",
            "inflate_count",
            "stats_updates_count",
            "stats_update_fails",
            "deflate_count",
            "event_fails",
            "free_page_report_count",
            "free_page_report_freed",
            "free_page_report_fails",
            "free_page_hint_count",
            "free_page_hint_freed",
            "free_page_hint_fails",
        ],
    ),
    (
        "block",
        &[
            "activate_fails",
            "cfg_fails",
            "no_avail_buffer",
            "event_fails",
            "execute_fails",
            "invalid_reqs_count",
            "flush_count",
            "queue_event_count",
            "rate_limiter_event_count",
            "update_count",
            "update_fails",
            "read_bytes",
            "write_bytes",
            "read_count",
            "write_count",
            "read_agg*",
            "write_agg*",
            "rate_limiter_throttled_events",
            "io_engine_throttled_events",
            "remaining_reqs_count",
        ],
    ),
    (
        "deprecated_api",
        &["deprecated_http_api_calls", "deprecated_cmd_line_api_calls"],
    ),
    (
        "entropy",
        &[
            "activate_fails",
            "entropy_event_fails",
            "entropy_event_count",
            "entropy_bytes",
            "host_rng_fails",
            "entropy_rate_limiter_throttled",
            "rate_limiter_event_count",
        ],
    ),
    (
        "get_api_requests",
        &[
            "instance_info_count",
            "machine_cfg_count",
            "mmds_count",
            "vmm_version_count",
        ],
    ),
    (
        "i8042",
        &[
            "error_count",
            "missed_read_count",
            "missed_write_count",
            "read_count",
            "reset_count",
            "write_count",
        ],
    ),
    (
        "latencies_us",
        &[
            "full_create_snapshot",
            "diff_create_snapshot",
            "load_snapshot",
            "pause_vm",
            "resume_vm",
            "vmm_full_create_snapshot",
            "vmm_diff_create_snapshot",
            "vmm_load_snapshot",
            "vmm_pause_vm",
            "vmm_resume_vm",
        ],
    ),
    (
        "logger",
        &[
            "missed_metrics_count",
            "metrics_fails",
            "missed_log_count",
            "log_fails",
        ],
    ),
    (
        "mmds",
        &[
            "rx_accepted",
            "rx_accepted_err",
            "rx_accepted_unusual",
            "rx_bad_eth",
            "rx_count",
            "tx_bytes",
            "tx_count",
            "tx_errors",
            "tx_frames",
            "connections_created",
            "connections_destroyed",
        ],
    ),
    (
        "net",
        &[
            "activate_fails",
            "cfg_fails",
            "mac_address_updates",
            "no_rx_avail_buffer",
            "no_tx_avail_buffer",
            "event_fails",
            "rx_queue_event_count",
            "rx_event_rate_limiter_count",
            "rx_partial_writes",
            "rx_rate_limiter_throttled",
            "rx_tap_event_count",
            "rx_bytes_count",
            "rx_packets_count",
            "rx_fails",
            "rx_count",
            "tap_read_fails",
            "tap_write_fails",
            "tap_write_agg*",
            "tx_bytes_count",
            "tx_malformed_frames",
            "tx_fails",
            "tx_count",
            "tx_packets_count",
            "tx_partial_reads",
            "tx_queue_event_count",
            "tx_rate_limiter_event_count",
            "tx_rate_limiter_throttled",
            "tx_spoofed_mac_count",
            "tx_remaining_reqs_count",
        ],
    ),
    (
        "patch_api_requests",
        &[
            "drive_count",
            "drive_fails",
            "network_count",
            "network_fails",
            "machine_cfg_count",
            "machine_cfg_fails",
            "mmds_count",
            "mmds_fails",
        ],
    ),
    (
        "put_api_requests",
        &[
            "actions_count",
            "actions_fails",
            "boot_source_count",
            "boot_source_fails",
            "drive_count",
            "drive_fails",
            "logger_count",
            "logger_fails",
            "machine_cfg_count",
            "machine_cfg_fails",
            "cpu_cfg_count",
            "cpu_cfg_fails",
            "metrics_count",
            "metrics_fails",
            "network_count",
            "network_fails",
            "mmds_count",
            "mmds_fails",
            "vsock_count",
            "vsock_fails",
            "pmem_count",
            "pmem_fails",
            "serial_count",
            "serial_fails",
            "hotplug_memory_count",
            "hotplug_memory_fails",
        ],
    ),
    (
        "rtc",
        &["error_count", "missed_read_count", "missed_write_count"],
    ),
    ("seccomp", &["num_faults"]),
    (
        "signals",
        &[
            "sigbus", "sigsegv", "sigxfsz", "sigxcpu", "sigpipe", "sighup", "sigill",
        ],
    ),
    (
        "uart",
        &[
            "error_count",
            "flush_count",
            "missed_read_count",
            "missed_write_count",
            "rate_limiter_dropped_bytes",
            "read_count",
            "write_count",
        ],
    ),
    (
        "vcpu",
        &[
            "exit_io_in",
            "exit_io_out",
            "exit_mmio_read",
            "exit_mmio_write",
            "failures",
            "exit_io_in_agg*",
            "exit_io_out_agg*",
            "exit_mmio_read_agg*",
            "exit_mmio_write_agg*",
        ],
    ),
    (
        "vmm",
        &[
            "device_events",
            "panic_count",
            "guest_boot_time_us",
            "guest_boot_time_cpu_us",
        ],
    ),
    (
        "vsock",
        &[
            "activate_fails",
            "cfg_fails",
            "rx_queue_event_fails",
            "tx_queue_event_fails",
            "ev_queue_event_fails",
            "muxer_event_fails",
            "conn_event_fails",
            "rx_queue_event_count",
            "tx_queue_event_count",
            "rx_bytes_count",
            "tx_bytes_count",
            "rx_packets_count",
            "tx_packets_count",
            "conns_added",
            "conns_killed",
            "conns_removed",
            "killq_resync",
            "tx_flush_fails",
            "tx_write_fails",
            "rx_read_fails",
        ],
    ),
];

type Key = (&'static str, &'static str);

#[derive(Debug)]
struct Dest {
    file: File,
    emit_id: bool,
    properties: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Values {
    /// Increments since the last line written.
    counters: BTreeMap<Key, u64>,
    /// Persistent values.
    stores: BTreeMap<Key, u64>,
    /// `MISSED_LOG_COUNT` at the last line, to write a delta.
    missed_log_seen: u64,
    /// The serial rate limiter's dropped bytes at the last line, likewise.
    serial_dropped_seen: u64,
}

/// One instance's metrics.
#[derive(Debug)]
pub struct Metrics {
    instance_id: String,
    dest: Mutex<Option<Dest>>,
    values: Mutex<Values>,
    /// Counted by the engine's serial rate limiter (`uart.rate_limiter_dropped_bytes`).
    serial_dropped: ec1_engine::DroppedBytes,
}

fn lookup(group: &str, name: &str) -> Option<Key> {
    SCHEMA
        .iter()
        .find(|(g, _)| *g == group)
        .and_then(|(g, fields)| {
            fields
                .iter()
                .find(|f| f.trim_end_matches('*') == name)
                .map(|f| (*g, *f))
        })
}

impl Metrics {
    pub fn new(instance_id: impl Into<String>) -> Self {
        Metrics {
            instance_id: instance_id.into(),
            dest: Mutex::new(None),
            values: Mutex::new(Values::default()),
            serial_dropped: Default::default(),
        }
    }

    /// Opens the destination; like Firecracker, only once per process.
    pub fn init(&self, cfg: &MetricsConfig) -> Result<(), String> {
        let mut dest = self.dest.lock().unwrap_or_else(|e| e.into_inner());
        if dest.is_some() {
            return Err("Reinitialization of metrics not allowed.".into());
        }
        let file = std::fs::OpenOptions::new()
            .custom_flags(libc::O_NONBLOCK)
            .read(true)
            .write(true)
            .open(&cfg.metrics_path)
            .map_err(|e| e.to_string())?;
        *dest = Some(Dest {
            file,
            emit_id: cfg.emit_id,
            properties: cfg.properties.clone(),
        });
        Ok(())
    }

    pub fn is_initialized(&self) -> bool {
        self.dest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The counter a serial rate limiter adds its dropped bytes to.
    pub fn serial_dropped(&self) -> ec1_engine::DroppedBytes {
        self.serial_dropped.clone()
    }

    /// Adds one to a counter of Firecracker's schema. Unknown names are a programming
    /// error caught by the tests, and ignored at run time.
    pub fn inc(&self, group: &str, name: &str) {
        if let Some(k) = lookup(group, name) {
            let mut v = self.values.lock().unwrap_or_else(|e| e.into_inner());
            *v.counters.entry(k).or_insert(0) += 1;
        }
    }

    /// Sets a persistent value of Firecracker's schema.
    pub fn store(&self, group: &str, name: &str, value: u64) {
        if let Some(k) = lookup(group, name) {
            let mut v = self.values.lock().unwrap_or_else(|e| e.into_inner());
            v.stores.insert(k, value);
        }
    }

    /// Counts an API request in `{get,put,patch}_api_requests` as Firecracker does: a
    /// `*_count` for every request to a counted resource, a `*_fails` when it failed.
    pub fn record_api_request(&self, method: &str, resource: &str, ok: bool) {
        let (group, name) = match (method, resource) {
            ("GET", "") => ("get_api_requests", "instance_info"),
            ("GET", "machine-config") => ("get_api_requests", "machine_cfg"),
            ("GET", "mmds") => ("get_api_requests", "mmds"),
            ("GET", "version") => ("get_api_requests", "vmm_version"),
            ("PUT", "actions") => ("put_api_requests", "actions"),
            ("PUT", "boot-source") => ("put_api_requests", "boot_source"),
            ("PUT", "drives") => ("put_api_requests", "drive"),
            ("PUT", "logger") => ("put_api_requests", "logger"),
            ("PUT", "machine-config") => ("put_api_requests", "machine_cfg"),
            ("PUT", "cpu-config") => ("put_api_requests", "cpu_cfg"),
            ("PUT", "metrics") => ("put_api_requests", "metrics"),
            ("PUT", "network-interfaces") => ("put_api_requests", "network"),
            ("PUT", "mmds") => ("put_api_requests", "mmds"),
            ("PUT", "vsock") => ("put_api_requests", "vsock"),
            ("PUT", "pmem") => ("put_api_requests", "pmem"),
            ("PUT", "serial") => ("put_api_requests", "serial"),
            ("PUT", "hotplug") => ("put_api_requests", "hotplug_memory"),
            ("PATCH", "drives") => ("patch_api_requests", "drive"),
            ("PATCH", "network-interfaces") => ("patch_api_requests", "network"),
            ("PATCH", "machine-config") => ("patch_api_requests", "machine_cfg"),
            ("PATCH", "mmds") => ("patch_api_requests", "mmds"),
            _ => return,
        };
        if group == "get_api_requests" {
            self.inc(group, &format!("{name}_count"));
            return;
        }
        self.inc(group, &format!("{name}_count"));
        if !ok {
            self.inc(group, &format!("{name}_fails"));
        }
    }

    /// Records the process start-up time from `--start-time-us`/`--start-time-cpu-us`
    /// (Firecracker's `ProcessTimeReporter`).
    pub fn report_process_startup(
        &self,
        start_time_us: Option<u64>,
        start_time_cpu_us: Option<u64>,
        parent_cpu_time_us: Option<u64>,
    ) {
        if let Some(t) = start_time_us {
            self.store(
                "api_server",
                "process_startup_time_us",
                now_us(Clock::Monotonic).saturating_sub(t),
            );
        }
        if let Some(t) = start_time_cpu_us {
            self.store(
                "api_server",
                "process_startup_time_cpu_us",
                now_us(Clock::ProcessCpu).saturating_sub(t) + parent_cpu_time_us.unwrap_or(0),
            );
        }
    }

    /// The next metrics line as JSON; counters restart from zero afterwards.
    pub fn snapshot(&self) -> Value {
        let mut v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let missed = crate::logger::MISSED_LOG_COUNT.load(Ordering::Relaxed);
        let missed_delta = missed.saturating_sub(v.missed_log_seen);
        v.missed_log_seen = missed;
        *v.counters
            .entry(("logger", "missed_log_count"))
            .or_insert(0) += missed_delta;
        let dropped = self.serial_dropped.get();
        let dropped_delta = dropped.saturating_sub(v.serial_dropped_seen);
        v.serial_dropped_seen = dropped;
        *v.counters
            .entry(("uart", "rate_limiter_dropped_bytes"))
            .or_insert(0) += dropped_delta;
        let mut root = Map::new();
        root.insert(
            "utc_timestamp_ms".into(),
            json!(now_us(Clock::Realtime) / 1000),
        );
        for (group, fields) in SCHEMA {
            let mut obj = Map::new();
            for f in *fields {
                let key = (*group, *f);
                let value = v
                    .stores
                    .get(&key)
                    .copied()
                    .or_else(|| v.counters.get(&key).copied())
                    .unwrap_or(0);
                match f.strip_suffix('*') {
                    Some(name) => {
                        obj.insert(
                            name.into(),
                            json!({"min_us": 0, "max_us": 0, "sum_us": value}),
                        );
                    }
                    None => {
                        obj.insert((*f).into(), json!(value));
                    }
                }
            }
            root.insert((*group).into(), Value::Object(obj));
        }
        v.counters.clear();
        // ec1's own group: when each phase of this process last happened, in µs since
        // the process started (see `ec1_trace`); absent phases have not happened.
        let phases: Map<String, Value> = ec1_trace::latest()
            .into_iter()
            .map(|(name, t_us)| (name.to_string(), json!(t_us)))
            .collect();
        root.insert("ec1_phases_us".into(), Value::Object(phases));
        Value::Object(root)
    }

    /// Writes one line. `Ok(false)` when no destination was configured, as Firecracker.
    pub fn write(&self) -> Result<bool, String> {
        let mut dest = self.dest.lock().unwrap_or_else(|e| e.into_inner());
        let Some(d) = dest.as_mut() else {
            return Ok(false);
        };
        let mut line = self.snapshot();
        if let Value::Object(m) = &mut line {
            if d.emit_id {
                m.insert("id".into(), json!(self.instance_id));
            }
            if !d.properties.is_empty() {
                m.insert("properties".into(), json!(d.properties));
            }
        }
        let mut text = line.to_string();
        text.push('\n');
        match d.file.write_all(text.as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) => {
                drop(dest);
                self.inc("logger", "missed_metrics_count");
                Err(format!("Failed to write metrics: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_and_counter_is_present() {
        let m = Metrics::new("i");
        m.record_api_request("PUT", "drives", false);
        m.record_api_request("PUT", "drives", true);
        m.record_api_request("GET", "", true);
        m.record_api_request("PATCH", "mmds", false);
        m.record_api_request("DELETE", "drives", false);
        m.store("vmm", "guest_boot_time_us", 1234);
        let s = m.snapshot();
        assert_eq!(s["put_api_requests"]["drive_count"], 2);
        assert_eq!(s["put_api_requests"]["drive_fails"], 1);
        assert_eq!(s["get_api_requests"]["instance_info_count"], 1);
        assert_eq!(s["patch_api_requests"]["mmds_fails"], 1);
        assert_eq!(s["vmm"]["guest_boot_time_us"], 1234);
        assert_eq!(s["net"]["tx_count"], 0);
        assert_eq!(s["block"]["read_agg"]["sum_us"], 0);
        assert!(s["utc_timestamp_ms"].as_u64().unwrap() > 0);
        ec1_trace::event!("test.phase");
        let s2 = m.snapshot();
        assert!(s2["ec1_phases_us"]["test.phase"].is_u64(), "{s2}");
        for (g, fields) in SCHEMA {
            for f in *fields {
                assert!(
                    s[*g].get(f.trim_end_matches('*')).is_some(),
                    "{g}.{f} missing"
                );
            }
        }
        // Counters are deltas, stored values persist.
        let s = m.snapshot();
        assert_eq!(s["put_api_requests"]["drive_count"], 0);
        assert_eq!(s["vmm"]["guest_boot_time_us"], 1234);
    }

    #[test]
    fn lines_go_to_the_configured_file_once_initialized() {
        let m = Metrics::new("vm-9");
        assert_eq!(m.write(), Ok(false));
        let f = tempfile::NamedTempFile::new().unwrap();
        let cfg = MetricsConfig {
            metrics_path: f.path().into(),
            emit_id: true,
            properties: [("team".to_string(), "x".to_string())].into(),
        };
        m.init(&cfg).unwrap();
        assert!(m.is_initialized());
        assert_eq!(
            m.init(&cfg).unwrap_err(),
            "Reinitialization of metrics not allowed."
        );
        m.record_api_request("PUT", "actions", true);
        assert_eq!(m.write(), Ok(true));
        assert_eq!(m.write(), Ok(true));
        let text = std::fs::read_to_string(f.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["put_api_requests"]["actions_count"], 1);
        assert_eq!(lines[1]["put_api_requests"]["actions_count"], 0);
        assert_eq!(lines[0]["id"], "vm-9");
        assert_eq!(lines[0]["properties"]["team"], "x");
        let e = Metrics::new("x")
            .init(&MetricsConfig {
                metrics_path: "/nonexistent/m".into(),
                emit_id: false,
                properties: Default::default(),
            })
            .unwrap_err();
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn process_startup_times_are_reported() {
        let m = Metrics::new("x");
        let now = now_us(Clock::Monotonic);
        m.report_process_startup(Some(now - 5_000), Some(0), Some(7));
        let s = m.snapshot();
        assert!(s["api_server"]["process_startup_time_us"].as_u64().unwrap() >= 5_000);
        assert!(
            s["api_server"]["process_startup_time_cpu_us"]
                .as_u64()
                .unwrap()
                >= 7
        );
    }
}
