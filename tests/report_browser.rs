//! The HTML report rendered by a real headless Chromium: the DOM after rendering holds every
//! table (out of stock and low by location, orders by source, short distribution centers,
//! vendor orders, counts, dead letters, run) and every chart's SVG elements, and a screenshot
//! shows each chart's own colours inside the plot areas.
//!
//! Skips (saying so) when no Chromium is installed, unless STOCKFLOW_REQUIRE_CHROMIUM is set,
//! as `scripts/test-report-browser.sh` (run by CI) does. STOCKFLOW_REPORT_SCREENSHOT=DIR keeps
//! the page and its screenshot there for a look.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Page width and height of the screenshot; the medium case's report is about 6000 px tall.
const WINDOW: (u32, u32) = (1200, 6400);
/// Legends sit right of x = 900 (page coordinates) in every chart; plot areas are left of it.
const PLOT_RIGHT: u32 = 900;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs Chromium headless on `page` with `mode` (`--screenshot=...` or `--dump-dom`).
fn run_chromium(browser: &Path, page: &Path, mode: &str, profile: &Path) -> Output {
    // Output goes to files: a DOM larger than a pipe's buffer would block the browser while
    // this waits for it to exit.
    let stdout_path = profile.with_extension("stdout");
    let stderr_path = profile.with_extension("stderr");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(mode)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {mode} did not finish within 180 s", browser.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: std::fs::read(&stdout_path).unwrap(), stderr: std::fs::read(&stderr_path).unwrap() }
}

/// Pixels of `image` left of the legends whose colour is within 2 per channel of `hex`.
fn count_colour(image: &(Vec<u8>, u32, u32), hex: &str) -> usize {
    let (pixels, width, height) = image;
    let channel = |i: usize| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap();
    let want = [channel(0), channel(1), channel(2)];
    let mut n = 0;
    for y in 0..*height {
        for x in 0..PLOT_RIGHT.min(*width) {
            let at = ((y * width + x) * 4) as usize;
            if (0..3).all(|c| pixels[at + c].abs_diff(want[c]) <= 2) {
                n += 1;
            }
        }
    }
    n
}

fn decode_png(path: &Path) -> (Vec<u8>, u32, u32) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let rgba: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => buffer[..info.buffer_size()].to_vec(),
        png::ColorType::Rgb => buffer[..info.buffer_size()].chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    (rgba, info.width, info.height)
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var_os("STOCKFLOW_REQUIRE_CHROMIUM").is_some() {
            panic!("STOCKFLOW_REQUIRE_CHROMIUM is set but no chromium is on PATH (apt-get install chromium)");
        }
        eprintln!("SKIPPED report_renders_in_headless_chromium: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let tmp = tempdir();
    let page = tmp.path().join("report.html");
    let page_arg = page.display().to_string();
    replay_case("medium", &tmp.path().join("out"), &["--report", &page_arg]).unwrap();

    let profile = tmp.path().join("profile");
    let dom = run_chromium(&browser, &page, "--dump-dom", &profile);
    assert!(dom.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in ["events-per-type", "low-stock", "order-plan-by-source", "shortages", "atp-timeline"] {
        assert!(dom.contains(&format!("<svg id=\"{id}\"")), "the rendered DOM has no chart {id}");
    }
    assert!(dom.matches("<rect class=\"bar\"").count() > 100, "too few bars in the rendered DOM");
    let tables = [
        "stock-by-location",
        "stock-keys",
        "orders-by-source",
        "short-sources",
        "shortage-table",
        "vendor-orders",
        "summary",
        "dead-letter-reasons",
        "dead-letters",
        "run-table",
    ];
    for id in tables {
        let at =
            dom.find(&format!("<table id=\"{id}\">")).unwrap_or_else(|| panic!("the rendered DOM has no table {id}"));
        assert!(
            dom[at..].find("</table>").is_some_and(|end| dom[at..at + end].matches("<tr>").count() >= 2),
            "{id} is empty"
        );
    }
    assert!(dom.contains("<td class=\"OUT\">OUT</td>") && dom.contains("<td class=\"LOW\">LOW</td>"));
    assert_eq!(dom.matches("<path class=\"series\"").count(), 2 + 5, "LOW/OUT and five SKU lines");

    let shot = tmp.path().join("report.png");
    let run = run_chromium(&browser, &page, &format!("--screenshot={}", shot.display()), &profile);
    assert!(run.status.success() && shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&run.stderr));
    if let Some(keep) = std::env::var_os("STOCKFLOW_REPORT_SCREENSHOT") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&shot, keep.join("report.png")).unwrap();
        std::fs::copy(&page, keep.join("report.html")).unwrap();
    }
    let image = decode_png(&shot);
    assert_eq!((image.1, image.2), WINDOW, "screenshot size");
    let non_white = image.0.chunks(4).filter(|p| p[0] < 245 || p[1] < 245 || p[2] < 245).count();
    assert!(non_white > 50_000, "the screenshot is almost blank ({non_white} non-white pixels)");

    // Each chart has a palette of its own (src/io/sink/report.rs); its pixels must show in the plot areas.
    let charts: [(&str, &[&str], usize); 5] = [
        (
            "events per type",
            &[
                "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac",
                "#e15759",
            ],
            5_000,
        ),
        ("low-stock keys", &["#ff9f1c", "#c0392b"], 300),
        ("order plan by source", &["#9ecae1", "#3182bd"], 3_000),
        ("top shortages", &["#fdae6b"], 3_000),
        ("ATP timeline", &["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"], 300),
    ];
    let mut report = Vec::new();
    for (name, colours, at_least) in charts {
        let counts: Vec<usize> = colours.iter().map(|c| count_colour(&image, c)).collect();
        let total: usize = counts.iter().sum();
        report.push(format!("{name}: {total} pixels {counts:?} (need {at_least})"));
        assert!(total >= at_least, "chart {name} did not render:\n{}", report.join("\n"));
        if colours.len() <= 5 {
            assert!(counts.iter().all(|&n| n >= 50), "a series of {name} did not render:\n{}", report.join("\n"));
        }
    }
    eprintln!("{}", report.join("\n"));
}
