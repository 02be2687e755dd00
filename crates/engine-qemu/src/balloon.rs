//! The virtio-balloon device over QMP, in Firecracker's terms.
//!
//! Firecracker sizes the balloon (`amount_mib`: how much RAM the guest gives back);
//! QEMU's `balloon` command takes the RAM the guest should *keep*. Statistics come from
//! the device's `guest-stats` QOM property, which QEMU refreshes every
//! `guest-stats-polling-interval` seconds; QEMU marks a statistic the guest did not
//! report with -1.

use ec1_engine::{BalloonStats, EngineError};
use qapi::qmp::{balloon, qom_get, qom_set, query_balloon};
use serde_json::Value;

use crate::devices::balloon_qom_path;
use crate::qmp::QmpClient;

const MIB: i64 = 1 << 20;

/// The guest RAM QEMU's `balloon` command must be given for a balloon of `amount_mib`.
pub(crate) fn qemu_target_bytes(mem_mib: u32, amount_mib: u32) -> i64 {
    i64::from(mem_mib.saturating_sub(amount_mib)).max(1) * MIB
}

/// Sets the balloon to `amount_mib`.
pub(crate) fn set_target(
    qmp: &mut QmpClient,
    mem_mib: u32,
    amount_mib: u32,
) -> Result<(), EngineError> {
    qmp.execute(&balloon {
        value: qemu_target_bytes(mem_mib, amount_mib),
    })?;
    Ok(())
}

/// Sets how often the guest reports statistics (0 stops them).
pub(crate) fn set_stats_interval(qmp: &mut QmpClient, secs: u16) -> Result<(), EngineError> {
    qmp.execute(&qom_set {
        path: balloon_qom_path(),
        property: "guest-stats-polling-interval".into(),
        value: Value::from(secs),
    })?;
    Ok(())
}

/// The balloon's sizes and the guest's latest statistics.
pub(crate) fn stats(
    qmp: &mut QmpClient,
    mem_mib: u32,
    target_mib: u32,
) -> Result<BalloonStats, EngineError> {
    let actual = qmp.execute(&query_balloon {})?.actual;
    let guest = qmp.execute(&qom_get {
        path: balloon_qom_path(),
        property: "guest-stats".into(),
    })?;
    Ok(from_qemu(mem_mib, target_mib, actual, &guest))
}

/// Translates QEMU's answers: `actual` is the RAM the guest keeps (bytes), `guest` the
/// `guest-stats` object (`{"stats": {"stat-free-memory": n, ...}, "last-update": t}`).
pub(crate) fn from_qemu(mem_mib: u32, target_mib: u32, actual: i64, guest: &Value) -> BalloonStats {
    let kept_mib = u32::try_from(actual.max(0) / MIB).unwrap_or(u32::MAX);
    let stat = |name: &str| -> Option<u64> {
        guest
            .get("stats")?
            .get(name)?
            .as_i64()
            .and_then(|v| u64::try_from(v).ok())
    };
    BalloonStats {
        target_mib,
        actual_mib: mem_mib.saturating_sub(kept_mib),
        swap_in: stat("stat-swap-in"),
        swap_out: stat("stat-swap-out"),
        major_faults: stat("stat-major-faults"),
        minor_faults: stat("stat-minor-faults"),
        free_memory: stat("stat-free-memory"),
        total_memory: stat("stat-total-memory"),
        available_memory: stat("stat-available-memory"),
        disk_caches: stat("stat-disk-caches"),
        hugetlb_allocations: stat("stat-htlb-pgalloc"),
        hugetlb_failures: stat("stat-htlb-pgfail"),
        oom_kill: stat("stat-oom-kills"),
        alloc_stall: stat("stat-alloc-stalls"),
        async_scan: stat("stat-async-scans"),
        direct_scan: stat("stat-direct-scans"),
        async_reclaim: stat("stat-async-reclaims"),
        direct_reclaim: stat("stat-direct-reclaims"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn firecracker_size_becomes_qemu_target() {
        assert_eq!(qemu_target_bytes(256, 0), 256 * MIB);
        assert_eq!(qemu_target_bytes(256, 64), 192 * MIB);
        // QEMU refuses a target of 0: keep at least 1 MiB.
        assert_eq!(qemu_target_bytes(256, 256), MIB);
        assert_eq!(qemu_target_bytes(256, 300), MIB);
    }

    #[test]
    fn statistics_translate_and_unreported_ones_are_absent() {
        let guest = json!({"stats": {
            "stat-free-memory": 1000, "stat-total-memory": 2000,
            "stat-swap-in": -1, "stat-htlb-pgalloc": 3, "stat-oom-kills": 0
        }, "last-update": 5});
        let s = from_qemu(256, 64, 192 * MIB, &guest);
        assert_eq!(s.target_mib, 64);
        assert_eq!(s.actual_mib, 64);
        assert_eq!(s.free_memory, Some(1000));
        assert_eq!(s.total_memory, Some(2000));
        assert_eq!(s.swap_in, None);
        assert_eq!(s.hugetlb_allocations, Some(3));
        assert_eq!(s.oom_kill, Some(0));
        assert_eq!(s.direct_reclaim, None);
        let s = from_qemu(256, 0, 256 * MIB, &json!({}));
        assert_eq!((s.actual_mib, s.free_memory), (0, None));
    }
}
