//! `replay --report FILE`: one self-contained HTML page (inline SVG, no scripts, no network)
//! for the planner who opens it in the morning and the engineer on call after a run: what is
//! out of stock or low, by location; what to order from whom, which distribution center is
//! short and by how much, each with the `stockflow explain` command that shows why; the run's
//! counts in plain words, sample dead letters with file:line, the version, command line and
//! duration; and charts of the run over time.
//!
//! Everything but the events per type comes from what the replay's sink receives (the change
//! streams of each closed tick, the final snapshot, the dead letters and the summary). Events
//! per type and SKU activity are counted by a pass over the input with the replay's own decoder
//! and clock, made when the sink is created. Only the run table (command line, start, duration)
//! depends on more than the input and the options.

mod charts;
mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use dataflows::allocation::PlanLine;
use dataflows::clock::Ticks;
use dataflows::ledger::Counter;
use dataflows::low_stock::{LowState, LowView};
use dataflows::model::{DeadLetter, Millis, Name};
use dataflows::Key;

use crate::config::secret::{is_secret, MASK};
use crate::config::{InputFile, ReplayConfig};
use crate::io::sink::{Sink, SinkError, Snapshot, Summary, TickBatch};
use crate::io::source::file::for_each_event;
use charts::{bar_pairs, no_data, stacked_chart, step_chart, Series, Timeline};
use html::{count, esc, more_rows, name_list, note, open_details, shell_word, table, when, Cell};

/// Message types in the input format's table order, with their chart colours.
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
/// Rows in the shortage chart and table, and sources in the order-plan chart.
const TOP_ROWS: usize = 15;
/// Rows of the per-location, per-key, short-source and vendor tables: a page stays readable
/// for a network of millions of keys; the files hold the rest.
const MAX_ROWS: usize = 100;
/// Names listed in one table cell or line (the SKUs out at a location, the input files).
const NAMES_LISTED: usize = 12;
/// Sample dead letters: this many per reason, at most `MAX_SAMPLES` in all.
const SAMPLES_PER_REASON: usize = 3;
const MAX_SAMPLES: usize = 30;
/// Characters of a sample dead letter's payload shown.
const PAYLOAD_CHARS: usize = 160;

