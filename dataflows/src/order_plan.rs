//! SPEC §3's order lines: the fixpoint over the sourcing graph, where a store's line is
//! outbound demand on its distribution center, whose own line goes further up, to any depth.

use differential_dataflow::AsCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Filter;
use timely::order::Product;

use crate::model::{Name, Policy};
use crate::{Collection, Key};

/// Rounds of the sourcing fixpoint. An acyclic network converges in (depth + 1) rounds; a cycle
/// never does, so the iteration stops here and values on the cycle are whatever this round
/// left (SPEC: unspecified). Sourcing chains deeper than this are treated like cycles.
pub const MAX_ROUNDS: u64 = 100;

/// An order line of a key (sku, dest): what it asks of its source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Line {
    /// Where it orders from: a location id or `vendor:...`.
    pub source: Name,
    /// ceil(max(need, moq) / pack) * pack.
    pub requested: i64,
    /// The dest policy's pack size, which allocation hands out.
    pub pack: i64,
}

/// Whether a source is external (a vendor), hence unconstrained and never a key's outbound.
pub fn is_external(source: &str) -> bool {
    source.starts_with("vendor:")
}

/// The order line of a key with `policy` at `position`, if it orders.
pub fn line_for(policy: &Policy, position: i64) -> Option<Line> {
    let source = policy.source.as_ref()?;
    if position > policy.reorder_point {
        return None;
    }
    let need = policy.order_up_to.saturating_sub(position);
    if need <= 0 {
        return None;
    }
    let pack = policy.pack_size.max(1);
    let wanted = need.max(policy.moq);
    let requested = (wanted.saturating_add(pack - 1) / pack).saturating_mul(pack);
    Some(Line { source: source.clone(), requested, pack })
}

/// A key that plans: its position before outbound, and its policy (which has a source).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Planner {
    /// on_hand + on_order - reserved.
    pub own_position: i64,
    /// The key's policy; its `source` is set.
    pub policy: Policy,
}

fn outbound_in<'s, T>(
    lines: differential_dataflow::VecCollection<'s, T, (Key, Line)>,
    name: &str,
) -> differential_dataflow::VecCollection<'s, T, (Key, i64)>
where
    T: timely::progress::Timestamp + differential_dataflow::lattice::Lattice + Ord,
{
    // Each line counts its requested quantity as its multiplicity, so the reduce sees one
    // accumulated value per source key instead of one per dependent line (a distribution
    // center has a line from each of its stores). Quantities are at most 1e9 (SPEC §1), so
    // the sums stay far from overflowing.
    lines
        .explode(|(key, line)| {
            (!is_external(&line.source)).then(|| ((Key::new(key.first(), &line.source), ()), line.requested as isize))
        })
        .reduce_named(name, |_key, total, out| {
            // Only keys with a non-zero total reach the reduce.
            out.push((total[0].1 as i64, 1));
        })
}

/// The order lines keyed by (sku, dest), and the outbound demand they put on each internal
/// source (sku, loc): the fixpoint of "each key's line, given the demand its dependents' lines
/// put on it", bounded by [`MAX_ROUNDS`].
///
/// Most keys are never a source (stores), so their line is their *standalone* line, computed
/// once outside the loop (by [`crate::ledger::ledger`], which also hands over the planners of
/// the keys that can be a source). The loop only corrects the lines of keys that have outbound demand,
/// so a store's sale costs one outbound update per round, not a line recomputation per round.
pub fn order_lines<'s>(
    standalone: Collection<'s, (Key, Line)>,
    source_planners: Collection<'s, (Key, Planner)>,
) -> (Collection<'s, (Key, Line)>, Collection<'s, (Key, i64)>) {
    let planners = source_planners.arrange_by_key_named("PlannersByKey");
    let outer = standalone.scope();
    outer.scoped::<Product<crate::model::Millis, u64>, _, _>("OrderPlanFixpoint", |inner| {
        let standalone = standalone.enter(inner);
        let planners = planners.enter(inner);
        let (variable, lines) =
            differential_dataflow::operators::iterate::Variable::new_from(standalone.clone(), Product::new(0, 1));
        let outbound = outbound_in(lines, "RoundOutbound");
        // For a key with outbound demand: retract its standalone line, add its line at the
        // position the demand leaves it.
        let corrections = outbound
            .clone()
            .join_core(planners, |key, outbound, p| {
                let standalone = line_for(&p.policy, p.own_position).map(|line| ((key.clone(), line), -1));
                let loaded =
                    line_for(&p.policy, p.own_position.saturating_sub(*outbound)).map(|line| ((key.clone(), line), 1));
                standalone.into_iter().chain(loaded)
            })
            .explode(|(update, sign)| Some((update, sign)));
        let next = standalone.concat(corrections);
        // Stop feeding rounds back past the bound, so a cycle cannot iterate forever.
        let bounded = next.inner.clone().filter(|(_, time, _)| time.inner < MAX_ROUNDS).as_collection();
        variable.set(bounded);
        (next.leave(outer), outbound.leave(outer))
    })
}
