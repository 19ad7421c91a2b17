//! `replay --report FILE`: the page is the same bytes at any worker count (but for the run
//! table), self-contained (no fetches, no scripts), its numbers are the run's: what is out of
//! stock and low by location, what to order from whom and which distribution center is short
//! by how much (with an `explain` command that runs), counts in plain words, sample dead
//! letters with file:line, the version and the command line; everything is escaped, and bad
//! paths are refused with a message. The rendering in a real browser is tests/report_browser.rs.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

fn replay_with_report(case: &str, workers: &str) -> (tempfile::TempDir, String) {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let report = tmp.path().join("report.html");
    let report_arg = report.display().to_string();
    let r = replay_case(case, &out, &["-w", workers, "--report", &report_arg]).unwrap();
    assert!(r.success());
    let html = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{}: {e}", report.display()));
    (tmp, html)
}

/// The page without its run table (command line, start, duration: the only part that depends
/// on more than the input and the options).
fn without_run_table(html: &str) -> String {
    let start = html.find("<table id=\"run-table\">").expect("a run table");
    let end = start + html[start..].find("</table>").unwrap();
    format!("{}{}", &html[..start], &html[end..])
}

/// Text with its tags removed and its entities decoded.
fn text_of(cell: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in cell.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

/// The rows of the table with this id (the header row first, if any), each cell as text.
fn table(html: &str, id: &str) -> Vec<Vec<String>> {
    let start = html.find(&format!("<table id=\"{id}\">")).unwrap_or_else(|| panic!("no table {id}"));
    let body = &html[start..start + html[start..].find("</table>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<t")
                .skip(1)
                .filter(|cell| cell.starts_with('d') || cell.starts_with('h'))
                .map(|cell| text_of(&cell[cell.find('>').unwrap() + 1..cell.find("</t").unwrap_or(cell.len())]))
                .collect()
        })
        .collect()
}

/// The row of table `id` whose first cells are `first`.
fn row<'t>(rows: &'t [Vec<String>], first: &[&str]) -> &'t Vec<String> {
    rows.iter()
        .find(|r| r.len() >= first.len() && r.iter().zip(first).all(|(cell, want)| cell == want))
        .unwrap_or_else(|| panic!("no row {first:?} in {rows:?}"))
}

/// The text of every `<text class="legend">` element, in order.
fn legends(html: &str) -> Vec<String> {
    html.split("class=\"legend\">").skip(1).map(|rest| rest[..rest.find('<').unwrap()].to_string()).collect()
}

#[test]
fn report_bytes_do_not_depend_on_workers_and_outputs_are_unchanged() {
    for case in ["basic", "medium"] {
        let (tmp1, one) = replay_with_report(case, "1");
        let (_tmp3, three) = replay_with_report(case, "3");
        let (one, three) = (without_run_table(&one), without_run_table(&three));
        assert_eq!(first_difference(one.as_bytes(), three.as_bytes()), None, "{case}: -w 1 vs -w 3");
        let expected = fixtures_dir().join(case).join("expected");
        compare_outputs(&expected, &tmp1.path().join("out"), false).unwrap_or_else(|d| panic!("{case}: {d}"));
    }
}

#[test]
fn report_is_self_contained() {
    let (_tmp, html) = replay_with_report("medium", "1");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for banned in ["<script", "<link", "src=", "url(", "@import", "<iframe", "<img"] {
        assert!(!html.contains(banned), "the report contains {banned:?}");
    }
    // Links only within the page (the contents), each to an element that is there.
    for (at, _) in html.match_indices("href=") {
        let target = &html[at + 6..at + 6 + html[at + 6..].find('"').unwrap()];
        assert!(target.starts_with('#'), "a link out of the page: {target}");
        assert!(html.contains(&format!("id=\"{}\"", &target[1..])), "a link to nothing: {target}");
    }
    let http: Vec<&str> = html.match_indices("http").map(|(i, _)| &html[i..i + 30]).collect();
    assert!(http.iter().all(|h| h.starts_with("http://www.w3.org/2000/svg")), "{http:?}");
    for id in ["events-per-type", "low-stock", "order-plan-by-source", "shortages", "atp-timeline"] {
        assert!(html.contains(&format!("<svg id=\"{id}\" class=\"chart\"")), "no chart {id}");
    }
}

