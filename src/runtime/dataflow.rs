//! The dataflow every mode runs: its inputs (events, dead letters, source counts, checkpoint
//! control, output acknowledgements), the pipeline of `dataflows`, and the collection of every
//! output on worker 0 for the sinks, with the final snapshot kept in per-worker shares.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use dataflows::allocation::PlanLine;
use dataflows::changes::Change;
use dataflows::clock::Ticks;
use dataflows::ledger::{Control, Counter};
use dataflows::low_stock::LowView;
use dataflows::model::{DeadLetter, Event, Millis, Name};
use dataflows::pipeline::{stockflow, Atp};
use dataflows::keys::KeyTable;
use dataflows::stash::{Chunks, TickItems};
use dataflows::Key;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, Exchange, Input, Probe};
use timely::dataflow::ProbeHandle;

use crate::io::sink::lines::Run;
use crate::io::sink::{upsert, Snapshot, SnapshotShare, TickBatch};
use crate::io::source::SourceStats;
use crate::runtime::checkpoint;

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

/// The inputs a worker feeds.
pub struct Inputs {
    /// Decoded, stamped events within the window.
    pub events: InputOf<Event>,
    /// Rejected messages.
    pub dead_letters: InputOf<DeadLetter>,
    /// Source counts, per batch.
    pub stats: InputOf<SourceStats>,
    /// Checkpoint requests and restored ledger state.
    pub control: InputOf<Control>,
}

impl Inputs {
    /// Advances every input to `time`.
    pub fn advance_to(&mut self, time: Millis) {
        self.events.advance_to(time);
        self.dead_letters.advance_to(time);
        self.stats.advance_to(time);
        self.control.advance_to(time);
    }
}

/// Worker 0's typed final snapshot, kept in per-worker shares ([`Routing::typed_on_zero`]).
pub struct Shares {
    /// Filled on worker 0 from every worker's share once the input is exhausted.
    pub snapshot: Rc<RefCell<Snapshot>>,
    /// This worker's share sizes per table (atp, low_stock, order_plan, network_atp).
    pub sizes: Rc<Cell<[u64; 4]>>,
    /// Passes the end once every share reached worker 0. Apart from the main probe: a share
    /// holds its first change's time until the end.
    pub probe: ProbeHandle<Millis>,
}

/// The dataflow's inputs and probes, as one worker holds them.
pub struct Dataflow {
    /// Open until the input is read to its end or the run stops.
    pub inputs: Option<Inputs>,
    /// Each worker advances this input through the ticks its part of the outputs is durably
    /// written for: its frontier ([`Dataflow::acknowledged`]) tells every worker which ticks
    /// are written everywhere, and so which offsets may be committed.
    pub acks: Option<InputOf<()>>,
    /// Passes a time once every output record of it reached worker 0 (and, with checkpoints,
    /// every share of it is encoded).
    pub probe: ProbeHandle<Millis>,
    /// The least input time over every worker: what the dataflow can reach at most until the
    /// slowest worker's input moves on.
    pub sent: ProbeHandle<Millis>,
    /// Passes a time once every worker has acknowledged every tick before it.
    pub acknowledged: ProbeHandle<Millis>,
    /// Dead letters, counts and (with [`Routing::typed_on_zero`]) every record, on worker 0
    /// (empty on the other workers).
    pub collected: Rc<RefCell<Collected>>,
    /// With [`Routing::local`]: the records of the keys this worker owns.
    pub local: Rc<RefCell<Collected>>,
    /// With [`Routing::typed_on_zero`]: the typed final snapshot.
    pub shares: Option<Shares>,
    /// This worker's key table (its sink's share keeps the written ATP rows there).
    pub keys: KeyTable,
    /// Each worker's formatted runs, for worker 0; closed once the worker sent its snapshot.
    pub runs_in: Option<InputOf<Run>>,
    /// Every worker's runs, on worker 0.
    pub runs: Rc<RefCell<Runs>>,
    /// Passes a tick once every worker sent its runs of it; done once every snapshot run is in.
    pub runs_probe: ProbeHandle<Millis>,
    /// Start-up steps every worker finishes before any begins the next: each worker advances
    /// this input past a step when it has done it.
    pub barrier: Option<InputOf<()>>,
    /// Passes step `n` once every worker has advanced past it.
    pub barrier_probe: ProbeHandle<Millis>,
}

impl Dataflow {
    /// The open inputs.
    pub fn inputs(&mut self) -> &mut Inputs {
        self.inputs.as_mut().expect("the inputs are open until the loop ends")
    }

