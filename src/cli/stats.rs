//! `corralctl stats`: a process's usage history as one sparkline per
//! figure (drawn by ratatui's `Sparkline` into an off-screen buffer, so
//! the bars are the same glyphs `top` uses) with min/avg/max, or the
//! points as JSON.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::{Sparkline, Widget};
use serde::Serialize;

use super::format::{format_bytes, format_duration, format_time_us};
use crate::api::{HistoryRow, UNSET};

/// Width of the chart when stdout is not a terminal.
pub const DEFAULT_WIDTH: u16 = 60;
/// Columns left of the chart: the label.
const LABEL: usize = 8;

/// One point of `stats --json`; null where unknown.
#[derive(Serialize)]
pub struct PointJson {
    at_us: u64,
    cpu_percent: Option<f64>,
    memory_bytes: Option<u64>,
    tasks: Option<u64>,
    io_read_bytes: Option<u64>,
    io_write_bytes: Option<u64>,
}

fn known(v: u64) -> Option<u64> {
    (v != UNSET).then_some(v)
}

pub fn points_json(rows: &[HistoryRow]) -> Vec<PointJson> {
    rows.iter()
        .map(|&(at_us, cpu, mem, tasks, r, w)| PointJson {
            at_us,
            cpu_percent: (cpu >= 0.0).then_some(cpu),
            memory_bytes: known(mem),
            tasks: known(tasks),
            io_read_bytes: known(r),
            io_write_bytes: known(w),
        })
        .collect()
}

/// The chart width that fits a terminal of `columns`.
pub fn chart_width(columns: u16) -> u16 {
    columns.saturating_sub((LABEL + 48) as u16).clamp(10, 200)
}

/// One sparkline of `values` (None: no point), `width` bars wide.
fn sparkline(values: &[Option<u64>], width: u16) -> String {
    let area = Rect::new(0, 0, width, 1);
    let mut buf = Buffer::empty(area);
    let max = values.iter().flatten().copied().max().unwrap_or(0).max(1);
    Sparkline::default()
        .data(values.iter().copied())
        .max(max)
        .render(area, &mut buf);
    let line: String = (0..width)
        .map(|x| buf[(x, 0)].symbol().to_string())
        .collect();
    line.trim_end().to_string()
}

/// min/avg/max of the known values, formatted by `f`.
fn summary(values: &[Option<f64>], f: impl Fn(f64) -> String) -> String {
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    if known.is_empty() {
        return "no data".into();
    }
    let min = known.iter().copied().fold(f64::INFINITY, f64::min);
    let max = known.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let avg = known.iter().sum::<f64>() / known.len() as f64;
    format!("min {}  avg {}  max {}", f(min), f(avg), f(max))
}

/// The `stats` page: a header naming the range and a line per figure.
pub fn page(title: &str, rows: &[HistoryRow], since_us: u64, now_us: u64, width: u16) -> String {
    let mut out = format!("{title}: ");
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        out.push_str(&format!(
            "no samples since {} (history samples running processes every sample_interval)\n",
            format_time_us(since_us.max(1))
        ));
        return out;
    };
    let step = if rows.len() > 1 {
        (last.0 - first.0) / (rows.len() as u64 - 1)
    } else {
        0
    };
    out.push_str(&format!(
        "{} points from {} to {} (~{} each, {} ago)\n",
        rows.len(),
        format_time_us(first.0),
        format_time_us(last.0),
        format_duration(step.div_ceil(1_000_000)),
        format_duration(now_us.saturating_sub(last.0) / 1_000_000),
    ));
    // One column per chunk of about equally spaced points, averaged;
    // min/avg/max are over every point.
    let chunk = rows.len().div_ceil(width.max(1) as usize);
    let avg = |f: &dyn Fn(&HistoryRow) -> Option<f64>| -> (Vec<Option<f64>>, Vec<Option<u64>>) {
        let all: Vec<Option<f64>> = rows.iter().map(f).collect();
        let bars = all
            .chunks(chunk)
            .map(|c| {
                let known: Vec<f64> = c.iter().flatten().copied().collect();
                (!known.is_empty()).then(|| (known.iter().sum::<f64>() / known.len() as f64) as u64)
            })
            .collect();
        (all, bars)
    };
    // CPU in hundredths of a percent: sparklines draw integers.
    let (cpu, cpu_bars) = avg(&|r| (r.1 >= 0.0).then_some(r.1 * 100.0));
    let cpu: Vec<Option<f64>> = cpu.iter().map(|c| c.map(|c| c / 100.0)).collect();
    let (mem, mem_bars) = avg(&|r| known(r.2).map(|n| n as f64));
    let (tasks, task_bars) = avg(&|r| known(r.3).map(|n| n as f64));
    let lines = [
        (
            "cpu",
            sparkline(&cpu_bars, width),
            summary(&cpu, |v| format!("{v:.1}%")),
        ),
        (
            "memory",
            sparkline(&mem_bars, width),
            summary(&mem, |v| format_bytes(v as u64)),
        ),
        (
            "tasks",
            sparkline(&task_bars, width),
            summary(&tasks, |v| format!("{v:.0}")),
        ),
    ];
    for (label, chart, summary) in lines {
        out.push_str(&format!(
            "{label:<LABEL$}{chart:<w$}  {summary}\n",
            w = width as usize
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_charts_each_figure_with_its_range() {
        let s = 1_000_000;
        let rows: Vec<HistoryRow> = (0..10u64)
            .map(|i| {
                (
                    1_000 * s + i * s,
                    i as f64 * 10.0,
                    (i + 1) << 20,
                    2,
                    UNSET,
                    UNSET,
                )
            })
            .collect();
        let text = page("process 1 (web)", &rows, 1_000 * s, 1_010 * s, 20);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("process 1 (web): 10 points"), "{text}");
        assert!(lines[1].starts_with("cpu"), "{text}");
        assert!(
            lines[1].contains('█') && lines[1].contains("min 0.0%  avg 45.0%  max 90.0%"),
            "{text}"
        );
        assert!(
            lines[2].contains("min 1.0M") && lines[2].contains("max 10.0M"),
            "{text}"
        );
        assert!(lines[3].contains("min 2  avg 2  max 2"), "{text}");
        let empty = page("process 1 (web)", &[], 1_000 * s, 1_010 * s, 20);
        assert!(empty.contains("no samples"), "{empty}");
    }

    #[test]
    fn unknown_figures_are_null_in_json() {
        let p = points_json(&[(5, -1.0, UNSET, 3, UNSET, 7)]);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v[0]["cpu_percent"], serde_json::Value::Null);
        assert_eq!(v[0]["memory_bytes"], serde_json::Value::Null);
        assert_eq!(v[0]["tasks"], 3);
        assert_eq!(v[0]["io_write_bytes"], 7);
    }
}
