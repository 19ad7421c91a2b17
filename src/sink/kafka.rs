//! The Kafka sink: each closed tick's records, in key order, to `<prefix>.atp`, `.low_stock`,
//! `.order_plan`, `.network_atp`, and dead letters to `<prefix>.dead_letter`; a tick counts
//! as written only once the broker has acknowledged every record of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dataflows::model::{DeadLetter, Millis};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};

use super::{Sink, Snapshot, Summary, TickBatch};
use crate::format;
use crate::kafka::{create_topics, TopicSpec};

/// How often a tick still waiting for its acknowledgements says so on stderr. It waits for as
/// long as the broker is away (the producer is built with `message.timeout.ms=0` unless the
/// user sets it): the state is kept and the run resumes when the broker is back.
const ACK_REPORT: Duration = Duration::from_secs(10);

/// The output topics' suffixes, and whether each is an upsert table (compacted, tombstoned).
pub const OUTPUTS: [(&str, bool); 5] =
    [("atp", true), ("low_stock", false), ("order_plan", true), ("network_atp", true), ("dead_letter", false)];

/// Tracks deliveries: records not yet acknowledged per tick (ticks are produced without
/// waiting, so producing tick t+1 overlaps the acknowledgements of tick t), and failures, the
/// first error kept for the message.
#[derive(Default)]
pub struct Acks {
    outstanding: Mutex<BTreeMap<Millis, u64>>,
    /// Delivery reports served so far (delivered or failed).
    reported: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// The tick that dead letters are accounted to: they carry no tick of their own, and must be
/// acknowledged before any offset after them is committed.
const DEAD_LETTER_TICK: Millis = 0;

impl Acks {
    /// One record of `tick` is settled: delivered, failed, or never queued.
    fn settle(&self, tick: Millis) {
        let mut outstanding = self.outstanding.lock().unwrap();
        if let Some(n) = outstanding.get_mut(&tick) {
            *n -= 1;
            if *n == 0 {
                outstanding.remove(&tick);
            }
        }
    }
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, tick: usize) {
        self.settle(tick as Millis);
        self.reported.fetch_add(1, Ordering::Relaxed);
        if let Err((e, m)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap();
            if first.is_none() {
                *first = Some(format!("{}[{}]: {e}", m.topic(), m.partition()));
            }
        }
    }
}

/// Produces the output streams to Kafka.
pub struct KafkaSink {
    producer: BaseProducer<Acks>,
    prefix: String,
    /// Set when the job is asked to stop: a tick still unacknowledged is then given up (its
    /// offsets stay uncommitted, so a restart produces it again).
    stop: Option<&'static AtomicBool>,
    /// Source ids to names (topics), for dead letters.
    sources: Vec<String>,
    value: Vec<u8>,
}

