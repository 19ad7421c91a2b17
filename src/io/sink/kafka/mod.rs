//! The Kafka sink: each closed tick's records, in key order, to `<prefix>.atp`, `.low_stock`,
//! `.order_plan`, `.network_atp`, and dead letters to `<prefix>.dead_letter`. At-least-once, a
//! tick counts as written once the broker has acknowledged every record of it; exactly-once,
//! each drained batch of ticks is one Kafka transaction together with a progress record on
//! `<prefix>.progress` and the consumer offsets it covers, and a restart skips what the last
//! committed progress record says is already out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dataflows::model::{DeadLetter, Millis};
use dataflows::shard;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode as Code;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use super::{Sink, SinkError, Snapshot, Summary, TickBatch};
use crate::io::format;
use crate::io::kafka::{create_topics, latest_records, TopicSpec};

mod crash;
mod progress;

use progress::{progress_key, Progress, Written};

/// How often a tick still waiting for its acknowledgements says so on stderr. It waits for as
/// long as the broker is away (the producer is built with `message.timeout.ms=0` unless the
/// user sets it): the state is kept and the run resumes when the broker is back.
const ACK_REPORT: Duration = Duration::from_secs(10);

/// How long the start-up probe transaction may take before the broker counts as lacking
/// transactions (a broker that does not implement them answers at once; this bounds a hang).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The output topics' suffixes, and whether each is an upsert table (compacted, tombstoned).
pub const OUTPUTS: [(&str, bool); 5] =
    [("atp", true), ("low_stock", false), ("order_plan", true), ("network_atp", true), ("dead_letter", false)];

/// The progress topic's suffix: compacted, one partition, one key per worker
/// (`progress/<worker>`, see [`progress`]).
pub const PROGRESS: &str = "progress";


