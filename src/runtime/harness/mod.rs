//! The one worker loop every mode runs (`replay`, `run`, `batch`, `explain`): it reads a
//! [`Source`], decodes and feeds the dataflow, advances the input frontier, steps the
//! dataflow with backpressure, hands closed ticks to the sinks (worker 0), takes and writes
//! checkpoints, and commits what the sinks have acknowledged. A mode is a [`Plan`], a source
//! and its sinks; the loop is [`Harness`], a struct with one method per step.

mod checkpoints;
mod delivery;
mod reading;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataflows::clock::{PartitionClock, Ticks};
use dataflows::model::Millis;
use timely::dataflow::ProbeHandle;

pub use checkpoints::{restored_clocks, restored_positions};
pub use delivery::{Sinks, WindowEnd};
use checkpoints::Checkpoints;
use delivery::Delivery;
use reading::{FrontierRule, Reading};

use crate::config::Checkpointing;
use crate::io::sink::SinkError;
use crate::io::source::{Decoded, Discovery, Source, SourceError};
use crate::runtime::checkpoint::{self, CheckpointError, Chosen, Shared};
use crate::runtime::dataflow::{self, frontier, Dataflow, Routing};
use crate::runtime::metrics::{InputMeter, OutputMeter};
use crate::runtime::profile;
use crate::runtime::progress::Progress;

/// Messages read before the loop looks at the frontier and steps the dataflow.
const BATCH: usize = 4096;

/// The start-up stages of the sinks ([`crate::io::sink::Sink::start`]).
const START_STAGES: usize = 3;

/// A read slice while `run` waits for written ticks to be acknowledged: the delivery reports
/// and the acknowledgement's trip through the dataflow are seen at the next loop turn.
const ACK_SLICE: Duration = Duration::from_millis(1);

/// The most steps a loop turn takes to carry this worker's own progress to a probe.
const PROGRESS_STEPS: usize = 4;

/// How often each worker refreshes its share of the lag (Kafka).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Longest a worker waiting on the dataflow parks before it looks again. Waiting workers park
/// instead of spinning: on a box with as many workers as cores, a spinning worker takes the
/// core from the one it waits for. Timely wakes a parked worker when data or progress arrives;
/// the bound covers what it cannot see (the sinks' acknowledgements, a stop signal).
const PARK: Duration = Duration::from_millis(1);