    /// The inputs' current time.
    pub fn time(&self) -> Millis {
        self.inputs.as_ref().map_or(Millis::MAX, |i| *i.events.time())
    }

    /// Closes the inputs: the input is read to its end, or the run stops.
    pub fn close_inputs(&mut self) {
        self.inputs = None;
    }

    /// The least time every worker's outputs may still change at ([`Millis::MAX`] once done).
    pub fn settled(&self) -> Millis {
        frontier(&self.probe)
    }

    /// Whether every output (and every typed snapshot share) has reached its worker.
    pub fn done(&self) -> bool {
        self.probe.done() && self.shares.as_ref().is_none_or(|s| s.probe.done())
    }
}

/// The first element of a probe's frontier, [`Millis::MAX`] once it is empty.
pub fn frontier(probe: &ProbeHandle<Millis>) -> Millis {
    probe.with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX))
}

/// Where the output records of each tick go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routing {
    /// Each worker keeps the records of the keys it owns ([`Dataflow::local`]): its Kafka
    /// producer sends them, and it formats them into runs for worker 0's output files.
    pub local: bool,
    /// Every record also reaches worker 0 typed ([`Dataflow::collected`]): for the HTML report,
    /// `explain`, and a Kafka producer on worker 0.
    pub typed_on_zero: bool,
    /// The final snapshot reaches worker 0 typed ([`Dataflow::shares`]): report, `explain`.
    pub typed_snapshot: bool,
}

/// Runs of formatted records, as worker 0 collects them from every worker.
#[derive(Default)]
pub struct Runs {
    /// Per tick, the runs of every worker.
    pub ticks: BTreeMap<Millis, Vec<Run>>,
    /// The final snapshot's runs of every worker.
    pub snapshot: Vec<Run>,
}

/// Builds stockflow's dataflow in `scope`: the inputs, the pipeline, the output records routed
/// by `routing`, and the dead letters, counts and formatted runs collected on worker 0; with
/// `checkpoints`, this worker's checkpoint writer.
pub fn build(
    scope: timely::dataflow::Scope<'_, Millis>,
    ticks: Ticks,
    routing: Routing,
    checkpoints: Option<&Rc<RefCell<checkpoint::Shared>>>,
) -> Dataflow {
    let probe = ProbeHandle::new();
    let (collected, local) = (Rc::new(RefCell::new(Collected::default())), Rc::new(RefCell::new(Collected::default())));
    let (events_in, events) = scope.new_input::<Vec<Event>>();
    let sent = ProbeHandle::new();
    let events = events.probe_with(&sent);
    let (dead_in, dead) = scope.new_input::<Vec<DeadLetter>>();
    let (stats_in, stats) = scope.new_input::<Vec<SourceStats>>();
    let (control_in, control) = scope.new_input::<Vec<Control>>();
    let (acks_in, acks) = scope.new_input::<Vec<()>>();
    let acknowledged = ProbeHandle::new();
    acks.probe_with(&acknowledged);
    let outputs = stockflow(events, control, ticks);
    if let Some(shared) = checkpoints {
        checkpoint::writer(outputs.saved.clone(), Rc::clone(shared), &probe);
    }
    let shares = routing.typed_snapshot.then(|| typed_snapshot(&outputs, &stats, ticks));
    for (gather, target, to_zero) in [(routing.local, &local, false), (routing.typed_on_zero, &collected, true)] {
        if gather {
            let probe = &probe;
            TickRecords { probe, target, to_zero, stream: outputs.atp.clone() }.gather(|x| x.time, |t| &mut t.atp);
            let low = TickRecords { probe, target, to_zero, stream: outputs.low_stock.clone() };
            low.gather(|x| x.time, |t| &mut t.low_stock);
            let plan = TickRecords { probe, target, to_zero, stream: outputs.order_plan.clone() };
            plan.gather(|x| x.time, |t| &mut t.order_plan);
            let network = TickRecords { probe, target, to_zero, stream: outputs.network_atp.clone() };
            network.gather(|x| x.time, |t| &mut t.network_atp);
        }
    }
    if routing.local {
        let current = TickRecords { probe: &probe, target: &local, to_zero: false, stream: outputs.low_stock_current };
        current.gather(|x| x.time, |t| &mut t.low_stock_current);
    }
    let c = Rc::clone(&collected);
    collect(outputs.counters.inner, &probe, move |x| *c.borrow_mut().counters.entry(x.0).or_default() += x.2 as i64);
    let c = Rc::clone(&collected);
    collect(dead, &probe, move |x| c.borrow_mut().dead_letters.push(x));
    // Every worker needs the window's end (the largest effective time) to know which of its
    // ticks to write: the counts reach every worker.
    let l = Rc::clone(&local);
    consume(stats.clone().broadcast(), &probe, move |data| data.drain(..).for_each(|x| l.borrow_mut().stats.absorb(&x)));
    let c = Rc::clone(&collected);
    collect(stats, &probe, move |x| c.borrow_mut().stats.absorb(&x));
    let (barrier_in, barrier) = scope.new_input::<Vec<()>>();
    let barrier_probe = ProbeHandle::new();
    barrier.probe_with(&barrier_probe);
    let (runs_in, runs) = scope.new_input::<Vec<Run>>();
    let (runs_probe, collected_runs) = (ProbeHandle::new(), Rc::new(RefCell::new(Runs::default())));
    let target = Rc::clone(&collected_runs);
    collect(runs, &runs_probe, move |run: Run| {
        let mut runs = target.borrow_mut();
        match run.tick {
            Some(tick) => runs.ticks.entry(tick).or_default().push(run),
            None => runs.snapshot.push(run),
        }
    });
    Dataflow {
        inputs: Some(Inputs { events: events_in, dead_letters: dead_in, stats: stats_in, control: control_in }),
        acks: Some(acks_in),
        probe,
        sent,
        acknowledged,
        collected,
        local,
        shares,
        keys: outputs.keys,
        runs_in: Some(runs_in),
        runs: collected_runs,
        runs_probe,
        barrier: Some(barrier_in),
        barrier_probe,
    }
}

