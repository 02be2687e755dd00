//! CPU time a process has used, for a boot measure that a shared machine disturbs less
//! than wall time: under TCG the guest's boot is QEMU's vCPU thread doing work, and
//! when another build takes the cores that work waits (wall time grows) but does not
//! grow itself. Comparing CPU time separates "this setting made the boot cheaper" from
//! "the machine was busier during that run".

use std::path::Path;

/// The CPU time (ns) used so far by the live threads of `pid`: the sum of the first
/// field of every `/proc/<pid>/task/*/schedstat` (ns resolution, unlike the 10 ms
/// ticks of `/proc/<pid>/stat`). `None` when the process is gone.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    cpu_ns_under(&Path::new("/proc").join(pid.to_string()))
}

fn cpu_ns_under(proc_dir: &Path) -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(proc_dir.join("task")).ok()?.flatten() {
        let text = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
        total += parse_schedstat(&text).unwrap_or(0);
    }
    Some(total)
}

/// The on-CPU nanoseconds of a `schedstat` line (`<run ns> <wait ns> <slices>`).
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `(ppid, comm)` from a `/proc/<pid>/stat` line; the command name is in parentheses
/// and may itself contain spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<(u32, String)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm))
}

/// The child processes of `parent` whose command name starts with `prefix`.
pub fn children_named(parent: u32, prefix: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| parse_stat(&t))
                .is_some_and(|(ppid, comm)| ppid == parent && comm.starts_with(prefix))
        })
        .collect()
}

/// The CPU time of the one QEMU this process runs (ec1's engine spawns it as our
/// child), in ms; `None` unless exactly one is found.
pub fn own_qemu_cpu_ms() -> Option<f64> {
    only_child_cpu_ms(std::process::id(), "qemu-system")
}

/// The CPU time (ms) of the one child of `parent` named `prefix`; `None` when there is
/// none or more than one (then no single VM's cost can be told apart).
fn only_child_cpu_ms(parent: u32, prefix: &str) -> Option<f64> {
    match children_named(parent, prefix)[..] {
        [pid] => process_cpu_ns(pid).map(|ns| ns as f64 / 1e6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn proc_lines_are_parsed() {
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123456));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(
            parse_stat("42 (qemu-system-x86) S 7 42 42 0 -1"),
            Some((7, "qemu-system-x86".to_string()))
        );
        assert_eq!(
            parse_stat("9 (a (b) c) R 3 9"),
            Some((3, "a (b) c".to_string()))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_busy_child_is_found_and_its_cpu_time_counted() {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = Instant::now();
        let mut used = 0;
        while start.elapsed() < Duration::from_secs(5) {
            used = process_cpu_ns(pid).unwrap();
            if used > 20_000_000 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(used > 20_000_000, "the busy loop used only {used} ns");
        assert!(children_named(std::process::id(), "sh").contains(&pid));
        assert!(!children_named(std::process::id(), "no-such-program").contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(process_cpu_ns(pid), None);
        // Other tests in this process may run a QEMU of their own at the same time,
        // so the no-child case is checked with a name nothing else uses.
        assert_eq!(
            only_child_cpu_ms(std::process::id(), "no-such-program"),
            None
        );
    }
}
