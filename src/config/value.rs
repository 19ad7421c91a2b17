//! One parser per kind of flag value — times, durations, ticks, counts, start positions — so
//! that every command, and every `--config` file key, says the same thing about the same
//! mistake. Each is a clap `value_parser`; clap prefixes its message with the flag and the value
//! (`invalid value '0' for '--tick-ms <DURATION>': ...`), a config file with its path and line.

use std::time::Duration;

use dataflows::model::{Millis, MAX_TIME};

use crate::io::source::kafka::Start;

/// The forms a time may take, with examples: the end of every time error.
pub const TIME_FORMS: &str = "a time is milliseconds since the epoch (1700000030000) or an RFC 3339 date-time \
     with seconds and a zone (2023-11-14T22:13:50Z, 2023-11-14T23:13:50.250+01:00)";

/// A flag value that does not parse; the message says what is wrong, the corrected form where
/// one can be guessed, and which forms are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a time in one of [`TIME_FORMS`].
    #[error("{0}; {TIME_FORMS}")]
    Time(TimeProblem),
    /// Not a duration in the flag's unit.
    #[error("{problem}; {}", duration_forms(*.unit))]
    Duration {
        /// What is wrong.
        problem: DurationProblem,
        /// The flag's unit, which a bare number means.
        unit: Unit,
    },
    /// A tick of zero.
    #[error("a tick is at least 1ms (1, 500ms, 1s, 5m; a bare number is milliseconds)")]
    ZeroTick,
    /// `--checkpoint-every` neither ticks nor a duration, or zero.
    #[error("expected a number of ticks above 0 (600) or a duration above 0 (30s, 5m, 1h)")]
    CheckpointEvery,
    /// Not a whole number at least `min`.
    #[error("expected a whole number, {min} or more")]
    Count {
        /// The smallest value allowed.
        min: u64,
    },
    /// `--start` neither `earliest`, `latest` nor a time.
    #[error("expected earliest, latest or a time{}; {TIME_FORMS}", did_you_mean(.suggestion))]
    Start {
        /// The keyword it is closest to, if any.
        suggestion: Option<&'static str>,
    },
}

/// `"; did you mean X?"`, or nothing.
fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default()
}

/// What is wrong with a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeProblem {
    /// A negative number of milliseconds.
    #[error("times start at 1970-01-01T00:00:00Z (0)")]
    BeforeEpoch,
    /// Beyond the last time SPEC allows.
    #[error("times end at 9999-12-31T23:59:59.999Z ({MAX_TIME})")]
    AfterMax,
    /// A near miss whose corrected form parses.
    #[error("{}; write {fixed}{}", .reasons.join(" and "), .guess.note())]
    Fixable {
        /// What the text lacks or has too much of, e.g. "no time zone".
        reasons: Vec<&'static str>,
        /// The text with those fixed.
        fixed: String,
        /// What the fix assumed.
        guess: Guess,
    },
    /// The shape of a date-time, but no such date or clock time.
    #[error("no such date or time (month 1-12, a day the month has, hour 0-23, minute and second 0-59)")]
    NoSuchDate,
    /// Nothing like a time.
    #[error("not a time")]
    Unrecognised,
}

/// What a corrected time assumed that the text did not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guess {
    /// Nothing: only the form changed.
    Nothing,
    /// UTC, for a time without a zone.
    Utc,
    /// Midnight UTC, for a date alone.
    MidnightUtc,
}

impl Guess {
    fn note(self) -> &'static str {
        match self {
            Guess::Nothing => "",
            Guess::Utc => " for UTC (or an offset such as +01:00 in place of Z)",
            Guess::MidnightUtc => " for midnight UTC",
        }
    }
}

/// Parses a time: milliseconds since the epoch or RFC 3339 with a zone (the grammar of a
/// message's `ts`, so a time copied from an input or output line works).
pub fn time(text: &str) -> Result<Millis, ValueError> {
    dataflows::decode::parse_time(text).ok_or_else(|| ValueError::Time(time_problem(text)))
}

