//! Facts about the host that shape the QEMU command line.

/// The host CPU frequency in kHz from `/proc/cpuinfo`, or `None` if it cannot be read.
///
/// Under TCG the guest's TSC ticks at the host's TSC rate, and Linux's own TSC
/// calibration fails at random in the emulator (leaving a coarse jiffies clock). Passing
/// the rate as `tsc_early_khz=` avoids the calibration. `cpu MHz` is the TSC rate on the
/// virtual machines this engine targets with TCG; on bare metal with frequency scaling
/// it is the current clock instead (KVM is used there).
pub(crate) fn host_cpu_khz() -> Option<u64> {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| parse_cpu_khz(&s))
}

/// The first `cpu MHz` line of a `/proc/cpuinfo` text, in kHz (rounded).
pub(crate) fn parse_cpu_khz(cpuinfo: &str) -> Option<u64> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key.trim() != "cpu MHz" {
            return None;
        }
        let mhz: f64 = value.trim().parse().ok()?;
        (mhz.is_finite() && mhz >= 1.0).then(|| (mhz * 1000.0).round() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_cpu_mhz() {
        let s = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.424\n\nprocessor\t: 1\ncpu MHz\t\t: 1.0\n";
        assert_eq!(parse_cpu_khz(s), Some(2_445_424));
        assert_eq!(parse_cpu_khz("cpu MHz : 3000\n"), Some(3_000_000));
    }

    #[test]
    fn rejects_missing_or_silly_values() {
        assert_eq!(parse_cpu_khz(""), None);
        assert_eq!(parse_cpu_khz("cpu MHz : fast\n"), None);
        assert_eq!(parse_cpu_khz("cpu MHz : 0\n"), None);
        assert_eq!(parse_cpu_khz("cpu MHz : NaN\n"), None);
        assert_eq!(parse_cpu_khz("cpu MHz\n"), None);
    }

    #[test]
    fn this_host_has_a_frequency() {
        // x86 Linux always reports `cpu MHz`; the engine only runs there.
        assert!(host_cpu_khz().is_some_and(|k| k > 100_000));
    }
}
