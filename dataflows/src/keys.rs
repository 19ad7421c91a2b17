//! The table of the keys one worker owns: one hash-map entry per (sku, loc), shared by the key
//! ledger (the key's book), the row operator (the inputs of its ATP row) and the worker's sink
//! (the ATP rows it has written, for the final snapshot).
//!
//! Every one of them handles a key on the worker that owns it by [`crate::shard`], so their
//! state for a key can sit side by side: the 24-byte key and the map's per-entry overhead are
//! paid once instead of once per operator. Each reads and writes only its own part of
//! an entry, so the ledger may be ticks ahead of the row operator, and the row operator ticks
//! ahead of the sink, without either seeing the other's time. An entry lives while any part
//! holds something.
//!
//! The written ATP rows cost almost nothing: a key's written row is its current row, except
//! for the keys whose row changed in a tick the sink has not written (yet, or ever: a tick past
//! the window's end). Only those are kept, in [`Unwritten`]: the row before each such change,
//! listed under the change's tick.
//!
//! Operators of one worker run one at a time, so a `RefCell` borrow never meets another; each
//! borrows the table only inside its own activation.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::atp::{Atp, RowInputs};
use crate::changes::Change;
use crate::key::KeyRef;
use crate::ledger::KeyBook;
use crate::model::Millis;
use crate::stash::{Chunks, TickItems};
use crate::{FastMap, Key};

/// One key's state on its owning worker.
#[derive(Default)]
pub(crate) struct KeyEntry {
    /// The key ledger's book, while the key has anything to remember.
    pub(crate) book: Option<KeyBook>,
    /// The inputs of the key's ATP row; the default while it has no row.
    pub(crate) row: RowInputs,
}

impl KeyEntry {
    /// Whether neither operator holds anything for the key.
    pub(crate) fn is_empty(&self) -> bool {
        self.book.is_none() && self.row == RowInputs::default()
    }
}

/// The rows before each ATP change the sink has not written yet, by the change's tick. The row
/// operator changes a key at most once a tick and the sink writes ticks in order, so a tick's
/// lists leave whole when the sink writes that tick: no key is looked up or hashed on either
/// side (a map of the keys apart, updated per change, cost ~8% of a 1-worker replay's samples).
type Unwritten = BTreeMap<Millis, UnwrittenTick>;

/// One tick's changes not written yet: the keys that had no row before apart from the rows
/// before the others' changes. In the setup tick every key is of the first kind, and a bare
/// key takes 24 bytes where a key with an optional row took 104: this list is alive with the
/// tick's ATP changes at the row operator's peak. Both fill chunks of a bounded size: grown by
/// doubling, the setup tick's list held its old buffer beside the new one (201 MB beside 402
/// at 10M keys), the setup tick's peak once the ledger's stage was below it.
#[derive(Default)]
struct UnwrittenTick {
    /// Keys whose row is new in this tick.
    rowless: Chunks<Key>,
    /// Keys whose row changed or left in this tick, with their row before.
    changed: Chunks<(Key, Atp)>,
}

/// The keys of a worker: the entries (136 bytes with their key, 144 with its hash) in one
/// dense vector, behind a hash table of 8-byte indices. A hash map holding the entries in its
/// own buckets paid for the empty ones too: its buckets are a power of two and at most 7/8
/// full, so at 10M keys (2^24 buckets, 60% full) an entry cost 270 bytes a key, and at 30M keys
/// (2^26, 45% full) 360. Here an empty bucket costs 9 bytes. The price is one more memory
/// access per lookup (the index, then the entry). The ledger adds a tick's new keys in the
/// order it visits them, by name, so a large tick's visits read the vector nearly in order; a
/// small tick's keys are far apart in it, and [`warm`] overlaps their misses. Iteration follows
/// the vector, which a removal reorders (`swap_remove`): nothing that reaches the user depends
/// on that order.
pub(crate) type KeyMap = indexmap::IndexMap<Key, KeyEntry, std::hash::BuildHasherDefault<crate::FxHasher>>;

