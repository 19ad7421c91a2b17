//! Kafka transport: one rdkafka consumer per timely worker, `assign()`ed to that worker's
//! (topic, partition)s, yielding raw (offset, bytes) per partition, with end-offset and idle
//! detection, and the [`KafkaSource`] that discovers the worker's partitions. Knows nothing of
//! JSON or clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Discovery, NewPartition, ReadPosition, Source, SourceError};
use crate::config::StreamConfig;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Where a partition without a committed offset starts (`--start`, parsed by
/// `config::value::start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced after start-up.
    Latest,
    /// The first message with a Kafka timestamp >= this (ms since the epoch).
    Timestamp(i64),
}

/// One assigned partition's reading state.
pub struct PartitionState {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The offset of the next message to read.
    pub next: i64,
    /// For batch runs: the end offset captured at start-up (exclusive).
    pub end: Option<i64>,
    /// Whether `end` was checked against the high watermark of a fetch response. Some
    /// Kafka-compatible brokers (tansu 0.6.0) answer ListOffsets with the start of the last
    /// record batch, not its end; fetch responses carry the true high watermark.
    end_confirmed: bool,
    /// When a message last arrived (or the reader started).
    pub last_data: Instant,
    /// The partition's first offset when it was assigned: the consumer never starts before it.
    low: i64,
    /// Whether a gap in the delivered offsets was logged.
    gap_reported: bool,
}

impl PartitionState {
    /// Whether a batch run has read everything up to the captured end.
    pub fn done(&self) -> bool {
        self.end_confirmed && self.end.is_some_and(|end| self.next >= end)
    }
}

/// A message read from one of the reader's partitions.
pub struct Polled {
    /// Index into [`KafkaReader::partitions`].
    pub index: usize,
    /// The message's offset.
    pub offset: i64,
    /// The raw value (an absent value reads as empty bytes: an `invalid_json` dead letter).
    pub payload: Vec<u8>,
}

/// Reads a fixed set of (topic, partition)s.
pub struct KafkaReader {
    consumer: BaseConsumer,
    /// The assigned partitions, sorted by (topic, partition).
    pub partitions: Vec<PartitionState>,
    index: BTreeMap<(String, i32), usize>,
    /// Start positions from a checkpoint: they win over committed offsets and `--start`.
    pub restored: BTreeMap<(String, i32), i64>,
    /// Whether the consumer group's committed offsets are a start position. Not with
    /// checkpoints: state lives in the checkpoint, and starting from a commit without it
    /// would apply later messages to an empty state.
    pub use_committed: bool,
}

fn kafka(message: String) -> SourceError {
    SourceError::Kafka(message)
}

/// How long metadata, offset and watermark requests may take before the run gives up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How far before a partition's next offset the consumer is pointed: the messages before it
/// are delivered again and dropped. A fetch from inside a record batch must return that batch
/// (Kafka does, and librdkafka skips its head), but tansu 0.6 returns the batches *after* it,
/// so a restart at a checkpoint's offset lost the rest of that batch (seen: a seek to 2321
/// delivered 6441 first) and a seek into the last batch stalled the partition. Starting one
/// producer batch early (librdkafka's default `batch.num.messages` is 10000) costs a restart
/// that many re-fetched messages per partition and makes such a broker safe.
const SEEK_BACK: i64 = 10_000;

/// The worker that reads `partition` of the topic with source id `source`, out of `peers`.
/// It depends on nothing but the pair, so a partition added while the job runs gets the same
/// owner on every worker without any coordination, and existing partitions never move.
pub fn owner(source: usize, partition: i32, peers: usize) -> usize {
    (source + partition.max(0) as usize) % peers
}

/// The partitions of each of `topics` (in the order given); a topic the broker does not know
/// is `None`. Fails only when the broker cannot be asked at all.
pub fn list_partitions(consumer: &BaseConsumer, topics: &[String]) -> Result<Vec<Option<Vec<i32>>>, SourceError> {
    let mut all = Vec::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| {
            kafka(format!("cannot read the metadata of topic {topic}: {e}; check --brokers and that the broker is up"))
        })?;
        let t = metadata.topics().iter().find(|t| t.name() == topic);
        all.push(match t {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                ids.sort();
                Some(ids)
            }
            _ => None,
        });
    }
    Ok(all)
}

