//! What the machine was doing: benchmark figures from a shared machine mean little
//! without its load at the time, so every report carries it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub cpus: usize,
    pub kernel: String,
    /// The 1-minute load average when the benchmark started and ended.
    pub load_start: Option<f64>,
    pub load_end: Option<f64>,
}

/// The 1-minute load average from `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The current 1-minute load average.
pub fn load_now() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

impl HostInfo {
    /// This machine, now.
    pub fn probe() -> HostInfo {
        HostInfo {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            load_start: load_now(),
            load_end: None,
        }
    }

    /// A note for the report when the machine was busy: more runnable work than cores
    /// means every figure includes waiting for a CPU.
    pub fn noise_note(&self) -> Option<String> {
        let worst = self
            .load_start
            .into_iter()
            .chain(self.load_end)
            .fold(0.0, f64::max);
        (self.cpus > 0 && worst >= self.cpus as f64 * 0.5).then(|| {
            format!(
                "the machine was busy (1-minute load up to {worst:.2} on {} CPUs): expect noisy timings, compare medians over alternated runs",
                self.cpus
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_is_parsed() {
        assert_eq!(parse_loadavg("1.63 2.13 2.24 3/300 1234\n"), Some(1.63));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("x y"), None);
    }

    #[test]
    fn busy_machines_get_a_note() {
        let mut h = HostInfo {
            cpus: 2,
            load_start: Some(0.2),
            ..Default::default()
        };
        assert!(h.noise_note().is_none());
        h.load_end = Some(1.9);
        assert!(h.noise_note().unwrap().contains("1.90 on 2 CPUs"));
        let p = HostInfo::probe();
        assert!(p.cpus >= 1 && !p.kernel.is_empty() && p.load_start.is_some());
    }
}
