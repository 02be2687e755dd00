//! Progress on stderr while a benchmark runs: a cold boot under TCG takes a second or
//! more, so ten of them with a baseline are half a minute of silence otherwise.
//! stdout is kept for the table.

use crate::fmt::duration_ms;
use std::io::Write;

/// Progress of one benchmark.
pub struct Progress {
    scenario: String,
    quiet: bool,
}

/// The line printed after one run.
pub fn progress_line(
    scenario: &str,
    variant: &str,
    index: usize,
    total: usize,
    warmup: bool,
    ms: f64,
) -> String {
    format!(
        "{scenario} [{variant}] {} {}/{}: {}",
        if warmup { "warm-up" } else { "run" },
        index + 1,
        total,
        duration_ms(ms)
    )
}

impl Progress {
    pub fn new(scenario: &str, quiet: bool) -> Progress {
        Progress {
            scenario: scenario.into(),
            quiet,
        }
    }

    /// Reports run `index` of `total` of `variant`, `ms` long.
    pub fn run(&self, variant: &str, index: usize, total: usize, warmup: bool, ms: f64) {
        self.say(&progress_line(
            &self.scenario,
            variant,
            index,
            total,
            warmup,
            ms,
        ));
    }

    /// Any other line (what is being set up).
    pub fn say(&self, line: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }

    /// Reports every `every`-th of many short runs (exec, API): one line per run
    /// would drown the terminal.
    pub fn many(&self, variant: &str, index: usize, total: usize, every: usize, ms: f64) {
        let every = every.max(1);
        if index % every == every - 1 || index + 1 == total {
            self.run(variant, index, total, false, ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_scenario_variant_and_position() {
        assert_eq!(
            progress_line("cold", "ec1", 2, 10, false, 812.4),
            "cold [ec1] run 3/10: 812 ms"
        );
        assert_eq!(
            progress_line("cold", "qemu", 0, 1, true, 0.5),
            "cold [qemu] warm-up 1/1: 500.0 µs"
        );
        // Quiet progress prints nothing and does not fail.
        let p = Progress::new("x", true);
        p.run("v", 0, 1, false, 1.0);
        p.many("v", 0, 100, 10, 1.0);
        p.say("hello");
    }
}