fn time_problem(text: &str) -> TimeProblem {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(text) {
        return TimeProblem::AfterMax;
    }
    if text.strip_prefix('-').is_some_and(digits) {
        return TimeProblem::BeforeEpoch;
    }
    let mut reasons = Vec::new();
    let mut fixed = text.trim().to_string();
    if fixed.len() != text.len() {
        reasons.push("spaces around it");
    }
    if fixed.len() > 10 && fixed.as_bytes()[10] == b' ' {
        fixed.replace_range(10..11, "T");
        reasons.push("a space where the T goes");
    }
    let date_shape = |s: &str| s.len() >= 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
    if !date_shape(&fixed) {
        return TimeProblem::Unrecognised;
    }
    let mut guess = Guess::Nothing;
    if fixed.len() == 10 {
        fixed.push_str("T00:00:00Z");
        guess = Guess::MidnightUtc;
        reasons.push("a date without a time of day");
    } else {
        // `…THH:MM` followed by a zone or nothing: the seconds are missing.
        let after_minutes = fixed.as_bytes().get(16).copied();
        if fixed.len() >= 16 && fixed.as_bytes()[13] == b':' && after_minutes != Some(b':') {
            fixed.insert_str(16, ":00");
            reasons.push("no seconds");
        }
        let tail = &fixed[fixed.len().min(19)..];
        let has_zone = tail.ends_with(['Z', 'z']) || tail.contains(['+', '-']);
        if !has_zone {
            fixed.push('Z');
            guess = Guess::Utc;
            reasons.push("no time zone");
        }
    }
    if reasons.is_empty() || dataflows::decode::parse_time(&fixed).is_none() {
        let b = fixed.as_bytes();
        let full_shape = b.len() >= 20 && b[10] == b'T' && b[13] == b':' && b[16] == b':';
        return if full_shape { TimeProblem::NoSuchDate } else { TimeProblem::Unrecognised };
    }
    TimeProblem::Fixable { reasons, fixed, guess }
}

/// The unit of a duration flag, which a bare number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `--tick-ms 1000`.
    Millis,
    /// `--metrics-linger-secs 30`.
    Seconds,
}

impl Unit {
    fn millis(self) -> u64 {
        match self {
            Unit::Millis => 1,
            Unit::Seconds => 1000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Seconds => "seconds",
        }
    }
}

fn duration_forms(unit: Unit) -> String {
    format!("a duration is a whole number with a unit (500ms, 2s, 5m, 1h) or a bare number of {}", unit.name())
}

/// What is wrong with a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationProblem {
    /// A minus sign.
    #[error("a duration cannot be negative")]
    Negative,
    /// A fraction, with the whole-millisecond form when there is one.
    #[error("whole numbers only{}", .0.as_ref().map(|f| format!(" (write {f})")).unwrap_or_default())]
    Fraction(Option<String>),
    /// More than `u64` milliseconds.
    #[error("too long")]
    TooLong,
    /// Not a whole number of the flag's unit (`500ms` for a seconds flag).
    #[error("not a whole number of seconds")]
    NotWhole,
    /// No number, or an unknown unit.
    #[error("not a duration")]
    Unrecognised,
}

/// The milliseconds of each unit suffix.
const UNITS: [(&str, u64); 4] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];

/// Parses a duration into a count of `unit`: `500ms`, `2s`, `5m`, `1h`, or a bare number meaning
/// `unit`.
pub fn duration(text: &str, unit: Unit) -> Result<u64, ValueError> {
    let fail = |problem| ValueError::Duration { problem, unit };
    if text.starts_with('-') {
        return Err(fail(DurationProblem::Negative));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let per = if suffix.is_empty() {
        unit.millis()
    } else {
        match UNITS.iter().find(|(s, _)| *s == suffix) {
            Some((_, per)) => *per,
            None if suffix.starts_with('.') => return Err(fail(DurationProblem::Fraction(fraction_fix(text, unit)))),
            None => return Err(fail(DurationProblem::Unrecognised)),
        }
    };
    if number.is_empty() {
        return Err(fail(DurationProblem::Unrecognised));
    }
    let millis = number.parse::<u64>().ok().and_then(|n| n.checked_mul(per)).ok_or(fail(DurationProblem::TooLong))?;
    if millis % unit.millis() != 0 {
        return Err(fail(DurationProblem::NotWhole));
    }
    Ok(millis / unit.millis())
}

/// `1.5s` as `1500ms` (in the flag's unit when whole), if the fraction is a whole number of ms.
fn fraction_fix(text: &str, unit: Unit) -> Option<String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let per = if suffix.is_empty() { unit.millis() } else { UNITS.iter().find(|(s, _)| *s == suffix)?.1 };
    let (whole, frac) = number.split_once('.')?;
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let scale = 10u64.pow(frac.len() as u32);
    let exact = (whole.parse::<u64>().ok()? * scale + frac.parse::<u64>().ok()?).checked_mul(per)?;
    (exact % scale == 0).then(|| format!("{}ms", exact / scale))
}

