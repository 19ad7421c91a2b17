//! The table of the keys one worker owns: one hash-map entry per (sku, loc), shared by the key
//! ledger (the key's book) and the row operator (the inputs of its ATP row).
//!
//! Both operators run a key on the worker that owns it by [`crate::shard`], so their state
//! for a key can sit side by side: the 48-byte key and the map's per-entry overhead are paid
//! once instead of once per operator (at 10M keys a hash map's buckets are ~60% full, so each
//! byte of an entry costs ~1.7 bytes per key). Each operator reads and writes only its own half
//! of an entry, so the ledger may be ticks ahead of the row operator without either seeing
//! the other's time. An entry lives while either half holds something.
//!
//! Operators of one worker run one at a time, so a `RefCell` borrow never meets another; each
//! operator borrows the table only inside its own activation.

use std::cell::{RefCell, RefMut};
use std::rc::Rc;

use crate::atp::RowInputs;
use crate::ledger::KeyBook;
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

/// A worker's key table; cloning shares it (one per dataflow per worker).
#[derive(Clone, Default)]
pub(crate) struct KeyTable(Rc<RefCell<FastMap<Key, KeyEntry>>>);

impl KeyTable {
    /// The table, for the rest of the calling operator's activation.
    pub(crate) fn borrow_mut(&self) -> RefMut<'_, FastMap<Key, KeyEntry>> {
        self.0.borrow_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of the shared table: a key costs one key and one entry (was 120 + 96 bytes in
    /// two maps).
    #[test]
    fn an_entry_with_its_key_fits_in_168_bytes() {
        assert!(std::mem::size_of::<(Key, KeyEntry)>() <= 168, "{}", std::mem::size_of::<(Key, KeyEntry)>());
    }
}
