//! The metrics endpoint (`--metrics-addr`): process-wide counters, gauges and latency
//! histograms that the worker loops update once per batch or tick, exposed in Prometheus text
//! format 0.0.4 at `/metrics`, with `/health` and `/ready` (docs/metrics.md lists every metric).
//!
//! Each worker owns an [`InputMeter`]: it counts per message into plain local fields and hands
//! them over, under one lock, once per read batch. Worker 0 owns an [`OutputMeter`] that sees
//! the collected outputs, dead letters and ledger outcomes where the sinks write them. With no
//! `--metrics-addr` both are inert. The HTTP server lives in `metrics/server.rs`, the encoding
//! of a scrape in `metrics/exposition.rs`.

mod exposition;
mod server;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataflows::clock::Ticks;
use dataflows::ledger::Counter;
use dataflows::model::{Body, Event, Millis};
use hdrhistogram::Histogram;

use crate::io::sink::TickBatch;
use crate::io::source::SourceStats;
use crate::runtime::dataflow::Collected;

pub use server::Server;

/// `--metrics-addr` and `--metrics-linger-secs`, on `replay`, `run` and `batch`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics, plus /health and /ready (port 0
    /// picks a free port; the bound address is printed on stderr). Off by default.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// After the job ends, keep serving the final metrics for this long (for a last scrape of a
    /// replay or batch run; a bare number is seconds, or 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value_t = 0, value_parser = crate::config::value::seconds, allow_negative_numbers = true)]
    pub metrics_linger_secs: u64,
}

/// Which command is running: it decides what `/ready` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Ready once the input files are read to the end.
    Replay,
    /// Ready once caught up: no lag and the watermark near the wall clock.
    Run,
    /// Ready once caught up, or once the window's input is read.
    Batch,
}

/// What the metrics need to know of the run.
pub struct Settings {
    pub mode: Mode,
    /// The tick and the window's end (`--until`).
    pub ticks: Ticks,
    pub lateness_ms: Millis,
    /// Worker threads in this process.
    pub workers: usize,
    /// This process's index in the cluster.
    pub process: usize,
}

/// The message types, in the order of [`Body::type_index`].
const TYPES: [&str; 10] = Body::TYPE_NAMES;

/// The output streams counted, in the order of [`OutputMeter::written`].
const STREAMS: [&str; 4] = ["atp", "low_stock", "order_plan", "network_atp"];

/// The state tables whose keys are counted.
const TABLES: [&str; 4] = ["atp", "low_stock", "order_plan", "network_atp"];

/// Arrivals of one tick closer together than this share one timestamp.
const ARRIVAL_GROUP: Duration = Duration::from_millis(1);

/// Latencies are recorded in microseconds, up to an hour (longer ones count as an hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The upper bounds of the latency histograms' buckets, in microseconds: 1-2.5-5 steps from
/// 1 ms to 10 s, denser between 5 and 15 s (where Kafka's default lateness of 5 s plus a tick
/// puts the end-to-end latency), then up to half an hour; anything longer lands in `+Inf`.
const BUCKETS_US: [u64; 21] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    7_500_000,
    10_000_000,
    15_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
];

/// One (topic, partition)'s input counts.
#[derive(Clone, Default)]
struct PartitionCounts {
    stats: SourceStats,
    applied_by_type: [u64; TYPES.len()],
    /// Messages behind the high watermark; `None` until the broker told it.
    lag: Option<u64>,
    /// Whether the partition is read from Kafka (lag applies).
    kafka: bool,
}

/// One latency: Prometheus histogram buckets (aggregatable across processes) and an
/// hdrhistogram of the same values (this process's exact quantiles and maximum).
struct Recorder {
    histogram: Histogram<u64>,
    /// Values per bucket of [`BUCKETS_US`] (not cumulative); larger ones are only in the count.
    buckets: [u64; BUCKETS_US.len()],
    sum_us: u128,
}

impl Recorder {
    fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Recorder { histogram, buckets: [0; BUCKETS_US.len()], sum_us: 0 }
    }

    fn record(&mut self, latency: Duration, count: u64) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.histogram.saturating_record_n(us, count);
        if let Some(bucket) = self.buckets.get_mut(BUCKETS_US.partition_point(|bound| *bound < us)) {
            *bucket += count;
        }
        self.sum_us += u128::from(us) * u128::from(count);
    }
}

