//! A lost cluster peer: timely's network threads panic when a connection breaks; this panic
//! hook recognises that panic, says in one line which process was lost, and ends the process.
//!
//! A timely cluster cannot continue without every process (the others wait for the lost one's
//! progress forever), so ending is the only outcome; left alone, the panic spreads to every
//! worker as `MergeQueue poisoned` and says nothing about which peer went away. Materialize
//! halts on the same panic message, which timely keeps stable for this purpose.

use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The start of every panic of timely's network threads on a failed read or write.
const TIMELY_COMMUNICATION_ERROR: &str = "timely communication error: ";
/// Timely names its network threads `timely:send-N` and `timely:recv-N`, N the peer's index.
const NETWORK_THREADS: [&str; 2] = ["timely:send-", "timely:recv-"];
/// The exit status of a process that lost a peer.
const EXIT_STATUS: i32 = 1;

/// The cluster's addresses by process index, once a cluster is formed.
static PEERS: OnceLock<Vec<String>> = OnceLock::new();
/// Set by the first network thread to report: a broken connection fails both of its threads.
static REPORTED: AtomicBool = AtomicBool::new(false);

/// Installs the hook (once per process); other panics go to the hook installed before.
pub fn watch(addresses: Vec<String>) {
    if PEERS.set(addresses).is_err() {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| match lost_peer(info) {
        Some(line) => report_and_exit(&line),
        None => previous(info),
    }));
}

/// The error line for a panic of a timely network thread, or `None` for any other panic.
fn lost_peer(info: &PanicHookInfo<'_>) -> Option<String> {
    let payload = info.payload();
    let message = payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied())?;
    let cause = message.strip_prefix(TIMELY_COMMUNICATION_ERROR)?;
    let thread = std::thread::current();
    let peer = thread
        .name()
        .and_then(|name| NETWORK_THREADS.iter().find_map(|prefix| name.strip_prefix(prefix)))
        .and_then(|index| index.parse::<usize>().ok());
    Some(describe(peer, PEERS.get().map(Vec::as_slice).unwrap_or_default(), cause))
}

fn describe(peer: Option<usize>, addresses: &[String], cause: &str) -> String {
    let who = match peer {
        Some(index) => match addresses.get(index) {
            Some(address) => format!("process {index} ({address})"),
            None => format!("process {index}"),
        },
        None => "a process".to_string(),
    };
    format!(
        "lost cluster peer {who}: {cause}; this process stops too (a timely cluster needs every process): \
         restart every process of the cluster (docs/operations.md, Cluster)"
    )
}

fn report_and_exit(line: &str) -> ! {
    if !REPORTED.swap(true, Ordering::SeqCst) {
        tracing::error!("{line}");
        std::process::exit(EXIT_STATUS);
    }
    // Another network thread is already ending the process.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_peer_and_its_address() {
        let addresses = vec!["127.0.0.1:4000".to_string(), "10.0.0.2:4000".to_string()];
        let line = describe(Some(1), &addresses, "reading data: socket closed");
        assert!(
            line.starts_with("lost cluster peer process 1 (10.0.0.2:4000): reading data: socket closed;"),
            "{line}"
        );
        assert!(describe(None, &addresses, "x").starts_with("lost cluster peer a process: x"));
    }
}
