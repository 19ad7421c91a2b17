//! The Kafka sink: each closed tick's records, in key order, to `<prefix>.atp`, `.low_stock`,
//! `.order_plan`, `.network_atp`, and dead letters to `<prefix>.dead_letter`; a tick counts
//! as written only once the broker has acknowledged every record of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dataflows::model::{DeadLetter, Millis};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};

use super::{Sink, Snapshot, Summary, TickBatch};
use crate::format;

/// How long one tick may wait for its acknowledgements before the run fails (and, in `run`,
/// its offsets stay uncommitted, so the records are produced again after a restart).
const ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Counts failed deliveries; the first error is kept for the message.
#[derive(Default)]
pub struct Acks {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
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
    /// Source ids to names (topics), for dead letters.
    sources: Vec<String>,
    value: Vec<u8>,
}

fn io_error(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

impl KafkaSink {
    /// A sink producing to `<prefix>.<name>` with `config` (from [`crate::kafka::KafkaArgs`]).
    pub fn new(config: &ClientConfig, prefix: &str, sources: Vec<String>) -> std::io::Result<Self> {
        let producer: BaseProducer<Acks> = config
            .create_with_context(Acks::default())
            .map_err(|e| io_error(format!("cannot create the Kafka producer: {e}; check --brokers and -X")))?;
        Ok(KafkaSink { producer, prefix: prefix.to_string(), sources, value: Vec::new() })
    }

    /// The topic an output goes to.
    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// Queues one record; a `None` value is a tombstone. Waits while librdkafka's queue is full.
    fn send(&self, topic: &str, key: &str, value: Option<&[u8]>) -> std::io::Result<()> {
        let mut record = BaseRecord::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(io_error(format!("cannot produce to {topic}: {e}"))),
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

    /// Waits until every queued record is acknowledged; fails if any delivery failed.
    pub fn flush(&self) -> std::io::Result<()> {
        self.producer.flush(ACK_TIMEOUT).map_err(|e| {
            io_error(format!("Kafka did not acknowledge the outputs within {ACK_TIMEOUT:?}: {e}; is the broker up?"))
        })?;
        let failed = self.producer.context().failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let first = self.producer.context().first_error.lock().unwrap().take().unwrap_or_default();
            return Err(io_error(format!(
                "{failed} output records were not delivered (first: {first}); nothing of this tick is committed"
            )));
        }
        Ok(())
    }

    /// Produces dead letters (in the order given) and waits for their acknowledgements.
    pub fn dead_letters(&mut self, dead: &[DeadLetter]) -> std::io::Result<()> {
        let topic = self.topic("dead_letter");
        for d in dead {
            let source = self.sources[d.position.source as usize].clone();
            let value = self.encode(|b| format::dead_letter(b, &source, d));
            let key = format!("{source}@{}@{}", d.position.partition, d.position.offset);
            self.send(&topic, &key, Some(&value))?;
        }
        self.flush()
    }
}

impl Sink for KafkaSink {
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> std::io::Result<()> {
        let t = Some(time);
        let topic = self.topic("atp");
        for c in &batch.atp {
            let key = format!("{}@{}", c.key.0, c.key.1);
            let value = c.value.as_ref().map(|v| self.encode(|b| format::atp(b, t, &c.key, Some(v))));
            self.send(&topic, &key, value.as_deref())?;
        }
        // low_stock is a stream of transitions, not an upsert table: never tombstoned.
        let topic = self.topic("low_stock");
        for tr in &batch.low_stock {
            let key = format!("{}@{}", tr.key.0, tr.key.1);
            let value = self.encode(|b| format::transition(b, tr));
            self.send(&topic, &key, Some(&value))?;
        }
        let topic = self.topic("order_plan");
        for c in &batch.order_plan {
            let key = format!("{}@{}", c.key.0, c.key.1);
            let value = c.value.as_ref().map(|v| self.encode(|b| format::order_plan(b, t, &c.key, Some(v))));
            self.send(&topic, &key, value.as_deref())?;
        }
        let topic = self.topic("network_atp");
        for c in &batch.network_atp {
            let value = c.value.map(|v| self.encode(|b| format::network_atp(b, t, &c.key, Some(v))));
            self.send(&topic, &c.key, value.as_deref())?;
        }
        self.flush()
    }

    fn finish(&mut self, dead: &[DeadLetter], _: &Snapshot, _: &Summary) -> std::io::Result<()> {
        self.dead_letters(dead)
    }
}
