//! The timely cluster: one entry point, [`execute`], that starts the workers of this process
//! and, in a multi-process run, connects the processes itself (hostfile, shared secret,
//! generation, an authenticated handshake per connection), hands the sockets to timely, and
//! turns a lost peer into one error line.
//!
//! Timely's own `Config::from_args` networking trusts whatever connects to its port (64 random
//! bytes crashed process 0) and reports a lost peer as a cascade of panics. Here the sockets are
//! connected and checked first ([`mesh`], [`handshake`]) and given to timely with
//! `initialize_networking_from_sockets`, as Materialize's cluster crate does.

mod handshake;
mod lost_peer;
mod mesh;

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Hooks, WorkerGuards};
use timely::worker::Worker;

use crate::config::Cluster;

/// The shortest secret accepted: 16 bytes (128 bits) from a good source resist guessing.
const MIN_SECRET_LEN: usize = 16;
/// The first port of the default addresses (`localhost:2101 + index`), as timely's.
const DEFAULT_FIRST_PORT: usize = 2101;

/// Why a cluster could not be started or formed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--hostfile {}: {source}; it lists one host:port per process", path.display())]
    Hostfile { path: PathBuf, source: std::io::Error },
    #[error("--hostfile {}: {found} host:port lines for -n {processes} processes; give one line per process", path.display())]
    HostfileShort { path: PathBuf, found: usize, processes: usize },
    #[error("{origin}: {text:?} is not host:port (e.g. 10.0.0.5:2101 or node-a:2101)")]
    BadAddress { origin: String, text: String },
    #[error("{origin}: {address} is already the address of process {first} ({first_origin}); every process needs its own host:port")]
    RepeatedAddress { origin: String, address: String, first: usize, first_origin: String },
    #[error(
        "{origin}: {address} is not a loopback address, and a cluster beyond this machine needs \
         --cluster-secret-file FILE (the same file on every process, e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`); \
         see docs/operations.md, Cluster"
    )]
    NoSecret { origin: String, address: String },
    #[error("cannot read --cluster-secret-file {}: {source}", path.display())]
    SecretFile { path: PathBuf, source: std::io::Error },
    #[error(
        "--cluster-secret-file {} holds {len} byte(s) (spaces and newlines at the ends not counted); \
         use at least {MIN_SECRET_LEN}, e.g. `openssl rand -hex 32 > FILE`", path.display()
    )]
    SecretTooShort { path: PathBuf, len: usize },
    #[error("too many processes or workers for the cluster handshake (-n {processes}, -w {workers})")]
    TooLarge { processes: usize, workers: usize },
    #[error("cannot listen on {address} ({origin}, this process's address): {source}")]
    Bind { address: String, origin: String, source: std::io::Error },
    #[error(
        "process {peer} at {address} belongs to generation {theirs}, this process to {ours}: this process is left \
         from an earlier start of the cluster; start it with --cluster-generation {theirs}"
    )]
    Stale { peer: u32, address: String, ours: u64, theirs: u64 },
    #[error(
        "cannot form the cluster: process {peer} at {address} runs with {what}; every process needs the same -n, -w, \
         --hostfile, --cluster-generation and stockflow version"
    )]
    Mismatch { peer: u32, address: String, what: String },
    #[error(
        "process {peer} at {address} already has a process {me} in its cluster: is another copy of this process \
         running? Stop it, or restart the whole cluster with a new --cluster-generation"
    )]
    Duplicate { peer: u32, address: String, me: u32 },
    #[error("cluster setup failed ({what}): {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("cannot start timely workers: {0}")]
    Timely(String),
}

/// The cluster's shared secret; never printed.
#[derive(Clone, Default)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(none)" } else { "Secret(****)" })
    }
}

impl Secret {
    /// The file's bytes without leading and trailing whitespace (a newline an editor added).
    fn read(path: &Path) -> Result<Secret, ClusterError> {
        let bytes = std::fs::read(path).map_err(|source| ClusterError::SecretFile { path: path.into(), source })?;
        let secret = bytes.trim_ascii();
        if secret.len() < MIN_SECRET_LEN {
            return Err(ClusterError::SecretTooShort { path: path.into(), len: secret.len() });
        }
        Ok(Secret(secret.to_vec()))
    }
}

