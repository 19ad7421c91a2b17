//! `stockflow explain`: why one key (sku, loc) is where it is at the end of a replay's window —
//! its ledger, holds, purchase orders, policy, SPEC §3's formulas with the engine's numbers
//! substituted, its order line and the allocation at its source.
//!
//! Two kinds of facts meet here, and the output labels each:
//! - `[engine]` numbers come from the final snapshot of a real replay (the same worker loop and
//!   dataflows as `stockflow replay`): the ATP row, the order-plan lines, the low-stock state.
//! - `[input]` lists come from the key's decoded messages (the same decoder, clock and window
//!   as the replay) in SPEC §2's order, annotated with SPEC §2's ledger rules. Their totals are
//!   checked against the engine's (`checks`), so an annotation that drifted from the engine
//!   shows up as a MISMATCH instead of a wrong story.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use dataflows::allocation::{fair_share, Claim, PlanLine};
use dataflows::clock::Ticks;
use dataflows::ledger::{HoldOutcome, KeyState, Outcome, SourceNames, StockOutcome};
use dataflows::low_stock::LowView;
use dataflows::model::{Body, DeadLetter, Event, Millis, Name, OrderKey, PoStatus, Policy};
use dataflows::order_plan::{is_external, line_for};
use dataflows::pipeline::Atp;
use dataflows::Key;
use serde::Serialize;

use crate::config::{Cluster, ExplainConfig, ExplainSource, InputFile, Output, ReplayConfig};
use crate::io::sink::{Sink, SinkError, Snapshot, Summary, TickBatch};
use crate::io::source::file::FileSource;
use crate::runtime::checkpoint::Chosen;
use crate::runtime::cluster;
use crate::runtime::dataflow::Routing;
use crate::runtime::harness::{self, Plan, Sinks, WindowEnd};
use crate::runtime::progress::Progress;
use std::sync::atomic::AtomicBool;
use crate::io::format::rfc3339;
use crate::io::source::file::for_each_event;

/// Runs `stockflow explain`: replays (or restores a checkpoint), explains, prints.
pub fn run(config: ExplainConfig) -> Result<()> {
    let key = &config.key;
    match &config.source {
        ExplainSource::Checkpoint { dir, cluster } => {
            let (replay, engine, input) = from_checkpoint(dir, cluster, key)?;
            let legend = format!(
                "[engine] = the dataflow restored from the newest checkpoint in {}; [input] = the key's saved \
                 ledger as the messages that re-create it (a count at its last count's ts, a reserve per hold, its policy, \
                 its open POs)",
                dir.display()
            );
            ensure_named(key, &engine, &input, &SAVED_PLACE, || Ok(input.nearby.clone().unwrap_or_default()))?;
            print(config.json, &explain(&replay, key, &engine, &input), Some(&legend))
        }
        ExplainSource::Replay(replay) => {
            let engine = replay_final_state(replay)?;
            let input = KeyInput::read(replay, key)?;
            ensure_named(key, &engine, &input, &INPUT_PLACE, || Nearby::scan(replay, key))?;
            print(config.json, &explain(replay, key, &engine, &input), None)
        }
    }
}

/// What `[engine]` and `[input]` mean in a replay's explanation.
const LEGEND: &str = "[engine] = the replay's final snapshot; [input] = the key's messages in SPEC order";

