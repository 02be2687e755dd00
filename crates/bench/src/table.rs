//! The text table `ec1 bench` prints: per phase median, p90, min, max and share; then
//! the totals, the rates, the bottleneck sentence and the ratios between variants.

use crate::fmt::duration_ms;
use crate::report::{Report, VariantReport};
use std::fmt::Write;

const NAME_WIDTH: usize = 24;

fn variant_table(out: &mut String, v: &VariantReport, warmup: usize) {
    let _ = writeln!(
        out,
        "{} ({} runs, {} warm-up)",
        v.name,
        v.runs.len(),
        warmup
    );
    let _ = writeln!(
        out,
        "  {:<NAME_WIDTH$} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "phase", "median", "p90", "min", "max", "share"
    );
    for p in &v.phases {
        let _ = writeln!(
            out,
            "  {:<NAME_WIDTH$} {:>10} {:>10} {:>10} {:>10} {:>5.1}%",
            p.name,
            duration_ms(p.ms.median),
            duration_ms(p.ms.p90),
            duration_ms(p.ms.min),
            duration_ms(p.ms.max),
            p.share * 100.0
        );
    }
    let t = &v.total_ms;
    let _ = writeln!(
        out,
        "  {:<NAME_WIDTH$} {:>10} {:>10} {:>10} {:>10}  (p99 {})",
        "total",
        duration_ms(t.median),
        duration_ms(t.p90),
        duration_ms(t.min),
        duration_ms(t.max),
        duration_ms(t.p99)
    );
    for m in &v.metrics {
        let s = &m.stats;
        let _ = if m.unit == "ms" {
            // Durations read best as durations (µs where they are small).
            writeln!(
                out,
                "  {:<NAME_WIDTH$} {:>10} {:>10} {:>10} {:>10}",
                m.name,
                duration_ms(s.median),
                duration_ms(s.p90),
                duration_ms(s.min),
                duration_ms(s.max)
            )
        } else {
            writeln!(
                out,
                "  {:<NAME_WIDTH$} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {}",
                m.name, s.median, s.p90, s.min, s.max, m.unit
            )
        };
    }
    if let Some(b) = &v.bottleneck {
        let _ = writeln!(out, "  {}", b.sentence);
    }
}

/// The whole report as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ec1 bench {}", r.scenario);
    for v in &r.variants {
        out.push('\n');
        variant_table(&mut out, v, r.settings.warmup);
    }
    if !r.comparisons.is_empty() {
        let c0 = &r.comparisons[0];
        let _ = writeln!(
            out,
            "\n{} vs {}{}",
            c0.a,
            c0.b,
            if r.settings.alternated {
                " (runs alternated A B B A ...)"
            } else {
                ""
            }
        );
        for c in &r.comparisons {
            let _ = writeln!(
                out,
                "  {:<NAME_WIDTH$} {:>10} vs {:>10}  ×{:.2}  ({}{})",
                c.what,
                duration_ms(c.a_median_ms),
                duration_ms(c.b_median_ms),
                c.ratio,
                if c.difference_ms >= 0.0 { "+" } else { "" },
                duration_ms(c.difference_ms)
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "\nnote: {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostInfo;
    use crate::report::tests::{run, sample_report, settings};
    use crate::report::{Report, VariantReport};
    use crate::sample::Stage;
    use std::time::Duration;

    #[test]
    fn table_lists_phases_totals_and_bottleneck() {
        let mut r = sample_report();
        r.notes.push("busy machine".into());
        let t = render(&r);
        assert!(t.starts_with("ec1 bench cold\n"), "{t}");
        assert!(t.contains("ec1 (3 runs, 0 warm-up)"), "{t}");
        let line = t
            .lines()
            .find(|l| l.trim_start().starts_with("guest kernel"))
            .unwrap();
        assert!(line.contains("610 ms") && line.contains("94.3%"), "{line}");
        assert!(t.contains("total"), "{t}");
        assert!(t.contains("Bottleneck: guest kernel"), "{t}");
        assert!(t.contains("note: busy machine"), "{t}");
    }

    #[test]
    fn comparisons_and_rates_are_printed() {
        let a = VariantReport::from_runs(
            "ec1",
            vec![run(30, 600, 5).metric("throughput", "MiB/s", 90.0)],
        )
        .unwrap();
        let b = VariantReport::from_runs(
            "qemu",
            vec![crate::sample::Run::default()
                .phase(
                    "spawn → agent ready",
                    Stage::Boot,
                    Duration::from_millis(500),
                )
                .phase("exec true", Stage::Work, Duration::from_millis(5))
                .metric("throughput", "MiB/s", 100.0)],
        )
        .unwrap();
        let mut s = settings();
        s.alternated = true;
        let r = Report::new("cold", HostInfo::default(), s, vec![a, b]);
        let t = render(&r);
        assert!(
            t.contains("ec1 vs qemu (runs alternated A B B A ...)"),
            "{t}"
        );
        assert!(t.contains("×1.26"), "{t}");
        assert!(t.contains("(+130 ms)"), "{t}");
        assert!(t.contains("MiB/s"), "{t}");
    }
}