/// A sink that gathers the run's timelines and writes the HTML page at the end.
pub struct ReportSink {
    /// Where the page is written.
    write: PathBuf,
    /// `--report` as given, for messages.
    shown: PathBuf,
    inputs: Vec<InputFile>,
    ticks: Ticks,
    lateness_ms: Millis,
    /// (workers per process, processes).
    cluster: (usize, usize),
    /// When the run started, by the wall clock and the monotonic clock.
    started: (SystemTime, Instant),
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
    /// Prepares a report of the replay `config` describes, to be written at the end to `write`
    /// (where [`super::staging`] keeps it until the run completes), named `shown` in messages.
    /// Reads the input once to count messages per type and tick.
    pub fn create(write: &Path, shown: &Path, config: &ReplayConfig) -> Result<Self, SinkError> {
        let started = (SystemTime::now(), Instant::now());
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
        Ok(ReportSink {
            write: write.to_path_buf(),
            shown: shown.to_path_buf(),
            inputs: config.inputs.clone(),
            ticks,
            lateness_ms: config.lateness_ms,
            cluster: (config.cluster.workers, config.cluster.processes),
            started,
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
        std::fs::write(&self.write, html).map_err(|error| SinkError::Report { path: self.shown.clone(), error })
    }
}

/// The page's style: plain tables, states in colour, commands in a monospace font.
const STYLE: &str = "<style>\n\
body{font-family:sans-serif;margin:24px;color:#222;background:#fff;max-width:1140px}\n\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:14px;margin-top:18px}\n\
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\n\
td.n{text-align:right}.note{color:#555;font-size:13px}.glance{font-size:15px}\n\
td.OUT{color:#fff;background:#e74c3c;font-weight:bold}td.LOW{background:#ffe1b0;font-weight:bold}\n\
code{font-size:12px;background:#f4f4f4;padding:1px 3px;overflow-wrap:anywhere}code .w{white-space:nowrap}nav a{margin-right:14px}\n\
summary{cursor:pointer;font-size:13px;margin:6px 0}\n\
svg .tick{font-size:11px;fill:#555}svg .legend{font-size:12px;fill:#222}\n</style>\n";

impl ReportSink {
    fn render(&self, dead_letters: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> String {
        let mut h = String::new();
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        h.push_str("<title>stockflow replay report</title>\n");
        h.push_str(STYLE);
        h.push_str("</head>\n<body>\n<h1>stockflow replay report</h1>\n");
        let plan = PlanView::new(snapshot);
        self.glance(&mut h, snapshot, &plan, summary);
        let explain = ExplainCommand::new(&self.inputs, self.ticks, self.lateness_ms);
        stock_section(&mut h, snapshot, &explain);
        order_section(&mut h, snapshot, &plan, &explain);
        self.charts_section(&mut h, summary);
        counts_section(&mut h, snapshot, &plan, summary);
        self.dead_letter_section(&mut h, dead_letters);
        self.run_table(&mut h);
        h.push_str("<p class=\"note\">Generated by stockflow replay --report.</p>\n</body>\n</html>\n");
        h
    }

    /// The headline: the window, what is out, low and short, what was rejected; the contents.
    fn glance(&self, h: &mut String, snapshot: &Snapshot, plan: &PlanView, summary: &Summary) {
        let (low, out) = low_out(&snapshot.low_stock);
        let locations: std::collections::BTreeSet<&str> = snapshot.low_stock.keys().map(Key::second).collect();
        let state = summary.as_of.map_or("nothing was applied".to_string(), |t| format!("state as of {}", when(t)));
        let short_units: i64 = plan.short_sources.iter().map(|s| s.requested - s.allotted).sum();
        let short_sources: std::collections::BTreeSet<&str> = plan.short_sources.iter().map(|s| s.source).collect();
        let short = match short_sources.len() {
            0 => "no distribution center is short".to_string(),
            n => format!(
                "<b>{}</b> short by <b>{short_units}</b> units in all",
                count(n, "distribution center", "distribution centers")
            ),
        };
        let _ = writeln!(
            h,
            "<p class=\"glance\" id=\"glance\">{}: <b>{}</b> out of stock and <b>{low}</b> low at {}; \
             {}, <b>{}</b> short; {short}; {} read, <a href=\"#dead-letters\"><b>{}</b> rejected</a>.</p>",
            esc(&state),
            count(out, "key", "keys"),
            count(locations.len(), "location", "locations"),
            count(snapshot.order_plan.len(), "order line", "order lines"),
            plan.short_lines.len(),
            count(summary.sources.read as usize, "message", "messages"),
            summary.sources.rejected,
        );
        let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        let _ = writeln!(
            h,
            "<p class=\"note\">inputs: {}; tick {} ms; lateness {} ms; window end {}</p>",
            esc(&name_list(&names, NAMES_LISTED)),
            self.ticks.tick_ms,
            self.lateness_ms,
            summary.as_of.map_or("none (nothing applied)".to_string(), |t| format!("{} ({t})", esc(&when(t))))
        );
        h.push_str("<nav><a href=\"#stock\">Out of stock and low</a><a href=\"#orders\">What to order</a>");
        h.push_str("<a href=\"#over-time\">Over time</a><a href=\"#counts\">Counts</a>");
        h.push_str("<a href=\"#dead-letters\">Dead letters</a><a href=\"#run\">Run</a></nav>\n");
    }

    /// The version, the command line (secrets masked), when the run started and how long it took.
    fn run_table(&self, h: &mut String) {
        let (workers, processes) = self.cluster;
        let started = self.started.0.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis);
        h.push_str("\n<h2 id=\"run\">Run</h2>\n");
        table(
            h,
            "run-table",
            &[],
            [
                vec![Cell::text("version"), Cell::Code(format!("stockflow {}", env!("CARGO_PKG_VERSION")))],
                vec![Cell::text("command"), Cell::Command(masked_command_line(std::env::args()))],
                vec![Cell::text("started"), Cell::text(when(started))],
                vec![Cell::text("duration"), Cell::text(html::duration(self.started.1.elapsed()))],
                vec![
                    Cell::text("workers"),
                    Cell::text(format!("{} per process, {}", workers, count(processes, "process", "processes"))),
                ],
            ],
        );
    }
}

/// The process's command line with every secret value (as `config check` masks them: a key
/// naming a password, a secret, a key, a token, ...) replaced by the mask.
fn masked_command_line(args: impl Iterator<Item = String>) -> String {
    let mut words = Vec::new();
    let mut mask_next = false;
    for arg in args {
        let flag = arg.trim_start_matches('-');
        if mask_next {
            words.push(MASK.to_string());
            mask_next = false;
        } else if let Some((key, _)) = arg.split_once('=').filter(|(k, _)| is_secret(k.trim_start_matches('-'))) {
            words.push(format!("{}={MASK}", shell_word(key)));
        } else {
            mask_next = arg.starts_with("--") && is_secret(flag);
            words.push(shell_word(&arg));
        }
    }
    words.join(" ")
}

/// LOW and OUT keys among the current low-stock states.
fn low_out(states: &BTreeMap<Key, LowView>) -> (usize, usize) {
    let count = |state| states.values().filter(|v| v.state == state).count();
    (count(LowState::Low), count(LowState::Out))
}

/// The `stockflow explain` command for a key of this run: its inputs and options.
struct ExplainCommand {
    prefix: String,
}

impl ExplainCommand {
    fn new(inputs: &[InputFile], ticks: Ticks, lateness_ms: Millis) -> ExplainCommand {
        let mut words = vec!["stockflow".to_string(), "explain".to_string()];
        words.extend(input_args(inputs).iter().map(|a| shell_word(a)));
        // The replay's defaults are explain's: only other values are spelled out.
        if ticks.tick_ms != 1000 {
            words.push(format!("--tick-ms {}", ticks.tick_ms));
        }
        if lateness_ms != 0 {
            words.push(format!("--lateness-ms {lateness_ms}"));
        }
        if let Some(until) = ticks.until {
            words.push(format!("--until {until}"));
        }
        ExplainCommand { prefix: words.join(" ") }
    }

    fn key(&self, sku: &str, loc: &str) -> String {
        format!("{} --sku {} --loc {}", self.prefix, shell_word(sku), shell_word(loc))
    }
}

/// The input arguments that name these files: a directory when the files are all of its
/// `*.jsonl` files (as the replay was most likely given), else the files one by one.
fn input_args(inputs: &[InputFile]) -> Vec<String> {
    let mut by_dir: Vec<(&Path, Vec<&Path>)> = Vec::new();
    for input in inputs {
        let dir = input.path.parent().unwrap_or(Path::new(""));
        match by_dir.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, files)) => files.push(&input.path),
            None => by_dir.push((dir, vec![&input.path])),
        }
    }
    let mut args = Vec::new();
    for (dir, mut files) in by_dir {
        let mut in_dir: Vec<PathBuf> = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        in_dir.retain(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file());
        in_dir.sort();
        files.sort();
        let whole = !dir.as_os_str().is_empty()
            && in_dir.len() == files.len()
            && in_dir.iter().zip(&files).all(|(a, b)| a.file_name() == b.file_name());
        if whole {
            args.push(dir.display().to_string());
        } else {
            args.extend(files.iter().map(|f| f.display().to_string()));
        }
    }
    args
}