/// Writes the explanation to stdout as text (with `legend` in place of the replay's) or, with
/// `--json`, one JSON object.
fn print(json: bool, explanation: &Explanation, legend: Option<&str>) -> Result<()> {
    let text = if json {
        let mut text = serde_json::to_string_pretty(explanation).context("cannot encode the explanation")?;
        text.push('\n');
        text
    } else {
        let text = render_text(explanation);
        legend.map_or(text.clone(), |legend| text.replacen(LEGEND, legend, 1))
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The engine's side: a replay whose sink keeps the final snapshot.
// ---------------------------------------------------------------------------

/// The final state of a replay, as its sink saw it.
#[derive(Default)]
pub struct FinalState {
    /// ATP rows by (sku, loc).
    pub atp: BTreeMap<Key, Atp>,
    /// LOW/OUT keys by (sku, loc).
    pub low_stock: BTreeMap<Key, LowView>,
    /// Order lines by (dest, sku).
    pub order_plan: BTreeMap<Key, PlanLine>,
    /// The run summary.
    pub summary: Summary,
}

/// A sink that keeps the final snapshot for the caller.
struct Capture(Arc<Mutex<Option<FinalState>>>);

impl Sink for Capture {
    fn tick(&mut self, _time: Millis, _batch: &TickBatch) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self, _dead: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> Result<(), SinkError> {
        let state = FinalState {
            atp: snapshot.atp.clone(),
            low_stock: snapshot.low_stock.clone(),
            order_plan: snapshot.order_plan.clone(),
            summary: summary.clone(),
        };
        *self.0.lock().expect("no other holder panics") = Some(state);
        Ok(())
    }
}

/// The sinks of a run whose final state the caller keeps: one [`Capture`] on worker 0, into the
/// returned slot.
fn capture() -> (Arc<Mutex<Option<FinalState>>>, impl Fn(usize) -> Result<Sinks, SinkError> + Send + Sync) {
    let captured = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&captured);
    let make = move |worker| {
        let mut sinks = Sinks::default();
        if worker == 0 {
            sinks.typed.push(Box::new(Capture(Arc::clone(&slot))) as Box<dyn Sink>);
        }
        Ok(sinks)
    };
    (captured, make)
}

/// A run whose only output is [`capture`]'s.
const CAPTURED: Routing = Routing { local: false, typed_on_zero: true, typed_snapshot: true };

/// Replays `config` with the replay's own worker loop and returns its final snapshot.
pub fn replay_final_state(config: &ReplayConfig) -> Result<FinalState> {
    let (captured, make_sinks) = capture();
    crate::cmd::replay::replay_into(config, CAPTURED, make_sinks, Arc::new(Progress::default()))?;
    let state = captured.lock().expect("workers have finished").take();
    state.context("the replay ended without a final snapshot")
}

// ---------------------------------------------------------------------------
// A checkpoint instead of a replay: the engine's state is the dataflow restored from it, and the
// key's "input" is its saved ledger written as the messages that re-create it.
// ---------------------------------------------------------------------------

/// The name positions show for the messages that stand for a checkpoint's saved state.
const SAVED_STATE: &str = "checkpoint-state";

fn from_checkpoint(dir: &std::path::Path, cluster: &Cluster, key: &Key) -> Result<(ReplayConfig, FinalState, KeyInput)> {
    use crate::runtime::checkpoint;
    let chosen = checkpoint::choose(dir)?
        .with_context(|| format!("no complete checkpoint in {}; run or batch with --checkpoint-dir writes them", dir.display()))?;
    let header = chosen.headers.first().context("a checkpoint without shares")?.clone();
    let as_of = chosen.at - 1;
    let ticks = Ticks { tick_ms: header.tick_ms, until: Some(as_of) };
    let config = ReplayConfig {
        inputs: vec![InputFile { name: SAVED_STATE.to_string(), path: dir.to_path_buf() }],
        output: Output::Stdout,
        ticks,
        lateness_ms: header.lateness_ms,
        quiet: true,
        print: false,
        cluster: cluster.clone(),
    };
    let mut bodies = Vec::new();
    for path in &chosen.shares {
        bodies.push(checkpoint::read_share(path).map_err(|e| anyhow::anyhow!("cannot load checkpoint share {e}"))?);
    }
    let input = KeyInput::from_saved(key, as_of, &bodies);
    let engine = restored_final_state(&config, chosen)?;
    Ok((config, engine, input))
}

/// Restores the checkpoint into the dataflow with the run's own worker loop (no input; the
/// window ends at `as_of`, the last time the checkpoint covers) and returns the outputs' state.
fn restored_final_state(config: &ReplayConfig, chosen: Chosen) -> Result<FinalState> {
    let plan = Plan {
        ticks: config.ticks,
        lateness_ms: config.lateness_ms,
        idle: None,
        sources: chosen.headers.first().map(|h| h.topics.clone()).unwrap_or_default(),
        routing: CAPTURED,
        formats: false,
        end: WindowEnd::Closed,
        checkpoints: None,
        restore: Some(chosen),
    };
    let (captured, make_sinks) = capture();
    let progress = Progress::default();
    static NEVER: AtomicBool = AtomicBool::new(false);
    let guards = cluster::execute(&config.cluster, move |worker| {
        let nothing = FileSource::open(&[], worker.index(), worker.peers())?;
        harness::run_worker(worker, &plan, nothing, &make_sinks, &progress, &NEVER)
    })?;
    harness::join_workers(guards)?;
    let state = captured.lock().expect("workers have finished").take();
    state.context("the restored dataflow produced no state")
}

// ---------------------------------------------------------------------------
// The input's side: the key's messages, decoded and stamped as the replay does.
// ---------------------------------------------------------------------------

/// What the input says about one sku: its keyed messages in SPEC order, and the latest
/// message of every purchase order that ever named the sku.
pub struct KeyInput {
    /// Messages of the sku (every loc), purchase orders excluded, in SPEC order.
    events: Vec<Event>,
    /// The latest `po` message of each po_id (whatever sku it names now) that ever named the sku.
    purchase_orders: BTreeMap<Name, Event>,
    /// Whether some message (purchase orders included) names the key itself.
    names_key: bool,
    /// For a checkpoint: the keys its saved entries name around the key.
    nearby: Option<Nearby>,
}

impl KeyInput {
    /// Reads the inputs of `config` once, keeping what concerns `key`'s sku.
    pub fn read(config: &ReplayConfig, key: &Key) -> Result<Self> {
        let mut events = Vec::new();
        // A purchase order may move to another sku or loc (README: the latest message carries
        // its quantity), so the latest message of every po_id is kept, not only the sku's.
        let mut latest_po: BTreeMap<Name, Event> = BTreeMap::new();
        let mut named_sku: BTreeSet<Name> = BTreeSet::new();
        let mut names_key = false;
        for_each_event(&config.inputs, config.lateness_ms, config.ticks, |event| {
            names_key |= key.is(&event.message.sku, &event.message.loc);
            if let Body::Po { po_id, .. } = &event.message.body {
                if event.message.sku == key.first() {
                    named_sku.insert(po_id.clone());
                }
                let newer = latest_po.get(po_id).is_none_or(|seen| seen.order < event.order);
                if newer {
                    latest_po.insert(po_id.clone(), event);
                }
            } else if event.message.sku == key.first() {
                events.push(event);
            }
        })?;
        events.sort_by_key(|e| e.order);
        let purchase_orders = latest_po.into_iter().filter(|(po_id, _)| named_sku.contains(po_id)).collect();
        Ok(KeyInput { events, purchase_orders, names_key, nearby: None })
    }

    /// The saved ledgers of `key`'s sku as the messages that re-create them at `as_of`: a count
    /// at the barrier (or an adjust without one), a reserve per hold, the policy, and an open
    /// `po` per purchase order; their positions read `checkpoint-state:N`.
    fn from_saved(key: &Key, as_of: Millis, shares: &[(crate::runtime::checkpoint::Header, crate::runtime::checkpoint::Body)]) -> Self {
        use dataflows::ledger::Saved;
        use dataflows::model::{Message, Position};
        let mut events = Vec::new();
        let mut purchase_orders = BTreeMap::new();
        let mut offset = 0;
        let mut event = |sku: &str, loc: &str, ts: Millis, body: Body| {
            offset += 1;
            let order = OrderKey { effective: as_of, position: Position { source: 0, partition: 0, offset } };
            Event { order, message: Message { ts, sku: sku.into(), loc: loc.into(), body } }
        };
        let mut saved: Vec<&Saved> = shares.iter().flat_map(|(_, body)| &body.ledger).collect();
        saved.sort_by_key(|e| match e {
            Saved::Key(key, _) => (0, key.clone(), Name::default()),
            Saved::Po(po_id, key, _) => (1, key.clone(), po_id.clone()),
            _ => (2, Key::default(), Name::default()),
        });
        let mut nearby = Nearby::default();
        let mut names_key = false;
        for entry in saved {
            // A pending message names the key only after the checkpoint: `nearby` notes it.
            names_key |= matches!(entry, Saved::Key(k, _) | Saved::Po(_, k, _) if k == key);
            match entry {
                Saved::Key(named, _) | Saved::Po(_, named, _) => nearby.see(key, named.first(), named.second()),
                Saved::Pending(event) => nearby.see(key, &event.message.sku, &event.message.loc),
                Saved::Count(..) | Saved::End(..) => {}
            }
            match entry {
                Saved::Key(named, state) if named.first() == key.first() => {
                    let (sku, loc) = named.parts();
                    match state.barrier() {
                        Some(ts) => events.push(event(sku, loc, ts, Body::Count { qty: state.on_hand })),
                        None if state.on_hand != 0 => {
                            events.push(event(sku, loc, as_of, Body::Adjust { delta: state.on_hand, reason: None }))
                        }
                        None => {}
                    }
                    for hold in state.holds.iter() {
                        let body =
                            Body::Reserve { res_id: hold.res_id.clone(), qty: hold.qty, expires_at: Some(hold.expires_at) };
                        events.push(event(sku, loc, as_of, body));
                    }
                    if let Some(policy) = state.policy() {
                        events.push(event(sku, loc, as_of, Body::Policy(Some(policy))));
                    }
                }
                Saved::Po(po_id, named, qty) if named.first() == key.first() => {
                    let (sku, loc) = named.parts();
                    let body = Body::Po { po_id: po_id.clone(), qty: *qty, status: PoStatus::Open, eta: None };
                    purchase_orders.insert(po_id.clone(), event(sku, loc, as_of, body));
                }
                _ => {}
            }
        }
        events.sort_by_key(|e| e.order);
        KeyInput { events, purchase_orders, names_key, nearby: Some(nearby) }
    }

    /// The latest policy of (sku, `loc`) and the position of its message.
    fn policy_of(&self, loc: &str) -> Option<(&Event, Option<&Policy>)> {
        self.events.iter().rev().find(|e| e.message.loc == loc && matches!(e.message.body, Body::Policy(_))).map(|e| {
            match &e.message.body {
                Body::Policy(p) => (e, p.as_ref()),
                _ => unreachable!("filtered on policy messages"),
            }
        })
    }
}

// ---------------------------------------------------------------------------
// A key nothing names: no message of the input (or entry of the checkpoint) and no output of
// the engine. Its explanation would be all zeros with every check `ok`, which reads like an
// answer; it is a mistake to point out instead.
// ---------------------------------------------------------------------------

/// How many of the closest keys the error suggests.
const SUGGESTIONS: usize = 5;

/// What an input names around a key it does not name.
#[derive(Clone, Debug, Default)]
pub struct Nearby {
    /// Whether something names the key after all (a message beyond the window, or pending in
    /// a checkpoint).
    named: bool,
    /// The locations named with the key's sku.
    sku_locs: BTreeSet<Name>,
    /// The skus named at the key's location.
    loc_skus: BTreeSet<Name>,
    /// The closest keys named: (shares neither part, edit distance, key), best first.
    closest: BTreeSet<(bool, usize, Key)>,
    /// The last key seen, not scored again (a key's messages tend to come in runs).
    last: Option<Key>,
}

impl Nearby {
    /// Every key the inputs of `config` name, whatever the window.
    fn scan(config: &ReplayConfig, key: &Key) -> Result<Self> {
        let mut nearby = Nearby::default();
        let whole = Ticks { until: None, ..config.ticks };
        for_each_event(&config.inputs, config.lateness_ms, whole, |event| {
            nearby.see(key, &event.message.sku, &event.message.loc);
        })?;
        Ok(nearby)
    }

    /// Notes that something names (`sku`, `loc`), as it bears on `want`.
    fn see(&mut self, want: &Key, sku: &str, loc: &str) {
        if self.last.as_ref().is_some_and(|last| last.is(sku, loc)) {
            return;
        }
        self.last = Some(Key::new(sku, loc));
        let (same_sku, same_loc) = (sku == want.first(), loc == want.second());
        match (same_sku, same_loc) {
            (true, true) => self.named = true,
            (true, false) => _ = self.sku_locs.insert(loc.into()),
            (false, true) => _ = self.loc_skus.insert(sku.into()),
            (false, false) => {}
        }
        let distance = similarity_distance(sku, want.first()) + similarity_distance(loc, want.second());
        let score = (!same_sku && !same_loc, distance);
        let worst = self.closest.last().map(|(far, distance, _)| (*far, *distance));
        if self.closest.len() < SUGGESTIONS || worst.is_some_and(|worst| score < worst) {
            self.closest.insert((score.0, score.1, Key::new(sku, loc)));
            if self.closest.len() > SUGGESTIONS {
                self.closest.pop_last();
            }
        }
    }

    /// The error for `key`, which no `noun` (message, saved entry) in `place` names; `hint`
    /// adds what the reader may not know.
    fn error(&self, key: &Key, noun: &str, place: &str, hint: Option<&str>) -> anyhow::Error {
        let (sku, loc) = key.parts();
        let mut lines = vec![format!("no {noun} in {place} names sku {sku:?} at loc {loc:?}, so there is nothing to explain")];
        if let Some(hint) = hint {
            lines.push(format!("  ({hint})"));
        }
        let sku_part = match self.sku_locs.len() {
            0 => format!("no {noun} names sku {sku:?}"),
            n => format!("sku {sku:?} is named at {n} other location(s): {}", listing(&self.sku_locs)),
        };
        let loc_part = match self.loc_skus.len() {
            0 => format!("no {noun} names loc {loc:?}"),
            n => format!("loc {loc:?} is named with {n} other sku(s): {}", listing(&self.loc_skus)),
        };
        lines.push(format!("  {sku_part}; {loc_part}"));
        if !self.closest.is_empty() {
            let keys: Vec<String> = self
                .closest
                .iter()
                .map(|(_, _, closest)| (closest.first(), closest.second()))
                .map(|(sku, loc)| format!("--sku {} --loc {}", shell_word(sku), shell_word(loc)))
                .collect();
            lines.push(format!("  the closest keys in {place}: {}", keys.join(", ")));
        }
        anyhow::anyhow!(lines.join("\n"))
    }
}

/// `name` as one word for a shell: as is when it is plain, else in single quotes.
fn shell_word(name: &str) -> String {
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@/+-".contains(&b));
    if plain {
        name.to_string()
    } else {
        format!("'{}'", name.replace('\'', "'\\''"))
    }
}

/// Edit distance between two names, ignoring case (a `--sku b` for `B` is a near miss).
fn similarity_distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(&a.to_lowercase(), &b.to_lowercase())
}