/// The high watermark of `topic[partition]` as the last fetch response told it, without a
/// request; `None` until a fetch response arrived. (rdkafka has no safe wrapper for
/// `rd_kafka_get_watermark_offsets`.)
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives, the topic is a NUL-terminated
    // string, and librdkafka only writes the two out-parameters.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Where a partition's reading starts when it asks for offset `wanted` (0 for the earliest)
/// and the broker's log starts at `low`: the later of the two, said when the log's start wins,
/// so that an audit of read = applied + rejected + beyond_window knows where reading began
/// (tansu 0.6 may also answer "earliest" with a later offset than the log's first:
/// docs/kafka.md).
fn from_log_start(topic: &str, partition: i32, wanted: i64, low: i64) -> i64 {
    if low > wanted {
        tracing::warn!(
            "{topic}[{partition}]: the broker's log starts at offset {low}: offsets {wanted}..{low} (deleted by \
             retention or compaction) are not read"
        );
    }
    wanted.max(low)
}

impl KafkaReader {
    /// A consumer for `config` (group.id included), not yet assigned.
    pub fn create_consumer(config: &ClientConfig) -> Result<BaseConsumer, SourceError> {
        config
            .create()
            .map_err(|e| kafka(format!("cannot create the Kafka consumer: {e}; check --brokers, -X and --kafka-config")))
    }

    /// A reader of no partitions yet; [`KafkaReader::add`] gives it some.
    pub fn new(consumer: BaseConsumer) -> Self {
        KafkaReader { consumer, partitions: Vec::new(), index: BTreeMap::new(), restored: BTreeMap::new(), use_committed: true }
    }

