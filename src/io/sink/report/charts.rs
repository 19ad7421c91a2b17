//! The report's SVG charts: time charts (step lines, stacked bars) and horizontal bar pairs,
//! drawn as inline SVG text; every label goes through `esc`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dataflows::model::Millis;

use super::html::esc;
use crate::io::format::rfc3339;

/// A round axis maximum at or above `max`: 1, 2 or 5 times a power of ten.
pub(super) fn nice_max(max: i64) -> i64 {
    if max <= 0 {
        return 1;
    }
    let mut base = 1i64;
    loop {
        for m in [1, 2, 5] {
            if let Some(v) = base.checked_mul(m) {
                if v >= max {
                    return v;
                }
            }
        }
        match base.checked_mul(10) {
            Some(b) => base = b,
            None => return max,
        }
    }
}

/// The plot area of a chart and its mapping from data to pixels.
pub(super) struct Frame {
    pub(super) width: f64,
    pub(super) height: f64,
    pub(super) left: f64,
    pub(super) right: f64,
    pub(super) top: f64,
    pub(super) bottom: f64,
}

impl Frame {
    pub(super) fn time_chart() -> Self {
        Frame { width: 1100.0, height: 280.0, left: 70.0, right: 200.0, top: 16.0, bottom: 44.0 }
    }
    pub(super) fn plot_width(&self) -> f64 {
        self.width - self.left - self.right
    }
    pub(super) fn plot_height(&self) -> f64 {
        self.height - self.top - self.bottom
    }
}

/// A time range [start, end] and a value range [low, high] mapped onto a frame.
pub(super) struct Axes {
    pub(super) frame: Frame,
    pub(super) start: Millis,
    pub(super) end: Millis,
    pub(super) low: i64,
    pub(super) high: i64,
}

impl Axes {
    pub(super) fn x(&self, t: Millis) -> f64 {
        let span = (self.end - self.start).max(1) as f64;
        self.frame.left + (t.saturating_sub(self.start)) as f64 / span * self.frame.plot_width()
    }
    pub(super) fn y(&self, v: i64) -> f64 {
        let span = (self.high - self.low).max(1) as f64;
        self.frame.top + (self.high - v) as f64 / span * self.frame.plot_height()
    }

    /// Opens the SVG, draws grid lines, the value and time labels.
    pub(super) fn open(&self, svg: &mut String, id: &str, title: &str) {
        let f = &self.frame;
        let _ = write!(
            svg,
            "<svg id=\"{id}\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\">",
            w = f.width,
            h = f.height,
            t = esc(title)
        );
        let _ = write!(svg, "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>", f.width, f.height);
        for i in 0..=4 {
            let v = self.low + (self.high - self.low) * i / 4;
            let y = self.y(v);
            let _ = write!(
                svg,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#dddddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{v}</text>",
                f.left,
                f.left + f.plot_width(),
                f.left - 6.0,
                y + 4.0
            );
        }
        let short = self.end - self.start < 60_000;
        for i in 0..=4u64 {
            let t = self.start + (self.end - self.start) * i / 4;
            let text = rfc3339(t);
            let label = if short { text[11..23].to_string() } else { text[..19].replace('T', " ") };
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" class=\"tick\">{}</text>",
                self.x(t),
                f.top + f.plot_height() + 18.0,
                esc(&label)
            );
        }
        if short {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">UTC, {}</text>",
                f.left,
                f.top + f.plot_height() + 36.0,
                &rfc3339(self.start)[..10]
            );
        } else {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">UTC</text>",
                f.left,
                f.top + f.plot_height() + 36.0
            );
        }
        let _ = write!(
            svg,
            "<line x1=\"{l:.1}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\" stroke=\"#888888\"/>",
            l = f.left,
            r = f.left + f.plot_width(),
            b = self.y(self.low.max(0).min(self.high))
        );
    }

    pub(super) fn legend(&self, svg: &mut String, entries: &[(String, &str)]) {
        let x = self.frame.left + self.frame.plot_width() + 16.0;
        for (i, (name, colour)) in entries.iter().enumerate() {
            let y = self.frame.top + 8.0 + 18.0 * i as f64;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"legend\">{}</text>",
                y - 10.0,
                x + 18.0,
                y,
                esc(name)
            );
        }
    }
}