#[test]
fn report_numbers_are_the_runs() {
    let (tmp, html) = replay_with_report("medium", "1");
    let out = tmp.path().join("out");
    let summary = read_json(&out.join("summary.json"));
    let legends = legends(&html);

    // Events per type: the legend totals add up to the applied messages.
    let types = ["sale", "return", "receipt", "adjust", "count", "reserve", "release", "fulfill", "po", "policy"];
    let mut applied = 0;
    for t in types {
        let entry = legends.iter().find(|l| l.starts_with(&format!("{t} "))).unwrap_or_else(|| panic!("no {t}"));
        applied += entry[t.len() + 1..].parse::<u64>().unwrap();
    }
    assert_eq!(Some(applied), summary["applied"].as_u64());

    // Order-plan totals by source: each bar's label is requested / qty summed over the snapshot.
    let mut by_source: BTreeMap<String, (i64, i64, usize)> = BTreeMap::new();
    let plan = read_jsonl(&out.join("snapshot/order_plan.jsonl"));
    for line in &plan {
        let e = by_source.entry(line["source"].as_str().unwrap().to_string()).or_default();
        e.0 += line["requested"].as_i64().unwrap();
        e.1 += line["qty"].as_i64().unwrap();
        e.2 += 1;
    }
    assert!(by_source.len() > 2);
    for (source, (requested, qty, lines)) in &by_source {
        let label = format!("{source} ({lines} lines)</text>");
        let at = html.find(&label).unwrap_or_else(|| panic!("no bar for {source}"));
        let after = &html[at..];
        assert!(after.contains(&format!("class=\"tick\">{requested} / {qty}</text>")), "{source}: {requested} / {qty}");
    }

    // Top shortages: the table's rows are the snapshot's lines with qty < requested, largest first.
    let mut short: Vec<(i64, String, String, i64, i64, String)> = plan
        .iter()
        .filter(|l| l["qty"].as_i64() < l["requested"].as_i64())
        .map(|l| {
            let (r, q) = (l["requested"].as_i64().unwrap(), l["qty"].as_i64().unwrap());
            let name = |f: &str| l[f].as_str().unwrap().to_string();
            (q - r, name("dest"), name("sku"), r, q, name("source"))
        })
        .collect();
    short.sort();
    assert!(html.contains(&format!("<p class=\"note\">{} order lines get less than they request", short.len())));
    let table = &html[html.find("<table id=\"shortage-table\">").unwrap()..];
    let rows: Vec<&str> = table.split("<tr>").skip(2).take(15).collect();
    assert_eq!(rows.len(), short.len().min(15));
    for (row, (_, dest, sku, r, q, source)) in rows.iter().zip(&short) {
        let expected = format!("<td>{sku}</td><td>{dest}</td><td>{source}</td>");
        assert!(row.starts_with(&expected), "{row} vs {sku}@{dest}");
        assert!(
            row.contains(&format!("<td class=\"n\">{r}</td><td class=\"n\">{q}</td><td class=\"n\">{}</td>", r - q))
        );
    }

    // The ATP timeline: the most active SKUs, each drawn, ending at the snapshot's network ATP.
    let network: BTreeMap<String, i64> = read_jsonl(&out.join("snapshot/network_atp.jsonl"))
        .into_iter()
        .map(|r: Value| (r["sku"].as_str().unwrap().to_string(), r["atp"].as_i64().unwrap()))
        .collect();
    let skus: Vec<&String> = legends.iter().filter(|l| l.ends_with(" msgs)")).collect();
    assert_eq!(skus.len(), 5, "{legends:?}");
    let timeline = &html[html.find("<svg id=\"atp-timeline\"").unwrap()..];
    assert_eq!(timeline.matches("<path class=\"series\"").count(), 5);
    for sku in skus {
        let sku = sku.split(' ').next().unwrap();
        assert!(network.contains_key(sku), "{sku} has no network ATP");
    }
}

