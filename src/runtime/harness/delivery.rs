//! Each worker's side of the outputs: the closed ticks of the keys it owns go to its own sinks
//! (its Kafka producer), into its share of the final snapshot, and, formatted, to worker 0 as
//! runs. Worker 0 merges the runs into the output files, feeds the sinks that need every record
//! typed (the report, `explain`), writes the dead letters, the snapshot and the summary, and
//! tells how far everything is durably written.

use std::cell::RefCell;
use std::rc::Rc;

use dataflows::clock::Ticks;
use dataflows::keys::KeyTable;
use dataflows::model::{DeadLetter, Millis};

use crate::io::sink::lines::{runs_of_tick, LineSink, Lines, Run};
use crate::io::sink::{Sink, SinkError, Snapshot, SnapshotShare, Summary, TickBatch};
use crate::runtime::dataflow::{closed_ticks, frontier, Dataflow};
use crate::runtime::metrics::OutputMeter;

/// Where the window ends, as far as writing ticks goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowEnd {
    /// A run that ends: `--until`, else the tick of the largest effective time applied. A tick
    /// holding only hold expiries may lie after the last message, so without a known end
    /// nothing is written.
    Closed,
    /// `run`: no end. Every tick the input's watermark passed is written, expiry-only ticks
    /// included; once the run stops, the ticks the watermark had not passed are not.
    Open,
}

/// The sinks of a run, as created on each worker.
#[derive(Default)]
pub struct Sinks {
    /// This worker's sinks of the records of the keys it owns (a Kafka producer per worker).
    pub own: Vec<Box<dyn Sink>>,
    /// Worker 0: sinks of every record, typed (the HTML report, `explain`).
    pub typed: Vec<Box<dyn Sink>>,
    /// Worker 0: sinks of the formatted, merged lines (the output directory, stdout).
    pub lines: Vec<Box<dyn LineSink>>,
}

/// What worker 0 does besides its own keys.
struct Writer {
    typed: Vec<Box<dyn Sink>>,
    /// The typed final snapshot (with typed sinks).
    typed_snapshot: Option<Rc<RefCell<Snapshot>>>,
    lines: Vec<Box<dyn LineSink>>,
    /// How many collected dead letters the sinks have been given as they arrived.
    dead_given: usize,
    /// The last tick whose every run was merged.
    last_merged: Option<Millis>,
}

/// One worker's outputs.
pub struct Delivery {
    ticks: Ticks,
    end: WindowEnd,
    own: Vec<Box<dyn Sink>>,
    /// This worker's share of the final snapshot (when output files are written or metrics read).
    share: Option<SnapshotShare>,
    /// Whether the runs carry formatted records (output files are written) or only say which
    /// ticks this worker wrote.
    formats: bool,
    writer: Option<Writer>,
    /// Ticks before this are a restored checkpoint's state: they update the snapshot only
    /// (they were written before the checkpoint was taken).
    pub restored_before: Millis,
    /// Once stopping with checkpoints: ticks from this one on are not written (the dataflow
    /// drains them early, without the messages not read yet; the restart computes them whole).
    pub stop_at: Option<Millis>,
    /// `run`, once stopping: the last tick the watermark had passed.
    stopped_through: Option<Millis>,
    /// The last tick this worker wrote.
    last_written: Option<Millis>,
    /// The settled frontier of the last drain: every closed tick before it is written (the
    /// dataflow may have settled more since, not written yet).
    drained_before: Millis,
    /// The output side of the metrics.
    pub meter: OutputMeter,
}

impl Delivery {
    /// Worker `index`'s outputs into `sinks`; worker 0's typed sinks read `typed_snapshot`;
    /// `formats`: worker 0 writes formatted output, so every worker formats its records.
    pub fn new(
        index: usize,
        (sinks, keys): (Sinks, KeyTable),
        typed_snapshot: Option<Rc<RefCell<Snapshot>>>,
        ((ticks, end), formats): ((Ticks, WindowEnd), bool),
        meter: OutputMeter,
    ) -> Self {
        let writer = (index == 0).then(|| Writer {
            typed: sinks.typed,
            typed_snapshot,
            lines: sinks.lines,
            dead_given: 0,
            last_merged: None,
        });
        Delivery {
            ticks,
            end,
            own: sinks.own,
            // The metrics count the state's keys from the share, also when nothing is formatted.
            share: (formats || meter.enabled()).then(|| SnapshotShare::over_key_table(keys)),
            formats,
            writer,
            restored_before: 0,
            stop_at: None,
            stopped_through: None,
            last_written: None,
            drained_before: 0,
            meter,
        }
    }

