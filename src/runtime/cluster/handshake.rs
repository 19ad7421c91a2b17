//! The handshake that opens every cluster connection: both ends say who they are (generation,
//! process index, settings) and prove they hold the cluster secret without sending it.
//!
//! The process with the higher index connects; the one it connects to accepts:
//!
//! ```text
//! acceptor  -> connector  CHALLENGE = magic, protocol, nonce_a
//! connector -> acceptor   HELLO_c, HMAC(secret, "connect" | CHALLENGE | HELLO_c)
//! acceptor  -> connector  PROVEN, HELLO_a, verdict, HMAC(secret, "accept" | CHALLENGE | HELLO_c | HELLO_a | verdict)
//!                     or  UNPROVEN (and the connection closes)
//! ```
//!
//! Each proof covers a nonce the other end just chose (nonce_a in the challenge, nonce_c in
//! HELLO_c), so a recorded handshake replayed later proves nothing, and the labels keep one
//! end's proof from being reflected as the other's. The acceptor proves nothing and reveals
//! nothing about the cluster until the connector has proved the secret. Without a secret file
//! (loopback only) the key is empty: the handshake then still checks the settings, not identity.
//! The traffic after the handshake is timely's own, unencrypted and unauthenticated.

use std::io::{self, Read, Write};
use std::ops::RangeInclusive;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The first bytes an acceptor sends: anything else is not a stockflow cluster process.
const MAGIC: [u8; 8] = *b"STOCKFLW";
/// The handshake's version; a change of the layout below changes it.
const PROTOCOL: u16 = 1;
const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;
const CHALLENGE_LEN: usize = MAGIC.len() + 2 + NONCE_LEN;
const VERSION_LEN: usize = 16;
const HELLO_LEN: usize = VERSION_LEN + 8 + 4 * 4 + NONCE_LEN;
/// The acceptor's first response byte: a proof follows.
const PROVEN: u8 = 0;
/// The acceptor's first response byte: the connector's proof was wrong; nothing follows.
const UNPROVEN: u8 = 1;

/// Labels that make the two proofs of one handshake different messages.
const CONNECT_LABEL: &[u8] = b"stockflow cluster connect";
const ACCEPT_LABEL: &[u8] = b"stockflow cluster accept";

/// Why a handshake did not complete (the connection is then dropped).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The connection failed, timed out or closed half-way.
    #[error("{}", describe_io(.0))]
    Io(#[from] io::Error),
    /// The acceptor's first bytes are not a stockflow challenge.
    #[error("it does not speak the stockflow cluster handshake (wrong first bytes)")]
    NotStockflow,
    /// Acceptor side: the connector's proof does not match the cluster secret.
    #[error(
        "it did not prove the cluster secret (a stranger, garbage, or a process with another --cluster-secret-file)"
    )]
    Unproven,
    /// Connector side: the acceptor says our proof does not match its secret.
    #[error("it refused our proof of the cluster secret: its --cluster-secret-file differs from ours")]
    ProofRefused,
    /// Connector side: the acceptor's proof does not match our secret.
    #[error("its proof of the cluster secret is wrong: its --cluster-secret-file differs from ours, or it is not a stockflow process")]
    BadProof,
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "no complete handshake in time".to_string(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            "it closed the connection during the handshake".to_string()
        }
        _ => e.to_string(),
    }
}

/// What one process says about itself; the two ends of a connection must agree on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The stockflow version and wire layout ([`version_text`]), NUL-padded: processes of one
    /// cluster run the same dataflow.
    pub version: [u8; VERSION_LEN],
    /// The cluster's generation (`--cluster-generation`).
    pub generation: u64,
    /// Processes in the cluster (`-n`).
    pub processes: u32,
    /// Workers per process (`-w`).
    pub workers: u32,
    /// The sender's process index.
    pub from: u32,
    /// The index the sender believes the receiver has (from its hostfile).
    pub to: u32,
    /// A fresh random value: it makes the other end's proof answer this handshake only.
    pub nonce: [u8; NONCE_LEN],
}

/// This build's version as the handshake compares it: the stockflow version and the layout of
/// the events the processes exchange (`0.1.0+wire2`), so that builds whose records the other
/// could not read refuse each other.
fn version_text() -> String {
    format!("{}+wire{}", env!("CARGO_PKG_VERSION"), dataflows::wire::LAYOUT)
}

