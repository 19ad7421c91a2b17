//! The worker loop of `run` (continuous) and `batch` (a window up to `--until`) over Kafka:
//! every timely worker reads its own share of the input partitions with its own consumer,
//! decodes them with the same per-partition clock as a replay, and worker 0 writes closed
//! ticks to Kafka (and optionally a directory); offsets are committed only once the ticks
//! they cover have been acknowledged.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use dataflows::clock::Ticks;
use dataflows::decode::parse_time;
use dataflows::model::Millis;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::ProbeHandle;

use crate::config::Cluster;
use crate::kafka::KafkaArgs;
use crate::sink::dir::DirSink;
use crate::sink::kafka::KafkaSink;
use crate::sink::{Sink, Snapshot, Summary, TickBatch};
use crate::source::kafka::{list_partitions, KafkaReader, Start};
use crate::source::{Decoded, PartitionDecoder};
use crate::worker::Collected;

/// Flags shared by `run` and `batch`.
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Input topics, comma-separated (any message type on any topic).
    #[arg(long, value_delimiter = ',', required = true)]
    pub topics: Vec<String>,
    /// Consumer group whose committed offsets are the start position.
    #[arg(long, default_value = "stockflow")]
    pub group: String,
    /// Output topics are `<prefix>.atp`, `.low_stock`, `.order_plan`, `.network_atp`, `.dead_letter`.
    #[arg(long, default_value = "stockflow")]
    pub prefix: String,
    /// Also write SPEC §4's files into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not produce to Kafka output topics (use with --out).
    #[arg(long)]
    pub no_kafka_out: bool,
    /// Tick length in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    /// Allowed lateness per (topic, partition), in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub lateness_ms: u64,
    /// `run` only: a partition with nothing new for this long advances with the wall clock.
    #[arg(long, default_value_t = 10000)]
    pub idle_ms: u64,
    /// Start position without committed offsets: earliest, latest, or ms since the epoch.
    #[arg(long, default_value = "earliest")]
    pub start: Start,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Everything a worker needs.
pub struct StreamConfig {
    pub args: StreamArgs,
    pub ticks: Ticks,
    /// `batch`: read up to the end offsets captured at start-up, then finish.
    pub batch: bool,
    pub cluster: Cluster,
}

/// Set by SIGINT/SIGTERM: finish the current tick, commit, exit 0.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc_signal(2, on_signal);
        libc_signal(15, on_signal);
    }
}

