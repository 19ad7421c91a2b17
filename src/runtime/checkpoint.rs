//! Checkpoints of the input side (ledgers, read positions, clocks, counts): the file format,
//! the checkpoint directory, the operator that writes a worker's share, and the record of
//! where each worker's sources stood at every input time (see docs/checkpoints.md).
//!
//! A checkpoint at logical time `R` holds the state of "every tick before `R` applied, nothing
//! at or after it": each worker's ledgers, the messages read before `R` whose tick is later
//! (pending), and per partition the next offset and the clock. Outputs are not saved: they are
//! a function of the ledgers, and a restart re-creates them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dataflows::clock::{PartitionClock, Ticks};
use dataflows::ledger::Saved;
use dataflows::model::{Event, Millis};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;

use crate::io::source::SourceStats;

/// The first bytes of every share file. The `\r\n` catches a text-mode copy.
pub const MAGIC: &[u8; 8] = b"SFCKPT\r\n";
/// The version of the layout below; a binary reads every version up to its own.
pub const FORMAT_VERSION: u32 = 1;

/// Where one input partition stood at the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The next offset to read: every message before it is applied or pending.
    pub next: i64,
    /// SPEC §2's clock of the partition (its `max_prev`).
    pub clock: PartitionClock,
}

/// A share's header, stored as JSON so that `head -c 4096 FILE` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The writing binary's version, for the record.
    pub stockflow_version: String,
    /// The checkpoint's logical time R: every tick before it is applied, none at or after.
    pub at: Millis,
    /// The writing worker's index.
    pub worker: usize,
    /// How many workers wrote this checkpoint (and so how many shares make it complete).
    pub workers: usize,
    /// The input topics, sorted (their index is the source id in positions).
    pub topics: Vec<String>,
    /// The tick length the state was computed with.
    pub tick_ms: Millis,
    /// The lateness the clocks were computed with.
    pub lateness_ms: Millis,
    /// The window end the writer ran with (a later batch may extend it).
    pub until: Option<Millis>,
    /// Wall-clock time of writing, in milliseconds since the epoch.
    pub written_at_ms: u64,
    /// The partitions this worker read.
    pub partitions: Vec<SavedPartition>,
    /// This worker's source counts through the checkpoint.
    pub stats: SourceStats,
    /// Ledger entries in the body (keys, orders, pending messages, counts).
    pub entries: u64,
    /// Keys in the body.
    pub keys: u64,
    /// Length of the body in bytes.
    pub body_bytes: u64,
    /// CRC-32 (IEEE) of the body.
    pub body_crc32: u32,
}

impl Header {
    /// The fields every share of worker `worker` of a run repeats; the rest is filled in when
    /// a share is encoded.
    pub fn template(worker: usize, workers: usize, topics: &[String], ticks: Ticks, lateness_ms: Millis) -> Self {
        Header {
            format_version: FORMAT_VERSION,
            stockflow_version: env!("CARGO_PKG_VERSION").to_string(),
            at: 0,
            worker,
            workers,
            topics: topics.to_vec(),
            tick_ms: ticks.tick_ms,
            lateness_ms,
            until: ticks.until,
            written_at_ms: 0,
            partitions: Vec::new(),
            stats: SourceStats::default(),
            entries: 0,
            keys: 0,
            body_bytes: 0,
            body_crc32: 0,
        }
    }
}

/// A share's body, encoded with bincode 1 (fixed-width little-endian integers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// The worker's ledger entries.
    pub ledger: Vec<Saved>,
    /// `batch`: valid messages read whose effective time lay beyond the window; a later window
    /// may hold them.
    pub held: Vec<Event>,
}

/// A checkpoint refused on loading, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes are not a valid share.
    #[error("{path}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn damaged(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Damaged { path: path.to_path_buf(), reason: reason.into() }
}

/// The directory of checkpoint `at`.
fn checkpoint_dir(root: &Path, at: Millis) -> PathBuf {
    // Zero-padded, so names sort like times.
    root.join(format!("at-{at:020}"))
}

fn share_name(worker: usize, workers: usize) -> String {
    format!("share-{worker}-of-{workers}.ckpt")
}

