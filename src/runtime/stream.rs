//! The worker loop of `run` (continuous) and `batch` (a window up to `--until`) over Kafka:
//! every timely worker reads its own share of the input partitions with its own consumer,
//! decodes them with the same per-partition clock as a replay, and worker 0 writes closed
//! ticks to Kafka (and optionally a directory); offsets are committed only once the ticks
//! they cover have been acknowledged.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use dataflows::clock::Ticks;
use dataflows::clock::PartitionClock;
use dataflows::ledger::Control;
use dataflows::model::Millis;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::ProbeHandle;

use crate::runtime::checkpoint::{self, Chosen, Cut, SavedPartition, Shared};
use crate::config::{CheckpointEvery, StreamConfig};
use crate::runtime::metrics::{InputMeter, OutputMeter};
use crate::io::sink::dir::DirSink;
use crate::io::sink::kafka::{Delivery, KafkaSink};
use crate::io::sink::{Sink, Snapshot, Summary, TickBatch};
use crate::io::source::kafka::{list_partitions, owner, KafkaReader, Start};
use crate::io::source::{Decoded, PartitionDecoder, SourceStats};
use crate::runtime::worker::{Collected, InputOf, Progress};

/// Set by SIGINT/SIGTERM: finish the current tick, commit, exit 0.
static STOP: AtomicBool = AtomicBool::new(false);

/// Set once a worker runs. Before that (a cluster process waiting for its peers, which retries
/// for ever) there is nothing to finish, so a signal ends the process at once.
static WORKERS_STARTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signum: i32) {
    if !WORKERS_STARTED.load(Ordering::Relaxed) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc_exit(128 + signum) }
    }
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
    #[link_name = "_exit"]
    fn libc_exit(status: i32) -> !;
}

/// Runs `run` or `batch` to completion.
pub fn run(config: StreamConfig, progress: Arc<Progress>) -> Result<()> {
    let mut restore = None;
    if let Some(checkpoints) = &config.checkpoints {
        let dir = &checkpoints.dir;
        restore = checkpoint::choose(dir)?;
        if let Some(chosen) = &restore {
            check_compatible(chosen, &config)?;
            if config.cluster.process == 0 {
                let workers = chosen.headers.first().map_or(0, |h| h.workers);
                tracing::info!(
                    "starting from the checkpoint at {} ({} shares written by {workers} workers, {} keys) in {}",
                    chosen.at,
                    chosen.shares.len(),
                    chosen.headers.iter().map(|h| h.keys).sum::<u64>(),
                    dir.display()
                );
            }
        }
    }
    install_signal_handlers();
    let timely_config = config.cluster.timely_config()?;
    let config = Arc::new(config);
    let restore = Arc::new(restore);
    let guards = timely::execute(timely_config, move |worker| {
        WORKERS_STARTED.store(true, Ordering::Relaxed);
        // Timely workers share fate: the others would wait forever for this one's progress.
        // Nothing is committed for ticks not yet acknowledged, so exiting loses nothing.
        if let Err(message) = stream_worker(worker, &config, restore.as_ref().as_ref(), &progress) {
            tracing::error!("{message}");
            tracing::error!(
                "stopping; offsets are committed only through acknowledged ticks, so a restart resumes from there"
            );
            std::process::exit(1);
        }
        Ok(())
    })
        .map_err(|e| anyhow::anyhow!("cannot start timely workers: {e}"))?;
    crate::runtime::worker::join_workers(guards)
}

/// Refuses a checkpoint computed with settings that would change what its state means.
fn check_compatible(chosen: &Chosen, config: &StreamConfig) -> Result<()> {
    let Some(h) = chosen.headers.first() else { return Ok(()) };
    let dir = config.checkpoints.as_ref().map_or(String::new(), |c| c.dir.display().to_string());
    if h.topics != config.topics {
        bail!(
            "the checkpoint in {dir} was written for topics {:?}, this run reads {:?}; use the same --topics or another --checkpoint-dir",
            h.topics,
            config.topics
        );
    }
    if h.tick_ms != config.ticks.tick_ms || h.lateness_ms != config.lateness_ms {
        bail!(
            "the checkpoint in {dir} was written with --tick-ms {} --lateness-ms {}; this run has {} and {}: use the same values or another --checkpoint-dir",
            h.tick_ms,
            h.lateness_ms,
            config.ticks.tick_ms,
            config.lateness_ms
        );
    }
    if let Some(until) = config.ticks.until.filter(|&u| u < chosen.at) {
        bail!("--until {until} lies before the checkpoint in {dir} (every tick before {} is already applied)", chosen.at);
    }
    Ok(())
}

