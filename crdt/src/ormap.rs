//! [`OrMap`]: an observed-remove map whose values are dot stores sharing one context.

use crate::dotstore::{join_map, merge_context, validate_causal, DeltaContext, DotMap, DotStore};
use crate::{Error, Lattice, Validate};
use meridian_clocks::{CausalContext, ReplicaId};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// An observed-remove map (Almeida et al. 2018): keys map to delta CRDTs whose state is a
/// [`DotStore`], and the whole map shares one [`CausalContext`].
///
/// - `update` applies a value's delta mutator at a key and returns the map delta.
/// - `remove` *resets* the value: it drops every dot of the value that it observed. A
///   concurrent update elsewhere keeps its own dots, so the key survives with those (update
///   wins over remove), and nothing the remover saw comes back.
///
/// Ready-made values: [`CausalCounter`](crate::CausalCounter) (counters),
/// [`DotSet`](crate::DotSet) (an add-wins flag, so `OrMap<K, DotSet>` is a set of keys),
/// [`DotFun`](crate::DotFun) (a multi-value register, with [`DotFun::write`](crate::DotFun::write)),
/// and [`DotMap`] (a nested map).
///
/// ```
/// use meridian_crdt::{CausalCounter, Lattice, OrMap};
/// use meridian_clocks::ReplicaId;
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x: OrMap<String, CausalCounter> = OrMap::new();
/// x.update(a, "apples".to_string(), |c, m| c.inc(m, 3))?;
/// let mut y = x.clone();
/// y.remove(&"apples".to_string());
/// x.update(a, "pears".to_string(), |c, m| c.inc(m, 1))?;
/// x.merge(&y);
/// assert_eq!(x.keys().collect::<Vec<_>>(), ["pears"]);
/// # Ok::<(), meridian_crdt::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, V: Serialize",
    deserialize = "K: Deserialize<'de> + Ord, V: Deserialize<'de>"
))]
pub struct OrMap<K, V> {
    store: DotMap<K, V>,
    cc: CausalContext,
}

impl<K, V> Default for OrMap<K, V> {
    fn default() -> Self {
        OrMap {
            store: DotMap::default(),
            cc: CausalContext::new(),
        }
    }
}

impl<K: Ord + Clone + Debug, V: DotStore> OrMap<K, V> {
    /// The empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the delta mutator `f` to the value at `key` on behalf of `r`, and returns the
    /// map delta. `f` gets the current value (bottom if absent) and a [`DeltaContext`] for
    /// fresh dots, and returns the value's delta.
    ///
    /// If `f` fails (the value mutators fail only with [`Error::DotsExhausted`]), the map is
    /// unchanged and the error is returned.
    pub fn update<F>(&mut self, r: ReplicaId, key: K, f: F) -> Result<OrMap<K, V>, Error>
    where
        F: FnOnce(&V, &mut DeltaContext<'_>) -> Result<V, Error>,
    {
        let bottom = V::default();
        let mut m = DeltaContext::new(&self.cc, r);
        let value_delta = f(self.store.get(&key).unwrap_or(&bottom), &mut m)?;
        let cc = m.into_context();
        // The delta's context covers dots of `key` only (and fresh ones): join that key.
        let map = self.store.inner_mut();
        match map.get_mut(&key) {
            Some(v) => {
                v.join(&self.cc, &value_delta, &cc);
                if v.is_bottom() {
                    map.remove(&key);
                }
            }
            None => {
                let mut v = V::default();
                v.join(&self.cc, &value_delta, &cc);
                if !v.is_bottom() {
                    map.insert(key.clone(), v);
                }
            }
        }
        merge_context(&mut self.cc, &cc);
        Ok(OrMap {
            store: DotMap::single(key, value_delta),
            cc,
        })
    }

    /// Removes `key`, resetting every dot of its value that this replica observed; returns
    /// the delta.
    pub fn remove(&mut self, key: &K) -> OrMap<K, V> {
        let mut delta = OrMap::new();
        if let Some(v) = self.store.inner_mut().remove(key) {
            v.for_each_dot(&mut |d| delta.cc.insert(d));
        }
        delta
    }

    /// Removes every key observed; returns the delta.
    pub fn clear(&mut self) -> OrMap<K, V> {
        let mut delta = OrMap::new();
        self.store.for_each_dot(&mut |d| delta.cc.insert(d));
        self.store = DotMap::new();
        delta
    }

    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.store.get(key)
    }

    /// True iff `key` is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.store.get(key).is_some()
    }

    /// The keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.store.inner().keys()
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.store.iter()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True iff the map is empty.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The shared causal context.
    pub fn context(&self) -> &CausalContext {
        &self.cc
    }
}

impl<K: Ord + Clone + Debug, V: DotStore> Lattice for OrMap<K, V> {
    fn merge(&mut self, other: &Self) {
        join_map(&mut self.store, &self.cc, &other.store, &other.cc);
        merge_context(&mut self.cc, &other.cc);
    }
}

impl<K: Ord + Clone + Debug, V: DotStore> Validate for OrMap<K, V> {
    fn validate(&self) -> Result<(), Error> {
        validate_causal(&self.store, &self.cc)
    }
}