    /// Starts reading `new` partitions, each from its committed offset, else from `start`
    /// (`--start` applies to partitions known at start-up; a partition that appears later is
    /// read from its beginning, since everything in it is new). With `batch`, also captures
    /// each partition's end offset. Returns the indices of the added partitions.
    pub fn add(&mut self, new: Vec<(String, i32)>, start: Start, batch: bool) -> Result<Vec<usize>, SourceError> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let consumer = &self.consumer;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &new {
            tpl.add_partition(t, *p);
        }
        let committed = consumer
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| kafka(format!("cannot read the committed offsets of the consumer group: {e}")))?;
        // Every position is looked up before any is taken, so a failure (broker away) leaves
        // the reader as it was, to be retried.
        let mut positions = Vec::new();
        for (topic, partition) in new {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, TIMEOUT)
                .map_err(|e| kafka(format!("cannot read the offsets of {topic}[{partition}]: {e}")))?;
            let from_commit = committed.find_partition(&topic, partition).and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            });
            let restored = self.restored.get(&(topic.clone(), partition)).copied();
            let from_commit = from_commit.filter(|_| self.use_committed);
            let next = match (restored.or(from_commit), start) {
                (Some(o), _) => from_log_start(&topic, partition, o, low),
                (None, Start::Earliest) => from_log_start(&topic, partition, 0, low),
                (None, Start::Latest) => high,
                (None, Start::Timestamp(ms)) => {
                    let mut q = TopicPartitionList::new();
                    q.add_partition_offset(&topic, partition, Offset::Offset(ms))
                        .map_err(|e| kafka(format!("{topic}[{partition}]: {e}")))?;
                    let found = consumer
                        .offsets_for_times(q, TIMEOUT)
                        .map_err(|e| kafka(format!("cannot look up --start {ms} in {topic}[{partition}]: {e}")))?;
                    match found.find_partition(&topic, partition).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) if o >= 0 => o,
                        _ => high,
                    }
                }
            };
            positions.push((topic, partition, next, high, low));
        }
        let mut added = Vec::new();
        for (topic, partition, next, high, low) in positions {
            self.index.insert((topic.clone(), partition), self.partitions.len());
            added.push(self.partitions.len());
            self.partitions.push(PartitionState {
                topic,
                partition,
                next,
                end: batch.then_some(high),
                end_confirmed: !batch,
                last_data: Instant::now(),
                low,
                gap_reported: false,
            });
        }
        self.reassign()?;
        Ok(added)
    }

    /// Points the consumer at every partition's next offset.
    fn reassign(&self) -> Result<(), SourceError> {
        let mut assignment = TopicPartitionList::new();
        for p in &self.partitions {
            let from = if p.next > 0 { (p.next - SEEK_BACK).max(p.low) } else { p.next };
            assignment
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(from))
                .map_err(|e| kafka(format!("{}[{}]: {e}", p.topic, p.partition)))?;
        }
        self.consumer.assign(&assignment).map_err(|e| kafka(format!("cannot assign partitions: {e}")))
    }

    /// Confirms partition `i`'s end offset once a fetch response told its high watermark
    /// (always before a message at or past the start-up end is judged out of the window).
    pub fn confirm_end(&mut self, i: usize) {
        let p = &mut self.partitions[i];
        if p.end_confirmed {
            return;
        }
        if let Some(high) = cached_high_watermark(&self.consumer, &p.topic, p.partition) {
            p.end = p.end.map(|end| end.max(high));
            p.end_confirmed = true;
        }
    }

    /// Each partition's lag (messages between its next offset and its high watermark as the
    /// last fetch response told it), `None` until a fetch response told
    /// its high watermark.
    pub fn partition_lags(&self) -> Vec<Option<u64>> {
        (0..self.partitions.len()).map(|i| self.partition_lag(i)).collect()
    }

    /// Partition `i`'s lag, `None` until a fetch response told its high watermark.
    pub fn partition_lag(&self, i: usize) -> Option<u64> {
        let p = &self.partitions[i];
        cached_high_watermark(&self.consumer, &p.topic, p.partition).map(|high| (high - p.next).max(0) as u64)
    }

    /// The consumer, for metadata requests.
    pub fn consumer(&self) -> &BaseConsumer {
        &self.consumer
    }

    /// The next message, waiting at most `timeout`. Transient errors (broker down, leader
    /// change) are logged and retried by librdkafka: they return `Ok(None)`.
    pub fn poll(&mut self, timeout: Duration) -> Option<Polled> {
        loop {
            let m = match self.consumer.poll(timeout) {
                None | Some(Err(KafkaError::PartitionEOF(_))) => return None,
                Some(Err(e)) => {
                    tracing::warn!("Kafka consumer: {e} (retrying; state is kept)");
                    return None;
                }
                Some(Ok(m)) => m,
            };
            let Some(&index) = self.index.get(&(m.topic().to_string(), m.partition())) else {
                return None;
            };
            let state = &mut self.partitions[index];
            if m.offset() < state.next {
                // Re-delivered: the consumer starts before the next offset (SEEK_BACK).
                continue;
            }
            if m.offset() > state.next && !state.gap_reported {
                // Compaction and transaction markers leave gaps; so does a broker that skips a
                // batch. Said once per partition, for whoever audits a restart.
                state.gap_reported = true;
                tracing::warn!(
                    "{}[{}]: expected offset {}, the broker delivered {} first ({} offsets not delivered: \
                     compaction, transaction markers, or a broker losing messages)",
                    state.topic,
                    state.partition,
                    state.next,
                    m.offset(),
                    m.offset() - state.next
                );
            }
            state.next = m.offset() + 1;
            state.last_data = Instant::now();
            return Some(Polled { index, offset: m.offset(), payload: m.payload().unwrap_or_default().to_vec() });
        }
    }

    /// Confirms end offsets (batch runs) against the high watermarks of fetch responses, and
    /// moves each partition's next offset to the consumer's position, past offsets no message
    /// fills (compaction, transaction markers): a batch run's partition is then done, and a
    /// `run`'s partition without lag, when those gaps end it.
    pub fn refresh_positions(&mut self) {
        for i in 0..self.partitions.len() {
            self.confirm_end(i);
        }
        if let Ok(tpl) = self.consumer.position() {
            for p in &mut self.partitions {
                if let Some(Offset::Offset(o)) = tpl.find_partition(&p.topic, p.partition).map(|e| e.offset()) {
                    p.next = p.next.max(o);
                }
            }
        }
    }

    /// Commits `offsets` (next offset to read, per partition index) synchronously.
    pub fn commit(&self, offsets: &[(usize, i64)]) -> Result<(), SourceError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &(i, o) in offsets {
            let p = &self.partitions[i];
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(o))
                .map_err(|e| kafka(format!("{}[{}]: {e}", p.topic, p.partition)))?;
        }
        self.consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync).map_err(|e| {
            kafka(format!(
                "cannot commit offsets {tpl:?}: {e}; the outputs are written, the next run re-reads them (idempotent upserts)"
            ))
        })
    }
}

