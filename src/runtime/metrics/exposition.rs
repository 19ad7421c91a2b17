//! A scrape of the metrics: a prometheus-client collector reads [`Metrics`] when scraped and
//! writes every family through the client's Prometheus text encoder (format 0.0.4), one step
//! per subject: input, ledger, progress, state, latency, health, build and process.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dataflows::ledger::Counter;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{lock, now_ms, Metrics, PartitionCounts, Recorder, BUCKETS_US, STREAMS, TABLES, TYPES};

/// Bytes assumed per update held in a differential trace: a (sku, loc) key of two inline
/// 24-byte names, a small value, a time and a diff, with the spine's offsets.
const BYTES_PER_UPDATE: i64 = 96;

/// The quantiles of this process's latencies that are served from its hdrhistograms.
const QUANTILES: [&str; 4] = ["0.5", "0.9", "0.99", "0.999"];

/// A family's samples without labels.
const NO_LABELS: [(&str, &str); 0] = [];

type Partitions = BTreeMap<(String, u32), PartitionCounts>;

/// The registry the endpoint encodes: one collector over `metrics`.
pub(super) fn registry(metrics: Arc<Metrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(metrics)));
    registry
}

/// The whole exposition, in Prometheus text format 0.0.4.
pub(super) fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry).expect("writing to a String does not fail");
    text
}

/// Reads the shared metrics at each scrape.
struct Scrape(Arc<Metrics>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stockflow metrics")
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let m = &*self.0;
        let partitions = lock(&m.partitions).clone();
        input(&mut e, &partitions)?;
        ledger(&mut e, m)?;
        progress(&mut e, m)?;
        state(&mut e, m)?;
        latencies(&mut e, m)?;
        health(&mut e, m)?;
        build(&mut e)?;
        process(&mut e)
    }
}

/// One family: HELP, TYPE and one sample per (labels, metric).
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in rows {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter family; `name` comes without the `_total` the encoder appends.
fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(e, name, help, MetricType::Counter, rows.into_iter().map(|(labels, v)| (labels, ConstCounter::new(v))))
}

/// A gauge family.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(e, name, help, MetricType::Gauge, rows.into_iter().map(|(labels, v)| (labels, ConstGauge::new(v))))
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
    gauges(e, name, help, [(NO_LABELS, value)])
}

/// The labels of one input partition.
fn at(topic: &str, partition: u32) -> impl EncodeLabelSet + '_ {
    ([("topic", topic)], [("partition", partition)])
}

/// Per input partition: messages read, applied (by type), late, beyond the window; lag.
fn input(e: &mut DescriptorEncoder, partitions: &Partitions) -> fmt::Result {
    let each = |count: fn(&PartitionCounts) -> u64| partitions.iter().map(move |((t, p), c)| (at(t, *p), count(c)));
    counters(
        e,
        "stockflow_messages_read",
        "Messages read (non-blank lines), per input topic (replay: file) and partition, by this process",
        each(|c| c.stats.read),
    )?;
    let applied = partitions.iter().flat_map(|((topic, partition), c)| {
        TYPES.iter().zip(c.applied_by_type).map(move |(kind, n)| ((at(topic, *partition), [("type", *kind)]), n))
    });
    counters(
        e,
        "stockflow_messages_applied",
        "Valid messages within the window handed to the ledger, per topic, partition and message type",
        applied,
    )?;
    counters(
        e,
        "stockflow_messages_late",
        "Applied messages whose effective time was raised to the partition's max ts minus the lateness",
        each(|c| c.stats.late),
    )?;
    counters(
        e,
        "stockflow_messages_beyond_window",
        "Valid messages with an effective time after --until (counted, not applied)",
        each(|c| c.stats.beyond_window),
    )?;
    gauges(
        e,
        "stockflow_consumer_lag_messages",
        "Kafka: messages between the next offset to read and the partition's high watermark (as the last fetch told it)",
        partitions.iter().filter_map(|((t, p), c)| Some((at(t, *p), c.lag?))),
    )
}

