//! Progress records of exactly-once output: what each worker's transactions have made durable,
//! and what a restart (on any worker count) reads back from them to produce every record once.
//!
//! Every worker produces the records of the keys it owns in transactions of its own, each with
//! the worker's progress record on `<prefix>.progress` (key `progress/<worker>`). A record
//! says which generation (one start of the job) wrote it, with how many workers, and the last
//! tick this worker wrote. A key `k` is owned by worker `shard(k) % workers`, so a restart
//! knows, for every key, which earlier worker owned it and how far that worker got: the
//! [`Written`] levels. A new generation copies the levels it started from into its records
//! (`before`), so a worker that has not written yet still tells what its keys had.

use std::collections::BTreeMap;

use dataflows::model::Millis;

/// The progress record format this binary writes (version 1 was one record, key `progress`,
/// of a job whose worker 0 wrote every record).
pub const PROGRESS_VERSION: u64 = 2;

/// The key of worker `worker`'s progress record.
pub fn progress_key(worker: usize) -> String {
    format!("progress/{worker}")
}

/// The ticks the workers of one generation wrote: the records of key `k` are written through
/// `ticks[shard(k) % workers]` (`None`: none written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    /// The generation's worker count.
    pub workers: usize,
    /// Per worker, the last tick it wrote.
    pub ticks: Vec<Option<Millis>>,
}

impl Level {
    /// The last tick written of the key hashing to `hash`.
    fn through(&self, hash: u64) -> Option<Millis> {
        self.ticks.get((hash % self.workers as u64) as usize).copied().flatten()
    }

    fn max(&self) -> Option<Millis> {
        self.ticks.iter().flatten().max().copied()
    }

    /// Whether every key's mark in `self` is at or below its mark in `newer`.
    fn dominated_by(&self, newer: &Level) -> bool {
        let newest_min = newer.ticks.iter().copied().collect::<Option<Vec<_>>>().and_then(|t| t.into_iter().min());
        match (self.max(), newest_min) {
            (None, _) => true,
            (Some(max), Some(min)) => max <= min,
            (Some(_), None) => false,
        }
    }
}

/// One worker's progress record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The generation (one start of the job) that wrote it.
    pub generation: u64,
    /// The generation's worker count.
    pub workers: usize,
    /// The writing worker.
    pub worker: usize,
    /// The last tick this worker wrote in this generation.
    pub tick: Option<Millis>,
    /// What earlier generations wrote, as this generation started (newest first).
    pub before: Vec<Level>,
    /// Per (input topic, partition), the highest input offset whose dead letter is written.
    pub dead_letters: BTreeMap<(String, i32), i64>,
    /// Per (input topic, partition) this worker reads, the next offset to read, committed with
    /// its ticks (for the record: the group's offsets are the ones a restart uses).
    pub offsets: BTreeMap<(String, i32), i64>,
}

/// `topic/partition` keys: a topic name cannot hold `/`.
fn positions_json(map: &BTreeMap<(String, i32), i64>) -> serde_json::Value {
    map.iter().map(|((topic, partition), offset)| (format!("{topic}/{partition}"), serde_json::Value::from(*offset))).collect()
}

fn positions_from(value: &serde_json::Value, field: &str) -> Result<BTreeMap<(String, i32), i64>, String> {
    let Some(object) = value[field].as_object() else {
        return if value[field].is_null() { Ok(BTreeMap::new()) } else { Err(format!("{field} is not an object")) };
    };
    let mut map = BTreeMap::new();
    for (name, offset) in object {
        let parsed = name
            .rsplit_once('/')
            .and_then(|(topic, partition)| Some((topic.to_string(), partition.parse::<i32>().ok()?, offset.as_i64()?)));
        let (topic, partition, offset) =
            parsed.ok_or_else(|| format!("{field}: {name:?}: {offset} is not topic/partition: offset"))?;
        map.insert((topic, partition), offset);
    }
    Ok(map)
}

fn tick_from(value: &serde_json::Value) -> Result<Option<Millis>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        t => t.as_u64().map(Some).ok_or_else(|| format!("tick {t} is not a time")),
    }
}

