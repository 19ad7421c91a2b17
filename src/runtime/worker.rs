//! The timely worker loop of a replay: build the dataflow, feed each worker's share of the
//! input in time order, advance the input frontier, step, and hand closed ticks to the sink.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dataflows::allocation::PlanLine;
use dataflows::changes::Change;
use dataflows::clock::Ticks;
use dataflows::ledger::{Control, Counter, Saved};
use dataflows::low_stock::LowView;
use dataflows::model::{DeadLetter, Event, Millis, Name};
use dataflows::pipeline::{stockflow, Atp};
use dataflows::{FastMap, Key};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, Exchange, Input, Probe};
use timely::dataflow::ProbeHandle;

use crate::config::ReplayConfig;
use crate::runtime::metrics::{InputMeter, OutputMeter};
use crate::io::sink::{Sink, Snapshot, Summary, TickBatch};
use crate::io::source::file::LineReader;
use crate::io::source::{Decoded, PartitionDecoder, SourceStats};

/// Lines read from one partition before the worker looks at the others and steps the dataflow.
const BATCH_LINES: usize = 4096;

/// What the dataflow hands to worker 0 for the sinks.
#[derive(Default)]
pub struct Collected {
    /// Records of each tick not yet written.
    pub ticks: BTreeMap<Millis, TickBatch>,
    /// Ledger outcome counts so far.
    pub counters: BTreeMap<Counter, i64>,
    /// Source counts so far.
    pub stats: SourceStats,
    /// Dead letters so far, in arrival order.
    pub dead_letters: Vec<DeadLetter>,
}

impl Collected {
    /// The last logical time known to be in the window: `--until`, else the tick of the largest
    /// effective time applied so far (final once the input is exhausted).
    pub fn window_end(&self, ticks: Ticks) -> Option<Millis> {
        ticks.until.or(self.stats.max_effective.and_then(|t| ticks.emission(t)))
    }
}

/// A dataflow input fed by the worker loop.
pub type InputOf<D> = timely::dataflow::InputHandle<Millis, timely::container::CapacityContainerBuilder<Vec<D>>>;

/// The inputs every worker feeds.
pub struct Inputs {
    /// Decoded, stamped events within the window.
    pub events: InputOf<Event>,
    /// Rejected messages.
    pub dead_letters: InputOf<DeadLetter>,
    /// Source counts, per batch.
    pub stats: InputOf<SourceStats>,
    /// Checkpoint requests and restored ledger state.
    pub control: InputOf<Control>,
    /// The least input time over every worker: what the dataflow can reach at most until
    /// the slowest worker's input moves on.
    pub sent: ProbeHandle<Millis>,
}

/// Builds stockflow's dataflow in `scope`: the inputs, the pipeline, and every output, dead
/// letter and count collected on worker 0 into `collected`, all of them probed by `probe`;
/// returns the inputs and this worker's checkpoint entries.
pub fn build<'s>(
    scope: timely::dataflow::Scope<'s, Millis>,
    ticks: Ticks,
    collected: &Rc<RefCell<Collected>>,
    probe: &ProbeHandle<Millis>,
) -> (Inputs, dataflows::Stream<'s, Saved>) {
    build_with(scope, ticks, collected, probe, None)
}