/// Out of stock and low at the end of the window, by location, then key by key.
fn stock_section(h: &mut String, snapshot: &Snapshot, explain: &ExplainCommand) {
    h.push_str("<h2 id=\"stock\">Out of stock and low, by location</h2>\n");
    if snapshot.low_stock.is_empty() {
        note(h, "No key is out of stock or low at the end of the window.");
        return;
    }
    let mut by_loc: BTreeMap<&str, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
    for (key, view) in &snapshot.low_stock {
        let (sku, loc) = key.parts();
        let (out, low) = by_loc.entry(loc).or_default();
        match view.state {
            LowState::Out => out.push(sku),
            LowState::Low => low.push(sku),
            LowState::Ok => {}
        }
    }
    let mut locations: Vec<(&str, (Vec<&str>, Vec<&str>))> = by_loc.into_iter().collect();
    locations.sort_by(|a, b| (b.1 .0.len(), b.1 .1.len()).cmp(&(a.1 .0.len(), a.1 .1.len())).then(a.0.cmp(b.0)));
    note(
        h,
        "OUT: available (on hand - reserved) <= 0. LOW: position (on hand + on order - reserved - outbound) \
         <= the reorder point. Locations with the most keys out of stock first.",
    );
    let rows = locations.iter().take(MAX_ROWS).map(|(loc, (out, low))| {
        vec![
            Cell::text(*loc),
            Cell::Num(out.len() as i64),
            Cell::Num(low.len() as i64),
            Cell::text(name_list(out, NAMES_LISTED)),
            Cell::text(name_list(low, NAMES_LISTED)),
        ]
    });
    table(h, "stock-by-location", &["location", "OUT", "LOW", "out of stock", "low"], rows);
    more_rows(h, locations.len().min(MAX_ROWS), locations.len(), "snapshot/low_stock.jsonl");
    stock_keys(h, snapshot, explain);
}

