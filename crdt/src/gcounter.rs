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

    /// The total, saturating at `u64::MAX` (a [valid](Validate) counter never saturates).
    pub fn value(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |acc, (_, c)| acc.saturating_add(c))
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

/// Rejects a counter whose total does not fit in a `u64`.
impl Validate for GCounter {
    fn validate(&self) -> Result<(), Error> {
        self.counts
            .iter()
            .try_fold(0u64, |acc, (_, c)| acc.checked_add(c))
            .map(|_| ())
            .ok_or_else(|| Error::Overflow {
                what: "grow-only counter total exceeds u64::MAX".into(),
            })
    }
}