/// Worker 0's outputs: Kafka and/or a directory.
struct Sinks {
    kafka: Option<KafkaSink>,
    dir: Option<DirSink>,
    snapshot: Snapshot,
    /// `run`: how many collected dead letters are already produced.
    dead_produced: usize,
    /// Ticks before this are a restored checkpoint's state: they update the snapshot only
    /// (they were written before the checkpoint was taken).
    restored_before: Millis,
    /// Once stopping with checkpoints: ticks from this one on are left to the restart (the
    /// dataflow drains them early, without the messages not read yet).
    stop_at: Option<Millis>,
    meter: OutputMeter,
}

impl Sinks {
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> std::io::Result<()> {
        if time < self.restored_before {
            self.snapshot.apply(batch);
            return Ok(());
        }
        if self.stop_at.is_some_and(|stop| time >= stop) {
            return Ok(());
        }
        if let Some(k) = self.kafka.as_mut() {
            k.tick(time, batch)?;
        }
        if let Some(d) = self.dir.as_mut() {
            d.tick(time, batch)?;
            d.flush()?;
        }
        self.snapshot.apply(batch);
        self.meter.written(batch);
        Ok(())
    }
}

fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// This worker's checkpointing: what it shares with its writer, and (worker 0) when to ask.
struct Checkpoints {
    shared: Rc<RefCell<Shared>>,
    every: CheckpointEvery,
    /// The latest checkpoint time asked for (or restored), and when it was asked.
    last: Millis,
    last_wall: Instant,
    /// Clocks of restored partitions, taken up when the partition is first read.
    clocks: BTreeMap<(String, i32), PartitionClock>,
    /// Source counts of everything this worker sent.
    sent: SourceStats,
}

impl Checkpoints {
    /// Records where the sources stand as the input advances to `at`.
    fn cut(&mut self, at: Millis, inputs: &Inputs) {
        let partitions = inputs
            .reader
            .partitions
            .iter()
            .zip(&inputs.readings)
            .map(|(p, r)| SavedPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                next: p.next,
                clock: r.decoder.clock(),
            })
            .collect();
        let mut shared = self.shared.borrow_mut();
        let held = shared.held.len();
        shared.cuts.push(Cut { at, partitions, stats: self.sent, held });
    }

    /// Whether worker 0 should ask for a checkpoint at input time `now`.
    fn due(&self, now: Millis, tick_ms: Millis) -> bool {
        now > self.last
            && match self.every {
                CheckpointEvery::Wall(interval) => self.last_wall.elapsed() >= interval,
                CheckpointEvery::Ticks(n) => now - self.last >= n.saturating_mul(tick_ms),
            }
    }
}

/// Asks every worker's ledgers for their state at the control input's current time.
fn request_checkpoint(control: &mut InputOf<Control>, peers: usize) -> Millis {
    for worker in 0..peers {
        control.send(Control::Checkpoint { worker: worker as u64 });
    }
    // Sent now, not with the next advance: the input may stay at this time for long.
    control.flush();
    *control.time()
}

/// One partition's decoder and the offsets waiting for their ticks to be acknowledged.
struct Reading {
    decoder: PartitionDecoder,
    /// (next offset, largest emission time of the messages before it), oldest first.
    pending: VecDeque<(i64, Millis)>,
    max_emission: Millis,
}

/// A worker's Kafka input: its partitions and their decoders, side by side.
struct Inputs {
    reader: KafkaReader,
    readings: Vec<Reading>,
    /// Input topics the broker did not know at the last look (`run` waits for them).
    missing: BTreeSet<String>,
    checked: Instant,
}

