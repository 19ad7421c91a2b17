//! Kafka transport: one rdkafka consumer per timely worker, `assign()`ed to that worker's
//! (topic, partition)s, yielding raw (offset, bytes) per partition, with end-offset and idle
//! detection. Knows nothing of JSON or clocks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Where a partition without a committed offset starts (`--start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced after start-up.
    Latest,
    /// The first message with a Kafka timestamp >= this (ms since the epoch).
    Timestamp(i64),
}

impl std::str::FromStr for Start {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(Start::Earliest),
            "latest" => Ok(Start::Latest),
            _ => s
                .parse::<i64>()
                .ok()
                .filter(|t| *t >= 0)
                .map(Start::Timestamp)
                .ok_or_else(|| format!("--start {s:?}: expected earliest, latest or milliseconds since the epoch")),
        }
    }
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
pub fn list_partitions(consumer: &BaseConsumer, topics: &[String]) -> Result<Vec<Option<Vec<i32>>>, String> {
    let mut all = Vec::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| {
            format!("cannot read the metadata of topic {topic}: {e}; check --brokers and that the broker is up")
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

impl KafkaReader {
    /// A consumer for `config` (group.id included), not yet assigned.
    pub fn create_consumer(config: &ClientConfig) -> Result<BaseConsumer, String> {
        config
            .create()
            .map_err(|e| format!("cannot create the Kafka consumer: {e}; check --brokers, -X and --kafka-config"))
    }

    /// A reader of no partitions yet; [`KafkaReader::add`] gives it some.
    pub fn new(consumer: BaseConsumer) -> Self {
        KafkaReader { consumer, partitions: Vec::new(), index: BTreeMap::new(), restored: BTreeMap::new(), use_committed: true }
    }

    /// Starts reading `new` partitions, each from its committed offset, else from `start`
    /// (`--start` applies to partitions known at start-up; a partition that appears later is
    /// read from its beginning, since everything in it is new). With `batch`, also captures
    /// each partition's end offset. Returns the indices of the added partitions.
    pub fn add(&mut self, new: Vec<(String, i32)>, start: Start, batch: bool) -> Result<Vec<usize>, String> {
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
            .map_err(|e| format!("cannot read the committed offsets of the consumer group: {e}"))?;
        // Every position is looked up before any is taken, so a failure (broker away) leaves
        // the reader as it was, to be retried.
        let mut positions = Vec::new();
        for (topic, partition) in new {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, TIMEOUT)
                .map_err(|e| format!("cannot read the offsets of {topic}[{partition}]: {e}"))?;
            let from_commit = committed.find_partition(&topic, partition).and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            });
            let restored = self.restored.get(&(topic.clone(), partition)).copied();
            let from_commit = from_commit.filter(|_| self.use_committed);
            let next = match (restored.or(from_commit), start) {
                (Some(o), _) => o.max(low),
                (None, Start::Earliest) => low,
                (None, Start::Latest) => high,
                (None, Start::Timestamp(ms)) => {
                    let mut q = TopicPartitionList::new();
                    q.add_partition_offset(&topic, partition, Offset::Offset(ms))
                        .map_err(|e| format!("{topic}[{partition}]: {e}"))?;
                    let found = consumer
                        .offsets_for_times(q, TIMEOUT)
                        .map_err(|e| format!("cannot look up --start {ms} in {topic}[{partition}]: {e}"))?;
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
    fn reassign(&self) -> Result<(), String> {
        let mut assignment = TopicPartitionList::new();
        for p in &self.partitions {
            let from = if p.next > 0 { (p.next - SEEK_BACK).max(p.low) } else { p.next };
            assignment
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(from))
                .map_err(|e| format!("{}[{}]: {e}", p.topic, p.partition))?;
        }
        self.consumer.assign(&assignment).map_err(|e| format!("cannot assign partitions: {e}"))
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

    /// Messages between each partition's next offset and its high watermark (as the last fetch
    /// response told it), summed: how far behind this reader is.
    pub fn lag(&self) -> u64 {
        self.partition_lags().into_iter().flatten().sum()
    }

    /// Each partition's lag (as in [`KafkaReader::lag`]), `None` until a fetch response told
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
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Polled>, String> {
        loop {
            let m = match self.consumer.poll(timeout) {
                None | Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
                Some(Err(e)) => {
                    tracing::warn!("Kafka consumer: {e} (retrying; state is kept)");
                    return Ok(None);
                }
                Some(Ok(m)) => m,
            };
            let Some(&index) = self.index.get(&(m.topic().to_string(), m.partition())) else {
                return Ok(None);
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
            return Ok(Some(Polled { index, offset: m.offset(), payload: m.payload().unwrap_or_default().to_vec() }));
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
    pub fn commit(&self, offsets: &[(usize, i64)]) -> Result<(), String> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &(i, o) in offsets {
            let p = &self.partitions[i];
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(o))
                .map_err(|e| format!("{}[{}]: {e}", p.topic, p.partition))?;
        }
        self.consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| format!("cannot commit offsets {tpl:?}: {e}; the outputs are written, the next run re-reads them (idempotent upserts)"))
    }
}