/// Encodes a share: `MAGIC`, format version (u32 LE), header length (u32 LE), the header (JSON),
/// the header's CRC-32 (u32 LE), then the body.
pub fn encode(header: &mut Header, body: &Body) -> Vec<u8> {
    let body_bytes = bincode::serialize(body).expect("checkpoint bodies serialize");
    header.format_version = FORMAT_VERSION;
    header.body_bytes = body_bytes.len() as u64;
    header.body_crc32 = crc32fast::hash(&body_bytes);
    let header_bytes = serde_json::to_vec(header).expect("checkpoint headers serialize");
    let mut out = Vec::with_capacity(24 + header_bytes.len() + body_bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&crc32fast::hash(&header_bytes).to_le_bytes());
    out.extend_from_slice(&body_bytes);
    out
}

/// Splits a share file into its header and body bytes, checking magic, version, lengths and
/// both checksums.
fn split<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Header, &'a [u8]), CheckpointError> {
    let word = |at: usize| -> Result<u32, CheckpointError> {
        let b = bytes.get(at..at + 4).ok_or_else(|| damaged(path, "truncated (header cut short)"))?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err(damaged(path, "not a stockflow checkpoint share (bad magic bytes)"));
    }
    let version = word(8)?;
    if version == 0 || version > FORMAT_VERSION {
        return Err(damaged(path, format!("format version {version}; this binary reads 1..={FORMAT_VERSION}")));
    }
    let header_len = word(12)? as usize;
    let header_bytes = bytes.get(16..16 + header_len).ok_or_else(|| damaged(path, "truncated (header cut short)"))?;
    if word(16 + header_len)? != crc32fast::hash(header_bytes) {
        return Err(damaged(path, "header checksum mismatch"));
    }
    let header: Header =
        serde_json::from_slice(header_bytes).map_err(|e| damaged(path, format!("header unreadable: {e}")))?;
    let body = &bytes[20 + header_len..];
    if body.len() as u64 != header.body_bytes {
        return Err(damaged(path, format!("truncated: body has {} of {} bytes", body.len(), header.body_bytes)));
    }
    if crc32fast::hash(body) != header.body_crc32 {
        return Err(damaged(path, "body checksum mismatch"));
    }
    Ok((header, body))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    Ok(bytes)
}

/// Reads and checks one share file.
pub fn read_share(path: &Path) -> Result<(Header, Body), CheckpointError> {
    let bytes = read_bytes(path)?;
    let (header, body) = split(path, &bytes)?;
    let body = bincode::deserialize(body).map_err(|e| damaged(path, format!("body unreadable: {e}")))?;
    Ok((header, body))
}

/// Writes `bytes` to `path` through a temporary name in the same directory, synced, so that a
/// crash leaves either no file or the whole file under `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("ckpt.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// The checkpoints found in a directory: time -> (workers -> shares present).
fn scan(root: &Path) -> std::io::Result<BTreeMap<Millis, BTreeMap<usize, Vec<PathBuf>>>> {
    let mut found: BTreeMap<Millis, BTreeMap<usize, Vec<PathBuf>>> = BTreeMap::new();
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(at) = name.strip_prefix("at-").and_then(|t| t.parse::<Millis>().ok()) else { continue };
        let slot = found.entry(at).or_default();
        for share in fs::read_dir(entry.path())? {
            let share = share?;
            let name = share.file_name().to_string_lossy().into_owned();
            let parts: Option<(usize, usize)> = name
                .strip_prefix("share-")
                .and_then(|r| r.strip_suffix(".ckpt"))
                .and_then(|r| r.split_once("-of-"))
                .and_then(|(w, n)| Some((w.parse().ok()?, n.parse().ok()?)));
            if let Some((worker, workers)) = parts.filter(|(w, n)| w < n) {
                let shares = slot.entry(workers).or_default();
                shares.push(share.path());
                let _ = worker;
            }
        }
    }
    Ok(found)
}

/// Complete checkpoints (every share of some worker count present), newest first.
fn complete(root: &Path) -> std::io::Result<Vec<(Millis, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    for (at, by_workers) in scan(root)?.into_iter().rev() {
        for (workers, mut shares) in by_workers.into_iter().rev() {
            if shares.len() == workers {
                shares.sort();
                out.push((at, shares));
                break;
            }
        }
    }
    Ok(out)
}

/// The checkpoint a run starts from.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// Its logical time R.
    pub at: Millis,
    /// Its share files, sorted by name.
    pub shares: Vec<PathBuf>,
    /// Every share's header, in the same order.
    pub headers: Vec<Header>,
}