/// Index of the progress topic in [`KafkaSink::topics`], after the [`OUTPUTS`].
const PROGRESS_TOPIC: usize = OUTPUTS.len();

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

    /// Forgets failures: after an aborted transaction the purged records report as failed,
    /// but they are produced again in the next one.
    fn forget_failures(&self) {
        self.failed.store(0, Ordering::Relaxed);
        self.first_error.lock().unwrap().take();
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

/// How the sink delivers (`--exactly-once`).
pub enum Delivery {
    /// An idempotent producer, ticks pipelined; a restart produces the ticks after the last
    /// commit again (whole ticks, byte-identical).
    AtLeastOnce,
    /// Transactions where the broker has them, else at-least-once with one log line.
    ExactlyOnce {
        /// The consumer group: with the prefix it makes the transactional id, and its offsets
        /// are committed in each transaction.
        group: String,
        /// That group's consumer configuration, for reading the progress topic and for the
        /// group's metadata.
        consumer: ClientConfig,
    },
}

/// A record of the open transaction, kept so that the transaction can be produced again after
/// the broker aborted it.
struct Kept {
    tick: Millis,
    topic: usize,
    key: String,
    value: Option<Vec<u8>>,
}

/// The state of exactly-once delivery.
struct Transactions {
    /// The group whose offsets each transaction commits.
    group: ConsumerGroupMetadata,
    /// What the open transaction makes true once committed: this worker's progress record.
    progress: Progress,
    /// The offsets the worker loop last said may be committed (only these: positions the
    /// progress record carries from earlier runs may belong to other workers by now, and
    /// committing them again could move the group back).
    offsets: Vec<(String, i32, i64)>,
    /// The progress record's key.
    key: String,
    /// The open transaction's records (empty: no transaction open).
    open: Vec<Kept>,
    /// The least tick in the open transaction.
    first_tick: Option<Millis>,
    /// Transactions committed so far.
    committed: u64,
    /// The worker loop's offsets moved since the last commit: they are committed in a
    /// transaction of their own when the ticks they cover produced no record, so that a
    /// worker's read positions only ever move in its transactions (a fenced instance finds out
    /// at its next commit, records or not, and stops before its loop commits anything else).
    offsets_pending: bool,
}

/// Why a transaction did not commit.
enum Failure {
    /// The broker aborted it (or it must be aborted): produce it again.
    Abortable(String),
    /// Nothing more can be done (fenced by a newer instance, stopped, unsupported).
    Fatal(String),
}

/// Ticks and dead letters a restarted run did not produce again; each count is said once,
/// when its skipping is over (the first one written, or the end).
#[derive(Default)]
struct Skipped {
    records: u64,
    ticks: u64,
    dead_letters: u64,
    ticks_reported: bool,
    dead_letters_reported: bool,
}

/// Produces the output streams to Kafka.
pub struct KafkaSink {
    producer: BaseProducer<Acks>,
    /// The output topics in [`OUTPUTS`] order, then the progress topic.
    topics: Vec<String>,
    /// Set when the job is asked to stop: a tick still unacknowledged is then given up (its
    /// offsets stay uncommitted, so a restart produces it again).
    stop: Option<&'static AtomicBool>,
    /// Source ids to names (topics), for dead letters.
    sources: Vec<String>,
    value: Vec<u8>,
    /// Exactly-once requested, until its start-up is done ([`Sink::start`]).
    setup: Option<Setup>,
    /// Exactly-once in effect (the broker took the probe transaction).
    txn: Option<Transactions>,
    /// This worker's transactional id, while its producer is transactional.
    transactional_id: Option<String>,
    /// What earlier runs wrote; records and dead letters it covers are not produced again.
    written: Written,
    skipped: Skipped,
    /// This sink's worker, and how many workers produce.
    worker: usize,
    workers: usize,
    /// `run`: dead letters are produced as they arrive, not at the end.
    live_dead_letters: bool,
}

fn io_error(what: String) -> SinkError {
    SinkError::Kafka(what)
}

/// The transactional id of a job's worker: stable across restarts, so a restarted job fences
/// the old one, and distinct per (prefix, group, worker). A prefix cannot hold `/` (a topic
/// name's character set), so the parts cannot run into each other. An id given with `-X`
/// (ACLs often restrict ids to a prefix) is the base instead of `stockflow/<prefix>/<group>`.
pub fn transactional_id(base: &str, worker: usize) -> String {
    format!("{base}/{worker}")
}

/// What exactly-once start-up needs, kept from [`KafkaSink::new`] to [`Sink::start`].
struct Setup {
    /// The client settings, for the fencing producers and an at-least-once fallback.
    config: ClientConfig,
    /// The base of the transactional ids.
    base_id: String,
    /// The group whose offsets the transactions commit.
    group: ConsumerGroupMetadata,
    /// Reads the progress topic (read_committed).
    reader: BaseConsumer,
    /// `init_transactions` of this worker's own id, which fenced its previous instance.
    initialised: Result<(), String>,
}

/// A transaction call's error, sorted by what to do about it.
fn failure(e: KafkaError) -> Failure {
    match &e {
        KafkaError::Transaction(t) if t.txn_requires_abort() => Failure::Abortable(t.to_string()),
        _ => Failure::Fatal(e.to_string()),
    }
}

/// Whether a transaction call may simply be called again (it timed out, the coordinator moved).
fn retriable(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_retriable(),
        KafkaError::Flush(_) => true,
        _ => false,
    }
}

impl KafkaSink {
    /// A sink producing to `<prefix>.<name>` with `config` (from [`crate::io::kafka::KafkaArgs`]);
    /// missing output topics are created with `partitions` partitions, the upsert tables
    /// compacted. With [`Delivery::ExactlyOnce`], the progress topic is created too, the last
    /// committed progress record read, and the broker probed with one real transaction; a
    /// broker that refuses it gets the at-least-once producer and one log line.
    pub fn new(
        config: &ClientConfig,
        prefix: &str,
        partitions: i32,
        sources: Vec<String>,
        delivery: Delivery,
        (worker, workers): (usize, usize),
    ) -> Result<Self, SinkError> {
        let topics: Vec<String> = OUTPUTS
            .iter()
            .map(|(name, _)| format!("{prefix}.{name}"))
            .chain(std::iter::once(format!("{prefix}.{PROGRESS}")))
            .collect();
        if worker == 0 {
            // The other workers produce only after the start-up barrier ([`Sink::start`]).
            let mut specs: Vec<TopicSpec<'_>> = OUTPUTS
                .iter()
                .zip(&topics)
                .map(|((_, compacted), name)| TopicSpec { name, partitions, compacted: *compacted })
                .collect();
            if matches!(delivery, Delivery::ExactlyOnce { .. }) {
                specs.push(TopicSpec { name: &topics[PROGRESS_TOPIC], partitions: 1, compacted: true });
            }
            create_topics(config, &specs);
        }
        let Delivery::ExactlyOnce { group, consumer } = delivery else {
            return Ok(KafkaSink::with(at_least_once_producer(config)?, topics, sources, (worker, workers)));
        };
        let base_id = config.get("transactional.id").map_or_else(|| format!("stockflow/{prefix}/{group}"), String::from);
        let id = transactional_id(&base_id, worker);
        let producer = transactional_producer(config, &id)?;
        let mut sink = KafkaSink::with(producer, topics, sources, (worker, workers));
        sink.transactional_id = Some(id);
        let mut reader_config = consumer;
        reader_config
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false");
        let reader: BaseConsumer = reader_config.create().map_err(|e| {
            io_error(format!("cannot create the consumer that reads {}: {e}", sink.topics[PROGRESS_TOPIC]))
        })?;
        let group = reader.group_metadata().ok_or_else(|| {
            io_error(format!("consumer group {group:?} has no metadata for transactions; use --exactly-once=false"))
        })?;
        // Initialising fences an older instance with this transactional id and aborts its open
        // transaction, so the progress read after it sees everything that instance committed.
        let initialised = init_transactions(&sink.producer);
        sink.setup = Some(Setup { config: config.clone(), base_id, group, reader, initialised });
        Ok(sink)
    }

