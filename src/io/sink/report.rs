//! `replay --report FILE`: one self-contained HTML page (inline SVG, no scripts, no network)
//! with charts of the run: events per type over time, low-stock keys over time, order-plan
//! totals by source, the top shortages, and the ATP timeline of the most active SKUs.
//!
//! Everything but the events per type comes from what the replay's sink receives (the change
//! streams of each closed tick, the final snapshot and the summary). Events per type and SKU
//! activity are counted by a pass over the input with the replay's own decoder and clock, made
//! when the sink is created. The page holds no wall-clock time, so its bytes depend only on
//! the input and the options.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use dataflows::clock::Ticks;
use dataflows::low_stock::LowState;
use dataflows::model::{DeadLetter, Millis, Name};

use crate::config::ReplayConfig;
use crate::io::format::rfc3339;
use crate::io::source::file::for_each_event;
use crate::io::sink::{Sink, SinkError, Snapshot, Summary, TickBatch};

/// Message types in SPEC §1's table order, with their chart colours.
const TYPES: [(&str, &str); 10] = [
    ("sale", "#4e79a7"),
    ("return", "#f28e2b"),
    ("receipt", "#59a14f"),
    ("adjust", "#b07aa1"),
    ("count", "#76b7b2"),
    ("reserve", "#edc948"),
    ("release", "#ff9da7"),
    ("fulfill", "#9c755f"),
    ("po", "#bab0ac"),
    ("policy", "#e15759"),
];

/// SKUs whose ATP timeline is drawn.
const TOP_SKUS: usize = 5;
/// Series colours for the SKU timelines.
/// Each chart has a palette of its own, so a screenshot test can tell which chart drew pixels.
const SERIES: [&str; TOP_SKUS] = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"];
/// LOW and OUT key counts.
const LOW_COLOURS: (&str, &str) = ("#ff9f1c", "#c0392b");
/// Bars of the order-plan totals: requested, qty.
const PLAN_COLOURS: (&str, &str) = ("#9ecae1", "#3182bd");
/// Bars of the shortages: requested, qty.
const SHORTAGE_COLOURS: (&str, &str) = ("#fdae6b", "#a63603");
/// Most bars in the events chart: ticks are grouped into at most this many buckets.
const MAX_BUCKETS: u64 = 120;
/// Rows in the shortage table and sources in the order-plan chart.
const TOP_ROWS: usize = 15;


/// A sink that gathers the run's timelines and writes the HTML page at the end.
pub struct ReportSink {
    path: PathBuf,
    inputs: Vec<String>,
    ticks: Ticks,
    lateness_ms: Millis,
    /// Applied messages per tick and type.
    events: BTreeMap<Millis, [u64; TYPES.len()]>,
    /// The most active SKUs (by applied messages), most active first, with their counts.
    top_skus: Vec<(Name, u64)>,
    /// Current LOW and OUT key counts, and their value after each tick that changed them.
    low: i64,
    out: i64,
    low_timeline: Vec<(Millis, i64, i64)>,
    /// network_atp changes of the top SKUs.
    atp_timeline: BTreeMap<Name, Vec<(Millis, Option<i64>)>>,
}

impl ReportSink {
    /// Prepares a report of the replay `config` describes, to be written to `path` at the end.
    /// Reads the input once to count messages per type and tick.
    pub fn create(path: &Path, config: &ReplayConfig) -> Result<Self, SinkError> {
        let mut events: BTreeMap<Millis, [u64; TYPES.len()]> = BTreeMap::new();
        let mut per_sku: BTreeMap<Name, u64> = BTreeMap::new();
        let ticks = config.ticks;
        for_each_event(&config.inputs, config.lateness_ms, ticks, |event| {
            let tick = ticks.emission(event.order.effective).unwrap_or(event.order.effective);
            events.entry(tick).or_default()[event.message.body.type_index()] += 1;
            *per_sku.entry(event.message.sku).or_default() += 1;
        })?;
        let mut ranked: Vec<(Name, u64)> = per_sku.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(TOP_SKUS);
        // Fail now rather than after a long run when the file cannot be written.
        std::fs::write(path, b"").map_err(|error| SinkError::Report { path: path.to_path_buf(), error })?;
        Ok(ReportSink {
            path: path.to_path_buf(),
            inputs: config.inputs.iter().map(|i| i.name.clone()).collect(),
            ticks,
            lateness_ms: config.lateness_ms,
            events,
            atp_timeline: ranked.iter().map(|(sku, _)| (sku.clone(), Vec::new())).collect(),
            top_skus: ranked,
            low: 0,
            out: 0,
            low_timeline: Vec::new(),
        })
    }
}

