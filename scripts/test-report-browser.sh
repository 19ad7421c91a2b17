#!/usr/bin/env bash
# Renders a replay's HTML report (fixtures/medium) in headless Chromium and checks that every
# chart is in the rendered DOM and drew its pixels (tests/report_browser.rs). Unlike a plain
# `cargo test`, a missing browser is a failure here. Keeps the page and screenshot in DIR.
#
#   scripts/test-report-browser.sh [DIR]      # default target/report-browser
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  echo "chromium is not installed: apt-get install -y chromium (Debian's package)" >&2
  exit 1
fi
export STOCKFLOW_REQUIRE_CHROMIUM=1
export STOCKFLOW_REPORT_SCREENSHOT="${1:-target/report-browser}"
cargo test --release --test report_browser -- --nocapture
echo "page and screenshot: $STOCKFLOW_REPORT_SCREENSHOT/report.html, $STOCKFLOW_REPORT_SCREENSHOT/report.png"
