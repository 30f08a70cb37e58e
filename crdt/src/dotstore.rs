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

/// A join edits a dot store in place, entry by entry, when the other side holds at most this
/// many entries: the common case of merging a delta (one fresh dot, a few under
/// concurrency). Each insertion shifts the vector, so past a few a single merging pass wins.
const IN_PLACE_ENTRIES_MAX: usize = 4;

/// [`merge_context`] inserts a context's dots one by one when it is a cloud of at most this
/// many dots (a delta's usual context); beyond that, one `CausalContext::merge` is cheaper.
const CONTEXT_INSERTS_MAX: usize = 8;

/// [`join_map`] joins key by key when the other side has at most this many keys: the shape
/// of a delta. A state with more keys gets the one-pass walk over both maps.
const SMALL_DELTA_KEYS_MAX: usize = 8;

/// How many dots of a delta's context [`join_map`] will enumerate beyond the dots at the
/// delta's own keys (its fresh dots, say) before it gives up on the key-by-key join.
const SMALL_DELTA_EXTRA_DOTS_MAX: u64 = 32;

/// Merges `other` into `cc`. A delta's context is usually a few cloud dots: inserting them
/// one by one extends the prefix in place, without `CausalContext::merge`'s cloud rebuild.
pub(crate) fn merge_context(cc: &mut CausalContext, other: &CausalContext) {
    if other.version_vector().is_empty() && other.cloud().len() <= CONTEXT_INSERTS_MAX {
        for d in other.cloud() {
            cc.insert(d);
        }
    } else {
        cc.merge(other);
    }
}

/// The number of dots in `cc`, saturating.
fn context_len(cc: &CausalContext) -> u64 {
    let prefix = cc
        .version_vector()
        .iter()
        .fold(0u64, |n, (_, c)| n.saturating_add(c));
    prefix.saturating_add(cc.cloud().len() as u64)
}

/// Counts one dot comparison of [`covers_only_its_keys`], so that a unit test can bound
/// the work of the small-delta check. Compiled out of non-test builds.
#[inline]
fn count_comparison() {
    #[cfg(test)]
    tests::COMPARISONS.with(|n| n.set(n.get() + 1));
}

/// True iff every dot of `other_cc` that `cc` has seen sits in `store` at one of `other`'s
/// keys: then `other_cc` can drop nothing at `store`'s other keys, and joining only
/// `other`'s keys is the whole join.
///
/// Only `store`'s own dots count. A dot that `cc` has seen but `store` holds nowhere at
/// `other`'s keys may sit under another key of `store` (two states that each hold one dot
/// under a different key are each valid, so only the join can meet them), or may have
/// been removed; telling these apart needs a walk of `store`, so both take the general
/// join. That keeps the fast path equal to the general join on *every* pair of valid
/// states, hostile ones included.
///
/// Work: O((m + c) log m) for the m dots at `other`'s keys and the c dots of `other_cc`,
/// and it gives up (false) without enumerating `other_cc` if c exceeds
/// m + [`SMALL_DELTA_EXTRA_DOTS_MAX`]. A `set` on a line of 40,000 dots observes them all,
/// so its context is that large, but so is the line it touches.
fn covers_only_its_keys<K: Ord + Clone + Debug, V: DotStore>(
    store: &DotMap<K, V>,
    cc: &CausalContext,
    other: &DotMap<K, V>,
    other_cc: &CausalContext,
) -> bool {
    let mut local = Vec::new();
    for (k, _) in other.iter() {
        if let Some(mine) = store.get(k) {
            mine.for_each_dot(&mut |d| local.push(d));
        }
    }
    if context_len(other_cc) > (local.len() as u64).saturating_add(SMALL_DELTA_EXTRA_DOTS_MAX) {
        return false;
    }
    local.sort_unstable_by(|a, b| {
        count_comparison();
        a.cmp(b)
    });
    let at_its_keys = |d: Dot| {
        !cc.contains(&d)
            || local
                .binary_search_by(|x| {
                    count_comparison();
                    x.cmp(&d)
                })
                .is_ok()
    };
    other_cc
        .version_vector()
        .iter()
        .all(|(r, c)| (1..=c).all(|i| at_its_keys(Dot::new(r, i))))
        && other_cc.cloud().all(at_its_keys)
}

/// The causal join of two dot maps, `(store, cc) ⊔ (other, other_cc)`.
///
/// When `other` is a small delta whose context can only cover dots at `other`'s own keys
/// ([`covers_only_its_keys`]), only those keys are joined: O(k log n) instead of a walk
/// over `store`. This relies on the invariant that one dot names one event, so it sits
/// under one key; [`Validate`](crate::Validate) rejects states that break it.
pub(crate) fn join_map<K: Ord + Clone + Debug, V: DotStore>(
    store: &mut DotMap<K, V>,
    cc: &CausalContext,
    other: &DotMap<K, V>,
    other_cc: &CausalContext,
) {
    if other.len() <= SMALL_DELTA_KEYS_MAX && covers_only_its_keys(store, cc, other, other_cc) {
        for k in other.0.keys() {
            store.join_key(cc, k, other, other_cc);
        }
        return;
    }
    store.join(cc, other, other_cc);
}

