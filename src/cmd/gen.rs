//! `stockflow gen`: the workload generator — deterministic fixture files of a synthetic retail
//! network (stores served by distribution centers served by vendors) for tests and benchmarks.
//!
//! The generator runs a small inventory simulation so that the messages are consistent with
//! each other: sales deplete the stock it tracks per key, a store that falls to its reorder point
//! gets a delivery from its DC after a lead time (the DC's stock goes down by a `transfer`
//! adjust when the store's `receipt` arrives), a DC that falls to its reorder point opens a `po`
//! on its vendor, which is received and closed later, and cycle counts report the tracked stock
//! give or take some shrinkage. Holds are reserved and, mostly, released or fulfilled within
//! their 15 minutes.
//!
//! Time is cut into `--events` slots spread over `--duration-ms` by a daily curve; each slot
//! holds exactly one message — a follow-up that has come due (release, delivery, PO step) or
//! else a fresh primary event — so the slot times, hence every partition's `ts`, never decrease
//! (until `--disorder` moves some back). The simulation draws from one random stream and
//! `--disorder` and `--bad` from one each, so a workload with bad lines is the clean workload of
//! the same seed with bad lines inserted.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::config::value;
use crate::io::kafka::KafkaArgs;
use crate::cmd::produce::PartitionProducer;
use crate::io::source::file::message_of;

/// Options of `stockflow gen`.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Output directory (created if missing); gets part-00.jsonl, part-01.jsonl, ...
    #[arg(long, required_unless_present = "kafka", conflicts_with = "kafka")]
    pub out: Option<PathBuf>,
    /// Produce to this topic instead of writing files: file i's lines become partition i's
    /// messages, in order (the topic is created with --partitions partitions if missing).
    #[arg(long, value_name = "TOPIC")]
    pub kafka: Option<String>,
    /// The broker for --kafka.
    #[command(flatten)]
    pub kafka_args: KafkaArgs,
    /// Number of SKUs (K000000, K000001, ...).
    #[arg(long, default_value_t = 1000)]
    pub skus: u32,
    /// Number of stores (S0000, S0001, ...); store i is served by DC i % dcs.
    #[arg(long, default_value_t = 100)]
    pub stores: u32,
    /// Number of distribution centers (DC00, DC01, ...).
    #[arg(long, default_value_t = 2)]
    pub dcs: u32,
    /// Number of movement, hold and PO messages; the setup (a policy and a count per key) and
    /// bad lines are extra.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Number of output files; a key's messages all go to one file, chosen by its hash.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Random seed: the same seed and flags give byte-identical files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Zipf exponent of SKU popularity (store sizes use half of it); 0 = uniform.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Time of the setup messages and start of the events: ms since the epoch or RFC 3339 with
    /// a zone (2023-11-14T22:13:20Z).
    #[arg(long, value_name = "TIME", default_value_t = 1_700_000_000_000, value_parser = value::time)]
    pub start_ms: u64,
    /// The events are spread over this long after --start-ms (a bare number is milliseconds;
    /// or 90s, 30m, 24h).
    #[arg(long, value_name = "DURATION", default_value_t = 86_400_000, value_parser = value::millis)]
    pub duration_ms: u64,
    /// Fraction of events whose ts is moved back by up to 5 seconds.
    #[arg(long, default_value_t = 0.0)]
    pub disorder: f64,
    /// Fraction of bad lines among the event lines (invalid JSON, bad fields, unknown types).
    #[arg(long, default_value_t = 0.0)]
    pub bad: f64,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Writes the workload.
pub fn run(args: GenArgs) -> Result<()> {
    validate(&args)?;
    let started = Instant::now();
    let mut gen = Gen::new(&args)?;
    gen.setup()?;
    gen.events(started)?;
    gen.out.finish()?;
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let mb = gen.out.bytes as f64 / 1e6;
        tracing::info!(
            "gen: {} lines ({} setup, {} events, {} bad) into {} partitions of {}: {secs:.2} s, {:.0} events/s, {mb:.1} MB, {:.1} MB/s",
            gen.setup_lines + args.events + gen.bad_lines,
            gen.setup_lines,
            args.events,
            gen.bad_lines,
            args.partitions,
            gen.out.target.name(),
            args.events as f64 / secs,
            mb / secs,
        );
    }
    Ok(())
}

fn validate(a: &GenArgs) -> Result<()> {
    if a.skus == 0 || a.stores == 0 || a.dcs == 0 {
        bail!("need --skus, --stores and --dcs of at least 1 (got {}, {}, {})", a.skus, a.stores, a.dcs);
    }
    if a.partitions == 0 || a.partitions > 1024 {
        bail!("--partitions must be 1..=1024 (got {}): each partition is an open file or a buffer", a.partitions);
    }
    let keys = u64::from(a.skus) * (u64::from(a.stores) + u64::from(a.dcs));
    if keys > u64::from(u32::MAX) {
        bail!("--skus x (--stores + --dcs) = {keys} keys is more than the generator can track (2^32 - 1)");
    }
    if !(a.zipf.is_finite() && a.zipf >= 0.0) {
        bail!("--zipf must be a finite number >= 0 (got {})", a.zipf);
    }
    if !(0.0..=1.0).contains(&a.disorder) {
        bail!("--disorder must be a fraction in 0..=1 (got {})", a.disorder);
    }
    if !(0.0..1.0).contains(&a.bad) {
        bail!("--bad must be a fraction in 0..1 (got {})", a.bad);
    }
    if a.duration_ms == 0 {
        bail!("--duration-ms must be at least 1");
    }
    // Expiries and ETAs reach past the last event (by far less than this); they must stay
    // valid times too.
    let last = a.duration_ms.saturating_mul(3).saturating_add(HOLD_MS).saturating_add(a.start_ms);
    if last > dataflows::model::MAX_TIME {
        bail!(
            "--start-ms {} plus three times --duration-ms {} goes past the end of year 9999 (the largest valid ts)",
            a.start_ms,
            a.duration_ms
        );
    }
    Ok(())
}