impl Hello {
    /// This binary's hello to process `to`, with a fresh nonce.
    pub fn new(generation: u64, processes: u32, workers: u32, from: u32, to: u32) -> io::Result<Hello> {
        let mut version = [0u8; VERSION_LEN];
        let text = version_text();
        let text = text.as_bytes();
        let len = text.len().min(VERSION_LEN);
        version[..len].copy_from_slice(&text[..len]);
        Ok(Hello { version, generation, processes, workers, from, to, nonce: nonce()? })
    }

    fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.version);
        put(&self.generation.to_be_bytes());
        for n in [self.processes, self.workers, self.from, self.to] {
            put(&n.to_be_bytes());
        }
        put(&self.nonce);
        out
    }

    fn decode(bytes: &[u8; HELLO_LEN]) -> Hello {
        let (version, rest) = bytes.split_at(VERSION_LEN);
        let (generation, rest) = rest.split_at(8);
        let word = |i: usize| u32::from_be_bytes(rest[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        Hello {
            version: version.try_into().expect("VERSION_LEN bytes"),
            generation: u64::from_be_bytes(generation.try_into().expect("8 bytes")),
            processes: word(0),
            workers: word(1),
            from: word(2),
            to: word(3),
            nonce: rest[16..].try_into().expect("NONCE_LEN bytes"),
        }
    }

    /// The version as text, for messages.
    pub fn version_text(&self) -> String {
        String::from_utf8_lossy(&self.version).trim_end_matches('\0').to_string()
    }
}

/// The acceptor's decision on a proven connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The connection is part of the cluster now.
    Joined,
    /// A live connection from a process with this index is already part of the cluster.
    AlreadyConnected,
    /// The two ends disagree ([`compare`] says how; each end computes it from both hellos).
    Refused,
}