    /// Reads what earlier runs wrote: the latest progress record of every worker.
    fn read_written(&self, reader: &BaseConsumer) -> Result<Written, SinkError> {
        let topic = &self.topics[PROGRESS_TOPIC];
        let complete = |records: &BTreeMap<String, Vec<u8>>| {
            let Ok(parsed) = records.values().map(|v| Progress::from_json(v)).collect::<Result<Vec<_>, _>>() else {
                return false;
            };
            let Some(newest) = parsed.iter().max_by_key(|p| p.generation) else { return false };
            // The newest generation's records all lie after every older one's (a generation
            // fences the one before it), so one older record means they are all here.
            parsed.iter().any(|p| p.generation < newest.generation) || records.len() >= newest.workers
        };
        let records = latest_records(reader, topic, 0, complete).map_err(|e| {
            io_error(format!(
                "{e:#}; the progress topic {topic} must be readable (compacted, 1 partition), or run with --exactly-once=false"
            ))
        })?;
        Written::from_records(&records).map_err(|e| {
            io_error(format!(
                "{topic} holds a progress record this stockflow cannot read ({e}); is another program writing there? Use another --prefix"
            ))
        })
    }

    /// Exactly-once start-up, in step with the other workers' sinks (see [`Sink::start`]).
    fn start_transactions(&mut self, stage: usize) -> Result<(), SinkError> {
        let Some(setup) = self.setup.as_ref() else { return Ok(()) };
        match stage {
            // Fence the ids of workers a previous generation had beyond this one's.
            0 if self.worker == 0 && setup.initialised.is_ok() => {
                let seen = self.read_written(&setup.reader)?.workers_seen;
                for extra in self.workers..seen {
                    let id = transactional_id(&setup.base_id, extra);
                    init_transactions(&transactional_producer(&setup.config, &id)?)
                        .map_err(|e| io_error(format!("cannot fence the old transactional id {id}: {e}")))?;
                }
                Ok(())
            }
            // Every earlier instance is fenced: what they wrote is final.
            1 => {
                self.written = self.read_written(&setup.reader)?;
                Ok(())
            }
            2 => self.probe_transactions(),
            _ => Ok(()),
        }
    }

