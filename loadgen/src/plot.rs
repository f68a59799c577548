//! `--plot FILE.svg`: the run's timeline drawn with plotters' SVG backend.
//! One panel of operations per second (every op, log scale), then one panel
//! per timed op with its p50, p99 and max latency each second (log scale,
//! µs). It draws what [`Timeline::rows`](crate::report::Timeline::rows)
//! gives and measures nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use crate::report::Stat;

const WIDTH: u32 = 1_000;
const PANEL_HEIGHT: u32 = 320;

type Row = BTreeMap<&'static str, Stat>;
type Rows<'a> = &'a [Row];
/// A line's label, and its value in a second (`None`: the op did not happen).
type Line = (String, Box<dyn Fn(&Row) -> Option<u64>>);
/// Line colours, dark enough to read on white.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 23, 23),
];
/// Reads one percentile of a second.
type Percentile = fn(&Stat) -> u64;
/// The latency lines of a timed op.
const PERCENTILES: [(&str, Percentile); 3] = [("p50", |s| s.p50_us), ("p99", |s| s.p99_us), ("max", |s| s.max_us)];

/// One panel: a log-scale chart of `lines` (label, value of a second) over the run.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    rows: Rows,
    lines: &[Line],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let top = rows.iter().flat_map(|r| lines.iter().filter_map(|(_, f)| f(r))).max().unwrap_or(1);
    let x = 0u32..(rows.len() as u32).max(1);
    let y = (1u64..(top * 2).max(10)).log_scale();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(|e| anyhow!("{e}"))?;
    mesh(&mut chart, y_desc)?;
    for (i, (label, value)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // A second without the op (or a value of 0) is a gap on a log scale: drawn at 1.
        let points = (0..rows.len()).map(|t| (t as u32, value(&rows[t]).unwrap_or(0).max(1)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn mesh<DB: DrawingBackend, X, Y>(chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>, y_desc: &str) -> Result<()>
where
    X: Ranged<ValueType = u32> + ValueFormatter<u32>,
    Y: Ranged<ValueType = u64> + ValueFormatter<u64>,
    DB::ErrorType: 'static,
{
    chart
        .configure_mesh()
        .x_desc("seconds from the start of the ramp-up")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

/// Writes the timeline of a run as SVG.
pub(crate) fn write(path: &Path, title: &str, rows: Rows) -> Result<()> {
    let ops: BTreeSet<&'static str> = rows.iter().flat_map(|r| r.keys().copied()).collect();
    let timed: Vec<&'static str> =
        ops.iter().copied().filter(|op| rows.iter().any(|r| r.get(op).is_some_and(|s| s.max_us > 0))).collect();
    let panels = 1 + timed.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT * panels + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels as usize, 1));
    let per_s: Vec<Line> =
        ops.iter().map(|&op| (op.to_owned(), Box::new(move |r: &Row| r.get(op).map(|s| s.count)) as _)).collect();
    panel(&areas[0], "operations per second", "per second", rows, &per_s)?;
    for (area, &op) in areas[1..].iter().zip(&timed) {
        let lines: Vec<Line> = PERCENTILES
            .into_iter()
            .map(|(name, get)| {
                (name.to_owned(), Box::new(move |r: &Row| r.get(op).filter(|s| s.max_us > 0).map(get)) as _)
            })
            .collect();
        panel(area, &format!("{op} latency"), "µs", rows, &lines)?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_op_and_one_panel_per_timed_op() {
        let rows: Vec<Row> = (0..10u64)
            .map(|t| {
                BTreeMap::from([
                    ("heartbeat", Stat { count: 1_000 + t, ..Stat::default() }),
                    ("notify", Stat { count: 100, p50_us: 200 + t, p99_us: 900, max_us: 5_000 }),
                ])
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        write(&path, "presence gateway, 10 clients", &rows).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in ["operations per second", "notify latency", "heartbeat", "p99", "max"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(!svg.contains("heartbeat latency"), "heartbeats are not timed");
    }
}