#[test]
fn a_run_without_valid_messages_still_writes_a_report() {
    let tmp = tempdir();
    let input = tmp.path().join("bad.jsonl");
    std::fs::write(&input, "not json\n{\"type\":\"teleport\"}\n").unwrap();
    let report = tmp.path().join("r.html");
    let r = replay(&[&input], &tmp.path().join("out"), &["--report", report.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("no message was applied"));
    assert!(html.contains("the order plan is empty"));
    assert!(html.contains("invalid_json 1, unknown_type 1"), "{html}");
}

#[test]
fn an_unwritable_report_path_is_refused_before_the_run() {
    let tmp = tempdir();
    let report = tmp.path().join("no/such/dir/r.html");
    let input = fixtures_dir().join("basic").join("input");
    let r = replay(&[&input], &tmp.path().join("out"), &["--report", report.to_str().unwrap()]);
    assert!(!r.success(), "{}", r.describe());
    assert!(r.stderr_str().contains("cannot write the report"), "{}", r.describe());
    assert!(!r.panicked(), "{}", r.describe());
}

/// `YYYY-MM-DD hh:mm:ss.mmm` of milliseconds since the epoch (UTC).
fn utc(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let (year, month, day) = dataflows::decode::civil_from_days(days);
    let (h, m, s) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{:03}", rem % 1000)
}

#[test]
fn a_planner_sees_what_is_out_and_low_by_location_and_which_dc_is_short() {
    let (tmp, html) = replay_with_report("allocation", "1");
    let out = tmp.path().join("out");
    let field = |v: &Value, f: &str| v[f].as_str().unwrap().to_string();
    let number = |v: &Value, f: &str| v[f].as_i64().unwrap();

    // Every LOW/OUT key of the snapshot is named under its location, and listed with its numbers.
    let low = read_jsonl(&out.join("snapshot/low_stock.jsonl"));
    assert!(low.len() > 2 && low.iter().any(|k| k["state"] == "OUT"), "the case has OUT and LOW keys");
    let by_location = table(&html, "stock-by-location");
    assert_eq!(by_location[0], ["location", "OUT", "LOW", "out of stock", "low"]);
    let locations: std::collections::BTreeSet<String> = low.iter().map(|k| field(k, "loc")).collect();
    assert_eq!(by_location.len() - 1, locations.len());
    let keys = table(&html, "stock-keys");
    for key in &low {
        let (sku, loc, state) = (field(key, "sku"), field(key, "loc"), field(key, "state"));
        let r = row(&by_location, &[&loc]);
        let names = if state == "OUT" { &r[3] } else { &r[4] };
        assert!(names.split(", ").any(|s| s == sku), "{sku} not named {state} at {loc}: {r:?}");
        let r = row(&keys, &[&state, &sku, &loc]);
        let numbers = [number(key, "available"), number(key, "position"), number(key, "reorder_point")];
        assert_eq!(r[3..6], numbers.map(|n| n.to_string()), "{sku}@{loc}");
    }

    // Which distribution center is short, by how much: recomputed from the snapshot's plan and rows.
    let plan = read_jsonl(&out.join("snapshot/order_plan.jsonl"));
    let atp: BTreeMap<(String, String), i64> = read_jsonl(&out.join("snapshot/atp.jsonl"))
        .iter()
        .map(|r| ((field(r, "sku"), field(r, "loc")), number(r, "atp")))
        .collect();
    let mut internal: BTreeMap<(String, String), (i64, i64, usize, usize)> = BTreeMap::new();
    for line in plan.iter().filter(|l| !field(l, "source").starts_with("vendor:")) {
        let e = internal.entry((field(line, "source"), field(line, "sku"))).or_default();
        let (r, q) = (number(line, "requested"), number(line, "qty"));
        *e = (e.0 + r, e.1 + q, e.2 + 1, e.3 + usize::from(q < r));
    }
    internal.retain(|_, (r, q, _, _)| q < r);
    let short = table(&html, "short-sources");
    assert_eq!(short.len() - 1, internal.len());
    assert!(internal.contains_key(&("DC9".to_string(), "B".to_string())), "the case's short DC: {internal:?}");
    let input = fixtures_dir().join("allocation").join("input");
    for ((source, sku), (requested, allotted, lines, short_lines)) in &internal {
        let supply = atp.get(&(sku.clone(), source.clone())).copied().unwrap_or(0);
        let r = row(&short, &[source, sku]);
        let numbers = [supply, *requested, *allotted, requested - allotted].map(|n| n.to_string());
        assert_eq!(r[2..6], numbers, "{source}/{sku}");
        assert_eq!(r[6], format!("{short_lines} of {lines}"));
        // The explain command beside it runs, and shows the same supply.
        let command = &r[7];
        assert!(command.starts_with("stockflow explain ") && command.contains(&input.display().to_string()));
        assert!(command.ends_with(&format!(" --sku {sku} --loc {source}")), "{command}");
        let shell = format!("'{}' {}", bin().display(), &command["stockflow ".len()..]);
        let run = std::process::Command::new("sh").args(["-c", &shell]).output().unwrap();
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{command}: {}", String::from_utf8_lossy(&run.stderr));
        assert!(text.contains(&format!("Why {sku} at {source}")), "{text}");
        assert!(text.contains(&format!("supply A = atp of ({sku}, {source}) = {supply}")), "{text}");
    }

    // The shortages name the line, its source, and the command to explain it.
    let shortages = table(&html, "shortage-table");
    for line in plan.iter().filter(|l| number(l, "qty") < number(l, "requested")) {
        let r = row(&shortages, &[&field(line, "sku"), &field(line, "dest"), &field(line, "source")]);
        assert!(r[6].ends_with(&format!("--sku {} --loc {}", field(line, "sku"), field(line, "dest"))), "{r:?}");
    }

    // What to order from each vendor: its lines and their total.
    let vendors = table(&html, "vendor-orders");
    let mut by_vendor: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in plan.iter().filter(|l| field(l, "source").starts_with("vendor:")) {
        let entry = format!("{} \u{2192} {} {}", field(line, "sku"), field(line, "dest"), number(line, "qty"));
        by_vendor.entry(field(line, "source")).or_default().push(entry);
    }
    assert_eq!(vendors.len() - 1, by_vendor.len());
    for (vendor, mut lines) in by_vendor {
        lines.sort();
        let total: i64 = lines.iter().map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap()).sum();
        assert_eq!(row(&vendors, &[&vendor])[1..], [lines.len().to_string(), total.to_string(), lines.join(", ")]);
    }
}

