//! `cold`: a fresh VM each run, boot → agent ready → exec `true` → shutdown.
//!
//! The phases add up to the run's wall time. The guest-side split comes from the
//! agent's readiness announcement (guest `CLOCK_BOOTTIME` when the agent started and
//! when it was ready): "guest kernel" is the guest's uptime when the agent's `main`
//! began, "agent init" the agent's own setup. The host's clock splits the rest at the
//! agent's boot signal (a byte on the engine's boot-timer port, written when the agent
//! is ready): before it, "unclocked boot" is guest time the guest's clock did not count
//! (firmware, the kernel's start before its clock runs, timer ticks lost while the
//! jiffies clock was in use); after it, "agent handshake" is the answer crossing the
//! channel. Without a signal the whole remainder is "agent handshake".

use crate::error::BenchError;
use crate::sample::{Run, Stage};
use ec1_client::Command;
use ec1_sandbox::{BootTimings, Sandbox, SandboxOptions};
use std::time::{Duration, Instant};

/// The metric: CPU time QEMU used from its start until the agent was ready (see
/// [`crate::cpu`]: less disturbed by a busy machine than wall time).
pub const QEMU_CPU: &str = "QEMU CPU to ready";

/// Phase names, in order.
pub const PHASES: [&str; 8] = [
    "prepare",
    "engine start",
    "unclocked boot",
    "guest kernel",
    "agent init",
    "agent handshake",
    "exec true",
    "teardown",
];

/// The run for boot timings `t`, an exec of `exec` and a teardown of `teardown`.
/// Guest-side figures are clamped so that no phase is negative when the guest's clock
/// disagrees with the host's.
pub fn phases_of(t: &BootTimings, exec: Duration, teardown: Duration) -> Run {
    let kernel = t.guest_kernel.min(t.guest_boot);
    let ready = t.guest_agent_ready.clamp(kernel, t.guest_boot.max(kernel));
    let signal = t
        .boot_signal
        .unwrap_or(ready)
        .clamp(ready, t.guest_boot.max(ready));
    Run::default()
        .phase(PHASES[0], Stage::Boot, t.prepare)
        .phase(PHASES[1], Stage::Boot, t.engine_start)
        // Drawn before the kernel: most of it is firmware and the kernel's start,
        // before the guest's clock runs.
        .phase(PHASES[2], Stage::Boot, signal - ready)
        .phase(PHASES[3], Stage::Boot, kernel)
        .phase(PHASES[4], Stage::Boot, ready - kernel)
        .phase(PHASES[5], Stage::Boot, t.guest_boot.saturating_sub(signal))
        .phase(PHASES[6], Stage::Work, exec)
        .phase(PHASES[7], Stage::Teardown, teardown)
}

/// One cold run.
pub fn cold_run(opts: &SandboxOptions) -> Result<Run, BenchError> {
    let sb = Sandbox::boot(opts)?;
    let timings = *sb.timings();
    let cpu = crate::cpu::own_qemu_cpu_ms();
    let t = Instant::now();
    let out = sb.client().output(&Command::new("true"));
    let exec = t.elapsed();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Err(BenchError::Guest(format!(
                "`true` failed: {e}\nlast lines of the guest console:\n{}",
                sb.console_tail(20)
            )))
        }
    };
    if !out.status.success() {
        return Err(BenchError::Guest(format!(
            "`true` exited with {}",
            out.status
        )));
    }
    let teardown = sb.shutdown()?;
    let run = phases_of(&timings, exec, teardown);
    Ok(match cpu {
        Some(ms) => run.metric(QEMU_CPU, "ms", ms),
        None => run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn phases_add_up_to_the_wall_time() {
        let t = BootTimings {
            prepare: ms(2),
            engine_start: ms(30),
            guest_boot: ms(700),
            guest_kernel: ms(600),
            guest_agent_ready: ms(650),
            boot_signal: Some(ms(690)),
            total: ms(732),
        };
        let r = phases_of(&t, ms(5), ms(8));
        let names: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, PHASES);
        assert_eq!(r.phase_ms("guest kernel"), Some(600.0));
        assert_eq!(r.phase_ms("agent init"), Some(50.0));
        assert_eq!(r.phase_ms("unclocked boot"), Some(40.0));
        assert_eq!(r.phase_ms("agent handshake"), Some(10.0));
        let no_signal = phases_of(
            &BootTimings {
                boot_signal: None,
                ..t
            },
            ms(5),
            ms(8),
        );
        assert_eq!(no_signal.phase_ms("unclocked boot"), Some(0.0));
        assert_eq!(no_signal.phase_ms("agent handshake"), Some(50.0));
        assert!((r.total_ms() - 745.0).abs() < 1e-9);
        assert!((r.stage_ms(Stage::Boot) - 732.0).abs() < 1e-9);
    }

    #[test]
    fn a_guest_clock_ahead_of_the_host_gives_no_negative_phase() {
        let t = BootTimings {
            guest_boot: ms(500),
            guest_kernel: ms(520),
            guest_agent_ready: ms(560),
            ..Default::default()
        };
        let r = phases_of(&t, ms(1), ms(1));
        assert!(r.phases.iter().all(|p| p.ms >= 0.0), "{r:?}");
        assert_eq!(r.phase_ms("guest kernel"), Some(500.0));
        assert!((r.stage_ms(Stage::Boot) - 500.0).abs() < 1e-9);
    }
}