pub(super) fn no_data(id: &str, message: &str) -> String {
    format!(
        "<svg id=\"{id}\" class=\"chart empty\" xmlns=\"http://www.w3.org/2000/svg\" width=\"1100\" height=\"60\" viewBox=\"0 0 1100 60\"><text x=\"20\" y=\"35\" class=\"legend\">{}</text></svg>",
        esc(message)
    )
}

/// Reduces a step series to at most a few points per pixel column: a long run has a point per
/// tick, far more than the chart has pixels. A column keeps its first, lowest, highest and last
/// value (drawn as a vertical stroke at the column's first time), so peaks stay visible.
pub(super) fn per_pixel(points: &[(Millis, Option<i64>)], x: impl Fn(Millis) -> f64) -> Vec<(Millis, Option<i64>)> {
    let mut reduced = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let column = x(points[i].0).floor();
        let mut j = i + 1;
        while j < points.len() && x(points[j].0).floor() == column {
            j += 1;
        }
        let group = &points[i..j];
        if group.len() <= 4 {
            reduced.extend_from_slice(group);
        } else {
            let at = group[0].0;
            let values: Vec<i64> = group.iter().filter_map(|p| p.1).collect();
            if let (Some(first), Some(min), Some(max), Some(last)) =
                (values.first(), values.iter().min(), values.iter().max(), values.last())
            {
                for v in [first, min, max, last] {
                    if reduced.last() != Some(&(at, Some(*v))) {
                        reduced.push((at, Some(*v)));
                    }
                }
            }
            if group[group.len() - 1].1.is_none() {
                reduced.push((at, None));
            }
        }
        i = j;
    }
    reduced
}

/// The time axis shared by the time charts: it ends at the window's end, and the stacked bars'
/// buckets are whole ticks counted back from there, so the last bar ends on the axis's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Timeline {
    /// The axis's start: the first bucket's start (at or before the first tick).
    pub(super) start: Millis,
    /// The window's end.
    pub(super) end: Millis,
    /// Milliseconds per bar: a whole number of ticks.
    pub(super) per_bucket: Millis,
}

impl Timeline {
    /// The axis from the first tick with a message to `end`, with at most `max_buckets` bars.
    pub(super) fn new(first: Millis, end: Millis, tick_ms: Millis, max_buckets: u64) -> Timeline {
        let end = end.max(first);
        let ticks = (end - first).div_ceil(tick_ms) + 1;
        let per_bucket = ticks.div_ceil(max_buckets).max(1) * tick_ms;
        let buckets = (end - first) / per_bucket + 1;
        Timeline { start: end.saturating_sub(buckets * per_bucket), end, per_bucket }
    }

    /// The bucket of logical time `t` (at or before `end`), counted back from the end: bucket
    /// b holds the times in (end - (b + 1) * per_bucket, end - b * per_bucket].
    pub(super) fn bucket(&self, t: Millis) -> u64 {
        (self.end - t) / self.per_bucket
    }

    /// The times bucket `b` spans on the axis, clipped to its start.
    pub(super) fn span(&self, b: u64) -> (Millis, Millis) {
        let high = self.end - b * self.per_bucket;
        (high.saturating_sub(self.per_bucket).max(self.start), high)
    }
}

