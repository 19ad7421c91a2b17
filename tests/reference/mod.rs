//! Test-only reference model of SPEC §1–4.
//!
//! Deliberately simple and NON-incremental: the ledger is a plain sequential fold over the
//! events in SPEC §2's order, and at every visited logical time ALL derived state (ATP rows,
//! the order-line fixpoint, allocation, network ATP, low-stock states) is recomputed from
//! scratch and diffed against the previous visited time. Clarity over speed.
//!
//! Readings of the SPEC used here (agreed, and confirmed by the golden fixtures):
//! - counts are barriers by their own `ts`: a movement/count with `ts` < the `ts` of the latest
//!   applied count of its key is absorbed (equal `ts` is applied); an absorbed message is still
//!   "applied" and still counts in `late` when late;
//! - `reserve` on an active hold is a duplicate (checked first), then `expires_at <= effective`
//!   is expired_on_arrival; `release`/`fulfill` on an unknown/inactive hold are orphans, and the
//!   orphan `fulfill` still decrements on_hand unless absorbed (then it counts as both);
//! - a hold is active at t iff it was opened (earlier in the order) and t < expires_at and no
//!   release/fulfill ended it; the default expiry is effective + 15 min;
//! - output times are ceil(t / tick) * tick, capped at `--until` T when given (T itself is a
//!   time); an expiry E takes effect at the tick of E; without `--until` the run ends at the
//!   tick of the largest effective time and nothing later is output;
//! - external sources (`vendor:...`) get no outbound and no ATP row;
//! - low stock: keys without a policy are OK, the first record of a key has previous "OK",
//!   records are emitted on every change of state (also back to OK).

#![allow(dead_code)]

use dataflows::decode::decode;
use dataflows::model::{Body, DeadLetter, Message, PoStatus, Policy, Position};
use std::collections::{BTreeMap, BTreeSet};

/// Run options (the CLI's `--tick-ms`, `--lateness-ms`, `--until`).
#[derive(Clone, Debug)]
pub struct Options {
    pub tick_ms: u64,
    pub lateness_ms: u64,
    pub until: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options { tick_ms: 1000, lateness_ms: 0, until: None }
    }
}

/// Every output file of a run: relative path (e.g. `snapshot/atp.jsonl`) → exact content.
pub type Outputs = BTreeMap<String, String>;

/// The output files a run writes, in a fixed order.
pub const OUTPUT_FILES: [&str; 10] = [
    "atp.jsonl",
    "low_stock.jsonl",
    "order_plan.jsonl",
    "network_atp.jsonl",
    "dead_letter.jsonl",
    "snapshot/atp.jsonl",
    "snapshot/low_stock.jsonl",
    "snapshot/order_plan.jsonl",
    "snapshot/network_atp.jsonl",
    "summary.json",
];

const DEFAULT_HOLD_MS: u64 = 15 * 60 * 1000;

/// (sku, loc)
type Key = (String, String);

#[derive(Clone, Debug, Default)]
struct Counters {
    read: u64,
    applied: u64,
    rejected: u64,
    late: u64,
    beyond_window: u64,
    orphan: u64,
    duplicate: u64,
    expired_on_arrival: u64,
    absorbed: u64,
}

/// A valid message inside the window, with its place in the order.
struct Applied {
    effective: u64,
    source: usize,
    offset: u64,
    late: bool,
    msg: Message,
}

// ---------------------------------------------------------------------------------------------
// Ledger: the sequential fold over applied events (SPEC §1–2).

#[derive(Clone, Debug)]
struct Hold {
    qty: i64,
    expires_at: u64,
    ended: bool,
}

impl Hold {
    fn active_at(&self, t: u64) -> bool {
        !self.ended && t < self.expires_at
    }
}