/// [`build`], optionally keeping the final snapshot in per-worker shares (see [`SnapshotShare`])
/// instead of having worker 0 apply every change: the shares reach worker 0's `snapshot` only
/// when the input is exhausted, probed by `snapshot.1`; `snapshot.2` tells the share's sizes.
fn build_with<'s>(
    scope: timely::dataflow::Scope<'s, Millis>,
    ticks: Ticks,
    collected: &Rc<RefCell<Collected>>,
    probe: &ProbeHandle<Millis>,
    snapshot: Option<(&Rc<RefCell<Snapshot>>, &ProbeHandle<Millis>, &Rc<Cell<[u64; 4]>>)>,
) -> (Inputs, dataflows::Stream<'s, Saved>) {
    let (events_in, events) = scope.new_input::<Vec<Event>>();
    let sent = ProbeHandle::new();
    let events = events.probe_with(&sent);
    let (dead_in, dead) = scope.new_input::<Vec<DeadLetter>>();
    let (stats_in, stats) = scope.new_input::<Vec<SourceStats>>();
    let (control_in, control) = scope.new_input::<Vec<Control>>();
    let outputs = stockflow(events, control, ticks);
    let saved = outputs.saved;

    if let Some((snapshot, snapshot_probe, share_sizes)) = snapshot {
        let changes = outputs
            .atp
            .clone()
            .map(ShareChange::Atp)
            .concat(outputs.low_stock_current.map(ShareChange::LowStock))
            .concat(outputs.order_plan.clone().map(ShareChange::OrderPlan))
            .concat(outputs.network_atp.clone().map(ShareChange::NetworkAtp));
        let records = snapshot_shares(changes, stats.clone().broadcast(), ticks, Rc::clone(share_sizes));
        let snapshot = Rc::clone(snapshot);
        collect(records, snapshot_probe, move |change| snapshot.borrow_mut().apply_one(change));
    } else {
        collect_by_tick(outputs.low_stock_current, probe, collected, |x| x.time, |t| &mut t.low_stock_current);
    }
    collect_by_tick(outputs.atp, probe, collected, |x| x.time, |t| &mut t.atp);
    collect_by_tick(outputs.low_stock, probe, collected, |x| x.time, |t| &mut t.low_stock);
    collect_by_tick(outputs.order_plan, probe, collected, |x| x.time, |t| &mut t.order_plan);
    collect_by_tick(outputs.network_atp, probe, collected, |x| x.time, |t| &mut t.network_atp);
    let c = Rc::clone(collected);
    collect(outputs.counters.inner, probe, move |x| *c.borrow_mut().counters.entry(x.0).or_default() += x.2 as i64);
    let c = Rc::clone(collected);
    collect(dead, probe, move |x| c.borrow_mut().dead_letters.push(x));
    let c = Rc::clone(collected);
    collect(stats, probe, move |x| c.borrow_mut().stats.absorb(&x));
    (Inputs { events: events_in, dead_letters: dead_in, stats: stats_in, control: control_in, sent }, saved)
}

/// Moves every record of `stream` to worker 0 and hands it, by value, to `apply`; `probe`
/// passes a time only once every record of it has been applied.
fn collect<D: timely::ExchangeData>(
    stream: dataflows::Stream<'_, D>,
    probe: &ProbeHandle<Millis>,
    mut apply: impl FnMut(D) + 'static,
) {
    collect_containers(stream, probe, move |data| data.drain(..).for_each(&mut apply));
}

/// [`collect`] for one stream of [`TickBatch`]: each record goes to `stream_of` its tick
/// (`tick_of`), which is looked up once per run of records of one tick (they come grouped).
fn collect_by_tick<D: timely::ExchangeData>(
    stream: dataflows::Stream<'_, D>,
    probe: &ProbeHandle<Millis>,
    collected: &Rc<RefCell<Collected>>,
    tick_of: fn(&D) -> Millis,
    stream_of: fn(&mut TickBatch) -> &mut Vec<D>,
) {
    let collected = Rc::clone(collected);
    collect_containers(stream, probe, move |data| {
        let mut c = collected.borrow_mut();
        let mut records = data.drain(..).peekable();
        while let Some(first) = records.next() {
            let time = tick_of(&first);
            let batch = stream_of(c.ticks.entry(time).or_default());
            batch.push(first);
            while let Some(record) = records.next_if(|r| tick_of(r) == time) {
                batch.push(record);
            }
        }
    });
}

/// Moves every container of `stream` to worker 0 and hands it to `apply`, which empties it.
fn collect_containers<D: timely::ExchangeData>(
    stream: dataflows::Stream<'_, D>,
    probe: &ProbeHandle<Millis>,
    mut apply: impl FnMut(&mut Vec<D>) + 'static,
) {
    stream
        .exchange(|_| 0)
        .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Collect", |_, _| {
            move |input, _output| {
                input.for_each(|_, data| apply(data));
            }
        })
        .probe_with(probe);
}