/// Stacked bars over time: `counts` per logical time, one colour per kind; totals per kind in
/// the legend. A bucket over 3x the next largest (a start-up burst: every key's policy and
/// count at one time) is cut at the axis and labelled with its total, so the rest stays legible.
pub(super) fn stacked_chart<const N: usize>(
    id: &str,
    title: &str,
    line: Timeline,
    counts: &BTreeMap<Millis, [u64; N]>,
    kinds: &[(&str, &str); N],
) -> String {
    let mut buckets: BTreeMap<u64, [u64; N]> = BTreeMap::new();
    for (time, n) in counts.range(..=line.end) {
        let sums = buckets.entry(line.bucket(*time)).or_insert([0; N]);
        for (sum, n) in sums.iter_mut().zip(n) {
            *sum += n;
        }
    }
    let mut totals: Vec<i64> = buckets.values().map(|c| c.iter().sum::<u64>() as i64).collect();
    totals.sort_unstable();
    let high = match totals[..] {
        [.., second, first] if first > 3 * second => nice_max(second.max(1) * 3 / 2),
        [.., first] => nice_max(first),
        [] => 1,
    };
    let axes = Axes { frame: Frame::time_chart(), start: line.start, end: line.end.max(line.start + 1), low: 0, high };
    let mut svg = String::new();
    axes.open(&mut svg, id, title);
    for (bucket, n) in &buckets {
        stack(&mut svg, &axes, line.span(*bucket), n, kinds);
    }
    let legend: Vec<(String, &str)> = kinds
        .iter()
        .enumerate()
        .map(|(i, (name, colour))| (format!("{name} {}", counts.values().map(|c| c[i]).sum::<u64>()), *colour))
        .collect();
    axes.legend(&mut svg, &legend);
    svg.push_str("</svg>");
    svg
}

/// One bar of a stacked chart over the times `(from, to]`.
fn stack<const N: usize>(
    svg: &mut String,
    axes: &Axes,
    (from, to): (Millis, Millis),
    n: &[u64; N],
    kinds: &[(&str, &str); N],
) {
    let x0 = axes.x(from);
    let width = (axes.x(to) - x0 - 1.0).max(1.0);
    let x0 = x0.min(axes.x(to) - width);
    let mut stacked = 0i64;
    for ((name, colour), n) in kinds.iter().zip(n) {
        let below = stacked;
        stacked += *n as i64;
        if *n == 0 || below >= axes.high {
            continue;
        }
        let top = axes.y(stacked.min(axes.high));
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{}: {n} in the ticks up to {}</title></rect>",
            axes.y(below) - top,
            esc(name),
            esc(&rfc3339(to))
        );
    }
    if stacked > axes.high {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">&#8593; {stacked} (cut)</text>",
            x0 + width + 3.0,
            axes.frame.top + 10.0
        );
    }
}

/// A chart series: its name, colour and points (time, value; `None` = absent from then on).
pub(super) type Series<'a> = (String, &'a str, Vec<(Millis, Option<i64>)>);

