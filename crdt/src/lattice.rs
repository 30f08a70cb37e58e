//! [`Lattice`] and [`Validate`]: the two traits every type in this crate implements.

use crate::Error;

/// A join-semilattice: `merge` is the least upper bound.
///
/// `merge` is commutative, associative and idempotent (up to `Eq`), and it cannot fail.
/// Every delta mutator in this crate returns a value of the same type, so deltas join into
/// delta groups with this same `merge`.
///
/// ```
/// use meridian_crdt::{GCounter, Lattice};
/// use meridian_clocks::ReplicaId;
/// let mut a = GCounter::new();
/// let mut b = GCounter::new();
/// a.inc(ReplicaId(1), 2);
/// b.inc(ReplicaId(2), 3);
/// a.merge(&b);
/// assert_eq!(a.value(), 5);
/// ```
pub trait Lattice {
    /// Joins `other` into `self`.
    fn merge(&mut self, other: &Self);
}

/// Checks the invariants of a state received from elsewhere, before it is merged.
///
/// Every state built by this crate's own mutators and merges is valid; a remote state may
/// not be. Merging an invalid state does not panic, but it may not mean what the sender
/// meant, so check it first.
pub trait Validate {
    /// `Ok` iff every invariant holds.
    fn validate(&self) -> Result<(), Error>;
}