/// One change of a snapshot table, as it reaches a worker's [`SnapshotShare`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ShareChange {
    /// An `atp` row.
    Atp(Change<Key, Atp>),
    /// A key entering, changing in or leaving the LOW/OUT set.
    LowStock(Change<Key, LowView>),
    /// An order line.
    OrderPlan(Change<Key, PlanLine>),
    /// A sku's network ATP.
    NetworkAtp(Change<Name, i64>),
}

impl ShareChange {
    fn time(&self) -> Millis {
        match self {
            ShareChange::Atp(c) => c.time,
            ShareChange::LowStock(c) => c.time,
            ShareChange::OrderPlan(c) => c.time,
            ShareChange::NetworkAtp(c) => c.time,
        }
    }
}

/// A worker's share of the final snapshot: the current value of each key whose changes this
/// worker produced. Keeping it here, instead of applying every change on worker 0, spreads the
/// work and the memory over the workers; the shares meet on worker 0 once, at the end.
#[derive(Default)]
struct SnapshotShare {
    atp: FastMap<Key, Atp>,
    low_stock: FastMap<Key, LowView>,
    order_plan: FastMap<Key, PlanLine>,
    network_atp: FastMap<Name, i64>,
}

fn upsert<K: std::hash::Hash + Eq, V>(map: &mut FastMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

impl SnapshotShare {
    /// Keys per table: atp, low_stock, order_plan, network_atp (for the metrics).
    fn sizes(&self) -> [u64; 4] {
        [self.atp.len(), self.low_stock.len(), self.order_plan.len(), self.network_atp.len()].map(|n| n as u64)
    }

    fn apply(&mut self, change: ShareChange) {
        match change {
            ShareChange::Atp(c) => upsert(&mut self.atp, c.key, c.value),
            ShareChange::LowStock(c) => upsert(&mut self.low_stock, c.key, c.value),
            ShareChange::OrderPlan(c) => upsert(&mut self.order_plan, c.key, c.value),
            ShareChange::NetworkAtp(c) => upsert(&mut self.network_atp, c.key, c.value),
        }
    }

    /// The share's entries as changes that insert them.
    fn into_changes(self, time: Millis) -> impl Iterator<Item = ShareChange> {
        let atp = self.atp.into_iter().map(move |(key, v)| ShareChange::Atp(Change { time, key, value: Some(v) }));
        let low =
            self.low_stock.into_iter().map(move |(key, v)| ShareChange::LowStock(Change { time, key, value: Some(v) }));
        let plan = self
            .order_plan
            .into_iter()
            .map(move |(key, v)| ShareChange::OrderPlan(Change { time, key, value: Some(v) }));
        let net = self
            .network_atp
            .into_iter()
            .map(move |(key, v)| ShareChange::NetworkAtp(Change { time, key, value: Some(v) }));
        atp.chain(low).chain(plan).chain(net)
    }
}

impl Snapshot {
    /// Inserts one entry of a worker's share.
    fn apply_one(&mut self, change: ShareChange) {
        fn put<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
            if let Some(v) = value {
                map.insert(key, v);
            }
        }
        match change {
            ShareChange::Atp(c) => put(&mut self.atp, c.key, c.value),
            ShareChange::LowStock(c) => put(&mut self.low_stock, c.key, c.value),
            ShareChange::OrderPlan(c) => put(&mut self.order_plan, c.key, c.value),
            ShareChange::NetworkAtp(c) => put(&mut self.network_atp, c.key, c.value),
        }
    }
}