/// Step lines: each series holds its value until its next point; `None` draws nothing.
pub(super) fn step_chart(id: &str, title: &str, start: Millis, end: Millis, series: &[Series<'_>]) -> String {
    let values = series.iter().flat_map(|(_, _, points)| points.iter().filter_map(|(_, v)| *v));
    let (min, max) = values.fold((0i64, 0i64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let axes = Axes {
        frame: Frame::time_chart(),
        start,
        end: end.max(start + 1),
        low: if min < 0 { -nice_max(-min) } else { 0 },
        high: nice_max(max),
    };
    let mut svg = String::new();
    axes.open(&mut svg, id, title);
    for (name, colour, points) in series {
        let points = per_pixel(points, |t| axes.x(t));
        let mut path = String::new();
        let mut pen: Option<(f64, f64)> = None;
        for (i, (t, v)) in points.iter().enumerate() {
            let x = axes.x(*t);
            if let Some((_, y)) = pen {
                let _ = write!(path, "L{x:.1},{y:.1}");
            }
            match v {
                Some(v) => {
                    let y = axes.y(*v);
                    if pen.is_some() {
                        let _ = write!(path, "L{x:.1},{y:.1}");
                    } else {
                        let _ = write!(path, "M{x:.1},{y:.1}");
                    }
                    pen = Some((x, y));
                }
                None => pen = None,
            }
            if i + 1 == points.len() {
                if let Some((_, y)) = pen {
                    let _ = write!(path, "L{:.1},{y:.1}", axes.x(axes.end));
                }
            }
        }
        if !path.is_empty() {
            let _ = write!(
                svg,
                "<path class=\"series\" d=\"{path}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"><title>{}</title></path>",
                esc(name)
            );
        }
    }
    let legend: Vec<(String, &str)> = series.iter().map(|(name, colour, _)| (name.clone(), *colour)).collect();
    axes.legend(&mut svg, &legend);
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, two per row (e.g. requested and qty), labelled on the left.
pub(super) fn bar_pairs(
    id: &str,
    title: &str,
    rows: &[(String, i64, i64)],
    names: (&str, &str),
    colours: (&str, &str),
) -> String {
    let row_height = 30.0;
    let left = 220.0;
    let width = 1100.0;
    let plot = width - left - 170.0;
    let height = 20.0 + row_height * rows.len() as f64 + 10.0;
    let max = nice_max(rows.iter().map(|r| r.1.max(r.2)).max().unwrap_or(0));
    let scale = |v: i64| v.max(0) as f64 / max as f64 * plot;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=\"{id}\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = write!(svg, "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>");
    let _ = write!(svg, "<text x=\"{left}\" y=\"12\" class=\"tick\">0</text><text x=\"{:.1}\" y=\"12\" text-anchor=\"end\" class=\"tick\">{max}</text>", left + plot);
    for (i, (label, a, b)) in rows.iter().enumerate() {
        let y = 20.0 + row_height * i as f64;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"legend\">{}</text>",
            left - 8.0,
            y + 17.0,
            esc(label)
        );
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"11\" fill=\"{}\"><title>{}: {a}</title></rect>",
            scale(*a),
            colours.0,
            esc(names.0)
        );
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"11\" fill=\"{}\"><title>{}: {b}</title></rect>",
            y + 12.0,
            scale(*b),
            colours.1,
            esc(names.1)
        );
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">{a} / {b}</text>",
            left + scale(*a).max(scale(*b)) + 6.0,
            y + 17.0
        );
    }
    let lx = left + plot + 60.0;
    let _ = write!(
        svg,
        "<rect x=\"{lx}\" y=\"20\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"30\" class=\"legend\">{}</text><rect x=\"{lx}\" y=\"40\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"50\" class=\"legend\">{}</text>",
        colours.0,
        lx + 18.0,
        esc(names.0),
        colours.1,
        lx + 18.0,
        esc(names.1)
    );
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_max_rounds_up_to_1_2_5() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(480), 500);
        assert_eq!(nice_max(i64::MAX), i64::MAX);
    }

    #[test]
    fn the_time_axis_ends_at_the_window_end() {
        // 1000 ms ticks from 0 to 5000: one bucket per tick, the last one ending at 5000.
        let line = Timeline::new(0, 5000, 1000, 120);
        assert_eq!(line, Timeline { start: 0, end: 5000, per_bucket: 1000 });
        assert_eq!((line.bucket(5000), line.span(0)), (0, (4000, 5000)));
        assert_eq!((line.bucket(4000), line.bucket(3001)), (1, 1));
        assert_eq!(line.span(5), (0, 0));
        // 1000 ticks into at most 120 buckets of whole ticks: 9 ticks each, 112 buckets.
        let line = Timeline::new(1_000_000, 1_999_000, 1000, 120);
        assert_eq!((line.per_bucket, line.end), (9000, 1_999_000));
        assert_eq!(line.bucket(1_000_000), 111);
        assert!(line.span(111).0 <= 1_000_000 && line.start == line.span(111).0);
        // An --until between ticks ends the axis there.
        let line = Timeline::new(500, 1700, 500, 120);
        assert_eq!((line.end, line.bucket(1700), line.bucket(1500)), (1700, 0, 0));
        let chart =
            stacked_chart("c", "t", line, &BTreeMap::from([(500, [2u64]), (1700, [1])]), &[("sale", "#000000")]);
        assert!(chart.contains("in the ticks up to 1970-01-01T00:00:01.700Z") && chart.contains("sale 3"), "{chart}");
    }

    #[test]
    fn per_pixel_keeps_the_envelope_and_the_last_value() {
        // Ten points in one column, then one in the next.
        let points: Vec<(Millis, Option<i64>)> =
            (0..10).map(|t| (t, Some([5, 9, 1, 7, 3, 8, 2, 6, 4, 5][t as usize]))).chain([(100, None)]).collect();
        let reduced = per_pixel(&points, |t| t as f64 / 50.0);
        assert_eq!(reduced, vec![(0, Some(5)), (0, Some(1)), (0, Some(9)), (0, Some(5)), (100, None)]);
        let sparse = vec![(0, Some(1)), (60, Some(2))];
        assert_eq!(per_pixel(&sparse, |t| t as f64 / 50.0), sparse);
    }
}
