//! `stockflow produce` (fixture files into a topic, one file per partition) and
//! `stockflow consume` (an output topic's latest value per key), for demos and tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::io::fs::named;
use crate::io::kafka::KafkaArgs;
use crate::io::source::file::LineReader;

const TIMEOUT: Duration = Duration::from_secs(30);

/// `stockflow produce FIXTURE_DIR --topic T`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// A fixture directory: its *.jsonl files, in name order, become partitions 0, 1, ...
    pub fixture_dir: PathBuf,
    /// The topic; created with one partition per file if missing.
    #[arg(long)]
    pub topic: String,
    /// Messages per second, steady (0: as fast as the broker takes them). With a rate, the
    /// files are produced side by side, each in proportion to its size, as a live stream.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// `stockflow consume TOPIC`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The output topic to read, from the beginning to its current end.
    pub topic: String,
    /// Print every record (partition by partition, in offset order) instead of the latest
    /// value per key: for streams such as `<prefix>.low_stock`.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// A producer of raw messages to chosen partitions of one topic (keyless: a message's partition
/// is the caller's choice), shared by `produce` and `gen --kafka`.
pub struct PartitionProducer {
    producer: BaseProducer,
    topic: String,
}

impl PartitionProducer {
    /// Connects and makes sure `topic` has at least `partitions` partitions, creating it with
    /// that many when the broker lets us; `why` says why they are needed, for the error.
    pub fn open(kafka: &KafkaArgs, topic: &str, partitions: usize, why: &str) -> Result<Self> {
        let client = kafka.client()?;
        client.check_reachable()?;
        let config = client.client_config(&[]);
        // A broker that cannot create topics (or one that auto-creates them) is not fatal here:
        // the partition check below decides.
        crate::io::kafka::create_topics(
            &config,
            &[crate::io::kafka::TopicSpec { name: topic, partitions: partitions as i32, compacted: false }],
        );
        let producer: BaseProducer = config.create().context("cannot create the Kafka producer")?;
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("cannot read the metadata of topic {topic} from {}", kafka.brokers))?;
        let found = metadata.topics().first().map_or(0, |t| t.partitions().len());
        if found < partitions {
            bail!("topic {topic} has {found} partitions but {why}; delete the topic or use another name");
        }
        Ok(PartitionProducer { producer, topic: topic.to_string() })
    }

    /// Queues `raw` for `partition`, waiting while librdkafka's queue is full. Messages to one
    /// partition land in the order they are sent.
    pub fn send(&self, partition: usize, raw: &[u8]) -> Result<()> {
        let mut record: BaseRecord<'_, (), [u8]> = BaseRecord::to(&self.topic).partition(partition as i32).payload(raw);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => bail!("cannot produce to {}[{partition}]: {e}", self.topic),
            }
        }
    }

    /// Serves delivery reports without waiting.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every queued message is acknowledged; `what` names them in the error.
    pub fn flush(&self, what: &str) -> Result<()> {
        self.producer.flush(TIMEOUT).with_context(|| format!("{what}: messages not acknowledged by the broker"))
    }

    /// The topic produced to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Produces every non-blank line of file i to partition i, in order.