impl Progress {
    /// The record's value: one JSON object, keys sorted.
    pub fn to_json(&self) -> Vec<u8> {
        let before: Vec<serde_json::Value> = self
            .before
            .iter()
            .map(|l| serde_json::json!({ "ticks": l.ticks, "workers": l.workers }))
            .collect();
        let value = serde_json::json!({
            "before": before,
            "dead_letters": positions_json(&self.dead_letters),
            "generation": self.generation,
            "offsets": positions_json(&self.offsets),
            "tick": self.tick,
            "version": PROGRESS_VERSION,
            "worker": self.worker,
            "workers": self.workers,
        });
        serde_json::to_vec(&value).expect("progress records serialize")
    }

    /// Reads a record's value (version 2; version 1 reads as worker 0 of 1 in generation 0).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let tick = tick_from(&value["tick"])?;
        let dead_letters = positions_from(&value, "dead_letters")?;
        let offsets = positions_from(&value, "offsets")?;
        match value["version"].as_u64() {
            Some(1) => Ok(Progress { workers: 1, tick, dead_letters, offsets, ..Progress::default() }),
            Some(PROGRESS_VERSION) => {
                let count = |field: &str| value[field].as_u64().map(|n| n as usize).ok_or_else(|| format!("{field} is not a count"));
                let (workers, worker) = (count("workers")?, count("worker")?);
                if workers == 0 || worker >= workers {
                    return Err(format!("worker {worker} of {workers}"));
                }
                let generation = value["generation"].as_u64().ok_or("generation is not a count")?;
                let before = levels_from(&value["before"])?;
                Ok(Progress { generation, workers, worker, tick, before, dead_letters, offsets })
            }
            _ => Err(format!("version {}, this stockflow writes {PROGRESS_VERSION}", value["version"])),
        }
    }
}

fn levels_from(value: &serde_json::Value) -> Result<Vec<Level>, String> {
    let Some(levels) = value.as_array() else { return Err("before is not a list".into()) };
    levels
        .iter()
        .map(|l| {
            let workers = l["workers"].as_u64().filter(|&n| n > 0).ok_or("a level without workers")? as usize;
            let ticks: Vec<Option<Millis>> =
                l["ticks"].as_array().ok_or("a level without ticks")?.iter().map(tick_from).collect::<Result<_, _>>()?;
            if ticks.len() != workers {
                return Err(format!("a level of {workers} workers with {} ticks", ticks.len()));
            }
            Ok(Level { workers, ticks })
        })
        .collect()
}

/// What every earlier generation wrote, as their latest progress records say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The latest generation found (0: none, or only a version-1 record).
    pub generation: u64,
    /// Newest first: a key is written through the latest of its marks over the levels.
    pub levels: Vec<Level>,
    /// Per (input topic, partition), the highest input offset whose dead letter is written.
    pub dead_letters: BTreeMap<(String, i32), i64>,
    /// The most workers any generation had: the transactional ids a new one must fence.
    pub workers_seen: usize,
    max_tick: Option<Millis>,
}

impl Written {
    /// Reads the latest record of every progress key: the newest generation's records make its
    /// level (a worker without a record wrote nothing), and it carries the older levels.
    pub fn from_records(records: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        let mut parsed = Vec::new();
        for (key, value) in records {
            let progress = Progress::from_json(value).map_err(|e| format!("record {key:?}: {e}"))?;
            parsed.push(progress);
        }
        let Some(generation) = parsed.iter().map(|p| p.generation).max() else { return Ok(Written::default()) };
        let newest: Vec<&Progress> = parsed.iter().filter(|p| p.generation == generation).collect();
        let workers = newest[0].workers;
        let mut level = Level { workers, ticks: vec![None; workers] };
        let mut dead_letters: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for p in &newest {
            if p.workers != workers {
                return Err(format!("generation {generation} has records of {} and of {workers} workers", p.workers));
            }
            level.ticks[p.worker] = p.tick;
            for (position, &mark) in &p.dead_letters {
                let m = dead_letters.entry(position.clone()).or_insert(mark);
                *m = (*m).max(mark);
            }
        }
        let mut levels = vec![level];
        levels.extend(newest[0].before.iter().cloned());
        Ok(Written::of(generation, levels, dead_letters))
    }

