//! Sources: transports that yield raw messages with positions (`file`), and the partition
//! reader that decodes them, applies SPEC §2's clock and window, and sorts them into events,
//! dead letters and counts.

pub mod file;
pub mod kafka;

use dataflows::clock::{PartitionClock, Ticks};
use dataflows::decode::decode;
use dataflows::model::{DeadLetter, Event, Millis, OrderKey, Position};
use serde::{Deserialize, Serialize};

/// What the sources counted (SPEC §4 summary fields owned by the input side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceStats {
    /// Messages read (non-blank lines).
    pub read: u64,
    /// Valid messages within the window.
    pub applied: u64,
    /// Invalid messages (dead letters).
    pub rejected: u64,
    /// Applied messages whose effective time was raised.
    pub late: u64,
    /// Valid messages with an effective time after `--until`.
    pub beyond_window: u64,
    /// Largest effective time of an applied message.
    pub max_effective: Option<Millis>,
}

impl SourceStats {
    /// Adds `other`'s counts into `self`.
    pub fn absorb(&mut self, other: &SourceStats) {
        self.read += other.read;
        self.applied += other.applied;
        self.rejected += other.rejected;
        self.late += other.late;
        self.beyond_window += other.beyond_window;
        self.max_effective = self.max_effective.max(other.max_effective);
    }
}

/// Everything one raw message turned into.
pub enum Decoded {
    /// A valid message within the window.
    Event(Event),
    /// An invalid message.
    Dead(DeadLetter),
    /// A valid message beyond the window: counted, not applied (a later window may hold it).
    BeyondWindow(Event),
}

/// Decodes and stamps the messages of one (source, partition), in order.
pub struct PartitionDecoder {
    source: u32,
    partition: u32,
    clock: PartitionClock,
    lateness: Millis,
    ticks: Ticks,
    /// Counts since the last [`PartitionDecoder::take_stats`].
    stats: SourceStats,
}

impl PartitionDecoder {
    /// A decoder for partition `partition` of source id `source`.
    pub fn new(source: u32, partition: u32, lateness: Millis, ticks: Ticks) -> Self {
        PartitionDecoder {
            source,
            partition,
            clock: PartitionClock::default(),
            lateness,
            ticks,
            stats: SourceStats::default(),
        }
    }

    /// Decodes the message at `offset`.
    pub fn decode(&mut self, offset: u64, raw: &[u8]) -> Decoded {
        let position = Position { source: self.source, partition: self.partition, offset };
        self.stats.read += 1;
        let message = match decode(raw) {
            Ok(message) => message,
            Err(rejection) => {
                self.stats.rejected += 1;
                return Decoded::Dead(DeadLetter::new(position, rejection, raw));
            }
        };
        let stamp = self.clock.stamp(message.ts, self.lateness);
        let event = Event { order: OrderKey { effective: stamp.effective, position }, message };
        if self.ticks.emission(stamp.effective).is_none() {
            self.stats.beyond_window += 1;
            return Decoded::BeyondWindow(event);
        }
        self.stats.applied += 1;
        self.stats.late += u64::from(stamp.late);
        self.stats.max_effective = self.stats.max_effective.max(Some(stamp.effective));
        Decoded::Event(event)
    }

    /// The partition's clock, for checkpoints.
    pub fn clock(&self) -> PartitionClock {
        self.clock
    }

    /// Continues from a checkpoint's clock.
    pub fn with_clock(mut self, clock: PartitionClock) -> Self {
        self.clock = clock;
        self
    }

    /// The earliest logical time any later message of this partition can be emitted at, or
    /// `None` when every later message would lie beyond the window.
    pub fn frontier(&self) -> Option<Millis> {
        self.ticks.emission(self.clock.low_watermark(self.lateness))
    }

    /// The counts since the previous call.
    pub fn take_stats(&mut self) -> SourceStats {
        std::mem::take(&mut self.stats)
    }
}
