//! Report pages: one self-contained HTML file, without scripts, holding a summary
//! table and inline SVG line charts of values over the run's time (latency,
//! throughput), with the measured window shaded behind the lines.

use std::fmt::Write;

/// One line on a chart: `points` are (seconds since the run started, value).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart: a title, the unit of its y axis, and its lines.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub unit: String,
    pub series: Vec<Series>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
/// The plot area's edges, in SVG pixels.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 744.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 216.0;
const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}th,td{padding:3px 16px 3px 0;border-bottom:1px solid #eee}\
th{text-align:left;font-weight:600}td{text-align:right;font-variant-numeric:tabular-nums}\
svg{font-size:11px}section{margin-top:1.5em}";

/// A whole report page: a title, a summary table of (label, value) rows, the charts,
/// and the measured window (start, end) in seconds, shaded on every chart (the time
/// before it is ramp-up and warm-up).
pub fn html_page(
    title: &str,
    summary: &[(String, String)],
    charts: &[Chart],
    measured: (f64, f64),
) -> String {
    let title = escape(title);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    if !summary.is_empty() {
        out.push_str("<table>\n");
        for (label, value) in summary {
            let _ = writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(label), escape(value));
        }
        out.push_str("</table>\n");
    }
    for chart in charts {
        let _ = writeln!(out, "<section>\n<h2>{}</h2>", escape(&chart.title));
        svg(&mut out, chart, measured);
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Writes one chart as an `<svg>` element.
fn svg(out: &mut String, chart: &Chart, measured: (f64, f64)) {
    let end = if measured.1.is_finite() { measured.1 } else { 0.0 };
    let all = || chart.series.iter().flat_map(|s| drawable(&s.points));
    let x_span = all().map(|p| p.0).fold(end, f64::max).max(1.0);
    let (x_step, _) = nice_axis(x_span);
    let (y_step, y_top) = nice_axis(all().map(|p| p.1).fold(0.0, f64::max));
    let sx = |x: f64| LEFT + (x / x_span).clamp(0.0, 1.0) * (RIGHT - LEFT);
    let sy = |y: f64| BOTTOM - (y / y_top).clamp(0.0, 1.0) * (BOTTOM - TOP);

    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\">"
    );
    if measured.0.is_finite() && measured.1.is_finite() {
        let (m0, m1) = (sx(measured.0.max(0.0)), sx(measured.1));
        if m1 > m0 {
            let _ = writeln!(
                out,
                "<rect x=\"{m0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{}\" fill=\"#e6eefa\"/>\
                 <text x=\"{:.1}\" y=\"{}\" fill=\"#6a7a99\" font-size=\"10\">measured</text>",
                m1 - m0,
                BOTTOM - TOP,
                m0 + 4.0,
                TOP + 12.0,
            );
        }
    }
    for v in ticks(y_step, y_top) {
        let y = sy(v);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 4.0,
            tick_label(v, y_step),
        );
    }
    for v in ticks(x_step, x_span) {
        let x = sx(v);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{BOTTOM}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            BOTTOM + 15.0,
            tick_label(v, x_step),
        );
    }
    let _ = writeln!(
        out,
        "<path d=\"M{LEFT} {TOP}V{BOTTOM}H{RIGHT}\" fill=\"none\" stroke=\"#888\"/>\n\
         <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">seconds</text>\n\
         <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (LEFT + RIGHT) / 2.0,
        HEIGHT - 8.0,
        (TOP + BOTTOM) / 2.0,
        escape(&chart.unit),
    );
    if all().next().is_none() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#888\">no data</text>",
            (LEFT + RIGHT) / 2.0,
            (TOP + BOTTOM) / 2.0,
        );
    }
    let mut legend_x = LEFT;
    for (i, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<String> =
            drawable(&series.points).map(|(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-linejoin=\"round\" \
             points=\"{}\"/>\n<line x1=\"{legend_x:.1}\" x2=\"{:.1}\" y1=\"12\" y2=\"12\" stroke=\"{colour}\" \
             stroke-width=\"3\"/><text x=\"{:.1}\" y=\"16\">{}</text>",
            points.join(" "),
            legend_x + 16.0,
            legend_x + 21.0,
            escape(&series.name),
        );
        legend_x += 34.0 + 6.5 * series.name.chars().count() as f64;
    }
    out.push_str("</svg>\n");
}