    /// One real transaction with this worker's first progress record; a broker that refuses
    /// it gets the at-least-once producer and (worker 0) one log line.
    fn probe_transactions(&mut self) -> Result<(), SinkError> {
        let setup = self.setup.take().expect("exactly-once start-up");
        let progress = Progress {
            generation: self.written.generation + 1,
            workers: self.workers,
            worker: self.worker,
            tick: None,
            before: self.written.levels.clone(),
            dead_letters: self.written.dead_letters.clone(),
            offsets: BTreeMap::new(),
        };
        let key = progress_key(self.worker);
        let probed = setup
            .initialised
            .and_then(|()| probe(&self.producer, &self.topics[PROGRESS_TOPIC], &key, &progress.to_json()));
        match probed {
            Ok(()) => {
                self.txn = Some(Transactions {
                    group: setup.group,
                    progress,
                    key,
                    offsets: Vec::new(),
                    open: Vec::new(),
                    first_tick: None,
                    committed: 0,
                    offsets_pending: false,
                })
            }
            Err(why) if fenced(&self.producer) => {
                // A newer instance started meanwhile: going on without transactions would
                // write beside it.
                return Err(io_error(why));
            }
            Err(why) => {
                self.producer = at_least_once_producer(&setup.config)?;
                self.transactional_id = None;
                if self.worker == 0 {
                    let brokers = setup.config.get("bootstrap.servers").unwrap_or_default();
                    tracing::warn!(
                        "broker {brokers} does not support transactions ({why}): output is at-least-once; \
                         after a restart, ticks may be produced twice, whole and byte-identical (--at-least-once silences this)"
                    );
                }
            }
        }
        Ok(())
    }

    /// A sink around `producer`, at-least-once until exactly-once is set up.
    fn with(producer: BaseProducer<Acks>, topics: Vec<String>, sources: Vec<String>, (worker, workers): (usize, usize)) -> Self {
        KafkaSink {
            producer,
            topics,
            stop: None,
            sources,
            value: Vec::new(),
            setup: None,
            txn: None,
            transactional_id: None,
            written: Written::default(),
            skipped: Skipped::default(),
            worker,
            workers,
            live_dead_letters: false,
        }
    }

