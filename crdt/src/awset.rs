//! [`AwSet`]: the add-wins observed-remove set, tombstone-free.

use crate::dotstore::{
    join_map, merge_context, validate_causal, DeltaContext, DotMap, DotSet, DotStore,
};
use crate::wire::DECODE_DOTS_MAX;
use crate::{Error, Lattice, Validate};
use meridian_clocks::{CausalContext, Dot, ReplicaId};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::marker::PhantomData;

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
/// x.add(a, "milk")?;
/// let mut y = x.clone();
/// y.remove(&"milk");   // y saw the first add …
/// x.add(a, "milk")?;   // … not this one
/// x.merge(&y);
/// y.merge(&x);
/// assert!(x.contains(&"milk") && x == y);
/// # Ok::<(), meridian_crdt::Error>(())
/// ```
///
/// # Encoding
///
/// Human-readable formats (JSON) get `{"store": {element: [dots]}, "cc": context}`. Binary
/// formats (bincode) get the context and then the elements *in dot order*, as runs of
/// consecutive counters of one replica: `[(replica, first_counter, [elements…])…]`. A set
/// built by a few replicas is a few runs, so the dots cost almost nothing and an element
/// costs its own encoding; `crdts::Orswot` spends a vector clock per element on top.
///
/// Integer-like elements ([`IntegerKey`]) can be sent smaller, as [`DeltaKeyed`]: the same
/// runs, each element encoded as its difference from the previous one (about a byte per
/// id for ids issued in sequence). That is an opt-in wrapper: this type's own encoding is
/// the one above, whatever `T` is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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
    ///
    /// Fails with [`Error::DotsExhausted`], changing nothing, if `r` has no fresh dot left.
    pub fn add(&mut self, r: ReplicaId, x: T) -> Result<AwSet<T>, Error> {
        let mut m = DeltaContext::new(&self.cc, r);
        let dots = match self.store.get(&x) {
            Some(cur) => cur.enable(&mut m)?,
            None => DotSet::default().enable(&mut m)?,
        };
        let delta = AwSet {
            store: DotMap::single(x, dots),
            cc: m.into_context(),
        };
        self.apply_local(&delta);
        Ok(delta)
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

/// The human-readable form.
#[derive(Serialize)]
struct PlainRef<'a, T> {
    store: &'a DotMap<T, DotSet>,
    cc: &'a CausalContext,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de> + Ord"))]
struct Plain<T> {
    store: DotMap<T, DotSet>,
    cc: CausalContext,
}

/// The binary form: the context, then runs of consecutive dots.
#[derive(Serialize)]
struct CompactRef<'a, T> {
    cc: &'a CausalContext,
    runs: Vec<(ReplicaId, u64, Vec<&'a T>)>,
}

#[derive(Deserialize)]
struct Compact<T> {
    cc: CausalContext,
    runs: Runs<T>,
}

/// One run: its replica, its first counter, and its elements, one per consecutive dot.
type Run<T> = (ReplicaId, u64, Vec<T>);

/// The runs of the binary form, decoded with at most [`DECODE_DOTS_MAX`] elements in all.
struct Runs<T>(Vec<Run<T>>);

fn too_many_dots<E: serde::de::Error>() -> E {
    E::custom(format_args!(
        "set runs hold more than DECODE_DOTS_MAX ({DECODE_DOTS_MAX}) dots"
    ))
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Runs<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RunsVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for RunsVisitor<T> {
            type Value = Runs<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of set runs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Runs<T>, A::Error> {
                let mut dots_left = DECODE_DOTS_MAX;
                let mut runs = Vec::new();
                while let Some(run) = seq.next_element_seed(RunSeed {
                    dots_left: &mut dots_left,
                    elements: PhantomData,
                })? {
                    runs.push(run);
                }
                Ok(Runs(runs))
            }
        }
        d.deserialize_seq(RunsVisitor(PhantomData))
    }
}

