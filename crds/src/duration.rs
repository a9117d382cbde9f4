//! Go-style durations (`30s`, `24h`, `1h30m`), the format of metav1.Duration and cert-manager's `duration`.
//! Chosen over `30d`-style strings because Kubernetes CEL's `duration()` parses exactly this format, so
//! schema rules such as "overlap shorter than the rotation period" run at `kubectl apply` time.
//!
//! ```text
//!   "1h30m" ─▶ groups <digits>[.<digits>]<unit> ─▶ checked u128 nanoseconds ─▶ ≤ GoDuration::MAX? ─▶ GoDuration
//!                                   └─ anything else: Format error       └─ above: TooLong error
//! ```
//! Parsing is exact integer arithmetic (no `f64` rounding) and refuses any value above [`GoDuration::MAX`], the
//! longest duration Go and Kubernetes CEL can represent (`i64` nanoseconds, about 292 years). So every value that
//! parses can be added to a `std::time::Instant`, a `chrono::DateTime` or a tokio deadline without overflow;
//! the CRD schemas bound each field far lower (see each field's description).
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

/// The schema pattern: one or more `<number><unit>` groups, units `ms`, `s`, `m`, `h`.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Fraction digits beyond this many cannot change the result by a whole nanosecond for any unit; ignoring them
/// keeps the arithmetic in `u128` whatever the input length.
const MAX_FRACTION_DIGITS: usize = 18;
/// How much of a refused input an error message repeats (durations are not secret, but inputs may be long).
const SHOWN_INPUT_CHARS: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseDurationError {
    #[error("invalid duration {0:?}: use a number and a unit (ms, s, m, h), e.g. 30s, 15m, 720h or 1h30m")]
    Format(String),
    #[error(
        "duration {0:?} is too long: at most 2562047h (about 292 years) can be represented; use a value within the field's documented bound"
    )]
    TooLong(String),
}

impl ParseDurationError {
    /// Stable label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ParseDurationError::Format(_) => "format",
            ParseDurationError::TooLong(_) => "too_long",
        }
    }
}

