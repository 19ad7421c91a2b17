//! The harness's view of the partitions it reads: each one's decoder (clock, window, counts)
//! and the offsets waiting for their ticks to be acknowledged, and the input frontier they
//! allow.

use std::collections::{BTreeMap, VecDeque};

use dataflows::clock::{PartitionClock, Ticks};
use dataflows::model::Millis;

use crate::io::source::{NewPartition, PartitionDecoder, ReadPosition};

/// One partition being read: its decoder and, for a source that commits offsets, the offsets
/// waiting for the ticks of the messages before them to be acknowledged.
pub struct Reading {
    /// The file or topic name, and the partition (for metrics).
    pub name: String,
    /// The partition number.
    pub partition: u32,
    /// Decodes and stamps the partition's messages.
    pub decoder: PartitionDecoder,
    /// (next offset, largest emission time of the messages before it), oldest first; only kept
    /// when `tracks_offsets`.
    pending: VecDeque<(i64, Millis)>,
    max_emission: Millis,
    tracks_offsets: bool,
}

impl Reading {
    /// Starts reading `new` (named `position.name`), continuing a restored clock if one is
    /// known for it.
    pub fn new(
        new: &NewPartition,
        position: &ReadPosition,
        (lateness_ms, ticks): (Millis, Ticks),
        clocks: &BTreeMap<(String, i32), PartitionClock>,
        tracks_offsets: bool,
    ) -> Self {
        let clock = clocks.get(&(position.name.clone(), position.partition)).copied().unwrap_or_default();
        Reading {
            name: position.name.clone(),
            partition: new.partition,
            decoder: PartitionDecoder::new(new.source, new.partition, lateness_ms, ticks).with_clock(clock),
            pending: VecDeque::new(),
            max_emission: 0,
            tracks_offsets,
        }
    }

    /// Records that the message at `offset` was sent for tick `emission` (or not sent: `None`).
    pub fn sent(&mut self, offset: u64, emission: Option<Millis>) {
        if !self.tracks_offsets {
            return;
        }
        self.max_emission = self.max_emission.max(emission.unwrap_or(0));
        self.pending.push_back((offset as i64 + 1, self.max_emission));
    }

    /// The next offset after the messages whose ticks all lie before `frontier`, if it moved.
    /// (`pending` is ordered by emission time, a running maximum.)
    pub fn offset_before(&self, frontier: Millis) -> Option<i64> {
        let n = self.pending.partition_point(|&(_, emission)| emission < frontier);
        (n > 0).then(|| self.pending[n - 1].0)
    }

    /// Forgets the offsets whose ticks all lie before `acknowledged` and returns the last of them.
    pub fn take_acknowledged(&mut self, acknowledged: Millis) -> Option<i64> {
        let mut last = None;
        while let Some(&(offset, emission)) = self.pending.front() {
            if emission >= acknowledged {
                break;
            }
            last = Some(offset);
            self.pending.pop_front();
        }
        last
    }
}

/// The slot (not exhausted) whose events are furthest behind: a replay reads it next, so that
/// no partition's events wait long in the ledger for the others to catch up.
pub fn furthest_behind(readings: &[Reading], exhausted: impl Fn(usize) -> bool) -> Option<usize> {
    (0..readings.len())
        .filter(|&slot| !exhausted(slot))
        .min_by_key(|&slot| readings[slot].decoder.frontier().unwrap_or(Millis::MAX))
}

/// What the input frontier of a worker follows besides its partitions' clocks.
pub struct FrontierRule {
    /// The window's end: no partition holds the frontier beyond `until + 1`.
    pub until: Option<Millis>,
    /// `run`: the wall clock minus the lateness, as a tick; idle partitions (and a worker
    /// without partitions) follow it.
    pub wall: Option<Millis>,
}

/// The least logical time at which any of this worker's partitions can still send an event:
/// the least of the partitions' frontiers, an exhausted partition left out, an idle one raised
/// to the wall clock. A partition that has delivered nothing yet holds the frontier (its
/// first message may carry any time); in `run` only until it is idle.
pub fn input_frontier(
    readings: &[Reading],
    exhausted: impl Fn(usize) -> bool,
    idle: &[bool],
    rule: &FrontierRule,
) -> Millis {
    let past_window = rule.until.map_or(Millis::MAX, |until| until + 1);
    let mut time = Millis::MAX;
    for (slot, reading) in readings.iter().enumerate() {
        if exhausted(slot) {
            continue;
        }
        let own = reading.decoder.frontier().unwrap_or(past_window);
        let own = match rule.wall {
            Some(wall) if idle.get(slot).copied().unwrap_or(false) => own.max(wall),
            _ => own,
        };
        time = time.min(own);
    }
    if readings.is_empty() {
        if let Some(wall) = rule.wall {
            time = wall;
        }
    }
    // Nothing after the window is sent; staying just past it leaves room for the final
    // checkpoint at `until + 1`.
    time.min(past_window)
}