impl Verdict {
    fn byte(self) -> u8 {
        match self {
            Verdict::Joined => 0,
            Verdict::AlreadyConnected => 1,
            Verdict::Refused => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Verdict> {
        [Verdict::Joined, Verdict::AlreadyConnected, Verdict::Refused].into_iter().find(|v| v.byte() == byte)
    }
}

/// How two hellos relate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agreement {
    /// Same generation and settings; the indices fit.
    Agree,
    /// The other process belongs to an older generation.
    PeerStale,
    /// The other process belongs to a newer generation: this one is left from an earlier start.
    SelfStale,
    /// Same generation, different settings: the text says what the other process runs with.
    Differ(String),
}

/// Compares `theirs` with `mine`; `expected` are the indices the other end may have.
pub fn compare(mine: &Hello, theirs: &Hello, expected: RangeInclusive<u32>) -> Agreement {
    use std::cmp::Ordering::*;
    match theirs.generation.cmp(&mine.generation) {
        Less => return Agreement::PeerStale,
        Greater => return Agreement::SelfStale,
        Equal => {}
    }
    let differ = if theirs.version != mine.version {
        format!("stockflow {} (this process: {})", theirs.version_text(), mine.version_text())
    } else if theirs.processes != mine.processes {
        format!("-n {} (this process: -n {})", theirs.processes, mine.processes)
    } else if theirs.workers != mine.workers {
        format!("-w {} (this process: -w {})", theirs.workers, mine.workers)
    } else if theirs.to != mine.from {
        format!(
            "a hostfile that gives this process's address to process {} (this is process {}): use one hostfile everywhere",
            theirs.to, mine.from
        )
    } else if !expected.contains(&theirs.from) {
        format!(
            "index {} where process {} was expected: use one hostfile everywhere",
            theirs.from,
            if expected.start() == expected.end() { expected.start().to_string() } else { format!("{expected:?}") }
        )
    } else {
        return Agreement::Agree;
    };
    Agreement::Differ(differ)
}

/// A connector's proven hello, waiting for the acceptor's verdict ([`Received::respond`]).
pub struct Received {
    challenge: [u8; CHALLENGE_LEN],
    hello: [u8; HELLO_LEN],
    /// What the connector says about itself.
    pub theirs: Hello,
}

/// The acceptor's first half: challenges the connector and checks its proof. A wrong proof is
/// answered with UNPROVEN (so a peer with another secret can say so) and refused.
pub fn receive<S: Read + Write>(stream: &mut S, key: &[u8]) -> Result<Received, HandshakeError> {
    let mut challenge = [0u8; CHALLENGE_LEN];
    challenge[..MAGIC.len()].copy_from_slice(&MAGIC);
    challenge[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&PROTOCOL.to_be_bytes());
    challenge[MAGIC.len() + 2..].copy_from_slice(&nonce()?);
    stream.write_all(&challenge)?;
    let mut hello = [0u8; HELLO_LEN];
    let mut proof = [0u8; MAC_LEN];
    stream.read_exact(&mut hello)?;
    stream.read_exact(&mut proof)?;
    if !verify(key, CONNECT_LABEL, &[&challenge, &hello], &proof) {
        // Best effort: the refusal is a courtesy to a misconfigured peer.
        let _ = stream.write_all(&[UNPROVEN]);
        return Err(HandshakeError::Unproven);
    }
    Ok(Received { challenge, theirs: Hello::decode(&hello), hello })
}

impl Received {
    /// The acceptor's second half: its own hello and verdict, with its proof.
    pub fn respond<S: Write>(&self, stream: &mut S, key: &[u8], mine: &Hello, verdict: Verdict) -> io::Result<()> {
        let hello = mine.encode();
        let verdict = [verdict.byte()];
        let proof = sign(key, ACCEPT_LABEL, &[&self.challenge, &self.hello, &hello, &verdict]);
        let mut message = Vec::with_capacity(1 + HELLO_LEN + 1 + MAC_LEN);
        message.push(PROVEN);
        message.extend_from_slice(&hello);
        message.extend_from_slice(&verdict);
        message.extend_from_slice(&proof);
        stream.write_all(&message)?;
        stream.flush()
    }
}

/// The connector's side: answers the challenge with `mine` and its proof, and returns the
/// acceptor's proven hello and verdict.
pub fn connect<S: Read + Write>(stream: &mut S, key: &[u8], mine: &Hello) -> Result<(Hello, Verdict), HandshakeError> {
    let mut challenge = [0u8; CHALLENGE_LEN];
    stream.read_exact(&mut challenge)?;
    if challenge[..MAGIC.len()] != MAGIC || challenge[MAGIC.len()..MAGIC.len() + 2] != PROTOCOL.to_be_bytes() {
        return Err(HandshakeError::NotStockflow);
    }
    let hello = mine.encode();
    let mut message = Vec::with_capacity(HELLO_LEN + MAC_LEN);
    message.extend_from_slice(&hello);
    message.extend_from_slice(&sign(key, CONNECT_LABEL, &[&challenge, &hello]));
    stream.write_all(&message)?;
    stream.flush()?;
    let mut status = [0u8; 1];
    stream.read_exact(&mut status)?;
    match status[0] {
        PROVEN => {}
        UNPROVEN => return Err(HandshakeError::ProofRefused),
        _ => return Err(HandshakeError::NotStockflow),
    }
    let mut theirs = [0u8; HELLO_LEN];
    let mut verdict = [0u8; 1];
    let mut proof = [0u8; MAC_LEN];
    stream.read_exact(&mut theirs)?;
    stream.read_exact(&mut verdict)?;
    stream.read_exact(&mut proof)?;
    if !verify(key, ACCEPT_LABEL, &[&challenge, &hello, &theirs, &verdict], &proof) {
        return Err(HandshakeError::BadProof);
    }
    let verdict = Verdict::from_byte(verdict[0]).ok_or(HandshakeError::NotStockflow)?;
    Ok((Hello::decode(&theirs), verdict))
}

/// A fresh nonce from the operating system's random source (a handshake nonce must not be
/// predictable, so it is the one random value here that is not seeded).
fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(format!("no random bytes for a handshake nonce: {e}")))?;
    Ok(nonce)
}

fn keyed(key: &[u8], label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(label);
    for part in parts {
        mac.update(part);
    }
    mac
}

fn sign(key: &[u8], label: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    keyed(key, label, parts).finalize().into_bytes().into()
}

