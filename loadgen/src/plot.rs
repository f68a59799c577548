//! `--plot FILE.svg`: the run's timeline drawn with plotters' SVG backend.
//! One row per operation, so that series of different sizes never share an
//! axis: on the left its count per second (linear, from 0, its own scale),
//! on the right, for a timed op, its p50, p99 and max latency each second
//! (log scale, µs). Every panel spans the same seconds, so the rows line up.
//! Rates stop before the second the run ended in: its partial counts would
//! be drawn as a dip (latencies, replies after the end included, are all
//! drawn). It draws what [`Timeline::rows`](crate::report::Timeline::rows)
//! and [`Timeline::whole_seconds`](crate::report::Timeline::whole_seconds)
//! give and measures nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Stat;

const WIDTH: u32 = 1_200;
const ROW_HEIGHT: u32 = 300;
const TITLE_HEIGHT: u32 = 40;

type Row = BTreeMap<&'static str, Stat>;
type Rows<'a> = &'a [Row];
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A point of a line: a second and its value.
type Point = (u32, u64);

const RATE_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Reads one percentile of a second.
type Percentile = fn(&Stat) -> u64;
/// The latency lines of a timed op, each with its colour (dark enough to read on white).
const PERCENTILES: [(&str, Percentile, RGBColor); 3] = [
    ("p50", |s| s.p50_us, RGBColor(44, 160, 44)),
    ("p99", |s| s.p99_us, RGBColor(255, 127, 14)),
    ("max", |s| s.max_us, RGBColor(214, 39, 40)),
];

