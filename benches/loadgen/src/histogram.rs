//! A compact log-linear histogram of `u64` values (HdrHistogram's bucketing, without its fixed range).
//!
//! Values below `2^bits` get a bucket each. Above that, every power of two `[2^e, 2^(e+1))` is split into
//! `2^bits` equal buckets, so a bucket is at most `2^-bits` of its smallest value wide: with the default
//! 10 bits a reported value is never below the true one and at most 0.1 % above it. The counter vector
//! grows on demand up to the highest bucket recorded, so the whole `u64` range is covered while a
//! histogram of latencies up to a second (in nanoseconds) stays around 170 KiB.

use std::fmt;

/// The default precision: 10 bits, buckets at most 1/1024 of their value wide.
pub const DEFAULT_PRECISION_BITS: u32 = 10;
/// The highest precision [`Histogram::with_precision`] accepts.
pub const MAX_PRECISION_BITS: u32 = 16;

/// Errors from building or merging histograms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistogramError {
    /// The precision is outside `1..=MAX_PRECISION_BITS`.
    #[error("histogram precision {bits} bits is outside 1..={max}", max = MAX_PRECISION_BITS)]
    InvalidPrecision {
        /// The rejected precision.
        bits: u32,
    },
    /// Two histograms with different bucketing cannot be merged.
    #[error("cannot merge a histogram of {theirs} bits of precision into one of {ours} bits")]
    PrecisionMismatch {
        /// The precision of the histogram merged into.
        ours: u32,
        /// The precision of the histogram merged from.
        theirs: u32,
    },
}

