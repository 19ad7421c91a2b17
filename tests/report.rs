//! `replay --report FILE`: the page is the same bytes at any worker count, self-contained (no
//! fetches, no scripts), its numbers are the run's, and bad paths are refused with a message.
//! The rendering in a real browser is tests/report_browser.rs.

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

/// The text of every `<text class="legend">` element, in order.
fn legends(html: &str) -> Vec<String> {
    html.split("class=\"legend\">").skip(1).map(|rest| rest[..rest.find('<').unwrap()].to_string()).collect()
}

#[test]
fn report_bytes_do_not_depend_on_workers_and_outputs_are_unchanged() {
    for case in ["basic", "medium"] {
        let (tmp1, one) = replay_with_report(case, "1");
        let (_tmp3, three) = replay_with_report(case, "3");
        assert_eq!(first_difference(one.as_bytes(), three.as_bytes()), None, "{case}: -w 1 vs -w 3");
        let expected = fixtures_dir().join(case).join("expected");
        compare_outputs(&expected, &tmp1.path().join("out"), false).unwrap_or_else(|d| panic!("{case}: {d}"));
    }
}

#[test]
fn report_is_self_contained() {
    let (_tmp, html) = replay_with_report("medium", "1");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for banned in ["<script", "<link", "src=", "href=", "url(", "@import", "<iframe", "<img"] {
        assert!(!html.contains(banned), "the report contains {banned:?}");
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