impl Inputs {
    /// Starts reading the partitions this worker owns that it does not read yet: at start-up
    /// all of them, later those added to a topic or of a topic created since. A `batch` run
    /// needs every topic to exist; `run` logs the missing ones and keeps looking. Returns
    /// whether the broker answered (`run` logs an unreachable broker and tries again later).
    fn discover(
        &mut self,
        config: &StreamConfig,
        index: usize,
        peers: usize,
        first: bool,
        clocks: &BTreeMap<(String, i32), PartitionClock>,
    ) -> Result<bool, String> {
        self.checked = Instant::now();
        let args = config;
        let unreachable = |e: String| {
            tracing::warn!("worker {index}: {e} (retrying; state is kept)");
        };
        let listed = match list_partitions(self.reader.consumer(), &args.topics) {
            Ok(listed) => listed,
            Err(e) if !config.batch() => {
                unreachable(e);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let mut new = Vec::new();
        for (source, (topic, partitions)) in args.topics.iter().zip(&listed).enumerate() {
            let Some(partitions) = partitions else {
                if config.batch() {
                    return Err(format!(
                        "input topic {topic} does not exist (or has no partitions); create it or fix --topics"
                    ));
                }
                if self.missing.insert(topic.clone()) && index == 0 {
                    tracing::warn!(
                        "input topic {topic} does not exist yet; reading it once it does (checked every {} ms)",
                        args.metadata_refresh.as_millis()
                    );
                }
                continue;
            };
            if self.missing.remove(topic) && index == 0 && !first {
                tracing::info!("input topic {topic} exists now; reading it");
            }
            for &partition in partitions {
                let known = self.reader.partitions.iter().any(|p| p.topic == *topic && p.partition == partition);
                if owner(source, partition, peers) == index && !known {
                    new.push((source, topic.clone(), partition));
                }
            }
        }
        // --start applies to what exists at start-up; a partition or topic that appears later
        // holds only new messages, all of which must be read.
        let start = if first { args.start } else { Start::Earliest };
        let added = match self.reader.add(new.iter().map(|(_, t, p)| (t.clone(), *p)).collect(), start, config.batch()) {
            Ok(added) => added,
            Err(e) if !config.batch() => {
                unreachable(e);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        for (i, (source, _, _)) in added.into_iter().zip(new) {
            let p = &self.reader.partitions[i];
            if !args.quiet || !first {
                let end = p.end.map_or(String::new(), |e| format!(" up to offset {e} (at least)"));
                let when = if first { "" } else { "new partition: " };
                tracing::info!(
                    "worker {index}/{peers} {when}reads {}[{}] from offset {}{end}",
                    p.topic,
                    p.partition,
                    p.next
                );
            }
            let clock = clocks.get(&(p.topic.clone(), p.partition)).copied().unwrap_or_default();
            self.readings.push(Reading {
                decoder: PartitionDecoder::new(source as u32, p.partition as u32, args.lateness_ms, config.ticks)
                    .with_clock(clock),
                pending: VecDeque::new(),
                max_emission: 0,
            });
        }
        Ok(true)
    }
}

fn stream_worker(
    worker: &mut timely::worker::Worker,
    config: &StreamConfig,
    restored: Option<&Chosen>,
    progress: &Progress,
) -> Result<(), String> {
    let index = worker.index();
    let peers = worker.peers();
    let ticks = config.ticks;
    let args = config;
    let collected = Rc::new(RefCell::new(Collected::default()));
    let probe = ProbeHandle::new();
    let ack_probe = ProbeHandle::new();
    let mut meter = InputMeter::new(progress, index, ticks);
    meter.watch_arrangements(worker);

    let shared = args.checkpoints.as_ref().map(|c| &c.dir).map(|root| {
        let template = checkpoint::Header::template(index, peers, &args.topics, ticks, args.lateness_ms);
        Rc::new(RefCell::new(Shared::new(root.clone(), template)))
    });
    let (mut events_in, mut dead_in, mut stats_in, mut control_in, acks_in, sent) = worker.dataflow::<Millis, _, _>(|scope| {
        // Worker 0 advances this input to the time through which every tick is acknowledged;
        // the others close theirs, so its frontier tells every worker (in every process) which
        // offsets may be committed.
        let (acks_in, acks) = scope.new_input::<Vec<()>>();
        acks.probe_with(&ack_probe);
        let (inputs, saved) = crate::runtime::worker::build(scope, ticks, &collected, &probe);
        if let Some(shared) = &shared {
            checkpoint::writer(saved, Rc::clone(shared), &probe);
        }
        (inputs.events, inputs.dead_letters, inputs.stats, inputs.control, acks_in, inputs.sent)
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
            // Fetches of up to 1 MB or 20 ms, whichever comes first: with librdkafka's defaults
            // (1 byte, 500 ms) tansu answered with a few records per fetch, and a 200k msg/s load
            // was read at ~80k/s while every process idled; with these it is read at the offered
            // rate (docs/benchmarks.md, streaming latency). 20 ms is a fifth of a 100 ms tick.
            ("fetch.min.bytes", "1048576"),
            ("fetch.wait.max.ms", "20"),
        ])
        ;
    let mut inputs = Inputs {
        reader: KafkaReader::new(KafkaReader::create_consumer(&base)?),
        readings: Vec::new(),
        missing: BTreeSet::new(),
        checked: Instant::now(),
    };
    // `run` waits for the broker at start-up: until its partitions are known, no frontier may
    // move (it would follow the wall clock past their data).
    let mut ckpt = shared.map(|shared| Checkpoints {
        shared,
        every: args.checkpoints.as_ref().expect("checkpointing").every,
        last: 0,
        last_wall: Instant::now(),
        clocks: BTreeMap::new(),
        sent: SourceStats::default(),
    });
    // With checkpoints, positions come from the checkpoint (or --start without one), never
    // from the group's commits, which would skip what an empty state never saw.
    inputs.reader.use_committed = ckpt.is_none();
    let mut restored_before = 0;
    if let (Some(chosen), Some(c)) = (restored, ckpt.as_mut()) {
        restored_before = chosen.at;
        c.last = chosen.at;
        // The restored state enters just before the checkpoint's time, so that it is complete
        // before the first tick at or after it.
        let before = chosen.at - 1;
        events_in.advance_to(before);
        dead_in.advance_to(before);
        stats_in.advance_to(before);
        control_in.advance_to(before);
        restore(chosen, index, peers, ticks, c, &mut inputs.reader, &mut events_in, &mut stats_in, &mut control_in)?;
        events_in.advance_to(chosen.at);
        dead_in.advance_to(chosen.at);
        stats_in.advance_to(chosen.at);
        control_in.advance_to(chosen.at);
    }
    let no_clocks = BTreeMap::new();
    let clocks = ckpt.as_ref().map_or(&no_clocks, |c| &c.clocks).clone();
    while !inputs.discover(config, index, peers, true, &clocks)? {
        if STOP.load(Ordering::Relaxed) {
            break; // the loop below stops at once
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    let mut sinks = if index == 0 {
        let kafka = if !args.kafka_out {
            None
        } else {
            // Deliveries never time out: while the broker is away the tick waits (and says so).
            let producer = args
                .kafka
                .client_config(&[("linger.ms", "5"), ("message.timeout.ms", "0"), ("enable.idempotence", "true")]);
            let delivery = if args.exactly_once {
                Delivery::ExactlyOnce { group: args.group.clone(), consumer: base.clone() }
            } else {
                Delivery::AtLeastOnce
            };
            let sink = KafkaSink::new(&producer, &args.prefix, args.output_partitions, topics.clone(), delivery);
            Some(sink.map_err(|e| e.to_string())?.stop_on(&STOP))
        };
        let dir = match &args.out {
            Some(dir) => Some(DirSink::create(dir, topics.clone()).map_err(|e| e.to_string())?),
            None => None,
        };
        let meter = OutputMeter::new(progress, topics.clone());
        Some(Sinks { kafka, dir, snapshot: Snapshot::default(), dead_produced: 0, restored_before, stop_at: None, meter })
    } else {
        None
    };

    let idle = args.idle;
    let read_slice = Duration::from_millis((ticks.tick_ms / 10).clamp(1, 100));
    let (mut lag_checked, mut reported_lag) = (Instant::now(), 0u64);
    let mut last_step = Instant::now();
    let mut previous_time = 0;
    loop {
        if !config.batch() && inputs.checked.elapsed() >= args.metadata_refresh {
            inputs.discover(config, index, peers, false, &clocks)?;
        }
        let stopping = STOP.load(Ordering::Relaxed);
        let all_done = config.batch() && inputs.reader.partitions.iter().all(|p| p.done());
        if stopping || all_done {
            if let Some(c) = ckpt.as_mut() {
                if all_done && !stopping {
                    // A finished batch checkpoints its whole window: a later window continues
                    // from it. Every worker has read all its partitions, so its last cut holds
                    // everything read.
                    let now = *events_in.time();
                    let target = ticks.until.map_or(now, |until| (until + 1).max(now));
                    if index == 0 {
                        if target > now {
                            c.cut(target, &inputs);
                            events_in.advance_to(target);
                            dead_in.advance_to(target);
                            stats_in.advance_to(target);
                            control_in.advance_to(target);
                        }
                        if target > c.last {
                            c.last = request_checkpoint(&mut control_in, peers);
                        }
                    }
                    c.cut(Millis::MAX, &inputs);
                }
                // Stopped: no new checkpoint (a worker may not have read up to worker 0's time,
                // and shares of checkpoints it has not reached are not written). Ticks the
                // whole input has passed are written; later ones, which the drain below would
                // compute without the messages not read yet, are left to the restart.
                if let Some(s) = sinks.as_mut() {
                    let passed = probe.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX));
                    s.stop_at = Some(if stopping { passed } else { c.last.max(passed) });
                }
            }
            break;
        }
        // Read a batch of messages, then step the dataflow. A tick the watermark passes is
        // stepped through only after the next batch is read, so a batch takes at most a tenth
        // of a tick (it took up to 100 ms whatever the tick).
        let mut read = 0;
        let started = Instant::now();
        while read < 4096 && started.elapsed() < read_slice {
            // Waiting at most what is left of the slice: a 20 ms wait made the slice up to 30 ms.
            let wait = read_slice.saturating_sub(started.elapsed()).min(Duration::from_millis(20));
            let Some(polled) = inputs.reader.poll(wait)? else {
                if config.batch() {
                    inputs.reader.refresh_positions();
                }
                break;
            };
            inputs.reader.confirm_end(polled.index);
            let state = &inputs.reader.partitions[polled.index];
            if state.end.is_some_and(|end| polled.offset >= end) {
                // Produced after a batch run started: not part of its window.
                continue;
            }
            read += 1;
            progress.bytes.fetch_add(polled.payload.len() as u64, Ordering::Relaxed);
            let r = &mut inputs.readings[polled.index];
            match r.decoder.decode(polled.offset as u64, &polled.payload) {
                Decoded::Event(mut event) => {
                    // After an idle advance the input may be past this message's tick: it is
                    // then applied at the current time (the one timing-dependent place).
                    let now = *events_in.time();
                    if ticks.emission(event.order.effective).is_some_and(|t| t < now) {
                        event.order.effective = now;
                    }
                    r.max_emission = r.max_emission.max(ticks.emission(event.order.effective).unwrap_or(0));
                    meter.event(polled.index, &event);
                    events_in.send(event);
                }
                Decoded::Dead(dead) => dead_in.send(dead),
                Decoded::BeyondWindow(event) => {
                    if let Some(c) = &ckpt {
                        c.shared.borrow_mut().held.push(event);
                    }
                }
            }
            r.pending.push_back((polled.offset + 1, r.max_emission));
        }
        for (i, (r, p)) in inputs.readings.iter_mut().zip(&inputs.reader.partitions).enumerate() {
            let stats = r.decoder.take_stats();
            meter.partition(i, &p.topic, p.partition as u32, &stats, true);
            if let Some(c) = ckpt.as_mut() {
                c.sent.absorb(&stats);
            }
            stats_in.send(stats);
        }
        progress.read.fetch_add(read as u64, Ordering::Relaxed);
        if lag_checked.elapsed() >= Duration::from_secs(1) {
            // Each worker adds the change of its own share, so the sum is the process's lag.
            let lag = inputs.reader.lag();
            progress.lag.fetch_add(lag, Ordering::Relaxed);
            progress.lag.fetch_sub(reported_lag, Ordering::Relaxed);
            reported_lag = lag;
            lag_checked = Instant::now();
            meter.lag(&inputs.reader);
        }

        // The worker's frontier: the least over its partitions; in `run`, an idle partition
        // (or a worker without partitions) follows the wall clock minus the lateness.
        let wall = ticks.emission(now_ms().saturating_sub(args.lateness_ms)).unwrap_or(Millis::MAX);
        let mut time = Millis::MAX;
        if !config.batch() && inputs.reader.partitions.iter().any(|p| p.last_data.elapsed() >= idle) {
            // The consumer's positions step over offsets no message fills (transaction markers,
            // compacted records), which would otherwise count as lag and keep a partition busy.
            inputs.reader.refresh_positions();
        }
        for (i, (p, r)) in inputs.reader.partitions.iter().zip(&inputs.readings).enumerate() {
            if config.batch() && p.done() {
                continue;
            }
            // A partition that has delivered nothing yet holds the frontier (in `run` until it
            // is idle): its first message may carry any time. Idle also needs a fetch response
            // saying nothing is left to read: a worker loop that paused for --idle-ms (a long
            // tick, a busy machine) would otherwise move the watermark past the partition's
            // backlog, which would then be applied at the wall clock's tick.
            let own = r.decoder.frontier().unwrap_or(0);
            let idle_now =
                !config.batch() && p.last_data.elapsed() >= idle && inputs.reader.partition_lag(i) == Some(0);
            let own = if idle_now { own.max(wall) } else { own };
            time = time.min(own);
        }
        if !config.batch() && inputs.reader.partitions.is_empty() {
            time = wall;
        }
        if let Some(until) = ticks.until {
            // Nothing after the window is sent; staying just past it leaves room for the final
            // checkpoint at `until + 1`.
            time = time.min(until + 1);
        }
        if time > *events_in.time() {
            if let Some(c) = ckpt.as_mut() {
                c.cut(time, &inputs);
            }
            events_in.advance_to(time);
            dead_in.advance_to(time);
            stats_in.advance_to(time);
            control_in.advance_to(time);
            if index == 0 {
                progress.watermark.store(time, Ordering::Relaxed);
            }
        }
        if let Some(c) = ckpt.as_mut().filter(|_| index == 0) {
            if c.due(*events_in.time(), ticks.tick_ms) {
                c.last = request_checkpoint(&mut control_in, peers);
                c.last_wall = Instant::now();
            }
        }
        meter.publish(*events_in.time());
        // Backpressure: let the dataflow catch up with what this worker sent, but only as far as
        // every worker has sent: waiting on a worker whose partitions lag in event time (no
        // new messages for them yet) would stop this loop from writing the ticks already done.
        let reachable = previous_time.min(sent.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX)));
        worker.step_while(|| probe.less_than(&reachable));
        previous_time = time;
        if last_step.elapsed() > Duration::from_millis(10) || read > 0 {
            worker.step();
            last_step = Instant::now();
        }
        if let Some(s) = sinks.as_mut() {
            let offsets = positions_before(&inputs, &probe);
            drain(s, &collected, &probe, ticks, false, config.batch(), &offsets)?;
            if let Some(acks) = acks_in.as_mut() {
                let written = probe.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX));
                // Ticks are produced without waiting: only those before the first one with
                // unacknowledged records count as written.
                let unacknowledged = match s.kafka.as_ref() {
                    Some(k) => k.unacknowledged().map_err(|e| e.to_string())?,
                    None => None,
                };
                let through = unacknowledged.map_or(written, |t| t.min(written));
                if through > *acks.time() {
                    acks.advance_to(through);
                }
                s.meter.acknowledged(through);
            }
        }
        if let Some(c) = ckpt.as_mut() {
            let acknowledged = ack_probe.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX));
            let settled = probe.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX));
            c.publish(index, acknowledged, settled)?;
        }
        if !config.batch() {
            commit_acknowledged(&inputs.reader, &mut inputs.readings, &ack_probe)?;
        }
    }
    drop((events_in, dead_in, stats_in, control_in));
    meter.input_closed();
    while !probe.done() {
        worker.step();
        if let Some(s) = sinks.as_mut() {
            let offsets = positions_before(&inputs, &probe);
            drain(s, &collected, &probe, ticks, false, config.batch(), &offsets)?;
        }
    }
    if let Some(s) = sinks.as_mut() {
        let offsets = positions_before(&inputs, &probe);
        drain(s, &collected, &probe, ticks, true, config.batch(), &offsets)?;
    }
    // Every output is acknowledged: release the other workers' commits.
    drop(acks_in);
    while !ack_probe.done() {
        worker.step();
    }
    if let Some(c) = ckpt.as_mut() {
        c.publish(index, Millis::MAX, Millis::MAX)?;
    }
    let stopped_early = ckpt.is_some() && !(config.batch() && inputs.reader.partitions.iter().all(|p| p.done()));
    if stopped_early {
        // What was read after the last checkpoint is not in any output: the restart reads it
        // again from the checkpoint, and the group's offsets stay where outputs cover them.
        commit_acknowledged(&inputs.reader, &mut inputs.readings, &ack_probe)?;
    } else {
        let all: Vec<(usize, i64)> = inputs.reader.partitions.iter().enumerate().map(|(i, p)| (i, p.next)).collect();
        inputs.reader.commit(&all)?;
    }
    meter.finish();
    Ok(())
}