/// Picks the newest complete checkpoint whose every share passes its checks; a damaged one is
/// reported and the next older one tried. Fails when checkpoints exist but none is usable, so
/// that a run never silently starts over from an empty state.
pub fn choose(root: &Path) -> anyhow::Result<Option<Chosen>> {
    let candidates = complete(root).map_err(|e| anyhow::anyhow!("cannot read --checkpoint-dir {}: {e}", root.display()))?;
    let mut refused = Vec::new();
    'next: for (at, shares) in candidates {
        let mut headers = Vec::new();
        for path in &shares {
            match read_bytes(path).and_then(|bytes| split(path, &bytes).map(|(h, _)| h)) {
                Ok(header) if header.at == at => headers.push(header),
                Ok(header) => {
                    refused.push(format!("{}: header says R={}, directory says {at}", path.display(), header.at));
                    continue 'next;
                }
                Err(e) => {
                    tracing_line(&format!(
                        "checkpoint at {at} refused: {e}; falling back to the previous complete checkpoint"
                    ));
                    refused.push(e.to_string());
                    continue 'next;
                }
            }
        }
        return Ok(Some(Chosen { at, shares, headers }));
    }
    if refused.is_empty() {
        return Ok(None);
    }
    anyhow::bail!(
        "no usable checkpoint in {}: {}. Move the directory away to start from the committed offsets instead",
        root.display(),
        refused.join("; ")
    )
}

/// One diagnostic line on stderr.
fn tracing_line(text: &str) {
    tracing::warn!("{text}");
}

/// Removes what is no longer needed: complete checkpoints older than the `keep` newest complete
/// ones, and incomplete ones older than the newest complete one (a crash mid-write).
pub fn prune(root: &Path, keep: usize) -> std::io::Result<()> {
    let complete = complete(root)?;
    let Some(&(newest, _)) = complete.first() else { return Ok(()) };
    let kept: Vec<Millis> = complete.iter().take(keep).map(|(at, _)| *at).collect();
    let oldest_kept = *kept.last().expect("at least one");
    for at in scan(root)?.into_keys() {
        let stale_complete = at < oldest_kept;
        let stale_partial = at < newest && !kept.contains(&at);
        if stale_complete || stale_partial {
            fs::remove_dir_all(checkpoint_dir(root, at))?;
        }
    }
    Ok(())
}

/// Where a worker's sources stood when its input advanced to `at`: every message sent before
/// is covered by `partitions` and `stats`, and `held` counts the beyond-window messages kept.
#[derive(Clone, Debug)]
pub struct Cut {
    /// The input time advanced to.
    pub at: Millis,
    /// The partitions' positions and clocks.
    pub partitions: Vec<SavedPartition>,
    /// Source counts of everything sent so far.
    pub stats: SourceStats,
    /// How many of [`Shared::held`] were read before.
    pub held: usize,
}

/// What a worker's loop and its checkpoint writer share.
pub struct Shared {
    /// Where checkpoints go.
    pub root: PathBuf,
    /// The header fields every share of this run repeats.
    pub template: Header,
    /// Cuts, oldest first; the loop adds one per input advance and drops those no checkpoint
    /// can need any more.
    pub cuts: Vec<Cut>,
    /// `batch`: beyond-window messages read so far.
    pub held: Vec<Event>,
    /// Shares written, waiting for their outputs to be acknowledged before they count.
    pub written: Vec<(Millis, PathBuf, Vec<u8>)>,
    /// A write that failed, for the loop to report.
    pub error: Option<String>,
    /// Per share encoded and not yet logged as written: its bytes, keys and encoding time.
    pub encoded: BTreeMap<Millis, (usize, u64, std::time::Duration)>,
}

impl Shared {
    /// Nothing written yet.
    pub fn new(root: PathBuf, template: Header) -> Self {
        Shared { root, template, cuts: Vec::new(), held: Vec::new(), written: Vec::new(), error: None, encoded: BTreeMap::new() }
    }

    /// The cut of checkpoint `at`: the first advance to `at` or beyond.
    fn cut(&self, at: Millis) -> Option<&Cut> {
        self.cuts.iter().find(|c| c.at >= at)
    }

    /// Drops the cuts no checkpoint at or after `at` needs.
    pub fn forget_before(&mut self, at: Millis) {
        let keep_from = self.cuts.iter().position(|c| c.at >= at).unwrap_or(self.cuts.len());
        // Keep the last cut before `at` too: it is the answer for an `at` it does not reach.
        self.cuts.drain(..keep_from.saturating_sub(1));
    }