impl Sink for ReportSink {
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> Result<(), SinkError> {
        if !batch.low_stock.is_empty() {
            for t in &batch.low_stock {
                let delta = |state: LowState, sign: i64, low: &mut i64, out: &mut i64| match state {
                    LowState::Low => *low += sign,
                    LowState::Out => *out += sign,
                    LowState::Ok => {}
                };
                delta(t.previous, -1, &mut self.low, &mut self.out);
                delta(t.view.state, 1, &mut self.low, &mut self.out);
            }
            self.low_timeline.push((time, self.low, self.out));
        }
        for change in &batch.network_atp {
            if let Some(timeline) = self.atp_timeline.get_mut(&change.key) {
                timeline.push((time, change.value));
            }
        }
        Ok(())
    }

    fn finish(&mut self, dead_letters: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> Result<(), SinkError> {
        let html = self.render(dead_letters, snapshot, summary);
        std::fs::write(&self.path, html).map_err(|error| SinkError::Report { path: self.path.clone(), error })
    }
}

/// Escapes text for HTML and SVG.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// A round axis maximum at or above `max`: 1, 2 or 5 times a power of ten.
fn nice_max(max: i64) -> i64 {
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
struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn time_chart() -> Self {
        Frame { width: 1100.0, height: 280.0, left: 70.0, right: 200.0, top: 16.0, bottom: 44.0 }
    }
    fn plot_width(&self) -> f64 {
        self.width - self.left - self.right
    }
    fn plot_height(&self) -> f64 {
        self.height - self.top - self.bottom
    }
}

/// A time range [start, end] and a value range [low, high] mapped onto a frame.
struct Axes {
    frame: Frame,
    start: Millis,
    end: Millis,
    low: i64,
    high: i64,
}

impl Axes {
    fn x(&self, t: Millis) -> f64 {
        let span = (self.end - self.start).max(1) as f64;
        self.frame.left + (t.saturating_sub(self.start)) as f64 / span * self.frame.plot_width()
    }
    fn y(&self, v: i64) -> f64 {
        let span = (self.high - self.low).max(1) as f64;
        self.frame.top + (self.high - v) as f64 / span * self.frame.plot_height()
    }