/// The most keys [`warm`] looks up ahead of a walk. Their table lines (the index's control
/// group and slot, the entry's first line: ~200 bytes a key) stay well within a core's L2
/// cache until the walk reaches them. A streaming tick touches far fewer keys (a median of 118
/// at 10M events over 1M keys); the setup tick's are nearly all new, so a lookup finds nothing
/// to bring in.
const WARM_KEYS: usize = 2048;

/// Looks up each of `keys` (in a walk's order; the first [`WARM_KEYS`] distinct ones) and
/// drops the answer, just before the walk visits them; returns how many distinct keys `keys`
/// holds (a repeat counts once when it follows its key, as in a sorted walk). A lookup in a
/// large table waits on three cache misses one after another: the index's control group, its
/// slot, then the entry's key, each about a third of the lookups' samples (`perf annotate`;
/// the lookups were 17% of a 1-worker replay's samples at 1M keys). In the walk each lookup
/// waits alone, between the work on one key and the next. Here the keys and their hashes are
/// gathered first, and the lookups then run back to back, a few dozen instructions each, so
/// that the processor has the misses of several in flight at once (looked up as they were
/// gathered, each lookup came with a message's parsing and took as long as in the walk).
/// docs/benchmarks.md, "The table's lookups back to back", has the profiles.
pub(crate) fn warm<'k>(map: &KeyMap, keys: impl IntoIterator<Item = KeyRef<'k>>) -> usize {
    use indexmap::map::RawEntryApiV1;
    use indexmap::Equivalent;
    use std::hash::BuildHasher;
    let (mut hashed, mut last, mut distinct) = (Vec::new(), None, 0);
    for key in keys {
        if last == Some(key) {
            continue;
        }
        last = Some(key);
        distinct += 1;
        if hashed.len() < WARM_KEYS {
            hashed.push((map.hasher().hash_one(key), key));
        }
    }
    for (hash, key) in &hashed {
        std::hint::black_box(map.raw_entry_v1().from_hash(*hash, |k| key.equivalent(k)).is_some());
    }
    distinct
}

/// The tables behind a [`KeyTable`].
#[derive(Default)]
pub(crate) struct Tables {
    /// Every key of the worker.
    pub(crate) keys: KeyMap,
    /// What the row operator tells the sink's side.
    pub(crate) rows: Rows,
}

/// The ATP rows changed since the sink wrote them, and how many rows are written.
#[derive(Default)]
pub(crate) struct Rows {
    /// With [`KeyTable::track_written`]: the rows before the changes not written yet.
    unwritten: Option<Unwritten>,
    /// How many keys have a written row (kept as the sink writes, for the metrics, which read
    /// it every loop turn).
    written_count: usize,
}

impl Rows {
    /// The row operator changed `key`'s ATP numbers from `old` at `time`, a tick the sink has
    /// not written: until it does, the written row is `old`, unless an earlier unwritten change
    /// holds what was written.
    pub(crate) fn row_changed(&mut self, time: Millis, key: &Key, old: Option<&Atp>) {
        if let Some(unwritten) = self.unwritten.as_mut() {
            // The map holds the few ticks the sink has not caught up with.
            let tick = unwritten.entry(time).or_default();
            match old {
                Some(old) => tick.changed.push((key.clone(), old.clone())),
                None => tick.rowless.push(key.clone()),
            }
        }
    }
}

/// A worker's key table; cloning shares it (one per dataflow per worker).
#[derive(Clone, Default)]
pub struct KeyTable(Rc<RefCell<Tables>>);

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables = self.0.borrow();
        f.debug_struct("KeyTable").field("keys", &tables.keys.len()).field("written", &tables.rows.written_count).finish()
    }
}