/// A duration in milliseconds (`--lateness-ms`, `--idle-ms`, `--metadata-refresh-ms`).
pub fn millis(text: &str) -> Result<u64, ValueError> {
    duration(text, Unit::Millis)
}

/// A duration in whole seconds (`--metrics-linger-secs`).
pub fn seconds(text: &str) -> Result<u64, ValueError> {
    duration(text, Unit::Seconds)
}

/// A tick length in milliseconds, at least 1.
pub fn tick(text: &str) -> Result<u64, ValueError> {
    match duration(text, Unit::Millis)? {
        0 => Err(ValueError::ZeroTick),
        ms => Ok(ms),
    }
}

/// `--checkpoint-every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointEvery {
    /// Wall-clock interval.
    Wall(Duration),
    /// Event-time interval in ticks.
    Ticks(u64),
}

/// `--checkpoint-every`: a bare number is ticks of event time, a duration wall-clock time.
pub fn checkpoint_every(text: &str) -> Result<CheckpointEvery, ValueError> {
    let every = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>().ok().filter(|&n| n > 0).map(CheckpointEvery::Ticks)
    } else {
        duration(text, Unit::Millis)
            .ok()
            .filter(|&ms| ms > 0)
            .map(|ms| CheckpointEvery::Wall(Duration::from_millis(ms)))
    };
    every.ok_or(ValueError::CheckpointEvery)
}

/// A whole number at least 1 (`-w`, `-n`).
pub fn positive(text: &str) -> Result<usize, ValueError> {
    text.parse::<usize>().ok().filter(|&n| n >= 1).ok_or(ValueError::Count { min: 1 })
}

/// A whole number at least 0 (`-p`).
pub fn index(text: &str) -> Result<usize, ValueError> {
    text.parse::<usize>().map_err(|_| ValueError::Count { min: 0 })
}

/// A partition count (`--output-partitions`), at least 1.
pub fn partitions(text: &str) -> Result<i32, ValueError> {
    text.parse::<i32>().ok().filter(|&n| n >= 1).ok_or(ValueError::Count { min: 1 })
}

/// `--start`: `earliest`, `latest` or a time (any of [`TIME_FORMS`]).
pub fn start(text: &str) -> Result<Start, ValueError> {
    match text {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        _ => match time(text) {
            Ok(ms) => Ok(Start::Timestamp(ms as i64)),
            Err(_) => Err(ValueError::Start { suggestion: closest(text, &["earliest", "latest"]) }),
        },
    }
}