/// Decodes one run, charging its elements to the dots left.
struct RunSeed<'a, T> {
    dots_left: &'a mut usize,
    elements: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for RunSeed<'_, T> {
    type Value = Run<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Run<T>, D::Error> {
        d.deserialize_tuple(3, self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for RunSeed<'_, T> {
    type Value = Run<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a set run (replica, first counter, elements)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Run<T>, A::Error> {
        use serde::de::Error as _;
        let missing = |i| A::Error::invalid_length(i, &"a set run of 3 fields");
        let r = seq.next_element()?.ok_or_else(|| missing(0))?;
        let start = seq.next_element()?.ok_or_else(|| missing(1))?;
        let xs = seq
            .next_element_seed(ElementsSeed {
                dots_left: self.dots_left,
                elements: PhantomData,
            })?
            .ok_or_else(|| missing(2))?;
        Ok((r, start, xs))
    }
}

/// Decodes the elements of one run, refusing them past the dots left.
struct ElementsSeed<'a, T> {
    dots_left: &'a mut usize,
    elements: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for ElementsSeed<'_, T> {
    type Value = Vec<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ElementsSeed<'_, T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the elements of a set run")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // Refuse a claimed length at once: reading a zero-sized element costs no input.
        let claimed = seq.size_hint().unwrap_or(0);
        if claimed > *self.dots_left {
            return Err(too_many_dots());
        }
        let mut xs = Vec::with_capacity(claimed.min(4096));
        while let Some(x) = seq.next_element()? {
            if *self.dots_left == 0 {
                return Err(too_many_dots());
            }
            *self.dots_left -= 1;
            xs.push(x);
        }
        Ok(xs)
    }
}

impl<T: Serialize + Ord> Serialize for AwSet<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return PlainRef {
                store: &self.store,
                cc: &self.cc,
            }
            .serialize(s);
        }
        CompactRef {
            cc: &self.cc,
            runs: self.runs(),
        }
        .serialize(s)
    }
}

impl<T: Ord> AwSet<T> {
    /// The elements in dot order, as runs of consecutive counters of one replica.
    fn runs(&self) -> Vec<(ReplicaId, u64, Vec<&T>)> {
        let mut pairs: Vec<(Dot, &T)> = Vec::with_capacity(self.store.len());
        for (x, dots) in self.store.inner() {
            pairs.extend(dots.dots().iter().map(|d| (*d, x)));
        }
        pairs.sort_unstable_by_key(|p| p.0);
        let mut runs: Vec<(ReplicaId, u64, Vec<&T>)> = Vec::new();
        for (d, x) in pairs {
            match runs.last_mut() {
                // Same replica and sorted, so `d.counter >= *start`; no `start + len`, which
                // overflows for a run ending at counter u64::MAX.
                Some((r, start, xs))
                    if *r == d.replica && d.counter - *start == xs.len() as u64 =>
                {
                    xs.push(x)
                }
                _ => runs.push((d.replica, d.counter, vec![x])),
            }
        }
        runs
    }
}

/// Binary decoding rejects runs that are unsorted, overlapping, empty, start at counter 0,
/// run past `u64::MAX`, or hold more than [`DECODE_DOTS_MAX`] dots in all.
impl<'de, T: Deserialize<'de> + Ord> Deserialize<'de> for AwSet<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        if d.is_human_readable() {
            let p = Plain::<T>::deserialize(d)?;
            return Ok(AwSet {
                store: p.store,
                cc: p.cc,
            });
        }
        let c = Compact::<T>::deserialize(d)?;
        AwSet::from_runs(c.cc, c.runs.0).map_err(D::Error::custom)
    }
}

