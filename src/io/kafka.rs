//! The one place rdkafka client configurations are built: bootstrap servers, then the
//! `--kafka-config FILE` lines, then every `-X key=value`, so SASL/SSL and any other librdkafka
//! property reach consumers, producers and admin clients alike; and the check that a broker
//! answers before a command starts ([`KafkaClient::check_reachable`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::ConfigError;

/// Kafka connection flags shared by `run`, `batch`, `produce` and `consume`.
#[derive(Args, Debug, Clone, Default)]
pub struct KafkaArgs {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// A librdkafka property, `key=value` (repeatable; wins over --kafka-config).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// A file of librdkafka properties, one `key=value` per line (`#` comments, blank lines ok).
    #[arg(long, value_name = "FILE")]
    pub kafka_config: Option<PathBuf>,
    /// How long to wait for a broker to answer before giving up: `500ms`, `5s`, `1m` (a bare
    /// number is milliseconds).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = connect_timeout)]
    pub connect_timeout: Duration,
}

/// `--connect-timeout`: a duration, as every duration flag takes it.
fn connect_timeout(text: &str) -> Result<Duration, crate::config::value::ValueError> {
    crate::config::value::millis(text).map(Duration::from_millis)
}

impl KafkaArgs {
    /// Every property in the order they apply (later wins): bootstrap servers, file, `-X`;
    /// each one checked by librdkafka (`config::kafka`).
    pub fn properties(&self) -> Result<Vec<(String, String)>, ConfigError> {
        crate::config::kafka::properties(&self.brokers, self.kafka_config.as_deref(), &self.properties)
    }

    /// The validated client settings these flags give.
    pub fn client(&self) -> Result<KafkaClient, ConfigError> {
        Ok(KafkaClient { properties: self.properties()?, connect_timeout: self.connect_timeout })
    }
}

/// Every librdkafka property of a run's clients, read and checked once.
#[derive(Clone, Debug)]
pub struct KafkaClient {
    /// In the order they apply (later wins): bootstrap servers, `--kafka-config`, `-X`.
    pub properties: Vec<(String, String)>,
    /// How long [`KafkaClient::check_reachable`] waits for a broker (`--connect-timeout`).
    pub connect_timeout: Duration,
}

/// No broker could be talked to: nothing can be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// librdkafka refused the client settings themselves.
    #[error("cannot create a Kafka client for {brokers}: {error}")]
    Client {
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's refusal.
        error: KafkaError,
    },
    /// No broker answered a metadata request in time.
    #[error(
        "no Kafka broker answered at {brokers} within {} ms ({reason}). Check that a broker runs there and that \
         this host reaches it (host, port, firewall), that --brokers names its listener, and that \
         security.protocol and the SASL/SSL properties match that listener; --connect-timeout waits longer",
        timeout.as_millis()
    )]
    Unreachable {
        /// The bootstrap servers.
        brokers: String,
        /// How long it waited.
        timeout: Duration,
        /// What librdkafka said went wrong (connection refused, name not resolved, TLS or
        /// SASL failure), else the metadata request's own error.
        reason: String,
    },
}

/// A client context that keeps librdkafka's error reports (instead of logging them) so that a
/// failed check can say why the brokers did not answer.
#[derive(Default)]
struct ErrorRecorder(Mutex<Vec<String>>);

impl ClientContext for ErrorRecorder {
    fn error(&self, error: KafkaError, reason: &str) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // "1/1 brokers are down" follows the reason it happened; the reason is what helps.
        let all_down = matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown));
        // Retries repeat a reason with another "(after N ms in state ...)".
        let reason = reason.split(" (after ").next().unwrap_or(reason);
        if !all_down && seen.len() < 3 && !seen.iter().any(|r| r == reason) {
            seen.push(reason.to_string());
        }
    }

    /// The probe's log lines (a consumer property on a producer, ...) are not the user's
    /// business: the check reports what matters in its own error.
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, _message: &str) {}
}

impl rdkafka::producer::ProducerContext for ErrorRecorder {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

impl KafkaClient {
    /// The bootstrap servers these properties name (the last setting wins).
    pub fn brokers(&self) -> &str {
        self.properties.iter().rev().find(|(k, _)| k == "bootstrap.servers").map_or("", |(_, v)| v.as_str())
    }

    /// Fails with a message naming the brokers and what to check unless a broker answers a
    /// metadata request within the connect timeout. Every command that talks to Kafka calls
    /// this first, so a wrong address or a stopped broker is reported in seconds, not after
    /// the first request's own (much longer) timeout.
    pub fn check_reachable(&self) -> Result<(), ConnectError> {
        let brokers = self.brokers().to_string();
        // A producer: its poll hands librdkafka's error reports, with their text, to the context.
        let probe: rdkafka::producer::BaseProducer<ErrorRecorder> = self
            .client_config(&[])
            .create_with_context(ErrorRecorder::default())
            .map_err(|error| ConnectError::Client { brokers: brokers.clone(), error })?;
        let timeout = self.connect_timeout;
        let Err(error) = probe.client().fetch_metadata(None, timeout) else { return Ok(()) };
        // The reports queued while the request waited.
        probe.poll(Duration::from_millis(50));
        let seen = probe.context().0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reason = if seen.is_empty() { error.to_string() } else { seen.join("; ") };
        Err(ConnectError::Unreachable { brokers, timeout, reason })
    }

