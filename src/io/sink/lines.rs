//! Output records formatted where they are computed: each worker formats the records of the keys
//! it owns into [`Run`]s (one per output table, sorted by key), and one writer merges the
//! workers' runs of a tick into the bytes of the output files: no record is formatted on a
//! worker that does not own it, and the writer only compares keys and copies bytes. A run
//! larger than [`SEAL_AFTER`] (the setup tick's and the final snapshot's, a line per key)
//! keeps its lines LZ4-compressed in blocks as they fill, and the writer decompresses each
//! block once as it copies.

use dataflows::model::Millis;
use dataflows::Key;

use super::{SinkError, Summary, TickBatch};
use crate::io::format;

mod wire;

/// The four output tables, in file order.
pub const TABLES: [&str; 4] = ["atp", "low_stock", "order_plan", "network_atp"];

/// One worker's records of one table at one tick (or of the final snapshot), formatted as
/// JSON lines and sorted by key. Between processes it crosses compressed (`wire`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// The tick, or `None` for the final snapshot.
    pub tick: Option<Millis>,
    /// Index into [`TABLES`].
    pub table: u8,
    /// Each record's key (`network_atp`: the sku and an empty name), in order: its two names'
    /// bytes one after the other. A `Key` per record took 48 bytes then (24 now; names ~12), and the
    /// setup tick's run holds one record per key beside the tick's changes.
    names: Vec<u8>,
    /// Where each record's names end in `names`.
    name_ends: Vec<u64>,
    /// The length of each record's first name (SPEC §1: at most 64 bytes; a name comes from a
    /// line of at most 1 MiB, so it always fits).
    first_lens: Vec<u32>,
    /// Where each record's line ends in the run's lines (the sealed blocks', then `bytes`).
    ends: Vec<u64>,
    /// A large run's first lines, sealed: blocks of [`wire::BLOCK`] bytes each, LZ4-compressed
    /// as they fill ([`SEAL_AFTER`]). A block may end inside a line.
    sealed: Vec<Box<[u8]>>,
    /// The lines after the sealed blocks, each ending in `\n`. Private, as every field: changed
    /// only by [`Run::push_name_bytes`] (behind `push` and `push_names`), which drops a
    /// compressed form made before.
    bytes: Vec<u8>,
    /// The run compressed, once it has been serialized.
    shipped: wire::Shipped,
}

impl Run {
    /// An empty run of `table` at `tick` (`None`: the final snapshot).
    pub fn new(tick: Option<Millis>, table: usize) -> Self {
        Run { tick, table: table as u8, ..Run::default() }
    }

    /// An empty run of the final snapshot's `table`.
    pub fn snapshot(table: usize) -> Self {
        Run::new(None, table)
    }

    /// Appends one record of `key`: `write` formats its line.
    pub fn push(&mut self, key: &Key, write: impl FnOnce(&mut Vec<u8>)) {
        self.push_name_bytes(key.parts_bytes(), write);
    }

    /// Appends one record of the key (`first`, `second`): `write` formats its line.
    pub fn push_names(&mut self, (first, second): (&str, &str), write: impl FnOnce(&mut Vec<u8>)) {
        self.push_name_bytes((first.as_bytes(), second.as_bytes()), write);
    }

    /// Appends one record of the key whose names' bytes are (`first`, `second`).
    fn push_name_bytes(&mut self, (first, second): (&[u8], &[u8]), write: impl FnOnce(&mut Vec<u8>)) {
        self.shipped.forget();
        write(&mut self.bytes);
        self.ends.push(self.plain_len() as u64);
        if self.bytes.len() >= SEAL_AFTER || (!self.sealed.is_empty() && self.bytes.len() >= wire::BLOCK) {
            self.seal();
        }
        self.names.extend_from_slice(first);
        self.names.extend_from_slice(second);
        self.name_ends.push(self.names.len() as u64);
        self.first_lens.push(first.len() as u32);
    }

    /// Compresses the whole blocks of `bytes` into `sealed`, keeping the rest (less than a
    /// block) in `bytes`.
    fn seal(&mut self) {
        let whole = self.bytes.len() / wire::BLOCK * wire::BLOCK;
        for block in self.bytes[..whole].chunks(wire::BLOCK) {
            self.sealed.push(lz4_flex::block::compress(block).into_boxed_slice());
        }
        self.bytes.drain(..whole);
        // The room reserved for the lines before sealing began is not needed any more.
        self.bytes.shrink_to(2 * wire::BLOCK);
    }