/// Up to eight names, then how many more.
fn listing(names: &BTreeSet<Name>) -> String {
    const SHOWN: usize = 8;
    let mut text = names.iter().take(SHOWN).map(Name::as_str).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Whether the engine has anything for `key`: an ATP row, an order line, or lines sourced
/// from it (a location named as a source can have demand without a message of its own).
fn engine_knows(engine: &FinalState, key: &Key) -> bool {
    let (sku, loc) = key.parts();
    engine.atp.contains_key(key)
        || engine.order_plan.contains_key(&Key::new(loc, sku))
        || engine.order_plan.iter().any(|(plan_key, line)| plan_key.second() == sku && line.source == loc)
}

/// Where the key was looked for, in words, for the error about a key nothing names.
struct Place {
    /// What names keys there.
    noun: &'static str,
    /// The place.
    place: &'static str,
    /// What the reader may not know about it.
    hint: Option<&'static str>,
}

/// A replay's inputs.
const INPUT_PLACE: Place = Place { noun: "message", place: "the input", hint: None };

/// A checkpoint's saved ledgers.
const SAVED_PLACE: Place = Place {
    noun: "saved entry",
    place: "the checkpoint",
    hint: Some("a key without stock, holds, policy or open orders is not saved"),
};

/// Refuses a key that neither the input nor the engine names, saying which keys nearby do
/// exist; `nearby` finds them (only then).
fn ensure_named(
    key: &Key,
    engine: &FinalState,
    input: &KeyInput,
    place: &Place,
    nearby: impl FnOnce() -> Result<Nearby>,
) -> Result<()> {
    if input.names_key || engine_knows(engine, key) {
        return Ok(());
    }
    let nearby = nearby()?;
    // Named only beyond the window: the key is real, its state at that time is empty.
    if nearby.named {
        return Ok(());
    }
    Err(nearby.error(key, place.noun, place.place, place.hint))
}

// ---------------------------------------------------------------------------
// The explanation.
// ---------------------------------------------------------------------------

/// One message of the key's ledger, with the key's state right after it.
#[derive(Serialize, Debug)]
pub struct LedgerEntry {
    /// Effective time (ms).
    pub effective: Millis,
    /// The message's own `ts` (differs from `effective` when late).
    pub ts: Millis,
    /// `file:line`.
    pub position: String,
    /// The message, in words.
    pub message: String,
    /// on_hand after the message.
    pub on_hand: i64,
    /// reserved after the message (holds active at its effective time). Hold expiries are
    /// listed as entries of their own, at position `-`.
    pub reserved: i64,
    /// What SPEC §2 made of it, when it was not simply applied.
    pub note: Option<String>,
}

/// A hold active at the explained time.
#[derive(Serialize, Debug)]
pub struct HoldView {
    /// res_id.
    pub res_id: String,
    /// Held quantity.
    pub qty: i64,
    /// When it expires (ms).
    pub expires_at: Millis,
    /// Where the reserve was read.
    pub position: String,
}

/// An open purchase order of the key.
#[derive(Serialize, Debug)]
pub struct PoView {
    /// po_id.
    pub po_id: String,
    /// Open quantity.
    pub qty: i64,
    /// Expected arrival (ms), when given.
    pub eta: Option<Millis>,
    /// Where its latest message was read.
    pub position: String,
}

/// The key's policy and where it was set.
#[derive(Serialize, Debug)]
pub struct PolicyView {
    /// The latest policy message's position.
    pub position: String,
    /// Effective time of that message.
    pub effective: Millis,
    /// `None` when the latest policy message deleted it.
    pub policy: Option<PolicyFields>,
}

/// A policy's fields.
#[derive(Serialize, Debug, Clone)]
pub struct PolicyFields {
    /// reorder_point.
    pub reorder_point: i64,
    /// order_up_to.
    pub order_up_to: i64,
    /// safety_stock.
    pub safety_stock: i64,
    /// pack_size.
    pub pack_size: i64,
    /// moq.
    pub moq: i64,
    /// source, when it has one.
    pub source: Option<String>,
}

impl From<&Policy> for PolicyFields {
    fn from(p: &Policy) -> Self {
        PolicyFields {
            reorder_point: p.reorder_point,
            order_up_to: p.order_up_to,
            safety_stock: p.safety_stock,
            pack_size: p.pack_size,
            moq: p.moq,
            source: p.source.as_ref().map(|s| s.to_string()),
        }
    }
}

/// An order line as the engine planned it.
#[derive(Serialize, Debug, Clone)]
pub struct LineView {
    /// The ordering location.
    pub dest: String,
    /// Where it orders from.
    pub source: String,
    /// What it asks for.
    pub requested: i64,
    /// What it gets.
    pub qty: i64,
}

/// The engine's numbers for the key (`null` fields without an ATP row).
#[derive(Serialize, Debug)]
pub struct EngineView {
    /// The key's ATP row at the explained time, `None` when it has none.
    pub atp: Option<Atp>,
    /// on_hand + on_order - reserved - position: the demand of the lines sourced here.
    pub outbound: i64,
    /// The lines sourced from this key's loc (same sku).
    pub outbound_lines: Vec<LineView>,
    /// The low-stock state (`OK`, `LOW`, `OUT`; `OK` also for keys without a policy).
    pub low_stock: String,
    /// The key's own order line, when it has one.
    pub order_line: Option<LineView>,
}

/// SPEC §3's order-line formula with the numbers substituted.
#[derive(Serialize, Debug)]
pub struct FormulaView {
    /// position (engine).
    pub position: i64,
    /// reorder_point (policy).
    pub reorder_point: i64,
    /// order_up_to - position.
    pub need: i64,
    /// ceil(max(need, moq) / pack_size) * pack_size, when the key orders.
    pub requested: Option<i64>,
    /// Why the key orders or not, in words.
    pub verdict: String,
}

/// A line competing for an internal source.
#[derive(Serialize, Debug)]
pub struct ShareView {
    /// The ordering location.
    pub dest: String,
    /// r_i.
    pub requested: i64,
    /// p_i, from the dest's policy.
    pub pack: i64,
    /// floor(A*r_i / (R*p_i)) * p_i.
    pub floor_share: i64,
    /// A*r_i mod R*p_i (the remainder's numerator; the denominator is R*p_i).
    pub remainder: String,
    /// Packs handed out of the leftover: (qty - floor_share) / pack.
    pub leftover_packs: i64,
    /// qty (engine).
    pub qty: i64,
}

/// SPEC §3's allocation at one internal source for the sku.
#[derive(Serialize, Debug)]
pub struct AllocationView {
    /// The source location.
    pub source: String,
    /// A: atp of (sku, source) (engine; 0 without a row).
    pub supply: i64,
    /// R: the sum of the lines' requested.
    pub requested_total: i64,
    /// `enough` (R <= A), `empty` (A <= 0), or `short`.
    pub status: String,
    /// A minus the floor shares (short sources only).
    pub leftover: i64,
    /// The order in which leftover packs are handed out: largest remainder first, ties by
    /// dest (short sources only).
    pub visit_order: Vec<String>,
    /// Every line at the source, by dest.
    pub lines: Vec<ShareView>,
}

/// One comparison of an `[input]` total (or a formula) with the engine's number.
#[derive(Serialize, Debug)]
pub struct Check {
    /// What is compared.
    pub what: String,
    /// From the input's ledger or SPEC's formula.
    pub derived: String,
    /// From the engine.
    pub engine: String,
    /// Whether they agree.
    pub ok: bool,
}

/// Everything `stockflow explain` says about a key.
#[derive(Serialize, Debug)]
pub struct Explanation {
    /// The key's sku.
    pub sku: String,
    /// The key's loc.
    pub loc: String,
    /// The explained time: the window's end (null when nothing was applied).
    pub as_of: Option<Millis>,
    /// Tick length.
    pub tick_ms: Millis,
    /// Allowed lateness.
    pub lateness_ms: Millis,
    /// Messages of the key before the last applied count (not listed).
    pub earlier_messages: usize,
    /// The last applied count and every message of the key after it [input].
    pub ledger: Vec<LedgerEntry>,
    /// Holds active at `as_of` [input].
    pub holds: Vec<HoldView>,
    /// Open purchase orders of the key [input].
    pub purchase_orders: Vec<PoView>,
    /// The key's latest policy message [input].
    pub policy: Option<PolicyView>,
    /// The engine's numbers.
    pub engine: EngineView,
    /// The order-line formula, for keys whose policy has a source.
    pub formula: Option<FormulaView>,
    /// The allocation at the key's internal source.
    pub allocation: Option<AllocationView>,
    /// The allocation at this key's loc, when lines are sourced from it.
    pub allocation_as_source: Option<AllocationView>,
    /// Input totals and formulas compared with the engine.
    pub checks: Vec<Check>,
}

fn position_of(config: &ReplayConfig, order: &OrderKey) -> String {
    let name = config.inputs.get(order.position.source as usize).map_or("?", |i| i.name.as_str());
    format!("{name}:{}", order.position.offset)
}

fn describe(body: &Body) -> String {
    match body {
        Body::Sale { qty } => format!("sale {qty}"),
        Body::Return { qty } => format!("return {qty}"),
        Body::Receipt { qty, po_id: Some(po) } => format!("receipt {qty} (po {po})"),
        Body::Receipt { qty, po_id: None } => format!("receipt {qty}"),
        Body::Adjust { delta, reason: Some(r) } => format!("adjust {delta:+} ({r})"),
        Body::Adjust { delta, reason: None } => format!("adjust {delta:+}"),
        Body::Count { qty } => format!("count {qty}"),
        Body::Reserve { res_id, qty, expires_at: Some(e) } => format!("reserve {res_id} {qty} until {}", rfc3339(*e)),
        Body::Reserve { res_id, qty, expires_at: None } => format!("reserve {res_id} {qty}"),
        Body::Release { res_id } => format!("release {res_id}"),
        Body::Fulfill { res_id, qty } => format!("fulfill {res_id} {qty}"),
        Body::Po { po_id, qty, .. } => format!("po {po_id} {qty}"),
        Body::Policy(Some(p)) => format!(
            "policy rp {} up-to {} ss {} pack {} moq {}{}",
            p.reorder_point,
            p.order_up_to,
            p.safety_stock,
            p.pack_size,
            p.moq,
            p.source.as_ref().map_or(String::new(), |s| format!(" from {s}"))
        ),
        Body::Policy(None) => "policy deleted".to_string(),
    }
}

/// The key's ledger walked message by message with the engine's own step
/// ([`KeyState::apply`]), each entry annotated with what the step did.
struct LedgerWalk {
    entries: Vec<LedgerEntry>,
    last_count: Option<usize>,
    state: KeyState,
    sources: SourceNames,
    /// Where the reserve of each hold in `state` was read.
    reserved_at: BTreeMap<Name, String>,
}

impl LedgerWalk {
    /// Walks the messages of `key` in `input` (SPEC order) up to `as_of`.
    fn new(config: &ReplayConfig, key: &Key, input: &KeyInput, as_of: Option<Millis>) -> Self {
        let mut walk = LedgerWalk {
            entries: Vec::new(),
            last_count: None,
            state: KeyState::default(),
            sources: SourceNames::default(),
            reserved_at: BTreeMap::new(),
        };
        for event in input.events.iter().filter(|e| e.message.loc == key.second()) {
            walk.step(config, event);
        }
        walk.expire(as_of.unwrap_or(Millis::MAX));
        walk
    }

    /// Lists (and takes out) the holds that expire at or before `until`, in expiry order: a
    /// hold is active for [effective time, expires_at).
    fn expire(&mut self, until: Millis) {
        while let Some(hold) = self.state.holds.pop_expired(until) {
            self.reserved_at.remove(&hold.res_id);
            self.entries.push(LedgerEntry {
                effective: hold.expires_at,
                ts: hold.expires_at,
                position: "-".to_string(),
                message: format!("hold {} ({}) expires", hold.res_id, hold.qty),
                on_hand: self.state.on_hand,
                reserved: self.state.holds.reserved(),
                note: None,
            });
        }
    }

    /// Applies one message with the engine's step and lists it with what the step did.
    fn step(&mut self, config: &ReplayConfig, event: &Event) {
        let body = &event.message.body;
        if matches!(body, Body::Policy(_) | Body::Po { .. }) {
            // The policy has its own section; purchase orders are not keyed messages here.
            self.state.apply(event.clone(), &mut self.sources);
            return;
        }
        let (at, ts) = (event.order.effective, event.message.ts);
        self.expire(at);
        let outcome = self.state.apply(event.clone(), &mut self.sources);
        let position = position_of(config, &event.order);
        match (outcome.hold, body) {
            (Some(HoldOutcome::Opened { .. }), Body::Reserve { res_id, .. }) => {
                self.reserved_at.insert(res_id.clone(), position.clone());
            }
            (Some(HoldOutcome::Ended { .. }), Body::Release { res_id } | Body::Fulfill { res_id, .. }) => {
                self.reserved_at.remove(res_id);
            }
            _ => {}
        }
        if outcome.stock == Some(StockOutcome::Counted) {
            self.last_count = Some(self.entries.len());
        }
        self.entries.push(LedgerEntry {
            effective: at,
            ts,
            position,
            message: describe(body),
            on_hand: self.state.on_hand,
            reserved: self.state.holds.reserved(),
            note: note_of(&outcome, ts, at),
        });
    }

    /// The holds open at the end of the walk, by res_id.
    fn holds(&self) -> Vec<HoldView> {
        self.state
            .holds
            .iter()
            .map(|hold| HoldView {
                position: self.reserved_at.get(&hold.res_id).cloned().unwrap_or_default(),
                res_id: hold.res_id.to_string(),
                qty: hold.qty,
                expires_at: hold.expires_at,
            })
            .collect()
    }
}

/// What SPEC §2 made of a message, in words, when it was not simply applied (or was late).
fn note_of(outcome: &Outcome, ts: Millis, at: Millis) -> Option<String> {
    let mut notes = Vec::new();
    if ts != at {
        notes.push(format!("late: ts {ts}"));
    }
    match outcome.hold {
        Some(HoldOutcome::Duplicate) => notes.push("duplicate: the hold is active".to_string()),
        Some(HoldOutcome::ExpiredOnArrival) => notes.push("expired on arrival".to_string()),
        Some(HoldOutcome::Orphan) => notes.push("orphan: no active hold".to_string()),
        Some(HoldOutcome::Opened { .. } | HoldOutcome::Ended { .. }) | None => {}
    }
    if let Some(StockOutcome::Absorbed { barrier }) = outcome.stock {
        notes.push(format!("absorbed: ts {ts} is older than the last count's ts {barrier}"));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// The lines of `sku` sourced from `source`, by dest (engine).
fn lines_from(engine: &FinalState, sku: &str, source: &str) -> Vec<LineView> {
    engine
        .order_plan
        .iter()
        .filter(|(plan_key, line)| plan_key.second() == sku && line.source == source)
        .map(|(plan_key, line)| LineView {
            dest: plan_key.first().to_string(),
            source: line.source.to_string(),
            requested: line.requested,
            qty: line.qty,
        })
        .collect()
}

fn allocation_at(
    engine: &FinalState,
    input: &KeyInput,
    sku: &str,
    source: &str,
    checks: &mut Vec<Check>,
) -> AllocationView {
    let supply = engine.atp.get(&Key::new(sku, source)).map_or(0, |a| a.atp);
    let lines = lines_from(engine, sku, source);
    let pack_of = |dest: &str| input.policy_of(dest).and_then(|(_, p)| p).map_or(1, |p| p.pack_size.max(1));
    let claims: Vec<Claim> = lines
        .iter()
        .map(|l| Claim { dest: Name::from(l.dest.as_str()), requested: l.requested, pack: pack_of(&l.dest) })
        .collect();
    let total: i64 = lines.iter().map(|l| l.requested).sum();
    let status = if total <= supply {
        "enough"
    } else if supply <= 0 {
        "empty"
    } else {
        "short"
    };
    let a = i128::from(supply.max(0));
    let r = i128::from(total);
    let mut shares = Vec::new();
    let mut floors = 0i64;
    let mut fractions: Vec<(i128, i128, &str)> = Vec::new();
    for (line, claim) in lines.iter().zip(&claims) {
        let p = i128::from(claim.pack);
        let (floor_share, remainder) = if status == "short" {
            let numerator = a * i128::from(claim.requested);
            fractions.push((numerator % (r * p), r * p, line.dest.as_str()));
            ((numerator / (r * p) * p) as i64, format!("{}/{}", numerator % (r * p), r * p))
        } else {
            (line.qty, "0".to_string())
        };
        floors += floor_share;
        shares.push(ShareView {
            dest: line.dest.clone(),
            requested: line.requested,
            pack: claim.pack,
            floor_share,
            remainder,
            leftover_packs: (line.qty - floor_share) / claim.pack,
            qty: line.qty,
        });
    }
    for ((line, claim), qty) in lines.iter().zip(&claims).zip(fair_share(supply, &claims)) {
        check(checks, &format!("qty: fair share of {} at {source} vs engine", claim.dest), qty, line.qty);
    }
    // SPEC §3: remainders compared exactly (cross-multiplied), ties by dest bytewise.
    fractions.sort_by(|x, y| (y.0 * x.1).cmp(&(x.0 * y.1)).then_with(|| x.2.as_bytes().cmp(y.2.as_bytes())));
    AllocationView {
        source: source.to_string(),
        supply,
        requested_total: total,
        status: status.to_string(),
        leftover: if status == "short" { supply - floors } else { 0 },
        visit_order: fractions.iter().map(|f| f.2.to_string()).collect(),
        lines: shares,
    }
}

fn check<T: PartialEq + ToString>(checks: &mut Vec<Check>, what: &str, derived: T, engine: T) {
    let ok = derived == engine;
    checks.push(Check { what: what.to_string(), derived: derived.to_string(), engine: engine.to_string(), ok });
}

/// Builds the explanation of `key` from the engine's final state and the key's input.
pub fn explain(config: &ReplayConfig, key: &Key, engine: &FinalState, input: &KeyInput) -> Explanation {
    let (sku, loc) = key.parts();
    let as_of = engine.summary.as_of;
    let walk = LedgerWalk::new(config, key, input, as_of);
    let holds = walk.holds();
    let purchase_orders = open_orders(config, key, input);
    let policy_entry = input.policy_of(loc);
    let policy = policy_entry.map(|(event, p)| PolicyView {
        position: position_of(config, &event.order),
        effective: event.order.effective,
        policy: p.map(PolicyFields::from),
    });
    let current_policy: Option<&Policy> = policy_entry.and_then(|(_, p)| p);
    let engine_view = engine_view(engine, key);
    let mut checks = Vec::new();
    let derived = Derived {
        on_hand: walk.state.on_hand,
        reserved: holds.iter().map(|h| h.qty).sum(),
        on_order: purchase_orders.iter().map(|p| p.qty).sum(),
    };
    check_stock(&mut checks, &derived, &engine_view, current_policy);
    let formula = current_policy.filter(|p| p.source.is_some()).map(|p| formula_view(p, &engine_view, &mut checks));
    let allocation = engine_view
        .order_line
        .as_ref()
        .filter(|l| !is_external(&l.source))
        .map(|l| allocation_at(engine, input, sku, &l.source, &mut checks));
    let allocation_as_source =
        (!engine_view.outbound_lines.is_empty()).then(|| allocation_at(engine, input, sku, loc, &mut checks));

    let earlier_messages = walk.last_count.unwrap_or(0);
    let mut ledger = walk.entries;
    ledger.drain(..earlier_messages);
    Explanation {
        sku: sku.to_string(),
        loc: loc.to_string(),
        as_of,
        tick_ms: config.ticks.tick_ms,
        lateness_ms: config.lateness_ms,
        earlier_messages,
        ledger,
        holds,
        purchase_orders,
        policy,
        engine: engine_view,
        formula,
        allocation,
        allocation_as_source,
        checks,
    }
}

/// The open purchase orders of `key` in the input, by po_id.
fn open_orders(config: &ReplayConfig, key: &Key, input: &KeyInput) -> Vec<PoView> {
    let (sku, loc) = key.parts();
    input
        .purchase_orders
        .iter()
        .filter_map(|(po_id, event)| match &event.message.body {
            Body::Po { qty, status: PoStatus::Open, eta, .. }
                if *qty != 0 && event.message.sku == *sku && event.message.loc == *loc =>
            {
                Some(PoView {
                    po_id: po_id.to_string(),
                    qty: *qty,
                    eta: *eta,
                    position: position_of(config, &event.order),
                })
            }
            _ => None,
        })
        .collect()
}

/// The engine's numbers for `key`.
fn engine_view(engine: &FinalState, key: &Key) -> EngineView {
    let (sku, loc) = key.parts();
    let atp = engine.atp.get(key).cloned();
    let numbers = numbers_of(atp.as_ref());
    EngineView {
        atp,
        outbound: numbers.on_hand + numbers.on_order - numbers.reserved - numbers.position,
        outbound_lines: if is_external(loc) { Vec::new() } else { lines_from(engine, sku, loc) },
        low_stock: engine.low_stock.get(key).map_or("OK", |v| v.state.as_str()).to_string(),
        order_line: engine.order_plan.get(&Key::new(loc, sku)).map(|l| LineView {
            dest: loc.to_string(),
            source: l.source.to_string(),
            requested: l.requested,
            qty: l.qty,
        }),
    }
}

/// The key's ATP numbers, zero without a row.
fn numbers_of(row: Option<&Atp>) -> Atp {
    row.cloned().unwrap_or(Atp { on_hand: 0, reserved: 0, on_order: 0, available: 0, atp: 0, position: 0 })
}

/// The totals of the key's `[input]` lists.
struct Derived {
    on_hand: i64,
    reserved: i64,
    on_order: i64,
}

/// Compares the input's totals and SPEC §3's ATP and low-stock formulas with the engine.
fn check_stock(checks: &mut Vec<Check>, derived: &Derived, engine: &EngineView, policy: Option<&Policy>) {
    let numbers = numbers_of(engine.atp.as_ref());
    check(checks, "on_hand: ledger vs engine", derived.on_hand, numbers.on_hand);
    check(checks, "reserved: active holds vs engine", derived.reserved, numbers.reserved);
    check(checks, "on_order: open POs vs engine", derived.on_order, numbers.on_order);
    let outbound = engine.outbound_lines.iter().map(|l| l.requested).sum();
    check(checks, "outbound: lines sourced here vs engine", outbound, engine.outbound);
    let safety_stock = policy.map_or(0, |p| p.safety_stock);
    check(
        checks,
        "atp: max(0, on_hand - reserved - safety_stock)",
        (numbers.on_hand - numbers.reserved - safety_stock).max(0),
        numbers.atp,
    );
    if let Some(p) = policy.filter(|_| engine.atp.is_some()) {
        let state = if numbers.available <= 0 {
            "OUT"
        } else if numbers.position <= p.reorder_point {
            "LOW"
        } else {
            "OK"
        };
        check(checks, "low stock: SPEC's state vs engine", state, engine.low_stock.as_str());
    }
}

/// SPEC §3's order-line formula for a sourced policy at the engine's position, checked against
/// the engine's line.
fn formula_view(p: &Policy, engine: &EngineView, checks: &mut Vec<Check>) -> FormulaView {
    let position = numbers_of(engine.atp.as_ref()).position;
    let need = p.order_up_to - position;
    let line = line_for(p, position);
    let verdict = if position > p.reorder_point {
        format!("no line: position {position} > reorder_point {}", p.reorder_point)
    } else if need <= 0 {
        format!("no line: need {need} <= 0")
    } else {
        format!("orders: position {position} <= reorder_point {} and need {need} > 0", p.reorder_point)
    };
    check(
        checks,
        "requested: formula vs engine order line",
        line.as_ref().map_or(0, |l| l.requested),
        engine.order_line.as_ref().map_or(0, |l| l.requested),
    );
    FormulaView { position, reorder_point: p.reorder_point, need, requested: line.map(|l| l.requested), verdict }
}

// ---------------------------------------------------------------------------
// Text.
// ---------------------------------------------------------------------------

/// A number substituted into a formula: negatives in parentheses, so `37 - (-10)` reads right.
fn n(v: i64) -> String {
    if v < 0 {
        format!("({v})")
    } else {
        v.to_string()
    }
}

/// Lays out rows as left-aligned columns (the last column is not padded).
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>], numeric: &[bool]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::from("  ");
        for (i, cell) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            let pad = widths[i].saturating_sub(cell.chars().count());
            if numeric.get(i).copied().unwrap_or(false) {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if !last {
                    text.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                text.push_str("  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(out, &header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        line(out, row);
    }
}

fn render_allocation(out: &mut String, a: &AllocationView, sku: &str) {
    let _ = writeln!(out, "  supply A = atp of ({sku}, {}) = {}", a.source, a.supply);
    let _ = writeln!(out, "  R = sum of requested = {}", a.requested_total);
    match a.status.as_str() {
        "enough" => {
            let _ = writeln!(out, "  R {} <= A {}: every line gets what it requests", a.requested_total, a.supply);
        }
        "empty" => {
            let _ = writeln!(out, "  A {} <= 0: every line gets 0 (unmet demand stays visible)", a.supply);
        }
        _ => {
            let _ = writeln!(
                out,
                "  R {} > A {}: short; qty_i = floor(A*r_i / (R*p_i)) * p_i, then the leftover {} one pack at a time,",
                a.requested_total, a.supply, a.leftover
            );
            let _ =
                writeln!(out, "  largest remainder first (ties by dest), while qty_i + p_i <= r_i and p_i <= leftover");
            let _ = writeln!(out, "  visiting order: {}", a.visit_order.join(", "));
        }
    }
    if a.status != "short" {
        let rows: Vec<Vec<String>> = a
            .lines
            .iter()
            .map(|l| vec![l.dest.clone(), l.requested.to_string(), l.pack.to_string(), l.qty.to_string()])
            .collect();
        table(out, &["dest", "requested r", "pack p", "qty [engine]"], &rows, &[false, true, true, true]);
        return;
    }
    let rows: Vec<Vec<String>> = a
        .lines
        .iter()
        .map(|l| {
            vec![
                l.dest.clone(),
                l.requested.to_string(),
                l.pack.to_string(),
                l.floor_share.to_string(),
                l.remainder.clone(),
                format!("+{}", l.leftover_packs),
                l.qty.to_string(),
            ]
        })
        .collect();
    table(
        out,
        &["dest", "requested r", "pack p", "floor share", "remainder", "leftover packs", "qty [engine]"],
        &rows,
        &[false, true, true, true, true, true, true],
    );
}

/// The explanation as plain text for a planner.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    render_heading(&mut out, e);
    render_ledger(&mut out, e);
    render_holds(&mut out, e);
    render_purchase_orders(&mut out, e);
    render_policy(&mut out, e);
    render_position(&mut out, e);
    render_order_line(&mut out, e);
    if let Some(a) = &e.allocation {
        let _ = writeln!(out, "\nAllocation at {} for {} [engine]", a.source, e.sku);
        render_allocation(&mut out, a, &e.sku);
    }
    if let Some(a) = &e.allocation_as_source {
        let _ = writeln!(out, "\nDemand on {} as a source for {} [engine]", a.source, e.sku);
        render_allocation(&mut out, a, &e.sku);
    }
    let _ = writeln!(out, "\nChecks ([input] and SPEC's formulas against [engine])");
    for c in &e.checks {
        let verdict = if c.ok { "ok" } else { "MISMATCH" };
        let _ = writeln!(out, "  {verdict:<8}  {}: {} vs {}", c.what, c.derived, c.engine);
    }
    out
}

fn render_heading(o: &mut String, e: &Explanation) {
    let _ = writeln!(o, "Why {} at {} is where it is", e.sku, e.loc);
    match e.as_of {
        Some(t) => {
            let _ = writeln!(o, "as of {} = {t} ms (tick {} ms, lateness {} ms)", rfc3339(t), e.tick_ms, e.lateness_ms);
        }
        None => {
            let _ = writeln!(o, "nothing was applied: the input holds no valid message within the window");
        }
    }
    let _ = writeln!(o, "{LEGEND}");
}

fn render_ledger(o: &mut String, e: &Explanation) {
    let _ = writeln!(o, "\nLedger [input]");
    if e.ledger.is_empty() {
        let _ = writeln!(o, "  no stock messages for this key");
        return;
    }
    if e.earlier_messages > 0 {
        let _ = writeln!(
            o,
            "  {} earlier message(s) not shown: the last count below replaced their effect on on_hand",
            e.earlier_messages
        );
    } else if !e.ledger.iter().any(|l| l.message.starts_with("count ")) {
        let _ = writeln!(o, "  no count applied: on_hand is the sum of every movement");
    }
    let rows: Vec<Vec<String>> = e
        .ledger
        .iter()
        .map(|l| {
            vec![
                rfc3339(l.effective),
                l.position.clone(),
                l.message.clone(),
                l.on_hand.to_string(),
                l.reserved.to_string(),
                l.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        o,
        &["effective time", "position", "message", "on_hand", "reserved", "note"],
        &rows,
        &[false, false, false, true, true, false],
    );
}

fn render_holds(o: &mut String, e: &Explanation) {
    let _ = writeln!(o, "\nActive holds [input]");
    if e.holds.is_empty() {
        let _ = writeln!(o, "  none");
        return;
    }
    let rows: Vec<Vec<String>> = e
        .holds
        .iter()
        .map(|h| vec![h.res_id.clone(), h.qty.to_string(), rfc3339(h.expires_at), h.position.clone()])
        .collect();
    table(o, &["res_id", "qty", "expires_at", "reserved at"], &rows, &[false, true, false, false]);
}

fn render_purchase_orders(o: &mut String, e: &Explanation) {
    let _ = writeln!(o, "\nOpen purchase orders [input]");
    if e.purchase_orders.is_empty() {
        let _ = writeln!(o, "  none");
        return;
    }
    let rows: Vec<Vec<String>> = e
        .purchase_orders
        .iter()
        .map(|p| vec![p.po_id.clone(), p.qty.to_string(), p.eta.map_or("-".to_string(), rfc3339), p.position.clone()])
        .collect();
    table(o, &["po_id", "qty", "eta", "latest message"], &rows, &[false, true, false, false]);
}

fn render_policy(o: &mut String, e: &Explanation) {
    let _ = writeln!(o, "\nPolicy [input]");
    match &e.policy {
        None => {
            let _ = writeln!(o, "  none: no low-stock signal and no order line");
        }
        Some(PolicyView { position, policy: None, .. }) => {
            let _ = writeln!(o, "  deleted at {position}: no low-stock signal and no order line");
        }
        Some(PolicyView { position, effective, policy: Some(p) }) => {
            let _ = writeln!(
                o,
                "  reorder_point {}, order_up_to {}, safety_stock {}, pack_size {}, moq {}, source {}",
                p.reorder_point,
                p.order_up_to,
                p.safety_stock,
                p.pack_size,
                p.moq,
                p.source.as_deref().unwrap_or("none (signals only, no order line)")
            );
            let _ = writeln!(o, "  set at {position}, {}", rfc3339(*effective));
        }
    }
}

/// The key's current policy, when it has one.
fn current_policy(e: &Explanation) -> Option<&PolicyFields> {
    e.policy.as_ref().and_then(|p| p.policy.as_ref())
}

fn render_position(o: &mut String, e: &Explanation) {
    let _ = writeln!(o, "\nPosition [engine]");
    let Some(a) = &e.engine.atp else {
        let _ = writeln!(o, "  no ATP row: nothing on hand, reserved, on order or outbound, and no policy");
        return;
    };
    let ss = current_policy(e).map_or(0, |p| p.safety_stock);
    let _ = writeln!(o, "  on_hand   = {}", a.on_hand);
    let _ = writeln!(o, "  reserved  = {}", a.reserved);
    let _ = writeln!(o, "  on_order  = {}", a.on_order);
    let lines = if e.engine.outbound_lines.is_empty() {
        "no lines are sourced here".to_string()
    } else {
        let lines: Vec<String> = e.engine.outbound_lines.iter().map(|l| format!("{} {}", l.dest, l.requested)).collect();
        lines.join(" + ")
    };
    let _ =
        writeln!(o, "  outbound  = {}   (requested of the lines sourced from {}: {lines})", e.engine.outbound, e.loc);
    let _ = writeln!(o, "  available = on_hand - reserved = {} - {} = {}", n(a.on_hand), n(a.reserved), a.available);
    let _ = writeln!(
        o,
        "  atp       = max(0, on_hand - reserved - safety_stock) = max(0, {} - {} - {ss}) = {}",
        n(a.on_hand),
        n(a.reserved),
        a.atp
    );
    let _ = writeln!(
        o,
        "  position  = on_hand + on_order - reserved - outbound = {} + {} - {} - {} = {}",
        n(a.on_hand),
        n(a.on_order),
        n(a.reserved),
        n(e.engine.outbound),
        a.position
    );
    render_low_stock(o, e, a);
}

fn render_low_stock(o: &mut String, e: &Explanation, a: &Atp) {
    let Some(p) = current_policy(e) else {
        let _ = writeln!(o, "  low stock = no signal (no policy)");
        return;
    };
    let why = match e.engine.low_stock.as_str() {
        "OUT" => format!("available {} <= 0", a.available),
        "LOW" => format!("available {} > 0 and position {} <= reorder_point {}", a.available, a.position, p.reorder_point),
        _ => format!("available {} > 0 and position {} > reorder_point {}", a.available, a.position, p.reorder_point),
    };
    let _ = writeln!(o, "  low stock = {}: {why}", e.engine.low_stock);
}

fn render_order_line(o: &mut String, e: &Explanation) {
    let _ = writeln!(o, "\nOrder line");
    match (&e.formula, current_policy(e)) {
        (Some(f), Some(p)) => {
            let _ = writeln!(o, "  {}", f.verdict);
            let _ =
                writeln!(o, "  need      = order_up_to - position = {} - {} = {}", p.order_up_to, n(f.position), f.need);
            if let Some(requested) = f.requested {
                let wanted = f.need.max(p.moq);
                let _ = writeln!(
                    o,
                    "  requested = ceil(max(need, moq) / pack_size) * pack_size = ceil(max({}, {}) / {}) * {} = ceil({wanted} / {}) * {} = {requested}",
                    f.need, p.moq, p.pack_size, p.pack_size, p.pack_size, p.pack_size
                );
            }
        }
        (_, Some(_)) => {
            let _ = writeln!(o, "  the key's policy has no source: it orders nothing");
        }
        (_, None) => {
            let _ = writeln!(o, "  the key has no policy: it orders nothing");
        }
    }
    match &e.engine.order_line {
        Some(l) => {
            let _ = writeln!(
                o,
                "  [engine] order_plan: {} -> {}: requested {}, qty {}",
                l.source, l.dest, l.requested, l.qty
            );
            if is_external(&l.source) {
                let _ = writeln!(o, "  {} is external (a vendor): qty = requested", l.source);
            }
        }
        None => {
            let _ = writeln!(o, "  [engine] order_plan: no line");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::io::format::rfc3339;

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        for ms in [1_500u64, 86_399_999, 1_709_251_199_000, 4_102_444_800_000] {
            assert_eq!(dataflows::decode::parse_time(&rfc3339(ms)), Some(ms));
        }
    }
}