    /// Gives up waiting for acknowledgements once `stop` is set.
    pub fn stop_on(mut self, stop: &'static AtomicBool) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Produces dead letters as they arrive ([`Sink::dead_letters`]) instead of at the end.
    pub fn with_live_dead_letters(mut self, live: bool) -> Self {
        self.live_dead_letters = live;
        self
    }

    /// Says once how many records a restarted run did not produce again.
    fn report_skipped_ticks(&mut self) {
        let s = &mut self.skipped;
        if s.ticks_reported || s.ticks == 0 {
            return;
        }
        s.ticks_reported = true;
        let through = self.written.max_tick().map_or("-".to_string(), |t| t.to_string());
        let (records, ticks, worker) = (s.records, s.ticks, self.worker);
        tracing::info!(
            "worker {worker}: skipped {records} records of {ticks} ticks (through tick {through}) already written by an earlier run ({})",
            self.topics[PROGRESS_TOPIC]
        );
    }

    /// Says once how many dead letters a restarted run did not produce again.
    fn report_skipped_dead_letters(&mut self) {
        let s = &mut self.skipped;
        if s.dead_letters_reported || s.dead_letters == 0 {
            return;
        }
        s.dead_letters_reported = true;
        tracing::info!(
            "skipped {} dead letters already written by an earlier run ({})",
            s.dead_letters,
            self.topics[PROGRESS_TOPIC]
        );
    }

    /// Queues one record of `tick` to `self.topics[topic]`; a `None` value is a tombstone. In
    /// a transaction (begun here when none is open) the record is also kept.
    fn send(&mut self, tick: Millis, topic: usize, key: &str, value: Option<&[u8]>) -> Result<(), SinkError> {
        if let Some(t) = self.txn.as_mut() {
            if t.open.is_empty() {
                begin(&self.producer)?;
            }
            t.open.push(Kept { tick, topic, key: key.to_string(), value: value.map(<[u8]>::to_vec) });
            t.first_tick = Some(t.first_tick.map_or(tick, |f| f.min(tick)));
        }
        self.produce(tick, topic, key, value)
    }

    /// Hands one record to librdkafka, waiting while its queue is full.
    fn produce(&self, tick: Millis, topic: usize, key: &str, value: Option<&[u8]>) -> Result<(), SinkError> {
        let mut record = BaseRecord::with_opaque_to(&self.topics[topic], tick as usize).key(key);
        if topic == PROGRESS_TOPIC {
            // Where the reader looks, however many partitions the topic was given.
            record = record.partition(0);
        }
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
                    return Err(io_error(format!("cannot produce to {}: {e}", self.topics[topic])));
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
    fn check(&self) -> Result<(), SinkError> {
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

    /// The least tick not yet written (`None`: everything produced so far is): with records
    /// not yet acknowledged, or, exactly-once, in the transaction not yet committed. Every tick
    /// before it is completely written.
    fn first_unacknowledged(&self) -> Result<Option<Millis>, SinkError> {
        self.check()?;
        let outstanding = self.producer.context().outstanding.lock().unwrap().keys().next().copied();
        let uncommitted = self.txn.as_ref().and_then(|t| t.first_tick);
        Ok(match (outstanding, uncommitted) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Waits until every queued record is acknowledged; fails if any delivery failed.
    fn wait_for_acks(&self) -> Result<(), SinkError> {
        let waiting_since = Instant::now();
        while let Err(e) = flush(&self.producer, ACK_REPORT) {
            let queued = self.producer.in_flight_count();
            if self.stopping() {
                return Err(io_error(format!(
                    "stopped with {queued} output records unacknowledged ({e}); their ticks are not committed and are produced again after a restart"
                )));
            }
            tracing::warn!(
                "{queued} output records waiting {}s for the broker's acknowledgement ({e}); is the broker up? The state is kept; waiting",
                waiting_since.elapsed().as_secs()
            );
        }
        self.check()
    }

    fn stopping(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// `result`, its error replaced by the producer's fatal error when it has one: the
    /// symptom (purged records, a failed commit) says less than the cause. A producer whose
    /// transactional id a newer instance initialised (the same `--prefix` and `--group`) is
    /// fenced: the broker refuses its transactions, so this instance must stop.
    fn explain<T>(&self, result: Result<T, SinkError>) -> Result<T, SinkError> {
        let Err(symptom) = result else { return result };
        let Some((_, reason)) = self.producer.client().fatal_error() else { return Err(symptom) };
        let worker = self.worker;
        Err(match self.transactional_id.as_ref().filter(|_| fenced(&self.producer)) {
            Some(id) => io_error(format!(
                "worker {worker}: fenced: another instance took over transactional id {id} (a stockflow with the same \
                 --prefix and --group started); this one stops and commits nothing more ({reason}). After a restart \
                 that is the old instance's end; otherwise run one job per --prefix and --group"
            )),
            None => io_error(format!(
                "worker {worker}: the Kafka producer failed for good ({reason}); the ticks not yet written are not \
                 committed, and a restart produces them again"
            )),
        })
    }

    /// Makes everything produced so far durable: at-least-once, waits for every
    /// acknowledgement; exactly-once, commits the open transaction. Fails if a delivery failed.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.report_skipped_ticks();
        self.report_skipped_dead_letters();
        if self.txn.is_some() {
            self.commit_open()?;
            if crash::holding() {
                self.wait_for_acks()?;
                crash::produced_everything(self.worker, self.workers);
            }
            Ok(())
        } else {
            self.wait_for_acks()
        }
    }

    /// Ends a drained batch of ticks. `offsets` are the (input topic, partition, next offset)
    /// the worker loop may commit through the last tick it gave the sink. Exactly-once, they
    /// are committed to the group in the open transaction (if one is open), which commits with
    /// the batch's records and the progress record. At-least-once this does nothing: the
    /// worker loop commits once the ticks are acknowledged.
    fn commit_batch(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), SinkError> {
        let Some(t) = self.txn.as_mut() else {
            return Ok(());
        };
        if t.offsets.as_slice() != offsets {
            t.offsets = offsets.to_vec();
            t.offsets_pending = true;
            for (topic, partition, offset) in offsets {
                t.progress.offsets.insert((topic.clone(), *partition), *offset);
            }
        }
        self.commit_open()
    }

    /// Commits the open transaction (if any, or if only the offsets moved) with the progress
    /// record and the offsets. When the broker aborts it (e.g. it was away longer than
    /// `transaction.timeout.ms`), it is produced again in a new one; a fenced producer (a newer
    /// instance started) fails.
    fn commit_open(&mut self) -> Result<(), SinkError> {
        let Some(t) = self.txn.as_mut() else {
            return Ok(());
        };
        if (t.open.is_empty() && !t.offsets_pending) || crash::holding() {
            return Ok(());
        }
        if t.open.is_empty() {
            begin(&self.producer)?;
        }
        let t = self.txn.as_mut().expect("exactly-once");
        let tick = t.first_tick.unwrap_or(DEAD_LETTER_TICK);
        let value = t.progress.to_json();
        let key = t.key.clone();
        t.open.push(Kept { tick, topic: PROGRESS_TOPIC, key: key.clone(), value: Some(value.clone()) });
        self.produce(tick, PROGRESS_TOPIC, &key, Some(&value))?;
        loop {
            if let Err(e) = self.wait_for_acks() {
                self.abort_quietly();
                return Err(e);
            }
            match self.end_transaction() {
                Ok(()) => break,
                Err(Failure::Fatal(why)) => {
                    return Err(io_error(format!(
                        "cannot commit the Kafka transaction ({why}); its ticks are not committed and are produced again after a restart"
                    )))
                }
                Err(Failure::Abortable(why)) if self.stopping() => {
                    return Err(io_error(format!(
                        "stopped with an aborted Kafka transaction ({why}); its ticks are produced again after a restart"
                    )))
                }
                Err(Failure::Abortable(why)) => {
                    tracing::warn!("the broker aborted a transaction ({why}); producing its ticks again");
                    self.retry_transaction()?;
                }
            }
        }
        let t = self.txn.as_mut().expect("a transaction was open");
        t.open.clear();
        t.first_tick = None;
        t.committed += 1;
        t.offsets_pending = false;
        crash::committed(self.worker, t.committed);
        Ok(())
    }

    /// Sends the offsets to the transaction and commits it, calling again while librdkafka
    /// says a call may be retried (the broker is away).
    fn end_transaction(&self) -> Result<(), Failure> {
        let t = self.txn.as_ref().expect("a transaction is open");
        if !t.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, offset) in &t.offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(|e| Failure::Fatal(format!("{topic}[{partition}]: {e}")))?;
            }
            self.retrying("committing offsets", || {
                self.producer.send_offsets_to_transaction(&tpl, &t.group, ACK_REPORT)
            })?;
        }
        self.retrying("committing", || self.producer.commit_transaction(ACK_REPORT))
    }

    fn retrying(&self, what: &str, call: impl Fn() -> KafkaResult<()>) -> Result<(), Failure> {
        let since = Instant::now();
        loop {
            match call() {
                Ok(()) => return Ok(()),
                Err(e) if retriable(&e) => {
                    if self.stopping() {
                        return Err(Failure::Fatal(format!("stopped while {what} a transaction ({e})")));
                    }
                    tracing::warn!(
                        "{what} a transaction: waiting {}s for the broker ({e}); is the broker up? The state is kept; waiting",
                        since.elapsed().as_secs()
                    );
                }
                Err(e) => return Err(failure(e)),
            }
        }
    }

    /// Aborts the open transaction and produces its records again in a new one.
    fn retry_transaction(&mut self) -> Result<(), SinkError> {
        let fatal = |why: Failure| {
            let (Failure::Fatal(why) | Failure::Abortable(why)) = why;
            io_error(format!(
                "cannot abort the Kafka transaction ({why}); its ticks are produced again after a restart"
            ))
        };
        self.retrying("aborting", || self.producer.abort_transaction(ACK_REPORT)).map_err(fatal)?;
        // The abort purged whatever was still queued: those records report as failed, and
        // every one of them is produced again below.
        self.producer.poll(Duration::ZERO);
        self.producer.context().outstanding.lock().unwrap().clear();
        self.producer.context().forget_failures();
        begin(&self.producer)?;
        let t = self.txn.as_ref().expect("a transaction is open");
        for k in &t.open {
            self.produce(k.tick, k.topic, &k.key, k.value.as_deref())?;
        }
        Ok(())
    }

    /// Aborts the open transaction, if the broker lets it; used on the way out after an error
    /// (an abandoned transaction is aborted by the broker or by the next instance anyway).
    fn abort_quietly(&mut self) {
        if let Some(t) = self.txn.as_mut() {
            if !t.open.is_empty() {
                let _ = self.producer.abort_transaction(Duration::from_secs(5));
                t.open.clear();
                t.first_tick = None;
            }
        }
    }

    /// Produces dead letters (in the order given) without waiting for their acknowledgements;
    /// those an earlier run wrote are skipped.
    fn produce_dead_letters(&mut self, dead: &[DeadLetter]) -> Result<(), SinkError> {
        let topic = OUTPUTS.iter().position(|(n, _)| *n == "dead_letter").expect("dead_letter is an output");
        for d in dead {
            let source = self.sources[d.position.source as usize].clone();
            let (partition, offset) = (d.position.partition as i32, d.position.offset as i64);
            let mark = self.written.dead_letters.get(&(source.clone(), partition));
            if mark.is_some_and(|&m| offset <= m) {
                self.skipped.dead_letters += 1;
                continue;
            }
            self.report_skipped_dead_letters();
            let value = self.encode(|b| format::dead_letter(b, &source, d));
            let key = format!("{source}@{partition}@{offset}");
            self.send(DEAD_LETTER_TICK, topic, &key, Some(&value))?;
            if let Some(t) = self.txn.as_mut() {
                let high = t.progress.dead_letters.entry((source, partition)).or_insert(offset);
                *high = (*high).max(offset);
            }
        }
        self.check()
    }
}

/// Waits at most `timeout` until every queued record is acknowledged. rdkafka's own `flush`
/// serves delivery reports in polls of 100 ms that do not return early, so each call lasts a
/// multiple of 100 ms; a transaction per drained batch waits for its records every time, so
/// it asks in short slices.
fn flush(producer: &BaseProducer<Acks>, timeout: Duration) -> KafkaResult<()> {
    const SLICE: Duration = Duration::from_millis(2);
    let started = Instant::now();
    loop {
        match producer.flush(SLICE) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) if started.elapsed() < timeout => {}
            result => return result,
        }
    }
}

