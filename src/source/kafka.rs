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
    /// When a message last arrived (or the reader started).
    pub last_data: Instant,
}

impl PartitionState {
    /// Whether a batch run has read everything up to the captured end.
    pub fn done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
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
}

/// How long metadata, offset and watermark requests may take before the run gives up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Every (topic, partition) of `topics`, sorted; a missing topic is an error saying what to do.
pub fn list_partitions(consumer: &BaseConsumer, topics: &[String]) -> Result<Vec<(String, i32)>, String> {
    let mut all = Vec::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| {
            format!("cannot read the metadata of topic {topic}: {e}; check --brokers and that the broker is up")
        })?;
        let t = metadata.topics().iter().find(|t| t.name() == topic);
        match t {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                all.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
            }
            _ => {
                return Err(format!(
                    "input topic {topic} does not exist (or has no partitions); create it or fix --topics"
                ))
            }
        }
    }
    all.sort();
    Ok(all)
}

impl KafkaReader {
    /// A consumer for `config` (group.id included), not yet assigned.
    pub fn consumer(config: &ClientConfig) -> Result<BaseConsumer, String> {
        config
            .create()
            .map_err(|e| format!("cannot create the Kafka consumer: {e}; check --brokers, -X and --kafka-config"))
    }

    /// Assigns `mine` to `consumer`, each from its committed offset, else from `start`. With
    /// `batch`, also captures each partition's current end offset.
    pub fn assign(consumer: BaseConsumer, mine: Vec<(String, i32)>, start: Start, batch: bool) -> Result<Self, String> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &mine {
            tpl.add_partition(t, *p);
        }
        let committed = if mine.is_empty() {
            TopicPartitionList::new()
        } else {
            consumer
                .committed_offsets(tpl.clone(), TIMEOUT)
                .map_err(|e| format!("cannot read the committed offsets of the consumer group: {e}"))?
        };
        let mut partitions = Vec::new();
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in mine {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, TIMEOUT)
                .map_err(|e| format!("cannot read the offsets of {topic}[{partition}]: {e}"))?;
            let from_commit = committed.find_partition(&topic, partition).and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            });
            let next = match (from_commit, start) {
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
            assignment
                .add_partition_offset(&topic, partition, Offset::Offset(next))
                .map_err(|e| format!("{topic}[{partition}]: {e}"))?;
            partitions.push(PartitionState {
                topic,
                partition,
                next,
                end: batch.then_some(high),
                last_data: Instant::now(),
            });
        }
        consumer.assign(&assignment).map_err(|e| format!("cannot assign partitions: {e}"))?;
        let index = partitions.iter().enumerate().map(|(i, p)| ((p.topic.clone(), p.partition), i)).collect();
        Ok(KafkaReader { consumer, partitions, index })
    }

    /// The next message, waiting at most `timeout`. Transient errors (broker down, leader
    /// change) are logged and retried by librdkafka: they return `Ok(None)`.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Polled>, String> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(m)) => {
                let Some(&index) = self.index.get(&(m.topic().to_string(), m.partition())) else {
                    return Ok(None);
                };
                let state = &mut self.partitions[index];
                if m.offset() < state.next {
                    // A re-delivery after a seek: already read.
                    return Ok(None);
                }
                state.next = m.offset() + 1;
                state.last_data = Instant::now();
                Ok(Some(Polled { index, offset: m.offset(), payload: m.payload().unwrap_or_default().to_vec() }))
            }
            Some(Err(KafkaError::PartitionEOF(_))) => Ok(None),
            Some(Err(e)) => {
                eprintln!("stockflow: Kafka consumer: {e} (retrying; state is kept)");
                Ok(None)
            }
        }
    }

    /// For batch runs: partitions whose messages ended in a gap (compaction, transaction
    /// markers) are done when the consumer's position reached the end offset.
    pub fn refresh_positions(&mut self) {
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
