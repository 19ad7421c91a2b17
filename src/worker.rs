//! The timely worker loop of a replay: build the dataflow, feed each worker's share of the
//! input in time order, advance the input frontier, step, and hand closed ticks to the sink.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use dataflows::clock::Ticks;
use dataflows::ledger::Counter;
use dataflows::model::{DeadLetter, Event, Millis};
use dataflows::pipeline::stockflow;
use timely::dataflow::operators::{Exchange, Input, Inspect, Probe};
use timely::dataflow::ProbeHandle;

use crate::config::ReplayConfig;
use crate::sink::{Sink, Snapshot, Summary, TickBatch};
use crate::source::file::LineReader;
use crate::source::{Decoded, PartitionDecoder, SourceStats};

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
}

/// Builds stockflow's dataflow in `scope`: the inputs, the pipeline, and every output, dead
/// letter and count collected on worker 0 into `collected`, all of them probed by `probe`.
pub fn build(
    scope: timely::dataflow::Scope<'_, Millis>,
    ticks: Ticks,
    collected: &Rc<RefCell<Collected>>,
    probe: &ProbeHandle<Millis>,
) -> Inputs {
    let (events_in, events) = scope.new_input::<Vec<Event>>();
    let (dead_in, dead) = scope.new_input::<Vec<DeadLetter>>();
    let (stats_in, stats) = scope.new_input::<Vec<SourceStats>>();
    let outputs = stockflow(events, ticks);

    macro_rules! collect {
        ($stream:expr, |$c:ident, $x:ident| $body:expr) => {{
            let collected = Rc::clone(collected);
            $stream
                .exchange(|_| 0)
                .inspect(move |$x| {
                    let mut $c = collected.borrow_mut();
                    $body
                })
                .probe_with(probe);
        }};
    }
    fn tick(c: &mut Collected, time: Millis) -> &mut TickBatch {
        c.ticks.entry(time).or_default()
    }
    collect!(outputs.atp, |c, x| tick(&mut c, x.time).atp.push(x.clone()));
    collect!(outputs.low_stock, |c, x| tick(&mut c, x.time).low_stock.push(x.clone()));
    collect!(outputs.low_stock_current, |c, x| tick(&mut c, x.time).low_stock_current.push(x.clone()));
    collect!(outputs.order_plan, |c, x| tick(&mut c, x.time).order_plan.push(x.clone()));
    collect!(outputs.network_atp, |c, x| tick(&mut c, x.time).network_atp.push(x.clone()));
    collect!(outputs.counters.inner, |c, x| *c.counters.entry(x.0).or_default() += x.2 as i64);
    collect!(dead, |c, x| c.dead_letters.push(x.clone()));
    collect!(stats, |c, x| c.stats.absorb(x));
    Inputs { events: events_in, dead_letters: dead_in, stats: stats_in }
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
}

/// One partition being read by this worker.
struct Partition {
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

    let profile = operator_profile(worker);
    let (mut events_in, mut dead_in, mut stats_in) = worker.dataflow::<Millis, _, _>(|scope| {
        let inputs = build(scope, ticks, &collected, &probe);
        (inputs.events, inputs.dead_letters, inputs.stats)
    });

    let mut sink = if index == 0 { Some(make_sink().map_err(|e| e.to_string())?) } else { None };
    let mut writer = Writer { snapshot: Snapshot::default(), ticks };

    // Files are the unit of parallel reading: worker i reads files i, i + peers, ...
    let mut partitions = Vec::new();
    for (source, input) in config.inputs.iter().enumerate() {
        if source % peers != index {
            continue;
        }
        let lines =
            LineReader::open(&input.path).map_err(|e| format!("cannot open input {}: {e}", input.path.display()))?;
        let decoder = PartitionDecoder::new(source as u32, 0, config.lateness_ms, ticks);
        partitions.push(Partition { lines, decoder, done: false });
    }

    let mut previous_time = 0;
    loop {
        // Read from the partition furthest behind, so that no partition's events wait long in
        // the ledger for the others to catch up.
        let next =
            partitions.iter_mut().filter(|p| !p.done).min_by_key(|p| p.decoder.frontier().unwrap_or(Millis::MAX));
        let Some(partition) = next else { break };
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
                Decoded::Event(event) => events_in.send(event),
                Decoded::Dead(dead) => dead_in.send(dead),
                Decoded::BeyondWindow => {}
            }
        }
        stats_in.send(partition.decoder.take_stats());
        progress.read.fetch_add(read as u64, Ordering::Relaxed);
        progress.bytes.fetch_add(partition.lines.bytes_read() - before, Ordering::Relaxed);

        let time = input_frontier(&partitions, ticks.until);
        if time > *events_in.time() {
            events_in.advance_to(time);
            dead_in.advance_to(time);
            stats_in.advance_to(time);
            progress.watermark.store(time, Ordering::Relaxed);
        }
        // Keep at most one batch of input ahead of the outputs, so memory stays bounded.
        worker.step_while(|| probe.less_than(&previous_time));
        previous_time = time;
        if let Some(sink) = sink.as_mut() {
            writer.drain(&collected, &probe, sink.as_mut(), false).map_err(|e| e.to_string())?;
        }
    }
    drop((events_in, dead_in, stats_in));
    while !probe.done() {
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
        eprintln!("operator profile, worker {worker}: {total:.2} s scheduled");
        for (d, id) in rows.iter().take(30) {
            let name = self.names.get(id).map_or("?", String::as_str);
            eprintln!("{:8.3} s {:5.1}%  {name} ({id})", d.as_secs_f64(), 100.0 * d.as_secs_f64() / total);
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
    snapshot: Snapshot,
    ticks: Ticks,
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
        let end = c.window_end(self.ticks);
        for (time, batch) in closed_ticks(&mut c, probe, end) {
            sink.tick(time, &batch)?;
            self.snapshot.apply(&batch);
        }
        if finished {
            let mut dead_letters = std::mem::take(&mut c.dead_letters);
            dead_letters.sort();
            let summary = Summary { sources: c.stats, counters: c.counters.clone(), as_of: end };
            sink.finish(&dead_letters, &self.snapshot, &summary)?;
        }
        Ok(())
    }
}