/// Keeps each worker's [`SnapshotShare`] and, once every input is exhausted, emits it.
///
/// Each producer emits a key's changes on this worker in tick order, so applying them as they
/// come keeps the latest value. Only ticks within the window count: a tick holding only hold
/// expiries may lie after the last message (SPEC §2's window end, known from the broadcast
/// source counts), so changes beyond the end known so far wait until it moves past them.
fn snapshot_shares<'s>(
    changes: dataflows::Stream<'s, ShareChange>,
    stats: dataflows::Stream<'s, SourceStats>,
    ticks: Ticks,
    sizes: Rc<Cell<[u64; 4]>>,
) -> dataflows::Stream<'s, ShareChange> {
    changes.binary_frontier(stats, Pipeline, Pipeline, "SnapshotShare", move |_, _| {
        let mut share = SnapshotShare::default();
        let mut pending: BTreeMap<Millis, Vec<ShareChange>> = BTreeMap::new();
        let mut max_effective: Option<Millis> = None;
        // Held from the first change on, to emit the share at the end.
        let mut held: Option<timely::dataflow::operators::Capability<Millis>> = None;
        move |(changes, changes_frontier), (stats, stats_frontier), output| {
            stats.for_each(|_, data| data.drain(..).for_each(|s| max_effective = max_effective.max(s.max_effective)));
            let end = ticks.until.or(max_effective.and_then(|t| ticks.emission(t)));
            changes.for_each(|cap, data| {
                if held.is_none() {
                    held = cap.retain_least(0);
                }
                for change in data.drain(..) {
                    let time = change.time();
                    if pending.is_empty() && end.is_some_and(|end| time <= end) {
                        share.apply(change);
                    } else {
                        pending.entry(time).or_default().push(change);
                    }
                }
            });
            while let Some(entry) = pending.first_entry() {
                if end.is_none_or(|end| *entry.key() > end) {
                    break;
                }
                entry.remove().into_iter().for_each(|change| share.apply(change));
            }
            if held.is_some() {
                // Not after the share is emitted (and emptied): the keys it held stay in state.
                sizes.set(share.sizes());
            }
            if changes_frontier.is_empty() && stats_frontier.is_empty() {
                if let Some(cap) = held.take() {
                    output.session(&cap).give_iterator(std::mem::take(&mut share).into_changes(*cap.time()));
                }
            }
        }
    })
}

/// Process-wide progress counters, read by the progress line.
#[derive(Default)]
pub struct Progress {
    /// Messages read by this process's workers.
    pub read: AtomicU64,
    /// Bytes read by this process's workers.
    pub bytes: AtomicU64,
    /// The least input frontier among this process's workers.
    pub watermark: AtomicU64,
    /// Kafka: messages behind the partitions' high watermarks, summed over this process's
    /// workers (each adds the change of its own share).
    pub lag: AtomicU64,
    /// The metrics endpoint's counters, with `--metrics-addr`.
    pub metrics: Option<Arc<crate::runtime::metrics::Metrics>>,
}

/// One partition being read by this worker.
struct Partition {
    /// Index into the inputs (the source id).
    source: usize,
    lines: LineReader,
    decoder: PartitionDecoder,
    done: bool,
}

