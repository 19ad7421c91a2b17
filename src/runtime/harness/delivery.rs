//! Worker 0's side of the outputs: closed ticks from the dataflow's collection to the sinks,
//! in time order, dead letters, the final snapshot and summary, and how far every sink has
//! durably written.

use std::cell::RefCell;
use std::rc::Rc;

use dataflows::clock::Ticks;
use dataflows::model::Millis;
use timely::dataflow::ProbeHandle;

use crate::io::sink::{Sink, SinkError, Snapshot, Summary, TickBatch};
use crate::runtime::dataflow::{closed_ticks, frontier, Collected};
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

/// How worker 0 keeps the final snapshot.
pub enum SnapshotSource {
    /// Filled from the workers' shares once the input is exhausted (see the dataflow).
    Shares(Rc<RefCell<Snapshot>>),
    /// Applied here, tick by tick, as ticks are written.
    Applied(Snapshot),
}

/// Worker 0's outputs.
pub struct Delivery {
    sinks: Vec<Box<dyn Sink>>,
    snapshot: SnapshotSource,
    ticks: Ticks,
    end: WindowEnd,
    /// Ticks before this are a restored checkpoint's state: they update the snapshot only
    /// (they were written before the checkpoint was taken).
    pub restored_before: Millis,
    /// Once stopping with checkpoints: ticks from this one on are not written (the dataflow
    /// drains them early, without the messages not read yet; the restart computes them whole).
    pub stop_at: Option<Millis>,
    /// `run`, once stopping: the last tick the watermark had passed.
    stopped_through: Option<Millis>,
    /// How many collected dead letters the sinks have been given as they arrived.
    dead_given: usize,
    /// The last tick written.
    last_written: Option<Millis>,
    /// The output side of the metrics.
    pub meter: OutputMeter,
}

impl Delivery {
    /// Worker 0's outputs into `sinks`.
    pub fn new(sinks: Vec<Box<dyn Sink>>, snapshot: SnapshotSource, ticks: Ticks, end: WindowEnd, meter: OutputMeter) -> Self {
        Delivery {
            sinks,
            snapshot,
            ticks,
            end,
            restored_before: 0,
            stop_at: None,
            stopped_through: None,
            dead_given: 0,
            last_written: None,
            meter,
        }
    }

    /// The run stops with the input's watermark at `passed`: ticks the watermark had not
    /// passed, beyond the last message's tick, are not written.
    pub fn stopping(&mut self, passed: Millis) {
        self.stopped_through = Some(passed.saturating_sub(1));
    }

    /// The last tick that may be written now: the window's end as the messages so far make it;
    /// `run`: any tick until it stops, then the later of the last message's tick and the last
    /// tick the watermark passed.
    fn writable_through(&self, c: &Collected) -> Option<Millis> {
        match (self.end, self.stopped_through) {
            (WindowEnd::Closed, _) => c.window_end(self.ticks),
            (WindowEnd::Open, None) => Some(Millis::MAX),
            (WindowEnd::Open, Some(passed)) => c.window_end(self.ticks).max(Some(passed)),
        }
    }

    /// Writes every closed tick that may be written, gives the sinks the dead letters that
    /// arrived, and ends the batch with one commit holding `offsets`; `finished`, also the end
    /// of the run (dead letters, snapshot, summary).
    pub fn drain(
        &mut self,
        collected: &RefCell<Collected>,
        probe: &ProbeHandle<Millis>,
        offsets: &[(String, i32, i64)],
        finished: bool,
    ) -> Result<(), SinkError> {
        let mut c = collected.borrow_mut();
        self.meter.collected(&c);
        let through = self.writable_through(&c);
        for (time, batch) in closed_ticks(&mut c, probe, through) {
            self.tick(time, &batch)?;
        }
        if c.dead_letters.len() > self.dead_given {
            // Dead letters stay collected for the sinks that write them at the end.
            let from = self.dead_given;
            c.dead_letters[from..].sort();
            self.sinks.iter_mut().try_for_each(|s| s.dead_letters(&c.dead_letters[from..]))?;
            self.dead_given = c.dead_letters.len();
        }
        self.sinks.iter_mut().try_for_each(|s| s.commit(offsets))?;
        if finished {
            let mut dead = std::mem::take(&mut c.dead_letters);
            dead.sort();
            let as_of = match self.end {
                WindowEnd::Closed => c.window_end(self.ticks),
                WindowEnd::Open => c.window_end(self.ticks).max(self.last_written),
            };
            let summary = Summary { sources: c.stats, counters: c.counters.clone(), as_of };
            self.finish(&dead, &summary)?;
        }
        Ok(())
    }

    fn tick(&mut self, time: Millis, batch: &TickBatch) -> Result<(), SinkError> {
        let applied = |snapshot: &mut SnapshotSource| {
            if let SnapshotSource::Applied(s) = snapshot {
                s.apply(batch);
            }
        };
        if time < self.restored_before {
            applied(&mut self.snapshot);
            return Ok(());
        }
        if self.stop_at.is_some_and(|stop| time >= stop) {
            return Ok(());
        }
        self.sinks.iter_mut().try_for_each(|s| s.tick(time, batch))?;
        applied(&mut self.snapshot);
        self.last_written = Some(time);
        self.meter.written(batch);
        Ok(())
    }

    fn finish(&mut self, dead: &[dataflows::model::DeadLetter], summary: &Summary) -> Result<(), SinkError> {
        match &self.snapshot {
            SnapshotSource::Shares(s) => {
                let snapshot = s.borrow();
                self.sinks.iter_mut().try_for_each(|sink| sink.finish(dead, &snapshot, summary))?;
            }
            SnapshotSource::Applied(snapshot) => {
                self.sinks.iter_mut().try_for_each(|sink| sink.finish(dead, snapshot, summary))?;
                self.meter.state(snapshot);
            }
        }
        self.meter.acknowledged(Millis::MAX);
        Ok(())
    }

    /// The time through which every tick is durably written: the probe's frontier, held back
    /// by the first tick a sink has not acknowledged yet.
    pub fn acknowledged(&self, probe: &ProbeHandle<Millis>) -> Result<Millis, SinkError> {
        let mut through = frontier(probe);
        for sink in &self.sinks {
            if let Some(t) = sink.unacknowledged()? {
                through = through.min(t);
            }
        }
        Ok(through)
    }

    /// Publishes the key counts of the snapshot kept here (for the metrics).
    pub fn publish_state(&self) {
        if let SnapshotSource::Applied(snapshot) = &self.snapshot {
            self.meter.state(snapshot);
        }
    }
}
