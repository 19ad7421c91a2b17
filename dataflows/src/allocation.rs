//! SPEC §3's allocation: what each order line actually gets when its internal source is short
//! (fair share by requested quantity, in whole packs, leftover by largest remainder).

use serde::{Deserialize, Serialize};

use crate::model::Name;
use crate::order_plan::{is_external, Line};
use crate::{Collection, Key};

/// An order-plan record's value, keyed by (dest, sku).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlanLine {
    /// Where the line orders from.
    pub source: Name,
    /// What the dest asks for.
    pub requested: i64,
    /// What the source can give it.
    pub qty: i64,
}

/// A line competing for one internal source's supply.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// The ordering location.
    pub dest: Name,
    /// Its requested quantity (r_i).
    pub requested: i64,
    /// Its own policy's pack size (p_i).
    pub pack: i64,
}

/// Fair-share allocation of `supply` (A) over `claims`, returning each claim's qty in the
/// claims' order. Exact integer arithmetic: products in i128, remainders compared by
/// cross-multiplication.
pub fn fair_share(supply: i64, claims: &[Claim]) -> Vec<i64> {
    let supply = i128::from(supply.max(0));
    let total: i128 = claims.iter().map(|c| i128::from(c.requested)).sum();
    if total <= supply {
        return claims.iter().map(|c| c.requested).collect();
    }
    // qty_i = floor(A*r_i / (R*p_i)) * p_i, remainder (A*r_i mod R*p_i) / (R*p_i).
    let mut qty: Vec<i128> = Vec::with_capacity(claims.len());
    let mut remainders: Vec<(i128, i128)> = Vec::with_capacity(claims.len());
    for c in claims {
        let numerator = supply * i128::from(c.requested);
        let denominator = total * i128::from(c.pack);
        qty.push(numerator / denominator * i128::from(c.pack));
        remainders.push((numerator % denominator, denominator));
    }
    let mut visit: Vec<usize> = (0..claims.len()).collect();
    visit.sort_by(|&a, &b| {
        let (na, da) = remainders[a];
        let (nb, db) = remainders[b];
        // Largest fraction first; equal fractions by dest bytewise.
        (nb * da).cmp(&(na * db)).then_with(|| claims[a].dest.as_bytes().cmp(claims[b].dest.as_bytes()))
    });
    let mut leftover = supply - qty.iter().sum::<i128>();
    loop {
        let mut handed = false;
        for &i in &visit {
            let pack = i128::from(claims[i].pack);
            if qty[i] + pack <= i128::from(claims[i].requested) && pack <= leftover {
                qty[i] += pack;
                leftover -= pack;
                handed = true;
            }
        }
        if !handed {
            break;
        }
    }
    qty.into_iter().map(|q| q as i64).collect()
}

/// What an internal source can do for its lines, from its requested total R and its ATP A.
///
/// Only a short source couples its lines: when it has enough, or nothing, each line's qty
/// depends on that line alone, so a change to one line does not recompute its neighbours.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Supply {
    /// R <= A: every line gets what it requests.
    Enough,
    /// A <= 0 < R: every line gets 0.
    Empty,
    /// 0 < A < R: the lines share A.
    Short(i64),
}

impl Supply {
    /// The supply of a source with requested total `requested` (R > 0) and ATP `atp` (A).
    pub fn of(requested: i64, atp: i64) -> Self {
        if requested <= atp {
            Supply::Enough
        } else if atp <= 0 {
            Supply::Empty
        } else {
            Supply::Short(atp)
        }
    }
}