/// Runs one timely worker of a replay. Worker 0 owns the sink; `make_sink` is called there only.
pub fn replay_worker(
    worker: &mut timely::worker::Worker,
    config: &ReplayConfig,
    progress: &Progress,
    make_sink: &dyn Fn() -> std::io::Result<Box<dyn Sink>>,
) -> Result<(), String> {
    let index = worker.index();
    let peers = worker.peers();
    let ticks = config.ticks;
    let collected = Rc::new(RefCell::new(Collected::default()));
    let probe = ProbeHandle::new();
    let snapshot = Rc::new(RefCell::new(Snapshot::default()));
    let snapshot_probe = ProbeHandle::new();
    let share_sizes = Rc::new(Cell::new([0; 4]));

    let profile = operator_profile(worker);
    let mut meter = InputMeter::new(progress, index, ticks);
    meter.watch_arrangements(worker);
    let (mut events_in, mut dead_in, mut stats_in) = worker.dataflow::<Millis, _, _>(|scope| {
        // A replay neither restores nor checkpoints: its control input closes at once.
        let snapshot = Some((&snapshot, &snapshot_probe, &share_sizes));
        let (inputs, _) = build_with(scope, ticks, &collected, &probe, snapshot);
        (inputs.events, inputs.dead_letters, inputs.stats)
    });

    let mut sink = if index == 0 { Some(make_sink().map_err(|e| e.to_string())?) } else { None };
    let names = config.inputs.iter().map(|i| i.name.clone()).collect();
    let mut writer = Writer { snapshot, ticks, meter: OutputMeter::new(progress, names) };

    // Files are the unit of parallel reading: worker i reads files i, i + peers, ...
    let mut partitions = Vec::new();
    for (source, input) in config.inputs.iter().enumerate() {
        if source % peers != index {
            continue;
        }
        let lines =
            LineReader::open(&input.path).map_err(|e| format!("cannot open input {}: {e}", input.path.display()))?;
        let decoder = PartitionDecoder::new(source as u32, 0, config.lateness_ms, ticks);
        partitions.push(Partition { source, lines, decoder, done: false });
    }

    let mut previous_time = 0;
    loop {
        // Read from the partition furthest behind, so that no partition's events wait long in
        // the ledger for the others to catch up.
        let next = partitions
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| !p.done)
            .min_by_key(|(_, p)| p.decoder.frontier().unwrap_or(Millis::MAX));
        let Some((slot, partition)) = next else { break };
        let before = partition.lines.bytes_read();
        let mut read = 0;
        while read < BATCH_LINES {
            let line = partition.lines.next_message().map_err(|e| e.to_string())?;
            let Some((offset, raw)) = line else {
                partition.done = true;
                break;
            };
            read += 1;
            match partition.decoder.decode(offset, raw) {
                Decoded::Event(event) => {
                    meter.event(slot, &event);
                    events_in.send(event)
                }
                Decoded::Dead(dead) => dead_in.send(dead),
                Decoded::BeyondWindow(_) => {}
            }
        }
        let stats = partition.decoder.take_stats();
        meter.partition(slot, &config.inputs[partition.source].name, 0, &stats, false);
        stats_in.send(stats);
        progress.read.fetch_add(read as u64, Ordering::Relaxed);
        progress.bytes.fetch_add(partition.lines.bytes_read() - before, Ordering::Relaxed);

        let time = input_frontier(&partitions, ticks.until);
        if time > *events_in.time() {
            events_in.advance_to(time);
            dead_in.advance_to(time);
            stats_in.advance_to(time);
            progress.watermark.store(time, Ordering::Relaxed);
        }
        meter.publish(*events_in.time());
        meter.state_share(share_sizes.get());
        // Keep at most one batch of input ahead of the outputs, so memory stays bounded.
        worker.step_while(|| probe.less_than(&previous_time));
        previous_time = time;
        if let Some(sink) = sink.as_mut() {
            writer.drain(&collected, &probe, sink.as_mut(), false).map_err(|e| e.to_string())?;
        }
    }
    drop((events_in, dead_in, stats_in));
    meter.input_closed();
    while !probe.done() || !snapshot_probe.done() {
        worker.step();
        if let Some(sink) = sink.as_mut() {
            writer.drain(&collected, &probe, sink.as_mut(), false).map_err(|e| e.to_string())?;
        }
    }
    if let Some(sink) = sink.as_mut() {
        writer.drain(&collected, &probe, sink.as_mut(), true).map_err(|e| e.to_string())?;
    }
    if let Some(profile) = profile {
        // Dropping the logger flushes its last events.
        worker.log_register().map(|mut r| r.remove("timely"));
        profile.borrow().report(index);
    }
    meter.state_share(share_sizes.get());
    meter.finish();
    Ok(())
}

/// Time spent inside each operator (excluding the operators nested in it), from timely's own
/// event log. Enabled by `STOCKFLOW_PROFILE_OPERATORS=1`; benchmarks use it to find the time.
#[derive(Default)]
struct OperatorProfile {
    names: std::collections::HashMap<usize, String>,
    own: std::collections::HashMap<usize, std::time::Duration>,
    /// Operators being scheduled, innermost last, with the time they (re)started.
    stack: Vec<(usize, std::time::Duration)>,
}

impl OperatorProfile {
    fn report(&self, worker: usize) {
        let mut rows: Vec<_> = self.own.iter().map(|(id, d)| (*d, *id)).collect();
        rows.sort_by(|a, b| b.cmp(a));
        let total: f64 = rows.iter().map(|(d, _)| d.as_secs_f64()).sum();
        tracing::info!("operator profile, worker {worker}: {total:.2} s scheduled");
        for (d, id) in rows.iter().take(30) {
            let name = self.names.get(id).map_or("?", String::as_str);
            tracing::info!("{:8.3} s {:5.1}%  {name} ({id})", d.as_secs_f64(), 100.0 * d.as_secs_f64() / total);
        }
    }
}

