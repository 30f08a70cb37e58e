//! [`AwSet`]: the add-wins observed-remove set, tombstone-free.

use crate::dotstore::{
    join_map, merge_context, validate_causal, DeltaContext, DotMap, DotSet, DotStore,
};
use crate::{Error, Lattice, Validate};
use meridian_clocks::{CausalContext, ReplicaId};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// An add-wins observed-remove set (OR-set), with no tombstones.
///
/// State: each live element maps to the [`DotSet`] of the adds that keep it alive, and one
/// [`CausalContext`] is shared by the whole set. An `add` replaces the element's observed
/// dots with a fresh one; a `remove` drops the element's observed dots and keeps nothing but
/// those dots in the context, where they fold into the version vector. A removed element
/// therefore costs nothing once the context is compact, and a live element costs about one
/// dot. `crdts::Orswot` instead keeps a vector clock per element.
///
/// Concurrent `add(x)` ‖ `remove(x)`: the add wins, because the remove had not seen the
/// add's dot.
///
/// ```
/// use meridian_crdt::{AwSet, Lattice};
/// use meridian_clocks::ReplicaId;
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x = AwSet::new();
/// x.add(a, "milk");
/// let mut y = x.clone();
/// y.remove(&"milk");   // y saw the first add …
/// x.add(a, "milk");    // … not this one
/// x.merge(&y);
/// y.merge(&x);
/// assert!(x.contains(&"milk") && x == y);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de> + Ord"))]
pub struct AwSet<T> {
    store: DotMap<T, DotSet>,
    cc: CausalContext,
}

impl<T> Default for AwSet<T> {
    fn default() -> Self {
        AwSet {
            store: DotMap::default(),
            cc: CausalContext::new(),
        }
    }
}

impl<T: Ord + Clone + Debug> AwSet<T> {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `x` on behalf of `r`; returns the delta (one element, one dot, and the dots it
    /// supersedes).
    pub fn add(&mut self, r: ReplicaId, x: T) -> AwSet<T> {
        let mut m = DeltaContext::new(&self.cc, r);
        let dots = match self.store.get(&x) {
            Some(cur) => cur.enable(&mut m),
            None => DotSet::default().enable(&mut m),
        };
        let delta = AwSet {
            store: DotMap::single(x, dots),
            cc: m.into_context(),
        };
        self.apply_local(&delta);
        delta
    }

    /// Removes `x` (the adds of it that this replica has seen); returns the delta, which
    /// holds no element, only the removed dots.
    pub fn remove(&mut self, x: &T) -> AwSet<T> {
        let mut delta = AwSet::new();
        if let Some(dots) = self.store.inner_mut().remove(x) {
            dots.for_each_dot(&mut |d| delta.cc.insert(d));
        }
        delta
    }

    /// Removes every element seen; returns the delta.
    pub fn clear(&mut self) -> AwSet<T> {
        let mut delta = AwSet::new();
        self.store.for_each_dot(&mut |d| delta.cc.insert(d));
        self.store = DotMap::new();
        delta
    }

    fn apply_local(&mut self, delta: &AwSet<T>) {
        // A local delta touches one element, so join only that key: O(log n).
        for k in delta.store.inner().keys() {
            self.store.join_key(&self.cc, k, &delta.store, &delta.cc);
        }
        merge_context(&mut self.cc, &delta.cc);
    }

    /// True iff `x` is in the set.
    pub fn contains(&self, x: &T) -> bool {
        self.store.get(x).is_some()
    }

    /// The elements, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.store.inner().keys()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True iff the set is empty.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The shared causal context.
    pub fn context(&self) -> &CausalContext {
        &self.cc
    }

    /// The dots keeping `x` alive.
    pub fn dots(&self, x: &T) -> Option<&DotSet> {
        self.store.get(x)
    }
}

impl<T: Ord + Clone + Debug> Lattice for AwSet<T> {
    fn merge(&mut self, other: &Self) {
        join_map(&mut self.store, &self.cc, &other.store, &other.cc);
        merge_context(&mut self.cc, &other.cc);
    }
}

impl<T: Ord + Clone + Debug> Validate for AwSet<T> {
    fn validate(&self) -> Result<(), Error> {
        validate_causal(&self.store, &self.cc)
    }
}
