//! Connects the cluster's processes: each connects to every process with a lower index and
//! accepts every process with a higher one, each connection through the [`handshake`], and
//! returns the sockets in process order (`None` for itself), as timely takes them.
//!
//! Accepting never trusts the other end: every incoming connection is handshaken on its own
//! thread with a deadline, so garbage, a stranger or a silent client is refused with a log
//! line naming its address while the real peers still get in. The listener closes once every
//! peer has joined, so nobody joins a cluster that has formed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};

use super::handshake::{self, Agreement, Hello, Verdict};
use super::{Address, ClusterError, Plan};

/// How long one handshake may take, from either end.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between attempts to reach a peer that is not up yet.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between attempts to reach a peer that refuses us: doubled after each
/// refusal, so that a misconfigured process does not flood its peer's log.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(8);
/// How often the listener is polled for connections while peers are missing.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// Handshakes in progress at once; more connections are refused (a flood must not exhaust
/// threads; a real peer retries).
const MAX_HANDSHAKES: usize = 64;
/// A repeated retry reason is logged again after this long.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(30);
/// TCP keepalive on the cluster's sockets: a peer whose machine vanished without closing its
/// connections (power, network) is noticed after about idle + interval x probes = 25 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;

/// Why forming stopped: an error to report, or `None` when the other half failed first.
type Stopped = Option<ClusterError>;

/// Connects this process to every other; returns once all are connected and checked.
pub fn connect(plan: &Plan) -> Result<Vec<Option<TcpStream>>, ClusterError> {
    let plan = Arc::new(plan.clone());
    let own = &plan.addresses[plan.process];
    let listener = if plan.process + 1 < plan.processes { Some(bind(own)?) } else { None };
    tracing::info!(
        "cluster: process {} of {} (generation {}{}), connecting to the others",
        plan.process,
        plan.processes,
        plan.generation,
        listener.as_ref().map_or(String::new(), |_| format!(", listening on {}", own.text)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let lower = {
        let (plan, stop) = (Arc::clone(&plan), Arc::clone(&stop));
        thread::Builder::new()
            .name("cluster-connect".into())
            .spawn(move || connect_lower(&plan, &stop))
            .map_err(|source| ClusterError::Io { what: "starting the connecting thread", source })?
    };
    let higher = match listener {
        Some(listener) => accept_higher(&plan, listener, &stop),
        None => Ok(Vec::new()),
    };
    if higher.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    let lower = lower.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let (lower, higher) = match (lower, higher) {
        (Ok(lower), Ok(higher)) => (lower, higher),
        (Err(Some(e)), _) | (_, Err(Some(e))) => return Err(e),
        (Err(None), _) | (_, Err(None)) => unreachable!("a half stops only after the other failed with an error"),
    };
    for stream in lower.iter().chain(&higher) {
        finish(stream).map_err(|source| ClusterError::Io { what: "configuring a cluster socket", source })?;
    }
    tracing::info!("cluster: all {} processes connected (generation {})", plan.processes, plan.generation);
    Ok(lower.into_iter().map(Some).chain([None]).chain(higher.into_iter().map(Some)).collect())
}

fn bind(own: &Address) -> Result<TcpListener, ClusterError> {
    TcpListener::bind(own.text.as_str()).map_err(|source| ClusterError::Bind {
        address: own.text.clone(),
        origin: own.origin.clone(),
        source,
    })
}

/// Timely's threads block on their sockets: no deadlines, no Nagle delay; keepalive on.
fn finish(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    stream.set_nodelay(true)?;
    let keepalive =
        TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_PROBES);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

fn handshake_deadlines(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))
}

// ---------------------------------------------------------------------------------------------
// Connecting to the processes with lower indices.
// ---------------------------------------------------------------------------------------------

/// What one failed attempt to join a peer means.
enum Failure {
    /// Try again; `waiting` marks the ordinary wait for a peer that is not up yet.
    Retry { waiting: bool, reason: String },
    /// The cluster cannot form with this process as it is.
    Fatal(ClusterError),
}