    /// A client configuration with every property applied, plus `extra` defaults that the
    /// user's own properties override.
    pub fn client_config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in extra {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }
}

/// A topic stockflow creates when it is missing.
pub struct TopicSpec<'a> {
    /// The topic's name.
    pub name: &'a str,
    /// Partitions to create it with.
    pub partitions: i32,
    /// Upsert tables are compacted (latest value per key; tombstones delete); streams are not.
    pub compacted: bool,
}

/// Creates the topics that do not exist yet. Failures are logged, not fatal: a broker may
/// forbid topic creation and have them made by an operator, or create them on first use; the
/// produce or metadata calls that follow report what is really missing. Topics the cluster
/// metadata already lists are not asked for: a restart needs no admin request, and a broker
/// without CreateTopics (librdkafka's mock cluster) is not waited on for 10 s.
pub fn create_topics(config: &ClientConfig, topics: &[TopicSpec<'_>]) {
    let admin: AdminClient<DefaultClientContext> = match config.create() {
        Ok(admin) => admin,
        Err(e) => {
            tracing::warn!("cannot create a Kafka admin client ({e}); topics are used as they are");
            return;
        }
    };
    let timeout = Some(Duration::from_secs(10));
    // All topics, not each by name: a request naming a topic may create it with the broker's
    // defaults (auto.create.topics.enable), without the settings asked for here.
    let existing: Vec<String> = match admin.inner().fetch_metadata(None, timeout) {
        Ok(metadata) => metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name().to_string())
            .collect(),
        Err(_) => Vec::new(),
    };
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|t| !existing.iter().any(|e| e == t.name))
        .map(|t| {
            let topic = NewTopic::new(t.name, t.partitions.max(1), TopicReplication::Fixed(1));
            if t.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    if new.is_empty() {
        return;
    }
    let opts = AdminOptions::new().operation_timeout(timeout).request_timeout(timeout);
    match block_on(admin.create_topics(&new, &opts)) {
        Err(e) => tracing::warn!("could not create topics ({e}); using them as they are"),
        Ok(results) => {
            for r in results {
                if let Err((name, code)) = r {
                    if code != RDKafkaErrorCode::TopicAlreadyExists {
                        tracing::warn!("could not create topic {name} ({code}); using it as it is");
                    }
                }
            }
        }
    }
}

/// How long reading one partition to its end may take before [`latest_records`] gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The latest value of each key in `topic[partition]` as `consumer` sees it, read from the end
/// back until `complete` says the records found are enough (or the partition is read whole);
/// with `isolation.level=read_committed` (librdkafka's default) records of aborted or still
/// open transactions are not seen. `consumer` must have `enable.partition.eof=true`. Windows
/// of growing size back from the end, so a compacted topic whose compaction lags behind is not
/// read whole. A tombstone removes its key; a partition that does not exist reads as empty.
pub fn latest_records(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    complete: impl Fn(&BTreeMap<String, Vec<u8>>) -> bool,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let (low, high) = match consumer.fetch_watermarks(topic, partition, READ_TIMEOUT) {
        Ok(watermarks) => watermarks,
        // Nothing was ever written there (a broker that creates topics on first use).
        Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic,
        )) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read the offsets of {topic}[{partition}]")),
    };
    let mut window = 64;
    loop {
        let from = (high - window).max(low);
        if from >= high {
            return Ok(BTreeMap::new());
        }
        let latest = read_from(consumer, (topic, partition), from)?;
        let values: BTreeMap<String, Vec<u8>> = latest.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        if from == low || complete(&values) {
            return Ok(values);
        }
        window *= 4;
    }
}

/// The latest value (a tombstone: `None`) of each key of `topic[partition]` from offset `from`
/// to the end.
fn read_from(consumer: &BaseConsumer, (topic, partition): (&str, i32), from: i64) -> Result<BTreeMap<String, Option<Vec<u8>>>> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    let mut latest = BTreeMap::new();
    let read = loop {
        if std::time::Instant::now() > deadline {
            break Err(anyhow::anyhow!("no end of {topic}[{partition}] within {}s", READ_TIMEOUT.as_secs()));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                latest.insert(key, m.payload().map(<[u8]>::to_vec));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
            Some(Err(e)) => break Err(anyhow::anyhow!("cannot read {topic}[{partition}]: {e}")),
        }
    };
    consumer.unassign()?;
    read.map(|()| latest)
}

/// Polls a future to completion on this thread (admin calls are the only futures used).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sources_win_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.properties");
        std::fs::write(&file, "# sasl\nsecurity.protocol=SASL_SSL\n\nsasl.mechanism = PLAIN\n").unwrap();
        let args = KafkaArgs {
            brokers: "b:1".into(),
            properties: vec!["sasl.mechanism=SCRAM-SHA-512".into()],
            kafka_config: Some(file.clone()),
            connect_timeout: Duration::from_secs(5),
        };
        let config = args.client().unwrap().client_config(&[("security.protocol", "PLAINTEXT")]);
        assert_eq!(config.get("bootstrap.servers"), Some("b:1"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        std::fs::write(&file, "oops\n").unwrap();
        let err = args.properties().unwrap_err().to_string();
        assert!(err.contains("k.properties:1"), "{err}");
    }
}
