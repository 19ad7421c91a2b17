//! The crash tests' kill point (tests/kafka_txn.rs): `STOCKFLOW_CRASH_AFTER_COMMIT=W:N` ends
//! the process, as a SIGKILL would, with worker W's N-th transaction committed and every
//! worker's later output in transactions that never commit. Unset in production: then
//! [`holding`] is false and nothing here waits or ends anything.
//!
//! A plain abort right after W's commit races the other workers: they may have committed
//! everything already, or be half way through an EndTxn. So once W has committed its N-th
//! transaction, no worker of the process commits again: each keeps producing its records into
//! its open transaction (without its progress record, which is produced only with a commit),
//! and the process ends once every worker has produced its last record. The state a restart
//! finds is then exact: every worker between two commits, W after exactly N, each of the
//! others after the commits it made before W's N-th (or during it), and every progress record
//! on the topic one of a committed transaction. Armed, each tick is committed on its own
//! ([`armed`]); the protocol (records, progress record and offsets in one transaction) is the
//! same as a drained batch's.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Set once worker W committed its N-th transaction: no worker commits from then on.
static TRIPPED: AtomicBool = AtomicBool::new(false);

/// Workers that have produced their last records while holding their transaction open.
static ENDED: AtomicUsize = AtomicUsize::new(0);

/// The kill point, read once: (worker, transactions committed).
fn point() -> Option<(usize, u64)> {
    static POINT: OnceLock<Option<(usize, u64)>> = OnceLock::new();
    *POINT.get_or_init(|| {
        let value = std::env::var("STOCKFLOW_CRASH_AFTER_COMMIT").ok()?;
        let (w, n) = value.split_once(':')?;
        Some((w.parse().ok()?, n.parse().ok()?))
    })
}

/// Whether the kill point is set. Then every tick is committed in a transaction of its own
/// (not a drained batch's), so that W's N-th commit falls at a tick the test can name instead
/// of wherever the drains' batching put it.
pub fn armed() -> bool {
    point().is_some()
}

/// Worker `worker` has committed `committed` transactions.
pub fn committed(worker: usize, committed: u64) {
    if point() == Some((worker, committed)) {
        eprintln!(
            "stockflow: STOCKFLOW_CRASH_AFTER_COMMIT: worker {worker} committed transaction {committed}; \
             no worker commits again, the process ends after the last record"
        );
        TRIPPED.store(true, Ordering::SeqCst);
    }
}

/// Whether commits are held: the kill point has passed.
pub fn holding() -> bool {
    TRIPPED.load(Ordering::SeqCst)
}

/// A worker of `workers` (all in this process) has produced its last record, acknowledged, in
/// its held transaction: the last one to get here ends the process; the others wait for it.
pub fn produced_everything(worker: usize, workers: usize) -> ! {
    if ENDED.fetch_add(1, Ordering::SeqCst) + 1 == workers {
        eprintln!(
            "stockflow: STOCKFLOW_CRASH_AFTER_COMMIT: worker {worker} ends the process after commit, \
             every worker's later output uncommitted"
        );
        std::process::abort();
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
