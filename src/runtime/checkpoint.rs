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

use crate::io::fs::named;
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

/// (worker, workers) of a file named `share-<worker>-of-<workers>.ckpt`.
fn parse_share_name(name: &str) -> Option<(usize, usize)> {
    let (w, n) = name.strip_prefix("share-")?.strip_suffix(".ckpt")?.split_once("-of-")?;
    Some((w.parse().ok()?, n.parse().ok()?))
}

/// Bytes before the header: magic, format version, header length.
const PREFIX_BYTES: u64 = 16;
/// Bytes around the header: the prefix and the header's CRC-32.
const FRAME_BYTES: u64 = PREFIX_BYTES + 4;
/// The largest header a share may announce. A header lists its worker's partitions (about 100
/// bytes each), so this leaves room for 160k of them while refusing a length field that would
/// have a reader allocate gigabytes.
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Encodes a share: `MAGIC`, format version (u32 LE), header length (u32 LE), the header (JSON),
/// the header's CRC-32 (u32 LE), then the body.
pub fn encode(header: &mut Header, body: &Body) -> Vec<u8> {
    let body_bytes = bincode::serialize(body).expect("checkpoint bodies serialize");
    header.format_version = FORMAT_VERSION;
    header.body_bytes = body_bytes.len() as u64;
    header.body_crc32 = crc32fast::hash(&body_bytes);
    let header_bytes = serde_json::to_vec(header).expect("checkpoint headers serialize");
    frame(FORMAT_VERSION, &header_bytes, &body_bytes)
}

/// The bytes of a share file around an encoded header and body.
fn frame(version: u32, header_bytes: &[u8], body_bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_BYTES as usize + header_bytes.len() + body_bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(header_bytes);
    out.extend_from_slice(&crc32fast::hash(header_bytes).to_le_bytes());
    out.extend_from_slice(body_bytes);
    out
}

/// What a file that is not a regular one is, for the refusal.
fn file_kind(path: &Path, meta: &fs::Metadata) -> String {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    let link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    format!("{}{kind}, not a share file (shares are regular files stockflow writes)", if link { "a symlink to " } else { "" })
}

/// Opens a share for reading and returns it with its length. A fifo, a device or a directory
/// (also behind a symlink) is refused before it is opened: reading `/dev/zero` never ends and
/// opening a fifo blocks. `O_NONBLOCK` keeps a path swapped for a fifo in between from
/// blocking; the opened file's own type is checked again.
fn open_share(path: &Path) -> Result<(File, u64), CheckpointError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CheckpointError::Io { path: path.to_path_buf(), source };
    let meta = fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(damaged(path, file_kind(path, &meta)));
    }
    let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(damaged(path, file_kind(path, &meta)));
    }
    Ok((file, meta.len()))
}

/// Fills `buf` from `input`; the end of the file first means the share is cut short.
fn read_part(path: &Path, input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), CheckpointError> {
    input.read_exact(buf).map_err(|source| match source.kind() {
        std::io::ErrorKind::UnexpectedEof => damaged(path, format!("truncated ({what} cut short)")),
        _ => CheckpointError::Io { path: path.to_path_buf(), source },
    })
}