/// What the tick-close and end-to-end latencies are computed from.
struct Latency {
    /// Each local worker's input frontier, by local index.
    frontiers: Vec<Option<Millis>>,
    /// When the process's watermark (the least frontier) rose, and to what; pruned as ticks
    /// are acknowledged.
    passed: VecDeque<(Millis, Instant)>,
    /// Per tick not yet acknowledged: when its messages arrived, in groups (instant, count).
    arrivals: BTreeMap<Millis, Vec<(Instant, u64)>>,
    /// Every tick before this is acknowledged.
    acknowledged: Millis,
    tick_close: Recorder,
    end_to_end: Recorder,
}

impl Latency {
    fn watermark(&self) -> Option<Millis> {
        self.frontiers.iter().copied().collect::<Option<Vec<_>>>()?.into_iter().min()
    }
}

/// The process-wide metrics, shared by the workers and the server thread.
pub struct Metrics {
    settings: Settings,
    /// Why the process is unhealthy, once a worker failed.
    failed: Mutex<Option<String>>,
    /// Local workers whose input is closed (read to the end, or stopped).
    closed: AtomicUsize,
    /// Local workers that ended normally, their final counts published.
    finished: AtomicUsize,
    partitions: Mutex<BTreeMap<(String, u32), PartitionCounts>>,
    /// Dead letters by (source, partition, reason); cluster-wide, on process 0.
    rejected: Mutex<BTreeMap<(String, u32, String), u64>>,
    outcomes: Mutex<BTreeMap<Counter, i64>>,
    outputs: [AtomicU64; STREAMS.len()],
    ticks_written: AtomicU64,
    /// Keys per state table, per local worker (replay: each worker's share of the snapshot;
    /// run and batch: worker 0's whole snapshot).
    state_keys: Vec<[AtomicU64; TABLES.len()]>,
    arrangement_updates: AtomicI64,
    batcher_bytes: AtomicI64,
    latency: Mutex<Latency>,
    /// The latest finite watermark, for the gauge (0: none yet).
    watermark: AtomicU64,
    /// The window's last logical time as the collected outputs tell it (process 0: the whole
    /// cluster's; 0: not known).
    window_end: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked while holding a lock left counts, not broken invariants.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

impl Metrics {
    /// Fresh metrics for a run described by `settings`.
    pub fn new(settings: Settings) -> Self {
        let workers = settings.workers.max(1);
        Metrics {
            failed: Mutex::new(None),
            closed: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            partitions: Mutex::new(BTreeMap::new()),
            rejected: Mutex::new(BTreeMap::new()),
            outcomes: Mutex::new(BTreeMap::new()),
            outputs: Default::default(),
            ticks_written: AtomicU64::new(0),
            state_keys: (0..workers).map(|_| Default::default()).collect(),
            arrangement_updates: AtomicI64::new(0),
            batcher_bytes: AtomicI64::new(0),
            latency: Mutex::new(Latency {
                frontiers: vec![None; workers],
                passed: VecDeque::new(),
                arrivals: BTreeMap::new(),
                acknowledged: 0,
                tick_close: Recorder::new(),
                end_to_end: Recorder::new(),
            }),
            watermark: AtomicU64::new(0),
            window_end: AtomicU64::new(0),
            settings,
        }
    }

    fn local(&self, worker: usize) -> usize {
        worker.saturating_sub(self.settings.process * self.settings.workers).min(self.settings.workers.max(1) - 1)
    }

    /// Whether every local worker's input is closed.
    fn input_done(&self) -> bool {
        self.closed.load(Ordering::Relaxed) >= self.settings.workers.max(1)
    }

    /// The watermark the gauge shows: the least input frontier of the local workers while any
    /// input is open; once all are closed, the window's end (`--until`, else the tick of the
    /// largest effective time applied), which is what the outputs are final through. `None`
    /// before the first watermark.
    fn watermark_gauge(&self) -> Option<Millis> {
        if self.input_done() {
            let known = self.window_end.load(Ordering::Relaxed);
            let local = lock(&self.partitions).values().filter_map(|p| p.stats.max_effective).max();
            let local = local.and_then(|t| self.settings.ticks.emission(t)).unwrap_or(0);
            let end = self.settings.ticks.until.unwrap_or(known.max(local));
            if end > 0 {
                return Some(end);
            }
        }
        Some(self.watermark.load(Ordering::Relaxed)).filter(|w| *w > 0)
    }

