//! [`OrMap`]: an observed-remove map whose values are dot stores sharing one context.

use crate::dotstore::{join_map, merge_context, validate_causal, DeltaContext, DotMap, DotStore};
use crate::{CausalCounter, Error, Lattice, Validate, DOT_COUNTER_MAX};
use meridian_clocks::{CausalContext, Dot, ReplicaId};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt::Debug;

/// An observed-remove map (Almeida et al. 2018): keys map to delta CRDTs whose state is a
/// [`DotStore`], and the whole map shares one [`CausalContext`].
///
/// - `update` applies a value's delta mutator at a key and returns the map delta.
/// - `remove` *resets* the value: it drops every dot of the value that it observed. A
///   concurrent update elsewhere keeps its own dots, so the key survives with those (update
///   wins over remove), and nothing the remover saw comes back.
/// - For counter values, [`inc`](OrMap::inc) and [`dec`](OrMap::dec) are `update` without
///   allocating: the small-delta path.
///
/// Ready-made values: [`CausalCounter`] (counters),
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

/// Counters in place: the allocation-free small-delta path.
///
/// `map.inc(r, key, k)` is `map.update(r, key, |c, m| c.inc(m, k))` (the same state, the
/// same delta: a property test checks both on random histories and random valid states),
/// without the general path's heap traffic. The general path builds the value's delta
/// (a `Vec`), its context (a dot cloud) and the map delta (a `BTreeMap` node), merges them
/// and returns them; here the counter's entry is overwritten where it lies, the two dots go
/// straight into the map's context, and the delta is returned inline as a
/// [`CounterDelta`]. Only a new key allocates (its entry in the map).
///
/// ```
/// use meridian_crdt::{CausalCounter, Lattice, OrMap};
/// use meridian_clocks::ReplicaId;
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x: OrMap<&str, CausalCounter> = OrMap::new();
/// let mut y = x.clone();
/// let d1 = x.inc(a, "apples", 3)?;
/// let d2 = x.dec(a, "apples", 1)?;
/// y.merge(&d1.to_map());
/// y.merge(&d2.into_map());
/// assert_eq!(y.get(&"apples").map(CausalCounter::value), Some(2));
/// # let _ = b;
/// # Ok::<(), meridian_crdt::Error>(())
/// ```
impl<K: Ord + Clone + Debug> OrMap<K, CausalCounter> {
    /// Adds `k` to the counter at `key` on behalf of `r`; returns the delta. Equal to
    /// `update(r, key, |c, m| c.inc(m, k))`, without allocating when `key` exists.
    ///
    /// Fails with [`Error::DotsExhausted`], changing nothing, if `r` has no fresh dot left.
    pub fn inc(&mut self, r: ReplicaId, key: K, k: u64) -> Result<CounterDelta<K>, Error> {
        self.count(r, key, k, 0)
    }

    /// Subtracts `k` from the counter at `key` on behalf of `r`; returns the delta. Equal to
    /// `update(r, key, |c, m| c.dec(m, k))`, without allocating when `key` exists.
    ///
    /// Fails with [`Error::DotsExhausted`], changing nothing, if `r` has no fresh dot left.
    pub fn dec(&mut self, r: ReplicaId, key: K, k: u64) -> Result<CounterDelta<K>, Error> {
        self.count(r, key, 0, k)
    }

    #[cold]
    #[inline(never)]
    fn count_general(
        &mut self,
        r: ReplicaId,
        key: K,
        inc: u64,
        dec: u64,
    ) -> Result<CounterDelta<K>, Error> {
        let delta = self.update(r, key, |c, m| c.update(m, inc, dec))?;
        Ok(CounterDelta(Repr::Map(Box::new(delta))))
    }

