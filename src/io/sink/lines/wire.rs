//! How a [`Run`] crosses between processes: its lines, names and lengths LZ4-compressed.
//!
//! A run travels to worker 0's merge, and timely serializes it only when that worker is in
//! another process. Its lines are JSON of one table sorted by key, so consecutive lines share
//! most of their bytes: LZ4 takes a tick's lines to ~0.2 of their size at ~0.9 GB/s (the
//! generated workload's four tables), where the plain run cost ~150 bytes per input event
//! between two processes, most of what crossed (docs/benchmarks.md).
//!
//! A large run's sealed blocks (`Run::seal`) are blocks of this layout already: they cross as
//! they are, and the receiver keeps them compressed.
//!
//! Timely measures a message (`serialized_size`) and then writes it, each a full `Serialize`;
//! the compressed form is therefore made by the first and kept in the run for the second.
//! Runs that stay inside a process are never serialized and never compressed.
//!
//! The layout, after bincode's `tick` and `table`, is one byte string: `varint(records)`, then
//! three sections (each record's line, first name and second name lengths as varints; the
//! names; the lines), each `varint(plain length)` followed by blocks of at most [`BLOCK`] plain
//! bytes as `varint(compressed length) ++ LZ4 block`. Blocks keep the sender's scratch space
//! and the receiver's allocations proportional to what actually arrives. Reading refuses
//! anything inconsistent (a [`RunWireError`]), which timely's channel reports by ending the
//! process, as for the events' wire layout (`dataflows::wire`).

use std::borrow::Cow;
use std::sync::OnceLock;

use dataflows::model::Millis;
use dataflows::wire::{put_varint, take_varint, WireError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Run;

/// The most plain bytes one LZ4 block holds.
pub(super) const BLOCK: usize = 1 << 20;

/// Why bytes from a peer are not a run.
#[derive(Debug, thiserror::Error)]
pub enum RunWireError {
    /// A length or varint is malformed, or the bytes end early.
    #[error("run on the wire: {0}")]
    Wire(#[from] WireError),
    /// An LZ4 block does not decompress to its stated size.
    #[error("run on the wire: an LZ4 block is corrupt")]
    Block,
    /// The record lengths do not add up to the sections' sizes.
    #[error("run on the wire: record lengths disagree with the sections")]
    Lengths,
}

/// The compressed form of a run, made by the first serialization and reused by the second.
#[derive(Default)]
pub(super) struct Shipped(OnceLock<Vec<u8>>);

impl Shipped {
    /// The run changed: a compressed form made before is stale.
    pub(super) fn forget(&mut self) {
        self.0.take();
    }
}

// A copy is a new run that has not been serialized: it starts without the cache.
impl Clone for Shipped {
    fn clone(&self) -> Self {
        Shipped::default()
    }
}

// The cache is a function of the run's contents, so it never makes two runs differ.
impl PartialEq for Shipped {
    fn eq(&self, _: &Shipped) -> bool {
        true
    }
}

impl Eq for Shipped {}

impl std::fmt::Debug for Shipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Shipped(compressed)" } else { "Shipped(none)" })
    }
}

/// What bincode writes and reads for a run. Read from a peer's message, `packed` borrows the
/// message's bytes rather than copying them.
#[derive(Serialize, Deserialize)]
struct OnWire<'a> {
    tick: Option<Millis>,
    table: u8,
    #[serde(borrow, with = "serde_bytes")]
    packed: Cow<'a, [u8]>,
}