impl Checkpoints {
    /// Writes the shares whose ticks are acknowledged (worker 0 logs them and prunes old
    /// checkpoints) and forgets the cuts no checkpoint can need: `settled` is the least time
    /// the dataflow (the checkpoint writer included) may still be working on.
    fn publish(&mut self, index: usize, acknowledged: Millis, settled: Millis) -> Result<(), String> {
        let mut shared = self.shared.borrow_mut();
        if let Some(e) = shared.error.take() {
            return Err(format!("cannot write a checkpoint: {e}"));
        }
        let root = shared.root.clone();
        let published = shared
            .publish(acknowledged)
            .map_err(|e| format!("cannot write a checkpoint into {}: {e}; check the directory and free space", root.display()))?;
        shared.forget_before(settled);
        if let Some(&(at, wrote)) = published.last() {
            // The figures of the newest share written (a newer one may be encoded already).
            let figures = shared.encoded.get(&at).copied();
            shared.encoded.retain(|&t, _| t > at);
            if let Some((bytes, keys, took)) = figures.filter(|_| index == 0) {
                // Shares wait for their ticks' acknowledgements, so several may land at once.
                let also = match published.len() {
                    1 => String::new(),
                    n => format!(" (and {} earlier)", n - 1),
                };
                let written = wrote.as_millis();
                tracing::info!(
                    "checkpoint at {at}{also}: worker 0's share {bytes} bytes, {keys} keys, encoded in {} ms, written in {written} ms",
                    took.as_millis()
                );
            }
            if index == 0 {
                checkpoint::prune(&root, 2)
                    .map_err(|e| format!("cannot prune old checkpoints in {}: {e}", root.display()))?;
            }
        }
        Ok(())
    }
}