/// A worker's share of the input topics' partitions: partition p of the topic with source id s
/// goes to worker `owner(s, p, peers)`. `run` keeps looking for new partitions and for topics
/// that did not exist; `batch` reads up to the end offsets captured when it started.
pub struct KafkaSource {
    reader: KafkaReader,
    /// Input topics in source-id order.
    topics: Vec<String>,
    worker: usize,
    peers: usize,
    batch: bool,
    start: Start,
    quiet: bool,
    metadata_refresh: Duration,
    /// Input topics the broker did not know at the last look (`run` waits for them).
    missing: BTreeSet<String>,
    checked: Instant,
    /// Whether the first look has succeeded (`--start` applies to what exists then).
    started: bool,
}

impl KafkaSource {
    /// The source of worker `worker` out of `peers`, with a consumer for `consumer` (the group's
    /// settings). `restored` positions (a checkpoint's) win over committed offsets and
    /// `--start`; `use_committed` says whether the group's commits are a start position at all.
    pub fn new(
        config: &StreamConfig,
        consumer: &ClientConfig,
        (worker, peers): (usize, usize),
        restored: BTreeMap<(String, i32), i64>,
        use_committed: bool,
    ) -> Result<Self, SourceError> {
        let mut reader = KafkaReader::new(KafkaReader::create_consumer(consumer)?);
        reader.restored = restored;
        reader.use_committed = use_committed;
        Ok(KafkaSource {
            reader,
            topics: config.topics.clone(),
            worker,
            peers,
            batch: config.batch(),
            start: config.start,
            quiet: config.quiet,
            metadata_refresh: config.metadata_refresh,
            missing: BTreeSet::new(),
            checked: Instant::now(),
            started: false,
        })
    }

    /// This worker's partitions of the topics the broker lists that it does not read yet, as
    /// (source id, topic, partition). A missing topic fails a `batch` run; `run` logs it once
    /// and keeps looking.
    fn unread_partitions(&mut self, listed: Vec<Option<Vec<i32>>>) -> Result<Vec<(usize, String, i32)>, SourceError> {
        let mut new = Vec::new();
        for (source, (topic, partitions)) in self.topics.iter().zip(listed).enumerate() {
            let Some(partitions) = partitions else {
                if self.batch {
                    return Err(kafka(format!(
                        "input topic {topic} does not exist (or has no partitions); create it or fix --topics"
                    )));
                }
                if self.missing.insert(topic.clone()) && self.worker == 0 {
                    tracing::warn!(
                        "input topic {topic} does not exist yet; reading it once it does (checked every {} ms)",
                        self.metadata_refresh.as_millis()
                    );
                }
                continue;
            };
            if self.missing.remove(topic) && self.worker == 0 && self.started {
                tracing::info!("input topic {topic} exists now; reading it");
            }
            for partition in partitions {
                let known = self.reader.partitions.iter().any(|p| p.topic == *topic && p.partition == partition);
                if owner(source, partition, self.peers) == self.worker && !known {
                    new.push((source, topic.clone(), partition));
                }
            }
        }
        Ok(new)
    }

    /// Logs where a newly assigned partition starts.
    fn announce(&self, slot: usize) {
        let p = &self.reader.partitions[slot];
        let end = p.end.map_or(String::new(), |e| format!(" up to offset {e} (at least)"));
        let when = if self.started { "new partition: " } else { "" };
        let (worker, peers) = (self.worker, self.peers);
        tracing::info!("worker {worker}/{peers} {when}reads {}[{}] from offset {}{end}", p.topic, p.partition, p.next);
    }
}

