//! Dot stores (Almeida et al. 2018): the building blocks of the causal, tombstone-free types.
//!
//! A *causal* CRDT state is a pair `(store, context)`. The store holds the dots of live
//! events (with payloads); the [`CausalContext`](meridian_clocks::CausalContext) holds every dot ever seen. Two states join
//! by keeping a dot if both stores have it, or if one store has it and the other side's
//! context has not seen it (so the other side has not removed it). A removal therefore
//! needs no tombstone: it is the absence of a dot from a store whose context covers it.
//!
//! [`DotSet`], [`DotFun`] and [`DotMap`] are the three store shapes of the paper;
//! [`CausalCounter`](crate::CausalCounter) is a counter built on [`DotFun`]. Any
//! [`DotStore`] can be the value type of an [`OrMap`](crate::OrMap).

use crate::Error;
use meridian_clocks::{CausalContext, Dot, ReplicaId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Debug;

/// The highest dot counter a valid state may hold: 2^53 − 1.
///
/// [`Validate`](crate::Validate) rejects any context or store with a counter above it, and
/// [`DeltaContext::next_dot`] refuses to allocate past it ([`Error::DotsExhausted`]) instead
/// of saturating and handing out one dot twice. It is far beyond any real history (a
/// replica issuing a million dots a second needs 285 years to reach it), far enough below
/// `u64::MAX` that counter arithmetic (`counter + 1`, a run's `start + len`) cannot
/// overflow, and it is the largest integer every JSON parser holds exactly.
pub const DOT_COUNTER_MAX: u64 = (1 << 53) - 1;

/// A store of dots that joins under a pair of causal contexts.
pub trait DotStore: Clone + Default + Debug + Eq {
    /// True iff the store holds no dot (the bottom element).
    fn is_bottom(&self) -> bool;

    /// The store half of the causal join: `(self, cc) ⊔ (other, other_cc)`.
    ///
    /// Keeps each dot held by both stores, and each dot held by one store that the other
    /// side's context has not seen. The caller merges the contexts afterwards.
    fn join(&mut self, cc: &CausalContext, other: &Self, other_cc: &CausalContext);

    /// Calls `f` with every dot of the store.
    fn for_each_dot(&self, f: &mut dyn FnMut(Dot));

    /// Drops every dot that `observed` contains: a reset by someone who had seen `observed`.
    fn remove_observed(&mut self, observed: &CausalContext) {
        self.join(&CausalContext::new(), &Self::default(), observed);
    }

    /// Checks invariants of the payload beyond "every dot is in the context" (which the
    /// enclosing state checks). The default accepts everything.
    fn validate_store(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Hands out fresh dots for a delta mutator and records the dots it supersedes, building the
/// delta's causal context. It never touches the replica's own context: the delta is merged
/// into the replica afterwards, which is what makes `apply == merge(delta)` hold by
/// construction.
#[derive(Debug)]
pub struct DeltaContext<'a> {
    base: &'a CausalContext,
    replica: ReplicaId,
    delta: CausalContext,
}

impl<'a> DeltaContext<'a> {
    /// A delta context for `replica`, whose state has context `base`.
    pub fn new(base: &'a CausalContext, replica: ReplicaId) -> Self {
        DeltaContext {
            base,
            replica,
            delta: CausalContext::new(),
        }
    }

    /// The replica performing the mutation.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// A dot never seen by the replica, recorded in the delta's context.
    ///
    /// Fails with [`Error::DotsExhausted`] if the replica has already seen a dot of its own
    /// at [`DOT_COUNTER_MAX`]: there is no fresh dot left, and reusing one would lose the
    /// event. The replica needs a new [`ReplicaId`].
    pub fn next_dot(&mut self) -> Result<Dot, Error> {
        let r = self.replica;
        let c = self.base.max_counter(r).max(self.delta.max_counter(r));
        if c >= DOT_COUNTER_MAX {
            return Err(Error::DotsExhausted { replica: r });
        }
        let d = Dot::new(r, c + 1);
        self.delta.insert(d);
        Ok(d)
    }

    /// Records that the mutation observed (and so drops, unless it re-adds) `d`.
    pub fn observe(&mut self, d: Dot) {
        self.delta.insert(d);
    }

    /// Records every dot of `store`.
    pub fn observe_store<S: DotStore>(&mut self, store: &S) {
        store.for_each_dot(&mut |d| self.delta.insert(d));
    }

    /// The delta's causal context.
    pub fn into_context(self) -> CausalContext {
        self.delta
    }
}

/// Checks that `cc` is in canonical (compact) form, with no counter 0 and none above
/// [`DOT_COUNTER_MAX`].
pub(crate) fn validate_context(cc: &CausalContext) -> Result<(), Error> {
    for (r, c) in cc.version_vector().iter() {
        if c > DOT_COUNTER_MAX {
            return Err(Error::CounterTooLarge {
                dot: Dot::new(r, c),
            });
        }
    }
    for d in cc.cloud() {
        if d.counter == 0 {
            return Err(Error::ZeroCounter { dot: d });
        }
        if d.counter > DOT_COUNTER_MAX {
            return Err(Error::CounterTooLarge { dot: d });
        }
        if d.counter <= cc.version_vector().get(d.replica).saturating_add(1) {
            return Err(Error::ContextNotCompact { dot: d });
        }
    }
    Ok(())
}

/// Checks a whole causal state: a canonical context, a valid store, every dot covered by
/// the context, and no dot held twice (under two keys, or twice under one).
pub(crate) fn validate_causal<S: DotStore>(store: &S, cc: &CausalContext) -> Result<(), Error> {
    validate_context(cc)?;
    store.validate_store()?;
    let mut bad = None;
    let mut dots = Vec::new();
    store.for_each_dot(&mut |d| {
        if bad.is_none() {
            if d.counter == 0 {
                bad = Some(Error::ZeroCounter { dot: d });
            } else if !cc.contains(&d) {
                bad = Some(Error::DotOutsideContext { dot: d });
            }
        }
        dots.push(d);
    });
    if let Some(e) = bad {
        return Err(e);
    }
    // One dot names one event, so it sits under one key. The joins rely on it (a small
    // delta joins only its own keys), so a state that breaks it would merge differently in
    // different orders. Sorting is O(n log n) in the dots, which decoding already bounds.
    dots.sort_unstable();
    match dots.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(Error::DuplicateDot { dot: w[0] }),
        None => Ok(()),
    }
}

/// Merges `other` into `cc`. A delta's context is usually a few cloud dots: inserting them
/// one by one extends the prefix in place, without `CausalContext::merge`'s cloud rebuild.
pub(crate) fn merge_context(cc: &mut CausalContext, other: &CausalContext) {
    if other.version_vector().is_empty() && other.cloud().len() <= 8 {
        for d in other.cloud() {
            cc.insert(d);
        }
    } else {
        cc.merge(other);
    }
}

/// The dots of `cc` if there are at most `max` of them.
fn small_context_dots(cc: &CausalContext, max: u64) -> Option<Vec<Dot>> {
    let mut n = cc.cloud().len() as u64;
    for (_, c) in cc.version_vector().iter() {
        n = n.saturating_add(c);
        if n > max {
            return None;
        }
    }
    let mut dots = Vec::with_capacity(n as usize);
    for (r, c) in cc.version_vector().iter() {
        dots.extend((1..=c).map(|i| Dot::new(r, i)));
    }
    dots.extend(cc.cloud());
    Some(dots)
}

/// The causal join of two dot maps, `(store, cc) ⊔ (other, other_cc)`.
///
/// When `other` is a small delta whose context can only cover dots at `other`'s own keys
/// (every dot of `other_cc` is in `other`'s store, or at one of those keys in `store`, or
/// unseen by `cc`), only those keys are joined: O(k log n) instead of a walk over `store`.
/// This relies on the invariant that one dot names one event, so it sits under one key.
pub(crate) fn join_map<K: Ord + Clone + Debug, V: DotStore>(
    store: &mut DotMap<K, V>,
    cc: &CausalContext,
    other: &DotMap<K, V>,
    other_cc: &CausalContext,
) {
    const KEYS_MAX: usize = 8;
    const DOTS_MAX: u64 = 32;
    if other.len() <= KEYS_MAX {
        if let Some(dots) = small_context_dots(other_cc, DOTS_MAX) {
            let mut local = Vec::new();
            for (k, v) in other.iter() {
                v.for_each_dot(&mut |d| local.push(d));
                if let Some(mine) = store.get(k) {
                    mine.for_each_dot(&mut |d| local.push(d));
                }
            }
            if dots.iter().all(|d| !cc.contains(d) || local.contains(d)) {
                for k in other.0.keys() {
                    store.join_key(cc, k, other, other_cc);
                }
                return;
            }
        }
    }
    store.join(cc, other, other_cc);
}

fn strictly_sorted<T, K: Ord>(xs: &[T], key: impl Fn(&T) -> K) -> bool {
    xs.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}

// ---------------------------------------------------------------------------------------
// DotSet

/// A set of dots: the store of an add-wins flag or set element.
///
/// A sorted vector, because the typical element has one dot (a few under concurrency).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DotSet(Vec<Dot>);

impl DotSet {
    /// The empty set.
    pub fn new() -> Self {
        DotSet(Vec::new())
    }

    /// The set holding only `d`.
    pub fn single(d: Dot) -> Self {
        DotSet(vec![d])
    }

    /// From dots already strictly sorted (the caller checks).
    pub(crate) fn from_sorted(v: Vec<Dot>) -> Self {
        debug_assert!(strictly_sorted(&v, |d| *d));
        DotSet(v)
    }

    /// The dots, sorted.
    pub fn dots(&self) -> &[Dot] {
        &self.0
    }

    /// True iff `d` is in the set.
    pub fn contains(&self, d: &Dot) -> bool {
        self.0.binary_search(d).is_ok()
    }

    /// Delta mutator: replaces the observed dots with one fresh dot ("enable" / "add").
    /// Fails only if the replica has no fresh dot left ([`DeltaContext::next_dot`]).
    pub fn enable(&self, m: &mut DeltaContext<'_>) -> Result<DotSet, Error> {
        m.observe_store(self);
        Ok(DotSet::single(m.next_dot()?))
    }
}

impl DotStore for DotSet {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn join(&mut self, cc: &CausalContext, other: &Self, other_cc: &CausalContext) {
        if self.0 == other.0 {
            return;
        }
        if other.0.is_empty() {
            self.0.retain(|d| !other_cc.contains(d));
            return;
        }
        if self.0.is_empty() {
            self.0 = other
                .0
                .iter()
                .filter(|d| !cc.contains(d))
                .copied()
                .collect();
            return;
        }
        if other.0.len() <= 4 {
            // In place, no allocation: the common case of merging a delta.
            self.0
                .retain(|d| !other_cc.contains(d) || other.0.binary_search(d).is_ok());
            for d in &other.0 {
                if let Err(i) = self.0.binary_search(d) {
                    if !cc.contains(d) {
                        self.0.insert(i, *d);
                    }
                }
            }
            return;
        }
        let (a, b) = (&self.0, &other.0);
        let mut out = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let ord = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match ord {
                Ordering::Less => {
                    if !other_cc.contains(&a[i]) {
                        out.push(a[i]);
                    }
                    i += 1;
                }
                Ordering::Greater => {
                    if !cc.contains(&b[j]) {
                        out.push(b[j]);
                    }
                    j += 1;
                }
                Ordering::Equal => {
                    out.push(a[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        self.0 = out;
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        self.0.iter().for_each(|d| f(*d));
    }
}

impl Serialize for DotSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Decoding rejects unsorted or duplicate dots.
impl<'de> Deserialize<'de> for DotSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Dot>::deserialize(d)?;
        if !strictly_sorted(&v, |d| *d) {
            return Err(serde::de::Error::custom("dot set not strictly sorted"));
        }
        Ok(DotSet(v))
    }
}

impl FromIterator<Dot> for DotSet {
    fn from_iter<I: IntoIterator<Item = Dot>>(iter: I) -> Self {
        let mut v: Vec<Dot> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        DotSet(v)
    }
}

// ---------------------------------------------------------------------------------------
// DotFun

/// A function from dots to payloads: the store of a multi-value register or a dot-keyed
/// counter. A sorted vector of `(dot, value)`.
///
/// One dot names one event, so two replicas never hold different payloads for one dot. If
/// malformed input does, the join keeps the larger payload, so that it stays a lattice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DotFun<V>(Vec<(Dot, V)>);

impl<V> Default for DotFun<V> {
    fn default() -> Self {
        DotFun(Vec::new())
    }
}

impl<V> DotFun<V> {
    /// The empty store.
    pub fn new() -> Self {
        DotFun(Vec::new())
    }

    /// The store holding only `d ↦ v`.
    pub fn single(d: Dot, v: V) -> Self {
        DotFun(vec![(d, v)])
    }

    /// The entries, sorted by dot.
    pub fn entries(&self) -> &[(Dot, V)] {
        &self.0
    }

    /// The number of dots.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True iff there is no dot.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The payload of `d`.
    pub fn get(&self, d: &Dot) -> Option<&V> {
        self.0
            .binary_search_by(|(x, _)| x.cmp(d))
            .ok()
            .map(|i| &self.0[i].1)
    }
}

impl<V: Clone + Debug + Ord> DotFun<V> {
    /// Delta mutator of a multi-value register: replaces every observed value with `v`.
    /// Fails only if the replica has no fresh dot left ([`DeltaContext::next_dot`]).
    pub fn write(&self, m: &mut DeltaContext<'_>, v: V) -> Result<DotFun<V>, Error> {
        m.observe_store(self);
        Ok(DotFun::single(m.next_dot()?, v))
    }
}

impl<V: Clone + Debug + Ord> DotStore for DotFun<V> {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn join(&mut self, cc: &CausalContext, other: &Self, other_cc: &CausalContext) {
        if self.0 == other.0 {
            return;
        }
        if other.0.is_empty() {
            self.0.retain(|(d, _)| !other_cc.contains(d));
            return;
        }
        if other.0.len() <= 4 {
            // In place, no allocation: the common case of merging a delta.
            self.0
                .retain(|(d, _)| !other_cc.contains(d) || other.get(d).is_some());
            for (d, v) in &other.0 {
                match self.0.binary_search_by(|(x, _)| x.cmp(d)) {
                    Ok(i) => {
                        if *v > self.0[i].1 {
                            self.0[i].1 = v.clone();
                        }
                    }
                    Err(i) => {
                        if !cc.contains(d) {
                            self.0.insert(i, (*d, v.clone()));
                        }
                    }
                }
            }
            return;
        }
        let a = std::mem::take(&mut self.0);
        let b = &other.0;
        let mut out = Vec::with_capacity(a.len().max(b.len()));
        let mut ai = a.into_iter().peekable();
        let mut j = 0;
        loop {
            let ord = match (ai.peek(), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match ord {
                Ordering::Less => {
                    let x = ai.next().expect("peeked");
                    if !other_cc.contains(&x.0) {
                        out.push(x);
                    }
                }
                Ordering::Greater => {
                    if !cc.contains(&b[j].0) {
                        out.push(b[j].clone());
                    }
                    j += 1;
                }
                Ordering::Equal => {
                    let x = ai.next().expect("peeked");
                    out.push(if b[j].1 > x.1 { b[j].clone() } else { x });
                    j += 1;
                }
            }
        }
        self.0 = out;
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        self.0.iter().for_each(|(d, _)| f(*d));
    }
}

impl<V: Serialize> Serialize for DotFun<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Decoding rejects unsorted or duplicate dots.
impl<'de, V: Deserialize<'de>> Deserialize<'de> for DotFun<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<(Dot, V)>::deserialize(d)?;
        if !strictly_sorted(&v, |e| e.0) {
            return Err(serde::de::Error::custom(
                "dot function not strictly sorted by dot",
            ));
        }
        Ok(DotFun(v))
    }
}

// ---------------------------------------------------------------------------------------
// DotMap

/// A map from keys to dot stores, with no bottom values: the store of an OR-map.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DotMap<K, V>(BTreeMap<K, V>);

impl<K, V> Default for DotMap<K, V> {
    fn default() -> Self {
        DotMap(BTreeMap::new())
    }
}

impl<K: Ord, V> DotMap<K, V> {
    /// The empty map.
    pub fn new() -> Self {
        DotMap(BTreeMap::new())
    }

    /// The value at `k`, if it holds any dot.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.0.get(k)
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, K, V> {
        self.0.iter()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True iff there is no key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn inner(&self) -> &BTreeMap<K, V> {
        &self.0
    }

    pub(crate) fn inner_mut(&mut self) -> &mut BTreeMap<K, V> {
        &mut self.0
    }

    pub(crate) fn from_inner(m: BTreeMap<K, V>) -> Self {
        DotMap(m)
    }
}

impl<K: Ord + Clone + Debug, V: DotStore> DotMap<K, V> {
    /// The map holding only `k ↦ v` (empty if `v` is bottom).
    pub fn single(k: K, v: V) -> Self {
        let mut m = BTreeMap::new();
        if !v.is_bottom() {
            m.insert(k, v);
        }
        DotMap(m)
    }

    /// Delta mutator of a nested map: applies the delta mutator `f` to the value at `k`.
    pub fn update<F>(&self, k: K, m: &mut DeltaContext<'_>, f: F) -> Result<DotMap<K, V>, Error>
    where
        F: FnOnce(&V, &mut DeltaContext<'_>) -> Result<V, Error>,
    {
        let bottom = V::default();
        let cur = self.0.get(&k).unwrap_or(&bottom);
        Ok(DotMap::single(k, f(cur, m)?))
    }

    /// Delta mutator of a nested map: removes `k` (observed-remove).
    pub fn remove(&self, k: &K, m: &mut DeltaContext<'_>) -> DotMap<K, V> {
        if let Some(v) = self.0.get(k) {
            m.observe_store(v);
        }
        DotMap::new()
    }

    /// Joins only the key `k` of `other` (the caller guarantees that `other_cc` covers no
    /// dot of any other key of `self`). O(log n): the fast path for applying a local delta.
    pub(crate) fn join_key(
        &mut self,
        cc: &CausalContext,
        k: &K,
        other: &Self,
        other_cc: &CausalContext,
    ) {
        let bottom = V::default();
        let theirs = other.0.get(k).unwrap_or(&bottom);
        match self.0.get_mut(k) {
            Some(v) => {
                v.join(cc, theirs, other_cc);
                if v.is_bottom() {
                    self.0.remove(k);
                }
            }
            None => {
                let mut v = V::default();
                v.join(cc, theirs, other_cc);
                if !v.is_bottom() {
                    self.0.insert(k.clone(), v);
                }
            }
        }
    }
}

impl<K: Ord + Clone + Debug, V: DotStore> DotStore for DotMap<K, V> {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn join(&mut self, cc: &CausalContext, other: &Self, other_cc: &CausalContext) {
        let bottom = V::default();
        if self.0.is_empty() {
            for (k, ov) in &other.0 {
                let mut v = V::default();
                v.join(cc, ov, other_cc);
                if !v.is_bottom() {
                    self.0.insert(k.clone(), v);
                }
            }
            return;
        }
        // One in-place walk over both sorted maps: keys only in `other` are collected and
        // inserted afterwards (there are few of them when replicas are close).
        let mut theirs = other.0.iter().peekable();
        let mut inserts: Vec<(K, V)> = Vec::new();
        let other_cc_empty = other_cc.is_empty();
        self.0.retain(|k, v| {
            while let Some((ok, ov)) = theirs.peek() {
                if *ok >= k {
                    break;
                }
                let mut n = V::default();
                n.join(cc, ov, other_cc);
                if !n.is_bottom() {
                    inserts.push(((*ok).clone(), n));
                }
                theirs.next();
            }
            match theirs.peek() {
                Some((ok, ov)) if *ok == k => {
                    if v != *ov {
                        v.join(cc, ov, other_cc);
                    }
                    theirs.next();
                }
                _ => {
                    if !other_cc_empty {
                        v.join(cc, &bottom, other_cc);
                    }
                }
            }
            !v.is_bottom()
        });
        for (ok, ov) in theirs {
            let mut n = V::default();
            n.join(cc, ov, other_cc);
            if !n.is_bottom() {
                inserts.push((ok.clone(), n));
            }
        }
        self.0.extend(inserts);
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        for v in self.0.values() {
            v.for_each_dot(f);
        }
    }

    fn validate_store(&self) -> Result<(), Error> {
        for (k, v) in &self.0 {
            if v.is_bottom() {
                return Err(Error::Malformed {
                    what: format!("dot map holds an empty value at key {k:?}"),
                });
            }
            v.validate_store()?;
        }
        Ok(())
    }
}

impl<K: Serialize, V: Serialize> Serialize for DotMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for DotMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<K, V>::deserialize(d).map(DotMap)
    }
}