/// Begins a transaction of `producer`.
fn begin(producer: &BaseProducer<Acks>) -> Result<(), SinkError> {
    producer.begin_transaction().map_err(|e| io_error(format!("cannot begin a Kafka transaction: {e}")))
}

/// The idempotent producer of at-least-once delivery (never transactional, whatever -X says).
fn at_least_once_producer(config: &ClientConfig) -> Result<BaseProducer<Acks>, SinkError> {
    let mut config = config.clone();
    config.remove("transactional.id");
    config
        .create_with_context(Acks::default())
        .map_err(|e| io_error(format!("cannot create the Kafka producer: {e}; check --brokers and -X")))
}

/// `init_transactions`, called again a few times while it only timed out (a broker that lacks
/// transactions says so at once).
fn init_transactions(producer: &BaseProducer<Acks>) -> Result<(), String> {
    let mut attempts = 0;
    loop {
        match producer.init_transactions(PROBE_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) if retriable(&e) && attempts < 2 => {
                attempts += 1;
                tracing::warn!("initialising Kafka transactions: {e}; trying again");
            }
            Err(e) => return Err(format!("InitProducerId: {e}")),
        }
    }
}

/// Whether `producer` is fenced: a newer producer initialised its transactional id, and the
/// broker refuses its transactions for good (librdkafka reports it as a fatal error).
fn fenced(producer: &BaseProducer<Acks>) -> bool {
    let fatal = producer.client().fatal_error().map(|(code, _)| code);
    matches!(fatal, Some(Code::Fenced | Code::ProducerFenced | Code::InvalidProducerEpoch))
}