impl GoDuration {
    /// Go's `time.Duration` maximum, `i64::MAX` nanoseconds (2562047h47m16.854775807s): what Kubernetes CEL's
    /// `duration()` accepts at most. Nothing longer parses.
    pub const MAX: GoDuration = GoDuration(Duration::new(
        (i64::MAX as u64) / NANOS_PER_SEC as u64,
        ((i64::MAX as u64) % NANOS_PER_SEC as u64) as u32,
    ));

    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

/// One `<digits>[.<digits>]<unit>` group in nanoseconds, or `None` when it does not fit a `u128` (then it is far
/// above [`GoDuration::MAX`] anyway). `whole` and `fraction` are ASCII digits only.
fn group_nanos(whole: &str, fraction: &str, unit_nanos: u128) -> Option<u128> {
    let whole: u128 = whole.bytes().try_fold(0u128, |acc, d| acc.checked_mul(10)?.checked_add(u128::from(d - b'0')))?;
    let fraction = &fraction[..fraction.len().min(MAX_FRACTION_DIGITS)];
    let scale = 10u128.pow(fraction.len() as u32);
    let numerator = fraction.bytes().fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'));
    // numerator < 10^18 and unit_nanos <= 3.6e12, so the product stays far below u128::MAX.
    whole.checked_mul(unit_nanos)?.checked_add(numerator * unit_nanos / scale)
}

impl FromStr for GoDuration {
    type Err = ParseDurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = || s.chars().take(SHOWN_INPUT_CHARS).collect::<String>();
        let format = || ParseDurationError::Format(shown());
        let too_long = || ParseDurationError::TooLong(shown());
        if s.is_empty() {
            return Err(format());
        }
        let digits_len = |t: &str| t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let mut total: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let whole_len = digits_len(rest);
            if whole_len == 0 {
                return Err(format());
            }
            let (whole, after) = rest.split_at(whole_len);
            let (fraction, after) = match after.strip_prefix('.') {
                Some(f) => {
                    let n = digits_len(f);
                    if n == 0 {
                        return Err(format());
                    }
                    f.split_at(n)
                }
                None => ("", after),
            };
            let (unit_nanos, unit_len) = if after.starts_with("ms") {
                (NANOS_PER_MS, 2)
            } else if after.starts_with('s') {
                (NANOS_PER_SEC, 1)
            } else if after.starts_with('m') {
                (60 * NANOS_PER_SEC, 1)
            } else if after.starts_with('h') {
                (3600 * NANOS_PER_SEC, 1)
            } else {
                return Err(format());
            };
            let group = group_nanos(whole, fraction, unit_nanos).ok_or_else(too_long)?;
            total = total.checked_add(group).ok_or_else(too_long)?;
            rest = &after[unit_len..];
        }
        if total > GoDuration::MAX.0.as_nanos() {
            return Err(too_long());
        }
        let secs = (total / NANOS_PER_SEC) as u64;
        let nanos = (total % NANOS_PER_SEC) as u32;
        Ok(GoDuration(Duration::new(secs, nanos)))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        let (h, rem) = (total_ms / 3_600_000, total_ms % 3_600_000);
        let (m, rem) = (rem / 60_000, rem % 60_000);
        let (s, ms) = (rem / 1000, rem % 1000);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "maxLength": 32,
        })
    }
    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (input, secs, printed) in [
            ("30s", 30.0, "30s"),
            ("720h", 2_592_000.0, "720h"),
            ("1h30m", 5400.0, "1h30m"),
            ("250ms", 0.25, "250ms"),
            ("1.5h", 5400.0, "1h30m"),
        ] {
            let d: GoDuration = input.parse().unwrap();
            assert_eq!(d.as_secs_f64(), secs, "{input}");
            assert_eq!(d.to_string(), printed);
        }
    }

    #[test]
    fn rejects_what_cel_would_reject() {
        for bad in ["", "30", "30d", "h", "-5s", "1 h", "5x"] {
            let err = bad.parse::<GoDuration>().unwrap_err();
            assert!(err.to_string().contains("use a number and a unit"), "{bad}");
        }
    }

    #[test]
    fn parses_exactly_without_float_rounding() {
        assert_eq!("1.1s".parse::<GoDuration>().unwrap().0, Duration::from_millis(1100));
        assert_eq!("0.000000001h".parse::<GoDuration>().unwrap().0, Duration::from_nanos(3600));
        // Fraction digits past the 18th cannot add a nanosecond and are ignored rather than overflowing.
        let long_fraction = format!("1.{}s", "9".repeat(500));
        assert_eq!(long_fraction.parse::<GoDuration>().unwrap().0, Duration::new(1, 999_999_999));
    }

    #[test]
    fn the_longest_representable_duration_parses_and_one_nanosecond_more_does_not() {
        let max: GoDuration = "2562047h47m16.854775807s".parse().unwrap();
        assert_eq!(max, GoDuration::MAX);
        assert_eq!(max.0.as_nanos(), i64::MAX as u128);
        let err = "2562047h47m16.854775808s".parse::<GoDuration>().unwrap_err();
        assert_eq!(err.category(), "too_long");
    }

    #[test]
    fn huge_values_are_refused_with_a_clear_error_not_a_panic() {
        let thousand_digits = format!("{}h", "9".repeat(1000));
        for huge in [
            "2562048h",
            "9223372036854775808s",
            "99999999999999999999999999999999999999999h",
            "18446744073709551616s",
            "2000000h2000000h",
            thousand_digits.as_str(),
        ] {
            let err = huge.parse::<GoDuration>().unwrap_err();
            assert_eq!(err.category(), "too_long", "{huge}");
            let message = err.to_string();
            assert!(message.contains("is too long") && message.contains("2562047h"), "{message}");
            assert!(message.len() < 250, "the message repeats at most a prefix of the input: {message}");
        }
    }

    #[test]
    fn every_parsable_duration_fits_a_deadline() {
        let max = GoDuration::MAX;
        assert!(std::time::Instant::now().checked_add(max.0).is_some());
        assert!(chrono::Utc::now().checked_add_signed(max.to_chrono()).is_some());
        assert_eq!(max.to_chrono().num_nanoseconds(), Some(i64::MAX));
    }

    #[test]
    fn huge_values_are_refused_when_deserializing() {
        let err = serde_json::from_str::<GoDuration>(r#""99999999999999999999h""#).unwrap_err();
        assert!(err.to_string().contains("is too long"), "{err}");
    }
}
