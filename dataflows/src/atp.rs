//! SPEC §3's per-key state: the key base (on_hand, reserved, on_order, policy), the ATP rows
//! with position, and network ATP per sku.

use serde::{Deserialize, Serialize};

use crate::ledger::{Fact, FactUpdate};
use crate::model::{Name, Policy};
use crate::{Collection, Key, Stream};

/// What the ledgers know of a key, before the order plan: its stock, open orders and policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Base {
    /// Physical stock.
    pub on_hand: i64,
    /// Sum of active holds.
    pub reserved: i64,
    /// Sum of open purchase orders.
    pub on_order: i64,
    /// The key's replenishment policy, if any.
    pub policy: Option<Policy>,
}

impl Base {
    /// Position before outbound demand: on_hand + on_order - reserved.
    pub fn own_position(&self) -> i64 {
        self.on_hand.saturating_add(self.on_order).saturating_sub(self.reserved)
    }
}

/// A key's ATP row (SPEC §3), with the reorder point low stock needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row {
    /// Physical stock.
    pub on_hand: i64,
    /// Sum of active holds.
    pub reserved: i64,
    /// Sum of open purchase orders.
    pub on_order: i64,
    /// on_hand - reserved.
    pub available: i64,
    /// max(0, available - safety_stock).
    pub atp: i64,
    /// on_hand + on_order - reserved - outbound.
    pub position: i64,
    /// Requested quantity of the order lines sourced from this key (R in SPEC's allocation).
    pub outbound: i64,
    /// The policy's reorder point; `None` without a policy.
    pub reorder_point: Option<i64>,
}

/// The inputs of a key's base, as one value type so that a single reduce can combine them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum BasePart {
    Stock(i64, i64),
    OnOrder(i64),
    Policy(Policy),
}

/// The counted ledger outcomes, as a collection whose multiplicities are the counts.
pub fn counters<'s>(facts: Stream<'s, FactUpdate>) -> Collection<'s, crate::ledger::Counter> {
    use differential_dataflow::AsCollection;
    use timely::dataflow::operators::vec::Map;
    facts
        .flat_map(|(fact, time, diff)| match fact {
            Fact::Counter(c) => Some((c, time, diff)),
            _ => None,
        })
        .as_collection()
}

/// Combines the ledger facts into one [`Base`] per key that has stock, open orders or a policy.
pub fn key_base<'s>(facts: Stream<'s, FactUpdate>) -> Collection<'s, (Key, Base)> {
    use differential_dataflow::AsCollection;
    use timely::dataflow::operators::vec::Map;
    facts
        .flat_map(|(fact, time, diff)| {
            let part = match fact {
                Fact::Stock(key, s) => (key, BasePart::Stock(s.on_hand, s.reserved)),
                Fact::OnOrder(key, qty) => (key, BasePart::OnOrder(qty)),
                Fact::Policy(key, p) => (key, BasePart::Policy(p)),
                Fact::Counter(_) => return None,
            };
            Some((part, time, diff))
        })
        .as_collection()
        .reduce_named("KeyBase", |_key, parts, out| {
            let mut base = Base::default();
            for &(part, n) in parts {
                match part {
                    BasePart::Stock(on_hand, reserved) => {
                        base.on_hand = *on_hand;
                        base.reserved = *reserved;
                    }
                    BasePart::OnOrder(qty) => {
                        base.on_order = base.on_order.saturating_add(qty.saturating_mul(n as i64))
                    }
                    BasePart::Policy(p) => base.policy = Some(p.clone()),
                }
            }
            if base.on_hand != 0 || base.reserved != 0 || base.on_order != 0 || base.policy.is_some() {
                out.push((base, 1));
            }
        })
}

/// The ATP rows: every key with non-zero on_hand, reserved, on_order or outbound, or a policy.
///
/// `outbound` is the demand of order lines sourced from the key (internal sources only).
pub fn rows<'s>(base: Collection<'s, (Key, Base)>, outbound: Collection<'s, (Key, i64)>) -> Collection<'s, (Key, Row)> {
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    enum Part {
        Base(Base),
        Outbound(i64),
    }
    base.map(|(k, b)| (k, Part::Base(b))).concat(outbound.map(|(k, o)| (k, Part::Outbound(o)))).reduce_named(
        "AtpRows",
        |_key, parts, out| {
            let mut base = None;
            let mut outbound = 0i64;
            for &(part, _) in parts {
                match part {
                    Part::Base(b) => base = Some(b),
                    Part::Outbound(o) => outbound = *o,
                }
            }
            let empty = Base::default();
            let base = base.unwrap_or(&empty);
            if base.on_hand == 0 && base.reserved == 0 && base.on_order == 0 && outbound == 0 && base.policy.is_none() {
                return;
            }
            let available = base.on_hand.saturating_sub(base.reserved);
            let safety_stock = base.policy.as_ref().map_or(0, |p| p.safety_stock);
            out.push((
                Row {
                    on_hand: base.on_hand,
                    reserved: base.reserved,
                    on_order: base.on_order,
                    available,
                    atp: available.saturating_sub(safety_stock).max(0),
                    position: base.own_position().saturating_sub(outbound),
                    outbound,
                    reorder_point: base.policy.as_ref().map(|p| p.reorder_point),
                },
                1,
            ));
        },
    )
}

/// Network ATP: per sku, the sum of atp over its ATP rows (present while the sku has a row).
pub fn network_atp<'s>(rows: Collection<'s, (Key, Row)>) -> Collection<'s, (Name, i64)> {
    // Group by (sku, atp) first: the reduce then sees one value per distinct atp, with the
    // number of locations holding it, instead of one value per location.
    rows.map(|((sku, _loc), row)| (sku, row.atp)).reduce_named("NetworkAtp", |_sku, atps, out| {
        let total = atps.iter().fold(0i64, |sum, (atp, n)| sum.saturating_add(atp.saturating_mul(*n as i64)));
        out.push((total, 1));
    })
}