    fn of(generation: u64, levels: Vec<Level>, dead_letters: BTreeMap<(String, i32), i64>) -> Self {
        // A level whose every mark a newer complete level passes tells nothing more.
        let mut kept: Vec<Level> = Vec::new();
        for level in levels {
            if !kept.iter().any(|newer| level.dominated_by(newer)) {
                kept.push(level);
            }
        }
        let workers_seen = kept.iter().map(|l| l.workers).max().unwrap_or(0);
        let max_tick = kept.iter().filter_map(Level::max).max();
        Written { generation, levels: kept, dead_letters, workers_seen, max_tick }
    }

    /// The last tick written of the key hashing to `hash` (`dataflows::shard` of the key the
    /// record is routed by).
    pub fn through(&self, hash: u64) -> Option<Millis> {
        self.levels.iter().filter_map(|l| l.through(hash)).max()
    }

    /// Whether the record of the key hashing to `hash` at `tick` is already written.
    pub fn covers(&self, hash: u64, tick: Millis) -> bool {
        self.max_tick.is_some_and(|max| tick <= max) && self.through(hash).is_some_and(|t| tick <= t)
    }

    /// The last tick any earlier worker wrote.
    pub fn max_tick(&self) -> Option<Millis> {
        self.max_tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64, workers: usize, worker: usize, tick: Option<Millis>, before: Vec<Level>) -> Vec<u8> {
        Progress { generation, workers, worker, tick, before, ..Progress::default() }.to_json()
    }

    #[test]
    fn records_read_back_and_name_what_is_wrong() {
        let mut p = Progress { generation: 3, workers: 2, worker: 1, tick: Some(1_700_000_000_500), ..Default::default() };
        p.dead_letters.insert(("in.v2".into(), 3), 17);
        p.offsets.insert(("a".into(), 1), 7);
        p.before = vec![Level { workers: 3, ticks: vec![Some(5), None, Some(9)] }];
        assert_eq!(Progress::from_json(&p.to_json()).unwrap(), p);
        let v1 = br#"{"dead_letters":{"in/0":4},"offsets":{"in/0":42},"tick":1000,"version":1}"#;
        let old = Progress::from_json(v1).unwrap();
        assert_eq!((old.generation, old.workers, old.worker, old.tick), (0, 1, 0, Some(1000)));
        assert!(Progress::from_json(br#"{"version":9}"#).unwrap_err().contains("version"));
        let bad = br#"{"version":2,"generation":1,"workers":2,"worker":2,"tick":null,"before":[]}"#;
        assert!(Progress::from_json(bad).unwrap_err().contains("worker 2 of 2"));
    }

    #[test]
    fn a_key_is_written_through_the_latest_mark_of_its_owners() {
        // Generation 1 had 3 workers (the second wrote nothing); generation 2 has 2, of which
        // only worker 0 has written since.
        let g1 = Level { workers: 3, ticks: vec![Some(3000), None, Some(5000)] };
        let records: BTreeMap<String, Vec<u8>> = [
            (progress_key(0), record(2, 2, 0, Some(6000), vec![g1.clone()])),
            (progress_key(1), record(2, 2, 1, None, vec![g1.clone()])),
            (progress_key(2), record(1, 3, 2, Some(5000), vec![])),
        ]
        .into();
        let w = Written::from_records(&records).unwrap();
        assert_eq!((w.generation, w.workers_seen, w.max_tick()), (2, 3, Some(6000)));
        // hash 4: worker 0 of 2 (6000) and worker 1 of 3 (none).
        assert_eq!(w.through(4), Some(6000));
        // hash 5: worker 1 of 2 (none) and worker 2 of 3 (5000).
        assert_eq!(w.through(5), Some(5000));
        assert!(w.covers(5, 5000) && !w.covers(5, 5500));
        // hash 1: worker 1 of 2, worker 1 of 3: nothing written.
        assert_eq!(w.through(1), None);
        assert!(!w.covers(1, 0));
    }

    #[test]
    fn dominated_levels_are_dropped() {
        let old = Level { workers: 4, ticks: vec![Some(1000); 4] };
        let records: BTreeMap<String, Vec<u8>> = [
            (progress_key(0), record(5, 2, 0, Some(2000), vec![old.clone()])),
            (progress_key(1), record(5, 2, 1, Some(1500), vec![old])),
        ]
        .into();
        let w = Written::from_records(&records).unwrap();
        assert_eq!(w.levels.len(), 1, "{w:?}");
        assert_eq!(w.workers_seen, 2);
    }
}
