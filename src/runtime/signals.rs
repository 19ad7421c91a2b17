//! SIGINT and SIGTERM, through signal-hook: its handler only wakes a thread of ours, which then
//! runs ordinary code. `run` and `batch` take a first signal, once their workers run, as a
//! request to finish the ticks the input has passed, commit and stop; everything else (a replay,
//! a second signal, a cluster process still waiting for its peers) stops at once: the unfinished
//! outputs are abandoned (the previous complete result stays, see [`crate::io::sink::staging`])
//! and the process exits with 128 + the signal's number, after one line on stderr.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::io::sink::staging;

/// Set by the first SIGINT/SIGTERM of a run that stops gracefully: the workers stop at their
/// next loop turn.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Set once a worker runs.
static WORKERS_STARTED: AtomicBool = AtomicBool::new(false);

/// What a signal does to the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnSignal {
    /// `run`, `batch`: finish the ticks the input has passed, commit, stop; `note` ends the
    /// line that says so (what happens to `--out`).
    Finish {
        /// Appended to the line, e.g. `; out keeps its previous complete result`.
        note: String,
    },
    /// `replay`: stop at once; nothing of the run is published.
    Abort,
}

/// Handles SIGINT and SIGTERM for the command `label` from now on.
pub fn install(label: &'static str, on: OnSignal) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            let first = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_ok();
            match &on {
                OnSignal::Finish { note } if first && WORKERS_STARTED.load(Ordering::SeqCst) => {
                    let sig = name(signal);
                    tracing::info!("{sig}: {label} writes the ticks its input has passed, commits and stops (a second signal stops it at once){note}");
                    STOP.store(true, Ordering::SeqCst);
                }
                _ => abort(label, signal),
            }
        }
    })?;
    Ok(())
}

/// Abandons the unfinished outputs, says so in one line, and ends the process.
fn abort(label: &str, signal: i32) -> ! {
    let kept = staging::abandon_all();
    if kept.is_empty() && staging::published() {
        tracing::warn!("{}: {label} stopped after its outputs were complete and in place", name(signal));
    } else {
        let what = if kept.is_empty() { String::new() } else { format!("; {}", kept.join("; ")) };
        tracing::warn!("{}: {label} stopped before its end{what}", name(signal));
    }
    std::process::exit(128 + signal)
}

/// The signal that stopped the run, if one did.
pub fn received() -> Option<i32> {
    Some(RECEIVED.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

/// Called by each worker as it starts: from now on a first signal is a request to stop.
pub fn workers_started() {
    WORKERS_STARTED.store(true, Ordering::SeqCst);
}

/// The signal's name, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