    /// Writes the shares whose outputs (every tick before their time) are acknowledged:
    /// `acknowledged` is the least time whose outputs may still be missing.
    pub fn publish(&mut self, acknowledged: Millis) -> std::io::Result<Vec<(Millis, std::time::Duration)>> {
        let mut published = Vec::new();
        let mut waiting = Vec::new();
        for (at, path, bytes) in std::mem::take(&mut self.written) {
            if at <= acknowledged {
                let started = Instant::now();
                fs::create_dir_all(path.parent().expect("share paths have a directory"))?;
                write_atomically(&path, &bytes)?;
                published.push((at, started.elapsed()));
            } else {
                waiting.push((at, path, bytes));
            }
        }
        self.written = waiting;
        Ok(published)
    }
}

/// Writes this worker's share of each checkpoint whose ledger entries arrive on `saved` (two
/// ledgers, each ending with `Saved::End`): the body is encoded here, and written to disk by
/// [`Shared::publish`] once the ticks before it are acknowledged. Probed by `probe`, so that a
/// finished dataflow has every share encoded.
pub fn writer(saved: dataflows::Stream<'_, Saved>, shared: Rc<RefCell<Shared>>, probe: &ProbeHandle<Millis>) {
    // Two ledgers answer each request: the per-key one and the purchase-order one.
    const LEDGERS: usize = 2;
    saved
        .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "CheckpointWriter", |_, _| {
            // Per checkpoint time: the entries so far, the end markers seen, the entries they
            // announce, and when the first arrived.
            let mut open: BTreeMap<Millis, (Vec<Saved>, usize, u64, Instant)> = BTreeMap::new();
            move |input, _output| {
                input.for_each(|cap, data| {
                    // The ledgers emit a request's entries at its time.
                    let Some(&at) = cap.least() else { return };
                    let slot = open.entry(at).or_insert_with(|| (Vec::new(), 0, 0, Instant::now()));
                    for entry in data.drain(..) {
                        match entry {
                            Saved::End(_, entries) => {
                                slot.1 += 1;
                                slot.2 += entries;
                            }
                            entry => slot.0.push(entry),
                        }
                    }
                    // Complete once both ledgers' ends and every entry they announce are here,
                    // in whatever order the containers came.
                    if slot.1 == LEDGERS && slot.0.len() as u64 == slot.2 {
                        let (ledger, _, _, started) = open.remove(&at).expect("present");
                        let mut s = shared.borrow_mut();
                        if let Err(e) = encode_share(&mut s, at, ledger, started) {
                            s.error.get_or_insert(e);
                        }
                    }
                });
            }
        })
        .probe_with(probe);
}

