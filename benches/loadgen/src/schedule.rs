//! The fixed send timeline: request `k` is due `k / rate` seconds after the start, whatever happened to
//! the requests before it.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A request rate in requests per second (a positive integer).
///
/// ```
/// use meshcap_loadgen::Rate;
///
/// let rate: Rate = "20000".parse()?;
/// assert_eq!(rate.per_second(), 20_000);
/// assert!("0".parse::<Rate>().is_err());
/// # Ok::<(), meshcap_loadgen::ParseRateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(NonZeroU64);

impl Rate {
    /// `per_second` requests per second.
    pub const fn new(per_second: NonZeroU64) -> Self {
        Self(per_second)
    }

    /// Requests per second.
    pub const fn per_second(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A rate that is not a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request rate `{value}`: expected a positive integer (requests per second)")]
pub struct ParseRateError {
    value: String,
}

impl FromStr for Rate {
    type Err = ParseRateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<NonZeroU64>()
            .map(Self)
            .map_err(|_| ParseRateError { value: s.to_owned() })
    }
}

/// The timeline of a run: `warmup` of unrecorded requests, then `duration` of measured ones, all at one
/// [`Rate`] on one continuous timeline (the warm-up leads straight into the measurement).
///
/// A pure calculator: offsets are exact integer nanoseconds (`floor(k × 10⁹ / rate)`), and the number of
/// requests due before an offset `t` is `ceil(t × rate / 10⁹)`, so a window of `d` holds `rate × d`
/// requests, give or take one for the rounding at each end.
///
/// ```
/// use std::time::Duration;
/// use meshcap_loadgen::{Rate, Schedule};
///
/// let s = Schedule::new("20000".parse()?, Duration::from_secs(2), Duration::from_secs(10));
/// assert_eq!(s.offset(1), Duration::from_micros(50));
/// assert_eq!((s.warmup_requests(), s.measured_requests()), (40_000, 200_000));
/// assert!(!s.is_measured(39_999) && s.is_measured(40_000));
/// # Ok::<(), meshcap_loadgen::ParseRateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Schedule {
    rate: Rate,
    warmup: Duration,
    duration: Duration,
}

impl Schedule {
    /// A timeline of `warmup` then `duration` at `rate`.
    pub const fn new(rate: Rate, warmup: Duration, duration: Duration) -> Self {
        Self { rate, warmup, duration }
    }

    /// The rate.
    pub const fn rate(&self) -> Rate {
        self.rate
    }

    /// The unrecorded lead-in.
    pub const fn warmup(&self) -> Duration {
        self.warmup
    }

    /// The measured window.
    pub const fn duration(&self) -> Duration {
        self.duration
    }

    /// When request `k` is due, counted from the start of the run (saturating at `u64::MAX` ns).
    pub fn offset(&self, k: u64) -> Duration {
        let nanos = u128::from(k) * NANOS_PER_SEC / u128::from(self.rate.per_second());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many requests are due strictly before offset `t`.
    pub fn requests_before(&self, t: Duration) -> u64 {
        t.as_nanos()
            .checked_mul(u128::from(self.rate.per_second()))
            .and_then(|scaled| u64::try_from(scaled.div_ceil(NANOS_PER_SEC)).ok())
            .unwrap_or(u64::MAX)
    }

    /// Requests sent during the warm-up (not recorded).
    pub fn warmup_requests(&self) -> u64 {
        self.requests_before(self.warmup)
    }

    /// Requests of the whole run, warm-up included: indices `0..total_requests()`.
    pub fn total_requests(&self) -> u64 {
        self.requests_before(self.warmup.saturating_add(self.duration))
    }

    /// Requests in the measured window: indices `warmup_requests()..total_requests()`.
    pub fn measured_requests(&self) -> u64 {
        self.total_requests() - self.warmup_requests()
    }

    /// Whether request `k` falls in the measured window.
    pub fn is_measured(&self, k: u64) -> bool {
        (self.warmup_requests()..self.total_requests()).contains(&k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(r: u64) -> Rate {
        Rate::new(NonZeroU64::new(r).unwrap())
    }

    #[test]
    fn offsets_are_exact_nanoseconds() {
        let s = Schedule::new(rate(3), Duration::ZERO, Duration::from_secs(1));
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.offset(3), Duration::from_secs(1));
        assert_eq!(s.total_requests(), 3, "due at 0, 1/3 and 2/3 s");
    }

    #[test]
    fn window_counts_round_up_at_each_end() {
        let s = Schedule::new(rate(3), Duration::from_millis(500), Duration::from_millis(500));
        // Due at 0, 333, 667 ms: two in the warm-up, one after.
        assert_eq!(
            (s.warmup_requests(), s.total_requests(), s.measured_requests()),
            (2, 3, 1)
        );
        assert!(s.is_measured(2) && !s.is_measured(1) && !s.is_measured(3));
    }

    #[test]
    fn huge_values_saturate() {
        let s = Schedule::new(rate(1), Duration::ZERO, Duration::MAX);
        assert_eq!(s.offset(u64::MAX), Duration::from_nanos(u64::MAX));
        assert_eq!(s.total_requests(), u64::MAX, "u64::MAX + 1 requests saturate");
        let s = Schedule::new(rate(1), Duration::ZERO, Duration::from_secs(u64::MAX - 1));
        assert_eq!(s.total_requests(), u64::MAX - 1);
        let s = Schedule::new(rate(u64::MAX), Duration::MAX, Duration::MAX);
        assert_eq!(s.total_requests(), u64::MAX);
        assert_eq!(s.measured_requests(), 0);
    }

    #[test]
    fn rate_parse_errors_name_the_value() {
        let err = "12.5".parse::<Rate>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request rate `12.5`: expected a positive integer (requests per second)"
        );
        assert!("-1".parse::<Rate>().is_err());
        assert_eq!("7".parse::<Rate>().unwrap().to_string(), "7");
    }
}