/// The final snapshot, typed, on worker 0: each worker keeps its share inside the dataflow and
/// sends it to worker 0 once the input is exhausted.
fn typed_snapshot(outputs: &dataflows::pipeline::Outputs<'_>, stats: &dataflows::Stream<'_, SourceStats>, ticks: Ticks) -> Shares {
    let (snapshot, sizes) = (Rc::new(RefCell::new(Snapshot::default())), Rc::new(Cell::new([0; 4])));
    let share_probe = ProbeHandle::new();
    let changes = outputs
        .atp
        .clone()
        .map(ShareChange::Atp)
        .concat(outputs.low_stock_current.clone().map(ShareChange::LowStock))
        .concat(outputs.order_plan.clone().map(ShareChange::OrderPlan))
        .concat(outputs.network_atp.clone().map(ShareChange::NetworkAtp));
    let records = snapshot_shares(changes, stats.clone().broadcast(), ticks, Rc::clone(&sizes));
    let target = Rc::clone(&snapshot);
    collect(records, &share_probe, move |change| target.borrow_mut().apply_one(change));
    Shares { snapshot, sizes, probe: share_probe }
}

/// One output stream to gather by tick into `target` (on worker 0 when `to_zero`).
struct TickRecords<'a, 's, D> {
    probe: &'a ProbeHandle<Millis>,
    target: &'a Rc<RefCell<Collected>>,
    to_zero: bool,
    stream: dataflows::Stream<'s, D>,
}

impl<D: timely::ExchangeData> TickRecords<'_, '_, D> {
    /// Each record goes to `stream_of` its tick (`tick_of`), which is looked up once per run of
    /// records of one tick (they come grouped).
    fn gather<C: TickColumn<D> + 'static>(self, tick_of: fn(&D) -> Millis, stream_of: fn(&mut TickBatch) -> &mut C) {
        let collected = Rc::clone(self.target);
        let apply = move |data: &mut Vec<D>| {
            let mut c = collected.borrow_mut();
            let mut data = std::mem::take(data);
            // An activation's container starts with its earliest tick, and the setup tick's
            // run is the size of the state: where a run is most of the container and the
            // tick's records can take it whole, the container joins them and only the rest is
            // moved. Copying it record by record held two of it at the heap's peak (heaptrack
            // at 1M keys: 118 MB).
            if let Some(time) = data.first().map(tick_of) {
                let run = data.iter().take_while(|r| tick_of(r) == time).count();
                let column = stream_of(c.ticks.entry(time).or_default());
                if column.adopts() && run * 2 >= data.len() {
                    let rest = data.split_off(run);
                    column.adopt(std::mem::replace(&mut data, rest));
                }
            }
            let mut records = data.into_iter();
            // The rest, one run of a tick at a time (they come grouped).
            while let Some(time) = records.as_slice().first().map(tick_of) {
                let run = records.as_slice().iter().take_while(|r| tick_of(r) == time).count();
                stream_of(c.ticks.entry(time).or_default()).extend_by(records.by_ref().take(run));
            }
        };
        let stream = if self.to_zero { self.stream.exchange(|_| 0) } else { self.stream };
        consume(stream, self.probe, apply);
    }
}