#[derive(Default)]
struct Ledger {
    on_hand: BTreeMap<Key, i64>,
    /// `ts` of the latest applied count per key.
    barrier: BTreeMap<Key, u64>,
    /// The latest hold per (key, res_id); at most one can be active at a time.
    holds: BTreeMap<(Key, String), Hold>,
    /// po_id → (key, open qty, status)
    pos: BTreeMap<String, (Key, i64, PoStatus)>,
    policies: BTreeMap<Key, Policy>,
    counters: Counters,
}

impl Ledger {
    fn absorbed(&self, key: &Key, ts: u64) -> bool {
        self.barrier.get(key).is_some_and(|&b| ts < b)
    }

    fn movement(&mut self, key: &Key, ts: u64, delta: i64) {
        if self.absorbed(key, ts) {
            self.counters.absorbed += 1;
        } else {
            *self.on_hand.entry(key.clone()).or_default() += delta;
        }
    }

    /// Ends the hold if it is active at `t`; returns false for an orphan.
    fn end_hold(&mut self, hk: &(Key, String), t: u64) -> bool {
        match self.holds.get_mut(hk) {
            Some(h) if h.active_at(t) => {
                h.ended = true;
                true
            }
            _ => false,
        }
    }

    fn apply(&mut self, ev: &Applied) {
        let m = &ev.msg;
        let key: Key = (m.sku.to_string(), m.loc.to_string());
        let (ts, eff) = (m.ts, ev.effective);
        self.counters.applied += 1;
        if ev.late {
            self.counters.late += 1;
        }
        match &m.body {
            Body::Sale { qty } => self.movement(&key, ts, -qty),
            Body::Return { qty } | Body::Receipt { qty, .. } => self.movement(&key, ts, *qty),
            Body::Adjust { delta, .. } => self.movement(&key, ts, *delta),
            Body::Count { qty } => {
                if self.absorbed(&key, ts) {
                    self.counters.absorbed += 1;
                } else {
                    self.on_hand.insert(key.clone(), *qty);
                    self.barrier.insert(key, ts);
                }
            }
            Body::Reserve { res_id, qty, expires_at } => {
                let hk = (key, res_id.to_string());
                let expires_at = expires_at.unwrap_or(eff + DEFAULT_HOLD_MS);
                if self.holds.get(&hk).is_some_and(|h| h.active_at(eff)) {
                    self.counters.duplicate += 1;
                } else if expires_at <= eff {
                    self.counters.expired_on_arrival += 1;
                } else {
                    self.holds.insert(hk, Hold { qty: *qty, expires_at, ended: false });
                }
            }
            Body::Release { res_id } => {
                if !self.end_hold(&(key, res_id.to_string()), eff) {
                    self.counters.orphan += 1;
                }
            }
            Body::Fulfill { res_id, qty } => {
                if !self.end_hold(&(key.clone(), res_id.to_string()), eff) {
                    self.counters.orphan += 1;
                }
                self.movement(&key, ts, -qty);
            }
            Body::Po { po_id, qty, status, .. } => {
                self.pos.insert(po_id.to_string(), (key, *qty, *status));
            }
            Body::Policy(Some(p)) => {
                self.policies.insert(key, p.clone());
            }
            Body::Policy(None) => {
                self.policies.remove(&key);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Derived state at one logical time (SPEC §3), recomputed from scratch.

#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    on_hand: i64,
    reserved: i64,
    on_order: i64,
    available: i64,
    atp: i64,
    position: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    source: String,
    requested: i64,
    qty: i64,
}

#[derive(Clone, Debug, Default)]
struct View {
    rows: BTreeMap<Key, Row>,
    /// (dest, sku) → line
    plan: BTreeMap<(String, String), Line>,
    /// sku → network atp
    net: BTreeMap<String, i64>,
    /// keys whose low-stock state is not OK → "LOW" / "OUT"
    low: BTreeMap<Key, &'static str>,
    policies: BTreeMap<Key, Policy>,
}

fn is_external(source: &str) -> bool {
    source.starts_with("vendor:")
}

fn ceil_to(x: i64, pack: i64) -> i64 {
    (x + pack - 1) / pack * pack
}

/// outbound per (sku, internal source loc) = sum of requested of the lines sourced there.
fn outbound_of(lines: &BTreeMap<(String, String), (String, i64)>) -> BTreeMap<Key, i64> {
    let mut out = BTreeMap::new();
    for ((_dest, sku), (source, requested)) in lines {
        if !is_external(source) {
            *out.entry((sku.clone(), source.clone())).or_default() += requested;
        }
    }
    out
}

fn derive(ledger: &Ledger, t: u64) -> View {
    // (on_hand, reserved, on_order) per key.
    let mut base: BTreeMap<Key, (i64, i64, i64)> = BTreeMap::new();
    for (k, v) in &ledger.on_hand {
        base.entry(k.clone()).or_default().0 += v;
    }
    for ((k, _), h) in &ledger.holds {
        if h.active_at(t) {
            base.entry(k.clone()).or_default().1 += h.qty;
        }
    }
    for (k, qty, status) in ledger.pos.values() {
        if *status == PoStatus::Open {
            base.entry(k.clone()).or_default().2 += qty;
        }
    }
    let policies = &ledger.policies;
    let position = |k: &Key, outbound: &BTreeMap<Key, i64>| {
        let (oh, res, oo) = base.get(k).copied().unwrap_or_default();
        oh + oo - res - outbound.get(k).copied().unwrap_or(0)
    };

    // Order lines: plain repeated evaluation from "no lines" until unchanged (<= 64 rounds).
    let mut lines: BTreeMap<(String, String), (String, i64)> = BTreeMap::new();
    for _round in 0..64 {
        let outbound = outbound_of(&lines);
        let mut next = BTreeMap::new();
        for (k, p) in policies {
            let Some(source) = &p.source else { continue };
            let pos = position(k, &outbound);
            let need = p.order_up_to - pos;
            if pos <= p.reorder_point && need > 0 {
                let requested = ceil_to(need.max(p.moq), p.pack_size);
                next.insert((k.1.clone(), k.0.clone()), (source.to_string(), requested));
            }
        }
        if next == lines {
            break;
        }
        lines = next;
    }
    let outbound = outbound_of(&lines);

    // ATP rows.
    let mut keys: BTreeSet<Key> = base.keys().cloned().collect();
    keys.extend(policies.keys().cloned());
    keys.extend(outbound.keys().cloned());
    let mut rows = BTreeMap::new();
    for k in keys {
        let (on_hand, reserved, on_order) = base.get(&k).copied().unwrap_or_default();
        let ob = outbound.get(&k).copied().unwrap_or(0);
        let policy = policies.get(&k);
        if on_hand == 0 && reserved == 0 && on_order == 0 && ob == 0 && policy.is_none() {
            continue;
        }
        let safety = policy.map_or(0, |p| p.safety_stock);
        let row = Row {
            on_hand,
            reserved,
            on_order,
            available: on_hand - reserved,
            atp: (on_hand - reserved - safety).max(0),
            position: on_hand + on_order - reserved - ob,
        };
        rows.insert(k, row);
    }

    // Allocation. Group the lines by (sku, source); lines come in dest order within a group.
    let mut groups: BTreeMap<(String, String), Vec<(String, i64)>> = BTreeMap::new();
    for ((dest, sku), (source, requested)) in &lines {
        groups.entry((sku.clone(), source.clone())).or_default().push((dest.clone(), *requested));
    }
    let mut plan = BTreeMap::new();
    for ((sku, source), group) in groups {
        let qtys: Vec<i64> = if is_external(&source) {
            group.iter().map(|(_, r)| *r).collect()
        } else {
            let supply = rows.get(&(sku.clone(), source.clone())).map_or(0, |r| r.atp);
            let packs: Vec<i64> =
                group.iter().map(|(dest, _)| policies[&(sku.clone(), dest.clone())].pack_size).collect();
            let reqs: Vec<i64> = group.iter().map(|(_, r)| *r).collect();
            allocate(supply, &reqs, &packs)
        };
        for ((dest, requested), qty) in group.into_iter().zip(qtys) {
            plan.insert((dest, sku.clone()), Line { source: source.clone(), requested, qty });
        }
    }

    // Network ATP and low stock.
    let mut net = BTreeMap::new();
    let mut low = BTreeMap::new();
    for (k, r) in &rows {
        *net.entry(k.0.clone()).or_default() += r.atp;
        if let Some(p) = policies.get(k) {
            if r.available <= 0 {
                low.insert(k.clone(), "OUT");
            } else if r.position <= p.reorder_point {
                low.insert(k.clone(), "LOW");
            }
        }
    }
    View { rows, plan, net, low, policies: policies.clone() }
}

/// SPEC §3 allocation of `supply` over lines (requested r_i, pack p_i), given in dest order.
pub fn allocate(supply: i64, reqs: &[i64], packs: &[i64]) -> Vec<i64> {
    let a = supply as i128;
    let r_total: i128 = reqs.iter().map(|&r| r as i128).sum();
    if r_total <= a {
        return reqs.to_vec();
    }
    let n = reqs.len();
    let mut qty = vec![0i128; n];
    let mut rem = vec![0i128; n]; // remainder_i = (A*r_i) mod (R*p_i); fraction = rem_i / (R*p_i)
    for i in 0..n {
        let (r, p) = (reqs[i] as i128, packs[i] as i128);
        qty[i] = (a * r) / (r_total * p) * p;
        rem[i] = (a * r) % (r_total * p);
    }
    // Largest fraction first: rem_i/(R p_i) > rem_j/(R p_j)  <=>  rem_i * p_j > rem_j * p_i.
    // Ties keep dest order (the input order), the sort being stable.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| (rem[j] * packs[i] as i128).cmp(&(rem[i] * packs[j] as i128)));
    let mut leftover = a - qty.iter().sum::<i128>();
    loop {
        let mut handed = false;
        for &i in &order {
            let (r, p) = (reqs[i] as i128, packs[i] as i128);
            if qty[i] + p <= r && p <= leftover {
                qty[i] += p;
                leftover -= p;
                handed = true;
            }
        }
        if !handed {
            break;
        }
    }
    qty.into_iter().map(|q| q as i64).collect()
}

// ---------------------------------------------------------------------------------------------
// Output formatting (exact bytes).

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn atp_fields(k: &Key, r: &Row) -> String {
    format!(
        "\"sku\":{},\"loc\":{},\"on_hand\":{},\"reserved\":{},\"on_order\":{},\"available\":{},\"atp\":{},\"position\":{}",
        js(&k.0),
        js(&k.1),
        r.on_hand,
        r.reserved,
        r.on_order,
        r.available,
        r.atp,
        r.position
    )
}

fn low_fields(k: &Key, state: &str, view: &View) -> String {
    let (position, available) = view.rows.get(k).map_or((0, 0), |r| (r.position, r.available));
    let rp = view.policies.get(k).map_or("null".to_string(), |p| p.reorder_point.to_string());
    format!(
        "\"sku\":{},\"loc\":{},\"state\":\"{}\",\"position\":{},\"reorder_point\":{},\"available\":{}",
        js(&k.0),
        js(&k.1),
        state,
        position,
        rp,
        available
    )
}

fn plan_fields(dest: &str, sku: &str, l: &Line) -> String {
    format!(
        "\"source\":{},\"dest\":{},\"sku\":{},\"requested\":{},\"qty\":{}",
        js(&l.source),
        js(dest),
        js(sku),
        l.requested,
        l.qty
    )
}

fn union<'a, K: Ord + Clone, A, B>(a: &'a BTreeMap<K, A>, b: &'a BTreeMap<K, B>) -> BTreeSet<K> {
    a.keys().chain(b.keys()).cloned().collect()
}

/// Appends the change records between `prev` and `cur` at time `t`.
fn diff(prev: &View, cur: &View, t: u64, out: &mut Outputs) {
    let mut atp = String::new();
    for k in union(&prev.rows, &cur.rows) {
        match (prev.rows.get(&k), cur.rows.get(&k)) {
            (p, Some(c)) if p != Some(c) => atp += &format!("{{\"ts\":{t},{}}}\n", atp_fields(&k, c)),
            (Some(_), None) => {
                atp += &format!("{{\"ts\":{t},\"sku\":{},\"loc\":{},\"deleted\":true}}\n", js(&k.0), js(&k.1))
            }
            _ => {}
        }
    }
    let mut low = String::new();
    for k in union(&prev.low, &cur.low) {
        let before = prev.low.get(&k).copied().unwrap_or("OK");
        let after = cur.low.get(&k).copied().unwrap_or("OK");
        if before != after {
            low += &format!("{{\"ts\":{t},{},\"previous\":\"{before}\"}}\n", low_fields(&k, after, cur));
        }
    }
    let mut plan = String::new();
    for k in union(&prev.plan, &cur.plan) {
        match (prev.plan.get(&k), cur.plan.get(&k)) {
            (p, Some(c)) if p != Some(c) => plan += &format!("{{\"ts\":{t},{}}}\n", plan_fields(&k.0, &k.1, c)),
            (Some(_), None) => {
                plan += &format!("{{\"ts\":{t},\"dest\":{},\"sku\":{},\"deleted\":true}}\n", js(&k.0), js(&k.1))
            }
            _ => {}
        }
    }
    let mut net = String::new();
    for sku in union(&prev.net, &cur.net) {
        match (prev.net.get(&sku), cur.net.get(&sku)) {
            (p, Some(c)) if p != Some(c) => net += &format!("{{\"ts\":{t},\"sku\":{},\"atp\":{c}}}\n", js(&sku)),
            (Some(_), None) => net += &format!("{{\"ts\":{t},\"sku\":{},\"deleted\":true}}\n", js(&sku)),
            _ => {}
        }
    }
    for (name, text) in
        [("atp.jsonl", atp), ("low_stock.jsonl", low), ("order_plan.jsonl", plan), ("network_atp.jsonl", net)]
    {
        out.get_mut(name).unwrap().push_str(&text);
    }
}

fn snapshot(view: &View, out: &mut Outputs) {
    let mut s = String::new();
    for (k, r) in &view.rows {
        s += &format!("{{{}}}\n", atp_fields(k, r));
    }
    out.insert("snapshot/atp.jsonl".into(), s);
    let mut s = String::new();
    for (k, state) in &view.low {
        s += &format!("{{{}}}\n", low_fields(k, state, view));
    }
    out.insert("snapshot/low_stock.jsonl".into(), s);
    let mut s = String::new();
    for ((dest, sku), l) in &view.plan {
        s += &format!("{{{}}}\n", plan_fields(dest, sku, l));
    }
    out.insert("snapshot/order_plan.jsonl".into(), s);
    let mut s = String::new();
    for (sku, atp) in &view.net {
        s += &format!("{{\"sku\":{},\"atp\":{atp}}}\n", js(sku));
    }
    out.insert("snapshot/network_atp.jsonl".into(), s);
}

fn summary(c: &Counters, as_of: Option<u64>) -> String {
    let as_of = as_of.map_or("null".to_string(), |t| t.to_string());
    format!(
        "{{\n \"absorbed\": {},\n \"applied\": {},\n \"as_of\": {},\n \"beyond_window\": {},\n \"duplicate\": {},\n \"expired_on_arrival\": {},\n \"late\": {},\n \"orphan\": {},\n \"read\": {},\n \"rejected\": {}\n}}\n",
        c.absorbed, c.applied, as_of, c.beyond_window, c.duplicate, c.expired_on_arrival, c.late, c.orphan, c.read, c.rejected
    )
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Splits a file into lines: (1-based line number, bytes without the line ending).
fn lines_of(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if parts.last().is_some_and(|l| l.is_empty()) {
        parts.pop(); // the piece after the final newline (or an empty file) is no line
    }
    parts.into_iter().enumerate().map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l))).collect()
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// Runs the reference on `files` (base name, content) and returns every output file's content.
pub fn run(files: &[(String, Vec<u8>)], opts: &Options) -> Outputs {
    let tick = opts.tick_ms;
    let mut files: Vec<&(String, Vec<u8>)> = files.iter().collect();
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    // Decode, effective times, window.
    let mut c = Counters::default();
    let mut dead = Vec::new();
    let mut applied = Vec::new();
    for (source, (_name, bytes)) in files.iter().enumerate() {
        let mut max_prev: Option<u64> = None;
        for (offset, line) in lines_of(bytes) {
            if is_blank(line) {
                continue;
            }
            c.read += 1;
            let msg = match decode(line) {
                Ok(m) => m,
                Err(rej) => {
                    c.rejected += 1;
                    let position = Position { source: source as u32, partition: 0, offset };
                    dead.push(DeadLetter::new(position, rej, line));
                    continue;
                }
            };
            let floor = max_prev.map(|m| m as i128 - opts.lateness_ms as i128);
            let late = floor.is_some_and(|f| (msg.ts as i128) < f);
            let effective = if late { floor.unwrap() as u64 } else { msg.ts };
            max_prev = Some(max_prev.map_or(msg.ts, |m| m.max(msg.ts)));
            if opts.until.is_some_and(|t| effective > t) {
                c.beyond_window += 1;
            } else {
                applied.push(Applied { effective, source, offset, late, msg });
            }
        }
    }
    applied.sort_by_key(|e| (e.effective, e.source, e.offset));

    // Logical times: event ticks and hold-expiry ticks, up to the end of the window.
    let tick_of = |x: u64| {
        let t = x.div_ceil(tick) * tick;
        opts.until.map_or(t, |u| t.min(u))
    };
    let end = opts.until.or(applied.last().map(|e| tick_of(e.effective)));
    let mut times = BTreeSet::new();
    if let Some(end) = end {
        times.insert(end);
        for e in &applied {
            times.insert(tick_of(e.effective));
            if let Body::Reserve { expires_at, .. } = &e.msg.body {
                let expiry = expires_at.unwrap_or(e.effective + DEFAULT_HOLD_MS);
                if expiry <= end {
                    times.insert(tick_of(expiry));
                }
            }
        }
    }

    // Walk the times: fold the ledger forward, recompute the view, diff.
    let mut out: Outputs = OUTPUT_FILES.iter().map(|f| (f.to_string(), String::new())).collect();
    let mut ledger = Ledger::default();
    let mut prev = View::default();
    let mut next_event = 0;
    for &t in &times {
        while next_event < applied.len() && applied[next_event].effective <= t {
            ledger.apply(&applied[next_event]);
            next_event += 1;
        }
        let cur = derive(&ledger, t);
        diff(&prev, &cur, t, &mut out);
        prev = cur;
    }
    assert_eq!(next_event, applied.len(), "every applied event lies within the window");
    snapshot(&prev, &mut out);

    let ledger_counters = ledger.counters;
    c.applied = ledger_counters.applied;
    c.late = ledger_counters.late;
    c.orphan = ledger_counters.orphan;
    c.duplicate = ledger_counters.duplicate;
    c.expired_on_arrival = ledger_counters.expired_on_arrival;
    c.absorbed = ledger_counters.absorbed;

    let mut dl = String::new();
    dead.sort_by_key(|d| d.position);
    for d in &dead {
        let p = d.position;
        dl += &format!(
            "{{\"source\":{},\"partition\":{},\"offset\":{},\"reason\":{},\"payload\":{}}}\n",
            js(&files[p.source as usize].0),
            p.partition,
            p.offset,
            js(&d.reason),
            js(&d.payload)
        );
    }
    out.insert("dead_letter.jsonl".into(), dl);
    out.insert("summary.json".into(), summary(&c, end));
    out
}
