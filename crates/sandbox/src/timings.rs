use std::fmt;
use std::time::Duration;

/// Where a sandbox's boot time went, measured on the host's monotonic clock, plus the
/// guest's own view from the agent's readiness announcement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootTimings {
    /// Kernel lookup and agent initramfs (cached after the first run).
    pub prepare: Duration,
    /// Engine start: process spawn, control channel, vCPUs released.
    pub engine_start: Duration,
    /// From vCPUs released to the agent's readiness announcement read by the host.
    pub guest_boot: Duration,
    /// Guest uptime when the agent's `main` began (the kernel's share of `guest_boot`).
    pub guest_kernel: Duration,
    /// Guest uptime when the agent was ready.
    pub guest_agent_ready: Duration,
    /// From vCPUs released to the host seeing the agent's boot signal (sent when it is
    /// ready, just before it answers the host): the guest's boot on the host's clock.
    /// `None` if the signal had not arrived when the agent's answer did.
    pub boot_signal: Option<Duration>,
    /// Sum of the host-side phases.
    pub total: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for BootTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "boot {:.1} ms = prepare {:.1} + engine start {:.1} + guest {:.1} (kernel {:.1}, agent ready at {:.1} guest uptime)",
            ms(self.total),
            ms(self.prepare),
            ms(self.engine_start),
            ms(self.guest_boot),
            ms(self.guest_kernel),
            ms(self.guest_agent_ready)
        )
    }
}

/// How a sandbox came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPath {
    /// A cold boot of the kernel; `why` says why no template was used, if one was
    /// asked for.
    Cold { why: Option<String> },
    /// Restored from the boot template `key`; `pool` says whether a pool served it.
    Template { key: String, pool: PoolSeen },
    /// A warm clone of the template `key`, claimed from a running `ec1 pool`.
    Pool { key: String },
}

impl fmt::Display for BootPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootPath::Cold { why: None } => write!(f, "cold"),
            BootPath::Cold { why: Some(w) } => write!(f, "cold ({w})"),
            BootPath::Template { key, pool } => {
                write!(f, "template {}", &key[..key.len().min(12)])?;
                match pool {
                    PoolSeen::None => Ok(()),
                    PoolSeen::Empty => write!(f, " (its pool had no warm clone ready)"),
                }
            }
            BootPath::Pool { key } => write!(f, "pool of template {}", &key[..key.len().min(12)]),
        }
    }
}

/// Whether a warm pool served a template's configuration when a start restored the
/// template itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSeen {
    /// No pool runs for it.
    None,
    /// A pool runs but had no warm clone ready.
    Empty,
}

/// The phases of a start from a boot template, on the host's monotonic clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreTimings {
    /// Finding the template: the key's inputs (a stat per file) and the engine.
    pub lookup: Duration,
    /// Building the template, when this start had to: its cold boot and snapshot.
    pub build: Option<TemplateBuild>,
    /// The engine's restore: QEMU spawned, device state loaded, vCPUs running.
    pub restore: Duration,
    /// Reconnecting to the restored agent: hello, and its readiness announcement.
    pub reconnect: Duration,
    /// Making the clone distinct: entropy, clock, host name.
    pub refresh: Duration,
    /// How far the refresh stepped the guest's clock, in ns (positive: forward).
    pub clock_step_ns: i64,
    /// The whole start.
    pub total: Duration,
}

/// What building a template cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TemplateBuild {
    /// The cold boot of the template's guest to its agent's readiness.
    pub boot: Duration,
    /// Pausing and snapshotting it, stopping it, moving the template into place.
    pub snapshot: Duration,
}

impl fmt::Display for RestoreTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = &self.build {
            write!(
                f,
                "template built first: cold boot {:.1} ms + snapshot {:.1} ms; ",
                ms(b.boot),
                ms(b.snapshot)
            )?;
        }
        write!(
            f,
            "start {:.1} ms = lookup {:.1} + restore {:.1} + agent reconnect {:.1} + refresh {:.1} (clock stepped {:.1} s)",
            ms(self.total),
            ms(self.lookup),
            ms(self.restore),
            ms(self.reconnect),
            ms(self.refresh),
            self.clock_step_ns as f64 / 1e9
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_restore_phases_display() {
        assert_eq!(BootPath::Cold { why: None }.to_string(), "cold");
        assert_eq!(
            BootPath::Cold {
                why: Some("asked".into())
            }
            .to_string(),
            "cold (asked)"
        );
        assert_eq!(
            BootPath::Template {
                key: "0123456789abcdef".into(),
                pool: PoolSeen::None,
            }
            .to_string(),
            "template 0123456789ab"
        );
        assert_eq!(
            BootPath::Template {
                key: "k".into(),
                pool: PoolSeen::Empty,
            }
            .to_string(),
            "template k (its pool had no warm clone ready)"
        );
        assert_eq!(
            BootPath::Pool { key: "abc".into() }.to_string(),
            "pool of template abc"
        );
        let mut r = RestoreTimings {
            lookup: Duration::from_millis(1),
            restore: Duration::from_millis(30),
            reconnect: Duration::from_millis(5),
            refresh: Duration::from_millis(2),
            clock_step_ns: 3_000_000_000,
            total: Duration::from_millis(38),
            build: None,
        };
        let s = r.to_string();
        assert!(
            s.starts_with("start 38.0 ms = lookup 1.0 + restore 30.0 + agent reconnect 5.0"),
            "{s}"
        );
        assert!(s.contains("clock stepped 3.0 s"), "{s}");
        r.build = Some(TemplateBuild {
            boot: Duration::from_millis(900),
            snapshot: Duration::from_millis(20),
        });
        assert!(r
            .to_string()
            .starts_with("template built first: cold boot 900.0 ms"));
    }

    #[test]
    fn display_names_every_phase() {
        let t = BootTimings {
            prepare: Duration::from_millis(1),
            engine_start: Duration::from_millis(30),
            guest_boot: Duration::from_millis(400),
            guest_kernel: Duration::from_millis(350),
            guest_agent_ready: Duration::from_millis(380),
            boot_signal: None,
            total: Duration::from_millis(431),
        };
        let s = t.to_string();
        assert!(
            s.starts_with("boot 431.0 ms = prepare 1.0 + engine start 30.0 + guest 400.0"),
            "{s}"
        );
        assert!(s.contains("kernel 350.0"), "{s}");
    }
}
