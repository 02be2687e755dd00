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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_every_phase() {
        let t = BootTimings {
            prepare: Duration::from_millis(1),
            engine_start: Duration::from_millis(30),
            guest_boot: Duration::from_millis(400),
            guest_kernel: Duration::from_millis(350),
            guest_agent_ready: Duration::from_millis(380),
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