/// How much busier than average the busy hours are (HOURLY's top vs its mean, roughly).
const PEAK: f64 = 1.6;
/// A hold's lifetime: SPEC's default, also written as `expires_at`.
const HOLD_MS: u64 = 900_000;
/// How far `--disorder` moves a ts back, at most.
const MAX_SHIFT_MS: u64 = 5_000;
/// Largest quantity or policy number SPEC allows.
const MAX_QTY: i64 = dataflows::model::MAX_QTY;

/// Relative event rate by UTC hour of day: quiet nights, a peak in the late afternoon/evening.
const HOURLY: [f64; 24] = [
    0.25, 0.15, 0.1, 0.1, 0.1, 0.15, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, //
    2.1, 2.2, 2.2, 2.3, 2.5, 2.8, 3.0, 2.9, 2.5, 1.8, 1.1, 0.5,
];

// Primary events other than sales, as shares of the primary draws (the rest are sales).
// Follow-ups (hold ends, deliveries, PO steps) take some of the slots on top, which brings
// sales to about 80% of all events.
const P_RETURN: f64 = 0.033;
const P_COUNT: f64 = P_RETURN + 0.022;
const P_ADJUST: f64 = P_COUNT + 0.007;
const P_RESERVE: f64 = P_ADJUST + 0.068;
const P_POLICY: f64 = P_RESERVE + 0.0005;

// ---------------------------------------------------------------------------------------------
// Random numbers: xoshiro256** seeded by SplitMix64, so the workload is the same on every
// platform and needs no dependency.

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut s = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng([splitmix64(&mut s), splitmix64(&mut s), splitmix64(&mut s), splitmix64(&mut s)])
    }

    #[inline]
    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    #[inline]
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0); the multiply-shift bias is far below anything observable here.
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in lo..=hi.
    #[inline]
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    #[inline]
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

/// Walker's alias table: O(1) draws from a fixed discrete distribution (Zipf over SKUs/stores).
struct Alias {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl Alias {
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![1.0; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Alias { prob, alias }
    }

    #[inline]
    fn sample(&self, rng: &mut Rng) -> u32 {
        let i = rng.below(self.prob.len() as u64) as usize;
        if rng.f64() < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }
}

fn zipf_weights(n: u32, s: f64) -> Vec<f64> {
    (1..=n).map(|r| 1.0 / f64::from(r).powf(s)).collect()
}

// ---------------------------------------------------------------------------------------------
// The daily curve: slot k of n gets a time drawn in the k-th n-quantile of the curve's mass
// (stratified), so slot times never decrease and follow the hourly weights.

struct Curve {
    /// (offset of the segment from start, its length, its weight per ms, mass before it)
    segs: Vec<(u64, u64, f64, f64)>,
    total: f64,
    n: f64,
    i: usize,
    last: u64,
}

impl Curve {
    fn new(start: u64, duration: u64, n: u64) -> Self {
        let mut segs = Vec::new();
        let mut off = 0;
        let mut mass = 0.0;
        while off < duration {
            let t = start + off;
            let len = (3_600_000 - t % 3_600_000).min(duration - off);
            let w = HOURLY[((t / 3_600_000) % 24) as usize];
            segs.push((off, len, w, mass));
            mass += w * len as f64;
            off += len;
        }
        Curve { segs, total: mass, n: n.max(1) as f64, i: 0, last: 0 }
    }

    /// The offset from start of slot k (k non-decreasing over calls), u uniform in [0, 1).
    fn at(&mut self, k: u64, u: f64) -> u64 {
        let m = (k as f64 + u) / self.n * self.total;
        while self.i + 1 < self.segs.len() && self.segs[self.i + 1].3 <= m {
            self.i += 1;
        }
        let (off, len, w, before) = self.segs[self.i];
        let within = (((m - before) / w).max(0.0) as u64).min(len - 1);
        // Guards the non-decreasing promise against float rounding at segment edges.
        self.last = self.last.max(off + within);
        self.last
    }
}

// ---------------------------------------------------------------------------------------------
// Output: one hand-filled byte buffer per partition, written out in large chunks to a file or,
// line by line, to a topic partition.

struct Out {
    bufs: Vec<Vec<u8>>,
    target: Target,
    flush_at: usize,
    bytes: u64,
}

/// Where the partitions' lines go.
enum Target {
    Files { files: Vec<File>, paths: Vec<PathBuf>, dir: PathBuf },
    Kafka(PartitionProducer),
}

impl Target {
    /// Creates `part-NN.jsonl` files in `dir`, or opens `--kafka`'s topic.
    fn open(a: &GenArgs) -> Result<Self> {
        match (&a.out, &a.kafka) {
            (_, Some(topic)) => {
                let why = format!("gen --partitions {0} sends to {0} partitions", a.partitions);
                Ok(Target::Kafka(PartitionProducer::open(&a.kafka_args, topic, a.partitions as usize, &why)?))
            }
            (Some(dir), None) => Self::files(dir, a.partitions),
            (None, None) => bail!("gen needs --out DIR or --kafka TOPIC"),
        }
    }