/// The LOW and OUT keys, worst first, with what is on order and planned for each.
fn stock_keys(h: &mut String, snapshot: &Snapshot, explain: &ExplainCommand) {
    let mut keys: Vec<(&Key, &LowView)> = snapshot.low_stock.iter().collect();
    let gap = |v: &LowView| v.position - v.reorder_point.unwrap_or(0);
    keys.sort_by(|a, b| (b.1.state, gap(a.1)).cmp(&(a.1.state, gap(b.1))).then(a.0.cmp(b.0)));
    h.push_str("<h3>Key by key</h3>\n");
    open_details(h, keys.len(), &format!("all {}, worst first", count(keys.len(), "key", "keys")));
    let _ = writeln!(
        h,
        "<p class=\"note\">Worst first (OUT, then the furthest below the reorder point). Why a key is where it is: \
         {}</p>",
        html::command_html(&explain.key("SKU", "LOC"))
    );
    let rows = keys.iter().take(MAX_ROWS).map(|(key, view)| {
        let (sku, loc) = key.parts();
        let on_order = snapshot.atp.get(*key).map_or(0, |row| row.on_order);
        let planned = snapshot
            .order_plan
            .get(&Key::new(loc, sku))
            .map_or("no order line".to_string(), |l| format!("{} of {} from {}", l.qty, l.requested, l.source));
        vec![
            Cell::State(view.state),
            Cell::text(sku),
            Cell::text(loc),
            Cell::Num(view.available),
            Cell::Num(view.position),
            view.reorder_point.map_or(Cell::text("-"), Cell::Num),
            Cell::Num(on_order),
            Cell::text(planned),
        ]
    });
    let headers = ["state", "sku", "loc", "available", "position", "reorder point", "on order", "planned order"];
    table(h, "stock-keys", &headers, rows);
    more_rows(h, keys.len().min(MAX_ROWS), keys.len(), "snapshot/low_stock.jsonl");
    h.push_str("</details>\n");
}

/// The order plan seen by source: totals per source and the internal sources that are short.
struct PlanView<'s> {
    /// Per source: requested, allotted (qty) and lines; largest request first.
    by_source: Vec<(&'s str, i64, i64, usize)>,
    /// Internal sources whose lines for a SKU get less than they request, most short first.
    short_sources: Vec<ShortSource<'s>>,
    /// Lines with qty < requested, the largest gap first.
    short_lines: Vec<(&'s Key, &'s PlanLine)>,
}

/// One (internal source, sku) whose supply does not cover its lines.
struct ShortSource<'s> {
    source: &'s str,
    sku: &'s str,
    /// The source's atp for the sku: what allocation shares out.
    supply: i64,
    requested: i64,
    allotted: i64,
    lines: usize,
    short_lines: usize,
}

