//! SIGINT and SIGTERM: once the workers run, a signal asks them to finish the current tick,
//! commit and exit 0; before that (a cluster process waiting for its peers) it ends the process
//! at once, there being nothing to finish.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM: the workers stop at their next loop turn.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Set once a worker runs.
static WORKERS_STARTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signum: i32) {
    if !WORKERS_STARTED.load(Ordering::Relaxed) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc_exit(128 + signum) }
    }
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the handlers of SIGINT and SIGTERM.
pub fn install() {
    // SAFETY: the handler only stores to an atomic or calls _exit, both async-signal-safe.
    unsafe {
        libc_signal(2, on_signal);
        libc_signal(15, on_signal);
    }
}

/// Called by each worker as it starts: from now on a signal is a request to stop.
pub fn workers_started() {
    WORKERS_STARTED.store(true, Ordering::Relaxed);
}

extern "C" {
    #[link_name = "signal"]
    fn libc_signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    #[link_name = "_exit"]
    fn libc_exit(status: i32) -> !;
}
