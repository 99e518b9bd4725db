//! The latency chart: one horizontal box plot per figure on a shared
//! logarithmic millisecond axis (whisker min–max, box p25–p75, thick line
//! at the median, red tick at p99), written as plain SVG.

use crate::report::{percentile, Figure};

/// Width of the plot area and the right margin, px.
const PLOT: f64 = 620.0;
const RIGHT: f64 = 30.0;
const ROW: f64 = 26.0;
const TOP: f64 = 56.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ms_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{} s", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v} ms")
    } else {
        format!("{} µs", v * 1000.0)
    }
}

/// SVG of the chart figures (`Figure::chart`, unit ms) of a run.
pub fn svg(title: &str, figures: &[&Figure]) -> String {
    let rows: Vec<(&Figure, Vec<f64>)> = figures
        .iter()
        .filter(|f| !f.samples.is_empty())
        .map(|f| {
            let mut s: Vec<f64> = f.samples.iter().map(|v| v.max(1e-3)).collect();
            s.sort_by(f64::total_cmp);
            (*f, s)
        })
        .collect();
    if rows.is_empty() {
        // No axis to draw (a run of sections without latency figures,
        // e.g. `--only scale`): the decade loop below would never end.
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"60\">\n\
             <text x=\"10\" y=\"22\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"15\">{}: no latency figures in this run</text>\n</svg>\n",
            esc(title)
        );
    }
    let lo = rows
        .iter()
        .map(|(_, s)| s[0])
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let hi = rows
        .iter()
        .map(|(_, s)| s[s.len() - 1])
        .fold(0.0, f64::max)
        .max(lo * 10.0);
    let (d0, d1) = (lo.log10().floor(), hi.log10().ceil());
    // DejaVu Sans at 12 px averages under 7 px a character.
    let longest = rows
        .iter()
        .map(|(f, s)| f.label.chars().count() + format!(" (n={})", s.len()).len())
        .max()
        .unwrap_or(20);
    let left = 7.0 * longest as f64 + 20.0;
    let w = left + PLOT + RIGHT;
    let plot_w = PLOT;
    let x = |v: f64| left + (v.max(1e-3).log10() - d0) / (d1 - d0) * plot_w;
    let h = TOP + ROW * rows.len() as f64 + 60.0;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        10,
        esc(title)
    );
    let bottom = TOP + ROW * rows.len() as f64;
    // Decade grid with 2x and 5x minor lines.
    let mut d = d0;
    while d <= d1 {
        let v = 10f64.powf(d);
        let gx = x(v);
        o += &format!(
            "<line x1=\"{gx:.1}\" y1=\"{}\" x2=\"{gx:.1}\" y2=\"{bottom}\" stroke=\"#bbb\"/>\n\
             <text x=\"{gx:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\">{}</text>\n",
            TOP - 8.0,
            bottom + 16.0,
            ms_label(v)
        );
        if d < d1 {
            for m in [2.0, 5.0] {
                let mx = x(v * m);
                o += &format!(
                    "<line x1=\"{mx:.1}\" y1=\"{}\" x2=\"{mx:.1}\" y2=\"{bottom}\" stroke=\"#eee\"/>\n",
                    TOP - 8.0
                );
            }
        }
        d += 1.0;
    }
    for (i, (f, s)) in rows.iter().enumerate() {
        let cy = TOP + ROW * i as f64 + ROW / 2.0;
        if i % 2 == 1 {
            o += &format!(
                "<rect x=\"0\" y=\"{}\" width=\"{w}\" height=\"{ROW}\" fill=\"#000\" fill-opacity=\"0.03\"/>\n",
                cy - ROW / 2.0
            );
        }
        let label = format!("{} (n={})", f.label, s.len());
        o += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 8.0,
            cy + 4.0,
            esc(&label)
        );
        let (mn, mx) = (s[0], s[s.len() - 1]);
        let (q1, q3) = (percentile(s, 25.0), percentile(s, 75.0));
        let med = f.summary.map(|x| x.median).unwrap_or(q1);
        let p99 = percentile(s, 99.0);
        let color = if f.key.starts_with("baseline") {
            "#888"
        } else {
            "#3465a4"
        };
        o += &format!(
            "<line x1=\"{:.1}\" y1=\"{cy:.1}\" x2=\"{:.1}\" y2=\"{cy:.1}\" stroke=\"{color}\"/>\n\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\" fill-opacity=\"0.35\" stroke=\"{color}\"/>\n\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-width=\"2.5\"/>\n\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c00\" stroke-width=\"2\"/>\n",
            x(mn),
            x(mx),
            x(q1),
            cy - 7.0,
            (x(q3) - x(q1)).max(1.0),
            14.0,
            x(med),
            cy - 8.0,
            x(med),
            cy + 8.0,
            x(p99),
            cy - 6.0,
            x(p99),
            cy + 6.0,
        );
    }
    o += &format!(
        "<text x=\"10\" y=\"{:.1}\" fill=\"#333\">whisker: min–max · box: p25–p75 · black: median · red: p99 · grey rows: baselines (not corral) · log scale</text>\n</svg>\n",
        bottom + 40.0
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run without latency figures (`--only scale`) once looped here
    /// until the machine ran out of memory.
    #[test]
    fn no_figures_give_a_small_chart_that_says_so() {
        let svg = svg("corral", &[]);
        assert!(svg.len() < 1000, "{}", svg.len());
        assert!(svg.contains("no latency figures"), "{svg}");
    }
}
