//! Durations and timestamps in the two textual forms this crate meets: protobuf JSON (`"5s"`,
//! `"0.500s"`, `"2026-11-26T11:35:36.386Z"`) and Go's `time.ParseDuration` (`"5s"`, `"1m30s"`, `"250ms"`)
//! used by Kuma policies.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest duration protobuf JSON can carry (`google.protobuf.Duration`: ±10,000 years).
pub(crate) const MAX_PROTO_DURATION_SECS: u64 = 315_576_000_000;

/// Format a duration as protobuf JSON does: whole seconds, then 0, 3, 6 or 9 fractional digits, then `s`.
pub(crate) fn format_proto_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{secs}s")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{secs}.{:03}s", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{secs}.{:06}s", nanos / 1_000)
    } else {
        format!("{secs}.{nanos:09}s")
    }
}

/// Parse a protobuf JSON duration (`"5s"`, `"0.25s"`, up to nine fractional digits). Negative durations are
/// rejected: no field this crate reads accepts one.
pub(crate) fn parse_proto_duration(s: &str) -> Result<Duration, &'static str> {
    let body = s.strip_suffix('s').ok_or("missing the `s` suffix")?;
    if body.starts_with('-') {
        return Err("negative durations are not accepted here");
    }
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected whole seconds before the `s`");
    }
    let secs: u64 = whole.parse().map_err(|_| "too many seconds")?;
    if secs > MAX_PROTO_DURATION_SECS {
        return Err("more than 315576000000 seconds");
    }
    let nanos = match frac {
        None => 0,
        Some(f) if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err("expected 1 to 9 fractional digits");
        }
        Some(f) => {
            let digits: u32 = f.parse().map_err(|_| "bad fraction")?;
            digits * 10u32.pow(9 - f.len() as u32)
        }
    };
    Ok(Duration::new(secs, nanos))
}

/// A Go `time.Duration` as `time.ParseDuration` reads it: signed nanoseconds.
pub(crate) fn parse_go_duration(s: &str) -> Result<i128, &'static str> {
    // Same grammar as Go: [-+]? then one or more <decimal><unit>; "0" alone is allowed.
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err("empty duration");
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number before the unit");
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit (ns, us, ms, s, m or h)"),
            _ => return Err("unknown unit (expected ns, us, ms, s, m or h)"),
        };
        // Digits beyond what can matter are rejected rather than silently overflowing.
        if int_part.len() > 20 {
            return Err("number too large");
        }
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| "number too large")?
        };
        let mut value = whole.checked_mul(unit_nanos).ok_or("duration too large")?;
        // Fractional part: Go truncates below a nanosecond.
        let mut scale = unit_nanos;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value += i128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value).ok_or("duration too large")?;
        if total > i128::from(i64::MAX) {
            return Err("duration too large");
        }
    }
    Ok(if negative { -total } else { total })
}

/// A point in time as Envoy's admin output prints it (`last_updated`): RFC 3339 in UTC, with 0, 3, 6 or 9
/// fractional digits as protobuf JSON does (`2026-11-26T11:35:36.386Z`).
///
/// ```
/// use meshcap_envoy::Timestamp;
///
/// let t = Timestamp::from_unix(1_795_692_936, 386_000_000).ok_or("out of range")?;
/// assert_eq!(t.to_string(), "2026-11-26T11:35:36.386Z");
/// # Ok::<(), &'static str>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// 0001-01-01T00:00:00Z, the first instant protobuf timestamps can hold.
const MIN_TIMESTAMP_SECS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the last.
const MAX_TIMESTAMP_SECS: i64 = 253_402_300_799;

impl Timestamp {
    /// Seconds and nanoseconds since the Unix epoch; `None` outside protobuf's range (years 1 to 9999) or
    /// with `nanos` of a second or more.
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Timestamp> {
        ((MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&secs) && nanos < 1_000_000_000)
            .then_some(Timestamp { secs, nanos })
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(&self) -> i64 {
        self.secs
    }

    /// The sub-second part in nanoseconds.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }
}

impl From<SystemTime> for Timestamp {
    /// Converts a system time, clamped to protobuf's range.
    fn from(t: SystemTime) -> Timestamp {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
            Err(before) => {
                let d = before.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    (-secs, 0)
                } else {
                    (-secs - 1, 1_000_000_000 - d.subsec_nanos())
                }
            }
        };
        if secs > MAX_TIMESTAMP_SECS {
            Timestamp {
                secs: MAX_TIMESTAMP_SECS,
                nanos: 999_999_999,
            }
        } else if secs < MIN_TIMESTAMP_SECS {
            Timestamp {
                secs: MIN_TIMESTAMP_SECS,
                nanos: 0,
            }
        } else {
            Timestamp { secs, nanos }
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let secs_of_day = self.secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        )?;
        let n = self.nanos;
        if n == 0 {
        } else if n.is_multiple_of(1_000_000) {
            write!(f, ".{:03}", n / 1_000_000)?;
        } else if n.is_multiple_of(1_000) {
            write!(f, ".{:06}", n / 1_000)?;
        } else {
            write!(f, ".{n:09}")?;
        }
        f.write_str("Z")
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_durations_print_like_protobuf() {
        assert_eq!(format_proto_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_proto_duration(Duration::ZERO), "0s");
        assert_eq!(format_proto_duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(format_proto_duration(Duration::from_micros(10)), "0.000010s");
        assert_eq!(format_proto_duration(Duration::from_nanos(7)), "0.000000007s");
    }

    #[test]
    fn proto_durations_parse() {
        assert_eq!(parse_proto_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_proto_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_proto_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        for bad in [
            "5",
            "s",
            "-1s",
            "1.s",
            ".5s",
            "1.0000000001s",
            "1e3s",
            " 1s",
            "315576000001s",
        ] {
            assert!(parse_proto_duration(bad).is_err(), "{bad}");
        }
        for d in [
            Duration::from_secs(5),
            Duration::from_millis(1),
            Duration::new(3, 999_999_999),
        ] {
            assert_eq!(parse_proto_duration(&format_proto_duration(d)), Ok(d));
        }
    }

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        let s = 1_000_000_000i128;
        assert_eq!(parse_go_duration("5s"), Ok(5 * s));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("1m30s"), Ok(90 * s));
        assert_eq!(parse_go_duration("1.5h"), Ok(5400 * s));
        assert_eq!(parse_go_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_go_duration("-2s"), Ok(-2 * s));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("1µs"), Ok(1_000));
        assert_eq!(parse_go_duration("1.0000000001s"), Ok(s));
        for bad in ["", "5", "s", "5x", "1.s.", "-", "9999999999999999999999h", "3000000h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_print_like_envoy() {
        let t = Timestamp::from_unix(1_795_692_936, 386_000_000).expect("in range");
        assert_eq!(t.to_string(), "2026-11-26T11:35:36.386Z");
        assert_eq!(
            Timestamp::from_unix(0, 0).expect("epoch").to_string(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix(951_782_400, 1_000).expect("leap day").to_string(),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            Timestamp::from_unix(MIN_TIMESTAMP_SECS, 0).expect("min").to_string(),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix(MAX_TIMESTAMP_SECS, 5).expect("max").to_string(),
            "9999-12-31T23:59:59.000000005Z"
        );
        assert!(Timestamp::from_unix(MAX_TIMESTAMP_SECS + 1, 0).is_none());
        assert!(Timestamp::from_unix(0, 1_000_000_000).is_none());
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(Timestamp::from(before).to_string(), "1969-12-31T23:59:58.500Z");
    }
}