/// Dead letters by reason and the ledger's outcomes (the whole cluster's, on process 0).
fn ledger(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let rejected = lock(&m.rejected).clone();
    counters(
        e,
        "stockflow_messages_rejected",
        "Invalid messages (dead letters) by topic, partition and reason; the whole cluster's, on process 0",
        rejected
            .iter()
            .map(|((topic, partition, reason), n)| ((at(topic, *partition), [("reason", reason.as_str())]), *n)),
    )?;
    let outcomes = lock(&m.outcomes).clone();
    let outcome = |counter: Counter, name: &'static str| {
        ([("outcome", name)], outcomes.get(&counter).copied().unwrap_or(0).max(0) as u64)
    };
    counters(
        e,
        "stockflow_ledger_outcomes",
        "Ledger outcomes: absorbed (older than the key's latest count), orphan, duplicate, expired_on_arrival",
        [
            outcome(Counter::Absorbed, "absorbed"),
            outcome(Counter::Orphan, "orphan"),
            outcome(Counter::Duplicate, "duplicate"),
            outcome(Counter::ExpiredOnArrival, "expired_on_arrival"),
        ],
    )
}

/// The watermark, the records and ticks written.
fn progress(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let watermark = m.watermark_gauge();
    gauges(
        e,
        "stockflow_watermark_timestamp_seconds",
        "The input frontier, in seconds since the epoch (event time): the least over this process's workers, ticks before it are closed; once the input is read, the window's end. Absent before the first watermark",
        watermark.map(|w| (NO_LABELS, w as f64 / 1e3)),
    )?;
    gauges(
        e,
        "stockflow_watermark_delay_seconds",
        "Wall clock minus the watermark, in seconds (negative when the data's times are ahead of the clock; absent before the first watermark)",
        watermark.map(|w| (NO_LABELS, (now_ms() as f64 - w as f64) / 1e3)),
    )?;
    counters(
        e,
        "stockflow_output_records",
        "Records written to each output stream (dead letters: see stockflow_messages_rejected_total)",
        STREAMS.iter().zip(&m.outputs).map(|(name, n)| ([("stream", *name)], n.load(Ordering::Relaxed))),
    )?;
    counters(
        e,
        "stockflow_ticks_written",
        "Closed ticks with at least one output record handed to the sinks",
        [(NO_LABELS, m.ticks_written.load(Ordering::Relaxed))],
    )
}

/// Keys per state table and the size of differential's arrangements.
fn state(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let keys = |t: usize| m.state_keys.iter().map(|w| w[t].load(Ordering::Relaxed)).sum::<u64>();
    gauges(
        e,
        "stockflow_state_keys",
        "Keys in each state table (atp: sku-locations with a row; order_plan: (dest, sku) lines; network_atp: skus)",
        TABLES.iter().enumerate().map(|(t, name)| ([("table", *name)], keys(t))),
    )?;
    let updates = m.arrangement_updates.load(Ordering::Relaxed).max(0);
    let batcher = m.batcher_bytes.load(Ordering::Relaxed).max(0);
    gauge(
        e,
        "stockflow_arrangement_updates",
        "Updates held in differential traces, from differential's batch, merge and drop events (after the run: the final size)",
        updates,
    )?;
    gauge(
        e,
        "stockflow_arrangement_bytes",
        "Estimate: arrangement updates x 96 bytes (a (sku, loc) key of inline names, a small value, time, diff) plus the merge batchers' bytes as differential reports them. The ledger's and ATP's hash maps are not included: see process_resident_memory_bytes",
        updates * BYTES_PER_UPDATE + batcher,
    )
}

/// What a scrape shows of one latency, copied under the lock.
struct LatencyView {
    buckets: Vec<(f64, u64)>,
    sum_seconds: f64,
    count: u64,
    quantiles: [f64; QUANTILES.len()],
    max: f64,
}

impl LatencyView {
    fn of(r: &Recorder) -> Self {
        let seconds = |us: u64| us as f64 / 1e6;
        let quantile = |q: &str| seconds(r.histogram.value_at_quantile(q.parse().expect("a quantile")));
        LatencyView {
            buckets: BUCKETS_US.iter().zip(r.buckets).map(|(bound, n)| (seconds(*bound), n)).collect(),
            sum_seconds: r.sum_us as f64 / 1e6,
            count: r.histogram.len(),
            quantiles: QUANTILES.map(quantile),
            max: seconds(r.histogram.max()),
        }
    }
}