/// Re-creates this worker's part of a checkpoint: the ledger entries and held messages of the
/// shares it is given (share j goes to worker j mod peers; the ledgers route every entry to
/// its key's worker, so any number of workers can load any number of shares), the source
/// counts, and, for the partitions it will read, their positions and clocks.
#[allow(clippy::too_many_arguments)]
fn restore(
    chosen: &Chosen,
    index: usize,
    peers: usize,
    ticks: Ticks,
    c: &mut Checkpoints,
    reader: &mut crate::io::source::kafka::KafkaReader,
    events_in: &mut InputOf<dataflows::model::Event>,
    stats_in: &mut InputOf<SourceStats>,
    control_in: &mut InputOf<Control>,
) -> Result<(), String> {
    for header in &chosen.headers {
        for p in &header.partitions {
            reader.restored.insert((p.topic.clone(), p.partition), p.next);
            c.clocks.insert((p.topic.clone(), p.partition), p.clock);
        }
    }
    for (j, path) in chosen.shares.iter().enumerate() {
        if j % peers != index {
            continue;
        }
        let (header, body) = checkpoint::read_share(path).map_err(|e| format!("cannot load checkpoint share {e}"))?;
        let mut stats = header.stats;
        for entry in body.ledger {
            control_in.send(Control::Restore(entry));
        }
        for event in body.held {
            // Held beyond the previous window; this window may hold it.
            if ticks.emission(event.order.effective).is_some() {
                stats.beyond_window = stats.beyond_window.saturating_sub(1);
                stats.applied += 1;
                stats.late += u64::from(event.order.effective > event.message.ts);
                stats.max_effective = stats.max_effective.max(Some(event.order.effective));
                events_in.send(event);
            } else {
                c.shared.borrow_mut().held.push(event);
            }
        }
        c.sent.absorb(&stats);
        stats_in.send(stats);
    }
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

/// This worker's read positions through the messages whose ticks are all before `probe`'s
/// frontier, i.e. are drained next: what a transaction holding those ticks may commit.
/// (`pending` is ordered by emission time, a running maximum.)
fn positions_before(inputs: &Inputs, probe: &ProbeHandle<Millis>) -> Vec<(String, i32, i64)> {
    let frontier = probe.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX));
    let mut positions = Vec::new();
    for (p, r) in inputs.reader.partitions.iter().zip(&inputs.readings) {
        let n = r.pending.partition_point(|&(_, emission)| emission < frontier);
        if n > 0 {
            positions.push((p.topic.clone(), p.partition, r.pending[n - 1].0));
        }
    }
    positions
}