    fn files(dir: &Path, partitions: u32) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let width = digits(u64::from(partitions - 1)).max(2);
        let mut ours = Vec::new();
        let (mut files, mut paths) = (Vec::new(), Vec::new());
        for p in 0..partitions {
            let name = format!("part-{p:0width$}.jsonl");
            let path = dir.join(&name);
            files.push(File::create(&path).with_context(|| format!("cannot create {}", path.display()))?);
            paths.push(path);
            ours.push(name);
        }
        // `replay DIR` reads every *.jsonl in DIR: leftovers of an earlier run would be mixed in.
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut stale: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".jsonl") && !ours.contains(n))
                .collect();
            if !stale.is_empty() {
                stale.sort();
                tracing::warn!(
                    "gen: {} also holds {} (not written by this run; `replay {}` would read them too)",
                    dir.display(),
                    stale.join(", "),
                    dir.display()
                );
            }
        }
        Ok(Target::Files { files, paths, dir: dir.to_path_buf() })
    }

    /// The output, for messages: the directory or the topic.
    fn name(&self) -> String {
        match self {
            Target::Files { dir, .. } => dir.display().to_string(),
            Target::Kafka(producer) => format!("topic {}", producer.topic()),
        }
    }

    /// Writes `buf` (whole lines) to partition `p`.
    fn write(&mut self, p: usize, buf: &[u8]) -> Result<()> {
        match self {
            Target::Files { files, paths, .. } => {
                files[p].write_all(buf).with_context(|| format!("cannot write {}", paths[p].display()))
            }
            // A message per line, as `stockflow produce` would send the file's lines.
            Target::Kafka(producer) => {
                for message in buf.split(|&b| b == b'\n').filter_map(message_of) {
                    producer.send(p, message)?;
                }
                producer.poll();
                Ok(())
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self {
            Target::Files { .. } => Ok(()),
            Target::Kafka(producer) => producer.flush(&format!("gen --kafka {}", producer.topic())),
        }
    }
}

impl Out {
    fn create(target: Target, partitions: u32) -> Self {
        // Bounds the buffers' memory when there are many partitions.
        let flush_at = ((64usize << 20) / partitions as usize).clamp(64 << 10, 1 << 20);
        Out { bufs: (0..partitions).map(|_| Vec::with_capacity(flush_at + 4096)).collect(), target, flush_at, bytes: 0 }
    }

    #[inline]
    fn after_line(&mut self, p: usize) -> Result<()> {
        if self.bufs[p].len() >= self.flush_at {
            self.flush(p)?;
        }
        Ok(())
    }

    fn flush(&mut self, p: usize) -> Result<()> {
        let buf = &mut self.bufs[p];
        self.target.write(p, buf)?;
        self.bytes += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    fn pending_bytes(&self) -> u64 {
        self.bytes + self.bufs.iter().map(|b| b.len() as u64).sum::<u64>()
    }

    fn finish(&mut self) -> Result<()> {
        for p in 0..self.bufs.len() {
            self.flush(p)?;
        }
        self.target.finish()
    }
}

/// How many decimal digits `v` has (the width of zero-padded names and file numbers).
fn digits(v: u64) -> usize {
    itoa::Buffer::new().format(v).len()
}

/// Appends `v` in decimal.
#[inline]
fn push_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `v` in decimal, with a leading `-` when negative.
#[inline]
fn push_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

// Line pieces. Every message starts `{"type":"…","ts":N` and follows with its fields in SPEC's
// table order, like the hand-written fixtures.

#[inline]
fn begin(buf: &mut Vec<u8>, ty: &[u8], ts: u64) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(ty);
    buf.extend_from_slice(b"\",\"ts\":");
    push_u64(buf, ts);
}

#[inline]
fn key(buf: &mut Vec<u8>, sku: &[u8], loc: &[u8]) {
    buf.extend_from_slice(b",\"sku\":\"");
    buf.extend_from_slice(sku);
    buf.extend_from_slice(b"\",\"loc\":\"");
    buf.extend_from_slice(loc);
    buf.push(b'"');
}

/// `name` is the whole `,"field":` prefix.
#[inline]
fn int(buf: &mut Vec<u8>, name: &[u8], v: i64) {
    buf.extend_from_slice(name);
    push_i64(buf, v);
}

/// An id like `"R123"`: `name` is the `,"field":"` prefix.
#[inline]
fn id(buf: &mut Vec<u8>, name: &[u8], prefix: &[u8], n: u64) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(prefix);
    push_u64(buf, n);
    buf.push(b'"');
}

#[inline]
fn end(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"}\n");
}

// ---------------------------------------------------------------------------------------------
// The network and its simulated stock.

struct Names {
    /// Every SKU id back to back, each `sku_width` bytes.
    skus: Vec<u8>,
    sku_width: usize,
    /// Stores first, then DCs.
    locs: Vec<Vec<u8>>,
    /// `vendor:V0` ... `vendor:V6`.
    vendors: Vec<Vec<u8>>,
}

impl Names {
    #[inline]
    fn sku(&self, i: u32) -> &[u8] {
        let w = self.sku_width;
        &self.skus[i as usize * w..(i as usize + 1) * w]
    }
}

/// What the generator believes about one key, enough to make the next messages plausible.
#[derive(Clone, Default)]
struct KeyState {
    on_hand: i64,
    /// Stores: the delivery on its way. DCs: the open PO's quantity.
    inbound: i64,
    /// DCs: stock promised to store deliveries not yet shipped.
    allocated: i64,
    /// The open PO of a DC key (0: none).
    po: u64,
    safety: i32,
    rp: i32,
    out: i32,
    pack: i32,
    moq: i32,
}

fn policy(safety: i64, rp: i64, q: i64, pack: i64, moq: i64) -> KeyState {
    let c = |v: i64| v.clamp(0, MAX_QTY) as i32;
    let rp = c(rp);
    KeyState {
        safety: c(safety),
        rp,
        out: c(i64::from(rp) + q.max(1)),
        pack: c(pack).max(1),
        moq: c(moq),
        ..KeyState::default()
    }
}

fn round_up(q: i64, pack: i64) -> i64 {
    (q + pack - 1) / pack * pack
}

fn normalized(w: &[f64]) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