/// The points that can be drawn: both coordinates finite.
fn drawable(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> {
    points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// The tick step and axis top for values up to `max`: about 5 steps of 1, 2 or
/// 5 × 10^k, the top being the first multiple of the step at or above `max`
/// (a `max` that is not positive counts as 1).
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    (step, (max / step - 1e-9).ceil() * step)
}

/// The multiples of `step` from 0 up to `limit`.
fn ticks(step: f64, limit: f64) -> impl Iterator<Item = f64> {
    (0..=100u32).map(move |i| f64::from(i) * step).take_while(move |&v| v <= limit + step * 1e-6)
}

/// A tick label for `v` on an axis of `step`: no decimals when the step is whole,
/// else enough for the step; k or M suffixes for steps of thousands or millions.
fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let (scale, suffix) = if step >= 1e6 {
        (1e6, "M")
    } else if step >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let (mut scaled, mut decimals) = (step / scale, 0usize);
    while scaled < 1.0 - 1e-9 && decimals < 12 {
        scaled *= 10.0;
        decimals += 1;
    }
    format!("{:.decimals$}{suffix}", v / scale)
}

/// `s` with the HTML/XML special characters escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series { name: name.to_string(), points: points.to_vec() }
    }

    fn chart(series: Vec<Series>) -> Chart {
        Chart { title: "latency".to_string(), unit: "ms".to_string(), series }
    }

    /// The number of points in each `<polyline>` of `page`, in order.
    fn polyline_points(page: &str) -> Vec<usize> {
        page.split("<polyline")
            .skip(1)
            .map(|rest| {
                let start = rest.find("points=\"").expect("a polyline has points") + "points=\"".len();
                let end = rest[start..].find('"').expect("the points attribute is closed");
                rest[start..start + end].split_whitespace().count()
            })
            .collect()
    }

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9
    }

    #[test]
    fn text_is_escaped() {
        let summary = [("a<b".to_string(), "\"x\" & 'y'".to_string())];
        let page =
            html_page("load <&> test", &summary, &[chart(vec![series("p<99>", &[(0.0, 1.0)])])], (1.0, 2.0));
        assert!(page.contains("load &lt;&amp;&gt; test"));
        assert!(!page.contains("<&>"));
        assert!(page.contains("a&lt;b") && page.contains("&quot;x&quot; &amp; &#39;y&#39;"));
        assert!(page.contains("p&lt;99&gt;") && !page.contains("p<99>"));
        assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<meta charset=\"utf-8\">"));
    }

    #[test]
    fn nice_steps() {
        assert!(close(nice_axis(0.87), (0.2, 1.0)));
        assert!(close(nice_axis(13.0), (5.0, 15.0)));
        assert!(close(nice_axis(100.0), (20.0, 100.0)));
        assert!(close(nice_axis(950.0), (200.0, 1000.0)));
        assert!(close(nice_axis(0.0), (0.2, 1.0)));
        assert!(close(nice_axis(f64::NAN), (0.2, 1.0)));
        assert_eq!(ticks(20.0, 65.0).collect::<Vec<_>>(), [0.0, 20.0, 40.0, 60.0]);
        assert_eq!(ticks(0.2, 1.0).count(), 6);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick_label(15.0, 5.0), "15");
        assert_eq!(tick_label(3.0 * 0.2, 0.2), "0.6");
        assert_eq!(tick_label(0.15, 0.05), "0.15");
        assert_eq!(tick_label(20_000.0, 5_000.0), "20k");
        assert_eq!(tick_label(4e6, 2e6), "4M");
        assert_eq!(tick_label(0.0, 0.2), "0");
    }

    #[test]
    fn one_polyline_per_series() {
        let lines = vec![
            series("p50", &[(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]),
            series("p99", &[(0.0, 5.0), (1.0, 9.0)]),
        ];
        let page = html_page("t", &[], &[chart(lines)], (0.5, 2.0));
        assert_eq!(polyline_points(&page), [3, 2]);
        assert!(page.contains("measured") && page.contains("<rect"));
    }

    #[test]
    fn non_finite_points_are_skipped() {
        let points =
            [(0.0, 1.0), (1.0, f64::NAN), (f64::INFINITY, 2.0), (3.0, 4.0), (4.0, f64::NEG_INFINITY)];
        let page = html_page("t", &[], &[chart(vec![series("s", &points)])], (0.0, f64::NAN));
        assert_eq!(polyline_points(&page), [2]);
        assert!(!page.contains("NaN") && !page.contains("inf"));
    }

    #[test]
    fn empty_charts_render() {
        let charts = [chart(Vec::new()), chart(vec![series("none", &[])])];
        let page = html_page("empty", &[], &charts, (0.0, 0.0));
        assert_eq!(page.matches("<svg").count(), 2);
        assert_eq!(page.matches("no data").count(), 2);
        assert_eq!(polyline_points(&page), [0]);
    }
}