impl<T: Ord> AwSet<T> {
    /// The set of the binary form's runs, checked as its `Deserialize` documents.
    fn from_runs(cc: CausalContext, runs: Vec<Run<T>>) -> Result<AwSet<T>, &'static str> {
        let mut dots: BTreeMap<T, Vec<Dot>> = BTreeMap::new();
        let mut prev: Option<Dot> = None; // the last dot of the previous run
        for (r, start, xs) in runs {
            let len = xs.len() as u64;
            if start == 0 || len == 0 || prev.is_some_and(|p| Dot::new(r, start) <= p) {
                return Err(
                    "set runs must be non-empty, start at counter 1 or above, and be sorted without overlap",
                );
            }
            // The run's last dot is `start + len - 1`, which may be exactly u64::MAX.
            let last = start
                .checked_add(len - 1)
                .ok_or("set run runs past dot counter u64::MAX")?;
            prev = Some(Dot::new(r, last));
            for (i, x) in xs.into_iter().enumerate() {
                // Runs come in dot order, so each element's dots arrive sorted.
                dots.entry(x)
                    .or_default()
                    .push(Dot::new(r, start + i as u64));
            }
        }
        let store = dots
            .into_iter()
            .map(|(x, ds)| (x, DotSet::from_sorted(ds)))
            .collect();
        Ok(AwSet {
            store: DotMap::from_inner(store),
            cc,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The delta-keyed binary form, for integer-like elements.

/// An element type that opts into [`DeltaKeyed`], the smaller binary form of an
/// [`AwSet`]: an integer key of at most 64 bits, such as an id.
///
/// Implemented for the primitive integers; implement it for a newtype id to opt in. An
/// [`AwSet<T>`] itself keeps its one encoding whatever `T` is: the compact form is chosen
/// where the set is encoded, by wrapping it in [`DeltaKeyed`] (or with
/// `#[serde(with = "meridian_crdt::awset::delta_keyed")]` on a field).
///
/// ```
/// use meridian_crdt::awset::IntegerKey;
/// #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
/// struct ProductId(u32);
/// impl IntegerKey for ProductId {
///     const BITS: u32 = 32;
///     fn to_integer(&self) -> u64 {
///         u64::from(self.0)
///     }
///     fn from_integer(v: u64) -> Option<Self> {
///         u32::try_from(v).ok().map(ProductId)
///     }
/// }
/// assert_eq!(ProductId::from_integer(ProductId(7).to_integer()), Some(ProductId(7)));
/// ```
pub trait IntegerKey: Ord + Clone + Debug {
    /// The key's width in bits, 1 to 64. Deltas are taken modulo `2^BITS`, so that a delta
    /// never encodes longer than the key itself would (give or take the sign bit).
    const BITS: u32;
    /// The key as an integer below `2^BITS`; distinct keys give distinct integers. Keys
    /// that are close (ids issued in sequence) should give close integers: that is what
    /// the encoding saves on.
    fn to_integer(&self) -> u64;
    /// The key of `to_integer`'s result, and `None` for an integer no key gives (decoding
    /// rejects it).
    fn from_integer(v: u64) -> Option<Self>;
}

macro_rules! integer_key {
    ($($t:ty => $u:ty),* $(,)?) => {$(
        impl IntegerKey for $t {
            const BITS: u32 = <$u>::BITS;
            #[inline]
            fn to_integer(&self) -> u64 {
                // Two's complement for the signed types: injective, and close keys stay
                // close modulo 2^BITS.
                u64::from(*self as $u)
            }
            #[inline]
            fn from_integer(v: u64) -> Option<Self> {
                <$u>::try_from(v).ok().map(|u| u as $t)
            }
        }
    )*};
}

integer_key!(u8 => u8, u16 => u16, u32 => u32, u64 => u64, i8 => u8, i16 => u16, i32 => u32, i64 => u64);

fn key_mask<T: IntegerKey>() -> u64 {
    debug_assert!((1..=64).contains(&T::BITS));
    u64::MAX >> (64 - T::BITS.clamp(1, 64))
}

/// The zigzag code of the `BITS`-bit difference `key - prev`: small steps either way give
/// small codes, and every code is below `2^BITS`.
fn delta_code<T: IntegerKey>(prev: u64, key: u64) -> u64 {
    let mask = key_mask::<T>();
    let delta = key.wrapping_sub(prev) & mask;
    let half = mask / 2 + 1; // 2^(BITS-1)
    if delta < half {
        delta << 1
    } else {
        ((mask - delta) << 1) | 1
    }
}

/// Inverts [`delta_code`]; `None` for a code of `BITS + 1` bits or more (no key gives it).
fn from_delta_code<T: IntegerKey>(prev: u64, code: u64) -> Option<u64> {
    let mask = key_mask::<T>();
    if code > mask {
        return None;
    }
    let delta = if code & 1 == 0 {
        code >> 1
    } else {
        mask - (code >> 1)
    };
    Some(prev.wrapping_add(delta) & mask)
}

/// An [`AwSet`] of [`IntegerKey`] elements in the delta-keyed binary form: the same runs of
/// consecutive dots as the set's own binary form, but each element is encoded as the
/// difference from the previous element of its run (zigzag, modulo `2^BITS`), so a replica
/// that adds ids in sequence pays about one byte per element. Human-readable formats (JSON)
/// get the set's own form unchanged.
///
/// It is opt-in and the set's own encoding does not change: a peer decodes a `DeltaKeyed`
/// where it was sent one. Decoding is bounded and checked as the set's own form (at most
/// [`DECODE_DOTS_MAX`] dots, runs sorted without overlap), and rejects a code that no key
/// gives.
///
/// ```
/// use meridian_crdt::awset::DeltaKeyed;
/// use meridian_crdt::{wire, AwSet};
/// use meridian_clocks::ReplicaId;
/// let cfg = bincode::config::standard();
/// let mut set = AwSet::new();
/// for id in 1_000_000u64..1_001_000 {
///     set.add(ReplicaId(1), id)?;
/// }
/// let plain = bincode::serde::encode_to_vec(&set, cfg)?;
/// let compact = bincode::serde::encode_to_vec(DeltaKeyed(&set), cfg)?;
/// assert!(compact.len() * 4 < plain.len(), "{} vs {}", compact.len(), plain.len());
///
/// let limited = cfg.with_limit::<{ wire::DECODE_BYTES_MAX }>();
/// let (back, _): (DeltaKeyed<AwSet<u64>>, usize) =
///     bincode::serde::decode_from_slice(&compact, limited)?;
/// assert_eq!(wire::accept(back)?.0, set);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeltaKeyed<S>(pub S);

impl<T: IntegerKey + Serialize> Serialize for DeltaKeyed<&AwSet<T>> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        delta_keyed::serialize(self.0, s)
    }
}

impl<T: IntegerKey + Serialize> Serialize for DeltaKeyed<AwSet<T>> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        delta_keyed::serialize(&self.0, s)
    }
}