    /// The length of the run's lines, sealed or not.
    fn plain_len(&self) -> usize {
        self.sealed.len() * wire::BLOCK + self.bytes.len()
    }

    /// Gives `out` the run's lines from `from` to `to` in order, decompressing the sealed
    /// blocks they cross into `block` (which keeps the last one: `(its index, its bytes)`).
    fn read<E>(
        &self,
        (from, to): (usize, usize),
        block: &mut (usize, Vec<u8>),
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let sealed = self.sealed.len() * wire::BLOCK;
        let mut at = from;
        while at < to.min(sealed) {
            let index = at / wire::BLOCK;
            if block.0 != index || block.1.is_empty() {
                block.1.resize(wire::BLOCK, 0);
                let size = lz4_flex::block::decompress_into(&self.sealed[index], &mut block.1)
                    .expect("a block this run sealed decompresses");
                assert_eq!(size, wire::BLOCK, "a sealed block holds a whole block");
                block.0 = index;
            }
            let end = to.min((index + 1) * wire::BLOCK);
            out(&block.1[at - index * wire::BLOCK..end - index * wire::BLOCK])?;
            at = end;
        }
        if at < to {
            out(&self.bytes[at - sealed..to - sealed])?;
        }
        Ok(())
    }

    /// Record `i`'s key, as bytes: they compare as the names do.
    fn key(&self, i: usize) -> (&[u8], &[u8]) {
        let start = if i == 0 { 0 } else { self.name_ends[i - 1] as usize };
        let (first_end, end) = (start + self.first_lens[i] as usize, self.name_ends[i] as usize);
        (&self.names[start..first_end], &self.names[first_end..end])
    }

    /// How many records the run holds.
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where line `i` starts and ends in `bytes`.
    fn line_span(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        (start, self.ends[i] as usize)
    }

    /// Whether the run holds no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// A tick's (already sorted) records as one run per table; empty tables are left out. The
/// records are freed as they are formatted (the ATP changes a container at a time).
pub fn runs_of_tick(time: Millis, batch: TickBatch) -> Vec<Run> {
    let t = Some(time);
    let mut runs: Vec<Run> = (0..TABLES.len()).map(|table| Run::new(t, table)).collect();
    let atp = (batch.atp.len(), batch.atp);
    fill(&mut runs[0], atp, |run, c| run.push(&c.key, |out| format::atp(out, t, &c.key, c.value.as_ref())));
    let low_stock = (batch.low_stock.len(), batch.low_stock);
    fill(&mut runs[1], low_stock, |run, tr| run.push(&tr.key, |out| format::transition(out, &tr)));
    let order_plan = (batch.order_plan.len(), batch.order_plan);
    fill(&mut runs[2], order_plan, |run, c| {
        run.push(&c.key, |out| format::order_plan(out, t, &c.key, c.value.as_ref()))
    });
    let network_atp = (batch.network_atp.len(), batch.network_atp);
    fill(&mut runs[3], network_atp, |run, c| {
        run.push_names((&c.key, ""), |out| format::network_atp(out, t, &c.key, c.value))
    });
    runs.retain(|run| !run.is_empty());
    runs
}

/// A run's lines past this many bytes are sealed ([`Run::seal`]): only the setup tick's and
/// the final snapshot's runs are this large (a line per key), and held plain they were the
/// largest part of the setup tick's peak after the key table (docs/benchmarks.md).
const SEAL_AFTER: usize = 64 << 20;

/// Lines formatted before a run's bytes are sized from their average length.
const SAMPLE_LINES: usize = 256;

/// Formats each of `records` (`len` of them) into `run` with `push`, which takes them by
/// value (each is freed once formatted), sizing the run's vectors once: the setup
/// tick's run is the size of the state, and grown by doubling it held up to twice its lines'
/// bytes at the heap's peak (heaptrack at 1M keys: 159 MB for ~80 MB of lines). The bytes
/// are sized from the first lines' average length with an eighth to spare.
pub fn fill<T>(run: &mut Run, (len, records): (usize, impl IntoIterator<Item = T>), mut push: impl FnMut(&mut Run, T)) {
    run.name_ends.reserve_exact(len);
    run.first_lens.reserve_exact(len);
    run.ends.reserve_exact(len);
    let mut records = records.into_iter();
    let sample = len.min(SAMPLE_LINES);
    records.by_ref().take(sample).for_each(|record| push(run, record));
    let rest = len - sample;
    if rest > 0 {
        let room = |used: usize| {
            let average = used / sample + 1;
            rest * average + rest * average / 8
        };
        // Past SEAL_AFTER the lines are sealed as they fill: the bytes never hold more than
        // SEAL_AFTER and one line, far shorter than a block.
        run.bytes.reserve_exact(room(run.bytes.len()).min(SEAL_AFTER + wire::BLOCK));
        run.names.reserve_exact(room(run.names.len()));
        records.for_each(|record| push(run, record));
    }
}

/// Consecutive lines of one run, in its lines: `(run, from, to)`.
type Span = (usize, usize, usize);

/// Merges runs of one table (each sorted by key) into one sequence of lines in key order, as
/// spans of the runs' lines: consecutive lines of one run are one span, so a table one worker
/// wrote whole is one span. Keys are unique across runs (each key has one owner), so the order
/// is total.
fn merge(runs: &[&Run], out: &mut Vec<Span>) {
    if let [run] = runs {
        out.extend(Some((0, 0, run.plain_len())).filter(|&(_, _, to)| to > 0));
        return;
    }
    let mut next = vec![0usize; runs.len()];
    // The span being extended (a run's lines are consecutive, so its next line extends it).
    let mut open: Option<Span> = None;
    loop {
        let least = (0..runs.len())
            .filter(|&r| next[r] < runs[r].len())
            .min_by(|&a, &b| runs[a].key(next[a]).cmp(&runs[b].key(next[b])));
        let Some(r) = least else { break };
        let (start, end) = runs[r].line_span(next[r]);
        next[r] += 1;
        match &mut open {
            Some((run, _, open_end)) if *run == r => *open_end = end,
            _ => out.extend(open.replace((r, start, end))),
        }
    }
    out.extend(open);
}

/// The lines of one table at one tick (or of the final snapshot), merged: the workers' runs
/// and the spans of them in key order.
#[derive(Debug, Default)]
pub struct TableLines<'r> {
    runs: Vec<&'r Run>,
    spans: Vec<Span>,
}

