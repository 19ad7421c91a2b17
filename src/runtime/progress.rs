//! What the binary says on stderr: `tracing` log events (levels from `RUST_LOG`), and the
//! progress line of `replay`, `batch` and `run`, redrawn in place on a terminal and written as
//! periodic log lines otherwise.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataflows::model::Millis;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use std::sync::atomic::AtomicU64;

use crate::runtime::metrics::Metrics;

/// Process-wide progress counters, read by the progress line.
#[derive(Default)]
pub struct Progress {
    /// Messages read by this process's workers.
    pub read: AtomicU64,
    /// Bytes read by this process's workers.
    pub bytes: AtomicU64,
    /// Messages rejected (dead letters) by this process's workers.
    pub rejected: AtomicU64,
    /// The least input frontier among this process's workers.
    pub watermark: AtomicU64,
    /// Kafka: messages behind the partitions' high watermarks, summed over this process's
    /// workers (each adds the change of its own share).
    pub lag: AtomicU64,
    /// The metrics endpoint's counters, with `--metrics-addr`.
    pub metrics: Option<Arc<Metrics>>,
}

/// Whether a progress line is on the terminal now: a log line first erases it (the next
/// redraw puts it back), so the two never share a line.
static LINE_DRAWN: AtomicBool = AtomicBool::new(false);

/// The filter without `RUST_LOG`: stockflow's own events from `info`. Other crates' events
/// (librdkafka's log through rdkafka's `log` records) only when `RUST_LOG` names them: the
/// job already says in its own words when the broker cannot be reached.
const DEFAULT_FILTER: &str = "stockflow=info";

/// Where log events go: stderr, after erasing a drawn progress line. Holding the stderr lock
/// while writing keeps an event's line whole.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = std::io::StderrLock<'static>;

    fn make_writer(&'a self) -> Self::Writer {
        let mut stderr = std::io::stderr().lock();
        if LINE_DRAWN.swap(false, Ordering::Relaxed) {
            let _ = stderr.write_all(b"\r\x1b[2K");
        }
        stderr
    }
}

/// One line per event: `stockflow: [LEVEL: ][TARGET: ]message key=value...`. The level is
/// written for all but `info`, and the target for other crates' events and below `info`, so
/// the everyday lines read as they always have (scripts and tests match their start).
struct OneLine;

impl<S, N> FormatEvent<S, N> for OneLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        write!(writer, "stockflow: ")?;
        let level = *meta.level();
        match level {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            Level::INFO => {}
            _ => write!(writer, "{}: ", level.as_str().to_ascii_lowercase())?,
        }
        if level > Level::INFO || !meta.target().starts_with("stockflow") {
            write!(writer, "{}: ", meta.target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the log subscriber: one line per event on stderr, `RUST_LOG` filters (default:
/// [`DEFAULT_FILTER`]). No colours, so that a line greps the same on a terminal and in a file.
pub fn init_logs() {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let (filter, rejected) = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new(DEFAULT_FILTER), Some(e)),
        None => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_ansi(false)
        .event_format(OneLine)
        .try_init();
    if let (Ok(()), Some(e)) = (installed, rejected) {
        tracing::warn!("RUST_LOG {:?} is not a filter ({e}); using {DEFAULT_FILTER:?}", from_env.unwrap_or_default());
    }
}

/// What the progress line knows of the input's size.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    /// A replay: the bytes of the files this process reads.
    Bytes(u64),
    /// Kafka: the messages behind the high watermarks (`Progress::lag`).
    Lag,
}

/// How long the line is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Until the job ends (`replay`, `batch`).
    End,
    /// Until the job has caught up with the input (`run`): then it says so once and stops;
    /// the steady state is the metrics endpoint's to show.
    CaughtUp,
}

/// The progress reporter of one run, on its own thread; dropping it stops it.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
    label: &'static str,
    started: Instant,
}

/// How often the line is redrawn on a terminal, and written as a log line otherwise;
/// `STOCKFLOW_PROGRESS_MS` overrides both (e.g. fewer lines in a long `run`'s logs).
fn interval(terminal: bool) -> Duration {
    let ms = std::env::var("STOCKFLOW_PROGRESS_MS").ok().and_then(|v| v.trim().parse::<u64>().ok());
    Duration::from_millis(ms.unwrap_or(if terminal { 1000 } else { 5000 }).max(1))
}

