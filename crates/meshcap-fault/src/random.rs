//! Random numbers for percentage sampling: the [`Random`] trait and [`FastRng`], a small seedable generator.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A source of uniformly distributed 64-bit numbers.
///
/// Envoy samples a percentage by drawing a fresh `u64` and enabling the fault when
/// `random % denominator < numerator`; the filter draws through this trait, so any generator works
/// (a cryptographic one, a recorded sequence in a test, or [`FastRng`]).
pub trait Random {
    /// The next uniformly distributed value.
    fn next_u64(&mut self) -> u64;
}

impl<R: Random + ?Sized> Random for &mut R {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

impl<R: Random + ?Sized> Random for Box<R> {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

/// A fast, seedable, non-cryptographic generator (wyrand: one 64-bit state word, one multiply per draw).
///
/// Use [`FastRng::seed_from_u64`] for reproducible runs and [`FastRng::from_entropy`] (also `Default`)
/// otherwise. It is not suitable for anything security-related; fault sampling only needs uniformity.
///
/// ```
/// use meshcap_fault::{FastRng, Random};
///
/// let mut a = FastRng::seed_from_u64(7);
/// let mut b = FastRng::seed_from_u64(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastRng {
    state: u64,
}

impl FastRng {
    /// A generator whose sequence is fully determined by `seed`.
    pub const fn seed_from_u64(seed: u64) -> FastRng {
        FastRng { state: seed }
    }

    /// A generator seeded from the operating system's randomness (via the standard library's randomly
    /// keyed hasher, so without an extra dependency); every call returns a differently seeded generator.
    pub fn from_entropy() -> FastRng {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x6d65_7368_6361_7066); // any constant: the key carries the entropy
        FastRng::seed_from_u64(hasher.finish())
    }
}

impl Default for FastRng {
    fn default() -> FastRng {
        FastRng::from_entropy()
    }
}

impl Random for FastRng {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat_and_differ_by_seed() {
        let a: Vec<u64> = {
            let mut r = FastRng::seed_from_u64(1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = FastRng::seed_from_u64(1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = FastRng::seed_from_u64(2);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn entropy_seeds_differ() {
        assert_ne!(FastRng::from_entropy(), FastRng::from_entropy());
    }

    #[test]
    fn low_bits_are_uniform_enough_for_modulo_sampling() {
        // 100 buckets over 1,000,000 draws: every bucket within 5 % of 10,000.
        let mut r = FastRng::seed_from_u64(0x5eed);
        let mut buckets = [0u32; 100];
        for _ in 0..1_000_000 {
            buckets[(r.next_u64() % 100) as usize] += 1;
        }
        for (i, &n) in buckets.iter().enumerate() {
            assert!((9_500..=10_500).contains(&n), "bucket {i} has {n}");
        }
    }
}
