//! [`Dot`] and [`CausalContext`]: event names and the set of events a replica has seen.

use crate::{ReplicaId, VectorClock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// One event: the `counter`-th event of `replica`. Counters start at 1.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Dot {
    /// The replica that created the event.
    pub replica: ReplicaId,
    /// Its sequence number at that replica, from 1.
    pub counter: u64,
}

impl Dot {
    /// Shorthand for `Dot { replica, counter }`.
    pub fn new(replica: ReplicaId, counter: u64) -> Self {
        Dot { replica, counter }
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.replica, self.counter)
    }
}

/// A replica's dot counter has reached `u64::MAX`: it cannot name another event.
///
/// Returned by [`CausalContext::try_next_dot`]. Local mutators get nowhere near it (one
/// dot per nanosecond would take 584 years); a context that claims it came from elsewhere,
/// and should have been refused there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DotsExhausted {
    /// The replica whose counter is exhausted.
    pub replica: ReplicaId,
}

impl fmt::Display for DotsExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replica {} has no dot left: its counter {} has been seen",
            self.replica,
            u64::MAX
        )
    }
}

impl std::error::Error for DotsExhausted {}

/// A causal context: the set of dots a replica has seen, stored as a version vector (the
/// contiguous prefix `1..=n` of each replica) plus a *dot cloud* of dots beyond it.
///
/// This is the causal context of Almeida, Shoker and Baquero, "Delta State Replicated Data
/// Types" (2018). The dot cloud is non-empty only after receiving deltas out of order;
/// [`compact`](Self::compact) folds every dot that extends the prefix back into it.
///
/// Invariant kept by every method except deserialization: the context is compact (no cloud
/// dot is at or directly above its replica's prefix). `contains` is correct either way.
///
/// ```
/// use meridian_clocks::{CausalContext, Dot, ReplicaId};
/// let r = ReplicaId(7);
/// let mut cc = CausalContext::default();
/// assert_eq!(cc.next_dot(r), Dot::new(r, 1));
/// cc.insert(Dot::new(r, 3)); // out of order: goes to the cloud
/// assert!(cc.contains(&Dot::new(r, 3)) && !cc.contains(&Dot::new(r, 2)));
/// cc.insert(Dot::new(r, 2)); // fills the gap: the prefix is now 1..=3
/// assert_eq!(cc.version_vector().get(r), 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CausalContext {
    vv: VectorClock,
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// True iff `d` has been seen.
    #[inline]
    pub fn contains(&self, d: &Dot) -> bool {
        d.counter <= self.vv.get(d.replica) || (!self.cloud.is_empty() && self.cloud.contains(d))
    }

    /// Records `d` as seen.
    #[inline(always)]
    pub fn insert(&mut self, d: Dot) {
        let prefix = self.vv.get(d.replica);
        if d.counter <= prefix {
            return;
        }
        // The common case inline: the next dot of a replica, with no cloud to fold.
        if d.counter == prefix + 1 && self.cloud.is_empty() {
            self.vv.observe(d.replica, d.counter);
            return;
        }
        self.insert_beyond(d, prefix);
    }

    /// [`insert`](Self::insert) of a dot above `prefix`, its replica's prefix.
    #[inline(never)]
    fn insert_beyond(&mut self, d: Dot, prefix: u64) {
        if d.counter == prefix + 1 {
            self.vv.observe(d.replica, d.counter);
            if !self.cloud.is_empty() {
                self.compact();
            }
        } else {
            self.cloud.insert(d);
        }
    }

    /// The highest counter of `r` seen, in the prefix or the cloud.
    #[inline]
    pub fn max_counter(&self, r: ReplicaId) -> u64 {
        if self.cloud.is_empty() {
            return self.vv.get(r);
        }
        let cloud_max = self
            .cloud
            .range(Dot::new(r, 0)..=Dot::new(r, u64::MAX))
            .next_back()
            .map_or(0, |d| d.counter);
        self.vv.get(r).max(cloud_max)
    }

    /// Allocates the next dot of `r` (one above any seen), records it, and returns it.
    ///
    /// # Panics
    ///
    /// If this context has seen `r`'s counter `u64::MAX`, there is no next dot, and reusing
    /// one would silently corrupt every CRDT built on it. A context built by local mutators
    /// never gets there; one decoded from elsewhere may claim it, so allocate from such a
    /// context (or bound its counters first) with [`try_next_dot`](Self::try_next_dot).
    pub fn next_dot(&mut self, r: ReplicaId) -> Dot {
        self.try_next_dot(r).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Allocates the next dot of `r` (one above any seen), records it, and returns it; or,
    /// if the context has seen `r`'s counter `u64::MAX`, returns [`DotsExhausted`] and
    /// leaves the context unchanged.
    ///
    /// ```
    /// use meridian_clocks::{CausalContext, Dot, ReplicaId, VectorClock};
    /// let r = ReplicaId(7);
    /// let mut cc = CausalContext::from(VectorClock::from_iter([(r, u64::MAX - 1)]));
    /// assert_eq!(cc.try_next_dot(r), Ok(Dot::new(r, u64::MAX)));
    /// let err = cc.try_next_dot(r).unwrap_err();
    /// assert!(err.to_string().contains("r7 has no dot left"));
    /// ```
    pub fn try_next_dot(&mut self, r: ReplicaId) -> Result<Dot, DotsExhausted> {
        let counter = self
            .max_counter(r)
            .checked_add(1)
            .ok_or(DotsExhausted { replica: r })?;
        let d = Dot::new(r, counter);
        self.insert(d);
        Ok(d)
    }

    /// The join: the union of the two sets of dots, compacted.
    pub fn merge(&mut self, other: &CausalContext) {
        self.vv.merge(&other.vv);
        if !other.cloud.is_empty() {
            self.cloud.extend(other.cloud.iter().copied());
        }
        if !self.cloud.is_empty() {
            self.compact();
        }
    }

    /// Folds cloud dots into the version vector where they extend a prefix and drops those
    /// it already covers. Never changes [`contains`](Self::contains).
    pub fn compact(&mut self) {
        if self.cloud.is_empty() {
            return;
        }
        let cloud = std::mem::take(&mut self.cloud);
        // Sorted by (replica, counter): one pass extends each prefix as far as it goes.
        for d in cloud {
            let prefix = self.vv.get(d.replica);
            if d.counter <= prefix {
                continue;
            }
            if d.counter == prefix + 1 {
                self.vv.observe(d.replica, d.counter);
            } else {
                self.cloud.insert(d);
            }
        }
    }

    /// The contiguous prefix of each replica.
    pub fn version_vector(&self) -> &VectorClock {
        &self.vv
    }

    /// The dots outside the prefix, sorted.
    pub fn cloud(&self) -> impl ExactSizeIterator<Item = Dot> + '_ {
        self.cloud.iter().copied()
    }

    /// True iff no dot has been seen.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// True iff every dot of `other` is in `self`.
    pub fn includes(&self, other: &CausalContext) -> bool {
        other.vv.iter().all(|(r, c)| {
            let mine = self.vv.get(r);
            // The gap must be filled by cloud dots; bail out before walking a hostile gap.
            mine >= c
                || (c - mine <= self.cloud.len() as u64
                    && (mine + 1..=c).all(|n| self.cloud.contains(&Dot::new(r, n))))
        }) && other.cloud.iter().all(|d| self.contains(d))
    }
}

impl From<VectorClock> for CausalContext {
    fn from(vv: VectorClock) -> Self {
        CausalContext {
            vv,
            cloud: BTreeSet::new(),
        }
    }
}
