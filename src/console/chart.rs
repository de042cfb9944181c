//! Bar charts as inline SVG, drawn on the server: no JavaScript, no
//! library to embed, and they print.

use std::fmt::Write;

use super::html::esc;

const W: f64 = 720.0;
const H: f64 = 180.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// A bar chart of `(label, count)` in the given order. Each bar carries a
/// `<title>` (the label and count) that browsers show on hover and screen
/// readers read.
pub(super) fn bars(title: &str, points: &[(String, u64)]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    if points.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return s;
    }
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let plot_w = W - LEFT - 4.0;
    let plot_h = H - BOTTOM - TOP;
    let step = plot_w / points.len() as f64;
    let bar = (step * 0.8).max(1.0);
    // Axis and the top value.
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y}" stroke="#888"/><line x1="{LEFT}" y1="{y}" x2="{x}" y2="{y}" stroke="#888"/><text x="{tx}" y="{ty}" text-anchor="end" font-size="10">{max}</text><text x="{tx}" y="{y}" text-anchor="end" font-size="10">0</text>"##,
        y = TOP + plot_h,
        x = W - 4.0,
        tx = LEFT - 4.0,
        ty = TOP + 10.0,
    );
    for (i, (label, n)) in points.iter().enumerate() {
        let h = plot_h * (*n as f64) / (max as f64);
        let x = LEFT + step * i as f64 + (step - bar) / 2.0;
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{h:.1}" fill="#3a6ea5"><title>{}: {n}</title></rect>"##,
            TOP + plot_h - h,
            esc(label)
        );
    }
    // First and last labels under the axis.
    let y = H - 6.0;
    let first = &points[0].0;
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{y}" font-size="10">{}</text>"#,
        esc(first)
    );
    if points.len() > 1 {
        let last = &points[points.len() - 1].0;
        let _ = write!(
            s,
            r#"<text x="{}" y="{y}" font-size="10" text-anchor="end">{}</text>"#,
            W - 4.0,
            esc(last)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_escape_labels() {
        let svg = bars(
            "hits <per> day",
            &[("a&b".into(), 5), ("2025-03-02".into(), 10)],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("hits &lt;per&gt; day"));
        assert!(svg.contains("<title>a&amp;b: 5</title>"));
        assert_eq!(svg.matches("<rect").count(), 2);
        // The larger bar spans the whole plot height, the other half of it.
        let plot = H - BOTTOM - TOP;
        assert!(svg.contains(&format!("height=\"{plot:.1}\"")));
        assert!(svg.contains(&format!("height=\"{:.1}\"", plot / 2.0)));
        assert!(bars("x", &[]).contains("no data"));
    }
}
