//! The waterfall: the median run of every variant as horizontal bars on one time axis,
//! one row per phase, each bar starting where the previous phase ended. It shows at a
//! glance where a boot spends its time, which a table of numbers does not.
//!
//! Drawn with plotters' SVG backend only. Without plotters' `ttf` feature text is not
//! rasterised: it is written as SVG `<text>` (the viewer picks the font), so there is no
//! dependency on fontconfig or on fonts being installed.

use crate::error::BenchError;
use crate::fmt::duration_ms;
use crate::report::Report;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// One bar of the waterfall.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// Which variant it belongs to (its colour).
    pub variant: usize,
}

/// The bars of the median run of every variant, each variant starting at 0.
pub fn bars(report: &Report) -> Vec<Bar> {
    let multi = report.variants.len() > 1;
    let mut out = Vec::new();
    for (vi, v) in report.variants.iter().enumerate() {
        let mut t = 0.0;
        for p in &v.median_run().phases {
            let label = if multi {
                format!("{}: {}", v.name, p.name)
            } else {
                p.name.clone()
            };
            out.push(Bar {
                label,
                start_ms: t,
                end_ms: t + p.ms,
                variant: vi,
            });
            t += p.ms;
        }
    }
    out
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Writes the waterfall of `report` to `path` (creating its directory).
pub fn write_waterfall(report: &Report, path: &Path) -> Result<(), BenchError> {
    let bars = bars(report);
    if bars.is_empty() {
        return Err(BenchError::NoData(format!(
            "the waterfall {}",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(BenchError::io(format!("creating {}", dir.display())))?;
    }
    draw(report, &bars, path).map_err(|e| BenchError::Svg {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Draws `bars` into an SVG file at `path`.
fn draw(report: &Report, bars: &[Bar], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let rows = bars.len() as u32;
    let end = bars.iter().map(|b| b.end_ms).fold(0.0, f64::max);
    // Room on the right for the last bar's label.
    let x_max = (end * 1.18).max(1e-3);
    let height = 110 + 28 * rows;
    let longest = bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(10) as u32;
    let label_area = 30 + 7 * longest;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let names: Vec<String> = report.variants.iter().map(|v| v.name.clone()).collect();
    let caption = format!(
        "ec1 bench {}: median run of {} ({} runs)",
        report.scenario,
        names.join(" vs "),
        report.settings.runs
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(label_area)
        // A discrete range includes its end: rows - 1 gives exactly `rows` segments.
        .build_cartesian_2d(0f64..x_max, (0u32..rows - 1).into_segmented())?;
    // Row 0 is drawn at the bottom: put the first phase on the top row.
    let row_of = |i: usize| rows - 1 - i as u32;
    let label_of = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(r) if *r < rows => bars[(rows - 1 - r) as usize].label.clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows as usize)
        .y_label_formatter(&label_of)
        .x_desc("time since the run started (ms)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let r = row_of(i);
        // A zero-length phase still gets a visible sliver.
        let end = b.end_ms.max(b.start_ms + x_max * 0.002);
        let mut bar = Rectangle::new(
            [
                (b.start_ms, SegmentValue::Exact(r)),
                (end, SegmentValue::Exact(r + 1)),
            ],
            COLOURS[b.variant % COLOURS.len()].filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        bar
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        Text::new(
            format!(" {}", duration_ms(b.end_ms - b.start_ms)),
            (b.end_ms.max(b.start_ms), SegmentValue::CenterOf(row_of(i))),
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostInfo;
    use crate::report::tests::{run, sample_report, settings};
    use crate::report::VariantReport;

    #[test]
    fn bars_follow_each_other() {
        let r = sample_report();
        let b = bars(&r);
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].start_ms, b[0].end_ms), (0.0, 90.0));
        assert_eq!(b[1].start_ms, 90.0);
        assert_eq!(b[2].end_ms, 706.0);
        assert_eq!(b[1].label, "guest kernel");
    }

    #[test]
    fn svg_contains_every_phase_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w/cold.svg");
        write_waterfall(&sample_report(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        for name in [
            "engine start",
            "guest kernel",
            "exec true",
            "time since the run started",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.contains("<rect"), "no bars");
    }

    #[test]
    fn variants_are_prefixed_when_several() {
        let a = VariantReport::from_runs("ec1", vec![run(1, 2, 3)]).unwrap();
        let b = VariantReport::from_runs("qemu", vec![run(1, 1, 1)]).unwrap();
        let r = Report::new("cold", HostInfo::default(), settings(), vec![a, b]);
        let bs = bars(&r);
        assert_eq!(bs.len(), 6);
        assert_eq!(bs[3].label, "qemu: engine start");
        assert_eq!(bs[3].variant, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.svg");
        write_waterfall(&r, &path).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("ec1: guest kernel"));
    }

    #[test]
    fn unwritable_paths_are_errors_naming_the_path() {
        let e = write_waterfall(&sample_report(), Path::new("/dev/null/x/w.svg")).unwrap_err();
        assert!(e.to_string().contains("/dev/null/x"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = write_waterfall(&sample_report(), dir.path()).unwrap_err();
        assert!(matches!(e, BenchError::Svg { .. }), "{e}");
    }

    #[test]
    fn empty_report_is_an_error() {
        let r = Report::new("cold", HostInfo::default(), settings(), vec![]);
        let e = write_waterfall(&r, Path::new("/tmp/never.svg")).unwrap_err();
        assert!(matches!(e, BenchError::NoData(_)), "{e}");
    }
}