/// One process's address, with where it was written, for messages.
#[derive(Clone, Debug)]
struct Address {
    text: String,
    origin: String,
}

impl Address {
    /// Whether every address the name resolves to is a loopback address (an unresolvable
    /// name counts as remote).
    fn is_loopback(&self) -> bool {
        match self.text.to_socket_addrs() {
            Ok(resolved) => {
                let resolved: Vec<_> = resolved.collect();
                !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback())
            }
            Err(_) => false,
        }
    }
}

/// A multi-process start, read and checked: every process's address and the secret.
#[derive(Clone, Debug)]
struct Plan {
    process: usize,
    processes: usize,
    workers: usize,
    generation: u64,
    addresses: Vec<Address>,
    secret: Secret,
}

impl Plan {
    /// This process's hello to process `to`.
    fn hello(&self, to: u32) -> std::io::Result<handshake::Hello> {
        // `plan` checked that these fit.
        let n = |v: usize| u32::try_from(v).expect("checked by plan");
        handshake::Hello::new(self.generation, n(self.processes), n(self.workers), n(self.process), to)
    }
}

/// Checks everything a start checks before connecting: the hostfile, the secret file, and
/// that a cluster beyond loopback has a secret. For the command line's validation step.
pub fn check(cluster: &Cluster) -> Result<(), ClusterError> {
    if cluster.processes > 1 {
        plan(cluster)?;
    } else if let Some(path) = &cluster.secret_file {
        Secret::read(path)?;
    }
    Ok(())
}

fn plan(cluster: &Cluster) -> Result<Plan, ClusterError> {
    if u32::try_from(cluster.processes).is_err() || u32::try_from(cluster.workers).is_err() {
        return Err(ClusterError::TooLarge { processes: cluster.processes, workers: cluster.workers });
    }
    let addresses = addresses(cluster)?;
    let secret = match &cluster.secret_file {
        Some(path) => Secret::read(path)?,
        None => {
            if let Some(remote) = addresses.iter().find(|a| !a.is_loopback()) {
                return Err(ClusterError::NoSecret { origin: remote.origin.clone(), address: remote.text.clone() });
            }
            Secret::default()
        }
    };
    Ok(Plan {
        process: cluster.process,
        processes: cluster.processes,
        workers: cluster.workers,
        generation: cluster.generation,
        addresses,
        secret,
    })
}

/// The first `-n` addresses of the hostfile (blank lines and `#` comments skipped), or the
/// defaults `localhost:2101 + index`.
fn addresses(cluster: &Cluster) -> Result<Vec<Address>, ClusterError> {
    let Some(path) = &cluster.hostfile else {
        let default = |i| Address {
            text: format!("localhost:{}", DEFAULT_FIRST_PORT + i),
            origin: "the default address (no --hostfile)".into(),
        };
        return Ok((0..cluster.processes).map(default).collect());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Hostfile { path: path.clone(), source })?;
    let mut found: Vec<Address> = Vec::new();
    let lines = text.lines().enumerate().map(|(i, line)| (i + 1, line.trim()));
    for (number, line) in lines.filter(|(_, l)| !l.is_empty() && !l.starts_with('#')).take(cluster.processes) {
        let address = Address { text: line.to_string(), origin: format!("{}:{number}", path.display()) };
        let port = line.rsplit_once(':').filter(|(host, _)| !host.is_empty()).map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(p)) if p > 0) {
            return Err(ClusterError::BadAddress { origin: address.origin, text: address.text });
        }
        if let Some(first) = found.iter().position(|a| a.text == address.text) {
            let first_origin = found[first].origin.clone();
            return Err(ClusterError::RepeatedAddress {
                origin: address.origin,
                address: address.text,
                first,
                first_origin,
            });
        }
        found.push(address);
    }
    if found.len() < cluster.processes {
        return Err(ClusterError::HostfileShort {
            path: path.clone(),
            found: found.len(),
            processes: cluster.processes,
        });
    }
    Ok(found)
}