impl<'s> PlanView<'s> {
    fn new(snapshot: &'s Snapshot) -> PlanView<'s> {
        let mut by_source: BTreeMap<&str, (i64, i64, usize)> = BTreeMap::new();
        let mut internal: BTreeMap<(&str, &str), (i64, i64, usize, usize)> = BTreeMap::new();
        for (key, line) in &snapshot.order_plan {
            let sku = key.second();
            let e = by_source.entry(line.source.as_str()).or_default();
            *e = (e.0 + line.requested, e.1 + line.qty, e.2 + 1);
            if !line.source.starts_with("vendor:") {
                let e = internal.entry((line.source.as_str(), sku)).or_default();
                *e = (e.0 + line.requested, e.1 + line.qty, e.2 + 1, e.3 + usize::from(line.qty < line.requested));
            }
        }
        let mut by_source: Vec<(&str, i64, i64, usize)> =
            by_source.into_iter().map(|(s, (r, q, n))| (s, r, q, n)).collect();
        by_source.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut short_sources: Vec<ShortSource<'_>> = internal
            .into_iter()
            .filter(|(_, (requested, allotted, _, _))| allotted < requested)
            .map(|((source, sku), (requested, allotted, lines, short_lines))| ShortSource {
                source,
                sku,
                supply: snapshot.atp.get(&Key::new(sku, source)).map_or(0, |row| row.atp),
                requested,
                allotted,
                lines,
                short_lines,
            })
            .collect();
        short_sources.sort_by(|a, b| (b.requested - b.allotted).cmp(&(a.requested - a.allotted)));
        let mut short_lines: Vec<(&Key, &PlanLine)> =
            snapshot.order_plan.iter().filter(|(_, l)| l.qty < l.requested).collect();
        short_lines.sort_by(|a, b| (b.1.requested - b.1.qty).cmp(&(a.1.requested - a.1.qty)).then(a.0.cmp(b.0)));
        PlanView { by_source, short_sources, short_lines }
    }
}

/// What to order from whom, which distribution centers are short, the largest shortages.
fn order_section(h: &mut String, snapshot: &Snapshot, plan: &PlanView, explain: &ExplainCommand) {
    h.push_str("\n<h2 id=\"orders\">What to order</h2>\n");
    if plan.by_source.is_empty() {
        h.push_str(&no_data("order-plan-by-source", "the order plan is empty"));
        h.push('\n');
        return;
    }
    h.push_str("<h3>By source</h3>\n");
    let kind = |s: &str| if s.starts_with("vendor:") { "vendor" } else { "distribution center" };
    let rows = plan.by_source.iter().take(MAX_ROWS).map(|(source, requested, qty, lines)| {
        vec![
            Cell::text(*source),
            Cell::text(kind(source)),
            Cell::Num(*lines as i64),
            Cell::Num(*requested),
            Cell::Num(*qty),
            Cell::Num(requested - qty),
        ]
    });
    table(h, "orders-by-source", &["source", "kind", "lines", "requested", "allotted (qty)", "short"], rows);
    more_rows(h, plan.by_source.len().min(MAX_ROWS), plan.by_source.len(), "snapshot/order_plan.jsonl");
    let rows: Vec<(String, i64, i64)> =
        plan.by_source.iter().take(TOP_ROWS).map(|(s, r, q, n)| (format!("{s} ({n} lines)"), *r, *q)).collect();
    let title = "order plan totals by source";
    h.push_str(&bar_pairs("order-plan-by-source", title, &rows, ("requested", "qty"), PLAN_COLOURS));
    if plan.by_source.len() > TOP_ROWS {
        let _ = writeln!(h, "<p class=\"note\">{} smaller sources not shown</p>", plan.by_source.len() - TOP_ROWS);
    }
    short_sources(h, plan, explain);
    shortages(h, plan, explain);
    vendor_orders(h, snapshot);
}

/// Distribution centers whose supply does not cover their stores' lines, and by how much.
fn short_sources(h: &mut String, plan: &PlanView, explain: &ExplainCommand) {
    h.push_str("<h3>Short distribution centers</h3>\n");
    if plan.short_sources.is_empty() {
        note(h, "No distribution center is short: every line on one gets what it requests.");
        return;
    }
    note(
        h,
        "A distribution center shares its supply (its atp for the SKU) among its stores' lines in packs, \
         in proportion to what each requests; these get less than their stores request.",
    );
    let rows = plan.short_sources.iter().take(MAX_ROWS).map(|s| {
        vec![
            Cell::text(s.source),
            Cell::text(s.sku),
            Cell::Num(s.supply),
            Cell::Num(s.requested),
            Cell::Num(s.allotted),
            Cell::Num(s.requested - s.allotted),
            Cell::text(format!("{} of {}", s.short_lines, s.lines)),
            Cell::Command(explain.key(s.sku, s.source)),
        ]
    });
    let headers = ["source", "sku", "supply (atp)", "requested", "allotted", "short by", "lines short", "why"];
    table(h, "short-sources", &headers, rows);
    more_rows(h, plan.short_sources.len().min(MAX_ROWS), plan.short_sources.len(), "snapshot/order_plan.jsonl");
}

/// The order lines that get the least of what they request.
fn shortages(h: &mut String, plan: &PlanView, explain: &ExplainCommand) {
    h.push_str("<h3>Top shortages</h3>\n");
    if plan.short_lines.is_empty() {
        h.push_str(&no_data("shortages", "no shortage: every order line gets what it requests"));
        h.push('\n');
        return;
    }
    let _ = writeln!(
        h,
        "<p class=\"note\">{} order lines get less than they request; the largest gaps:</p>",
        plan.short_lines.len()
    );
    let top = &plan.short_lines[..plan.short_lines.len().min(TOP_ROWS)];
    let rows: Vec<(String, i64, i64)> =
        top.iter().map(|(key, l)| (format!("{} @ {}", key.second(), key.first()), l.requested, l.qty)).collect();
    h.push_str(&bar_pairs("shortages", "top shortages", &rows, ("requested", "qty"), SHORTAGE_COLOURS));
    h.push('\n');
    let rows = top.iter().map(|(key, l)| {
        let (dest, sku) = key.parts();
        vec![
            Cell::text(sku),
            Cell::text(dest),
            Cell::text(l.source.as_str()),
            Cell::Num(l.requested),
            Cell::Num(l.qty),
            Cell::Num(l.requested - l.qty),
            Cell::Command(explain.key(sku, dest)),
        ]
    });
    table(h, "shortage-table", &["sku", "dest", "source", "requested", "qty", "short", "why"], rows);
}

/// What to order from each vendor: its lines as SKU -> destination and quantity.
fn vendor_orders(h: &mut String, snapshot: &Snapshot) {
    h.push_str("<h3>Orders to vendors</h3>\n");
    let mut by_vendor: BTreeMap<&str, Vec<(&str, &str, i64)>> = BTreeMap::new();
    for (key, line) in &snapshot.order_plan {
        if line.source.starts_with("vendor:") {
            let (dest, sku) = key.parts();
            by_vendor.entry(line.source.as_str()).or_default().push((sku, dest, line.qty));
        }
    }
    if by_vendor.is_empty() {
        note(h, "No line orders from a vendor.");
        return;
    }
    let rows = by_vendor.iter_mut().take(MAX_ROWS).map(|(vendor, lines)| {
        lines.sort();
        let named: Vec<String> = lines.iter().map(|(sku, dest, qty)| format!("{sku} \u{2192} {dest} {qty}")).collect();
        let named: Vec<&str> = named.iter().map(String::as_str).collect();
        vec![
            Cell::text(*vendor),
            Cell::Num(lines.len() as i64),
            Cell::Num(lines.iter().map(|l| l.2).sum()),
            Cell::text(name_list(&named, MAX_ROWS)),
        ]
    });
    let rows: Vec<Vec<Cell>> = rows.collect();
    table(h, "vendor-orders", &["vendor", "lines", "qty", "sku \u{2192} deliver to, qty"], rows);
    more_rows(h, by_vendor.len().min(MAX_ROWS), by_vendor.len(), "snapshot/order_plan.jsonl");
}

/// The run's counts in plain words, beside their names in summary.json.
fn counts_section(h: &mut String, snapshot: &Snapshot, plan: &PlanView, summary: &Summary) {
    h.push_str("\n<h2 id=\"counts\">Counts</h2>\n");
    let s = &summary.sources;
    let counter = |c| summary.counters.get(&c).copied().unwrap_or(0);
    let as_of = summary.as_of.map_or("none: nothing applied and no --until".to_string(), when);
    let (low, out) = low_out(&snapshot.low_stock);
    let n = |v: u64| Cell::Num(v as i64);
    let rows: [(&str, Cell, &str); 15] = [
        ("messages read (non-blank lines)", n(s.read), "read"),
        ("messages applied", n(s.applied), "applied"),
        ("messages rejected, written to the dead letters", n(s.rejected), "rejected"),
        ("beyond the window (after --until), not applied", n(s.beyond_window), "beyond_window"),
        ("late: applied at a raised effective time", n(s.late), "late"),
        ("absorbed: older than the key's latest count", Cell::Num(counter(Counter::Absorbed)), "absorbed"),
        ("orphan releases and fulfills (no active hold)", Cell::Num(counter(Counter::Orphan)), "orphan"),
        ("duplicate reserves (hold already active)", Cell::Num(counter(Counter::Duplicate)), "duplicate"),
        ("reserves expired on arrival", Cell::Num(counter(Counter::ExpiredOnArrival)), "expired_on_arrival"),
        ("state as of (the window's end)", Cell::text(as_of), "as_of"),
        ("keys with an ATP row", Cell::Num(snapshot.atp.len() as i64), "snapshot/atp.jsonl"),
        ("keys out of stock", Cell::Num(out as i64), "snapshot/low_stock.jsonl"),
        ("keys low", Cell::Num(low as i64), "snapshot/low_stock.jsonl"),
        ("order lines", Cell::Num(snapshot.order_plan.len() as i64), "snapshot/order_plan.jsonl"),
        ("order lines short", Cell::Num(plan.short_lines.len() as i64), "snapshot/order_plan.jsonl"),
    ];
    let rows = rows.into_iter().map(|(name, value, key)| vec![Cell::text(name), value, Cell::Code(key.to_string())]);
    table(h, "summary", &["count", "number", "in the output"], rows);
    let balanced = s.read == s.applied + s.rejected + s.beyond_window;
    let verdict = if balanced { "holds" } else { "does NOT hold: a bug, please report it with this page" };
    note(
        h,
        &format!(
            "read = applied + rejected + beyond the window: {} = {} + {} + {}, {verdict}.",
            s.read, s.applied, s.rejected, s.beyond_window
        ),
    );
}

/// What a dead letter's reason means.
fn reason_meaning(reason: &str) -> String {
    match reason.split_once(':') {
        Some(("missing_field", field)) => format!("the required field {field} is absent or null"),
        Some(("invalid_field", field)) => format!("the field {field} has the wrong JSON type or is out of range"),
        _ => match reason {
            "invalid_json" => "not UTF-8, not JSON, or not a JSON object",
            "unknown_type" => "the type field is missing or names no message type",
            _ => "",
        }
        .to_string(),
    }
}

impl ReportSink {
    /// Dead letters by reason, then a few of each with file:line.
    fn dead_letter_section(&self, h: &mut String, dead_letters: &[DeadLetter]) {
        h.push_str("\n<h2 id=\"dead-letters\">Dead letters</h2>\n");
        if dead_letters.is_empty() {
            note(h, "No message was rejected.");
            return;
        }
        let mut reasons: BTreeMap<&str, Vec<&DeadLetter>> = BTreeMap::new();
        for d in dead_letters {
            reasons.entry(d.reason.as_str()).or_default().push(d);
        }
        let parts: Vec<String> = reasons.iter().map(|(r, all)| format!("{r} {}", all.len())).collect();
        note(h, &format!("rejected by reason: {}", parts.join(", ")));
        let rows = reasons.iter().map(|(reason, all)| {
            vec![Cell::Command(reason.to_string()), Cell::Num(all.len() as i64), Cell::text(reason_meaning(reason))]
        });
        table(h, "dead-letter-reasons", &["reason", "messages", "meaning"], rows);
        let mut samples: Vec<&DeadLetter> =
            reasons.values().flat_map(|all| all.iter().take(SAMPLES_PER_REASON).copied()).collect();
        samples.sort_by_key(|d| d.position);
        samples.truncate(MAX_SAMPLES);
        note(
            h,
            &format!("The first {SAMPLES_PER_REASON} of each reason, in input order; all are in dead_letter.jsonl."),
        );
        let rows = samples.iter().map(|d| {
            let file = self.inputs.get(d.position.source as usize).map_or(PathBuf::new(), |i| i.path.clone());
            let mut payload: String = d.payload.chars().take(PAYLOAD_CHARS).collect();
            if d.payload.chars().nth(PAYLOAD_CHARS).is_some() {
                payload.push_str(" ...");
            }
            vec![
                Cell::Command(format!("{}:{}", file.display(), d.position.offset)),
                Cell::Command(d.reason.clone()),
                Cell::Code(payload),
            ]
        });
        table(h, "dead-letters", &["file:line", "reason", "message"], rows);
    }