    /// Opens the SVG, draws grid lines, the value and time labels.
    fn open(&self, svg: &mut String, id: &str, title: &str) {
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

    fn legend(&self, svg: &mut String, entries: &[(String, &str)]) {
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

fn no_data(id: &str, message: &str) -> String {
    format!(
        "<svg id=\"{id}\" class=\"chart empty\" xmlns=\"http://www.w3.org/2000/svg\" width=\"1100\" height=\"60\" viewBox=\"0 0 1100 60\"><text x=\"20\" y=\"35\" class=\"legend\">{}</text></svg>",
        esc(message)
    )
}

/// Reduces a step series to at most a few points per pixel column: a long run has a point per
/// tick, far more than the chart has pixels. A column keeps its first, lowest, highest and last
/// value (drawn as a vertical stroke at the column's first time), so peaks stay visible.
fn per_pixel(points: &[(Millis, Option<i64>)], x: impl Fn(Millis) -> f64) -> Vec<(Millis, Option<i64>)> {
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

/// A chart series: its name, colour and points (time, value; `None` = absent from then on).
type Series<'a> = (String, &'a str, Vec<(Millis, Option<i64>)>);

/// Step lines: each series holds its value until its next point; `None` draws nothing.
fn step_chart(id: &str, title: &str, start: Millis, end: Millis, series: &[Series<'_>]) -> String {
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
fn bar_pairs(id: &str, title: &str, rows: &[(String, i64, i64)], names: (&str, &str), colours: (&str, &str)) -> String {
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

impl ReportSink {
    /// The window's time range: the first tick with a message to the window's end.
    fn time_range(&self, summary: &Summary) -> Option<(Millis, Millis)> {
        let first = *self.events.keys().next()?;
        let last = summary.as_of.unwrap_or(*self.events.keys().next_back()?);
        Some((first.min(last), last.max(first)))
    }

    fn events_chart(&self, start: Millis, end: Millis) -> String {
        let span = (end - start).max(1);
        let tick = self.ticks.tick_ms;
        // Buckets are whole ticks so that a bar never splits a tick's messages.
        let ticks_in_span = span.div_ceil(tick) + 1;
        let per_bucket = ticks_in_span.div_ceil(MAX_BUCKETS).max(1) * tick;
        let mut buckets: BTreeMap<u64, [u64; TYPES.len()]> = BTreeMap::new();
        for (time, counts) in &self.events {
            let b = buckets.entry((time - start) / per_bucket).or_default();
            for (sum, n) in b.iter_mut().zip(counts) {
                *sum += n;
            }
        }
        let mut totals: Vec<i64> = buckets.values().map(|c| c.iter().sum::<u64>() as i64).collect();
        totals.sort_unstable();
        // A start-up burst (every key's policy and count at one time) would flatten the rest of
        // the chart: a bar over 3x the next largest is cut at the axis and labelled with its total.
        let high = match totals[..] {
            [.., second, first] if first > 3 * second => nice_max(second.max(1) * 3 / 2),
            [.., first] => nice_max(first),
            [] => 1,
        };
        let last_bucket = (end - start) / per_bucket;
        let axes =
            Axes { frame: Frame::time_chart(), start, end: start + (last_bucket + 1) * per_bucket, low: 0, high };
        let mut svg = String::new();
        axes.open(&mut svg, "events-per-type", "applied messages per type over time");
        for (bucket, counts) in &buckets {
            let t0 = start + bucket * per_bucket;
            let x0 = axes.x(t0);
            let bar = (axes.x(t0 + per_bucket) - x0 - 1.0).max(1.0);
            let mut stacked = 0i64;
            for ((name, colour), n) in TYPES.iter().zip(counts) {
                if *n == 0 || stacked >= high {
                    stacked += *n as i64;
                    continue;
                }
                let top = axes.y((stacked + *n as i64).min(high));
                let bottom = axes.y(stacked);
                stacked += *n as i64;
                let _ = write!(
                    svg,
                    "<rect class=\"bar\" x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{name}: {n} from {}</title></rect>",
                    bottom - top,
                    rfc3339(t0)
                );
            }
            if stacked > high {
                let _ = write!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">&#8593; {stacked} (cut)</text>",
                    x0 + bar + 3.0,
                    axes.frame.top + 10.0
                );
            }
        }
        let totals: Vec<(String, &str)> = TYPES
            .iter()
            .enumerate()
            .map(|(i, (name, colour))| {
                let n: u64 = self.events.values().map(|c| c[i]).sum();
                (format!("{name} {n}"), *colour)
            })
            .collect();
        axes.legend(&mut svg, &totals);
        svg.push_str("</svg>");
        svg
    }

    fn render(&self, dead_letters: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> String {
        let mut html = String::new();
        let h = &mut html;
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>stockflow replay report</title>\n");
        h.push_str(
            "<style>\nbody{font-family:sans-serif;margin:24px;color:#222;background:#fff;max-width:1140px}\n\
             h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}\n\
             table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}\n\
             td.n{text-align:right}.note{color:#666;font-size:13px}\n\
             svg .tick{font-size:11px;fill:#555}svg .legend{font-size:12px;fill:#222}\n</style>\n</head>\n<body>\n",
        );
        h.push_str("<h1>stockflow replay report</h1>\n");
        let inputs: Vec<String> = self.inputs.iter().map(|n| esc(n)).collect();
        let _ = writeln!(
            h,
            "<p class=\"note\">inputs: {}; tick {} ms; lateness {} ms; window end {}</p>",
            inputs.join(", "),
            self.ticks.tick_ms,
            self.lateness_ms,
            summary.as_of.map_or("none (nothing applied)".to_string(), |t| format!("{} ({t})", rfc3339(t)))
        );

        h.push_str("<h2>Summary</h2>\n<table id=\"summary\">");
        let summary_json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap_or_default();
        if let Some(fields) = summary_json.as_object() {
            for (k, v) in fields {
                let _ = write!(h, "<tr><th>{}</th><td class=\"n\">{}</td></tr>", esc(k), esc(&v.to_string()));
            }
        }
        let _ = write!(
            h,
            "<tr><th>atp rows</th><td class=\"n\">{}</td></tr><tr><th>low / out keys</th><td class=\"n\">{} / {}</td></tr><tr><th>order lines</th><td class=\"n\">{}</td></tr>",
            snapshot.atp.len(),
            snapshot.low_stock.values().filter(|v| v.state == LowState::Low).count(),
            snapshot.low_stock.values().filter(|v| v.state == LowState::Out).count(),
            snapshot.order_plan.len()
        );
        h.push_str("</table>\n");
        if !dead_letters.is_empty() {
            let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
            for d in dead_letters {
                *reasons.entry(d.reason.as_str()).or_default() += 1;
            }
            h.push_str("<p class=\"note\">rejected by reason: ");
            let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{} {n}", esc(r))).collect();
            h.push_str(&parts.join(", "));
            h.push_str("</p>\n");
        }

        let range = self.time_range(summary);
        h.push_str("<h2>Events per type over time</h2>\n");
        match range {
            Some((start, end)) => h.push_str(&self.events_chart(start, end)),
            None => h.push_str(&no_data("events-per-type", "no message was applied")),
        }

        h.push_str("\n<h2>Low-stock keys over time</h2>\n");
        match range {
            Some((start, end)) if !self.low_timeline.is_empty() => {
                let mut low = vec![(start, Some(0))];
                let mut out = vec![(start, Some(0))];
                for (t, l, o) in &self.low_timeline {
                    low.push((*t, Some(*l)));
                    out.push((*t, Some(*o)));
                }
                let series =
                    vec![("LOW keys".to_string(), LOW_COLOURS.0, low), ("OUT keys".to_string(), LOW_COLOURS.1, out)];
                h.push_str(&step_chart("low-stock", "LOW and OUT keys over time", start, end, &series));
            }
            _ => h.push_str(&no_data("low-stock", "no key was ever LOW or OUT")),
        }

        h.push_str("\n<h2>Order plan totals by source</h2>\n");
        let mut by_source: BTreeMap<&str, (i64, i64, usize)> = BTreeMap::new();
        for line in snapshot.order_plan.values() {
            let e = by_source.entry(line.source.as_str()).or_default();
            e.0 += line.requested;
            e.1 += line.qty;
            e.2 += 1;
        }
        if by_source.is_empty() {
            h.push_str(&no_data("order-plan-by-source", "the order plan is empty"));
        } else {
            let mut sources: Vec<(&str, (i64, i64, usize))> = by_source.into_iter().collect();
            sources.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
            let hidden = sources.len().saturating_sub(TOP_ROWS);
            let rows: Vec<(String, i64, i64)> =
                sources.iter().take(TOP_ROWS).map(|(s, (r, q, n))| (format!("{s} ({n} lines)"), *r, *q)).collect();
            h.push_str(&bar_pairs(
                "order-plan-by-source",
                "order plan totals by source",
                &rows,
                ("requested", "qty"),
                PLAN_COLOURS,
            ));
            if hidden > 0 {
                let _ = writeln!(h, "<p class=\"note\">{hidden} smaller sources not shown</p>");
            }
        }

        h.push_str("\n<h2>Top shortages</h2>\n");
        let mut short: Vec<(&dataflows::Key, &dataflows::allocation::PlanLine)> =
            snapshot.order_plan.iter().filter(|(_, l)| l.qty < l.requested).collect();
        short.sort_by(|a, b| (b.1.requested - b.1.qty).cmp(&(a.1.requested - a.1.qty)).then_with(|| a.0.cmp(b.0)));
        if short.is_empty() {
            h.push_str(&no_data("shortages", "no shortage: every order line gets what it requests"));
        } else {
            let _ = writeln!(
                h,
                "<p class=\"note\">{} order lines get less than they request; the largest gaps:</p>",
                short.len()
            );
            let rows: Vec<(String, i64, i64)> = short
                .iter()
                .take(TOP_ROWS)
                .map(|((dest, sku), l)| (format!("{sku} @ {dest}"), l.requested, l.qty))
                .collect();
            h.push_str(&bar_pairs("shortages", "top shortages", &rows, ("requested", "qty"), SHORTAGE_COLOURS));
            h.push_str("\n<table id=\"shortage-table\"><tr><th>sku</th><th>dest</th><th>source</th><th>requested</th><th>qty</th><th>short</th></tr>");
            for ((dest, sku), l) in short.iter().take(TOP_ROWS) {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    esc(sku),
                    esc(dest),
                    esc(&l.source),
                    l.requested,
                    l.qty,
                    l.requested - l.qty
                );
            }
            h.push_str("</table>\n");
        }

        h.push_str("\n<h2>ATP timeline of the most active SKUs</h2>\n");
        match range {
            Some((start, end)) if !self.top_skus.is_empty() => {
                let _ = writeln!(
                    h,
                    "<p class=\"note\">network ATP (sum of atp over the sku's locations) of the {} SKUs with the most applied messages</p>",
                    self.top_skus.len()
                );
                let series: Vec<Series<'_>> = self
                    .top_skus
                    .iter()
                    .zip(SERIES)
                    .map(|((sku, n), colour)| {
                        let points = self.atp_timeline.get(sku).cloned().unwrap_or_default();
                        (format!("{sku} ({n} msgs)"), colour, points)
                    })
                    .collect();
                h.push_str(&step_chart("atp-timeline", "network ATP of the most active SKUs", start, end, &series));
            }
            _ => h.push_str(&no_data("atp-timeline", "no SKU had a message")),
        }
        let skus: BTreeSet<&str> = self.top_skus.iter().map(|(s, _)| s.as_str()).collect();
        let _ =
            writeln!(h, "\n<p class=\"note\">{} SKUs charted. Generated by stockflow replay --report.</p>", skus.len());
        h.push_str("</body>\n</html>\n");
        html
    }
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
    fn per_pixel_keeps_the_envelope_and_the_last_value() {
        // Ten points in one column, then one in the next.
        let points: Vec<(Millis, Option<i64>)> =
            (0..10).map(|t| (t, Some([5, 9, 1, 7, 3, 8, 2, 6, 4, 5][t as usize]))).chain([(100, None)]).collect();
        let reduced = per_pixel(&points, |t| t as f64 / 50.0);
        assert_eq!(reduced, vec![(0, Some(5)), (0, Some(1)), (0, Some(9)), (0, Some(5)), (100, None)]);
        let sparse = vec![(0, Some(1)), (60, Some(2))];
        assert_eq!(per_pixel(&sparse, |t| t as f64 / 50.0), sparse);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
