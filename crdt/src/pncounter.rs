//! [`PNCounter`]: a counter that can go up and down.

use crate::{Error, GCounter, Lattice, Validate};
use meridian_clocks::ReplicaId;
use serde::{Deserialize, Serialize};

/// A positive-negative counter: two [`GCounter`]s, increments and decrements.
///
/// ```
/// use meridian_crdt::{Lattice, PNCounter};
/// use meridian_clocks::ReplicaId;
/// let mut a = PNCounter::new();
/// a.inc(ReplicaId(1), 5);
/// let mut b = a.clone();
/// b.dec(ReplicaId(2), 7);
/// a.merge(&b);
/// assert_eq!(a.value(), -2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PNCounter {
    /// Increments.
    p: GCounter,
    /// Decrements.
    n: GCounter,
}

impl PNCounter {
    /// The zero counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `k` on behalf of `r`; returns the delta.
    pub fn inc(&mut self, r: ReplicaId, k: u64) -> PNCounter {
        PNCounter {
            p: self.p.inc(r, k),
            n: GCounter::new(),
        }
    }

    /// Subtracts `k` on behalf of `r`; returns the delta.
    pub fn dec(&mut self, r: ReplicaId, k: u64) -> PNCounter {
        PNCounter {
            p: GCounter::new(),
            n: self.n.inc(r, k),
        }
    }

    /// The value: increments minus decrements, exact (an `i128` holds any difference of two
    /// `u64` totals).
    pub fn value(&self) -> i128 {
        i128::from(self.p.value()) - i128::from(self.n.value())
    }

    /// The increments.
    pub fn increments(&self) -> &GCounter {
        &self.p
    }

    /// The decrements.
    pub fn decrements(&self) -> &GCounter {
        &self.n
    }
}

impl Lattice for PNCounter {
    fn merge(&mut self, other: &Self) {
        self.p.merge(&other.p);
        self.n.merge(&other.n);
    }
}

impl Validate for PNCounter {
    fn validate(&self) -> Result<(), Error> {
        self.p.validate()?;
        self.n.validate()
    }
}