/// A producer with transactional id `id` (not initialised).
fn transactional_producer(config: &ClientConfig, id: &str) -> Result<BaseProducer<Acks>, SinkError> {
    let mut config = config.clone();
    config.set("transactional.id", id);
    config.create_with_context(Acks::default()).map_err(|e| {
        io_error(format!("cannot create the transactional Kafka producer {id}: {e}; check -X and --kafka-config"))
    })
}

/// One real transaction holding this worker's first progress record, under `key`, aborted if
/// any step fails.
fn probe(producer: &BaseProducer<Acks>, topic: &str, key: &str, progress: &[u8]) -> Result<(), String> {
    let result = (|| {
        producer.begin_transaction().map_err(|e| format!("begin: {e}"))?;
        let record =
            BaseRecord::with_opaque_to(topic, DEAD_LETTER_TICK as usize).key(key).payload(progress).partition(0);
        producer.send(record).map_err(|(e, _)| format!("produce to {topic}: {e}"))?;
        flush(producer, PROBE_TIMEOUT).map_err(|e| format!("produce to {topic}: {e}"))?;
        if producer.context().failed.swap(0, Ordering::Relaxed) > 0 {
            let first = producer.context().first_error.lock().unwrap().take().unwrap_or_default();
            return Err(format!("produce: {first}"));
        }
        producer.commit_transaction(PROBE_TIMEOUT).map_err(|e| format!("EndTxn: {e}"))
    })();
    if result.is_err() {
        let _ = producer.abort_transaction(Duration::from_secs(5));
    }
    result
}

