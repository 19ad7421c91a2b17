//! SPEC §2's clocks: effective time and lateness per (source, partition), ticks and the window.

use crate::model::Millis;
use serde::{Deserialize, Serialize};

/// Default expiry of a hold without `expires_at`: 15 minutes after its effective time.
pub const DEFAULT_HOLD_MS: Millis = 15 * 60 * 1000;

/// How logical output times are derived from effective times: the tick and the window's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticks {
    /// Outputs are emitted at multiples of this (>= 1).
    pub tick_ms: Millis,
    /// `--until`: the window's last logical time; later effective times are not applied.
    pub until: Option<Millis>,
}

impl Ticks {
    /// The logical time at which a change at effective time `t` is reflected, or `None` when
    /// `t` lies beyond the window.
    pub fn emission(&self, t: Millis) -> Option<Millis> {
        let tick = t.div_ceil(self.tick_ms).saturating_mul(self.tick_ms);
        match self.until {
            Some(until) if t > until => None,
            Some(until) => Some(tick.min(until)),
            None => Some(tick),
        }
    }
}

/// What the partition clock decided about one valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The effective time: `ts`, or `max_prev - lateness` when the message is late.
    pub effective: Millis,
    /// Whether the message was late (its effective time was raised).
    pub late: bool,
}

/// The effective-time rule for one (source, partition): looks only at that partition, so
/// results do not depend on how partitions are spread over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// Largest `ts` among the valid messages seen so far.
    pub max_prev: Option<Millis>,
}

impl PartitionClock {
    /// Stamps the next valid message of the partition and remembers its `ts`.
    pub fn stamp(&mut self, ts: Millis, lateness: Millis) -> Stamp {
        let floor = self.max_prev.map_or(0, |m| m.saturating_sub(lateness));
        self.max_prev = Some(self.max_prev.map_or(ts, |m| m.max(ts)));
        if ts < floor {
            Stamp { effective: floor, late: true }
        } else {
            Stamp { effective: ts, late: false }
        }
    }

    /// No later message of this partition can have an effective time below this.
    pub fn low_watermark(&self, lateness: Millis) -> Millis {
        self.max_prev.map_or(0, |m| m.saturating_sub(lateness))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emission_rounds_up_to_the_tick_and_caps_at_the_window() {
        let ticks = Ticks { tick_ms: 1000, until: None };
        assert_eq!(ticks.emission(0), Some(0));
        assert_eq!(ticks.emission(1), Some(1000));
        assert_eq!(ticks.emission(1000), Some(1000));
        assert_eq!(ticks.emission(1001), Some(2000));
        let window = Ticks { tick_ms: 1000, until: Some(2500) };
        assert_eq!(window.emission(2001), Some(2500));
        assert_eq!(window.emission(2500), Some(2500));
        assert_eq!(window.emission(2501), None);
    }

    #[test]
    fn late_messages_take_max_prev_minus_lateness() {
        let mut clock = PartitionClock::default();
        assert_eq!(clock.stamp(5000, 500), Stamp { effective: 5000, late: false });
        assert_eq!(clock.stamp(3000, 500), Stamp { effective: 4500, late: true });
        assert_eq!(clock.stamp(4600, 500), Stamp { effective: 4600, late: false });
        // A late message does not lower max_prev.
        assert_eq!(clock.low_watermark(500), 4500);
        assert_eq!(clock.stamp(9000, 500).effective, 9000);
        assert_eq!(clock.low_watermark(500), 8500);
    }
}