impl Source for KafkaSource {
    /// Returns [`Discovery::Unreachable`] when `run` cannot reach the broker (it is logged and
    /// tried again later); `batch` fails instead.
    fn discover(&mut self) -> Result<Discovery, SourceError> {
        self.checked = Instant::now();
        let unreachable = |worker: usize, e: SourceError| {
            tracing::warn!("worker {worker}: {e} (retrying; state is kept)");
            Ok(Discovery::Unreachable)
        };
        let listed = match list_partitions(self.reader.consumer(), &self.topics) {
            Ok(listed) => listed,
            Err(e) if !self.batch => return unreachable(self.worker, e),
            Err(e) => return Err(e),
        };
        let new = self.unread_partitions(listed)?;
        // --start applies to what exists at start-up; a partition or topic that appears later
        // holds only new messages, all of which must be read.
        let start = if self.started { Start::Earliest } else { self.start };
        let wanted = new.iter().map(|(_, t, p)| (t.clone(), *p)).collect();
        let added = match self.reader.add(wanted, start, self.batch) {
            Ok(added) => added,
            Err(e) if !self.batch => return unreachable(self.worker, e),
            Err(e) => return Err(e),
        };
        if !self.quiet || self.started {
            added.iter().for_each(|&slot| self.announce(slot));
        }
        self.started = true;
        Ok(Discovery::Added(
            new.into_iter().map(|(source, _, partition)| NewPartition { source: source as u32, partition: partition as u32 }).collect(),
        ))
    }

    fn discovery_due(&self) -> bool {
        !self.batch && self.checked.elapsed() >= self.metadata_refresh
    }

    /// Polls whatever partition the broker delivers; spends at most `wait` in all.
    fn read(
        &mut self,
        _behind: Option<usize>,
        budget: usize,
        wait: Duration,
        each: &mut dyn FnMut(usize, u64, &[u8]),
    ) -> Result<(u64, u64), SourceError> {
        let (mut read, mut bytes) = (0, 0);
        let started = Instant::now();
        while read < budget as u64 && started.elapsed() < wait {
            // At most what is left of the slice: a 20 ms wait made the slice up to 30 ms.
            let poll_wait = wait.saturating_sub(started.elapsed()).min(Duration::from_millis(20));
            let Some(polled) = self.reader.poll(poll_wait) else {
                if self.batch {
                    self.reader.refresh_positions();
                }
                break;
            };
            self.reader.confirm_end(polled.index);
            if self.reader.partitions[polled.index].end.is_some_and(|end| polled.offset >= end) {
                // Produced after a batch run started: not part of its window.
                continue;
            }
            read += 1;
            bytes += polled.payload.len() as u64;
            each(polled.index, polled.offset as u64, &polled.payload);
        }
        Ok((read, bytes))
    }

    fn exhausted(&self, slot: usize) -> bool {
        self.batch && self.reader.partitions[slot].done()
    }

    /// Idle also needs a fetch response saying nothing is left to read: a worker loop that
    /// paused for longer than `after` (a long tick, a busy machine) would otherwise move the
    /// watermark past the partition's backlog, which would then be applied at the wall
    /// clock's tick.
    fn idle(&mut self, after: Duration) -> Vec<bool> {
        let quiet = |p: &PartitionState| p.last_data.elapsed() >= after;
        if self.batch {
            return vec![false; self.reader.partitions.len()];
        }
        if self.reader.partitions.iter().any(quiet) {
            // The consumer's positions step over offsets no message fills (transaction markers,
            // compacted records), which would otherwise count as lag and keep a partition busy.
            self.reader.refresh_positions();
        }
        let lags = self.reader.partition_lags();
        self.reader.partitions.iter().zip(lags).map(|(p, lag)| quiet(p) && lag == Some(0)).collect()
    }

    fn may_be_quiet(&self) -> bool {
        true
    }

    fn commits_offsets(&self) -> bool {
        true
    }

    fn lags(&self) -> Vec<Option<u64>> {
        self.reader.partition_lags()
    }

    fn position(&self, slot: usize) -> ReadPosition {
        let p = &self.reader.partitions[slot];
        ReadPosition { name: p.topic.clone(), partition: p.partition, next: p.next }
    }

    fn commit(&mut self, offsets: &[(usize, i64)]) -> Result<(), SourceError> {
        self.reader.commit(offsets)
    }
}