/// A tick's records of one output stream, as [`TickRecords::gather`] fills it.
trait TickColumn<D> {
    /// Whether a container of records can join them whole, without a copy.
    fn adopts(&self) -> bool;
    /// Adds `records`, whole, after those already here.
    fn adopt(&mut self, records: Vec<D>);
    /// Adds `records` one by one.
    fn extend_by(&mut self, records: impl Iterator<Item = D>);
}

/// One vector: a container becomes it only while it is empty.
impl<D> TickColumn<D> for Vec<D> {
    fn adopts(&self) -> bool {
        self.is_empty()
    }

    fn adopt(&mut self, records: Vec<D>) {
        *self = records;
    }

    fn extend_by(&mut self, records: impl Iterator<Item = D>) {
        self.extend(records);
    }
}

/// Containers in a row: every container joins whole.
impl<D> TickColumn<D> for Chunks<D> {
    fn adopts(&self) -> bool {
        true
    }

    fn adopt(&mut self, records: Vec<D>) {
        self.push_chunk(records);
    }

    fn extend_by(&mut self, records: impl Iterator<Item = D>) {
        records.for_each(|record| TickItems::push(self, record));
    }
}

/// Moves every record of `stream` to worker 0 and hands it, by value, to `apply`; `probe`
/// passes a time only once every record of it has been applied.
fn collect<D: timely::ExchangeData>(
    stream: dataflows::Stream<'_, D>,
    probe: &ProbeHandle<Millis>,
    mut apply: impl FnMut(D) + 'static,
) {
    consume(stream.exchange(|_| 0), probe, move |data| data.drain(..).for_each(&mut apply));
}

/// Hands every container of `stream`, on the worker it is on, to `apply`, which empties it.
fn consume<D: timely::ExchangeData>(
    stream: dataflows::Stream<'_, D>,
    probe: &ProbeHandle<Millis>,
    mut apply: impl FnMut(&mut Vec<D>) + 'static,
) {
    stream
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

/// Applies one change to a worker's share.
fn apply_to_share(share: &mut SnapshotShare, change: ShareChange) {
    match change {
        ShareChange::Atp(c) => upsert(&mut share.atp, c.key, c.value),
        ShareChange::LowStock(c) => upsert(&mut share.low_stock, c.key, c.value),
        ShareChange::OrderPlan(c) => upsert(&mut share.order_plan, c.key, c.value),
        ShareChange::NetworkAtp(c) => upsert(&mut share.network_atp, c.key, c.value),
    }
}

/// A share's entries as changes that insert them.
fn share_changes(share: SnapshotShare, time: Millis) -> impl Iterator<Item = ShareChange> {
    let atp = share.atp.into_iter().map(move |(key, v)| ShareChange::Atp(Change { time, key, value: Some(v) }));
    let low = share.low_stock.into_iter().map(move |(key, v)| ShareChange::LowStock(Change { time, key, value: Some(v) }));
    let plan =
        share.order_plan.into_iter().map(move |(key, v)| ShareChange::OrderPlan(Change { time, key, value: Some(v) }));
    let net =
        share.network_atp.into_iter().map(move |(key, v)| ShareChange::NetworkAtp(Change { time, key, value: Some(v) }));
    atp.chain(low).chain(plan).chain(net)
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
                        apply_to_share(&mut share, change);
                    } else {
                        pending.entry(time).or_default().push(change);
                    }
                }
            });
            while let Some(entry) = pending.first_entry() {
                if end.is_none_or(|end| *entry.key() > end) {
                    break;
                }
                entry.remove().into_iter().for_each(|change| apply_to_share(&mut share, change));
            }
            if held.is_some() {
                // Not after the share is emitted (and emptied): the keys it held stay in state.
                sizes.set(share.sizes());
            }
            if changes_frontier.is_empty() && stats_frontier.is_empty() {
                if let Some(cap) = held.take() {
                    output.session(&cap).give_iterator(share_changes(std::mem::take(&mut share), *cap.time()));
                }
            }
        }
    })
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