/// Writes closed ticks in order; dead letters are produced as they arrive in `run` and at the
/// end (in position order, like a replay) in `batch`. The ticks and dead letters of one call
/// end with one Kafka commit, holding `offsets` (exactly-once).
fn drain(
    sinks: &mut Sinks,
    collected: &RefCell<Collected>,
    probe: &ProbeHandle<Millis>,
    ticks: Ticks,
    finished: bool,
    batch: bool,
    offsets: &[(String, i32, i64)],
) -> Result<(), String> {
    let mut c = collected.borrow_mut();
    sinks.meter.collected(&c);
    let end = c.window_end(ticks);
    // Without --until (run), a tick holding only hold expiries waits for later input.
    for (time, batch) in crate::runtime::worker::closed_ticks(&mut c, probe, end) {
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
    if let Some(k) = sinks.kafka.as_mut() {
        k.commit(offsets).map_err(|e| e.to_string())?;
    }
    if finished {
        let mut dead = std::mem::take(&mut c.dead_letters);
        dead.sort();
        let summary = Summary { sources: c.stats, counters: c.counters.clone(), as_of: end };
        if let Some(k) = sinks.kafka.as_mut() {
            if batch {
                k.finish(&dead, &sinks.snapshot, &summary).map_err(|e| e.to_string())?;
            } else {
                // Dead letters went out as they came; everything must be acknowledged before
                // the final commit.
                k.flush().map_err(|e| e.to_string())?;
            }
        }
        if let Some(d) = sinks.dir.as_mut() {
            d.finish(&dead, &sinks.snapshot, &summary).map_err(|e| e.to_string())?;
        }
        sinks.meter.acknowledged(Millis::MAX);
    }
    sinks.meter.state(&sinks.snapshot);
    Ok(())
}
