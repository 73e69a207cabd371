//! SVG charts rendered on the server: scatter plots of embeddings and line charts of metrics.

use leptos::prelude::*;

/// Tableau 10, the first ten class colours.
const TAB10: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Saturation and lightness of the class colours past Tableau 10.
const HSL_S: f64 = 0.62;
const HSL_L: f64 = 0.46;

/// Hue of a class past Tableau 10: the golden angle keeps consecutive labels far apart on the
/// colour wheel.
fn class_hue(label: u32) -> f64 {
    (label as f64 * 137.508) % 360.0
}

/// Class colours: Tableau 10, then evenly spread hues for datasets with more classes.
pub(crate) fn class_color(label: u32) -> String {
    match TAB10.get(label as usize) {
        Some(c) => (*c).to_owned(),
        None => format!(
            "hsl({:.0},{:.0}%,{:.0}%)",
            class_hue(label),
            HSL_S * 100.0,
            HSL_L * 100.0
        ),
    }
}

/// [`class_color`] as RGB, for raster images (the GIF export).
pub(crate) fn class_rgb(label: u32) -> [u8; 3] {
    if let Some(hex) = TAB10.get(label as usize) {
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0);
        return [byte(1), byte(3), byte(5)];
    }
    // CSS's hsl() → RGB (CSS Color 4, "Converting HSL colors to sRGB"), with the hue rounded
    // as class_color prints it.
    let h = class_hue(label).round();
    let a = HSL_S * HSL_L.min(1.0 - HSL_L);
    let f = |n: f64| {
        let k = (n + h / 30.0) % 12.0;
        let v = HSL_L - a * (k - 3.0).min(9.0 - k).clamp(-1.0, 1.0);
        (v * 255.0).round() as u8
    };
    [f(0.0), f(8.0), f(4.0)]
}

/// Series colours for line charts.
pub(crate) fn series_color(i: usize) -> String {
    class_color(i as u32)
}

/// A sequential colour for `t` in [0, 1] (viridis, piecewise linear) for heatmaps.
pub(crate) fn heat_color(t: f64) -> String {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// Bounds of points with a margin, equal on both axes so that distances are not distorted.
fn square_bounds(points: &[[f64; 2]]) -> ([f64; 2], f64) {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite())
    {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    if !lo[0].is_finite() {
        return ([-1.0, -1.0], 2.0);
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-9) * 1.08;
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    ([centre[0] - span / 2.0, centre[1] - span / 2.0], span)
}

/// A scatter plot of 2-D points coloured by label. `points` are already downsampled.
#[component]
pub(crate) fn Scatter(
    points: Vec<[f64; 2]>,
    labels: Vec<u32>,
    #[prop(default = 260)] size: u32,
) -> impl IntoView {
    let (origin, span) = square_bounds(&points);
    let s = size as f64;
    let circles = points
        .iter()
        .zip(&labels)
        .filter(|(p, _)| p[0].is_finite() && p[1].is_finite())
        .map(|(p, l)| {
            let cx = format!("{:.1}", (p[0] - origin[0]) / span * s);
            // SVG's y axis points down; flip so the picture keeps the embedding's orientation.
            let cy = format!("{:.1}", s - (p[1] - origin[1]) / span * s);
            view! { <circle cx=cx cy=cy r="2" fill=class_color(*l)></circle> }
        })
        .collect_view();
    let view_box = format!("0 0 {size} {size}");
    view! {
        <svg class="scatter" viewBox=view_box width=size height=size role="img">
            <rect class="frame" x="0" y="0" width=size height=size></rect>
            {circles}
        </svg>
    }
}

/// Legend of class colours.
#[component]
pub(crate) fn Legend(class_names: Vec<String>, labels: Vec<u32>) -> impl IntoView {
    let mut used: Vec<u32> = labels;
    used.sort_unstable();
    used.dedup();
    let items = used
        .into_iter()
        .map(|l| {
            let name = class_names
                .get(l as usize)
                .cloned()
                .unwrap_or_else(|| format!("class {l}"));
            let style = format!("background:{}", class_color(l));
            view! { <li><span class="swatch" style=style></span>{name}</li> }
        })
        .collect_view();
    view! { <ul class="legend">{items}</ul> }
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Averages consecutive points into at most `max` buckets, keeping curves cheap to draw.
pub(crate) fn downsample(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    (0..max)
        .map(|b| {
            let (lo, hi) = (
                b * points.len() / max,
                ((b + 1) * points.len() / max).max(b * points.len() / max + 1),
            );
            let chunk = &points[lo..hi];
            let n = chunk.len() as f64;
            (
                chunk.iter().map(|p| p.0).sum::<f64>() / n,
                chunk.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

/// "Nice" tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 20 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A line chart with axes, ticks and a legend.
#[component]
pub(crate) fn LineChart(
    title: String,
    x_label: String,
    series: Vec<Series>,
    /// Fixed y range (e.g. [0, 1] for scores); otherwise fitted to the data.
    #[prop(optional)]
    y_range: Option<(f64, f64)>,
) -> impl IntoView {
    const W: f64 = 520.0;
    const H: f64 = 220.0;
    const L: f64 = 52.0;
    const R: f64 = 12.0;
    const T: f64 = 10.0;
    const B: f64 = 32.0;
    let series: Vec<Series> = series
        .into_iter()
        .map(|s| Series {
            points: downsample(
                &s.points
                    .into_iter()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect::<Vec<_>>(),
                400,
            ),
            name: s.name,
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for p in all {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y0 = y0.min(p.1);
        y1 = y1.max(p.1);
    }
    if let Some((a, b)) = y_range {
        y0 = y0.min(a);
        y1 = y1.max(b);
    }
    let empty = series.is_empty();
    if empty {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let sx = move |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let sy = move |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    let lines = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let pts = s
                .points
                .iter()
                .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
                .collect::<Vec<_>>()
                .join(" ");
            view! { <polyline class="line" points=pts stroke=series_color(i)></polyline> }
        })
        .collect_view();
    let yt = ticks(y0, y1, 4)
        .into_iter()
        .map(|v| {
            let y = format!("{:.1}", sy(v));
            view! {
                <line class="grid" x1=L x2=W - R y1=y.clone() y2=y.clone()></line>
                <text class="tick" x=L - 6.0 y=y text-anchor="end" dominant-baseline="middle">{tick_label(v)}</text>
            }
        })
        .collect_view();
    let xt = ticks(x0, x1, 6)
        .into_iter()
        .map(|v| {
            let x = format!("{:.1}", sx(v));
            view! { <text class="tick" x=x y=H - B + 16.0 text-anchor="middle">{tick_label(v)}</text> }
        })
        .collect_view();
    let legend = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let style = format!("background:{}", series_color(i));
            view! { <li><span class="swatch" style=style></span>{s.name.clone()}</li> }
        })
        .collect_view();
    let view_box = format!("0 0 {W} {H}");
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg class="linechart" viewBox=view_box role="img">
                {yt}
                {xt}
                <line class="axis" x1=L x2=L y1=T y2=H - B></line>
                <line class="axis" x1=L x2=W - R y1=H - B y2=H - B></line>
                {lines}
                <text class="axis-label" x=(L + W - R) / 2.0 y=H - 4.0 text-anchor="middle">{x_label}</text>
                {empty.then(|| view! { <text class="tick" x=W / 2.0 y=H / 2.0 text-anchor="middle">"no data yet"</text> })}
            </svg>
            <ul class="legend">{legend}</ul>
        </figure>
    }
}