    #[inline]
    fn count(
        &mut self,
        r: ReplicaId,
        key: K,
        inc: u64,
        dec: u64,
    ) -> Result<CounterDelta<K>, Error> {
        let slot = self.store.inner_mut().get_mut(&key);
        let own = match &slot {
            Some(c) => c.own_dot(r),
            None => Some((None, (0, 0))),
        };
        // `r` holds two dots at `key`: valid, but never made by local updates. The general
        // path handles it.
        let Some((own, (p, n))) = own else {
            return self.count_general(r, key, inc, dec);
        };
        let observed = own.map(|(_, d)| d);
        // As `DeltaContext::next_dot`: above every dot of `r` seen, in the context or
        // (for a store its context does not cover) at this key.
        let seen = self
            .cc
            .max_counter(r)
            .max(observed.map_or(0, |d| d.counter));
        if seen >= DOT_COUNTER_MAX {
            return Err(Error::DotsExhausted { replica: r });
        }
        let dot = Dot::new(r, seen + 1);
        let value = (p.saturating_add(inc), n.saturating_add(dec));
        // The join of the one-dot delta at `key`: it drops the observed dot and adds the
        // fresh one, which no context has seen.
        match slot {
            Some(c) => c.replace_own(own.map(|(i, _)| i), dot, value),
            None => {
                self.store
                    .inner_mut()
                    .insert(key.clone(), CausalCounter::single(dot, value));
            }
        }
        // The observed dot is in the context already unless the state is malformed.
        if let Some(o) = observed.filter(|o| !self.cc.contains(o)) {
            self.cc.insert(o);
        }
        self.cc.insert(dot);
        Ok(CounterDelta(Repr::One {
            key,
            replica: r,
            // A dot of counter 0 (malformed) is no dot to a context: recording it as none
            // changes nothing.
            observed: observed.map_or(0, |d| d.counter),
            counter: dot.counter,
            value,
        }))
    }
}

/// The delta of [`OrMap::inc`] and [`OrMap::dec`]: one counter update at one key, held
/// inline (the key, the dot it replaced, the fresh dot and the running total), so making
/// it allocates nothing.
///
/// It stands for the map delta [`to_map`](Self::to_map) returns, which is what
/// [`OrMap::update`] would have returned; it serializes as that map delta (the same bytes),
/// so a receiver decodes an [`OrMap`] and cannot tell the paths apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterDelta<K>(Repr<K>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr<K> {
    /// Replica `replica` replaced its dot `observed` (0: it had none) at `key` by the fresh
    /// dot `counter`, holding its running total `value`. Small, as it is moved around.
    One {
        key: K,
        replica: ReplicaId,
        observed: u64,
        counter: u64,
        value: (u64, u64),
    },
    /// The rare state the inline form cannot describe: the general path's delta.
    Map(Box<OrMap<K, CausalCounter>>),
}

impl<K: Ord + Clone + Debug> CounterDelta<K> {
    /// The map delta this stands for: merge it into other replicas.
    pub fn to_map(&self) -> OrMap<K, CausalCounter> {
        match &self.0 {
            Repr::One {
                key,
                replica,
                observed,
                counter,
                value,
            } => {
                // Built in `DeltaContext`'s order: the observed dot, then the fresh one.
                let mut cc = CausalContext::new();
                cc.insert(Dot::new(*replica, *observed)); // nothing if 0
                let dot = Dot::new(*replica, *counter);
                cc.insert(dot);
                OrMap {
                    store: DotMap::single(key.clone(), CausalCounter::single(dot, *value)),
                    cc,
                }
            }
            Repr::Map(m) => (**m).clone(),
        }
    }

    /// The map delta this stands for, by value.
    pub fn into_map(self) -> OrMap<K, CausalCounter> {
        match self.0 {
            Repr::Map(m) => *m,
            one => CounterDelta(one).to_map(),
        }
    }
}

impl<K: Ord + Clone + Debug> From<CounterDelta<K>> for OrMap<K, CausalCounter> {
    fn from(d: CounterDelta<K>) -> Self {
        d.into_map()
    }
}

/// The bytes of [`to_map`](CounterDelta::to_map).
impl<K: Ord + Clone + Debug + Serialize> Serialize for CounterDelta<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Map(m) => m.serialize(s),
            Repr::One { .. } => self.to_map().serialize(s),
        }
    }
}