/// An entry of a sorted dot store: a bare dot ([`DotSet`]) or a dot with its payload
/// ([`DotFun`]).
trait DotEntry: Clone + PartialEq {
    fn dot(&self) -> Dot;
    /// Joins the payload another replica holds for the same dot. One dot names one event,
    /// so the payloads agree; if malformed input disagrees, the larger wins, which keeps
    /// the join a lattice.
    fn join_payload(&mut self, other: &Self);
}

impl DotEntry for Dot {
    fn dot(&self) -> Dot {
        *self
    }
    fn join_payload(&mut self, _: &Self) {}
}

impl<V: Clone + Ord> DotEntry for (Dot, V) {
    fn dot(&self) -> Dot {
        self.0
    }
    fn join_payload(&mut self, other: &Self) {
        if other.1 > self.1 {
            self.1 = other.1.clone();
        }
    }
}

/// The causal join of two entry vectors sorted by dot, written once for [`DotSet`] and
/// [`DotFun`]: keeps each entry both hold, and each entry one holds that the other side's
/// context has not seen.
fn join_entries<E: DotEntry>(
    a: &mut Vec<E>,
    cc: &CausalContext,
    b: &[E],
    other_cc: &CausalContext,
) {
    if a[..] == *b {
        return;
    }
    if b.is_empty() {
        a.retain(|e| !other_cc.contains(&e.dot()));
        return;
    }
    if a.is_empty() {
        a.extend(b.iter().filter(|e| !cc.contains(&e.dot())).cloned());
        return;
    }
    let find = |v: &[E], d: Dot| v.binary_search_by(|e| e.dot().cmp(&d));
    if b.len() <= IN_PLACE_ENTRIES_MAX {
        a.retain(|e| !other_cc.contains(&e.dot()) || find(b, e.dot()).is_ok());
        for e in b {
            match find(a, e.dot()) {
                Ok(i) => a[i].join_payload(e),
                Err(i) => {
                    if !cc.contains(&e.dot()) {
                        a.insert(i, e.clone());
                    }
                }
            }
        }
        return;
    }
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let mut xs = std::mem::take(a).into_iter().peekable();
    let mut ys = b.iter().peekable();
    loop {
        let ord = match (xs.peek(), ys.peek()) {
            (Some(x), Some(y)) => x.dot().cmp(&y.dot()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        match ord {
            Ordering::Less => {
                if let Some(x) = xs.next().filter(|x| !other_cc.contains(&x.dot())) {
                    out.push(x);
                }
            }
            Ordering::Greater => {
                if let Some(y) = ys.next().filter(|y| !cc.contains(&y.dot())) {
                    out.push(y.clone());
                }
            }
            Ordering::Equal => {
                if let (Some(mut x), Some(y)) = (xs.next(), ys.next()) {
                    x.join_payload(y);
                    out.push(x);
                }
            }
        }
    }
    *a = out;
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
        join_entries(&mut self.0, cc, &other.0, other_cc);
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

    /// From entries already strictly sorted by dot (the caller checks).
    pub(crate) fn from_sorted(v: Vec<(Dot, V)>) -> Self {
        debug_assert!(strictly_sorted(&v, |e| e.0));
        DotFun(v)
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
        join_entries(&mut self.0, cc, &other.0, other_cc);
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::collections::BTreeSet;

    thread_local! {
        /// Dot comparisons made by `covers_only_its_keys` on this thread.
        pub(crate) static COMPARISONS: Cell<u64> = const { Cell::new(0) };
    }

    // -----------------------------------------------------------------------------------
    // The fast paths against the textbook join, on random states.

    /// Dots `(replica 1..=3, counter 1..=12)`, numbered 0..36.
    const UNIVERSE: usize = 36;

    fn dot(i: usize) -> Dot {
        Dot::new(ReplicaId(i as u64 / 12 + 1), i as u64 % 12 + 1)
    }

    /// A random state over a fixed set of events: each dot has one key and one payload
    /// (one dot names one event), the context is any set of dots, and the store any subset
    /// of the context.
    #[derive(Clone, Debug)]
    struct State {
        context: BTreeSet<usize>,
        store: BTreeSet<usize>,
    }

    fn arb_state() -> impl Strategy<Value = State> {
        (
            proptest::collection::btree_set(0..UNIVERSE, 0..UNIVERSE),
            proptest::collection::vec(any::<bool>(), UNIVERSE),
        )
            .prop_map(|(context, keep)| State {
                store: context.iter().copied().filter(|&i| keep[i]).collect(),
                context,
            })
    }

    /// A delta-shaped state: its context covers only dots at the keys `keys` (the keys it
    /// touches), so the key-by-key join applies to it.
    fn arb_delta(events: &[(u8, u8)], keys: &BTreeSet<u8>, s: State) -> State {
        let at = |i: &usize| keys.contains(&events[*i].0);
        State {
            context: s.context.iter().copied().filter(at).collect(),
            store: s.store.iter().copied().filter(at).collect(),
        }
    }

    fn context(s: &State) -> CausalContext {
        let mut cc = CausalContext::new();
        s.context.iter().for_each(|&i| cc.insert(dot(i)));
        cc
    }

    fn dot_fun_map(events: &[(u8, u8)], s: &State) -> DotMap<u8, DotFun<u8>> {
        let mut m: BTreeMap<u8, Vec<(Dot, u8)>> = BTreeMap::new();
        for &i in &s.store {
            m.entry(events[i].0)
                .or_default()
                .push((dot(i), events[i].1));
        }
        let mut m: BTreeMap<u8, DotFun<u8>> = m
            .into_iter()
            .map(|(k, mut v)| {
                (k, {
                    v.sort();
                    DotFun(v)
                })
            })
            .collect();
        m.retain(|_, v| !v.is_bottom());
        DotMap(m)
    }

    fn dot_set_map(events: &[(u8, u8)], s: &State) -> DotMap<u8, DotSet> {
        let m = dot_fun_map(events, s);
        DotMap(
            m.0.into_iter()
                .map(|(k, v)| (k, v.0.iter().map(|(d, _)| *d).collect()))
                .collect(),
        )
    }

    /// The textbook join of Almeida et al.: `(s ∩ s') ∪ (s \ c') ∪ (s' \ c)`.
    #[allow(clippy::nonminimal_bool, reason = "written as in the paper")]
    fn reference(a: &State, b: &State) -> State {
        State {
            context: a.context.union(&b.context).copied().collect(),
            store: (0..UNIVERSE)
                .filter(|i| {
                    let (x, y) = (a.store.contains(i), b.store.contains(i));
                    (x && y) || (x && !b.context.contains(i)) || (y && !a.context.contains(i))
                })
                .collect(),
        }
    }

    fn check_joins(events: &[(u8, u8)], a: &State, b: &State) -> Result<(), TestCaseError> {
        let (cc_a, cc_b) = (context(a), context(b));
        let want = reference(a, b);
        let want_fun = dot_fun_map(events, &want);
        let want_set = dot_set_map(events, &want);

        // join_map: the key-by-key path when it applies, else the general walk.
        let mut fun = dot_fun_map(events, a);
        join_map(&mut fun, &cc_a, &dot_fun_map(events, b), &cc_b);
        prop_assert_eq!(&fun, &want_fun, "join_map of dot functions");
        let mut set = dot_set_map(events, a);
        join_map(&mut set, &cc_a, &dot_set_map(events, b), &cc_b);
        prop_assert_eq!(&set, &want_set, "join_map of dot sets");

        // The general walk alone (its values take the in-place, empty and two-pointer
        // paths of `join_entries`, depending on their sizes).
        let mut fun = dot_fun_map(events, a);
        fun.join(&cc_a, &dot_fun_map(events, b), &cc_b);
        prop_assert_eq!(&fun, &want_fun, "general join of dot functions");
        let mut set = dot_set_map(events, a);
        set.join(&cc_a, &dot_set_map(events, b), &cc_b);
        prop_assert_eq!(&set, &want_set, "general join of dot sets");

        // The contexts, merged by insertion or by `CausalContext::merge`.
        let mut cc = cc_a.clone();
        merge_context(&mut cc, &cc_b);
        prop_assert_eq!(cc, context(&want));
        Ok(())
    }

    proptest! {
        #[test]
        fn fast_paths_agree_with_the_textbook_join_on_random_states(
            events in proptest::collection::vec((0u8..4, 0u8..3), UNIVERSE),
            a in arb_state(),
            b in arb_state(),
        ) {
            check_joins(&events, &a, &b)?;
            check_joins(&events, &b, &a)?;
        }

        #[test]
        fn fast_paths_agree_with_the_textbook_join_on_deltas(
            events in proptest::collection::vec((0u8..4, 0u8..3), UNIVERSE),
            keys in proptest::collection::btree_set(0u8..4, 1..3),
            a in arb_state(),
            b in arb_state(),
        ) {
            let delta = arb_delta(&events, &keys, b);
            // Not every such delta passes `covers_only_its_keys` (a key it touches may be
            // absent from its store), but the ones that do take the key-by-key join.
            check_joins(&events, &a, &delta)?;
            check_joins(&events, &delta, &a)?;
        }
    }
}