extern "C" {
    #[link_name = "signal"]
    fn libc_signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

/// Parses `--until` for batch runs.
pub fn parse_until(text: &str) -> Result<Millis> {
    parse_time(text)
        .with_context(|| format!("--until {text:?} is neither milliseconds since the epoch nor an RFC 3339 time"))
}

/// Runs `run` or `batch` to completion.
pub fn run(config: StreamConfig) -> Result<()> {
    if config.ticks.tick_ms == 0 {
        bail!("--tick-ms must be at least 1");
    }
    if config.args.no_kafka_out && config.args.out.is_none() {
        bail!("--no-kafka-out needs --out DIR, else the results go nowhere");
    }
    let mut topics = config.args.topics.clone();
    topics.sort();
    topics.dedup();
    let mut config = config;
    config.args.topics = topics;
    // Validate the Kafka properties once, before any thread starts.
    config.args.kafka.properties()?;
    install_signal_handlers();
    let timely_config = config.cluster.timely_config()?;
    let config = Arc::new(config);
    let guards = timely::execute(timely_config, move |worker| stream_worker(worker, &config))
        .map_err(|e| anyhow::anyhow!("cannot start timely workers: {e}"))?;
    crate::worker::join_workers(guards)
}

/// Worker 0's outputs: Kafka and/or a directory.
struct Sinks {
    kafka: Option<KafkaSink>,
    dir: Option<DirSink>,
    snapshot: Snapshot,
    /// `run`: how many collected dead letters are already produced.
    dead_produced: usize,
}

impl Sinks {
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> std::io::Result<()> {
        if let Some(k) = self.kafka.as_mut() {
            k.tick(time, batch)?;
        }
        if let Some(d) = self.dir.as_mut() {
            d.tick(time, batch)?;
        }
        self.snapshot.apply(batch);
        Ok(())
    }
}

fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// One partition's decoder and the offsets waiting for their ticks to be acknowledged.
struct Reading {
    decoder: PartitionDecoder,
    /// (next offset, largest emission time of the messages before it), oldest first.
    pending: VecDeque<(i64, Millis)>,
    max_emission: Millis,
}

fn stream_worker(worker: &mut timely::worker::Worker, config: &StreamConfig) -> Result<(), String> {
    let index = worker.index();
    let peers = worker.peers();
    let ticks = config.ticks;
    let args = &config.args;
    let collected = Rc::new(RefCell::new(Collected::default()));
    let probe = ProbeHandle::new();
    let ack_probe = ProbeHandle::new();

    let (mut events_in, mut dead_in, mut stats_in, acks_in) = worker.dataflow::<Millis, _, _>(|scope| {
        // Worker 0 advances this input to the time through which every tick is acknowledged;
        // the others close theirs, so its frontier tells every worker (in every process) which
        // offsets may be committed.
        let (acks_in, acks) = scope.new_input::<Vec<()>>();
        acks.probe_with(&ack_probe);
        let inputs = crate::worker::build(scope, ticks, &collected, &probe);
        (inputs.events, inputs.dead_letters, inputs.stats, acks_in)
    });
    // `then_some` takes the handle by value, so the other workers close theirs right here.
    let mut acks_in = (index == 0).then_some(acks_in);

    // Source ids are the topics in sorted order, as a replay's are its files in name order.
    let topics = &args.topics;
    let base = args
        .kafka
        .client_config(&[
            ("group.id", args.group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ])
        .map_err(|e| e.to_string())?;
    let consumer = KafkaReader::consumer(&base)?;
    let all = list_partitions(&consumer, topics)?;
    // Partition i of the sorted list goes to worker i mod peers.
    let mine: Vec<(String, i32)> =
        all.iter().enumerate().filter(|(i, _)| i % peers == index).map(|(_, p)| p.clone()).collect();
    if !args.quiet {
        eprintln!("stockflow: worker {index}/{peers} reads {mine:?}");
    }
    let mut reader = KafkaReader::assign(consumer, mine, args.start, config.batch)?;
    let mut readings: Vec<Reading> = reader
        .partitions
        .iter()
        .map(|p| {
            let source = topics.iter().position(|t| *t == p.topic).unwrap() as u32;
            Reading {
                decoder: PartitionDecoder::new(source, p.partition as u32, args.lateness_ms, ticks),
                pending: VecDeque::new(),
                max_emission: 0,
            }
        })
        .collect();

    let mut sinks = if index == 0 {
        let kafka = if args.no_kafka_out {
            None
        } else {
            let producer = args.kafka.client_config(&[("linger.ms", "5")]).map_err(|e| e.to_string())?;
            Some(KafkaSink::new(&producer, &args.prefix, topics.clone()).map_err(|e| e.to_string())?)
        };
        let dir = match &args.out {
            Some(dir) => Some(DirSink::create(dir, topics.clone()).map_err(|e| e.to_string())?),
            None => None,
        };
        Some(Sinks { kafka, dir, snapshot: Snapshot::default(), dead_produced: 0 })
    } else {
        None
    };

    let idle = Duration::from_millis(args.idle_ms);
    let mut last_step = Instant::now();
    let mut previous_time = 0;
    loop {
        let stopping = STOP.load(Ordering::Relaxed);
        let all_done = config.batch && reader.partitions.iter().all(|p| p.done());
        if stopping || all_done {
            break;
        }
        // Read a batch of messages, then step the dataflow.
        let mut read = 0;
        let started = Instant::now();
        while read < 4096 && started.elapsed() < Duration::from_millis(100) {
            let Some(polled) = reader.poll(Duration::from_millis(20))? else {
                if config.batch {
                    reader.refresh_positions();
                }
                break;
            };
            let state = &reader.partitions[polled.index];
            if state.end.is_some_and(|end| polled.offset >= end) {
                // Produced after a batch run started: not part of its window.
                continue;
            }
            read += 1;
            let r = &mut readings[polled.index];
            match r.decoder.decode(polled.offset as u64, &polled.payload) {
                Decoded::Event(mut event) => {
                    // After an idle advance the input may be past this message's tick: it is
                    // then applied at the current time (the one timing-dependent place).
                    let now = *events_in.time();
                    if ticks.emission(event.order.effective).is_some_and(|t| t < now) {
                        event.order.effective = now;
                    }
                    r.max_emission = r.max_emission.max(ticks.emission(event.order.effective).unwrap_or(0));
                    events_in.send(event);
                }
                Decoded::Dead(dead) => dead_in.send(dead),
                Decoded::BeyondWindow => {}
            }
            r.pending.push_back((polled.offset + 1, r.max_emission));
        }
        for r in &mut readings {
            stats_in.send(r.decoder.take_stats());
        }

        // The worker's frontier: the least over its partitions; in `run`, an idle partition
        // (or a worker without partitions) follows the wall clock minus the lateness.
        let wall = ticks.emission(now_ms().saturating_sub(args.lateness_ms)).unwrap_or(Millis::MAX);
        let mut time = Millis::MAX;
        for (p, r) in reader.partitions.iter().zip(&readings) {
            if config.batch && p.done() {
                continue;
            }
            let own = r.decoder.frontier().unwrap_or(ticks.until.unwrap_or(Millis::MAX));
            let own = if !config.batch && p.last_data.elapsed() >= idle { own.max(wall) } else { own };
            time = time.min(own);
        }
        if !config.batch && reader.partitions.is_empty() {
            time = wall;
        }
        if time > *events_in.time() {
            events_in.advance_to(time);
            dead_in.advance_to(time);
            stats_in.advance_to(time);
        }
        worker.step_while(|| probe.less_than(&previous_time));
        previous_time = time;
        if last_step.elapsed() > Duration::from_millis(10) || read > 0 {
            worker.step();
            last_step = Instant::now();
        }
        if let Some(s) = sinks.as_mut() {
            drain(s, &collected, &probe, ticks, false, config.batch)?;
            if let Some(acks) = acks_in.as_mut() {
                let through = probe.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX));
                if through > *acks.time() {
                    acks.advance_to(through);
                }
            }
        }
        if !config.batch {
            commit_acknowledged(&reader, &mut readings, &ack_probe)?;
        }
    }
    drop((events_in, dead_in, stats_in));
    while !probe.done() {
        worker.step();
        if let Some(s) = sinks.as_mut() {
            drain(s, &collected, &probe, ticks, false, config.batch)?;
        }
    }
    if let Some(s) = sinks.as_mut() {
        drain(s, &collected, &probe, ticks, true, config.batch)?;
    }
    // Every output is acknowledged: release the other workers' commits.
    drop(acks_in);
    while !ack_probe.done() {
        worker.step();
    }
    let all: Vec<(usize, i64)> = reader.partitions.iter().enumerate().map(|(i, p)| (i, p.next)).collect();
    reader.commit(&all)?;
    Ok(())
}