fn io_error(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

impl KafkaSink {
    /// A sink producing to `<prefix>.<name>` with `config` (from [`crate::kafka::KafkaArgs`]);
    /// missing output topics are created with `partitions` partitions, the upsert tables
    /// compacted.
    pub fn new(config: &ClientConfig, prefix: &str, partitions: i32, sources: Vec<String>) -> std::io::Result<Self> {
        let names: Vec<(String, bool)> =
            OUTPUTS.iter().map(|(name, compacted)| (format!("{prefix}.{name}"), *compacted)).collect();
        let specs: Vec<TopicSpec<'_>> =
            names.iter().map(|(name, compacted)| TopicSpec { name, partitions, compacted: *compacted }).collect();
        create_topics(config, &specs);
        let producer: BaseProducer<Acks> = config
            .create_with_context(Acks::default())
            .map_err(|e| io_error(format!("cannot create the Kafka producer: {e}; check --brokers and -X")))?;
        Ok(KafkaSink { producer, prefix: prefix.to_string(), stop: None, sources, value: Vec::new() })
    }

    /// Gives up waiting for acknowledgements once `stop` is set.
    pub fn stop_on(mut self, stop: &'static AtomicBool) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The topic an output goes to.
    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// Queues one record of `tick`; a `None` value is a tombstone. Waits while librdkafka's
    /// queue is full.
    fn send(&self, tick: Millis, topic: &str, key: &str, value: Option<&[u8]>) -> std::io::Result<()> {
        let mut record = BaseRecord::with_opaque_to(topic, tick as usize).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        *self.producer.context().outstanding.lock().unwrap().entry(tick).or_default() += 1;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    self.producer.context().settle(tick);
                    return Err(io_error(format!("cannot produce to {topic}: {e}")));
                }
            }
        }
    }

    /// Encodes with `f` into the reusable buffer, dropping format's trailing newline.
    fn encode(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        self.value.clear();
        f(&mut self.value);
        if self.value.last() == Some(&b'\n') {
            self.value.pop();
        }
        self.value.clone()
    }

    /// Serves delivery reports without waiting; fails if a delivery failed.
    fn check(&self) -> std::io::Result<()> {
        // A zero-timeout poll serves one event (one batch of reports): serve until none is left,
        // else acknowledgements fall behind the ticks and a tick waits for later loop turns.
        loop {
            let before = self.producer.context().reported.load(Ordering::Relaxed);
            self.producer.poll(Duration::ZERO);
            if self.producer.context().reported.load(Ordering::Relaxed) == before {
                break;
            }
        }
        let failed = self.producer.context().failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let first = self.producer.context().first_error.lock().unwrap().take().unwrap_or_default();
            return Err(io_error(format!(
                "{failed} output records were not delivered (first: {first}); the ticks they belong to are not committed"
            )));
        }
        Ok(())
    }

    /// The least tick with records not yet acknowledged (`None`: everything produced so far is
    /// acknowledged). Every tick before it is completely written.
    pub fn unacknowledged(&self) -> std::io::Result<Option<Millis>> {
        self.check()?;
        Ok(self.producer.context().outstanding.lock().unwrap().keys().next().copied())
    }

    /// Waits until every queued record is acknowledged; fails if any delivery failed.
    pub fn flush(&self) -> std::io::Result<()> {
        let waiting_since = std::time::Instant::now();
        while let Err(e) = self.producer.flush(ACK_REPORT) {
            let queued = self.producer.in_flight_count();
            if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Err(io_error(format!(
                    "stopped with {queued} output records unacknowledged ({e}); their ticks are not committed and are produced again after a restart"
                )));
            }
            eprintln!(
                "stockflow: {queued} output records waiting {}s for the broker's acknowledgement ({e}); is the broker up? The state is kept; waiting",
                waiting_since.elapsed().as_secs()
            );
        }
        self.check()
    }

    /// Produces dead letters (in the order given) without waiting for their acknowledgements.
    pub fn dead_letters(&mut self, dead: &[DeadLetter]) -> std::io::Result<()> {
        let topic = self.topic("dead_letter");
        for d in dead {
            let source = self.sources[d.position.source as usize].clone();
            let value = self.encode(|b| format::dead_letter(b, &source, d));
            let key = format!("{source}@{}@{}", d.position.partition, d.position.offset);
            self.send(DEAD_LETTER_TICK, &topic, &key, Some(&value))?;
        }
        self.check()
    }
}

impl Sink for KafkaSink {
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> std::io::Result<()> {
        let t = Some(time);
        let topic = self.topic("atp");
        for c in &batch.atp {
            let key = format!("{}@{}", c.key.0, c.key.1);
            let value = c.value.as_ref().map(|v| self.encode(|b| format::atp(b, t, &c.key, Some(v))));
            self.send(time, &topic, &key, value.as_deref())?;
        }
        // low_stock is a stream of transitions, not an upsert table: never tombstoned.
        let topic = self.topic("low_stock");
        for tr in &batch.low_stock {
            let key = format!("{}@{}", tr.key.0, tr.key.1);
            let value = self.encode(|b| format::transition(b, tr));
            self.send(time, &topic, &key, Some(&value))?;
        }
        let topic = self.topic("order_plan");
        for c in &batch.order_plan {
            let key = format!("{}@{}", c.key.0, c.key.1);
            let value = c.value.as_ref().map(|v| self.encode(|b| format::order_plan(b, t, &c.key, Some(v))));
            self.send(time, &topic, &key, value.as_deref())?;
        }
        let topic = self.topic("network_atp");
        for c in &batch.network_atp {
            let value = c.value.map(|v| self.encode(|b| format::network_atp(b, t, &c.key, Some(v))));
            self.send(time, &topic, &c.key, value.as_deref())?;
        }
        self.check()
    }

    fn finish(&mut self, dead: &[DeadLetter], _: &Snapshot, _: &Summary) -> std::io::Result<()> {
        self.dead_letters(dead)?;
        self.flush()
    }
}