/// Reads and checks the prefix and the header of the share at `path` from `input` (at its
/// start), `size` bytes long in all: magic, version, a header length the file can hold, the
/// header's checksum, and that the header agrees with itself, the prefix, the file's name and
/// directory, and the file's size. Reads nothing of the body.
fn read_head(path: &Path, input: &mut impl Read, size: u64) -> Result<Header, CheckpointError> {
    let mut magic = [0u8; 8];
    if size < 8 || read_part(path, input, &mut magic, "magic").is_err() || &magic != MAGIC {
        return Err(damaged(path, "not a stockflow checkpoint share (bad magic bytes)"));
    }
    let mut words = [0u8; 8];
    read_part(path, input, &mut words, "header")?;
    let version = u32::from_le_bytes(words[..4].try_into().expect("4 bytes"));
    if version == 0 || version > FORMAT_VERSION {
        return Err(damaged(path, format!("format version {version}; this binary reads 1..={FORMAT_VERSION}")));
    }
    let header_len = u64::from(u32::from_le_bytes(words[4..].try_into().expect("4 bytes")));
    if header_len > MAX_HEADER_BYTES {
        return Err(damaged(path, format!("header length {header_len} is beyond any share's ({MAX_HEADER_BYTES} at most)")));
    }
    if FRAME_BYTES + header_len > size {
        return Err(damaged(path, format!("truncated (header of {header_len} bytes cut short: the file has {size})")));
    }
    let mut header_bytes = vec![0u8; header_len as usize + 4];
    read_part(path, input, &mut header_bytes, "header")?;
    let (header_bytes, crc) = header_bytes.split_at(header_len as usize);
    if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != crc32fast::hash(header_bytes) {
        return Err(damaged(path, "header checksum mismatch"));
    }
    let header: Header =
        serde_json::from_slice(header_bytes).map_err(|e| damaged(path, format!("header unreadable: {e}")))?;
    check_header(path, &header, version, size - FRAME_BYTES - header_len)?;
    Ok(header)
}

/// The header's claims that can be checked without the body, each refused by name: a header
/// whose checksum was recomputed after an edit must not restart a run from a wrong state.
fn check_header(path: &Path, h: &Header, version: u32, body_len: u64) -> Result<(), CheckpointError> {
    let refuse = |reason: String| Err(damaged(path, reason));
    if h.format_version != version {
        return refuse(format!("the header says format_version {} but the file's prefix says {version}", h.format_version));
    }
    if h.workers == 0 {
        return refuse("the header says workers: 0 (a checkpoint has one share per worker, at least one)".into());
    }
    if h.worker >= h.workers {
        return refuse(format!("the header says worker {} of {} workers (worker indices are 0..{0})", h.worker, h.workers));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    match parse_share_name(name) {
        None => return refuse("the file name is not share-<worker>-of-<workers>.ckpt".into()),
        Some((w, n)) if (w, n) != (h.worker, h.workers) => {
            return refuse(format!("the file name says worker {w} of {n}, the header worker {} of {}", h.worker, h.workers))
        }
        Some(_) => {}
    }
    let dir_at = path.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("at-"));
    if let Some(at) = dir_at.and_then(|t| t.parse::<Millis>().ok()).filter(|&at| at != h.at) {
        return refuse(format!("the header says R={}, its directory at-{at:020}", h.at));
    }
    if h.tick_ms == 0 {
        return refuse("the header says tick_ms: 0".into());
    }
    if let Some(p) = h.partitions.iter().find(|p| !h.topics.contains(&p.topic)) {
        return refuse(format!("the header lists partition {}[{}] of a topic not in its topics {:?}", p.topic, p.partition, h.topics));
    }
    if h.keys > h.entries {
        return refuse(format!("the header says {} keys but only {} entries", h.keys, h.entries));
    }
    if body_len != h.body_bytes {
        let what = if body_len < h.body_bytes { "truncated" } else { "bytes after the body" };
        return refuse(format!("{what}: body has {body_len} of {} bytes", h.body_bytes));
    }
    Ok(())
}

/// Checks a body against its header: checksum, a decoding that uses every byte (and allocates
/// no more than the bytes allow), and the entry and key counts the header announces.
fn check_body(path: &Path, header: &Header, body: &[u8]) -> Result<Body, CheckpointError> {
    use bincode::Options;
    if crc32fast::hash(body) != header.body_crc32 {
        return Err(damaged(path, "body checksum mismatch"));
    }
    // The encoding of `bincode::serialize`, with a limit and no trailing bytes.
    let decoded: Body = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(body.len() as u64)
        .deserialize(body)
        .map_err(|e| damaged(path, format!("body unreadable: {e}")))?;
    let keys = decoded.ledger.iter().filter(|e| matches!(e, Saved::Key(..))).count() as u64;
    if (decoded.ledger.len() as u64, keys) != (header.entries, header.keys) {
        return Err(damaged(
            path,
            format!(
                "the header says {} entries and {} keys, the body holds {} and {keys}",
                header.entries,
                header.keys,
                decoded.ledger.len()
            ),
        ));
    }
    Ok(decoded)
}