    /// The charts over time: messages per type, LOW and OUT keys, network ATP of the busiest SKUs.
    fn charts_section(&self, h: &mut String, summary: &Summary) {
        h.push_str("\n<h2 id=\"over-time\">Over time</h2>\n<h3>Applied messages per type</h3>\n");
        let line = self.events.keys().next().map(|first| {
            let last = *self.events.keys().next_back().unwrap_or(first);
            Timeline::new(*first, summary.as_of.unwrap_or(last), self.ticks.tick_ms, MAX_BUCKETS)
        });
        let Some(line) = line else {
            h.push_str(&no_data("events-per-type", "no message was applied"));
            h.push_str(&no_data("low-stock", "no key was ever LOW or OUT"));
            h.push_str(&no_data("atp-timeline", "no SKU had a message"));
            h.push('\n');
            return;
        };
        h.push_str(&stacked_chart(
            "events-per-type",
            "applied messages per type over time",
            line,
            &self.events,
            &TYPES,
        ));
        h.push_str("\n<h3>Keys out of stock and low</h3>\n");
        if self.low_timeline.is_empty() {
            h.push_str(&no_data("low-stock", "no key was ever LOW or OUT"));
        } else {
            let (mut low, mut out) = (vec![(line.start, Some(0))], vec![(line.start, Some(0))]);
            for (t, l, o) in &self.low_timeline {
                low.push((*t, Some(*l)));
                out.push((*t, Some(*o)));
            }
            let series = [("LOW keys".to_string(), LOW_COLOURS.0, low), ("OUT keys".to_string(), LOW_COLOURS.1, out)];
            h.push_str(&step_chart("low-stock", "LOW and OUT keys over time", line.start, line.end, &series));
        }
        h.push_str("\n<h3>Network ATP of the most active SKUs</h3>\n");
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
                (format!("{sku} ({n} msgs)"), colour, self.atp_timeline.get(sku).cloned().unwrap_or_default())
            })
            .collect();
        h.push_str(&step_chart("atp-timeline", "network ATP of the most active SKUs", line.start, line.end, &series));
        h.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_on_the_command_line_are_masked() {
        let args = ["stockflow", "run", "-X", "sasl.password=hunter2", "--sasl-token", "abc", "--topics", "a b"];
        let line = masked_command_line(args.iter().map(|a| a.to_string()));
        assert_eq!(line, "stockflow run -X sasl.password=**** --sasl-token **** --topics 'a b'");
    }

    #[test]
    fn reasons_read_plainly() {
        assert_eq!(reason_meaning("invalid_field:qty"), "the field qty has the wrong JSON type or is out of range");
        assert_eq!(reason_meaning("missing_field:sku"), "the required field sku is absent or null");
        assert_eq!(reason_meaning("invalid_json"), "not UTF-8, not JSON, or not a JSON object");
    }
}