/// A follow-up message that comes due later. Ordered by (due, seq) only: seq makes the heap's
/// order total, hence the output deterministic.
struct Pending {
    due: u64,
    seq: u64,
    kind: Kind,
    sku: u32,
    loc: u32,
    id: u64,
    qty: i64,
}

#[derive(Clone, Copy)]
enum Kind {
    Release,
    Fulfill,
    /// The DC ships a store's delivery (a `transfer` adjust at the DC); the store's receipt follows.
    Ship,
    StoreReceipt,
    PoOpen,
    /// The vendor confirms a different quantity.
    PoConfirm,
    /// The first receipt on a PO: in full, or a part followed by `PoRest` and `PoLast`.
    PoReceipt,
    PoRest,
    PoLast,
    PoClose,
    PoCancel,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Reversed: BinaryHeap is a max-heap and the earliest due must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct Gen {
    skus: u32,
    stores: u32,
    dcs: u32,
    nlocs: u32,
    zipf: f64,
    start: u64,
    duration: u64,
    events: u64,
    disorder: f64,
    bad: f64,
    quiet: bool,
    /// Mean lead time of a store delivery and of a vendor PO, in ms.
    store_lead: f64,
    dc_lead: f64,
    names: Names,
    keys: Vec<KeyState>,
    partition: Vec<u16>,
    sku_pick: Alias,
    store_pick: Alias,
    rng: Rng,
    /// Draws for --disorder and for --bad, apart from the simulation and from each other.
    noise: Rng,
    faults: Rng,
    pending: BinaryHeap<Pending>,
    seq: u64,
    next_res: u64,
    next_po: u64,
    out: Out,
    setup_lines: u64,
    bad_lines: u64,
}

impl Gen {
    fn new(a: &GenArgs) -> Result<Self> {
        let digits_of = |n: u32, min: usize| digits(u64::from(n - 1)).max(min);
        let (sku_digits, store_digits, dc_digits) = (digits_of(a.skus, 6), digits_of(a.stores, 4), digits_of(a.dcs, 2));
        let mut skus = Vec::with_capacity(a.skus as usize * (sku_digits + 1));
        for i in 0..a.skus {
            skus.extend_from_slice(format!("K{i:0sku_digits$}").as_bytes());
        }
        let mut locs: Vec<Vec<u8>> = (0..a.stores).map(|j| format!("S{j:0store_digits$}").into_bytes()).collect();
        locs.extend((0..a.dcs).map(|d| format!("DC{d:0dc_digits$}").into_bytes()));
        let names = Names {
            skus,
            sku_width: sku_digits + 1,
            locs,
            vendors: (0..7).map(|v| format!("vendor:V{v}").into_bytes()).collect(),
        };

        let nlocs = a.stores + a.dcs;
        let nkeys = a.skus as usize * nlocs as usize;
        // Kafka-like: the partition is a hash of the key "sku@loc", the same for every seed.
        let mut partition = Vec::with_capacity(nkeys);
        for s in 0..a.skus {
            for l in 0..nlocs {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for &b in names.sku(s).iter().chain(b"@").chain(names.locs[l as usize].iter()) {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                partition.push((splitmix64(&mut h) % u64::from(a.partitions)) as u16);
            }
        }

        let out = Out::create(Target::open(a)?, a.partitions);
        Ok(Gen {
            skus: a.skus,
            stores: a.stores,
            dcs: a.dcs,
            nlocs,
            zipf: a.zipf,
            start: a.start_ms,
            duration: a.duration_ms,
            events: a.events,
            disorder: a.disorder,
            bad: a.bad,
            quiet: a.quiet,
            store_lead: (a.duration_ms as f64 / 12.0).max(1.0),
            dc_lead: (a.duration_ms as f64 / 8.0).max(1.0),
            names,
            keys: vec![KeyState::default(); nkeys],
            partition,
            sku_pick: Alias::new(&zipf_weights(a.skus, a.zipf)),
            store_pick: Alias::new(&zipf_weights(a.stores, a.zipf / 2.0)),
            rng: Rng::new(a.seed, 1),
            noise: Rng::new(a.seed, 2),
            faults: Rng::new(a.seed, 3),
            pending: BinaryHeap::new(),
            seq: 0,
            next_res: 1,
            next_po: 1,
            out,
            setup_lines: 0,
            bad_lines: 0,
        })
    }

    #[inline]
    fn k(&self, sku: u32, loc: u32) -> usize {
        sku as usize * self.nlocs as usize + loc as usize
    }

    #[inline]
    fn part(&self, sku: u32, loc: u32) -> usize {
        self.partition[self.k(sku, loc)] as usize
    }

    fn dc_of(&self, store: u32) -> u32 {
        self.stores + store % self.dcs
    }

    fn is_dc(&self, loc: u32) -> bool {
        loc >= self.stores
    }

    /// A policy per key sized from the key's expected demand (so the network orders at any
    /// scale), then a count that stocks the key between its reorder point and order-up-to.
    fn setup(&mut self) -> Result<()> {
        let sku_p = normalized(&zipf_weights(self.skus, self.zipf));
        let store_p = normalized(&zipf_weights(self.stores, self.zipf / 2.0));
        // Expected sale units over the whole run (about 80% sales of 1.4 units on average),
        // scaled up so that reorder points cover a lead time in the busy hours of the day.
        let units = self.events as f64 * 0.8 * 1.4 * PEAK;
        let (ls, ld) = (self.store_lead / self.duration as f64, self.dc_lead / self.duration as f64);
        let mut dc_share = vec![0.0; self.dcs as usize];
        for (j, p) in store_p.iter().enumerate() {
            dc_share[j % self.dcs as usize] += p;
        }
        for s in 0..self.skus {
            for l in 0..self.nlocs {
                let rng = &mut self.rng;
                let st = if l < self.stores {
                    let lead_demand = units * sku_p[s as usize] * store_p[l as usize] * ls;
                    let pack = [1, 1, 1, 2, 4, 6, 12][rng.below(7) as usize];
                    let moq = if rng.chance(0.2) { pack * 2 } else { 0 };
                    let safety = (lead_demand * 0.5).round() as i64 + rng.range(0, 2);
                    let rp = (lead_demand * 1.2).ceil() as i64 + safety + rng.range(0, 2);
                    // A floor on the order quantity keeps deliveries a small share of the events.
                    let q = ((lead_demand * 2.0).ceil() as i64).max(rng.range(24, 60));
                    policy(safety, rp, round_up(q, pack), pack, moq)
                } else {
                    let lead_demand = units * sku_p[s as usize] * dc_share[(l - self.stores) as usize] * ld;
                    let pack = [6, 12, 12, 24, 24, 48][rng.below(6) as usize];
                    let moq = if rng.chance(0.5) { pack * rng.range(2, 4) } else { 0 };
                    let safety = (lead_demand * 0.3).ceil() as i64;
                    let rp = (lead_demand * 1.3).ceil() as i64 + safety + pack;
                    let q = ((lead_demand * 2.0).ceil() as i64).max(pack * 4);
                    policy(safety, rp, round_up(q, pack), pack, moq)
                };
                let span = i64::from(st.out - st.rp) / if l < self.stores { 2 } else { 3 };
                let stock = (i64::from(st.out) - self.rng.range(0, span)).min(MAX_QTY);
                let k = self.k(s, l);
                self.keys[k] = KeyState { on_hand: stock, ..st };
                self.write_policy(s, l, self.start)?;
                let p = self.part(s, l);
                let buf = &mut self.out.bufs[p];
                begin(buf, b"count", self.start);
                key(buf, self.names.sku(s), &self.names.locs[l as usize]);
                int(buf, b",\"qty\":", stock);
                end(buf);
                self.out.after_line(p)?;
                self.setup_lines += 2;
            }
        }
        Ok(())
    }

    fn write_policy(&mut self, s: u32, l: u32, ts: u64) -> Result<()> {
        let p = self.part(s, l);
        let st = &self.keys[self.k(s, l)];
        let source: &[u8] = if l < self.stores {
            &self.names.locs[(self.stores + l % self.dcs) as usize]
        } else {
            &self.names.vendors[(s % 7) as usize]
        };
        let buf = &mut self.out.bufs[p];
        begin(buf, b"policy", ts);
        key(buf, self.names.sku(s), &self.names.locs[l as usize]);
        int(buf, b",\"reorder_point\":", i64::from(st.rp));
        int(buf, b",\"order_up_to\":", i64::from(st.out));
        int(buf, b",\"safety_stock\":", i64::from(st.safety));
        int(buf, b",\"pack_size\":", i64::from(st.pack));
        int(buf, b",\"moq\":", i64::from(st.moq));
        buf.extend_from_slice(b",\"source\":\"");
        buf.extend_from_slice(source);
        buf.extend_from_slice(b"\"}\n");
        self.out.after_line(p)
    }

    fn events(&mut self, started: Instant) -> Result<()> {
        let mut curve = Curve::new(self.start, self.duration, self.events);
        let mut reported = Instant::now();
        for k in 0..self.events {
            let u = self.rng.f64();
            let t = self.start + curve.at(k, u);
            // Geometric count with mean bad/(1-bad): bad lines are `bad` of all event lines.
            while self.bad > 0.0 && self.faults.chance(self.bad) {
                self.bad_line(t)?;
            }
            match self.pending.peek() {
                Some(p) if p.due <= t => {
                    let p = self.pending.pop().expect("peeked");
                    self.follow_up(p, t)?;
                }
                _ => self.primary(t)?,
            }
            if k & 0x3FFF == 0 && !self.quiet && reported.elapsed().as_secs() >= 1 {
                reported = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                let mb = self.out.pending_bytes() as f64 / 1e6;
                tracing::info!(
                    "gen: {k} events ({:.1}%), {mb:.1} MB, {:.0} events/s, {:.1} MB/s",
                    k as f64 * 100.0 / self.events as f64,
                    k as f64 / secs,
                    mb / secs
                );
            }
        }
        Ok(())
    }

    /// The ts written for an event at slot time t: `--disorder` moves some back.
    #[inline]
    fn stamp(&mut self, t: u64) -> u64 {
        if self.disorder > 0.0 && self.noise.chance(self.disorder) {
            t.saturating_sub(1 + self.noise.below(MAX_SHIFT_MS))
        } else {
            t
        }
    }

    fn schedule(&mut self, due: u64, kind: Kind, sku: u32, loc: u32, id: u64, qty: i64) {
        self.seq += 1;
        self.pending.push(Pending { due, seq: self.seq, kind, sku, loc, id, qty });
    }

    fn pick_store_key(&mut self) -> (u32, u32) {
        (self.sku_pick.sample(&mut self.rng), self.store_pick.sample(&mut self.rng))
    }

    /// A store key (by popularity and store size) or, with probability `dc`, a DC key.
    fn pick_any_key(&mut self, dc: f64) -> (u32, u32) {
        if self.rng.chance(dc) {
            let s = self.sku_pick.sample(&mut self.rng);
            (s, self.stores + self.rng.below(u64::from(self.dcs)) as u32)
        } else {
            self.pick_store_key()
        }
    }

    /// Writes `{"type":ty,"ts":..,"sku":..,"loc":..` + `fields` + `}` to the key's partition.
    #[inline]
    fn line(&mut self, ty: &[u8], ts: u64, s: u32, l: u32, fields: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let p = self.part(s, l);
        let buf = &mut self.out.bufs[p];
        begin(buf, ty, ts);
        key(buf, self.names.sku(s), &self.names.locs[l as usize]);
        fields(buf);
        end(buf);
        self.out.after_line(p)
    }

    /// A fresh event at slot time `t`, its kind drawn by the shares above (sales the rest).
    fn primary(&mut self, t: u64) -> Result<()> {
        let r = self.rng.f64();
        if r < P_RETURN {
            self.customer_return(t)
        } else if r < P_COUNT {
            self.cycle_count(t)
        } else if r < P_ADJUST {
            self.adjust(t)
        } else if r < P_RESERVE {
            self.reserve(t)
        } else if r < P_POLICY {
            self.policy_change(t)
        } else {
            self.sale(t)
        }
    }

    fn customer_return(&mut self, t: u64) -> Result<()> {
        let (s, l) = self.pick_store_key();
        let qty = if self.rng.chance(0.8) { 1 } else { 2 };
        let k = self.k(s, l);
        self.keys[k].on_hand += qty;
        let ts = self.stamp(t);
        self.line(b"return", ts, s, l, |b| int(b, b",\"qty\":", qty))
    }

    /// A cycle count: mostly the tracked stock, sometimes shrinkage, rarely one too many.
    fn cycle_count(&mut self, t: u64) -> Result<()> {
        let (s, l) = self.pick_any_key(0.15);
        let k = self.k(s, l);
        let expected = self.keys[k].on_hand.max(0);
        let x = self.rng.f64();
        let qty = if x < 0.7 {
            expected
        } else if x < 0.95 {
            (expected - self.rng.range(1, 3)).max(0)
        } else {
            expected + 1
        }
        .min(MAX_QTY);
        self.keys[k].on_hand = qty;
        let ts = self.stamp(t);
        self.line(b"count", ts, s, l, |b| int(b, b",\"qty\":", qty))?;
        self.check(s, l, t);
        Ok(())
    }

    fn adjust(&mut self, t: u64) -> Result<()> {
        let (s, l) = self.pick_any_key(0.2);
        let x = self.rng.f64();
        let (delta, reason): (i64, &[u8]) = if x < 0.45 {
            (-self.rng.range(1, 3), b"damaged")
        } else if x < 0.75 {
            (-self.rng.range(1, 2), b"shrink")
        } else {
            (self.rng.range(1, 3), b"found")
        };
        let k = self.k(s, l);
        self.keys[k].on_hand += delta;
        let ts = self.stamp(t);
        self.line(b"adjust", ts, s, l, |b| {
            int(b, b",\"delta\":", delta);
            b.extend_from_slice(b",\"reason\":\"");
            b.extend_from_slice(reason);
            b.push(b'"');
        })?;
        self.check(s, l, t);
        Ok(())
    }

    /// A hold, with its fulfilment or release scheduled (or neither: it expires).
    fn reserve(&mut self, t: u64) -> Result<()> {
        let (s, l) = self.pick_store_key();
        let qty = if self.rng.chance(0.8) { 1 } else { 2 };
        let res = self.next_res;
        self.next_res += 1;
        let with_expiry = self.rng.chance(0.5);
        let x = self.rng.f64();
        // Most holds end well within their 15 minutes; the rest are left to expire.
        let delay = self.rng.range(20_000, 720_000) as u64;
        if x < 0.55 {
            self.schedule(t + delay, Kind::Fulfill, s, l, res, qty);
        } else if x < 0.85 {
            self.schedule(t + delay, Kind::Release, s, l, res, qty);
        }
        let ts = self.stamp(t);
        self.line(b"reserve", ts, s, l, |b| {
            id(b, b",\"res_id\":\"", b"R", res);
            int(b, b",\"qty\":", qty);
            if with_expiry {
                push_field_u64(b, b",\"expires_at\":", ts + HOLD_MS);
            }
        })
    }

    /// A planner moves a key's reorder point and order quantity by up to a quarter.
    fn policy_change(&mut self, t: u64) -> Result<()> {
        let (s, l) = self.pick_any_key(0.2);
        let (f1, f2) = (0.8 + 0.45 * self.rng.f64(), 0.8 + 0.45 * self.rng.f64());
        let k = self.k(s, l);
        let st = &mut self.keys[k];
        let q = i64::from(st.out - st.rp);
        let rp = (f64::from(st.rp) * f1).round() as i64;
        let q = round_up(((q as f64 * f2).round() as i64).max(1), i64::from(st.pack));
        st.rp = rp.clamp(0, MAX_QTY) as i32;
        st.out = (i64::from(st.rp) + q).min(MAX_QTY) as i32;
        let ts = self.stamp(t);
        self.write_policy(s, l, ts)?;
        self.check(s, l, t);
        Ok(())
    }

    fn sale(&mut self, t: u64) -> Result<()> {
        // Shoppers buy what is on the shelf: an empty key is usually passed over for another.
        let (mut s, mut l) = self.pick_store_key();
        for _ in 0..3 {
            if self.keys[self.k(s, l)].on_hand > 0 {
                break;
            }
            (s, l) = self.pick_store_key();
        }
        let x = self.rng.f64();
        let want = if x < 0.7 {
            1
        } else if x < 0.9 {
            2
        } else {
            3
        };
        let k = self.k(s, l);
        let on_hand = self.keys[k].on_hand;
        let qty = if on_hand > 0 { want.min(on_hand) } else { 1 };
        self.keys[k].on_hand -= qty;
        let ts = self.stamp(t);
        self.line(b"sale", ts, s, l, |b| int(b, b",\"qty\":", qty))?;
        self.check_store(s, l, t);
        Ok(())
    }

    fn check(&mut self, s: u32, l: u32, t: u64) {
        if self.is_dc(l) {
            self.check_dc(s, l, t);
        } else {
            self.check_store(s, l, t);
        }
    }

    /// A store at or below its reorder point with nothing on the way gets a delivery from its
    /// DC after a lead time, as much as the DC can spare in whole packs.
    fn check_store(&mut self, s: u32, l: u32, t: u64) {
        let st = &self.keys[self.k(s, l)];
        let position = st.on_hand + st.inbound;
        if st.inbound > 0 || position > i64::from(st.rp) {
            return;
        }
        let need = i64::from(st.out) - position;
        if need <= 0 {
            return;
        }
        let pack = i64::from(st.pack);
        let wanted = round_up(need.max(i64::from(st.moq)), pack).min(MAX_QTY);
        let dc = self.dc_of(l);
        let dk = self.k(s, dc);
        let spare = (self.keys[dk].on_hand - self.keys[dk].allocated).max(0);
        let qty = if spare >= wanted { wanted } else { spare / pack * pack };
        if qty > 0 {
            self.keys[dk].allocated += qty;
            let k = self.k(s, l);
            self.keys[k].inbound = qty;
            let lead = (self.store_lead * (0.5 + self.rng.f64())) as u64;
            self.schedule(t + lead, Kind::Ship, s, l, 0, qty);
        }
        self.check_dc(s, dc, t);
    }

    /// A DC at or below its reorder point (stock promised to stores counts as gone) with no
    /// open PO opens one on its vendor.
    fn check_dc(&mut self, s: u32, l: u32, t: u64) {
        let k = self.k(s, l);
        let st = &self.keys[k];
        let position = st.on_hand - st.allocated + st.inbound;
        if st.po != 0 || position > i64::from(st.rp) {
            return;
        }
        let need = (i64::from(st.out) - position).max(1);
        let qty = round_up(need.max(i64::from(st.moq)), i64::from(st.pack)).min(MAX_QTY);
        let po = self.next_po;
        self.next_po += 1;
        let st = &mut self.keys[k];
        st.po = po;
        st.inbound = qty;
        self.schedule(t, Kind::PoOpen, s, l, po, qty);
    }

    /// A scheduled message that has come due at slot time `t`.
    fn follow_up(&mut self, p: Pending, t: u64) -> Result<()> {
        let (s, l, k) = (p.sku, p.loc, self.k(p.sku, p.loc));
        let ts = self.stamp(t);
        match p.kind {
            Kind::Release => self.line(b"release", ts, s, l, |b| id(b, b",\"res_id\":\"", b"R", p.id)),
            Kind::Fulfill => {
                self.keys[k].on_hand -= p.qty;
                self.line(b"fulfill", ts, s, l, |b| {
                    id(b, b",\"res_id\":\"", b"R", p.id);
                    int(b, b",\"qty\":", p.qty);
                })?;
                self.check_store(s, l, t);
                Ok(())
            }
            Kind::Ship => self.ship(&p, ts, t),
            Kind::StoreReceipt => {
                let st = &mut self.keys[k];
                st.on_hand += p.qty;
                st.inbound = 0;
                self.line(b"receipt", ts, s, l, |b| int(b, b",\"qty\":", p.qty))?;
                self.check_store(s, l, t);
                Ok(())
            }
            Kind::PoOpen => self.po_open(&p, ts, t),
            Kind::PoConfirm => {
                let pack = i64::from(self.keys[k].pack);
                let change = if self.rng.chance(0.5) { pack } else { -pack };
                let qty = (self.keys[k].inbound + change).max(pack).min(MAX_QTY);
                self.keys[k].inbound = qty;
                self.po_line(ts, s, l, p.id, qty, b"open", None)
            }
            Kind::PoReceipt | Kind::PoLast => self.po_receipt(&p, ts, t),
            Kind::PoRest => self.po_line(ts, s, l, p.id, p.qty, b"open", None),
            Kind::PoClose => self.po_line(ts, s, l, p.id, 0, b"closed", None),
            Kind::PoCancel => {
                let st = &mut self.keys[k];
                st.inbound = 0;
                st.po = 0;
                self.po_line(ts, s, l, p.id, 0, b"cancelled", None)?;
                self.check_dc(s, l, t);
                Ok(())
            }
        }
    }

    /// The DC's side of a store delivery, posted when the goods arrive so that the DC's stock
    /// and the store's move together; the store's receipt follows at once.
    fn ship(&mut self, p: &Pending, ts: u64, t: u64) -> Result<()> {
        let (s, l) = (p.sku, p.loc);
        let dc = self.dc_of(l);
        let dk = self.k(s, dc);
        self.keys[dk].on_hand -= p.qty;
        self.keys[dk].allocated -= p.qty;
        self.schedule(t, Kind::StoreReceipt, s, l, 0, p.qty);
        let part = self.part(s, dc);
        let buf = &mut self.out.bufs[part];
        begin(buf, b"adjust", ts);
        key(buf, self.names.sku(s), &self.names.locs[dc as usize]);
        int(buf, b",\"delta\":", -p.qty);
        buf.extend_from_slice(b",\"reason\":\"transfer to ");
        buf.extend_from_slice(&self.names.locs[l as usize]);
        buf.extend_from_slice(b"\"}\n");
        self.out.after_line(part)?;
        self.check_dc(s, dc, t);
        Ok(())
    }

    /// A PO goes out to the vendor: its receipt (or, rarely, its cancellation) is scheduled
    /// a lead time later, sometimes with a changed confirmation on the way.
    fn po_open(&mut self, p: &Pending, ts: u64, t: u64) -> Result<()> {
        let (s, l) = (p.sku, p.loc);
        let lead = (self.dc_lead * (0.5 + self.rng.f64())) as u64;
        if self.rng.chance(0.03) {
            self.schedule(t + lead / 2, Kind::PoCancel, s, l, p.id, 0);
        } else {
            if self.rng.chance(0.2) {
                self.schedule(t + lead * 3 / 10, Kind::PoConfirm, s, l, p.id, 0);
            }
            self.schedule(t + lead, Kind::PoReceipt, s, l, p.id, 0);
        }
        self.po_line(ts, s, l, p.id, p.qty, b"open", Some(t + lead))
    }

    /// A receipt on a PO: the open quantity in full (the PO closes soon after), or at the
    /// first receipt sometimes a part, with the rest still open and a last receipt later.
    fn po_receipt(&mut self, p: &Pending, ts: u64, t: u64) -> Result<()> {
        let (s, l, k) = (p.sku, p.loc, self.k(p.sku, p.loc));
        let pack = i64::from(self.keys[k].pack);
        let open = self.keys[k].inbound.max(1);
        let qty = if matches!(p.kind, Kind::PoReceipt) && open >= 2 * pack && self.rng.chance(0.2) {
            let part = ((open as f64 * (0.3 + 0.4 * self.rng.f64())) as i64 / pack * pack).max(pack);
            let rest = open - part;
            let soon = self.rng.range(1_000, 60_000) as u64;
            self.schedule(t + soon, Kind::PoRest, s, l, p.id, rest);
            let later = (self.dc_lead / 4.0 * (0.5 + self.rng.f64())) as u64;
            self.schedule(t + later.max(60_001), Kind::PoLast, s, l, p.id, 0);
            part
        } else {
            let soon = self.rng.range(1_000, 60_000) as u64;
            self.schedule(t + soon, Kind::PoClose, s, l, p.id, 0);
            open
        };
        let st = &mut self.keys[k];
        st.on_hand += qty;
        st.inbound -= qty;
        if st.inbound <= 0 {
            st.inbound = 0;
            st.po = 0;
        }
        self.line(b"receipt", ts, s, l, |b| {
            int(b, b",\"qty\":", qty);
            id(b, b",\"po_id\":\"", b"PO", p.id);
        })?;
        self.check_dc(s, l, t);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn po_line(&mut self, ts: u64, s: u32, l: u32, po: u64, qty: i64, status: &[u8], eta: Option<u64>) -> Result<()> {
        let p = self.part(s, l);
        let buf = &mut self.out.bufs[p];
        begin(buf, b"po", ts);
        id(buf, b",\"po_id\":\"", b"PO", po);
        key(buf, self.names.sku(s), &self.names.locs[l as usize]);
        int(buf, b",\"qty\":", qty);
        buf.extend_from_slice(b",\"status\":\"");
        buf.extend_from_slice(status);
        buf.push(b'"');
        if let Some(eta) = eta {
            push_field_u64(buf, b",\"eta\":", eta);
        }
        end(buf);
        self.out.after_line(p)
    }

    /// One line the decoder must reject, about a random store key, drawn from its own stream
    /// so the clean workload stays the same.
    fn bad_line(&mut self, t: u64) -> Result<()> {
        self.bad_lines += 1;
        let s = self.faults.below(u64::from(self.skus)) as u32;
        let l = self.faults.below(u64::from(self.stores)) as u32;
        let kind = self.faults.below(14);
        let p = self.part(s, l);
        let buf = &mut self.out.bufs[p];
        let (sku, loc) = (self.names.sku(s), &self.names.locs[l as usize][..]);
        // Most bad lines are a typed line about the key followed by a faulty rest.
        if let Some((ty, rest)) = KEYED_BAD_LINES.get(kind as usize).copied().flatten() {
            begin(buf, ty, t);
            key(buf, sku, loc);
            buf.extend_from_slice(rest);
            return self.out.after_line(p);
        }
        match kind {
            // invalid_json: not JSON at all.
            1 => {
                buf.extend_from_slice(b"sale;");
                buf.extend_from_slice(sku);
                buf.push(b';');
                buf.extend_from_slice(loc);
                buf.extend_from_slice(b";2\n");
            }
            // unknown_type: no type at all.
            5 => {
                buf.extend_from_slice(b"{\"ts\":");
                push_u64(buf, t);
                key(buf, sku, loc);
                buf.extend_from_slice(b",\"qty\":1}\n");
            }
            // missing_field: no sku.
            9 => {
                begin(buf, b"sale", t);
                buf.extend_from_slice(b",\"loc\":\"");
                buf.extend_from_slice(loc);
                buf.extend_from_slice(b"\",\"qty\":1}\n");
            }
            // invalid_field: a ts that is no number.
            _ => {
                buf.extend_from_slice(b"{\"type\":\"sale\",\"ts\":\"yesterday\"");
                key(buf, sku, loc);
                buf.extend_from_slice(b",\"qty\":1}\n");
            }
        }
        self.out.after_line(p)
    }
}

/// `gen`'s bad lines of kind `i` (of 14) that are a typed line about the key followed by a
/// faulty rest: (type, rest); `None` for the kinds `bad_line` writes itself.
const KEYED_BAD_LINES: [Option<(&[u8], &[u8])>; 14] = [
    // invalid_json: cut off mid-line, (1: not JSON), a duplicate member, a NaN.
    Some((b"sale", b",\"qty\":\n")),
    None,
    Some((b"sale", b",\"qty\":1,\"qty\":2}\n")),
    Some((b"sale", b",\"qty\":NaN}\n")),
    // unknown_type: an unknown name, (5: no type at all).
    Some((b"transfer", b",\"qty\":2}\n")),
    None,
    // invalid_field / missing_field.
    Some((b"sale", b",\"qty\":\"2\"}\n")),
    Some((b"sale", b",\"qty\":0}\n")),
    Some((b"return", b",\"qty\":1.5}\n")),
    None,
    None,
    Some((b"adjust", b",\"delta\":0,\"reason\":\"typo\"}\n")),
    Some((b"policy", b",\"reorder_point\":10,\"order_up_to\":5}\n")),
    Some((b"reserve", b",\"res_id\":\"\",\"qty\":1}\n")),
];

#[inline]
fn push_field_u64(buf: &mut Vec<u8>, name: &[u8], v: u64) {
    buf.extend_from_slice(name);
    push_u64(buf, v);
}