/// Checks a body without keeping it: its checksum, read in bounded pieces, and the entry
/// count its first eight bytes announce (bincode's length of the ledger).
fn verify_body(path: &Path, header: &Header, input: &mut impl Read) -> Result<(), CheckpointError> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = header.body_bytes;
    let mut first = true;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        read_part(path, input, &mut buf[..n], "body")?;
        if first && n >= 8 {
            let entries = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
            if entries != header.entries {
                let reason = format!("the header says {} entries, the body holds {entries}", header.entries);
                return Err(damaged(path, reason));
            }
        }
        first = false;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    if hasher.finalize() != header.body_crc32 {
        return Err(damaged(path, "body checksum mismatch"));
    }
    Ok(())
}

/// Reads and checks one share's header and body checksum, holding at most a header and a
/// small buffer in memory.
fn read_header(path: &Path) -> Result<Header, CheckpointError> {
    let (file, size) = open_share(path)?;
    let mut input = std::io::BufReader::new(file);
    let header = read_head(path, &mut input, size)?;
    verify_body(path, &header, &mut input)?;
    Ok(header)
}

/// Reads and checks one share file: the header first, then exactly the body it announces.
pub fn read_share(path: &Path) -> Result<(Header, Body), CheckpointError> {
    let (file, size) = open_share(path)?;
    let mut input = std::io::BufReader::new(file);
    let header = read_head(path, &mut input, size)?;
    // `read_head` checked the body's length against the file's size: this is what is on disk.
    let mut body = vec![0u8; header.body_bytes as usize];
    read_part(path, &mut input, &mut body, "body")?;
    let body = check_body(path, &header, &body)?;
    Ok((header, body))
}

/// Writes `bytes` to `path` through a temporary name in the same directory, synced, so that a
/// crash leaves either no file or the whole file under `path`. Errors name the file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("ckpt.tmp");
    let mut file = crate::io::fs::create(&tmp)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(named("write", &tmp))?;
    fs::rename(&tmp, path).map_err(named("rename into place", path))?;
    if let Some(parent) = path.parent() {
        File::open(parent).and_then(|d| d.sync_all()).map_err(named("sync the directory", parent))?;
    }
    Ok(())
}