fn connect_lower(plan: &Plan, stop: &AtomicBool) -> Result<Vec<TcpStream>, Stopped> {
    (0..plan.process).map(|peer| join(plan, peer, stop)).collect()
}

/// Connects to process `peer` until it takes us in, or something says it never will.
fn join(plan: &Plan, peer: usize, stop: &AtomicBool) -> Result<TcpStream, Stopped> {
    let address = &plan.addresses[peer];
    let mut log = RepeatLog::default();
    let mut pause = RETRY_PAUSE;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(None);
        }
        match attempt(plan, peer) {
            Ok(stream) => {
                tracing::info!("cluster: joined process {peer} at {}", address.text);
                return Ok(stream);
            }
            Err(Failure::Fatal(e)) => {
                stop.store(true, Ordering::SeqCst);
                return Err(Some(e));
            }
            Err(Failure::Retry { waiting, reason }) => {
                pause = if waiting { RETRY_PAUSE } else { (pause * 2).min(MAX_RETRY_PAUSE) };
                log.note(peer, address, waiting, reason);
            }
        }
        thread::sleep(pause);
    }
}

fn attempt(plan: &Plan, peer: usize) -> Result<TcpStream, Failure> {
    let address = &plan.addresses[peer];
    let retry = |reason: String| Failure::Retry { waiting: false, reason };
    let mut stream = dial(&address.text).map_err(|e| Failure::Retry { waiting: true, reason: e.to_string() })?;
    handshake_deadlines(&stream).map_err(|e| retry(e.to_string()))?;
    let index = peer as u32;
    let mine = plan
        .hello(index)
        .map_err(|source| Failure::Fatal(ClusterError::Io { what: "drawing a handshake nonce", source }))?;
    let (theirs, verdict) = handshake::connect(&mut stream, &plan.secret.0, &mine).map_err(|e| retry(e.to_string()))?;
    let named = address.text.clone();
    match (verdict, handshake::compare(&mine, &theirs, index..=index)) {
        (Verdict::Joined, _) => Ok(stream),
        (Verdict::AlreadyConnected, _) => {
            Err(Failure::Fatal(ClusterError::Duplicate { peer: index, address: named, me: mine.from }))
        }
        (_, Agreement::SelfStale) => Err(Failure::Fatal(ClusterError::Stale {
            peer: index,
            address: named,
            ours: mine.generation,
            theirs: theirs.generation,
        })),
        (_, Agreement::Differ(what)) => {
            Err(Failure::Fatal(ClusterError::Mismatch { peer: index, address: named, what }))
        }
        (_, Agreement::PeerStale) => Err(retry(format!(
            "it belongs to generation {}, older than this process's {}; waiting for it to be restarted with \
             --cluster-generation {}",
            theirs.generation, mine.generation, mine.generation
        ))),
        (Verdict::Refused, Agreement::Agree) => Err(retry("it refused the connection".into())),
    }
}

/// Connects to the first address the name resolves to that answers.
fn dial(address: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for target in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")))
}

/// Logs a retry reason when it changes, and again every [`REPEAT_LOG_EVERY`].
#[derive(Default)]
struct RepeatLog {
    last: Option<(String, Instant)>,
}

impl RepeatLog {
    fn note(&mut self, peer: usize, address: &Address, waiting: bool, reason: String) {
        let due = self.last.as_ref().is_none_or(|(last, at)| *last != reason || at.elapsed() >= REPEAT_LOG_EVERY);
        if !due {
            return;
        }
        if waiting {
            tracing::info!("cluster: waiting for process {peer} at {} ({}): {reason}", address.text, address.origin);
        } else {
            tracing::warn!("cluster: process {peer} at {} ({}): {reason}; retrying", address.text, address.origin);
        }
        self.last = Some((reason, Instant::now()));
    }
}