#[test]
fn counts_read_plainly_and_the_time_axis_ends_at_the_window_end() {
    let (tmp, html) = replay_with_report("medium", "1");
    let summary = read_json(&tmp.path().join("out").join("summary.json"));
    let rows = table(&html, "summary");
    let keys = ["read", "applied", "rejected", "beyond_window", "late", "absorbed", "orphan", "duplicate"];
    for key in keys.iter().chain(&["expired_on_arrival"]) {
        let r = rows.iter().find(|r| r[2] == *key).unwrap_or_else(|| panic!("no row for {key}"));
        assert_eq!(r[1], summary[key].to_string(), "{key}");
        assert!(r[0].len() > key.len() && !r[0].contains('_'), "{key} reads as {:?}", r[0]);
    }
    let as_of = summary["as_of"].as_u64().unwrap();
    assert_eq!(rows.iter().find(|r| r[2] == "as_of").unwrap()[1], format!("{} UTC", utc(as_of)));
    assert!(html.contains(&format!("state as of {} UTC", utc(as_of))), "the headline names the window's end");

    // The events chart's axis ends at the window's end, and so does its last bar.
    let svg = &html[html.find("<svg id=\"events-per-type\"").unwrap()..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    let labels: Vec<&str> =
        svg.split("class=\"tick\">").skip(1).map(|t| &t[..t.find('<').unwrap()]).filter(|t| t.contains(':')).collect();
    assert_eq!(labels.last().copied(), Some(&utc(as_of)[..19]), "{labels:?}");
    let attr = |rect: &str, name: &str| -> f64 {
        let at = rect.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        rect[at..at + rect[at..].find('"').unwrap()].parse().unwrap()
    };
    let rights: Vec<f64> = svg.split("<rect class=\"bar\"").skip(1).map(|r| attr(r, "x") + attr(r, "width")).collect();
    let plot_right = 1100.0 - 200.0;
    assert!(rights.iter().all(|r| *r <= plot_right + 0.05), "a bar runs past the window's end");
    assert!(rights.iter().any(|r| *r >= plot_right - 1.5), "the last bar does not reach the window's end");
}

#[test]
fn dead_letters_are_sampled_with_file_and_line() {
    let (tmp, html) = replay_with_report("medium", "1");
    let dead = read_jsonl(&tmp.path().join("out").join("dead_letter.jsonl"));
    assert!(dead.len() > 10);
    let mut per_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut samples = Vec::new();
    for d in &dead {
        let n = per_reason.entry(d["reason"].as_str().unwrap().to_string()).or_default();
        *n += 1;
        if *n <= 3 {
            samples.push(d);
        }
    }
    let reasons = table(&html, "dead-letter-reasons");
    assert_eq!(reasons.len() - 1, per_reason.len());
    for (reason, n) in &per_reason {
        let r = row(&reasons, &[reason]);
        assert_eq!(r[1], n.to_string());
        assert!(!r[2].is_empty(), "{reason} has no meaning");
    }
    let rows = table(&html, "dead-letters");
    assert_eq!(rows.len() - 1, samples.len().min(30));
    let input = fixtures_dir().join("medium").join("input");
    for (r, d) in rows[1..].iter().zip(&samples) {
        let file = input.join(d["source"].as_str().unwrap());
        assert_eq!(r[0], format!("{}:{}", file.display(), d["offset"]));
        assert_eq!(r[1], d["reason"].as_str().unwrap());
        let payload = d["payload"].as_str().unwrap();
        let shown: String = payload.chars().take(160).collect();
        assert!(r[2] == payload || r[2] == format!("{shown} ..."), "{r:?} vs {payload}");
    }
}

#[test]
fn the_run_table_names_version_command_and_duration() {
    let (tmp, html) = replay_with_report("basic", "2");
    let rows = table(&html, "run-table");
    assert_eq!(row(&rows, &["version"])[1], format!("stockflow {}", env!("CARGO_PKG_VERSION")));
    let command = &row(&rows, &["command"])[1];
    let report = tmp.path().join("report.html");
    assert!(command.starts_with(&bin().display().to_string()), "{command}");
    for part in [" replay ", " -w 2 ", &format!(" --report {}", report.display())] {
        assert!(command.contains(part), "{part} not in {command}");
    }
    let started = &row(&rows, &["started"])[1];
    assert!(started.starts_with("20") && started.ends_with(" UTC"), "{started}");
    let duration = &row(&rows, &["duration"])[1];
    let seconds: f64 = duration.strip_suffix(" s").and_then(|d| d.parse().ok()).unwrap_or(-1.0);
    assert!((0.0..60.0).contains(&seconds), "{duration}");
    assert_eq!(row(&rows, &["workers"])[1], "2 per process, 1 process");
}

#[test]
fn everything_on_the_page_is_escaped() {
    let tmp = tempdir();
    let input = tmp.path().join("odd.jsonl");
    let lines = [
        r#"{"type":"policy","ts":0,"sku":"<b>&x","loc":"'L\"<i>","reorder_point":5,"order_up_to":10,"source":"vendor:<script>"}"#,
        "<script>alert(1)</script>",
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let report = tmp.path().join("r.html");
    let r = replay(&[&input], &tmp.path().join("out"), &["--report", report.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
    let html = std::fs::read_to_string(&report).unwrap();
    for raw in ["<script", "<b>&", "<i>", "'L"] {
        assert!(!html.contains(raw), "unescaped {raw:?} on the page");
    }
    assert!(html.contains("&lt;b&gt;&amp;x") && html.contains("&#39;L&quot;&lt;i&gt;"));
    assert_eq!(row(&table(&html, "stock-keys"), &["OUT"])[1..3], ["<b>&x", "'L\"<i>"]);
    assert_eq!(row(&table(&html, "vendor-orders"), &["vendor:<script>"])[1], "1");
    assert_eq!(row(&table(&html, "dead-letters"), &[&format!("{}:2", input.display())])[2], lines[1]);
}
