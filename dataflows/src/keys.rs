//! The table of the keys one worker owns: one hash-map entry per (sku, loc), shared by the key
//! ledger (the key's book), the row operator (the inputs of its ATP row) and the worker's sink
//! (the ATP rows it has written, for the final snapshot).
//!
//! Every one of them handles a key on the worker that owns it by [`crate::shard`], so their
//! state for a key can sit side by side: the 48-byte key and the map's per-entry overhead are
//! paid once instead of once per operator (at 10M keys a hash map's buckets are ~60% full, so
//! each byte of an entry costs ~1.7 bytes per key). Each reads and writes only its own part of
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
use crate::ledger::KeyBook;
use crate::model::Millis;
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
/// key takes 48 bytes where a key with an optional row took 104: this list is alive with the
/// tick's ATP changes at the row operator's peak.
#[derive(Default)]
struct UnwrittenTick {
    /// Keys whose row is new in this tick.
    rowless: Vec<Key>,
    /// Keys whose row changed or left in this tick, with their row before.
    changed: Vec<(Key, Atp)>,
}

/// The tables behind a [`KeyTable`].
#[derive(Default)]
pub(crate) struct Tables {
    /// Every key of the worker.
    pub(crate) keys: FastMap<Key, KeyEntry>,
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
        let tables = self.0.borrow();
        let Some(unwritten) = tables.rows.unwritten.as_ref() else { return Vec::new() };
        // A key changed since it was written: its row before the earliest such change.
        // (A key changes at most once a tick, so the order within a tick's lists is moot.)
        let mut apart: FastMap<&Key, Option<&Atp>> = FastMap::default();
        for tick in unwritten.values() {
            for key in &tick.rowless {
                apart.entry(key).or_insert(None);
            }
            for (key, old) in &tick.changed {
                apart.entry(key).or_insert(Some(old));
            }
        }
        let current = tables.keys.iter().filter(|(key, _)| !apart.contains_key(key));
        let mut rows: Vec<(Key, Atp)> = current
            .filter_map(|(key, entry)| Some((key.clone(), entry.row.numbers()?)))
            .chain(apart.iter().filter_map(|(&key, &atp)| Some((key.clone(), atp?.clone()))))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows
    }
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
        let keys: Vec<Key> = (0..10_000).map(|i| (format!("S{i:05}").into(), "L".into())).collect();
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
        let (new, old): (Key, Key) = (("N".into(), "L".into()), ("O".into(), "L".into()));
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

    #[test]
    fn without_tracking_nothing_is_kept() {
        let table = KeyTable::default();
        set_stock(&table, &("S".into(), "L".into()), 5);
        assert!(table.borrow_mut().rows.unwritten.is_none());
        assert!(table.written_atp().is_empty());
    }

    /// The point of the shared table: a key costs one key and one entry (was 120 + 96 bytes in
    /// two maps, and 96 more in the sink's share of the snapshot).
    #[test]
    fn an_entry_with_its_key_fits_in_160_bytes() {
        // 48 for the key, 72 for the book, 40 for the row inputs.
        assert!(std::mem::size_of::<(Key, KeyEntry)>() <= 160, "{}", std::mem::size_of::<(Key, KeyEntry)>());
    }
}