pub fn produce(args: ProduceArgs) -> Result<()> {
    let files = crate::config::resolve_inputs(std::slice::from_ref(&args.fixture_dir), false)?;
    let why = format!("{} holds {} files (one per partition)", args.fixture_dir.display(), files.len());
    let producer = PartitionProducer::open(&args.kafka, &args.topic, files.len(), &why)?;
    let mut count = 0u64;
    let started = std::time::Instant::now();
    if args.rate > 0 {
        let mut readers = Vec::new();
        for file in &files {
            let size = std::fs::metadata(&file.path).map_err(named("read", &file.path))?.len().max(1);
            let lines = LineReader::open(&file.path)?;
            readers.push((lines, size, false));
        }
        // The file least far through (by bytes) goes next, so every partition advances alike.
        while let Some((partition, (lines, _, done))) = readers
            .iter_mut()
            .enumerate()
            .filter(|(_, r)| !r.2)
            .min_by(|(_, a), (_, b)| (a.0.bytes_read() * b.1).cmp(&(b.0.bytes_read() * a.1)))
        {
            match lines.next_message()? {
                Some((_, raw)) => producer.send(partition, raw)?,
                None => {
                    *done = true;
                    continue;
                }
            }
            count += 1;
            let due = started + Duration::from_secs_f64(count as f64 / args.rate as f64);
            // Sleeping in steps of at least a millisecond: the OS cannot time shorter ones.
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                if wait >= Duration::from_millis(1) {
                    producer.poll();
                    std::thread::sleep(wait);
                }
            }
        }
        producer.flush(&args.topic)?;
    }
    for (partition, file) in files.iter().enumerate().filter(|_| args.rate == 0) {
        let mut lines = LineReader::open(&file.path)?;
        while let Some((_, raw)) = lines.next_message()? {
            producer.send(partition, raw)?;
            count += 1;
        }
        // Flush per file: one partition's messages must land in order and completely.
        producer.flush(&format!("{}[{partition}]", args.topic))?;
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "produce: {count} messages from {} files to {} in {secs:.1} s ({:.0}/s)",
        files.len(),
        args.topic,
        count as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Reads `topic` from the beginning to its end; the latest value per key (tombstones remove
/// the key). Keys are sorted bytewise. The end is where each partition reports end-of-partition
/// (the high watermark of a fetch response), not a ListOffsets answer: some Kafka-compatible
/// brokers (tansu 0.6.0) under-report that one after multi-record batches.
pub fn latest_per_key(kafka: &KafkaArgs, topic: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut latest = BTreeMap::new();
    read_topic(kafka, topic, |_, _, key, value| {
        match value {
            Some(v) => latest.insert(key.to_vec(), v.to_vec()),
            None => latest.remove(key),
        };
    })?;
    Ok(latest)
}

/// Every record of `topic` from the beginning to each partition's end, partition by partition
/// in offset order, as (partition, offset, key, value).
pub fn all_records(kafka: &KafkaArgs, topic: &str) -> Result<Vec<(i32, i64, Vec<u8>, Option<Vec<u8>>)>> {
    let mut records = Vec::new();
    read_topic(kafka, topic, |partition, offset, key, value| {
        records.push((partition, offset, key.to_vec(), value.map(<[u8]>::to_vec)));
    })?;
    records.sort_by_key(|r| (r.0, r.1));
    Ok(records)
}

/// Calls `f(key, value)` for every record of `topic` up to each partition's end.
fn read_topic(kafka: &KafkaArgs, topic: &str, mut f: impl FnMut(i32, i64, &[u8], Option<&[u8]>)) -> Result<()> {
    let client = kafka.client()?;
    client.check_reachable()?;
    // Read from offset 0, reset to the log's start where it begins later (retention), rather
    // than from `Offset::Beginning`: tansu 0.6 answers "earliest" with the record batch it
    // stored first, which is not offset 0 when two producers (two workers) wrote a partition's
    // first batches at once, and the records before it were then never read.
    let config = client.client_config(&[
        ("group.id", "stockflow-consume"),
        ("enable.auto.commit", "false"),
        ("enable.partition.eof", "true"),
        ("auto.offset.reset", "earliest"),
    ]);
    let consumer: BaseConsumer = config.create().context("cannot create the Kafka consumer")?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else {
        bail!("topic {topic} does not exist");
    };
    let mut pending = std::collections::BTreeSet::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        pending.insert(p.id());
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(0))?;
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        if std::time::Instant::now() > deadline {
            bail!("timed out reading {topic}: partitions {pending:?} did not reach their end");
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            Some(Ok(m)) => f(m.partition(), m.offset(), m.key().unwrap_or_default(), m.payload()),
        }
    }
    Ok(())
}

/// Prints `key<TAB>value`: the latest value per key, sorted by key, or with `--all` every
/// record in offset order (a tombstone's value printed as `null`).
pub fn consume(args: ConsumeArgs) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut line = |key: &[u8], value: Option<&[u8]>| -> std::io::Result<()> {
        out.write_all(key)?;
        out.write_all(b"\t")?;
        out.write_all(value.unwrap_or(b"null"))?;
        out.write_all(b"\n")
    };
    if args.all {
        for (_, _, key, value) in all_records(&args.kafka, &args.topic)? {
            line(&key, value.as_deref())?;
        }
    } else {
        for (key, value) in latest_per_key(&args.kafka, &args.topic)? {
            line(&key, Some(&value))?;
        }
    }
    Ok(())
}