    /// Marks the process unhealthy.
    pub fn fail(&self, reason: String) {
        lock(&self.failed).get_or_insert(reason);
    }

    /// `Ok` while no worker failed, else why.
    pub fn health(&self) -> Result<(), String> {
        match &*lock(&self.failed) {
            Some(reason) => Err(format!("unhealthy: {reason}")),
            None => Ok(()),
        }
    }

    /// `Ok` once caught up (see [`Mode`]), else a one-line reason.
    pub fn readiness(&self) -> Result<(), String> {
        self.health()?;
        let workers = self.settings.workers.max(1);
        let closed = self.closed.load(Ordering::Relaxed);
        if closed >= workers {
            // The input is exhausted: ready once its last ticks are written too, and the
            // workers' final counts (state shares, arrangements) are published.
            let written = lock(&self.latency).acknowledged == Millis::MAX;
            if written && self.finished.load(Ordering::Relaxed) >= workers {
                return Ok(());
            }
            return Err("not ready: input read, writing the last ticks".into());
        }
        if self.settings.mode == Mode::Replay {
            return Err(format!("not ready: reading the input ({closed} of {workers} workers done)"));
        }
        let partitions = lock(&self.partitions);
        let mut lag = 0;
        for ((topic, partition), p) in partitions.iter().filter(|(_, p)| p.kafka) {
            match p.lag {
                Some(l) => lag += l,
                None => return Err(format!("not ready: the lag of {topic}[{partition}] is not known yet")),
            }
        }
        drop(partitions);
        if lag > 0 {
            return Err(format!("not ready: consumer lag {lag} messages"));
        }
        let Some(watermark) = lock(&self.latency).watermark().filter(|w| *w < Millis::MAX) else {
            return Err("not ready: no watermark yet".into());
        };
        let allowed = self.settings.lateness_ms + self.settings.ticks.tick_ms;
        let behind = now_ms().saturating_sub(watermark);
        if behind > allowed {
            return Err(format!(
                "not ready: watermark {watermark} is {behind} ms behind the wall clock (ready within {allowed} ms)"
            ));
        }
        Ok(())
    }
}

pub struct InputMeter {
    metrics: Option<Arc<Metrics>>,
    worker: usize,
    ticks: Ticks,
    /// Per slot (the loop's partition index): its labels and counts since the last publish.
    slots: Vec<Option<((String, u32), PartitionCounts)>>,
    /// (tick, first arrival, messages) since the last publish, in arrival order.
    arrivals: Vec<(Millis, Instant, u64)>,
    frontier: Millis,
    finished: bool,
    /// Set once this worker's input is closed: differential logs a trace's batches as dropped
    /// only when the trace itself is dropped, which after that is the dataflow's teardown, and
    /// the arrangement gauges keep the final sizes rather than fall to 0.
    input_closed: Arc<AtomicBool>,
    /// Differential's arrangement logger: it buffers, and publishing flushes it.
    arrange_log: Option<timely::logging_core::Logger<differential_dataflow::logging::DifferentialEventBuilder>>,
}

impl InputMeter {
    /// The meter of timely worker `worker` (inert without metrics).
    pub fn new(metrics: Option<Arc<Metrics>>, worker: usize, ticks: Ticks) -> Self {
        InputMeter {
            metrics,
            worker,
            ticks,
            slots: Vec::new(),
            arrivals: Vec::new(),
            frontier: 0,
            finished: false,
            input_closed: Arc::new(AtomicBool::new(false)),
            arrange_log: None,
        }
    }

    /// Registers a logger of differential's arrangement events (call before building the
    /// dataflow: operators look their logger up when built).
    pub fn watch_arrangements(&mut self, worker: &mut timely::worker::Worker) {
        use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
        let Some(metrics) = self.metrics.clone() else { return };
        let Some(mut registry) = worker.log_register() else { return };
        let input_closed = Arc::clone(&self.input_closed);
        registry.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_, data| {
            let Some(data) = data else { return };
            let (mut updates, mut bytes) = (0i64, 0i64);
            for (_, event) in data.iter() {
                match event {
                    DifferentialEvent::Batch(b) => updates += b.length as i64,
                    DifferentialEvent::Merge(m) => {
                        if let Some(done) = m.complete {
                            updates += done as i64 - m.length1 as i64 - m.length2 as i64;
                        }
                    }
                    DifferentialEvent::Drop(d) if !input_closed.load(Ordering::Relaxed) => updates -= d.length as i64,
                    DifferentialEvent::Batcher(b) => bytes += b.size_diff as i64,
                    _ => {}
                }
            }
            metrics.arrangement_updates.fetch_add(updates, Ordering::Relaxed);
            metrics.batcher_bytes.fetch_add(bytes, Ordering::Relaxed);
        });
        drop(registry);
        self.arrange_log = worker.logger_for::<DifferentialEventBuilder>("differential/arrange");
    }