    /// Start-up stage `stage` of this worker's sinks (in step with the other workers').
    pub fn start_sinks(&mut self, stage: usize) -> Result<(), SinkError> {
        let typed = self.writer.iter_mut().flat_map(|w| w.typed.iter_mut());
        self.own.iter_mut().chain(typed).try_for_each(|s| s.start(stage))
    }

    /// The run stops with the input's watermark at `passed`: ticks the watermark had not
    /// passed, beyond the last message's tick, are not written.
    pub fn stopping(&mut self, passed: Millis) {
        self.stopped_through = Some(passed.saturating_sub(1));
    }

    /// The last tick that may be written now: the window's end as the messages so far make it
    /// (`stats`, which every worker receives); `run`: any tick until it stops, then the later of
    /// the last message's tick and the last tick the watermark passed.
    fn writable_through(&self, window_end: Option<Millis>) -> Option<Millis> {
        match (self.end, self.stopped_through) {
            (WindowEnd::Closed, _) => window_end,
            (WindowEnd::Open, None) => Some(Millis::MAX),
            (WindowEnd::Open, Some(passed)) => window_end.max(Some(passed)),
        }
    }

    /// Writes this worker's closed ticks to its own sinks and its share, sends their runs to
    /// worker 0, and commits its sinks with `offsets` (this worker's read positions they cover).
    /// Whether it drained a tick.
    pub fn drain_own(&mut self, dataflow: &mut Dataflow, offsets: &[(String, i32, i64)]) -> Result<bool, SinkError> {
        let closed = {
            let mut local = dataflow.local.borrow_mut();
            let through = self.writable_through(local.window_end(self.ticks));
            self.drained_before = frontier(&dataflow.probe);
            closed_ticks(&mut local, &dataflow.probe, through)
        };
        let drained = !closed.is_empty();
        for (time, batch) in closed {
            let runs = self.tick(time, batch)?;
            if let Some(runs_in) = dataflow.runs_in.as_mut() {
                runs_in.advance_to(time);
                runs.into_iter().for_each(|run| runs_in.send(run));
            }
        }
        // Runs of later ticks go out at their own times: the input stays at the first tick
        // not written yet.
        let next = dataflow.local.borrow().ticks.keys().next().copied().unwrap_or(Millis::MAX);
        let hold = frontier(&dataflow.probe).min(next);
        if let Some(runs_in) = dataflow.runs_in.as_mut().filter(|r| hold > *r.time()) {
            runs_in.advance_to(hold);
        }
        self.own.iter_mut().try_for_each(|s| s.commit(offsets))?;
        Ok(drained)
    }

    /// One of this worker's closed ticks: its sinks, its share, its runs for worker 0.
    fn tick(&mut self, time: Millis, batch: TickBatch) -> Result<Vec<Run>, SinkError> {
        if time < self.restored_before {
            if let Some(share) = self.share.as_mut() {
                share.apply(time, &batch);
            }
            return Ok(Vec::new());
        }
        if self.stop_at.is_some_and(|stop| time >= stop) {
            return Ok(Vec::new());
        }
        self.own.iter_mut().try_for_each(|s| s.tick(time, &batch))?;
        if let Some(share) = self.share.as_mut() {
            share.apply(time, &batch);
        }
        self.last_written = Some(time);
        self.meter.written(&batch);
        // Without output files a run says only that this worker wrote the tick.
        let runs = if self.formats { runs_of_tick(time, batch) } else { Vec::new() };
        Ok(if runs.is_empty() { vec![Run::new(Some(time), 0)] } else { runs })
    }