impl TableLines<'_> {
    /// Gives `out` the table's bytes in order, a piece at a time: merging copies no line, and
    /// a sealed block is decompressed once (at the setup tick the runs hold a line of every
    /// key, and a merged copy doubled what the output took at the peak).
    pub fn write<E>(&self, mut out: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let mut blocks: Vec<(usize, Vec<u8>)> = self.runs.iter().map(|_| (0, Vec::new())).collect();
        self.spans.iter().try_for_each(|&(run, from, to)| self.runs[run].read((from, to), &mut blocks[run], &mut out))
    }

    /// The table's bytes, copied whole.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let Ok(()) = self.write(|piece| {
            bytes.extend_from_slice(piece);
            Ok::<_, std::convert::Infallible>(())
        });
        bytes
    }
}

/// The lines of the four tables at one tick (or of the final snapshot), in key order.
#[derive(Debug, Default)]
pub struct Lines<'r> {
    /// Per table of [`TABLES`].
    pub tables: [TableLines<'r>; 4],
}

impl<'r> Lines<'r> {
    /// Merges every table of `runs` (any tables, any workers).
    pub fn merged(runs: &'r [Run]) -> Lines<'r> {
        let mut lines = Lines::default();
        for (table, out) in lines.tables.iter_mut().enumerate() {
            out.runs = runs.iter().filter(|r| r.table as usize == table).collect();
            merge(&out.runs, &mut out.spans);
        }
        lines
    }
}

/// Where formatted, merged output goes: the directory of output files, or stdout.
pub trait LineSink {
    /// Writes tick `time`'s lines.
    fn tick(&mut self, time: Millis, lines: &Lines<'_>) -> Result<(), SinkError>;

    /// Makes the ticks given so far durable (a flush).
    fn commit(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Ends the run: dead letters in position order (formatted by the sink, which knows the
    /// source names), the final snapshot's lines and the summary.
    fn finish(&mut self, dead_letters: &[dataflows::model::DeadLetter], snapshot: &Lines<'_>, summary: &Summary)
        -> Result<(), SinkError>;
}

#[cfg(test)]
mod tests {

    use super::*;

    fn run(keys: &[(&str, &str)]) -> Run {
        let mut run = Run::new(Some(1000), 0);
        for (sku, loc) in keys {
            let key = Key::new(sku, loc);
            run.push(&key, |out| out.extend_from_slice(format!("{sku}@{loc}\n").as_bytes()));
        }
        run
    }

    fn merged(runs: &[&Run]) -> (String, usize) {
        let mut spans = Vec::new();
        merge(runs, &mut spans);
        let lines = TableLines { runs: runs.to_vec(), spans };
        (String::from_utf8(lines.to_vec()).unwrap(), lines.spans.len())
    }

    #[test]
    fn runs_merge_in_key_order_part_by_part() {
        // Part by part, bytewise: ("a", "b") before ("a@", "") although "a@b" > "a@".
        let left = run(&[("a", "b"), ("b", "a")]);
        let right = run(&[("a", "c"), ("a@", ""), ("c", "")]);
        // Consecutive lines of one run come as one slice: a@b | a@c a@@ | b@a | c@.
        assert_eq!(merged(&[&left, &right]), ("a@b\na@c\na@@\nb@a\nc@\n".to_owned(), 4));
        assert_eq!(merged(&[]), (String::new(), 0));
    }

    #[test]
    fn names_compare_one_by_one_not_joined() {
        // Joined, "a@" < "ab"; name by name, ("a", "b") < ("a@", "").
        let (left, right) = (run(&[("a@", "")]), run(&[("a", "b")]));
        assert_eq!(merged(&[&left, &right]).0, "a@b\na@@\n");
        assert_eq!(merged(&[&right, &left]).0, "a@b\na@@\n");
    }

    #[test]
    fn one_run_is_one_slice_and_an_empty_one_none() {
        let left = run(&[("a", "b"), ("b", "a")]);
        assert_eq!(merged(&[&left]), ("a@b\nb@a\n".to_owned(), 1));
        assert_eq!(merged(&[&run(&[])]), (String::new(), 0));
        let empty = run(&[]);
        assert_eq!(merged(&[&left, &empty]), ("a@b\nb@a\n".to_owned(), 1));
    }

    /// A run of one line (75 to 155 bytes) for each `i` in `keys`, of the key `K{i}`, and the
    /// lines' bytes.
    fn large_run(keys: impl Iterator<Item = usize>) -> (Run, Vec<u8>) {
        let (mut run, mut plain) = (Run::new(Some(1000), 0), Vec::new());
        for i in keys {
            let (sku, loc) = (format!("K{i:08}"), format!("S{:04}", i % 97));
            let (on_hand, atp, pad) = (i * 7 % 1000, i % 13, "x".repeat(i % 80));
            let line = format!(
                "{{\"tick\":1000,\"sku\":\"{sku}\",\"loc\":\"{loc}\",\"on_hand\":{on_hand},\"atp\":{atp},\"pad\":\"{pad}\"}}\n"
            );
            run.push(&Key::new(&sku, &loc), |out| out.extend_from_slice(line.as_bytes()));
            plain.extend_from_slice(line.as_bytes());
        }
        (run, plain)
    }

    #[test]
    fn a_large_run_is_sealed_as_it_fills_and_reads_back_whole() {
        let lines = SEAL_AFTER / 90;
        let (even, even_plain) = large_run((0..lines).map(|i| 2 * i));
        let (odd, _) = large_run((0..lines).map(|i| 2 * i + 1));
        assert!(even.sealed.len() >= SEAL_AFTER / wire::BLOCK, "{} blocks sealed", even.sealed.len());
        assert!(even.bytes.len() < wire::BLOCK, "{} bytes left plain", even.bytes.len());
        let compressed: usize = even.sealed.iter().map(|block| block.len()).sum();
        assert!(compressed * 3 < even.sealed.len() * wire::BLOCK, "{compressed} bytes for the sealed blocks");
        assert_eq!(even.plain_len(), even_plain.len());
        assert_eq!(merged(&[&even]), (String::from_utf8(even_plain).unwrap(), 1));
        // Two sealed runs merged line by line: every span crosses into the other run.
        let (all, all_plain) = large_run(0..2 * lines);
        let (text, spans) = merged(&[&odd, &even]);
        assert_eq!(spans, 2 * lines);
        assert!(text.as_bytes() == all_plain, "the merge of two sealed runs differs from the run of all keys");
        assert_eq!(all.len(), 2 * lines);
    }
}