/// The order plan keyed by (dest, sku): external lines get what they request, lines on an
/// internal source share its ATP.
pub fn allocate<'s>(
    lines: Collection<'s, (Key, Line)>,
    supply: Collection<'s, (Key, Supply)>,
) -> Collection<'s, (Key, PlanLine)> {
    let external = lines.clone().flat_map(|(key, line)| {
        let (sku, dest) = key.parts();
        let plan_line = PlanLine { requested: line.requested, qty: line.requested, source: line.source };
        is_external(&plan_line.source).then(|| (Key::new(dest, sku), plan_line))
    });
    let claims = lines.flat_map(|(key, line)| {
        let (sku, dest) = key.parts();
        let claim = || Claim { dest: dest.into(), requested: line.requested, pack: line.pack };
        (!is_external(&line.source)).then(|| (Key::new(sku, &line.source), claim()))
    });
    let supply = supply.arrange_by_key_named("SupplyBySource");
    let matched = claims
        .arrange_by_key_named("ClaimsBySource")
        .join_core(supply, |key, claim, supply| Some((key.clone(), (claim.clone(), supply.clone()))));
    let plan = |key: Key, claim: Claim, qty: i64| {
        let (sku, source) = key.parts();
        (Key::new(&claim.dest, sku), PlanLine { source: source.into(), requested: claim.requested, qty })
    };
    let independent = matched.clone().flat_map(move |(key, (claim, supply))| match supply {
        Supply::Enough => {
            let qty = claim.requested;
            Some(plan(key, claim, qty))
        }
        Supply::Empty => Some(plan(key, claim, 0)),
        Supply::Short(_) => None,
    });
    let shared = matched
        .flat_map(|(key, (claim, supply))| match supply {
            Supply::Short(atp) => Some((key, (claim, atp))),
            _ => None,
        })
        .reduce_named("FairShare", |_source_key, claims, out| {
            let supply = claims.first().map_or(0, |((_, atp), _)| *atp);
            let claims: Vec<Claim> = claims.iter().map(|((claim, _), _)| claim.clone()).collect();
            for (claim, qty) in claims.iter().zip(fair_share(supply, &claims)) {
                out.push(((claim.dest.clone(), claim.requested, qty), 1));
            }
        })
        .map(|(key, (dest, requested, qty))| {
            let (sku, source) = key.parts();
            (Key::new(&dest, sku), PlanLine { source: source.into(), requested, qty })
        });
    external.concat(independent).concat(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(dest: &str, requested: i64, pack: i64) -> Claim {
        Claim { dest: dest.into(), requested, pack }
    }

    #[test]
    fn sap_example_500_over_200_250_350() {
        let claims = [claim("a", 200, 1), claim("b", 250, 1), claim("c", 350, 1)];
        assert_eq!(fair_share(500, &claims), vec![125, 156, 219]);
    }

    #[test]
    fn enough_supply_gives_everyone_their_request() {
        let claims = [claim("a", 12, 4), claim("b", 20, 4)];
        assert_eq!(fair_share(32, &claims), vec![12, 20]);
        assert_eq!(fair_share(100, &claims), vec![12, 20]);
    }

    #[test]
    fn packs_and_equal_remainders_break_ties_by_dest() {
        // The allocation fixture at tick 1000: A=22 over S1 12/4, S2 20/4, S3 9/3.
        let claims = [claim("S1", 12, 4), claim("S2", 20, 4), claim("S3", 9, 3)];
        assert_eq!(fair_share(22, &claims), vec![4, 12, 6]);
    }

    #[test]
    fn supply_status_matches_fair_share() {
        let claims = [claim("S1", 12, 4), claim("S2", 20, 4), claim("S3", 9, 3)];
        for atp in -3..50 {
            let expected = fair_share(atp, &claims);
            match Supply::of(41, atp) {
                Supply::Enough => assert_eq!(expected, vec![12, 20, 9]),
                Supply::Empty => assert_eq!(expected, vec![0, 0, 0]),
                Supply::Short(a) => assert_eq!(a, atp),
            }
        }
    }

    #[test]
    fn nothing_left_keeps_lines_at_zero() {
        let claims = [claim("S1", 12, 4), claim("S2", 20, 4)];
        assert_eq!(fair_share(0, &claims), vec![0, 0]);
        assert_eq!(fair_share(-5, &claims), vec![0, 0]);
    }
}