/// Counts of `u64` values in log-linear buckets, with exact count, minimum, maximum and mean.
///
/// [`value_at_quantile`](Self::value_at_quantile) answers with the highest value of the bucket holding
/// the sample of that rank (capped at the maximum), so a percentile is never under-reported.
///
/// ```
/// use meshcap_loadgen::Histogram;
///
/// let mut h = Histogram::new();
/// for v in 1..=1000u64 {
///     h.record(v * 1000); // 1 µs ..= 1 ms in nanoseconds
/// }
/// assert_eq!(h.count(), 1000);
/// assert_eq!(h.max(), Some(1_000_000));
/// let p99 = h.value_at_quantile(0.99).unwrap();
/// assert!((990_000..=990_000 + 990_000 / 1024).contains(&p99));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    bits: u32,
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Histogram {
    /// An empty histogram with [`DEFAULT_PRECISION_BITS`].
    pub fn new() -> Self {
        Self::empty(DEFAULT_PRECISION_BITS)
    }

    /// An empty histogram whose buckets are at most `2^-bits` of their value wide.
    ///
    /// # Errors
    /// [`HistogramError::InvalidPrecision`] unless `1 <= bits <= MAX_PRECISION_BITS`.
    pub fn with_precision(bits: u32) -> Result<Self, HistogramError> {
        if (1..=MAX_PRECISION_BITS).contains(&bits) {
            Ok(Self::empty(bits))
        } else {
            Err(HistogramError::InvalidPrecision { bits })
        }
    }

    fn empty(bits: u32) -> Self {
        Self {
            bits,
            counts: Vec::new(),
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// The precision in bits.
    pub fn precision(&self) -> u32 {
        self.bits
    }

    /// Record one value.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Record `value` `n` times (nothing when `n` is 0).
    pub fn record_n(&mut self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let index = self.index_of(value);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(n);
        self.total = self.total.saturating_add(n);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum = self.sum.saturating_add(u128::from(value) * u128::from(n));
    }

    /// Add every value recorded in `other` to this histogram.
    ///
    /// # Errors
    /// [`HistogramError::PrecisionMismatch`] when the two precisions differ; `self` is then unchanged.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), HistogramError> {
        if other.bits != self.bits {
            return Err(HistogramError::PrecisionMismatch {
                ours: self.bits,
                theirs: other.bits,
            });
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total = self.total.saturating_add(other.total);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum = self.sum.saturating_add(other.sum);
        Ok(())
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The smallest value recorded (exact).
    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    /// The largest value recorded (exact).
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The arithmetic mean of the values recorded (exact up to `f64` rounding).
    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The value at quantile `q` (0.99 for p99): the highest value of the bucket that holds the
    /// `ceil(q × count)`-th smallest value (at least the first), capped at [`max`](Self::max).
    ///
    /// `q` is clamped to `[0, 1]` (NaN counts as 0). `None` when the histogram is empty.
    pub fn value_at_quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = rank_of(q, self.total);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(count);
            if seen >= rank {
                return Some(self.highest_in_bucket(index).min(self.max));
            }
        }
        // Counts saturated at u64::MAX: the rank lies in the last bucket.
        Some(self.max)
    }

    /// The `[lowest, highest]` values that share `value`'s bucket: the resolution at that value.
    pub fn bucket_bounds(&self, value: u64) -> (u64, u64) {
        let index = self.index_of(value);
        (self.lowest_in_bucket(index), self.highest_in_bucket(index))
    }

    fn index_of(&self, value: u64) -> usize {
        let msb = 63 - (value | 1).leading_zeros();
        let shift = msb.saturating_sub(self.bits);
        // Below 2^(bits+1) the index is the value itself; above, `bits` bits of mantissa after the
        // leading one, offset by 2^bits per doubling. Fits in usize: at most (65 - bits) << bits.
        ((u64::from(shift) << self.bits) + (value >> shift)) as usize
    }

    fn lowest_in_bucket(&self, index: usize) -> u64 {
        let index = index as u64;
        let shift = (index >> self.bits).saturating_sub(1);
        (index - (shift << self.bits)) << shift
    }

    fn highest_in_bucket(&self, index: usize) -> u64 {
        let shift = ((index as u64) >> self.bits).saturating_sub(1);
        self.lowest_in_bucket(index) + ((1u64 << shift) - 1)
    }
}

/// The 1-based rank `ceil(q × total)` clamped to `1..=total`.
pub(crate) fn rank_of(q: f64, total: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * total as f64).ceil() as u64).clamp(1, total)
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("precision", &self.bits)
            .field("count", &self.total)
            .field("min", &self.min())
            .field("max", &self.max())
            .field("buckets", &self.counts.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::with_precision(4).unwrap();
        for v in 0..32 {
            assert_eq!(h.bucket_bounds(v), (v, v), "value {v}");
            h.record(v);
        }
        for v in 0..32u64 {
            assert_eq!(h.value_at_quantile((v + 1) as f64 / 32.0), Some(v));
        }
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let h = Histogram::with_precision(3).unwrap();
        let mut expected_low = 0u64;
        for index in 0..h.index_of(u64::MAX) + 1 {
            let (low, high) = (h.lowest_in_bucket(index), h.highest_in_bucket(index));
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(h.index_of(low), index);
            assert_eq!(h.index_of(high), index);
            let width = high - low + 1;
            assert!(
                width == 1 || width <= low >> 3,
                "bucket {index} [{low}, {high}] too wide"
            );
            expected_low = high.wrapping_add(1);
        }
        assert_eq!(expected_low, 0, "the last bucket ends at u64::MAX");
    }

    #[test]
    fn extremes_are_recorded() {
        let mut h = Histogram::with_precision(MAX_PRECISION_BITS).unwrap();
        h.record(u64::MAX);
        h.record(0);
        assert_eq!(h.min(), Some(0));
        assert_eq!(h.max(), Some(u64::MAX));
        assert_eq!(h.value_at_quantile(1.0), Some(u64::MAX));
        assert_eq!(h.value_at_quantile(0.0), Some(0));
        assert_eq!(h.mean(), Some(u64::MAX as f64 / 2.0));
    }

    #[test]
    fn quantiles_report_the_bucket_top_capped_at_max() {
        let mut h = Histogram::with_precision(2).unwrap();
        // 100 lies in [96, 111] with 2 bits of precision.
        assert_eq!(h.bucket_bounds(100), (96, 111));
        h.record(100);
        assert_eq!(h.value_at_quantile(0.5), Some(100), "capped at the maximum");
        h.record(200);
        assert_eq!(h.value_at_quantile(0.5), Some(111));
        assert_eq!(h.value_at_quantile(0.51), Some(200));
    }

    #[test]
    fn rank_follows_the_nearest_rank_definition() {
        assert_eq!(rank_of(0.5, 10), 5);
        assert_eq!(rank_of(0.51, 10), 6);
        assert_eq!(rank_of(0.0, 10), 1);
        assert_eq!(rank_of(f64::NAN, 10), 1);
        assert_eq!(rank_of(2.0, 10), 10);
        assert_eq!(rank_of(0.999, 1000), 999);
        assert_eq!(rank_of(0.9999, 1000), 1000);
    }

    #[test]
    fn empty_histogram_has_no_statistics() {
        let h = Histogram::new();
        assert!(h.is_empty());
        assert_eq!(
            (h.min(), h.max(), h.mean(), h.value_at_quantile(0.5)),
            (None, None, None, None)
        );
    }

    #[test]
    fn precision_is_validated() {
        assert_eq!(
            Histogram::with_precision(0),
            Err(HistogramError::InvalidPrecision { bits: 0 })
        );
        assert_eq!(
            Histogram::with_precision(17),
            Err(HistogramError::InvalidPrecision { bits: 17 })
        );
        let mut a = Histogram::with_precision(5).unwrap();
        let err = a.merge(&Histogram::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot merge a histogram of 10 bits of precision into one of 5 bits"
        );
    }

    #[test]
    fn record_n_zero_changes_nothing() {
        let mut h = Histogram::new();
        h.record_n(42, 0);
        assert_eq!(h, Histogram::new());
    }
}