fn encode_share(s: &mut Shared, at: Millis, ledger: Vec<Saved>, started: Instant) -> Result<(), String> {
    // A worker stopped before its input reached `at` has no share of it: the checkpoint stays
    // incomplete, and is never loaded.
    let Some(cut) = s.cut(at).cloned() else { return Ok(()) };
    let keys = ledger.iter().filter(|e| matches!(e, Saved::Key(..))).count() as u64;
    let mut header = s.template.clone();
    header.at = at;
    header.written_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    header.partitions = cut.partitions;
    header.stats = cut.stats;
    header.entries = ledger.len() as u64;
    header.keys = keys;
    let body = Body { ledger, held: s.held[..cut.held].to_vec() };
    let bytes = encode(&mut header, &body);
    let path = checkpoint_dir(&s.root, at).join(share_name(header.worker, header.workers));
    s.encoded.insert(at, (bytes.len(), keys, started.elapsed()));
    s.written.push((at, path, bytes));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let mut h = Header::template(0, 1, &["t".to_string()], Ticks { tick_ms: 1000, until: None }, 0);
        h.at = 5000;
        h
    }

    #[test]
    fn a_share_round_trips_and_any_flipped_or_missing_byte_is_refused() {
        let body = Body {
            ledger: vec![dataflows::ledger::Saved::Count(dataflows::ledger::Counter::Orphan, 3)],
            held: Vec::new(),
        };
        let mut h = header();
        let bytes = encode(&mut h, &body);
        let path = Path::new("share-0-of-1.ckpt");
        let (read, raw) = split(path, &bytes).expect("valid");
        assert_eq!(read, h);
        assert_eq!(bincode::deserialize::<Body>(raw).unwrap(), body);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(split(path, &bad).is_err(), "flipping byte {i} went unnoticed");
        }
        for len in 0..bytes.len() {
            assert!(split(path, &bytes[..len]).is_err(), "truncation to {len} bytes went unnoticed");
        }
    }

    #[test]
    fn a_share_waits_for_every_entry_its_end_markers_announce() {
        use dataflows::ledger::Counter;
        use timely::dataflow::operators::Input;
        // timely's ok_err may hand over the containers of one time in any order: here both
        // ledgers' end markers arrive a step before the entries they end.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let entries = timely::execute_directly(move |worker| {
            let probe = ProbeHandle::new();
            let shared = Rc::new(RefCell::new(Shared::new(root.clone(), header())));
            let cut = Cut { at: 5000, partitions: Vec::new(), stats: SourceStats::default(), held: 0 };
            shared.borrow_mut().cuts.push(cut);
            let mut input = worker.dataflow::<Millis, _, _>(|scope| {
                let (input, saved) = scope.new_input::<Vec<Saved>>();
                writer(saved, Rc::clone(&shared), &probe);
                input
            });
            input.advance_to(5000);
            input.send(Saved::End(5000, 2));
            input.send(Saved::End(5000, 1));
            input.flush();
            (0..5).for_each(|_| {
                worker.step();
            });
            for counter in [Counter::Orphan, Counter::Duplicate, Counter::Absorbed] {
                input.send(Saved::Count(counter, 1));
            }
            drop(input);
            worker.step_while(|| !probe.done());
            let written = std::mem::take(&mut shared.borrow_mut().written);
            written.iter().map(|(_, path, bytes)| split(path, bytes).unwrap().0.entries).collect::<Vec<_>>()
        });
        assert_eq!(entries, vec![3], "one share, with every entry");
    }

    #[test]
    fn the_newest_intact_complete_checkpoint_is_chosen_and_old_ones_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |at: Millis, worker: usize, workers: usize| {
            let mut h = header();
            h.at = at;
            h.worker = worker;
            h.workers = workers;
            let path = checkpoint_dir(root, at).join(share_name(worker, workers));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            write_atomically(&path, &encode(&mut h, &Body::default())).unwrap();
            path
        };
        write(1000, 0, 1);
        write(2000, 0, 2);
        write(2000, 1, 2);
        let newest = write(3000, 0, 1);
        write(4000, 0, 2); // incomplete
        assert_eq!(choose(root).unwrap().unwrap().at, 3000);
        // A truncated newest share: fall back to the previous complete checkpoint.
        let bytes = fs::read(&newest).unwrap();
        fs::write(&newest, &bytes[..bytes.len() - 1]).unwrap();
        let chosen = choose(root).unwrap().unwrap();
        assert_eq!((chosen.at, chosen.shares.len()), (2000, 2));
        prune(root, 2).unwrap();
        let left: Vec<Millis> = scan(root).unwrap().into_keys().collect();
        assert_eq!(left, vec![2000, 3000, 4000]);
    }
}

/// `stockflow checkpoint show`: prints a checkpoint for an audit or to compare two runs.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// A `--checkpoint-dir` (its newest usable checkpoint is shown) or one `at-…` directory in it.
    dir: PathBuf,
    /// Print only the ledger entries, merged over the shares and sorted: the part that does not
    /// depend on the worker count or on how far the readers had read, so two runs' checkpoints
    /// at the same time compare with `diff`.
    #[arg(long)]
    ledger_only: bool,
}

/// Prints each share's header as one JSON line (`{"file": …, "header": …}`), then every ledger entry,
/// pending message and held message as one JSON line each, sorted.
pub fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let shares: Vec<PathBuf> = if is_at_dir(&args.dir) {
        let mut shares: Vec<PathBuf> = fs::read_dir(&args.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
            .collect();
        shares.sort();
        shares
    } else {
        match choose(&args.dir)? {
            Some(chosen) => chosen.shares,
            None => anyhow::bail!("{}: no complete checkpoint in this directory", args.dir.display()),
        }
    };
    let mut lines = Vec::new();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for path in &shares {
        let (header, body) = read_share(path)?;
        if !args.ledger_only {
            writeln!(out, "{}", serde_json::json!({ "header": header, "file": path.display().to_string() }))?;
        }
        for entry in body.ledger {
            match entry {
                Saved::End(..) => {}
                // Counts are per share; their sum is what the run reports.
                Saved::Count(counter, n) => *counts.entry(serde_json::to_string(&counter)?).or_default() += n,
                Saved::Pending(_) if args.ledger_only => {}
                other => lines.push(serde_json::to_string(&other)?),
            }
        }
        if !args.ledger_only {
            for event in body.held {
                lines.push(serde_json::to_string(&serde_json::json!({ "Held": event }))?);
            }
        }
    }
    for (counter, n) in counts {
        lines.push(format!("{{\"Count\":[{counter},{n}]}}"));
    }
    lines.sort();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

fn is_at_dir(dir: &Path) -> bool {
    dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("at-"))
}
