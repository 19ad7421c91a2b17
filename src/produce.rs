//! `stockflow produce` (fixture files into a topic, one file per partition) and
//! `stockflow consume` (an output topic's latest value per key), for demos and tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::kafka::KafkaArgs;
use crate::source::file::LineReader;

const TIMEOUT: Duration = Duration::from_secs(30);

/// `stockflow produce FIXTURE_DIR --topic T`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// A fixture directory: its *.jsonl files, in name order, become partitions 0, 1, ...
    pub fixture_dir: PathBuf,
    /// The topic; created with one partition per file if missing.
    #[arg(long)]
    pub topic: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// `stockflow consume TOPIC`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The output topic to read, from the beginning to its current end.
    pub topic: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Produces every non-blank line of file i to partition i, in order.
pub fn produce(args: ProduceArgs) -> Result<()> {
    let files = crate::config::resolve_inputs(std::slice::from_ref(&args.fixture_dir))?;
    if files.is_empty() {
        bail!("{} holds no *.jsonl file to produce", args.fixture_dir.display());
    }
    let config = args.kafka.client_config(&[])?;
    let admin: AdminClient<DefaultClientContext> = config.create().context("cannot create a Kafka admin client")?;
    let topic = NewTopic::new(&args.topic, files.len() as i32, TopicReplication::Fixed(1));
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    // A broker that cannot create topics (or one that auto-creates them) is not fatal here:
    // the partition check below decides.
    match futures_lite_block_on(admin.create_topics([&topic], &opts)) {
        Err(e) => eprintln!("produce: could not create topic {} ({e}); using it as it is", args.topic),
        Ok(results) => {
            for r in results {
                if let Err((name, code)) = r {
                    if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                        eprintln!("produce: could not create topic {name} ({code}); using it as it is");
                    }
                }
            }
        }
    }
    let producer: BaseProducer = config.create().context("cannot create the Kafka producer")?;
    // Partition count: an existing topic must have enough partitions for the files.
    let metadata = producer.client().fetch_metadata(Some(&args.topic), TIMEOUT)?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    if partitions < files.len() {
        bail!(
            "topic {} has {partitions} partitions but {} holds {} files (one per partition); delete the topic or use another name",
            args.topic,
            args.fixture_dir.display(),
            files.len()
        );
    }
    let mut count = 0u64;
    for (partition, file) in files.iter().enumerate() {
        let mut lines = LineReader::open(&file.path).with_context(|| format!("cannot open {}", file.path.display()))?;
        while let Some((_, raw)) = lines.next_message()? {
            let mut record: BaseRecord<'_, (), [u8]> =
                BaseRecord::to(&args.topic).partition(partition as i32).payload(raw);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        record = r;
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => bail!("cannot produce to {}[{partition}]: {e}", args.topic),
                }
            }
            count += 1;
        }
        // Flush per file: one partition's messages must land in order and completely.
        producer.flush(TIMEOUT).with_context(|| format!("{}[{partition}]: messages not acknowledged", args.topic))?;
    }
    eprintln!("produce: {count} messages from {} files to {}", files.len(), args.topic);
    Ok(())
}

/// Polls a future to completion on this thread (admin calls are the only futures used).
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop(_: *const ()) {}
    fn clone(p: *const ()) -> RawWaker {
        RawWaker::new(p, &VTABLE)
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: the vtable's functions ignore the data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads `topic` from the beginning to its end offsets; the latest value per key (tombstones
/// remove the key). Keys are sorted bytewise.
pub fn latest_per_key(kafka: &KafkaArgs, topic: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let config = kafka.client_config(&[("group.id", "stockflow-consume"), ("enable.auto.commit", "false")])?;
    let consumer: BaseConsumer = config.create().context("cannot create the Kafka consumer")?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else {
        bail!("topic {topic} does not exist");
    };
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    consumer.assign(&tpl)?;
    let mut latest = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            bail!("timed out reading {topic}: partitions {:?} did not reach their end offsets", ends.keys());
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.with_context(|| format!("reading {topic}"))?;
        let key = m.key().unwrap_or_default().to_vec();
        match m.payload() {
            Some(v) => latest.insert(key, v.to_vec()),
            None => latest.remove(&key),
        };
        if ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
            ends.remove(&m.partition());
        }
    }
    Ok(latest)
}

/// Prints `key<TAB>value` per key, sorted by key.
pub fn consume(args: ConsumeArgs) -> Result<()> {
    use std::io::Write;
    let latest = latest_per_key(&args.kafka, &args.topic)?;
    let mut out = std::io::stdout().lock();
    for (k, v) in latest {
        out.write_all(&k)?;
        out.write_all(b"\t")?;
        out.write_all(&v)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
