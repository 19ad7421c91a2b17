//! Sources: the [`Source`] trait that the worker harness reads every transport through (fixture
//! files, Kafka), and the partition decoder that turns raw messages into events, dead letters
//! and counts with the clock and window of docs/format.md.

pub mod file;
pub mod kafka;

use std::path::PathBuf;
use std::time::Duration;

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
    /// Counts taken before, for [`PartitionDecoder::exhausted`].
    taken: SourceStats,
    /// The offset and reason of the first rejected message.
    first_rejection: Option<(u64, String)>,
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
            taken: SourceStats::default(),
            first_rejection: None,
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
                let dead = DeadLetter::new(position, rejection, raw);
                self.first_rejection.get_or_insert_with(|| (offset, dead.reason.clone()));
                return Decoded::Dead(dead);
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
        self.taken.absorb(&self.stats);
        std::mem::take(&mut self.stats)
    }

    /// Call when this partition of the source `name` is read to its end (`lines`: a file,
    /// whose offsets are line numbers): when every one of its messages was rejected, it is most
    /// likely not stockflow's input at all (a README, a CSV, another tool's JSON), and a
    /// warning names it. The run goes on: SPEC §1 sends bad input to the dead letters and never
    /// stops on it.
    pub fn exhausted(&self, name: &str, lines: bool) {
        let mut total = self.taken;
        total.absorb(&self.stats);
        let Some((offset, reason)) = self.first_rejection.as_ref().filter(|_| total.rejected == total.read) else {
            return;
        };
        let (source, at) = if lines {
            (name.to_string(), format!("line {offset}"))
        } else {
            (format!("{name}[{}]", self.partition), format!("offset {offset}"))
        };
        tracing::warn!(
            "{source}: every message was rejected ({} of {}; the first, {at}: {reason}); is it stockflow's input? docs/format.md describes the messages",
            total.rejected,
            total.read
        );
    }
}

/// A partition a worker starts reading: its slot is its index in the order partitions were
/// announced by [`Source::discover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPartition {
    /// The source id: the index of the file or topic in name order.
    pub source: u32,
    /// The partition within the source (0 for a file).
    pub partition: u32,
}

/// What one look for partitions found.
#[derive(Debug)]
pub enum Discovery {
    /// Partitions to start reading (possibly none).
    Added(Vec<NewPartition>),
    /// The broker did not answer; nothing changed and the caller tries again later.
    Unreachable,
}

/// Where a partition's reading stands, for checkpoints and commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPosition {
    /// The file or topic name.
    pub name: String,
    /// The partition.
    pub partition: i32,
    /// The offset of the next message to read.
    pub next: i64,
}

/// A transport of raw messages with positions, as one worker reads it: its own share of the
/// partitions. Knows nothing of JSON, clocks or the dataflow: the harness decodes and feeds.
pub trait Source {
    /// The partitions this worker reads that it did not read before: at the first call its
    /// whole share, later the partitions added to a topic or of a topic created since.
    fn discover(&mut self) -> Result<Discovery, SourceError>;

    /// Whether it is time to call [`Source::discover`] again.
    fn discovery_due(&self) -> bool;

    /// Reads up to `budget` messages, waiting at most `wait` when none is ready, and hands each
    /// to `each` as (slot, offset, raw bytes). `behind` is the slot the harness wants read
    /// first (its events are the furthest behind); a source that cannot choose ignores it.
    /// Returns the messages and bytes read.
    fn read(
        &mut self,
        behind: Option<usize>,
        budget: usize,
        wait: Duration,
        each: &mut dyn FnMut(usize, u64, &[u8]),
    ) -> Result<(u64, u64), SourceError>;

    /// Whether partition `slot` has nothing more for this run (a file's end; a batch run's
    /// end offset).
    fn exhausted(&self, slot: usize) -> bool;

    /// Per slot, whether the partition is idle: nothing new for `after`, and nothing left to
    /// read. Only a continuous source can be idle.
    fn idle(&mut self, after: Duration) -> Vec<bool>;

    /// Whether a partition may have nothing to read for a while although it is not at its end
    /// (Kafka). The harness then never waits for the dataflow beyond what every worker has
    /// sent; a file always has its next line.
    fn may_be_quiet(&self) -> bool;

    /// Whether the source records processed offsets ([`Source::commit`]): the harness then
    /// keeps, per partition, the offsets waiting for their ticks to be acknowledged.
    fn commits_offsets(&self) -> bool;

    /// Per slot, the messages between the next offset and the partition's end as last seen
    /// (`None` while unknown); empty for a source without lag.
    fn lags(&self) -> Vec<Option<u64>>;

    /// Partition `slot`'s name, number and next offset.
    fn position(&self, slot: usize) -> ReadPosition;

    /// Records that every message before `next` of each listed slot is fully processed (a
    /// consumer group's commit); a file source has nothing to record.
    fn commit(&mut self, offsets: &[(usize, i64)]) -> Result<(), SourceError>;
}

/// Why a source cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An input file cannot be opened.
    #[error("cannot open input {path}: {error}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the system said (part of the message, so not a `source`: it is said once).
        error: std::io::Error,
    },
    /// An input file cannot be read on.
    #[error("error reading {path} after line {line}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The last line read.
        line: u64,
        /// What the system said (part of the message, so not a `source`: it is said once).
        error: std::io::Error,
    },
    /// A Kafka request failed in a way retrying does not mend; the message says what to check.
    #[error("{0}")]
    Kafka(String),
}