fn operator_profile(worker: &mut timely::worker::Worker) -> Option<Rc<RefCell<OperatorProfile>>> {
    use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
    std::env::var_os("STOCKFLOW_PROFILE_OPERATORS")?;
    let profile = Rc::new(RefCell::new(OperatorProfile::default()));
    let shared = Rc::clone(&profile);
    worker.log_register()?.insert::<TimelyEventBuilder, _>("timely", move |_, data| {
        let Some(data) = data else { return };
        let mut p = shared.borrow_mut();
        for (at, event) in data.iter() {
            match event {
                TimelyEvent::Operates(o) => {
                    p.names.insert(o.id, o.name.clone());
                }
                TimelyEvent::Schedule(s) => match s.start_stop {
                    StartStop::Start => {
                        if let Some(&(outer, since)) = p.stack.last() {
                            *p.own.entry(outer).or_default() += *at - since;
                        }
                        p.stack.push((s.id, *at));
                    }
                    StartStop::Stop => {
                        if let Some((id, since)) = p.stack.pop() {
                            *p.own.entry(id).or_default() += *at - since;
                        }
                        if let Some(outer) = p.stack.last_mut() {
                            outer.1 = *at;
                        }
                    }
                },
                _ => {}
            }
        }
    });
    Some(profile)
}

/// Removes and returns, in time order and sorted by key, the ticks the frontier has passed that
/// lie within the window (`end`, when known). A tick holding only hold expiries may lie after the
/// last message, so without a known end nothing is released.
pub fn closed_ticks(c: &mut Collected, probe: &ProbeHandle<Millis>, end: Option<Millis>) -> Vec<(Millis, TickBatch)> {
    let mut closed = Vec::new();
    while let Some(entry) = c.ticks.first_entry() {
        let time = *entry.key();
        if probe.less_equal(&time) || end.is_none_or(|end| time > end) {
            break;
        }
        let mut batch = entry.remove();
        batch.sort();
        closed.push((time, batch));
    }
    closed
}

/// Waits for every timely worker and turns the first failure into an error.
pub fn join_workers(guards: timely::communication::WorkerGuards<Result<(), String>>) -> anyhow::Result<()> {
    for result in guards.join() {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(message)) => anyhow::bail!("{message}"),
            Err(panic) => anyhow::bail!("a worker failed: {panic}"),
        }
    }
    Ok(())
}

/// The least logical time at which any of these partitions can still emit an event.
fn input_frontier(partitions: &[Partition], until: Option<Millis>) -> Millis {
    partitions
        .iter()
        .filter(|p| !p.done)
        .map(|p| p.decoder.frontier().unwrap_or(until.unwrap_or(Millis::MAX)))
        .min()
        .unwrap_or(Millis::MAX)
}

/// Moves closed ticks from the dataflow to the sink, in order.
struct Writer {
    /// The final snapshot, filled from the workers' shares when the input is exhausted.
    snapshot: Rc<RefCell<Snapshot>>,
    ticks: Ticks,
    meter: OutputMeter,
}

impl Writer {
    /// Writes every closed tick that is known to lie within the window. A tick holding only hold
    /// expiries may lie after the last message; it waits until the window's end is known.
    fn drain(
        &mut self,
        collected: &RefCell<Collected>,
        probe: &ProbeHandle<Millis>,
        sink: &mut dyn Sink,
        finished: bool,
    ) -> std::io::Result<()> {
        let mut c = collected.borrow_mut();
        self.meter.collected(&c);
        let end = c.window_end(self.ticks);
        for (time, batch) in closed_ticks(&mut c, probe, end) {
            sink.tick(time, &batch)?;
            self.meter.written(&batch);
        }
        // Every tick the probe passed within the window is written now.
        let passed = probe.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX));
        self.meter.acknowledged(end.map_or(0, |end| passed.min(end.saturating_add(1))));
        if finished {
            let mut dead_letters = std::mem::take(&mut c.dead_letters);
            dead_letters.sort();
            let summary = Summary { sources: c.stats, counters: c.counters.clone(), as_of: end };
            sink.finish(&dead_letters, &self.snapshot.borrow(), &summary)?;
            self.meter.acknowledged(Millis::MAX);
        }
        Ok(())
    }
}
