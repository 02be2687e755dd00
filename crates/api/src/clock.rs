//! The clocks Firecracker measures with: `CLOCK_MONOTONIC` for `--start-time-us` and
//! the boot timer, `CLOCK_PROCESS_CPUTIME_ID` for `--start-time-cpu-us`.

/// Which clock to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Monotonic,
    ProcessCpu,
    Realtime,
}

/// Microseconds on `clock`.
pub fn now_us(clock: Clock) -> u64 {
    let id = match clock {
        Clock::Monotonic => libc::CLOCK_MONOTONIC,
        Clock::ProcessCpu => libc::CLOCK_PROCESS_CPUTIME_ID,
        Clock::Realtime => libc::CLOCK_REALTIME,
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and `id` a clock every Linux supports;
    // clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Local wall-clock time as Firecracker's logger prints it:
/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn`.
pub fn local_time_string() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as above; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    // SAFETY: `tm` is plain old data, valid when zeroed.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe
    // variant and writes only into `tm`.
    let ok = !unsafe { libc::localtime_r(&ts.tv_sec, &mut tm) }.is_null();
    if !ok {
        return format!("{}.{:09}", ts.tv_sec, ts.tv_nsec);
    }
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ts.tv_nsec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance_and_time_is_formatted() {
        let a = now_us(Clock::Monotonic);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now_us(Clock::Monotonic) >= a + 2_000);
        assert!(now_us(Clock::ProcessCpu) > 0);
        assert!(now_us(Clock::Realtime) > 1_600_000_000_000_000);
        let t = local_time_string();
        // 2026-11-25T18:25:23.123456789
        assert_eq!(t.len(), 29, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert_eq!(&t[19..20], ".");
    }
}