/// The checkpoints found in a directory: time -> (workers -> shares present).
fn scan(root: &Path) -> std::io::Result<BTreeMap<Millis, BTreeMap<usize, Vec<PathBuf>>>> {
    let mut found: BTreeMap<Millis, BTreeMap<usize, Vec<PathBuf>>> = BTreeMap::new();
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(named("list", root)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(named("list", root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(at) = name.strip_prefix("at-").and_then(|t| t.parse::<Millis>().ok()) else { continue };
        let slot = found.entry(at).or_default();
        let dir = entry.path();
        for share in crate::io::fs::read_dir(&dir)? {
            let share = share.map_err(named("list", &dir))?;
            let name = share.file_name().to_string_lossy().into_owned();
            if let Some((_, workers)) = parse_share_name(&name).filter(|(w, n)| w < n) {
                slot.entry(workers).or_default().push(share.path());
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

/// The headers of one checkpoint's shares, each checked alone and all against the first: they
/// must describe one run (time, topics, clock settings).
fn read_headers(at: Millis, shares: &[PathBuf]) -> Result<Vec<Header>, CheckpointError> {
    let mut headers: Vec<Header> = Vec::new();
    for path in shares {
        let header = read_header(path)?;
        let run = |h: &Header| (h.at, h.workers, h.topics.clone(), h.tick_ms, h.lateness_ms, h.until);
        if header.at != at {
            return Err(damaged(path, format!("the header says R={}, its directory at-{at:020}", header.at)));
        }
        if let Some(first) = headers.first().filter(|first| run(first) != run(&header)) {
            let reason = format!(
                "its header (topics {:?}, tick_ms {}, lateness_ms {}, until {:?}) disagrees with worker {}'s share",
                header.topics, header.tick_ms, header.lateness_ms, header.until, first.worker
            );
            return Err(damaged(path, reason));
        }
        headers.push(header);
    }
    Ok(headers)
}

/// Picks the newest complete checkpoint whose every share passes its checks; a damaged one is
/// reported and the next older one tried. Fails when checkpoints exist but none is usable, so
/// that a run never silently starts over from an empty state.
pub fn choose(root: &Path) -> anyhow::Result<Option<Chosen>> {
    let candidates = complete(root).map_err(|e| anyhow::anyhow!("cannot read --checkpoint-dir {}: {e}", root.display()))?;
    let mut refused = Vec::new();
    for (at, shares) in candidates {
        match read_headers(at, &shares) {
            Ok(headers) => return Ok(Some(Chosen { at, shares, headers })),
            Err(e) => {
                tracing::warn!("checkpoint at {at} refused: {e}; falling back to the previous complete checkpoint");
                refused.push(e.to_string());
            }
        }
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
            let dir = checkpoint_dir(root, at);
            fs::remove_dir_all(&dir).map_err(named("remove", &dir))?;
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
                crate::io::fs::create_dir_all(path.parent().expect("share paths have a directory"))?;
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

    /// Checks a share held in memory as `read_share` checks a file.
    fn split(path: &Path, bytes: &[u8]) -> Result<(Header, Body), CheckpointError> {
        let mut input = bytes;
        let header = read_head(path, &mut input, bytes.len() as u64)?;
        let body = check_body(path, &header, input)?;
        Ok((header, body))
    }

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
        h.entries = 1;
        let bytes = encode(&mut h, &body);
        let path = Path::new("share-0-of-1.ckpt");
        let (read, decoded) = split(path, &bytes).expect("valid");
        assert_eq!(read, h);
        assert_eq!(decoded, body);
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

    /// Writes a share into `root/at-…/NAME` whose header JSON `edit` changed, with both
    /// checksums recomputed (what a careless tool or an attacker leaves): only the checks on
    /// what the header says can refuse it.
    fn forge(root: &Path, at: Millis, name: &str, version: u32, body: &Body, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        let (worker, workers) = parse_share_name(name).unwrap_or((0, 1));
        let mut h = header();
        (h.at, h.worker, h.workers) = (at, worker, workers);
        h.entries = body.ledger.len() as u64;
        h.keys = body.ledger.iter().filter(|e| matches!(e, Saved::Key(..))).count() as u64;
        let bytes = encode(&mut h, body);
        let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let mut json: serde_json::Value = serde_json::from_slice(&bytes[16..16 + header_len]).unwrap();
        edit(&mut json);
        let forged = frame(version, &serde_json::to_vec(&json).unwrap(), &bytes[20 + header_len..]);
        let path = checkpoint_dir(root, at).join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, forged).unwrap();
        path
    }

    fn counts() -> Body {
        let ledger = [dataflows::ledger::Counter::Orphan, dataflows::ledger::Counter::Absorbed]
            .map(|c| Saved::Count(c, 2))
            .to_vec();
        Body { ledger, held: Vec::new() }
    }

    /// The refusal of `path`, by `read_share` (restore, `explain`, `show`) and by `choose`,
    /// which must fall back to the intact checkpoint at 1000 below it.
    fn refusal(root: &Path, path: &Path) -> String {
        let intact = forge(root, 1000, "share-0-of-1.ckpt", FORMAT_VERSION, &counts(), |_| {});
        assert!(read_share(&intact).is_ok());
        let err = read_share(path).expect_err("a forged share was read").to_string();
        assert!(err.starts_with(&path.display().to_string()), "the refusal names the file: {err}");
        let chosen = choose(root).unwrap().expect("the intact checkpoint");
        assert_eq!(chosen.at, 1000, "{err}");
        err
    }

    #[test]
    fn headers_that_contradict_themselves_the_file_or_the_body_are_refused_by_name() {
        let set = |key: &'static str, value: serde_json::Value| move |h: &mut serde_json::Value| h[key] = value;
        let cases: Vec<(&str, Box<dyn Fn(&Path) -> PathBuf>, &str)> = vec![
            ("workers 0", Box::new(|r| forge(r, 2000, "share-0-of-1.ckpt", 1, &counts(), set("workers", 0.into()))), "workers: 0"),
            ("worker 5 of 1", Box::new(|r| forge(r, 2000, "share-0-of-1.ckpt", 1, &counts(), set("worker", 5.into()))), "worker 5 of 1"),
            (
                "another share's header",
                Box::new(|r| {
                    forge(r, 2000, "share-0-of-1.ckpt", 1, &counts(), |h| {
                        h["worker"] = 1.into();
                        h["workers"] = 2.into();
                    })
                }),
                "the file name says worker 0 of 1",
            ),
            ("unknown format_version", Box::new(|r| forge(r, 2000, "share-0-of-1.ckpt", 1, &counts(), set("format_version", 7.into()))), "format_version 7"),
            ("a later prefix version", Box::new(|r| forge(r, 2000, "share-0-of-1.ckpt", 2, &counts(), |_| {})), "format version 2"),
            ("198 entries in 16 bytes", Box::new(|r| forge(r, 2000, "share-0-of-1.ckpt", 1, &Body::default(), set("entries", 198.into()))), "198 entries"),
            ("another directory's time", Box::new(|r| forge(r, 2000, "share-0-of-1.ckpt", 1, &counts(), set("at", 3000.into()))), "R=3000"),
            ("tick_ms 0", Box::new(|r| forge(r, 2000, "share-0-of-1.ckpt", 1, &counts(), set("tick_ms", 0.into()))), "tick_ms: 0"),
            ("a body longer than the file", Box::new(|r| forge(r, 2000, "share-0-of-1.ckpt", 1, &counts(), set("body_bytes", 1_000_000_000.into()))), "truncated"),
        ];
        for (what, make, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = make(dir.path());
            let err = refusal(dir.path(), &path);
            assert!(err.contains(expected), "{what}: {err}");
        }
        // Keys the body does not hold: only decoding the body can tell, so `read_share` refuses it.
        let dir = tempfile::tempdir().unwrap();
        let path = forge(dir.path(), 2000, "share-0-of-1.ckpt", 1, &counts(), set("keys", 1.into()));
        let err = read_share(&path).unwrap_err().to_string();
        assert!(err.contains("1 keys") && err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn a_header_length_beyond_the_file_is_refused_without_allocating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = checkpoint_dir(dir.path(), 2000).join("share-0-of-1.ckpt");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(b"{}");
        fs::write(&path, &bytes).unwrap();
        let err = read_share(&path).unwrap_err().to_string();
        assert!(err.contains("header length 4294967295"), "{err}");
        bytes[12..16].copy_from_slice(&1000u32.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = read_share(&path).unwrap_err().to_string();
        assert!(err.contains("header of 1000 bytes cut short"), "{err}");
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_before_they_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let share = |at: Millis| {
            let path = checkpoint_dir(dir.path(), at).join("share-0-of-1.ckpt");
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            path
        };
        // Read whole, /dev/zero is endless; opened for reading, a fifo blocks until a writer comes.
        let zero = share(2000);
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let fifo = share(3000);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let directory = share(4000);
        fs::create_dir(&directory).unwrap();
        for (path, kind) in [(&zero, "a symlink to a character device"), (&fifo, "a fifo"), (&directory, "a directory")] {
            let err = read_share(path).unwrap_err().to_string();
            assert!(err.starts_with(&path.display().to_string()) && err.contains(kind), "{err}");
        }
        let err = choose(dir.path()).unwrap_err().to_string();
        for path in [&zero, &fifo, &directory] {
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }

    #[test]
    fn write_failures_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the checkpoint directory should be: fails for root too.
        let root = dir.path().join("not-a-directory");
        fs::write(&root, b"").unwrap();
        let mut shared = Shared::new(root.clone(), header());
        let path = checkpoint_dir(&root, 5000).join(share_name(0, 1));
        shared.written.push((5000, path, vec![1, 2, 3]));
        let err = shared.publish(Millis::MAX).unwrap_err().to_string();
        assert!(err.contains(&checkpoint_dir(&root, 5000).display().to_string()), "{err}");
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
        let mut shares: Vec<PathBuf> = crate::io::fs::read_dir(&args.dir)?
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