// ---------------------------------------------------------------------------------------------
// Accepting the processes with higher indices.
// ---------------------------------------------------------------------------------------------

/// A peer that has joined: its connection and where it came from.
struct Joined {
    stream: TcpStream,
    from: SocketAddr,
}

/// Refusal lines, at most one per remote host and reason every [`REPEAT_LOG_EVERY`] (with a
/// count of those not shown): a misconfigured peer retrying, or a scanner, must not flood the log.
#[derive(Default)]
struct Refusals(Mutex<HashMap<(IpAddr, String), (Instant, u64)>>);

impl Refusals {
    /// Forgetting hosts not seen for a while keeps the table small under a scan.
    const FORGET_ABOVE: usize = 1024;

    fn warn(&self, from: SocketAddr, reason: &str) {
        let mut seen = self.0.lock().expect("no panics holding the refusals");
        if seen.len() > Self::FORGET_ABOVE {
            seen.retain(|_, (at, _)| at.elapsed() < REPEAT_LOG_EVERY);
        }
        let key = (from.ip(), reason.to_string());
        let unshown = match seen.get_mut(&key) {
            Some((at, unshown)) if at.elapsed() < REPEAT_LOG_EVERY => {
                *unshown += 1;
                return;
            }
            Some((_, unshown)) => *unshown,
            None => 0,
        };
        let more =
            if unshown > 0 { format!(" ({unshown} more like it from {} not shown)", from.ip()) } else { String::new() };
        tracing::warn!("cluster: refused a connection from {from}: {reason}{more}");
        seen.insert(key, (Instant::now(), 0));
    }
}

/// What the handshake threads fill in, shared with the accepting loop.
struct Slots {
    /// By `index - (this process + 1)`.
    joined: Vec<Option<Joined>>,
    /// Every peer joined; later connections are closed.
    formed: bool,
    /// A newer generation showed that this process is stale.
    fatal: Option<ClusterError>,
    refusals: Arc<Refusals>,
}