impl KeyTable {
    /// The tables, for the rest of the calling operator's activation.
    pub(crate) fn borrow_mut(&self) -> RefMut<'_, Tables> {
        self.0.borrow_mut()
    }

    /// Keeps the ATP rows as written by [`KeyTable::write_atp`], for [`KeyTable::written_atp`].
    /// Call it before the dataflow runs any tick the sink will write.
    pub fn track_written(&self) {
        self.0.borrow_mut().rows.unwritten.get_or_insert_with(Unwritten::default);
    }

    /// The sink wrote tick `time`'s `atp` changes (of this worker's keys).
    pub fn write_atp<'a>(&self, time: Millis, changes: impl IntoIterator<Item = &'a Change<Key, Atp>>) {
        let mut tables = self.0.borrow_mut();
        let rows = &mut tables.rows;
        let Some(unwritten) = rows.unwritten.as_mut() else { return };
        // The rows before this tick's changes were written; the changes' rows are now. (Ticks
        // are written in order, so none before `time` is left.)
        let mut had_rows = 0;
        while let Some(tick) = unwritten.first_entry().filter(|tick| *tick.key() <= time) {
            had_rows += tick.remove().changed.len();
        }
        let has_rows = changes.into_iter().filter(|change| change.value.is_some()).count();
        rows.written_count = (rows.written_count + has_rows).saturating_sub(had_rows);
    }

    /// How many ATP rows are written.
    pub fn written_rows(&self) -> usize {
        self.0.borrow().rows.written_count
    }

    /// Every written ATP row, sorted by key.
    pub fn written_atp(&self) -> Vec<(Key, Atp)> {
        self.with_written_atp(usize::MAX, |_, rows| rows.collect())
    }

    /// Hands `read` the number of written ATP rows and the rows, sorted by key, and returns
    /// what it returns. The rows are sorted a slice of the key space at a time, of about
    /// `rows_per_slice` each: all of them at once, as owned rows, were 96 B a key beside the
    /// snapshot's formatted lines, the peak of a run's end at 10M keys.
    pub fn with_written_atp<R>(
        &self,
        rows_per_slice: usize,
        read: impl FnOnce(usize, &mut dyn Iterator<Item = (Key, Atp)>) -> R,
    ) -> R {
        let tables = self.0.borrow();
        let Some(unwritten) = tables.rows.unwritten.as_ref() else { return read(0, &mut std::iter::empty()) };
        // A key changed since it was written: its row before the earliest such change.
        // (A key changes at most once a tick, so the order within a tick's lists is moot.)
        let mut apart: FastMap<&Key, Option<&Atp>> = FastMap::default();
        for tick in unwritten.values() {
            for key in tick.rowless.iter() {
                apart.entry(key).or_insert(None);
            }
            for (key, old) in tick.changed.iter() {
                apart.entry(key).or_insert(Some(old));
            }
        }
        // The written rows, in the tables' own order (the same on every walk).
        let rows = || {
            let current = tables.keys.iter().filter(|(key, entry)| !apart.contains_key(key) && entry.row.has_row());
            let current = current.map(|(key, entry)| (key, WrittenRow::Current(&entry.row)));
            current.chain(apart.iter().filter_map(|(&key, &atp)| Some((key, WrittenRow::Before(atp?)))))
        };
        let bounds = slice_bounds(rows().map(|(key, _)| key), rows_per_slice);
        let slice_of = |key: &Key| bounds.partition_point(|bound| bound <= key);
        let slices: Vec<u32> = rows().map(|(key, _)| slice_of(key) as u32).collect();
        let mut per_slice = vec![0; bounds.len() + 1];
        slices.iter().for_each(|&slice| per_slice[slice as usize] += 1);
        let sorted_slice = |slice: usize| {
            let mut sorted = Vec::with_capacity(per_slice[slice]);
            let of_slice = rows().zip(&slices).filter(|(_, &s)| s as usize == slice);
            sorted.extend(of_slice.map(|((key, row), _)| (key.clone(), row.numbers())));
            sorted.sort_unstable_by(|a: &(Key, Atp), b| a.0.cmp(&b.0));
            sorted
        };
        read(slices.len(), &mut (0..per_slice.len()).flat_map(sorted_slice))
    }
}