/// Checks a proof in constant time.
fn verify(key: &[u8], label: &[u8], parts: &[&[u8]], proof: &[u8]) -> bool {
    keyed(key, label, parts).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    fn hello(generation: u64, from: u32, to: u32) -> Hello {
        Hello::new(generation, 2, 1, from, to).unwrap()
    }

    /// Runs the acceptor on one end of a loopback connection and `connector` on the other.
    fn pair<T: Send + 'static>(
        acceptor_key: &'static [u8],
        connector: impl FnOnce(TcpStream) -> T + Send + 'static,
    ) -> (Result<Received, HandshakeError>, T) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let other = thread::spawn(move || connector(TcpStream::connect(address).unwrap()));
        let (mut stream, _) = listener.accept().unwrap();
        let received = receive(&mut stream, acceptor_key).and_then(|r| {
            let mine = hello(0, 0, r.theirs.from);
            let verdict = match compare(&mine, &r.theirs, 1..=1) {
                Agreement::Agree => Verdict::Joined,
                _ => Verdict::Refused,
            };
            r.respond(&mut stream, acceptor_key, &mine, verdict)?;
            Ok(r)
        });
        (received, other.join().unwrap())
    }

    #[test]
    fn same_secret_joins_and_both_ends_see_each_other() {
        let (received, connected) =
            pair(b"a secret of 16 bytes", |mut s| connect(&mut s, b"a secret of 16 bytes", &hello(0, 1, 0)));
        assert_eq!(received.unwrap().theirs.from, 1);
        let (theirs, verdict) = connected.unwrap();
        assert_eq!((theirs.from, theirs.to, verdict), (0, 1, Verdict::Joined));
    }

    #[test]
    fn another_secret_is_refused_on_both_ends() {
        let (received, connected) =
            pair(b"the right secret!", |mut s| connect(&mut s, b"the wrong secret!", &hello(0, 1, 0)));
        assert!(matches!(received, Err(HandshakeError::Unproven)), "{:?}", received.err());
        assert!(matches!(connected, Err(HandshakeError::ProofRefused)), "{connected:?}");
    }

    #[test]
    fn garbage_is_refused() {
        let (received, ()) = pair(b"", |mut s| {
            s.write_all(&[0x5a; HELLO_LEN + MAC_LEN]).unwrap();
            let _ = s.read(&mut [0u8; 64]);
        });
        assert!(matches!(received, Err(HandshakeError::Unproven)), "{:?}", received.err());
    }

    #[test]
    fn a_recorded_proof_does_not_answer_a_new_challenge() {
        // Record what an honest connector sends to one challenge...
        let (first, recorded) = pair(b"a secret of 16 bytes", |mut s| {
            let mut challenge = [0u8; CHALLENGE_LEN];
            s.read_exact(&mut challenge).unwrap();
            let hello = hello(0, 1, 0).encode();
            let proof = sign(b"a secret of 16 bytes", CONNECT_LABEL, &[&challenge, &hello]);
            s.write_all(&hello).unwrap();
            s.write_all(&proof).unwrap();
            let _ = s.read(&mut [0u8; 256]);
            (hello, proof)
        });
        assert!(first.is_ok());
        // ...and replay it to a fresh challenge.
        let (replayed, ()) = pair(b"a secret of 16 bytes", move |mut s| {
            let mut challenge = [0u8; CHALLENGE_LEN];
            s.read_exact(&mut challenge).unwrap();
            s.write_all(&recorded.0).unwrap();
            s.write_all(&recorded.1).unwrap();
            let _ = s.read(&mut [0u8; 256]);
        });
        assert!(matches!(replayed, Err(HandshakeError::Unproven)), "{:?}", replayed.err());
    }

    #[test]
    fn the_older_generation_is_stale_and_settings_must_match() {
        let mine = hello(3, 0, 1);
        assert_eq!(compare(&mine, &hello(2, 1, 0), 1..=1), Agreement::PeerStale);
        assert_eq!(compare(&mine, &hello(4, 1, 0), 1..=1), Agreement::SelfStale);
        assert_eq!(compare(&mine, &hello(3, 1, 0), 1..=1), Agreement::Agree);
        let more_workers = Hello { workers: 2, ..hello(3, 1, 0) };
        assert!(matches!(compare(&mine, &more_workers, 1..=1), Agreement::Differ(w) if w.starts_with("-w 2")));
        assert!(matches!(compare(&mine, &hello(3, 1, 1), 1..=1), Agreement::Differ(w) if w.contains("hostfile")));
    }

    #[test]
    fn hello_round_trips() {
        let h = Hello { generation: u64::MAX - 5, processes: 7, workers: 3, from: 6, to: 2, ..hello(0, 0, 0) };
        assert_eq!(Hello::decode(&h.encode()), h);
        assert_eq!(h.version_text(), format!("{}+wire2", env!("CARGO_PKG_VERSION")));
    }
}