    fn slot(&mut self, slot: usize) -> &mut Option<((String, u32), PartitionCounts)> {
        if slot >= self.slots.len() {
            self.slots.resize(slot + 1, None);
        }
        &mut self.slots[slot]
    }

    /// One applied message of partition `slot`, as sent to the dataflow.
    pub fn event(&mut self, slot: usize, event: &Event) {
        if self.metrics.is_none() {
            return;
        }
        let body = &event.message.body;
        let tick = self.ticks.emission(event.order.effective).unwrap_or(event.order.effective);
        let now = Instant::now();
        match self.arrivals.last_mut() {
            Some((t, at, n)) if *t == tick && now.duration_since(*at) < ARRIVAL_GROUP => *n += 1,
            _ => self.arrivals.push((tick, now, 1)),
        }
        if let Some((_, counts)) = self.slot(slot) {
            counts.applied_by_type[body.type_index()] += 1;
        } else {
            let mut counts = PartitionCounts::default();
            counts.applied_by_type[body.type_index()] += 1;
            // Labelled by the next `partition` call, which always follows a batch.
            *self.slot(slot) = Some(((String::new(), 0), counts));
        }
    }

    /// The source counts of partition `slot` (`topic`[`partition`]) for the batch just read.
    pub fn partition(&mut self, slot: usize, topic: &str, partition: u32, stats: &SourceStats, kafka: bool) {
        if self.metrics.is_none() {
            return;
        }
        let entry = self.slot(slot).get_or_insert_with(Default::default);
        if entry.0 .0.is_empty() {
            entry.0 = (topic.to_string(), partition);
        }
        entry.1.stats.absorb(stats);
        entry.1.kafka = kafka;
    }

    /// Kafka: each partition's lag, ((topic, partition), lag), from the reader's cached high
    /// watermarks.
    pub fn lag(&mut self, lags: impl Iterator<Item = ((String, u32), Option<u64>)>) {
        let Some(m) = &self.metrics else { return };
        let mut partitions = lock(&m.partitions);
        for (partition, lag) in lags {
            let counts = partitions.entry(partition).or_default();
            counts.kafka = true;
            counts.lag = lag;
        }
    }

    /// Publishes the batch's counts and arrivals, then this worker's input `frontier` (the
    /// arrivals first, so that a tick's arrivals are known before the watermark passes it).
    pub fn publish(&mut self, frontier: Millis) {
        let Some(m) = &self.metrics else { return };
        if let Some(log) = &self.arrange_log {
            log.flush();
        }
        {
            let mut partitions = lock(&m.partitions);
            for slot in self.slots.iter_mut().flatten() {
                let counts = &mut slot.1;
                let empty = counts.stats == SourceStats::default() && counts.applied_by_type.iter().all(|n| *n == 0);
                if empty || slot.0 .0.is_empty() {
                    continue;
                }
                let total = partitions.entry(slot.0.clone()).or_default();
                total.stats.absorb(&counts.stats);
                for (t, n) in counts.applied_by_type.iter_mut().enumerate() {
                    total.applied_by_type[t] += std::mem::take(n);
                }
                total.kafka |= counts.kafka;
                counts.stats = SourceStats::default();
            }
        }
        let mut latency = lock(&m.latency);
        for (tick, at, n) in self.arrivals.drain(..) {
            latency.arrivals.entry(tick).or_default().push((at, n));
        }
        if frontier > self.frontier || latency.frontiers[m.local(self.worker)].is_none() {
            self.frontier = self.frontier.max(frontier);
            let before = latency.watermark();
            latency.frontiers[m.local(self.worker)] = Some(self.frontier);
            let after = latency.watermark();
            if let Some(after) = after.filter(|a| before.is_none_or(|b| *a > b)) {
                latency.passed.push_back((after, Instant::now()));
                if after < Millis::MAX {
                    m.watermark.store(after, Ordering::Relaxed);
                }
            }
        }
    }