/// A written ATP row: the key's current one, or the row before its unwritten changes.
enum WrittenRow<'a> {
    Current(&'a RowInputs),
    Before(&'a Atp),
}

impl WrittenRow<'_> {
    fn numbers(&self) -> Atp {
        match self {
            WrittenRow::Current(inputs) => inputs.numbers().expect("only keys with a row are listed"),
            WrittenRow::Before(atp) => (*atp).clone(),
        }
    }
}

/// Keys that cut `keys` into slices of about `rows_per_slice` in key order (none when one
/// slice holds them all): quantiles of a sample of at most 4096 keys, so the slices' sizes
/// vary by a few percent.
fn slice_bounds<'a>(keys: impl Iterator<Item = &'a Key> + Clone, rows_per_slice: usize) -> Vec<Key> {
    const SAMPLE: usize = 4096;
    let count = keys.clone().count();
    let slices = count.div_ceil(rows_per_slice.max(1));
    if slices <= 1 {
        return Vec::new();
    }
    let mut sample: Vec<&Key> = keys.step_by(count.div_ceil(SAMPLE).max(1)).collect();
    sample.sort_unstable();
    let mut bounds: Vec<Key> = (1..slices).map(|i| sample[i * sample.len() / slices].clone()).collect();
    bounds.dedup();
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row operator sets `key`'s stock to `on_hand`, as `update_row` does.
    fn set_stock(table: &KeyTable, key: &Key, on_hand: i64) -> Atp {
        let mut tables = table.borrow_mut();
        let Tables { keys, rows } = &mut *tables;
        let entry = keys.entry(key.clone()).or_default();
        let old = entry.row.numbers();
        entry.row = RowInputs::stock(on_hand);
        let new = entry.row.numbers().expect("a key with stock has a row");
        rows.row_changed(TICK, key, old.as_ref());
        new
    }

    const TICK: Millis = 1000;

    fn change(key: &Key, atp: &Atp) -> Change<Key, Atp> {
        Change { time: TICK, key: key.clone(), value: Some(atp.clone()) }
    }

    #[test]
    fn the_written_rows_are_those_the_sink_wrote_not_the_current_ones() {
        let table = KeyTable::default();
        table.track_written();
        let keys: Vec<Key> = (0..10_000).map(|i| Key::new(&format!("S{i:05}"), "L")).collect();
        let five: Vec<Atp> = keys.iter().map(|key| set_stock(&table, key, 5)).collect();
        // Rows the row operator made but the sink has not written are not in the snapshot.
        assert!(table.written_atp().is_empty());
        assert_eq!(table.written_rows(), 0);
        let changes: Vec<_> = keys.iter().zip(&five).map(|(key, atp)| change(key, atp)).collect();
        table.write_atp(TICK, &changes);
        assert_eq!(table.written_rows(), keys.len());
        assert_eq!(table.written_atp(), keys.iter().cloned().zip(five.iter().cloned()).collect::<Vec<_>>());
        // Written, every row is its current one: nothing is kept apart.
        assert!(table.borrow_mut().rows.unwritten.as_ref().is_some_and(BTreeMap::is_empty));
        // A change not yet written leaves the written row as it was, until the sink writes it.
        let seven = set_stock(&table, &keys[0], 7);
        assert_eq!(table.written_atp()[0], (keys[0].clone(), five[0].clone()));
        table.write_atp(TICK, &[change(&keys[0], &seven)]);
        assert_eq!(table.written_atp()[0], (keys[0].clone(), seven));
        assert_eq!(table.written_rows(), keys.len());
    }

    /// A key changed in several ticks the sink has not written shows the row before the
    /// earliest of them, whether it had none then (a new row) or one (a changed row).
    #[test]
    fn a_key_changed_in_unwritten_ticks_shows_its_row_before_the_earliest() {
        let table = KeyTable::default();
        table.track_written();
        let (new, old) = (Key::new("N", "L"), Key::new("O", "L"));
        let five = set_stock(&table, &old, 5);
        table.write_atp(TICK, &[change(&old, &five)]);
        let mut tables = table.borrow_mut();
        let Tables { keys, rows } = &mut *tables;
        for (tick, on_hand) in [(TICK + 1, 7), (TICK + 2, 9)] {
            for key in [&new, &old] {
                let entry = keys.entry(key.clone()).or_default();
                let before = entry.row.numbers();
                entry.row = RowInputs::stock(on_hand);
                rows.row_changed(tick, key, before.as_ref());
            }
        }
        drop(tables);
        // `new` had no row before its first unwritten change, `old` had five.
        assert_eq!(table.written_atp(), vec![(old.clone(), five.clone())]);
        assert_eq!(table.written_rows(), 1);
        // The sink writes the two ticks in order.
        let seven = RowInputs::stock(7).numbers().expect("a row");
        table.write_atp(TICK + 1, &[change(&new, &seven), change(&old, &seven)]);
        assert_eq!(table.written_atp(), vec![(new.clone(), seven.clone()), (old.clone(), seven)]);
        let nine = RowInputs::stock(9).numbers().expect("a row");
        table.write_atp(TICK + 2, &[change(&new, &nine), change(&old, &nine)]);
        assert_eq!(table.written_atp(), vec![(new, nine.clone()), (old, nine)]);
        assert_eq!(table.written_rows(), 2);
    }

    /// Sorted a slice of the key space at a time, the written rows are the same rows in the
    /// same order as sorted at once, those kept apart (unwritten changes) included.
    #[test]
    fn written_rows_sorted_in_slices_equal_those_sorted_at_once() {
        let table = KeyTable::default();
        table.track_written();
        // Keys in a scrambled order, of two skus' lengths, so that slices cut across skus.
        let keys: Vec<Key> = (0..5000u64).map(|i| {
            let n = i.wrapping_mul(2_654_435_761) % 100_000;
            Key::new(&format!("S{}", n % 97), &format!("L{n}"))
        }).collect();
        let atps: Vec<Atp> = keys.iter().zip(1..).map(|(key, on_hand)| set_stock(&table, key, on_hand)).collect();
        let changes: Vec<_> = keys.iter().zip(&atps).map(|(key, atp)| change(key, atp)).collect();
        table.write_atp(TICK, &changes);
        // Some keys change in a tick the sink has not written: their written row is kept apart.
        keys.iter().step_by(7).for_each(|key| {
            let mut tables = table.borrow_mut();
            let Tables { keys, rows } = &mut *tables;
            let entry = keys.get_mut(key).expect("a key of the table");
            let before = entry.row.numbers();
            entry.row = RowInputs::stock(-1);
            rows.row_changed(TICK + 1, key, before.as_ref());
        });
        let at_once = table.with_written_atp(usize::MAX, |len, rows| (len, rows.collect::<Vec<_>>()));
        assert_eq!(at_once.0, keys.len());
        assert!(at_once.1.windows(2).all(|w| w[0].0 < w[1].0), "sorted by key");
        let mut want: Vec<(Key, Atp)> = keys.iter().cloned().zip(atps).collect();
        want.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(at_once.1, want, "the rows as written, not the unwritten changes");
        for rows_per_slice in [1, 7, 1000, 4999] {
            let sliced = table.with_written_atp(rows_per_slice, |len, rows| (len, rows.collect::<Vec<_>>()));
            assert_eq!(sliced, at_once, "{rows_per_slice} rows a slice");
        }
        let bounds = slice_bounds(keys.iter(), 1000);
        assert_eq!(bounds.len(), 4, "five slices of about 1000 keys");
    }

    #[test]
    fn without_tracking_nothing_is_kept() {
        let table = KeyTable::default();
        set_stock(&table, &Key::new("S", "L"), 5);
        assert!(table.borrow_mut().rows.unwritten.is_none());
        assert!(table.written_atp().is_empty());
    }

    /// The point of the shared table: a key costs one key and one entry (was 120 + 96 bytes in
    /// two maps, and 96 more in the sink's share of the snapshot).
    #[test]
    fn an_entry_with_its_key_fits_in_136_bytes() {
        // 24 for the key, 72 for the book, 40 for the row inputs.
        assert!(std::mem::size_of::<(Key, KeyEntry)>() <= 136, "{}", std::mem::size_of::<(Key, KeyEntry)>());
    }
}