/// Starts this process's workers running `func`: threads in this process, or, with `-n` > 1,
/// this process's part of a cluster whose connections were made and checked first. Returns
/// once the workers run; join the guards for their results. A lost peer ends the process
/// (see [`lost_peer`]).
pub fn execute<T, F>(cluster: &Cluster, func: F) -> Result<WorkerGuards<T>, ClusterError>
where
    T: Send + 'static,
    F: Fn(&mut Worker) -> T + Send + Sync + 'static,
{
    if cluster.processes <= 1 {
        let config = match cluster.workers {
            1 => timely::Config::thread(),
            n => timely::Config::process(n),
        };
        return timely::execute(config, func).map_err(ClusterError::Timely);
    }
    let plan = plan(cluster)?;
    if let Some(path) = &cluster.secret_file {
        warn_if_others_can_read(path);
    }
    let sockets = mesh::connect(&plan)?;
    lost_peer::watch(plan.addresses.iter().map(|a| a.text.clone()).collect());
    let hooks = Hooks::default();
    let local = ProcessBuilder::new_typed_vector(plan.workers, hooks.refill.clone(), hooks.spill.clone());
    let (builders, network) = initialize_networking_from_sockets(local, sockets, plan.process, plan.workers, hooks)
        .map_err(|source| ClusterError::Io { what: "starting timely's network threads", source })?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    timely::execute::execute_from(builders, Box::new(network), timely::WorkerConfig::default(), func)
        .map_err(ClusterError::Timely)
}

/// A secret readable by group or others is worth a warning (ssh refuses such keys; a
/// cluster's secret file is often created by a deployment tool with its own umask).
fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "--cluster-secret-file {} can be read by other users (mode {mode:03o}); `chmod 600` it",
                    path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(hostfile: Option<PathBuf>, secret_file: Option<PathBuf>) -> Cluster {
        Cluster { workers: 1, processes: 2, process: 0, hostfile, secret_file, generation: 0 }
    }

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_missing_hostfile_is_named() {
        let e = check(&cluster(Some("nosuchfile".into()), None)).unwrap_err().to_string();
        assert!(e.starts_with("--hostfile nosuchfile: No such file"), "{e}");
    }

    #[test]
    fn hostfile_lines_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let short = file(dir.path(), "short", "# the cluster\n127.0.0.1:4000\n\n");
        let e = check(&cluster(Some(short), None)).unwrap_err().to_string();
        assert!(e.contains("1 host:port lines for -n 2 processes"), "{e}");
        let bad = file(dir.path(), "bad", "127.0.0.1:4000\n127.0.0.1\n");
        let e = check(&cluster(Some(bad.clone()), None)).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: \"127.0.0.1\" is not host:port", bad.display())), "{e}");
        let twice = file(dir.path(), "twice", "127.0.0.1:4000\n127.0.0.1:4000\n");
        let e = check(&cluster(Some(twice), None)).unwrap_err().to_string();
        assert!(e.contains("already the address of process 0"), "{e}");
    }

    #[test]
    fn beyond_loopback_needs_a_secret_of_16_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let remote = file(dir.path(), "hosts", "127.0.0.1:4000\n192.0.2.7:4000\n");
        let e = check(&cluster(Some(remote.clone()), None)).unwrap_err().to_string();
        assert!(
            e.contains(":2: 192.0.2.7:4000 is not a loopback address") && e.contains("--cluster-secret-file"),
            "{e}"
        );
        let short = file(dir.path(), "short", "hunter2\n");
        let e = check(&cluster(Some(remote.clone()), Some(short))).unwrap_err().to_string();
        assert!(e.contains("holds 7 byte(s)") && !e.contains("hunter2"), "{e}");
        let good = file(dir.path(), "good", "0123456789abcdef0123\n");
        check(&cluster(Some(remote), Some(good))).unwrap();
        let local = file(dir.path(), "local", "127.0.0.1:4000\nlocalhost:4001\n");
        check(&cluster(Some(local), None)).unwrap();
    }

    #[test]
    fn a_secret_is_never_printed() {
        let secret = Secret(b"0123456789abcdef".to_vec());
        assert_eq!(format!("{secret:?}"), "Secret(****)");
    }
}