/// How long `run` must have read with no lag to count as caught up: workers refresh their lag
/// once a second, after counting what they read, so a shorter spell of no lag proves nothing.
const SETTLE: Duration = Duration::from_secs(2);

/// The rate over the last [`RATE_WINDOW`] of samples, so the ETA follows the current pace.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl Reporter {
    /// Starts reporting `progress` as `label: ...` lines.
    pub fn spawn(progress: Arc<Progress>, label: &'static str, size: Size, until: Until) -> Reporter {
        let terminal = std::io::stderr().is_terminal();
        let every = interval(terminal);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
            std::thread::spawn(move || report(&progress, label, size, until, terminal, every, &stop))
        };
        Reporter { stop, thread: Some(thread), progress, label, started: Instant::now() }
    }

    /// Stops the line and logs the run's totals: messages, size, time, and how many were
    /// rejected, with where their dead letters went (`dead_letters`) when there are any.
    pub fn finish(mut self, dead_letters: &str) {
        self.halt();
        let read = self.progress.read.load(Ordering::Relaxed);
        let rejected = self.progress.rejected.load(Ordering::Relaxed);
        let mb = self.progress.bytes.load(Ordering::Relaxed) as f64 / 1e6;
        let secs = self.started.elapsed().as_secs_f64();
        tracing::info!("{}", totals_line(self.label, read, rejected, mb, secs, dead_letters));
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        clear_line();
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The reporter thread's loop.
fn report(
    progress: &Progress,
    label: &str,
    size: Size,
    until: Until,
    terminal: bool,
    every: Duration,
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let mut last = Instant::now();
    // (when, messages, bytes), for the recent rate.
    let mut samples: VecDeque<(Instant, u64, u64)> = VecDeque::from([(started, 0, 0)]);
    // Whether a lag was ever seen, and since when there has been none after reading.
    let (mut behind, mut level_since) = (false, None::<Instant>);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(every.min(Duration::from_millis(100)));
        if last.elapsed() < every || stop.load(Ordering::Relaxed) {
            continue;
        }
        last = Instant::now();
        let sample = Sample {
            read: progress.read.load(Ordering::Relaxed),
            bytes: progress.bytes.load(Ordering::Relaxed),
            watermark: progress.watermark.load(Ordering::Relaxed),
            lag: progress.lag.load(Ordering::Relaxed),
        };
        samples.push_back((last, sample.read, sample.bytes));
        while samples.len() > 2 && samples[1].0.elapsed() >= RATE_WINDOW {
            samples.pop_front();
        }
        let (since, read_then, bytes_then) = samples[0];
        let secs = since.elapsed().as_secs_f64().max(1e-3);
        let rate = Rate {
            messages: (sample.read - read_then) as f64 / secs,
            bytes: (sample.bytes - bytes_then) as f64 / secs,
        };
        if until == Until::CaughtUp {
            behind |= sample.lag > 0;
            if sample.lag > 0 || !(behind || sample.read > 0) {
                level_since = None;
            } else if level_since.get_or_insert(last).elapsed() >= SETTLE {
                clear_line();
                tracing::info!("{label}: caught up with the input ({} messages read)", sample.read);
                return;
            }
        }
        let line = progress_line(label, size, &sample, &rate);
        if terminal {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r{line}\x1b[K");
            let _ = stderr.flush();
            LINE_DRAWN.store(true, Ordering::Relaxed);
        } else {
            tracing::info!("{line}");
        }
    }
}

/// Erases the progress line if one is drawn.
fn clear_line() {
    let mut stderr = std::io::stderr().lock();
    if LINE_DRAWN.swap(false, Ordering::Relaxed) {
        let _ = stderr.write_all(b"\r\x1b[2K");
    }
}

/// The counters at one moment.
struct Sample {
    read: u64,
    bytes: u64,
    watermark: Millis,
    lag: u64,
}

/// Recent rates, per second.
struct Rate {
    messages: f64,
    bytes: f64,
}

/// One progress line: messages, MB (of the total when known), rate, watermark, lag, ETA.
fn progress_line(label: &str, size: Size, sample: &Sample, rate: &Rate) -> String {
    let mb = sample.bytes as f64 / 1e6;
    let (amount, remaining) = match size {
        Size::Bytes(total) if total > 0 => {
            let share = (sample.bytes as f64 / total as f64 * 100.0).min(100.0);
            let left = total.saturating_sub(sample.bytes) as f64;
            (
                format!("{mb:.1} of {:.1} MB ({share:.0}%)", total as f64 / 1e6),
                (rate.bytes > 0.0 && left > 0.0).then(|| left / rate.bytes),
            )
        }
        Size::Bytes(_) => (format!("{mb:.1} MB"), None),
        Size::Lag => {
            (format!("{mb:.1} MB"), (rate.messages > 0.0 && sample.lag > 0).then(|| sample.lag as f64 / rate.messages))
        }
    };
    let mut line = format!(
        "{label}: {} messages, {amount}, {:.0} msg/s, watermark {}",
        sample.read,
        rate.messages,
        watermark(sample.watermark)
    );
    if matches!(size, Size::Lag) {
        line.push_str(&format!(", lag {} messages", sample.lag));
    }
    if let Some(secs) = remaining {
        line.push_str(&format!(", ETA {}", duration(secs)));
    }
    line
}

/// `LABEL: N messages, X MB in S s (R/s), K rejected[ (dead letters: WHERE)]`.
fn totals_line(label: &str, read: u64, rejected: u64, mb: f64, secs: f64, dead_letters: &str) -> String {
    let rate = read as f64 / secs.max(1e-9);
    let mut line = format!("{label}: {read} messages, {mb:.1} MB in {secs:.2} s ({rate:.0}/s), {rejected} rejected");
    if rejected > 0 {
        line.push_str(&format!(" (dead letters: {dead_letters})"));
    }
    line
}

/// The input frontier as a time: `-` before the first advance, `end` once every input is read.
fn watermark(ms: Millis) -> String {
    match ms {
        0 => "-".to_string(),
        ms if ms > dataflows::model::MAX_TIME => "end".to_string(),
        ms => crate::io::format::rfc3339(ms),
    }
}

/// `1h02m`, `3m05s` or `12s`.
fn duration(secs: f64) -> String {
    let s = secs.round().min(u64::MAX as f64) as u64;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_share_rate_and_eta() {
        let sample = Sample { read: 1000, bytes: 25_000_000, watermark: 1_700_000_000_000, lag: 0 };
        let rate = Rate { messages: 500.0, bytes: 1_000_000.0 };
        let line = progress_line("replay", Size::Bytes(100_000_000), &sample, &rate);
        assert_eq!(
            line,
            "replay: 1000 messages, 25.0 of 100.0 MB (25%), 500 msg/s, watermark 2023-11-14T22:13:20.000Z, ETA 1m15s"
        );
        let sample = Sample { lag: 7200 * 500, watermark: 0, ..sample };
        let line = progress_line("batch", Size::Lag, &sample, &rate);
        assert_eq!(line, "batch: 1000 messages, 25.0 MB, 500 msg/s, watermark -, lag 3600000 messages, ETA 2h00m");
        let line = progress_line("run", Size::Lag, &Sample { lag: 0, watermark: Millis::MAX, ..sample }, &rate);
        assert_eq!(line, "run: 1000 messages, 25.0 MB, 500 msg/s, watermark end, lag 0 messages");
    }

    #[test]
    fn the_totals_name_the_rejected_and_where_they_went() {
        assert_eq!(
            totals_line("replay", 544, 544, 0.03, 0.5, "o/dead_letter.jsonl"),
            "replay: 544 messages, 0.0 MB in 0.50 s (1088/s), 544 rejected (dead letters: o/dead_letter.jsonl)"
        );
        assert_eq!(totals_line("batch", 10, 0, 1.0, 2.0, "x"), "batch: 10 messages, 1.0 MB in 2.00 s (5/s), 0 rejected");
    }
}