    /// Worker 0: merges the ticks every worker has sent runs of into the output files, gives the
    /// typed sinks the closed ticks and the new dead letters, and commits (a typed Kafka sink
    /// with worker 0's read positions, `offsets`).
    pub fn write_merged(&mut self, dataflow: &Dataflow, offsets: &[(String, i32, i64)]) -> Result<(), SinkError> {
        let Some(w) = self.writer.as_mut() else { return Ok(()) };
        let mut c = dataflow.collected.borrow_mut();
        self.meter.collected(&c);
        let through = match (self.end, self.stopped_through) {
            (WindowEnd::Closed, _) => c.window_end(self.ticks),
            (WindowEnd::Open, None) => Some(Millis::MAX),
            (WindowEnd::Open, Some(passed)) => c.window_end(self.ticks).max(Some(passed)),
        };
        for (time, batch) in closed_ticks(&mut c, &dataflow.probe, through) {
            if time >= self.restored_before && self.stop_at.is_none_or(|stop| time < stop) {
                w.typed.iter_mut().try_for_each(|s| s.tick(time, &batch))?;
            }
        }
        let merged_through = frontier(&dataflow.runs_probe);
        let mut runs = dataflow.runs.borrow_mut();
        while let Some(entry) = runs.ticks.first_entry().filter(|e| *e.key() < merged_through) {
            let (time, runs) = entry.remove_entry();
            let lines = Lines::merged(&runs);
            w.lines.iter_mut().try_for_each(|s| s.tick(time, &lines))?;
            w.last_merged = Some(time);
            self.meter.tick_written();
        }
        if c.dead_letters.len() > w.dead_given {
            // Dead letters stay collected for the sinks that write them at the end.
            let from = w.dead_given;
            c.dead_letters[from..].sort();
            w.typed.iter_mut().try_for_each(|s| s.dead_letters(&c.dead_letters[from..]))?;
            self.own.iter_mut().try_for_each(|s| s.dead_letters(&c.dead_letters[from..]))?;
            w.dead_given = c.dead_letters.len();
        }
        w.typed.iter_mut().try_for_each(|s| s.commit(offsets))?;
        w.lines.iter_mut().try_for_each(|s| s.commit())
    }

    /// Every worker: the final snapshot share's runs, once every tick is written.
    pub fn snapshot_runs(&self) -> Vec<Run> {
        self.share.as_ref().filter(|_| self.formats).map(SnapshotShare::runs).unwrap_or_default()
    }

    /// Key counts of this worker's share, for the metrics.
    pub fn share_sizes(&self) -> Option<[u64; 4]> {
        self.share.as_ref().map(SnapshotShare::sizes)
    }

    /// Ends the run: every sink gets the dead letters, the final snapshot and the summary.
    pub fn finish(&mut self, dataflow: &Dataflow) -> Result<(), SinkError> {
        let Some(w) = self.writer.as_mut() else {
            return self.own.iter_mut().try_for_each(|s| s.finish(&[], &Snapshot::default(), &Summary::default()));
        };
        let mut c = dataflow.collected.borrow_mut();
        let mut dead = std::mem::take(&mut c.dead_letters);
        dead.sort();
        let window_end = c.window_end(self.ticks);
        let as_of = match self.end {
            WindowEnd::Closed => window_end,
            WindowEnd::Open => window_end.max(w.last_merged).max(self.last_written),
        };
        let summary = Summary { sources: c.stats, counters: c.counters.clone(), as_of };
        let runs = dataflow.runs.borrow();
        let snapshot_lines = Lines::merged(&runs.snapshot);
        w.lines.iter_mut().try_for_each(|s| s.finish(&dead, &snapshot_lines, &summary))?;
        let typed_snapshot = w.typed_snapshot.as_ref().map(|s| s.borrow());
        let empty = Snapshot::default();
        let typed = typed_snapshot.as_deref().unwrap_or(&empty);
        w.typed.iter_mut().try_for_each(|s| s.finish(&dead, typed, &summary))?;
        finish_own(&mut self.own, &dead, &summary)?;
        self.meter.acknowledged(Millis::MAX);
        Ok(())
    }

    /// The time through which this worker's part is durably written: the ticks it has drained,
    /// held back by the first tick one of its sinks has not acknowledged yet; on worker 0 also
    /// by the ticks not merged yet.
    pub fn acknowledged(&self, dataflow: &Dataflow) -> Result<Millis, SinkError> {
        let mut through = self.drained_before;
        let sinks = self.own.iter().chain(self.writer.iter().flat_map(|w| w.typed.iter()));
        for sink in sinks {
            if let Some(t) = sink.unacknowledged()? {
                through = through.min(t);
            }
        }
        if self.writer.is_some() {
            let pending = dataflow.runs.borrow().ticks.keys().next().copied();
            through = through.min(frontier(&dataflow.runs_probe));
            through = pending.map_or(through, |t| through.min(t));
        }
        Ok(through)
    }
}

/// The own sinks' end: a worker's producer writes dead letters only on worker 0.
fn finish_own(own: &mut [Box<dyn Sink>], dead: &[DeadLetter], summary: &Summary) -> Result<(), SinkError> {
    let empty = Snapshot::default();
    own.iter_mut().try_for_each(|s| s.finish(dead, &empty, summary))
}