impl Serialize for Run {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let packed = Cow::Borrowed(&self.shipped.0.get_or_init(|| pack(self))[..]);
        OnWire { tick: self.tick, table: self.table, packed }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Run {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Run, D::Error> {
        let OnWire { tick, table, packed } = OnWire::deserialize(deserializer)?;
        unpack(Run::new(tick, table as usize), &packed).map_err(serde::de::Error::custom)
    }
}

/// The run's records, names and lines as the compressed byte string.
fn pack(run: &Run) -> Vec<u8> {
    let mut lengths = Vec::with_capacity(run.len() * 4);
    for i in 0..run.len() {
        let (start, end) = run.line_span(i);
        let (first, second) = run.key(i);
        put_varint(&mut lengths, (end - start) as u64);
        put_varint(&mut lengths, first.len() as u64);
        put_varint(&mut lengths, second.len() as u64);
    }
    let mut out = Vec::new();
    put_varint(&mut out, run.len() as u64);
    let mut scratch = Vec::new();
    for section in [&lengths[..], &run.names] {
        put_varint(&mut out, section.len() as u64);
        put_blocks(&mut out, &mut scratch, section);
    }
    // The lines: a large run's sealed blocks are blocks of this layout already.
    put_varint(&mut out, run.plain_len() as u64);
    for block in &run.sealed {
        put_varint(&mut out, block.len() as u64);
        out.extend_from_slice(block);
    }
    put_blocks(&mut out, &mut scratch, &run.bytes);
    out
}

/// Appends `plain` as blocks of at most [`BLOCK`] bytes, each LZ4-compressed after its length.
fn put_blocks(out: &mut Vec<u8>, scratch: &mut Vec<u8>, plain: &[u8]) {
    for block in plain.chunks(BLOCK) {
        scratch.resize(lz4_flex::block::get_maximum_output_size(block.len()), 0);
        let size = lz4_flex::block::compress_into(block, scratch).expect("the scratch has the maximum size");
        put_varint(out, size as u64);
        out.extend_from_slice(&scratch[..size]);
    }
}

/// Fills `run` (empty, with its tick and table) from the compressed byte string.
fn unpack(mut run: Run, mut packed: &[u8]) -> Result<Run, RunWireError> {
    let records = take_varint(&mut packed)?;
    let lengths = section(&mut packed)?;
    run.names = section(&mut packed)?;
    (run.sealed, run.bytes) = lines_section(&mut packed)?;
    if !packed.is_empty() {
        return Err(WireError::Trailing(packed.len()).into());
    }
    let mut lengths = &lengths[..];
    // Sized once, as bincode sized the plain vectors (a record's lengths take 3 bytes or more,
    // so a stated count the section does not back reserves nothing more).
    let capacity = usize::try_from(records).unwrap_or(usize::MAX).min(lengths.len() / 3);
    run.ends.reserve_exact(capacity);
    run.name_ends.reserve_exact(capacity);
    run.first_lens.reserve_exact(capacity);
    let (mut line_end, mut name_end) = (0u64, 0u64);
    for _ in 0..records {
        let line = take_varint(&mut lengths)?;
        let (first, second) = (take_varint(&mut lengths)?, take_varint(&mut lengths)?);
        let first_len = u32::try_from(first).map_err(|_| RunWireError::Lengths)?;
        line_end = line_end.checked_add(line).ok_or(RunWireError::Lengths)?;
        name_end = [first, second].into_iter().try_fold(name_end, u64::checked_add).ok_or(RunWireError::Lengths)?;
        if line_end > run.plain_len() as u64 || name_end > run.names.len() as u64 {
            return Err(RunWireError::Lengths);
        }
        run.ends.push(line_end);
        run.name_ends.push(name_end);
        run.first_lens.push(first_len);
    }
    if !lengths.is_empty() || line_end != run.plain_len() as u64 || name_end != run.names.len() as u64 {
        return Err(RunWireError::Lengths);
    }
    Ok(run)
}

/// Reads the lines' section. A large run's whole blocks stay compressed, as the sender's
/// were (`Run::seal`): worker 0 receives every process's run of the setup tick, each a line
/// a key. Each is decompressed once here all the same, to refuse a corrupt one.
#[allow(clippy::type_complexity)]
fn lines_section(packed: &mut &[u8]) -> Result<(Vec<Box<[u8]>>, Vec<u8>), RunWireError> {
    let plain = take_len(packed)?;
    let mut sealed = Vec::new();
    if plain > super::SEAL_AFTER {
        let mut scratch = vec![0; BLOCK];
        while plain - sealed.len() * BLOCK >= BLOCK {
            let block = take_block(packed)?;
            decompress(block, &mut scratch)?;
            sealed.push(Box::from(block));
        }
    }
    // The rest (all of a small run's lines) is kept plain.
    let bytes = plain_blocks(packed, plain - sealed.len() * BLOCK)?;
    Ok((sealed, bytes))
}

/// Reads one section: its plain length, then its blocks.
fn section(packed: &mut &[u8]) -> Result<Vec<u8>, RunWireError> {
    let plain = take_len(packed)?;
    plain_blocks(packed, plain)
}

/// A section's plain length.
fn take_len(packed: &mut &[u8]) -> Result<usize, RunWireError> {
    usize::try_from(take_varint(packed)?).map_err(|_| RunWireError::Lengths)
}

/// Reads and decompresses the blocks that hold `plain` bytes.
fn plain_blocks(packed: &mut &[u8], plain: usize) -> Result<Vec<u8>, RunWireError> {
    let mut out = Vec::new();
    while out.len() < plain {
        let block = take_block(packed)?;
        // Grown a block at a time: a stated length the blocks do not back allocates nothing.
        let start = out.len();
        out.resize(start + (plain - start).min(BLOCK), 0);
        decompress(block, &mut out[start..])?;
    }
    Ok(out)
}

/// Takes one block (`varint(compressed length) ++ LZ4 block`) off the front of `packed`.
fn take_block<'p>(packed: &mut &'p [u8]) -> Result<&'p [u8], RunWireError> {
    let size = take_len(packed)?;
    let block = packed.get(..size).ok_or(WireError::Truncated)?;
    *packed = &packed[size..];
    Ok(block)
}