/// Writes the timeline of a run as SVG: `rows` from the timeline's origin,
/// the first `whole` of them whole seconds of the run.
pub(crate) fn write(path: &Path, title: &str, rows: Rows, whole: usize) -> Result<()> {
    let ops: BTreeSet<&'static str> = rows.iter().flat_map(|r| r.keys().copied()).collect();
    let panels = ops.len().max(1);
    let root = SVGBackend::new(path, (WIDTH, ROW_HEIGHT * panels as u32 + TITLE_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| anyhow!("{e}"))?;
    let seconds = (rows.len() as u32).max(1);
    for (area, &op) in root.split_evenly((panels, 1)).iter().zip(&ops) {
        let timed = rows.iter().any(|r| r.get(op).is_some_and(|s| s.max_us > 0));
        if timed {
            let (left, right) = area.split_horizontally(WIDTH / 2);
            rate_panel(&left, op, seconds, &rates(rows, op, whole))?;
            latency_panel(&right, op, seconds, rows)?;
        } else {
            rate_panel(area, op, seconds, &rates(rows, op, whole))?;
        }
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// `op`'s count in each of the `whole` seconds (the second the run ended
/// in, and any after, left out); a second without the op counts 0. A run
/// shorter than a second keeps its one partial second: alone, it is no dip.
fn rates(rows: Rows, op: &str, whole: usize) -> Vec<Point> {
    if !rows.iter().any(|r| r.contains_key(op)) {
        return Vec::new();
    }
    (0..whole.clamp(1, rows.len())).map(|t| (t as u32, rows[t].get(op).map_or(0, |s| s.count))).collect()
}

/// The stretches of consecutive seconds that have a value: a line is
/// broken where the op did not happen rather than drawn down to the axis.
fn stretches(points: impl IntoIterator<Item = (u32, Option<u64>)>) -> Vec<Vec<Point>> {
    let mut out: Vec<Vec<Point>> = Vec::new();
    let mut previous = None;
    for (t, value) in points {
        if let Some(v) = value {
            match out.last_mut() {
                Some(line) if previous == Some(t.wrapping_sub(1)) => line.push((t, v)),
                _ => out.push(vec![(t, v)]),
            }
            previous = Some(t);
        }
    }
    out
}

/// `op`'s count per second, on a linear axis from 0.
fn rate_panel(area: &Area, op: &str, seconds: u32, points: &[Point]) -> Result<()> {
    let top = points.iter().map(|&(_, v)| v).max().unwrap_or(0);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{op} per second"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0..seconds, 0..(top + top / 10).max(10))
        .map_err(|e| anyhow!("{e}"))?;
    mesh(&mut chart, "per second", &|v| short(*v))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), RATE_COLOR.stroke_width(2)))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// `op`'s latency percentiles per second, on a log axis.
fn latency_panel(area: &Area, op: &str, seconds: u32, rows: Rows) -> Result<()> {
    let timed = |r: &Row| r.get(op).filter(|s| s.max_us > 0).copied();
    let top = rows.iter().filter_map(timed).map(|s| s.max_us).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{op} latency"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0..seconds, (1u64..(top * 2).max(10)).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    mesh(&mut chart, "µs", &|v| short(*v))?;
    for (name, get, color) in PERCENTILES {
        let points = rows.iter().enumerate().map(|(t, r)| (t as u32, timed(r).map(|s| get(&s).max(1))));
        for (i, line) in stretches(points).into_iter().enumerate() {
            let series = chart.draw_series(LineSeries::new(line, color.stroke_width(2))).map_err(|e| anyhow!("{e}"))?;
            if i == 0 {
                series
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

fn mesh<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    y_desc: &str,
    y_label: &dyn Fn(&u64) -> String,
) -> Result<()>
where
    X: Ranged<ValueType = u32> + ValueFormatter<u32>,
    Y: Ranged<ValueType = u64> + ValueFormatter<u64>,
{
    chart
        .configure_mesh()
        .x_desc("seconds from the start of the ramp-up")
        .y_desc(y_desc)
        .y_label_formatter(y_label)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

/// `1500` as `1.5k`, `2000000` as `2M`: axis labels that fit.
fn short(v: u64) -> String {
    let (scaled, suffix) = match v {
        0..1_000 => return v.to_string(),
        1_000..1_000_000 => (v as f64 / 1e3, "k"),
        1_000_000..1_000_000_000 => (v as f64 / 1e6, "M"),
        _ => (v as f64 / 1e9, "G"),
    };
    let text = format!("{scaled:.1}");
    format!("{}{suffix}", text.strip_suffix(".0").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(count: u64) -> Stat {
        Stat { count, ..Stat::default() }
    }

    #[test]
    fn the_partial_last_second_of_a_rate_is_left_out() {
        // 1,000 heartbeats a second; the run ended 0.3 s into second 5, a
        // reply came in second 6; no churn in second 2.
        let rows: Vec<Row> = (0..7)
            .map(|t| {
                let mut row = BTreeMap::new();
                if t < 6 {
                    row.insert("heartbeat", count(if t == 5 { 300 } else { 1_000 }));
                }
                if t != 2 {
                    row.insert("notify", count(if t == 6 { 1 } else { 10 }));
                }
                row
            })
            .collect();
        assert_eq!(rates(&rows, "heartbeat", 5), (0..5).map(|t| (t, 1_000)).collect::<Vec<_>>());
        assert_eq!(rates(&rows, "notify", 5), [(0, 10), (1, 10), (2, 0), (3, 10), (4, 10)]);
        assert_eq!(rates(&rows[..1], "heartbeat", 0), [(0, 1_000)], "a run under a second keeps it");
        assert_eq!(rates(&rows[..3], "heartbeat", 5).len(), 3, "no more seconds than recorded");
        assert!(rates(&rows, "never", 5).is_empty());
    }

    #[test]
    fn a_line_breaks_where_the_op_did_not_happen() {
        let points = [(0, Some(5)), (1, Some(6)), (2, None), (3, Some(7)), (5, Some(8))];
        assert_eq!(stretches(points), [vec![(0, 5), (1, 6)], vec![(3, 7)], vec![(5, 8)]]);
        assert!(stretches([(0, None)]).is_empty());
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(
            [0, 999, 1_000, 1_500, 333_333, 2_000_000, 7_300_000_000].map(short),
            ["0", "999", "1k", "1.5k", "333.3k", "2M", "7.3G"]
        );
    }

    #[test]
    fn draws_one_row_per_op_and_latency_beside_a_timed_one() {
        let rows: Vec<Row> = (0..10u64)
            .map(|t| {
                BTreeMap::from([
                    ("heartbeat", count(300_000 + t)),
                    ("notify", Stat { count: 100, p50_us: 200 + t, p99_us: 900, max_us: 5_000 }),
                ])
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        write(&path, "presence gateway, 10 clients", &rows, 9).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in ["heartbeat per second", "notify per second", "notify latency", "p99", "max", "300k"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(!svg.contains("heartbeat latency"), "heartbeats are not timed");
    }
}