/// The tick-close and end-to-end latencies: histograms, and this process's quantiles and max.
fn latencies(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let (tick_close, end_to_end) = {
        let latency = lock(&m.latency);
        (LatencyView::of(&latency.tick_close), LatencyView::of(&latency.end_to_end))
    };
    latency(
        e,
        "stockflow_tick_close_latency",
        "From the watermark passing a tick (every local worker's input past it) to the tick's outputs acknowledged by the sink (Kafka: delivered; files: written), for ticks that applied messages",
        &tick_close,
    )?;
    latency(
        e,
        "stockflow_end_to_end_latency",
        "From a message's arrival in the consumer (replay: read from its file) to its tick's outputs acknowledged by the sink, per applied message (arrivals within 1 ms share a timestamp)",
        &end_to_end,
    )
}

/// `<name>_seconds` (histogram), `<name>_quantile_seconds` and `<name>_max_seconds` (gauges).
fn latency(e: &mut DescriptorEncoder, name: &str, help: &str, view: &LatencyView) -> fmt::Result {
    e.encode_descriptor(&format!("{name}_seconds"), help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(view.sum_seconds, view.count, &view.buckets, None)?;
    gauges(
        e,
        &format!("{name}_quantile_seconds"),
        "This process's quantiles of the latency since it started (hdrhistogram, 3 significant digits); not aggregatable across processes: use histogram_quantile over the _seconds histogram",
        QUANTILES.iter().zip(view.quantiles).map(|(q, v)| ([("quantile", *q)], v)),
    )?;
    gauge(e, &format!("{name}_max_seconds"), "The largest latency this process recorded", view.max)
}

/// `stockflow_ready`, `stockflow_healthy`.
fn health(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    gauge(e, "stockflow_ready", "1 when /ready answers 200", u8::from(m.readiness().is_ok()) as u32)?;
    gauge(e, "stockflow_healthy", "1 when /health answers 200", u8::from(m.health().is_ok()) as u32)
}

/// `stockflow_build_info{version, commit, rustc} 1`.
fn build(e: &mut DescriptorEncoder) -> fmt::Result {
    let labels = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("commit", option_env!("STOCKFLOW_COMMIT").unwrap_or("unknown")),
        ("rustc", option_env!("STOCKFLOW_RUSTC").unwrap_or("unknown")),
    ];
    let help = "The running binary: its version, the git commit it was built from and the compiler (unknown where the build could not tell)";
    Info::new(labels).encode(e.encode_descriptor("stockflow_build", help, None, MetricType::Info)?)
}

/// The standard process metrics of Prometheus client libraries, from /proc.
#[cfg(target_os = "linux")]
fn process(e: &mut DescriptorEncoder) -> fmt::Result {
    use procfs::process::{LimitValue, Process};
    let Ok(me) = Process::myself() else { return Ok(()) };
    let Ok(stat) = me.stat() else { return Ok(()) };
    let ticks = procfs::ticks_per_second() as f64;
    let cpu = (stat.utime + stat.stime) as f64 / ticks;
    counters(e, "process_cpu_seconds", "Total user and system CPU time spent in seconds", [(NO_LABELS, cpu)])?;
    if let Ok(boot) = procfs::boot_time_secs() {
        let start = boot as f64 + stat.starttime as f64 / ticks;
        gauge(e, "process_start_time_seconds", "Start time of the process since unix epoch in seconds", start)?;
    }
    gauge(e, "process_resident_memory_bytes", "Resident memory size in bytes", stat.rss * procfs::page_size())?;
    gauge(e, "process_virtual_memory_bytes", "Virtual memory size in bytes", stat.vsize)?;
    if let Ok(open) = me.fd_count() {
        gauge(e, "process_open_fds", "Number of open file descriptors", open as u64)?;
    }
    if let Ok(LimitValue::Value(max)) = me.limits().map(|l| l.max_open_files.soft_limit) {
        gauge(e, "process_max_fds", "Maximum number of open file descriptors", max)?;
    }
    Ok(())
}

/// Elsewhere there is no /proc to read: the process metrics are left out.
#[cfg(not(target_os = "linux"))]
fn process(_: &mut DescriptorEncoder) -> fmt::Result {
    Ok(())
}