impl KafkaSink {
    /// Whether an earlier run wrote the record of `tick` whose key hashes to `hash` (the shard
    /// of the key the dataflow routes the record by, which names the worker that owned it
    /// then); such a record is counted as skipped.
    fn already_written(&mut self, tick: Millis, hash: u64) -> bool {
        let written = self.written.covers(hash, tick);
        if written {
            self.skipped.records += 1;
        }
        written
    }

    /// Produces the records of tick `time` (those an earlier run did not write).
    fn produce_tick(&mut self, time: Millis, batch: &TickBatch) -> Result<(), SinkError> {
        // Only a tick an earlier run reached can hold records it wrote: past it, no key is
        // hashed and nothing is looked up.
        let replayed = self.written.max_tick().is_some_and(|t| time <= t);
        if replayed {
            self.skipped.ticks += 1;
        } else {
            self.report_skipped_ticks();
        }
        let t = Some(time);
        for c in &batch.atp {
            if replayed && self.already_written(time, shard(&c.key)) {
                continue;
            }
            let key = format!("{}@{}", c.key.first(), c.key.second());
            let value = c.value.as_ref().map(|v| self.encode(|b| format::atp(b, t, &c.key, Some(v))));
            self.send(time, 0, &key, value.as_deref())?;
        }
        // low_stock is a stream of transitions, not an upsert table: never tombstoned.
        for tr in &batch.low_stock {
            if replayed && self.already_written(time, shard(&tr.key)) {
                continue;
            }
            let key = format!("{}@{}", tr.key.first(), tr.key.second());
            let value = self.encode(|b| format::transition(b, tr));
            self.send(time, 1, &key, Some(&value))?;
        }
        for c in &batch.order_plan {
            if replayed && self.already_written(time, shard(&c.key)) {
                continue;
            }
            let key = format!("{}@{}", c.key.first(), c.key.second());
            let value = c.value.as_ref().map(|v| self.encode(|b| format::order_plan(b, t, &c.key, Some(v))));
            self.send(time, 2, &key, value.as_deref())?;
        }
        for c in &batch.network_atp {
            if replayed && self.already_written(time, shard(&c.key)) {
                continue;
            }
            let value = c.value.map(|v| self.encode(|b| format::network_atp(b, t, &c.key, Some(v))));
            self.send(time, 3, &c.key, value.as_deref())?;
        }
        if let Some(txn) = self.txn.as_mut() {
            txn.progress.tick = Some(txn.progress.tick.map_or(time, |p| p.max(time)));
        }
        if crash::armed() {
            self.commit_open()?;
        }
        self.check()
    }
}

impl Sink for KafkaSink {
    /// Exactly-once start-up runs in three stages with a barrier between them: 0, worker 0
    /// fences the transactional ids of workers an earlier generation had beyond this one's;
    /// 1, every worker reads what earlier runs wrote (all of them fenced by now); 2, every
    /// worker commits its first progress record, which makes this generation known.
    fn start(&mut self, stage: usize) -> Result<(), SinkError> {
        let result = self.start_transactions(stage);
        self.explain(result)
    }

    fn tick(&mut self, time: Millis, batch: &TickBatch) -> Result<(), SinkError> {
        let result = self.produce_tick(time, batch);
        self.explain(result)
    }

    /// `run` produces dead letters as they arrive; other runs at the end, all at once.
    fn dead_letters(&mut self, dead: &[DeadLetter]) -> Result<(), SinkError> {
        if !self.live_dead_letters {
            return Ok(());
        }
        let result = self.produce_dead_letters(dead);
        self.explain(result)
    }

    fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), SinkError> {
        let result = self.commit_batch(offsets);
        self.explain(result)
    }

    fn unacknowledged(&self) -> Result<Option<Millis>, SinkError> {
        self.explain(self.first_unacknowledged())
    }

    /// Everything must be acknowledged (or committed) before the final offsets are.
    fn finish(&mut self, dead: &[DeadLetter], _: &Snapshot, _: &Summary) -> Result<(), SinkError> {
        let result = if self.live_dead_letters { Ok(()) } else { self.produce_dead_letters(dead) };
        let result = result.and_then(|()| self.flush());
        self.explain(result)
    }
}
