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
    // `p` counts increments and `n` decrements; the short names are the wire format.
    p: GCounter,
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

    /// The value: increments minus decrements, exact for fewer than 2^63 replicas (each
    /// total is below 2^127), saturating beyond.
    pub fn value(&self) -> i128 {
        let p = i128::try_from(self.p.total()).unwrap_or(i128::MAX);
        let n = i128::try_from(self.n.total()).unwrap_or(i128::MAX);
        p.saturating_sub(n)
    }

    /// Every increment, per replica: the value is these minus the
    /// [`decrements`](Self::decrements).
    pub fn increments(&self) -> &GCounter {
        &self.p
    }

    /// Every decrement, per replica.
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