/// Decompresses `block` into the whole of `out`, which must be exactly its plain size.
fn decompress(block: &[u8], out: &mut [u8]) -> Result<(), RunWireError> {
    match lz4_flex::block::decompress_into(block, out) {
        Ok(written) if written == out.len() => Ok(()),
        _ => Err(RunWireError::Block),
    }
}

#[cfg(test)]
mod tests {
    use dataflows::Key;
    use proptest::prelude::*;

    use super::*;

    fn run_of(lines: &[(String, String)]) -> Run {
        let mut run = Run::new(Some(7000), 2);
        for (sku, loc) in lines {
            let key = Key::new(sku, loc);
            let line = format!("{{\"tick\":7000,\"sku\":\"{sku}\",\"loc\":\"{loc}\",\"qty\":12}}\n");
            run.push(&key, |out| out.extend_from_slice(line.as_bytes()));
        }
        run
    }

    fn keys(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("K{:06}", i / 100), format!("S{:04}", i % 100))).collect()
    }

    #[test]
    fn a_run_crosses_whole_and_compressed() {
        // Blocks: 30,000 lines of ~50 bytes are ~1.5 MB, two blocks of lines.
        let run = run_of(&keys(30_000));
        let bytes = bincode::serialize(&run).unwrap();
        assert!(bytes.len() * 3 < run.bytes.len(), "{} bytes for {} of lines", bytes.len(), run.bytes.len());
        let back: Run = bincode::deserialize(&bytes).unwrap();
        assert_eq!((back.tick, back.table), (Some(7000), 2));
        assert_eq!((&back.bytes, &back.names, &back.ends), (&run.bytes, &run.names, &run.ends));
        assert_eq!((&back.name_ends, &back.first_lens), (&run.name_ends, &run.first_lens));
        // Measured, then written: the second serialization reuses the first's compression.
        assert_eq!(bincode::serialized_size(&run).unwrap() as usize, bytes.len());
        assert_eq!(bincode::serialize(&run).unwrap(), bytes);
    }

    #[test]
    fn a_sealed_run_crosses_with_its_blocks_as_they_are() {
        // ~48 bytes a line: past SEAL_AFTER, so most of the lines are sealed.
        let run = run_of(&keys(super::super::SEAL_AFTER / 40));
        assert!(!run.sealed.is_empty());
        let bytes = bincode::serialize(&run).unwrap();
        let back: Run = bincode::deserialize(&bytes).unwrap();
        // The receiver keeps the sender's blocks.
        assert_eq!((&back.sealed, &back.bytes), (&run.sealed, &run.bytes));
        assert_eq!(back.plain_len(), run.plain_len());
        // Damaged inside a sealed block, or cut short: refused or read, never a panic.
        let mut damaged = bytes.clone();
        damaged[bytes.len() / 2] ^= 0x5a;
        let _ = bincode::deserialize::<Run>(&damaged);
        assert!(bincode::deserialize::<Run>(&bytes[..bytes.len() / 2]).is_err());
        assert_eq!((&back.names, &back.ends, &back.name_ends), (&run.names, &run.ends, &run.name_ends));
    }

    #[test]
    fn a_run_grown_after_crossing_crosses_again_whole() {
        let mut run = run_of(&keys(3));
        let before: Run = bincode::deserialize(&bincode::serialize(&run).unwrap()).unwrap();
        assert_eq!(before.len(), 3);
        let key = Key::new("L", "S");
        run.push(&key, |out| out.extend_from_slice(b"{}\n"));
        let after: Run = bincode::deserialize(&bincode::serialize(&run).unwrap()).unwrap();
        assert_eq!((after.len(), &after.bytes), (4, &run.bytes));
    }

    #[test]
    fn an_empty_run_crosses() {
        let run = Run::new(None, 3);
        let back: Run = bincode::deserialize(&bincode::serialize(&run).unwrap()).unwrap();
        assert_eq!(back, run);
        assert!(back.is_empty());
    }

    proptest! {
        #[test]
        fn any_run_crosses_unchanged(lines in proptest::collection::vec(("[a-z\u{e9}]{0,5}", "[A-Z0-9]{0,4}"), 0..40)) {
            let run = run_of(&lines);
            let back: Run = bincode::deserialize(&bincode::serialize(&run).unwrap()).unwrap();
            prop_assert_eq!(back, run);
        }

        #[test]
        fn damaged_bytes_are_refused_or_read_never_a_panic(
            cut in 0usize..400,
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..4),
        ) {
            let mut bytes = bincode::serialize(&run_of(&keys(20))).unwrap();
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] ^= value;
            }
            bytes.truncate(cut.min(bytes.len()));
            if let Ok(run) = bincode::deserialize::<Run>(&bytes) {
                // Whatever is read is a consistent run: every record's spans lie inside it.
                for i in 0..run.len() {
                    let (start, end) = run.line_span(i);
                    prop_assert!(start <= end && end <= run.bytes.len());
                    let _ = run.key(i);
                }
            }
        }
    }
}