impl<'de, T: IntegerKey + Deserialize<'de>> Deserialize<'de> for DeltaKeyed<AwSet<T>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        delta_keyed::deserialize(d).map(DeltaKeyed)
    }
}

impl<T: IntegerKey> Validate for DeltaKeyed<AwSet<T>> {
    fn validate(&self) -> Result<(), Error> {
        self.0.validate()
    }
}

impl<T: IntegerKey> Lattice for DeltaKeyed<AwSet<T>> {
    fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0);
    }
}

/// [`DeltaKeyed`] as a serde `with` module, for a field of type `AwSet<T: IntegerKey>`:
/// `#[serde(with = "meridian_crdt::awset::delta_keyed")]`.
pub mod delta_keyed {
    use super::*;

    /// Encodes `set` in the delta-keyed binary form (its own form if human-readable).
    pub fn serialize<T, S>(set: &AwSet<T>, s: S) -> Result<S::Ok, S::Error>
    where
        T: IntegerKey + Serialize,
        S: Serializer,
    {
        if s.is_human_readable() {
            return set.serialize(s);
        }
        use serde::ser::Error as _;
        let mut runs = Vec::new();
        for (r, start, xs) in set.runs() {
            let mut prev = 0;
            let mut codes = Vec::with_capacity(xs.len());
            for x in xs {
                let key = x.to_integer();
                if key > key_mask::<T>() {
                    return Err(S::Error::custom(
                        "IntegerKey::to_integer returned an integer wider than BITS",
                    ));
                }
                codes.push(delta_code::<T>(prev, key));
                prev = key;
            }
            runs.push((r, start, codes));
        }
        CompactCodes { cc: &set.cc, runs }.serialize(s)
    }

    /// Decodes the delta-keyed binary form (the set's own form if human-readable).
    pub fn deserialize<'de, T, D>(d: D) -> Result<AwSet<T>, D::Error>
    where
        T: IntegerKey + Deserialize<'de>,
        D: Deserializer<'de>,
    {
        use serde::de::Error as _;
        if d.is_human_readable() {
            return AwSet::deserialize(d);
        }
        let c = Compact::<u64>::deserialize(d)?;
        let mut runs = Vec::with_capacity(c.runs.0.len());
        for (r, start, codes) in c.runs.0 {
            let mut prev = 0;
            let mut xs = Vec::with_capacity(codes.len());
            for code in codes {
                let key = from_delta_code::<T>(prev, code).ok_or_else(|| {
                    D::Error::custom("set run element code is wider than the key type")
                })?;
                xs.push(T::from_integer(key).ok_or_else(|| {
                    D::Error::custom("set run element is no key of the element type")
                })?);
                prev = key;
            }
            runs.push((r, start, xs));
        }
        AwSet::from_runs(c.cc, runs).map_err(D::Error::custom)
    }

    #[derive(Serialize)]
    struct CompactCodes<'a> {
        cc: &'a CausalContext,
        runs: Vec<(ReplicaId, u64, Vec<u64>)>,
    }
}