    /// This worker's input is closed (read to the end, or the job stops): its frontier is
    /// empty from now on.
    pub fn input_closed(&mut self) {
        let Some(m) = self.metrics.clone() else { return };
        self.publish(Millis::MAX);
        self.input_closed.store(true, Ordering::Relaxed);
        m.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker ended normally: its last arrangement events are published.
    pub fn finish(&mut self) {
        if let Some(log) = &self.arrange_log {
            log.flush();
        }
        if let Some(m) = self.metrics.as_ref().filter(|_| !self.finished) {
            m.finished.fetch_add(1, Ordering::Relaxed);
        }
        self.finished = true;
    }

    /// Publishes this worker's share of the state's key counts (replay's snapshot shares).
    pub fn state_share(&self, keys: [u64; TABLES.len()]) {
        if let Some(m) = &self.metrics {
            let local = m.local(self.worker);
            for (t, n) in keys.into_iter().enumerate() {
                m.state_keys[local][t].store(n, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for InputMeter {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            if !self.finished {
                let how = if std::thread::panicking() { "panicked" } else { "stopped with an error" };
                m.fail(format!("worker {} {how}", self.worker));
            }
        }
    }
}

/// Worker 0's output-side hooks, called where the sinks write.
pub struct OutputMeter {
    metrics: Option<Arc<Metrics>>,
    /// Source ids to names (topics or files).
    sources: Vec<String>,
    /// Collected dead letters already counted.
    dead_counted: usize,
}

impl OutputMeter {
    /// Worker 0's meter; `sources` names the source ids of dead letters.
    pub fn new(metrics: Option<Arc<Metrics>>, sources: Vec<String>) -> Self {
        OutputMeter { metrics, sources, dead_counted: 0 }
    }

    /// Whether a metrics endpoint reads what this meter counts.
    pub fn enabled(&self) -> bool {
        self.metrics.is_some()
    }

    /// Counts the dead letters and ledger outcomes collected so far (call before the final
    /// drain takes the dead letters).
    pub fn collected(&mut self, c: &Collected) {
        let Some(m) = &self.metrics else { return };
        if c.dead_letters.len() > self.dead_counted {
            let mut rejected = lock(&m.rejected);
            for d in &c.dead_letters[self.dead_counted..] {
                let source = self.sources.get(d.position.source as usize).cloned().unwrap_or_default();
                *rejected.entry((source, d.position.partition, d.reason.clone())).or_default() += 1;
            }
            self.dead_counted = c.dead_letters.len();
        }
        if let Some(end) = c.window_end(m.settings.ticks) {
            m.window_end.fetch_max(end, Ordering::Relaxed);
        }
        let mut outcomes = lock(&m.outcomes);
        if *outcomes != c.counters {
            outcomes.clone_from(&c.counters);
        }
    }

    /// One worker's records of a closed tick, handed to its sinks.
    pub fn written(&self, batch: &TickBatch) {
        let Some(m) = &self.metrics else { return };
        let lens = [batch.atp.len(), batch.low_stock.len(), batch.order_plan.len(), batch.network_atp.len()];
        for (i, n) in lens.into_iter().enumerate() {
            m.outputs[i].fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Worker 0: one tick written by every worker.
    pub fn tick_written(&self) {
        if let Some(m) = &self.metrics {
            m.ticks_written.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every tick before `through` is acknowledged by the sinks: records the tick-close and
    /// end-to-end latencies of the ticks that became acknowledged.
    pub fn acknowledged(&self, through: Millis) {
        let Some(m) = &self.metrics else { return };
        let mut latency = lock(&m.latency);
        if through <= latency.acknowledged {
            return;
        }
        latency.acknowledged = through;
        let now = Instant::now();
        let Latency { passed, arrivals, tick_close, end_to_end, .. } = &mut *latency;
        while let Some(entry) = arrivals.first_entry() {
            if *entry.key() >= through {
                break;
            }
            let (tick, groups) = entry.remove_entry();
            for (at, n) in groups {
                end_to_end.record(now.saturating_duration_since(at), n);
            }
            // The watermark passed the tick when it first rose above it.
            if let Some((_, at)) = passed.iter().find(|(w, _)| *w > tick) {
                tick_close.record(now.saturating_duration_since(*at), 1);
            }
        }
        // A later tick is passed by a watermark above `through`; older rises are of no use.
        while passed.front().is_some_and(|(w, _)| *w <= through) {
            passed.pop_front();
        }
    }
}