/// Commits, per partition, the offsets whose messages' ticks are all acknowledged.
fn commit_acknowledged(
    reader: &KafkaReader,
    readings: &mut [Reading],
    acks: &ProbeHandle<Millis>,
) -> Result<(), String> {
    let mut offsets = Vec::new();
    for (i, r) in readings.iter_mut().enumerate() {
        let mut last = None;
        while let Some(&(offset, emission)) = r.pending.front() {
            if acks.less_equal(&emission) {
                break;
            }
            last = Some(offset);
            r.pending.pop_front();
        }
        if let Some(o) = last {
            offsets.push((i, o));
        }
    }
    reader.commit(&offsets)
}

/// Writes closed ticks in order; dead letters are produced as they arrive in `run` and at the
/// end (in position order, like a replay) in `batch`.
fn drain(
    sinks: &mut Sinks,
    collected: &RefCell<Collected>,
    probe: &ProbeHandle<Millis>,
    ticks: Ticks,
    finished: bool,
    batch: bool,
) -> Result<(), String> {
    let mut c = collected.borrow_mut();
    let end = c.window_end(ticks);
    // Without --until (run), a tick holding only hold expiries waits for later input.
    for (time, batch) in crate::worker::closed_ticks(&mut c, probe, end) {
        sinks.tick(time, &batch).map_err(|e| e.to_string())?;
    }
    if !batch && c.dead_letters.len() > sinks.dead_produced {
        // Dead letters stay collected for the directory sink; only the new ones go to Kafka.
        let from = sinks.dead_produced;
        c.dead_letters[from..].sort();
        if let Some(k) = sinks.kafka.as_mut() {
            k.dead_letters(&c.dead_letters[from..]).map_err(|e| e.to_string())?;
        }
        sinks.dead_produced = c.dead_letters.len();
    }
    if finished {
        let mut dead = std::mem::take(&mut c.dead_letters);
        dead.sort();
        let summary = Summary { sources: c.stats, counters: c.counters.clone(), as_of: end };
        if let Some(k) = sinks.kafka.as_mut() {
            if batch {
                k.finish(&dead, &sinks.snapshot, &summary).map_err(|e| e.to_string())?;
            }
        }
        if let Some(d) = sinks.dir.as_mut() {
            d.finish(&dead, &sinks.snapshot, &summary).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
