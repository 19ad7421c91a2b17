//! The worker loop's side of checkpoints: where its sources stood at each input advance (the
//! cuts), when worker 0 asks the ledgers for their state, writing the shares once their ticks
//! are acknowledged, and re-creating a chosen checkpoint's state at start-up.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use dataflows::clock::{PartitionClock, Ticks};
use dataflows::ledger::{Control, Saved};
use dataflows::model::Millis;

use super::reading::Reading;
use super::HarnessError;
use crate::config::CheckpointEvery;
use crate::io::source::{Source, SourceStats};
use crate::runtime::checkpoint::{self, Chosen, Cut, SavedPartition, Shared};
use crate::runtime::dataflow::Inputs;

/// This worker's checkpointing: what it shares with its writer, and (worker 0) when to ask.
pub struct Checkpoints {
    /// Shared with the dataflow's checkpoint writer.
    pub shared: Rc<RefCell<Shared>>,
    every: CheckpointEvery,
    /// The latest checkpoint time asked for (or restored), and when it was asked.
    pub last: Millis,
    last_wall: Instant,
    /// Source counts of everything this worker sent.
    pub sent: SourceStats,
}

impl Checkpoints {
    /// Checkpointing every `every` into `shared`'s directory.
    pub fn new(shared: Rc<RefCell<Shared>>, every: CheckpointEvery) -> Self {
        Checkpoints { shared, every, last: 0, last_wall: Instant::now(), sent: SourceStats::default() }
    }

    /// Records where the sources stand as the input advances to `at`.
    pub fn cut(&mut self, at: Millis, readings: &[Reading], source: &dyn Source) {
        let partitions = readings
            .iter()
            .enumerate()
            .map(|(slot, r)| {
                let position = source.position(slot);
                SavedPartition {
                    topic: position.name,
                    partition: position.partition,
                    next: position.next,
                    clock: r.decoder.clock(),
                }
            })
            .collect();
        let mut shared = self.shared.borrow_mut();
        let held = shared.held.len();
        shared.cuts.push(Cut { at, partitions, stats: self.sent, held });
    }

    /// Whether worker 0 should ask for a checkpoint at input time `now`.
    pub fn due(&self, now: Millis, tick_ms: Millis) -> bool {
        now > self.last
            && match self.every {
                CheckpointEvery::Wall(interval) => self.last_wall.elapsed() >= interval,
                CheckpointEvery::Ticks(n) => now - self.last >= n.saturating_mul(tick_ms),
            }
    }

    /// Asks every worker's ledgers for their state at the control input's current time.
    pub fn request(&mut self, inputs: &mut Inputs, peers: usize) {
        for worker in 0..peers {
            inputs.control.send(Control::Checkpoint { worker: worker as u64 });
        }
        // Sent now, not with the next advance: the input may stay at this time for long.
        inputs.control.flush();
        self.last = *inputs.control.time();
        self.last_wall = Instant::now();
    }

    /// Writes the shares whose ticks are acknowledged (worker 0 logs them and prunes old
    /// checkpoints) and forgets the cuts no checkpoint can need: `settled` is the least time
    /// the dataflow (the checkpoint writer included) may still be working on.
    pub fn publish(&mut self, worker: usize, acknowledged: Millis, settled: Millis) -> Result<(), HarnessError> {
        let mut shared = self.shared.borrow_mut();
        let root = shared.root.clone();
        if let Some(reason) = shared.error.take() {
            return Err(HarnessError::Checkpoint { dir: root, reason });
        }
        let published = shared
            .publish(acknowledged)
            .map_err(|e| HarnessError::Checkpoint { dir: root.clone(), reason: e.to_string() })?;
        shared.forget_before(settled);
        let Some(&(at, wrote)) = published.last() else { return Ok(()) };
        // The figures of the newest share written (a newer one may be encoded already).
        let figures = shared.encoded.get(&at).copied();
        shared.encoded.retain(|&t, _| t > at);
        if worker != 0 {
            return Ok(());
        }
        if let Some((bytes, keys, took)) = figures {
            // Shares wait for their ticks' acknowledgements, so several may land at once.
            let also = match published.len() {
                1 => String::new(),
                n => format!(" (and {} earlier)", n - 1),
            };
            tracing::info!(
                "checkpoint at {at}{also}: worker 0's share {bytes} bytes, {keys} keys, encoded in {} ms, written in {} ms",
                took.as_millis(),
                wrote.as_millis()
            );
        }
        checkpoint::prune(&root, 2).map_err(|e| HarnessError::Checkpoint {
            dir: root.clone(),
            reason: format!("cannot prune old checkpoints: {e}"),
        })
    }
}

/// The partitions' clocks a checkpoint saved, by (name, partition).
pub fn restored_clocks(chosen: &Chosen) -> BTreeMap<(String, i32), PartitionClock> {
    chosen
        .headers
        .iter()
        .flat_map(|h| &h.partitions)
        .map(|p| ((p.topic.clone(), p.partition), p.clock))
        .collect()
}

/// The partitions' next offsets a checkpoint saved, by (topic, partition).
pub fn restored_positions(chosen: &Chosen) -> BTreeMap<(String, i32), i64> {
    chosen.headers.iter().flat_map(|h| &h.partitions).map(|p| ((p.topic.clone(), p.partition), p.next)).collect()
}

/// Re-creates this worker's part of a checkpoint: the ledger entries and held messages of the
/// shares it is given (share j goes to worker j mod peers; the ledgers route every entry to
/// its key's worker, so any number of workers can load any number of shares) and their source
/// counts. Held messages (beyond an earlier batch's window) that this window holds are sent as
/// events, and pending messages (read before the checkpoint, for a tick after it) that lie
/// beyond this window are held instead: they stay for this run's checkpoints, and are dropped
/// without checkpointing (`explain` of a checkpoint, whose window ends just before it).
pub fn restore(
    chosen: &Chosen,
    (index, peers): (usize, usize),
    ticks: Ticks,
    mut checkpoints: Option<&mut Checkpoints>,
    inputs: &mut Inputs,
) -> Result<(), HarnessError> {
    for (j, path) in chosen.shares.iter().enumerate() {
        if j % peers != index {
            continue;
        }
        let (header, body) = checkpoint::read_share(path)?;
        let mut stats = header.stats;
        for entry in body.ledger {
            match entry {
                Saved::Pending(event) if ticks.emission(event.order.effective).is_none() => {
                    stats.applied = stats.applied.saturating_sub(1);
                    stats.beyond_window += 1;
                    stats.late -= u64::from(event.order.effective > event.message.ts).min(stats.late);
                    if let Some(c) = checkpoints.as_deref_mut() {
                        c.shared.borrow_mut().held.push(event);
                    }
                }
                entry => inputs.control.send(Control::Restore(entry)),
            }
        }
        for event in body.held {
            if ticks.emission(event.order.effective).is_some() {
                stats.beyond_window = stats.beyond_window.saturating_sub(1);
                stats.applied += 1;
                stats.late += u64::from(event.order.effective > event.message.ts);
                stats.max_effective = stats.max_effective.max(Some(event.order.effective));
                inputs.events.send(event);
            } else if let Some(c) = checkpoints.as_deref_mut() {
                c.shared.borrow_mut().held.push(event);
            }
        }
        if let Some(c) = checkpoints.as_deref_mut() {
            c.sent.absorb(&stats);
        }
        inputs.stats.send(stats);
    }
    Ok(())
}
