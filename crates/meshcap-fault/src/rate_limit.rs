//! The response rate limiter as a pure calculator: Envoy's stream rate limiter (token bucket plus a 50 ms
//! fill timer) without timers or buffers, driven by the caller's clock.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// Envoy's `StreamRateLimiter::DefaultFillInterval`: how often a throttled stream is given more bytes.
pub const FILL_INTERVAL: Duration = Duration::from_millis(50);

/// A per-stream response rate limiter with Envoy's semantics.
///
/// Envoy reads the rate as KiB/s (`kbps × 1024` bytes per second). The bucket holds at most one second
/// of bytes, refills continuously, and **starts with one fill interval's worth** (`kbps × 1024 × 50 /
/// 1000` bytes, integer division): a 50-byte body at 1 KiB/s (51 initial tokens) goes out at once, which is
/// what a real Envoy was seen to do. Data is released on ticks: the first one as soon as data is
/// buffered, then every [`FILL_INTERVAL`] while bytes remain, each tick writing as many whole tokens as the
/// bucket holds.
///
/// Drive it with [`RateLimiter::poll`]: call it when body bytes are buffered (and at each
/// [`Grant::next_poll`]); write [`Grant::bytes`] of them, then wait until the next poll time.
///
/// ```
/// use std::num::NonZeroU64;
/// use std::time::{Duration, Instant};
/// use meshcap_fault::RateLimiter;
///
/// let start = Instant::now();
/// let mut limiter = RateLimiter::new(NonZeroU64::new(1).unwrap(), start);
/// // 50 bytes at 1 KiB/s fit the first burst: all of them at once, nothing left to wait for.
/// let grant = limiter.poll(50, start);
/// assert_eq!((grant.bytes(), grant.next_poll()), (50, None));
///
/// // 1024 more bytes: 1 token left now, then ~51 bytes per 50 ms tick.
/// let grant = limiter.poll(1024, start);
/// assert_eq!(grant.bytes(), 1);
/// assert_eq!(grant.next_poll(), Some(start + Duration::from_millis(50)));
/// let grant = limiter.poll(1023, start + Duration::from_millis(50));
/// assert_eq!(grant.bytes(), 51);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimiter {
    kbps: NonZeroU64,
    max_tokens: f64,
    fill_rate: f64,
    tokens: f64,
    last_fill: Instant,
}

/// What one [`RateLimiter::poll`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Grant {
    bytes: u64,
    next_poll: Option<Instant>,
}

impl Grant {
    /// How many of the buffered bytes may be written now (possibly 0).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// When to poll again because bytes remain buffered (`None`: everything asked for was granted).
    pub fn next_poll(&self) -> Option<Instant> {
        self.next_poll
    }
}

impl RateLimiter {
    /// A limiter for `kbps` KiB/s whose stream starts at `now`.
    ///
    /// Envoy multiplies `kbps × 1024` in 64 bits, which wraps for absurd header values (≥ 2^54); here
    /// the product saturates instead.
    pub fn new(kbps: NonZeroU64, now: Instant) -> RateLimiter {
        let max_bytes = kbps.get().saturating_mul(1024);
        let initial = u128::from(max_bytes) * FILL_INTERVAL.as_millis() / 1000;
        RateLimiter {
            kbps,
            max_tokens: max_bytes as f64,
            fill_rate: max_bytes as f64,
            tokens: initial as f64,
            last_fill: now,
        }
    }

    /// The configured rate in KiB/s.
    pub fn kbps(&self) -> NonZeroU64 {
        self.kbps
    }

    /// The bytes the bucket holds right now (whole tokens), after refilling up to `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens.floor() as u64
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens < self.max_tokens {
            let elapsed = now.saturating_duration_since(self.last_fill).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.fill_rate).min(self.max_tokens);
            self.last_fill = now;
        }
    }

    /// One tick with `buffered` bytes waiting: how many may be written now, and when to tick again if
    /// some remain. Time never runs backwards for the bucket (an earlier `now` adds no tokens).
    pub fn poll(&mut self, buffered: u64, now: Instant) -> Grant {
        self.refill(now);
        let bytes = buffered.min(self.tokens.floor() as u64);
        self.tokens -= bytes as f64;
        let next_poll = (bytes < buffered).then(|| now + FILL_INTERVAL);
        Grant { bytes, next_poll }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kbps(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    #[test]
    fn first_burst_is_one_fill_interval() {
        let t = Instant::now();
        assert_eq!(RateLimiter::new(kbps(1), t).available(t), 51);
        assert_eq!(RateLimiter::new(kbps(10), t).available(t), 512);
        assert_eq!(RateLimiter::new(kbps(1000), t).available(t), 51_200);
    }

    #[test]
    fn bucket_caps_at_one_second() {
        let t = Instant::now();
        let mut l = RateLimiter::new(kbps(1), t);
        assert_eq!(l.available(t + Duration::from_secs(60)), 1024);
    }

    #[test]
    fn absurd_rates_saturate_instead_of_wrapping() {
        let t = Instant::now();
        let mut l = RateLimiter::new(kbps(u64::MAX), t);
        assert!(l.poll(1 << 40, t).bytes() > 0);
    }
}
