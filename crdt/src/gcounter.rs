//! [`GCounter`]: a grow-only counter.

use crate::{Error, Lattice, Validate};
use meridian_clocks::{ReplicaId, VectorClock};
use serde::{Deserialize, Serialize};

/// A grow-only counter: one monotone count per replica, joined by pointwise maximum.
///
/// Stored as a [`VectorClock`] (a sorted small vector), so a counter touched by a handful of
/// replicas costs a few bytes and merges in one linear walk.
///
/// ```
/// use meridian_crdt::{GCounter, Lattice};
/// use meridian_clocks::ReplicaId;
/// let mut a = GCounter::new();
/// let delta = a.inc(ReplicaId(1), 3);
/// let mut b = GCounter::new();
/// b.merge(&delta);
/// assert_eq!(b.value(), 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GCounter {
    counts: VectorClock,
}

impl GCounter {
    /// The zero counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` on behalf of `r` and returns the delta (`r`'s new count alone).
    ///
    /// A replica's count saturates at `u64::MAX` rather than wrapping.
    pub fn inc(&mut self, r: ReplicaId, n: u64) -> GCounter {
        let c = self.counts.get(r).saturating_add(n);
        self.counts.observe(r, c);
        let mut delta = GCounter::new();
        delta.counts.observe(r, c);
        delta
    }

    /// The total, saturated at `u64::MAX`. Replicas' counts sum on merge, so a valid
    /// counter may exceed it; [`total`](Self::total) is exact.
    pub fn value(&self) -> u64 {
        u64::try_from(self.total()).unwrap_or(u64::MAX)
    }

    /// The exact total (a `u128` holds the sum of up to 2^64 replicas' `u64` counts).
    pub fn total(&self) -> u128 {
        self.counts.iter().map(|(_, c)| u128::from(c)).sum()
    }

    /// The count contributed by `r`.
    pub fn get(&self, r: ReplicaId) -> u64 {
        self.counts.get(r)
    }

    /// The per-replica counts, sorted by replica.
    pub fn counts(&self) -> &VectorClock {
        &self.counts
    }
}

impl Lattice for GCounter {
    fn merge(&mut self, other: &Self) {
        self.counts.merge(&other.counts);
    }
}

/// Accepts every decoded counter: decoding already rejects an unsorted or duplicated
/// replica, and any total is valid, because merge sums replicas' counts and what merge can
/// produce must validate. [`value`](GCounter::value) saturates; [`total`](GCounter::total)
/// is exact.
impl Validate for GCounter {
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}
