//! [`CausalCounter`]: a resettable counter stored in dots, the counter value of an
//! [`OrMap`](crate::OrMap).

use crate::dotstore::{DeltaContext, DotFun, DotStore};
use crate::Error;
use meridian_clocks::{CausalContext, Dot, ReplicaId};
use serde::{Deserialize, Serialize};

/// A replica's entry in a [`CausalCounter`] (its index and dot, if it holds one) and its
/// running `(increments, decrements)`.
pub(crate) type OwnDot = (Option<(usize, Dot)>, (u64, u64));

/// A counter whose state is a dot store (the "causal counter" of Almeida et al. 2018), so it
/// can live inside an [`OrMap`](crate::OrMap) and be reset by a remove.
///
/// Each replica keeps one live dot holding its running `(increments, decrements)`; an update
/// replaces the replica's dot with a fresh one. A reset (an `OrMap` remove) drops every dot
/// it observed.
///
/// **Concurrent reset ‖ increment.** The incrementing replica's fresh dot carries its whole
/// running total, including the part the reset observed, so after the merge that replica's
/// earlier contribution is back. This matches `crdts::Map<_, GCounter>` (whose reset keeps
/// a replica's entry if it has grown). A reset that is not concurrent with any update
/// removes everything it saw, for good.
///
/// ```
/// use meridian_crdt::{CausalCounter, Lattice, OrMap};
/// use meridian_clocks::ReplicaId;
/// let mut likes: OrMap<&str, CausalCounter> = OrMap::new();
/// likes.update(ReplicaId(1), "post-1", |c, m| c.inc(m, 2))?;
/// likes.update(ReplicaId(1), "post-1", |c, m| c.dec(m, 1))?;
/// assert_eq!(likes.get(&"post-1").map(CausalCounter::value), Some(1));
/// # Ok::<(), meridian_crdt::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CausalCounter {
    /// Dot ↦ (increments, decrements) of the dot's replica.
    dots: DotFun<(u64, u64)>,
}

impl CausalCounter {
    /// The zero counter.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn update(
        &self,
        m: &mut DeltaContext<'_>,
        inc: u64,
        dec: u64,
    ) -> Result<CausalCounter, Error> {
        let r = m.replica();
        let (mut p, mut n) = (0u64, 0u64);
        for (d, (dp, dn)) in self.dots.entries() {
            if d.replica == r {
                p = p.saturating_add(*dp);
                n = n.saturating_add(*dn);
                m.observe(*d);
            }
        }
        let d = m.next_dot()?;
        Ok(CausalCounter {
            dots: DotFun::single(d, (p.saturating_add(inc), n.saturating_add(dec))),
        })
    }

    /// Delta mutator: adds `k`. Fails only if the replica has no fresh dot left
    /// ([`DeltaContext::next_dot`]).
    pub fn inc(&self, m: &mut DeltaContext<'_>, k: u64) -> Result<CausalCounter, Error> {
        self.update(m, k, 0)
    }

    /// Delta mutator: subtracts `k`. Fails only if the replica has no fresh dot left.
    pub fn dec(&self, m: &mut DeltaContext<'_>, k: u64) -> Result<CausalCounter, Error> {
        self.update(m, 0, k)
    }

    /// The dot replica `r` holds here (its index and the dot) and its running
    /// `(increments, decrements)`, as [`inc`](Self::inc) observes them: `Some((None, (0,
    /// 0)))` if it holds none, `None` if it holds two or more (a state no sequence of local
    /// updates produces, though a valid one), which the caller leaves to the general path.
    #[inline]
    pub(crate) fn own_dot(&self, r: ReplicaId) -> Option<OwnDot> {
        let mut own = None;
        for (i, (d, v)) in self.dots.entries().iter().enumerate() {
            if d.replica == r {
                if own.is_some() {
                    return None;
                }
                own = Some((i, *d, *v));
            }
        }
        Some(match own {
            Some((i, d, v)) => (Some((i, d)), v),
            None => (None, (0, 0)),
        })
    }

    /// Replaces the entry at index `old` (if any; from [`own_dot`](Self::own_dot)) by
    /// `d ↦ value`, in place.
    #[inline]
    pub(crate) fn replace_own(&mut self, old: Option<usize>, d: Dot, value: (u64, u64)) {
        self.dots.replace_entry(old, d, value);
    }

    /// The counter holding only `d ↦ value`.
    #[inline]
    pub(crate) fn single(d: Dot, value: (u64, u64)) -> Self {
        CausalCounter {
            dots: DotFun::single(d, value),
        }
    }

    /// The value: the sum over live dots of increments minus decrements (exact in `i128`
    /// for up to 2^63 dots, which is every possible state).
    pub fn value(&self) -> i128 {
        self.dots
            .entries()
            .iter()
            .map(|(_, (p, n))| i128::from(*p) - i128::from(*n))
            .sum()
    }
}

impl DotStore for CausalCounter {
    fn is_bottom(&self) -> bool {
        self.dots.is_bottom()
    }

    fn join(&mut self, cc: &CausalContext, other: &Self, other_cc: &CausalContext) {
        self.dots.join(cc, &other.dots, other_cc);
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        self.dots.for_each_dot(f);
    }

    fn validate_store(&self) -> Result<(), Error> {
        self.dots.validate_store()
    }
}