/// What a run is, the same for every worker.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Tick and window.
    pub ticks: Ticks,
    /// Allowed lateness per partition.
    pub lateness_ms: Millis,
    /// `run`: a partition with nothing new for this long follows the wall clock. `None`: a run
    /// that ends when its input does.
    pub idle: Option<Duration>,
    /// Source ids to names (files or topics), for dead letters and metrics.
    pub sources: Vec<String>,
    /// Where output records go (which the sinks decide).
    pub routing: Routing,
    /// Whether worker 0 writes formatted output (files, stdout): every worker then formats the
    /// records of its keys into runs and keeps its share of the final snapshot.
    pub formats: bool,
    /// Where the window ends for writing ticks.
    pub end: WindowEnd,
    /// Checkpoints to take, with `--checkpoint-dir`.
    pub checkpoints: Option<Checkpointing>,
    /// The checkpoint this run starts from.
    pub restore: Option<Chosen>,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The input failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An output failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A checkpoint share could not be loaded.
    #[error("cannot load checkpoint share {0}")]
    Restore(#[from] CheckpointError),
    /// A checkpoint could not be written.
    #[error("cannot write a checkpoint into {dir}: {reason}; check the directory and free space")]
    Checkpoint {
        /// The checkpoint directory.
        dir: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Creates a worker's sinks, given its index: every worker's own sinks, worker 0's typed and
/// line sinks.
pub type MakeSinks<'a> = &'a dyn Fn(usize) -> Result<Sinks, SinkError>;

/// Runs one timely worker of `plan`: builds the dataflow, reads `source`, and (worker 0) writes
/// to the sinks `make_sinks` creates. `stop` ends the run at the next loop turn.
pub fn run_worker<S: Source>(
    worker: &mut timely::worker::Worker,
    plan: &Plan,
    source: S,
    make_sinks: MakeSinks<'_>,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<(), HarnessError> {
    let profile = profile::operator_profile(worker);
    let mut harness = Harness::build(worker, plan, source, progress, stop);
    harness.start(make_sinks)?;
    while harness.turn()? {}
    harness.finish()?;
    if let Some(profile) = profile {
        // Dropping the logger flushes its last events.
        worker.log_register().map(|mut r| r.remove("timely"));
        profile.borrow().report(worker.index());
    }
    Ok(())
}

/// One worker's loop state.
struct Harness<'w, S: Source> {
    worker: &'w mut timely::worker::Worker,
    plan: &'w Plan,
    index: usize,
    peers: usize,
    dataflow: Dataflow,
    source: S,
    readings: Vec<Reading>,
    /// Clocks of restored partitions, taken up when the partition is first read.
    clocks: BTreeMap<(String, i32), PartitionClock>,
    /// This worker's outputs (created once its partitions are known).
    delivery: Option<Delivery>,
    checkpoints: Option<Checkpoints>,
    meter: InputMeter,
    progress: &'w Progress,
    stop: &'w AtomicBool,
    /// The input time of the previous turn: the dataflow is stepped until it reaches it.
    previous_time: Millis,
    /// The input time of the turn before the previous one.
    older_time: Millis,
    /// Whether this turn reads an [`ACK_SLICE`] only.
    short_turn: bool,
    last_step: Instant,
    lag_checked: Instant,
    lag_reported: u64,
}

impl<'w, S: Source> Harness<'w, S> {
    fn build(
        worker: &'w mut timely::worker::Worker,
        plan: &'w Plan,
        source: S,
        progress: &'w Progress,
        stop: &'w AtomicBool,
    ) -> Self {
        let (index, peers) = (worker.index(), worker.peers());
        let ticks = plan.ticks;
        let mut meter = InputMeter::new(progress.metrics.clone(), index, ticks);
        meter.watch_arrangements(worker);
        let shared = plan.checkpoints.as_ref().map(|c| {
            let topics = &plan.sources;
            let template = checkpoint::Header::template(index, peers, topics, ticks, plan.lateness_ms);
            Rc::new(RefCell::new(Shared::new(c.dir.clone(), template)))
        });
        let routing = plan.routing;
        let dataflow = worker.dataflow::<Millis, _, _>(|scope| dataflow::build(scope, ticks, routing, shared.as_ref()));
        let checkpoints = shared.zip(plan.checkpoints.as_ref()).map(|(shared, c)| Checkpoints::new(shared, c.every));
        Harness {
            worker,
            plan,
            index,
            peers,
            dataflow,
            source,
            readings: Vec::new(),
            clocks: BTreeMap::new(),
            delivery: None,
            checkpoints,
            meter,
            progress,
            stop,
            previous_time: 0,
            older_time: 0,
            short_turn: false,
            last_step: Instant::now(),
            lag_checked: Instant::now(),
            lag_reported: 0,
        }
    }

    /// Restores the chosen checkpoint, finds the partitions to read (a continuous run waits
    /// for the broker: until its partitions are known, no frontier may move, it would follow the
    /// wall clock past their data), then creates worker 0's sinks.
    fn start(&mut self, make_sinks: MakeSinks<'_>) -> Result<(), HarnessError> {
        if let Some(chosen) = &self.plan.restore {
            self.restore(chosen)?;
        }
        while !self.discover()? {
            if self.stop.load(Ordering::Relaxed) {
                break; // the loop stops at its first turn
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let typed_snapshot = self.dataflow.shares.as_ref().map(|shares| Rc::clone(&shares.snapshot));
        let meter = OutputMeter::new(self.progress.metrics.clone(), self.plan.sources.clone());
        let window = (self.plan.ticks, self.plan.end);
        let sinks = make_sinks(self.index)?;
        let keys = self.dataflow.keys.clone();
        let mut delivery = Delivery::new(self.index, (sinks, keys), typed_snapshot, (window, self.plan.formats), meter);
        delivery.restored_before = self.plan.restore.as_ref().map_or(0, |chosen| chosen.at);
        for stage in 0..START_STAGES {
            delivery.start_sinks(stage)?;
            self.barrier(stage as Millis + 1);
        }
        self.dataflow.barrier = None;
        self.delivery = Some(delivery);
        Ok(())
    }

    /// Waits until every worker has passed start-up step `step`.
    fn barrier(&mut self, step: Millis) {
        if let Some(barrier) = self.dataflow.barrier.as_mut() {
            barrier.advance_to(step);
        }
        let probe = &self.dataflow.barrier_probe;
        self.worker.step_or_park_while(Some(PARK), || probe.less_than(&step));
    }

    /// The restored state enters just before the checkpoint's time, so that it is complete
    /// before the first tick at or after it.
    fn restore(&mut self, chosen: &Chosen) -> Result<(), HarnessError> {
        self.clocks = restored_clocks(chosen);
        if let Some(c) = self.checkpoints.as_mut() {
            c.last = chosen.at;
        }
        let inputs = self.dataflow.inputs();
        inputs.advance_to(chosen.at - 1);
        checkpoints::restore(chosen, (self.index, self.peers), self.plan.ticks, self.checkpoints.as_mut(), inputs)?;
        self.dataflow.inputs().advance_to(chosen.at);
        Ok(())
    }

    /// Starts reading the partitions the source announces; `false` when its broker did not
    /// answer.
    fn discover(&mut self) -> Result<bool, HarnessError> {
        let Discovery::Added(new) = self.source.discover()? else { return Ok(false) };
        let tracks_offsets = self.source.commits_offsets();
        for partition in new {
            let slot = self.readings.len();
            let position = self.source.position(slot);
            let clock = (self.plan.lateness_ms, self.plan.ticks);
            self.readings.push(Reading::new(&partition, &position, clock, &self.clocks, tracks_offsets));
        }
        Ok(true)
    }

    /// One turn of the loop; `false` once the input is read (or the run stops).
    fn turn(&mut self) -> Result<bool, HarnessError> {
        if self.source.discovery_due() {
            self.discover()?;
        }
        let stopping = self.stop.load(Ordering::Relaxed);
        let exhausted = self.plan.idle.is_none() && (0..self.readings.len()).all(|slot| self.source.exhausted(slot));
        if stopping || exhausted {
            self.end_input(stopping);
            return Ok(false);
        }
        let read = self.read()?;
        self.report_lag();
        self.advance();
        self.request_checkpoint();
        self.step(read > 0);
        self.deliver()?;
        self.settle()?;
        Ok(true)
    }

    /// Reads a batch of messages (a tenth of a tick at most; [`ACK_SLICE`] while `run` waits
    /// for written ticks to be acknowledged) and sends what they decode to.
    fn read(&mut self) -> Result<u64, HarnessError> {
        let regular = Duration::from_millis((self.plan.ticks.tick_ms / 10).clamp(1, 100));
        self.short_turn = self.awaiting_acknowledgement();
        let slice = if self.short_turn { ACK_SLICE } else { regular };
        let Harness { source, readings, dataflow, meter, checkpoints, plan, .. } = self;
        let ticks = plan.ticks;
        let behind = reading::furthest_behind(readings, |slot| source.exhausted(slot));
        let inputs = dataflow.inputs();
        let (read, bytes) = source.read(behind, BATCH, slice, &mut |slot, offset, raw| {
            let reading = &mut readings[slot];
            match reading.decoder.decode(offset, raw) {
                Decoded::Event(mut event) => {
                    // After an idle advance the input may be past this message's tick: it is
                    // then applied at the current time (the one timing-dependent place).
                    let now = *inputs.events.time();
                    if ticks.emission(event.order.effective).is_some_and(|t| t < now) {
                        event.order.effective = now;
                    }
                    reading.sent(offset, ticks.emission(event.order.effective));
                    meter.event(slot, &event);
                    inputs.events.send(event);
                }
                Decoded::Dead(dead) => {
                    reading.sent(offset, None);
                    inputs.dead_letters.send(dead);
                }
                Decoded::BeyondWindow(event) => {
                    reading.sent(offset, None);
                    if let Some(c) = checkpoints {
                        c.shared.borrow_mut().held.push(event);
                    }
                }
            }
        })?;
        for (slot, reading) in readings.iter_mut().enumerate() {
            let stats = reading.decoder.take_stats();
            if stats == Default::default() {
                continue;
            }
            self.progress.rejected.fetch_add(stats.rejected, Ordering::Relaxed);
            meter.partition(slot, &reading.name, reading.partition, &stats, source.may_be_quiet());
            if let Some(c) = checkpoints.as_mut() {
                c.sent.absorb(&stats);
            }
            inputs.stats.send(stats);
        }
        self.progress.read.fetch_add(read, Ordering::Relaxed);
        self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(read)
    }

    /// Whether the loop spends steps on latency: `run` from a source that may be quiet (Kafka).
    /// Other runs keep one batch in flight and take no extra steps (each step is a round of
    /// progress tracking).
    fn prompt(&self) -> bool {
        self.plan.idle.is_some() && self.source.may_be_quiet()
    }

    /// `run`: whether ticks the dataflow has settled are not yet acknowledged everywhere. Their
    /// acknowledgement comes from the broker's delivery reports and the acknowledgement input's
    /// trip through the dataflow, which only a loop turn sees: short turns see it soon.
    fn awaiting_acknowledgement(&self) -> bool {
        self.prompt() && frontier(&self.dataflow.acknowledged) < self.dataflow.settled()
    }

    /// Each worker adds the change of its own share of the lag, so the sum is the process's.
    fn report_lag(&mut self) {
        if self.lag_checked.elapsed() < LAG_EVERY {
            return;
        }
        let lags = self.source.lags();
        if lags.is_empty() {
            return;
        }
        let lag = lags.iter().flatten().sum();
        self.progress.lag.fetch_add(lag, Ordering::Relaxed);
        self.progress.lag.fetch_sub(self.lag_reported, Ordering::Relaxed);
        self.lag_reported = lag;
        self.lag_checked = Instant::now();
        let named = self.readings.iter().map(|r| (r.name.clone(), r.partition));
        self.meter.lag(named.zip(lags));
    }

    /// The least time this worker's partitions can still send an event at.
    fn input_frontier(&mut self) -> Millis {
        let (ticks, lateness) = (self.plan.ticks, self.plan.lateness_ms);
        let wall = self.plan.idle.map(|_| ticks.emission(now_ms().saturating_sub(lateness)).unwrap_or(Millis::MAX));
        let idle = match self.plan.idle {
            Some(after) => self.source.idle(after),
            None => Vec::new(),
        };
        let rule = FrontierRule { until: ticks.until, wall };
        let source = &self.source;
        reading::input_frontier(&self.readings, |slot| source.exhausted(slot), &idle, &rule)
    }

    /// Moves the input to the frontier the partitions allow, cutting a checkpoint position.
    fn advance(&mut self) {
        let time = self.input_frontier();
        if time > self.dataflow.time() {
            self.advance_to(time);
        }
        self.meter.publish(self.dataflow.time());
    }

    fn advance_to(&mut self, time: Millis) {
        if let Some(c) = self.checkpoints.as_mut() {
            c.cut(time, &self.readings, &self.source);
        }
        self.dataflow.inputs().advance_to(time);
        if self.index == 0 {
            self.progress.watermark.store(time, Ordering::Relaxed);
        }
    }

    /// Worker 0 asks every worker's ledgers for a checkpoint when one is due.
    fn request_checkpoint(&mut self) {
        let (ticks, peers) = (self.plan.ticks, self.peers);
        let now = self.dataflow.time();
        if let Some(c) = self.checkpoints.as_mut().filter(|_| self.index == 0) {
            if c.due(now, ticks.tick_ms) {
                c.request(self.dataflow.inputs(), peers);
            }
        }
    }

    /// Backpressure: lets the dataflow catch up with what this worker sent before this turn.
    /// A source whose partitions may be quiet (Kafka) waits only as far as every worker has
    /// sent: waiting on a worker whose partitions lag in event time would stop this loop from
    /// writing the ticks already done. A prompt loop ([`Harness::prompt`]) works through the
    /// ticks the watermark passed in this turn, so that they are written in this turn rather
    /// than after the next read slice. Otherwise two batches stay in flight: with one, each
    /// worker waited for the others to finish formatting their ticks outside the steps, so the
    /// workers took turns (2 workers, 10M events: 44.9 -> 39.0 s; 1 worker unchanged).
    fn step(&mut self, read_any: bool) {
        let quiet = self.source.may_be_quiet();
        let target = if self.prompt() { self.dataflow.time() } else { self.older_time };
        let (probe, sent) = (&self.dataflow.probe, &self.dataflow.sent);
        if target > self.previous_time {
            step_towards(self.worker, sent, target);
        }
        let reachable = || if quiet { target.min(frontier(sent)) } else { target };
        self.worker.step_or_park_while(Some(PARK), || probe.less_than(&reachable()));
        self.older_time = self.previous_time;
        self.previous_time = self.dataflow.time();
        // Short turns step as often as regular ones: a step is a round of progress tracking.
        let due = self.last_step.elapsed() > Duration::from_millis(10);
        if (read_any && !self.short_turn) || due {
            self.worker.step();
            self.last_step = Instant::now();
        }
        if let Some(shares) = &self.dataflow.shares {
            self.meter.state_share(shares.sizes.get());
        }
    }

    /// Writes this worker's closed ticks (worker 0 also merges every worker's), and tells
    /// through its acknowledgement input how far its part is durably written.
    fn deliver(&mut self) -> Result<(), HarnessError> {
        let offsets = self.positions_before(self.dataflow.settled());
        let prompt = self.prompt();
        let d = self.delivery.as_mut().expect("the sinks exist once the loop runs");
        if d.drain_own(&mut self.dataflow, &offsets)? && prompt {
            // Taken now, the trip of the runs to worker 0's merge lets a tick be merged (and
            // acknowledged) in this turn.
            step_towards(self.worker, &self.dataflow.runs_probe, self.dataflow.settled());
        }
        d.write_merged(&self.dataflow, &offsets)?;
        let through = d.acknowledged(&self.dataflow)?;
        if let Some(acks) = self.dataflow.acks.as_mut().filter(|acks| through > *acks.time()) {
            acks.advance_to(through);
            if prompt {
                step_towards(self.worker, &self.dataflow.acknowledged, through);
            }
        }
        if self.index == 0 {
            d.meter.acknowledged(frontier(&self.dataflow.acknowledged));
        }
        if let Some(sizes) = d.share_sizes() {
            self.meter.state_share(sizes);
        }
        Ok(())
    }

    /// Writes the checkpoint shares whose ticks are acknowledged and, in `run`, commits the
    /// offsets whose ticks are.
    fn settle(&mut self) -> Result<(), HarnessError> {
        let acknowledged = frontier(&self.dataflow.acknowledged);
        if let Some(c) = self.checkpoints.as_mut() {
            c.publish(self.index, acknowledged, self.dataflow.settled())?;
        }
        if self.plan.idle.is_some() {
            self.commit_acknowledged()?;
        }
        Ok(())
    }

    /// The input ends: read to its end, or the run stops. A finished batch checkpoints its
    /// whole window (a later window continues from it); a stopped run takes no new checkpoint
    /// (a worker may not have read up to worker 0's time) and writes only the ticks the whole
    /// input has passed: later ones, which the dataflow would drain without the messages not
    /// read yet, are left to the restart.
    fn end_input(&mut self, stopping: bool) {
        if !stopping {
            // Read to their ends: a file whose every message was rejected is named.
            let lines = !self.source.commits_offsets();
            self.readings.iter().for_each(|r| r.decoder.exhausted(&r.name, lines));
        }
        let passed = self.dataflow.settled();
        if let Some(d) = self.delivery.as_mut() {
            d.stopping(passed);
        }
        if self.checkpoints.is_none() {
            return;
        }
        if !stopping {
            // The whole window is read: every tick in it is written.
            self.final_checkpoint();
        } else if let Some(d) = self.delivery.as_mut() {
            d.stop_at = Some(passed);
        }
    }

    /// Every worker has read all its partitions, so its last cut holds everything read.
    fn final_checkpoint(&mut self) {
        let now = self.dataflow.time();
        let target = self.plan.ticks.until.map_or(now, |until| (until + 1).max(now));
        if self.index == 0 {
            if target > now {
                self.advance_to(target);
            }
            let peers = self.peers;
            let inputs = self.dataflow.inputs.as_mut().expect("inputs are open until the loop ends");
            if let Some(c) = self.checkpoints.as_mut().filter(|c| target > c.last) {
                c.request(inputs, peers);
            }
        }
        if let Some(c) = self.checkpoints.as_mut() {
            c.cut(Millis::MAX, &self.readings, &self.source);
        }
    }

    /// Closes the input, drains the dataflow to the sinks, sends this worker's snapshot share,
    /// ends the sinks, writes the last checkpoint shares and commits.
    fn finish(&mut self) -> Result<(), HarnessError> {
        self.dataflow.close_inputs();
        self.meter.input_closed();
        while !self.dataflow.done() {
            self.worker.step_or_park(Some(PARK));
            self.deliver()?;
        }
        self.deliver()?;
        // Every tick of this worker is written: its share goes to worker 0, and its runs end.
        let share = self.delivery.as_ref().map(Delivery::snapshot_runs).unwrap_or_default();
        if let Some(mut runs_in) = self.dataflow.runs_in.take() {
            share.into_iter().for_each(|run| runs_in.send(run));
        }
        while !self.dataflow.runs_probe.done() {
            self.worker.step_or_park(Some(PARK));
            self.deliver()?;
        }
        self.deliver()?;
        if let Some(d) = self.delivery.as_mut() {
            d.finish(&self.dataflow)?;
        }
        // Every output is acknowledged: release the other workers' commits.
        self.dataflow.acks = None;
        while !self.dataflow.acknowledged.done() {
            self.worker.step_or_park(Some(PARK));
        }
        if let Some(c) = self.checkpoints.as_mut() {
            c.publish(self.index, Millis::MAX, Millis::MAX)?;
        }
        let exhausted = (0..self.readings.len()).all(|slot| self.source.exhausted(slot));
        if self.checkpoints.is_some() && !(self.plan.idle.is_none() && exhausted) {
            // What was read after the last checkpoint is not in any output: the restart reads
            // it again from the checkpoint, and the group's offsets stay where outputs cover it.
            self.commit_acknowledged()?;
        } else {
            let all: Vec<(usize, i64)> = (0..self.readings.len()).map(|s| (s, self.source.position(s).next)).collect();
            self.source.commit(&all)?;
        }
        if let Some(shares) = &self.dataflow.shares {
            self.meter.state_share(shares.sizes.get());
        }
        self.meter.finish();
        Ok(())
    }

    /// Commits, per partition, the offsets whose messages' ticks are all acknowledged.
    fn commit_acknowledged(&mut self) -> Result<(), HarnessError> {
        let acknowledged = frontier(&self.dataflow.acknowledged);
        let offsets: Vec<(usize, i64)> = (self.readings.iter_mut().enumerate())
            .filter_map(|(slot, r)| r.take_acknowledged(acknowledged).map(|o| (slot, o)))
            .collect();
        if !offsets.is_empty() {
            self.source.commit(&offsets)?;
        }
        Ok(())
    }

    /// This worker's read positions through the messages whose ticks all lie before
    /// `frontier`, i.e. are drained next: what a transaction holding those ticks may commit.
    fn positions_before(&self, frontier: Millis) -> Vec<(String, i32, i64)> {
        (self.readings.iter().enumerate())
            .filter_map(|(slot, r)| {
                let next = r.offset_before(frontier)?;
                let position = self.source.position(slot);
                Some((position.name, position.partition, next))
            })
            .collect()
    }
}

/// Steps `worker` until `probe` passes `time`, at most [`PROGRESS_STEPS`] times: a change of
/// this worker's inputs reaches a probe through timely's progress exchange, within a few steps;
/// when another worker holds the probe back, the loop goes on rather than wait for it.
fn step_towards(worker: &mut timely::worker::Worker, probe: &ProbeHandle<Millis>, time: Millis) {
    for _ in 0..PROGRESS_STEPS {
        if !probe.less_than(&time) {
            return;
        }
        worker.step();
    }
}

fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// Waits for every timely worker and turns the first failure into an error.
pub fn join_workers(guards: timely::communication::WorkerGuards<Result<(), HarnessError>>) -> anyhow::Result<()> {
    for result in guards.join() {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(panic) => anyhow::bail!("a worker failed: {panic}"),
        }
    }
    Ok(())
}
