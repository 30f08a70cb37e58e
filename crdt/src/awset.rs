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
        CompactRef { cc: &self.cc, runs }.serialize(s)
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
        let mut dots: BTreeMap<T, Vec<Dot>> = BTreeMap::new();
        let mut prev: Option<Dot> = None; // the last dot of the previous run
        for (r, start, xs) in c.runs.0 {
            let len = xs.len() as u64;
            if start == 0 || len == 0 || prev.is_some_and(|p| Dot::new(r, start) <= p) {
                return Err(D::Error::custom(
                    "set runs must be non-empty, start at counter 1 or above, and be sorted without overlap",
                ));
            }
            // The run's last dot is `start + len - 1`, which may be exactly u64::MAX.
            let last = start
                .checked_add(len - 1)
                .ok_or_else(|| D::Error::custom("set run runs past dot counter u64::MAX"))?;
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
            cc: c.cc,
        })
    }
}