/// The candidate closest to `text`, if it is close enough to be a typo of it.
pub fn closest<'a>(text: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro(text, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(text: &str) -> String {
        match time(text) {
            Err(ValueError::Time(TimeProblem::Fixable { fixed, .. })) => fixed,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn near_miss_times_get_their_corrected_form() {
        assert_eq!(time("2023-11-14T22:13:50Z"), Ok(1_700_000_030_000));
        assert_eq!(fix("2023-11-14T22:13:50"), "2023-11-14T22:13:50Z");
        assert_eq!(fix("2023-11-14"), "2023-11-14T00:00:00Z");
        assert_eq!(fix("2023-11-14 22:13:50Z"), "2023-11-14T22:13:50Z");
        assert_eq!(fix("2023-11-14T22:13"), "2023-11-14T22:13:00Z");
        assert_eq!(fix("2023-11-14T22:13+01:00"), "2023-11-14T22:13:00+01:00");
        assert_eq!(fix("2023-11-14T22:13:50.5"), "2023-11-14T22:13:50.5Z");
        assert_eq!(fix(" 2023-11-14T22:13:50Z"), "2023-11-14T22:13:50Z");
        for (text, problem) in [
            ("-5", TimeProblem::BeforeEpoch),
            ("253402300800000", TimeProblem::AfterMax),
            ("2023-02-30", TimeProblem::NoSuchDate),
            ("2023-11-14T25:00:00Z", TimeProblem::NoSuchDate),
            ("yesterday", TimeProblem::Unrecognised),
        ] {
            assert_eq!(time(text), Err(ValueError::Time(problem)), "{text}");
        }
        let message = time("2023-11-14T22:13:50").unwrap_err().to_string();
        assert_eq!(
            message,
            "no time zone; write 2023-11-14T22:13:50Z for UTC (or an offset such as +01:00 in place of Z); a time is \
             milliseconds since the epoch (1700000030000) or an RFC 3339 date-time with seconds and a zone \
             (2023-11-14T22:13:50Z, 2023-11-14T23:13:50.250+01:00)"
        );
    }

    #[test]
    fn durations_take_units_and_a_bare_number_is_the_flags_unit() {
        for (text, ms) in [("1000", 1000), ("500ms", 500), ("1s", 1000), ("5m", 300_000), ("1h", 3_600_000), ("0", 0)] {
            assert_eq!(millis(text), Ok(ms), "{text}");
        }
        assert_eq!(seconds("30"), Ok(30));
        assert_eq!(seconds("2m"), Ok(120));
        let problem = |text: &str, unit| match duration(text, unit) {
            Err(ValueError::Duration { problem, .. }) => problem,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(problem("-5", Unit::Millis), DurationProblem::Negative);
        assert_eq!(problem("1.5s", Unit::Millis), DurationProblem::Fraction(Some("1500ms".into())));
        assert_eq!(problem("500ms", Unit::Seconds), DurationProblem::NotWhole);
        assert_eq!(problem("5 min", Unit::Millis), DurationProblem::Unrecognised);
        assert_eq!(problem("ms", Unit::Millis), DurationProblem::Unrecognised);
        assert_eq!(problem("99999999999999999999", Unit::Millis), DurationProblem::TooLong);
        assert_eq!(tick("0"), Err(ValueError::ZeroTick));
        assert_eq!(tick("1s"), Ok(1000));
        let message = millis("-5").unwrap_err().to_string();
        assert_eq!(
            message,
            "a duration cannot be negative; a duration is a whole number with a unit (500ms, 2s, 5m, 1h) or a bare \
             number of milliseconds"
        );
    }

    #[test]
    fn checkpoint_every_is_ticks_or_a_duration() {
        assert_eq!(checkpoint_every("600"), Ok(CheckpointEvery::Ticks(600)));
        assert_eq!(checkpoint_every("30s"), Ok(CheckpointEvery::Wall(Duration::from_secs(30))));
        assert_eq!(checkpoint_every("5m"), Ok(CheckpointEvery::Wall(Duration::from_secs(300))));
        assert_eq!(checkpoint_every("500ms"), Ok(CheckpointEvery::Wall(Duration::from_millis(500))));
        for bad in ["0", "0s", "-1", "5 m", ""] {
            assert_eq!(checkpoint_every(bad), Err(ValueError::CheckpointEvery), "{bad}");
        }
    }

    #[test]
    fn start_positions_and_counts() {
        assert_eq!(start("earliest"), Ok(Start::Earliest));
        assert_eq!(start("1700000000000"), Ok(Start::Timestamp(1_700_000_000_000)));
        assert_eq!(start("2023-11-14T22:13:20Z"), Ok(Start::Timestamp(1_700_000_000_000)));
        assert_eq!(start("earlest"), Err(ValueError::Start { suggestion: Some("earliest") }));
        assert_eq!(positive("0"), Err(ValueError::Count { min: 1 }));
        assert_eq!(positive("-1"), Err(ValueError::Count { min: 1 }));
        assert_eq!(index("0"), Ok(0));
        assert_eq!(partitions("3"), Ok(3));
    }
}