fn accept_higher(plan: &Arc<Plan>, listener: TcpListener, stop: &AtomicBool) -> Result<Vec<TcpStream>, Stopped> {
    let peers = plan.processes - plan.process - 1;
    let slots = Arc::new(Mutex::new(Slots {
        joined: (0..peers).map(|_| None).collect(),
        formed: false,
        fatal: None,
        refusals: Arc::default(),
    }));
    let refusals = Arc::clone(&slots.lock().expect("not shared yet").refusals);
    let in_flight = Arc::new(AtomicUsize::new(0));
    listener
        .set_nonblocking(true)
        .map_err(|source| Some(ClusterError::Io { what: "configuring the cluster listener", source }))?;
    loop {
        {
            let mut slots = slots.lock().expect("handshake threads do not panic holding the slots");
            if let Some(e) = slots.fatal.take() {
                return Err(Some(e));
            }
            if slots.joined.iter().all(Option::is_some) {
                slots.formed = true;
                return Ok(slots.joined.drain(..).flatten().map(|j| j.stream).collect());
            }
        }
        if stop.load(Ordering::SeqCst) {
            return Err(None);
        }
        match listener.accept() {
            Ok((stream, from)) => admit_in_background(plan, stream, from, &slots, &refusals, &in_flight),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => {
                tracing::warn!("cluster: accepting a connection failed: {e}");
                thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

fn admit_in_background(
    plan: &Arc<Plan>,
    stream: TcpStream,
    from: SocketAddr,
    slots: &Arc<Mutex<Slots>>,
    refusals: &Arc<Refusals>,
    in_flight: &Arc<AtomicUsize>,
) {
    if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        refusals.warn(from, &format!("{MAX_HANDSHAKES} handshakes are already under way"));
        return;
    }
    let (plan, slots, done) = (Arc::clone(plan), Arc::clone(slots), Arc::clone(in_flight));
    let refused = Arc::clone(refusals);
    let spawned = thread::Builder::new().name("cluster-handshake".into()).spawn(move || {
        admit(&plan, stream, from, &slots, &refused);
        done.fetch_sub(1, Ordering::SeqCst);
    });
    if let Err(e) = spawned {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        refusals.warn(from, &format!("no thread for its handshake: {e}"));
    }
}

/// Handshakes one incoming connection and files it: joined, refused, or fatal for this process.
fn admit(plan: &Plan, mut stream: TcpStream, from: SocketAddr, slots: &Mutex<Slots>, refusals: &Refusals) {
    if let Err(e) = handshake_deadlines(&stream) {
        refusals.warn(from, &e.to_string());
        return;
    }
    let received = match handshake::receive(&mut stream, &plan.secret.0) {
        Ok(received) => received,
        Err(e) => return refusals.warn(from, &e.to_string()),
    };
    let theirs = received.theirs;
    let mine = match plan.hello(theirs.from) {
        Ok(mine) => mine,
        Err(e) => return refusals.warn(from, &e.to_string()),
    };
    let (me, last) = (plan.process as u32, plan.processes as u32 - 1);
    let agreement = handshake::compare(&mine, &theirs, me + 1..=last);
    let mut slots = slots.lock().expect("handshake threads do not panic holding the slots");
    if slots.formed {
        tracing::info!("cluster: closed a late connection from {from}: every process has joined already");
        return;
    }
    let slot = (agreement == Agreement::Agree).then(|| (theirs.from - me - 1) as usize);
    let verdict = match slot.map(|i| slots.joined[i].as_ref().is_some_and(|j| is_alive(&j.stream))) {
        Some(true) => Verdict::AlreadyConnected,
        Some(false) => Verdict::Joined,
        None => Verdict::Refused,
    };
    if let Err(e) = received.respond(&mut stream, &plan.secret.0, &mine, verdict) {
        tracing::warn!("cluster: process {} at {from} left during the handshake: {e}", theirs.from);
        return;
    }
    file(&mut slots, slot, verdict, Joined { stream, from }, &mine, &theirs, agreement);
}

/// Records the outcome of a proven handshake.
fn file(
    slots: &mut Slots,
    slot: Option<usize>,
    verdict: Verdict,
    joined: Joined,
    mine: &Hello,
    theirs: &Hello,
    agreement: Agreement,
) {
    let (k, from) = (theirs.from, joined.from);
    match agreement {
        Agreement::Agree => {
            let entry = &mut slots.joined[slot.expect("an agreeing peer has a slot")];
            match (verdict, entry.as_ref().map(|e| e.from)) {
                (Verdict::Joined, Some(earlier)) => {
                    tracing::info!(
                        "cluster: process {k} rejoined from {from} (its connection from {earlier} had closed)"
                    )
                }
                (Verdict::Joined, None) => tracing::info!("cluster: process {k} joined from {from}"),
                (_, earlier) => {
                    let earlier = earlier.map_or(String::new(), |e| format!(" from {e}"));
                    slots
                        .refusals
                        .warn(from, &format!("a second process {k}: process {k} is already connected{earlier}"));
                    return;
                }
            }
            *entry = Some(joined);
        }
        Agreement::PeerStale => slots.refusals.warn(
            from,
            &format!(
                "process {k} belongs to generation {}, older than this cluster's {}",
                theirs.generation, mine.generation
            ),
        ),
        Agreement::SelfStale => {
            slots.fatal = Some(ClusterError::Stale {
                peer: k,
                address: from.to_string(),
                ours: mine.generation,
                theirs: theirs.generation,
            })
        }
        Agreement::Differ(what) => slots.refusals.warn(from, &format!("process {k} runs with {what}")),
    }
}

/// Whether the other end of a connection that is waiting for the cluster to form is still
/// there (a closed connection reads as end-of-file at once).
fn is_alive(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let alive = match stream.peek(&mut [0u8; 1]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    alive && stream.set_nonblocking(false).is_ok()
}
