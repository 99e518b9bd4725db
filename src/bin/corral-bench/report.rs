//! Figures and their summaries (median, p99, min, max, n), the aligned
//! text table, the Markdown table and the JSON document. Pure formatting:
//! nothing here measures anything.

use serde::Serialize;

/// Summary of one figure's samples. `p99` is the nearest-rank 99th
/// percentile (with 200 samples: the 198th smallest); `median` averages
/// the two middle samples when n is even.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Summary {
            n,
            median,
            p99: percentile(&s, 99.0),
            min: s[0],
            max: s[n - 1],
            mean: s.iter().sum::<f64>() / n as f64,
        })
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// A design target and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub text: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Section of the issue: "1 start latency", …
    pub section: String,
    /// Stable key for scripts: "start.reply".
    pub key: String,
    pub label: String,
    pub unit: String,
    pub summary: Option<Summary>,
    pub target: Option<Target>,
    pub note: String,
    /// Drawn in the latency chart.
    pub chart: bool,
    pub samples: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub label: String,
    /// numerator median / denominator median.
    pub value: f64,
    pub numerator: String,
    pub denominator: String,
    pub target: Option<Target>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: serde_json::Value,
    pub settings: serde_json::Value,
    pub figures: Vec<Figure>,
    pub ratios: Vec<Ratio>,
    pub notes: Vec<String>,
    pub duration_s: f64,
}

impl Report {
    /// Adds a figure from samples; returns its summary.
    pub fn add(
        &mut self,
        section: &str,
        key: &str,
        label: &str,
        unit: &str,
        samples: Vec<f64>,
    ) -> Option<Summary> {
        let summary = Summary::of(&samples);
        self.figures.push(Figure {
            section: section.into(),
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            summary,
            target: None,
            note: String::new(),
            chart: false,
            samples,
        });
        summary
    }

    /// Adds a latency figure (ms) that is also drawn in the chart.
    pub fn add_latency(&mut self, section: &str, key: &str, label: &str, ms: Vec<f64>) {
        self.add(section, key, label, "ms", ms);
        if let Some(f) = self.figures.last_mut() {
            f.chart = true;
        }
    }

    pub fn figure(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }

    /// Sets the target of figure `key`: met when `pick(summary) <= limit`.
    pub fn target(&mut self, key: &str, text: &str, pick: fn(&Summary) -> f64, limit: f64) {
        if let Some(f) = self.figures.iter_mut().find(|f| f.key == key) {
            if let Some(s) = &f.summary {
                f.target = Some(Target {
                    text: text.into(),
                    met: pick(s) <= limit,
                });
            }
        }
    }

    pub fn note_on(&mut self, key: &str, note: &str) {
        if let Some(f) = self.figures.iter_mut().find(|f| f.key == key) {
            if !f.note.is_empty() {
                f.note.push_str("; ");
            }
            f.note.push_str(note);
        }
    }

    /// Ratio of two figures' medians, if both exist.
    pub fn ratio(&mut self, label: &str, num: &str, den: &str, target: Option<(&str, f64)>) {
        let m = |k: &str| self.figure(k).and_then(|f| f.summary).map(|s| s.median);
        if let (Some(a), Some(b)) = (m(num), m(den)) {
            if b > 0.0 {
                let value = a / b;
                self.ratios.push(Ratio {
                    label: label.into(),
                    value,
                    numerator: num.into(),
                    denominator: den.into(),
                    target: target.map(|(text, limit)| Target {
                        text: text.into(),
                        met: value <= limit,
                    }),
                });
            }
        }
    }

    fn rows(&self) -> Vec<[String; 9]> {
        let mut rows = vec![];
        for f in &self.figures {
            let (n, med, p99, min, max) = match &f.summary {
                Some(s) => (
                    s.n.to_string(),
                    num(s.median),
                    if s.n > 1 { num(s.p99) } else { "-".into() },
                    if s.n > 1 { num(s.min) } else { "-".into() },
                    if s.n > 1 { num(s.max) } else { "-".into() },
                ),
                None => ("0".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            rows.push([
                f.section.clone(),
                f.label.clone(),
                n,
                med,
                p99,
                min,
                max,
                f.unit.clone(),
                target_text(&f.target),
            ]);
        }
        for r in &self.ratios {
            rows.push([
                "ratios".into(),
                r.label.clone(),
                "-".into(),
                format!("{:.2}", r.value),
                "-".into(),
                "-".into(),
                "-".into(),
                "x".into(),
                target_text(&r.target),
            ]);
        }
        rows
    }

    /// The aligned text table printed at the end of a run.
    pub fn table(&self) -> String {
        let head = [
            "", "figure", "n", "median", "p99", "min", "max", "unit", "target",
        ];
        let rows = self.rows();
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: [&str; 9]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = w[i] - c.chars().count();
                if (2..=6).contains(&i) {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                }
                s.push_str("  ");
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(head);
        let mut last = String::new();
        for r in &rows {
            let sec = if r[0] == last { "" } else { r[0].as_str() };
            let cells = [
                sec,
                r[1].as_str(),
                r[2].as_str(),
                r[3].as_str(),
                r[4].as_str(),
                r[5].as_str(),
                r[6].as_str(),
                r[7].as_str(),
                r[8].as_str(),
            ];
            out.push_str(&line(cells));
            last = r[0].clone();
        }
        out
    }

    /// The figures' notes and the run's notes, one per line.
    pub fn notes_text(&self) -> String {
        let mut out = String::new();
        for f in self.figures.iter().filter(|f| !f.note.is_empty()) {
            out.push_str(&format!("- {}: {}\n", f.label, f.note));
        }
        for n in &self.notes {
            out.push_str(&format!("- {n}\n"));
        }
        out
    }

    /// The same table in Markdown, for BENCHMARK.md.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| | figure | n | median | p99 | min | max | unit | target |\n|---|---|--:|--:|--:|--:|--:|---|---|\n",
        );
        let mut last = String::new();
        for r in self.rows() {
            let sec = if r[0] == last {
                String::new()
            } else {
                r[0].clone()
            };
            out.push_str(&format!(
                "| {sec} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]
            ));
            last = r[0].clone();
        }
        out
    }
}

fn target_text(t: &Option<Target>) -> String {
    match t {
        Some(t) => format!("{} {}", t.text, if t.met { "met" } else { "MISSED" }),
        None => String::new(),
    }
}

/// Three significant digits, no exponent.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        let s: Vec<f64> = (1..=200).map(f64::from).collect();
        let sum = Summary::of(&s).unwrap();
        assert_eq!(sum.n, 200);
        assert_eq!(sum.median, 100.5);
        assert_eq!(sum.p99, 198.0);
        assert_eq!((sum.min, sum.max), (1.0, 200.0));
        assert!(Summary::of(&[]).is_none());
        assert_eq!(Summary::of(&[3.0]).unwrap().p99, 3.0);
    }
}
