//! [`VectorClock`]: a sparse version vector with the happened-before partial order.

use crate::ReplicaId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;

/// A vector clock: a sparse map from replica to counter.
///
/// Stored as a vector of `(replica, counter)` sorted by replica with no zero counters, so
/// that the derived `Eq` and `Hash` agree with the clock's meaning and comparisons are one
/// linear merge-walk. For the 3–16 replicas typical of a deployment this beats a
/// `BTreeMap` (as in `crdts::VClock`) by a wide margin; see `benches/clocks.rs`.
///
/// `partial_cmp` is happened-before: `Some(Less)` iff `self` happened before `other`,
/// `None` iff the two are concurrent.
///
/// ```
/// use meridian_clocks::{ReplicaId, VectorClock};
/// let (a, b) = (ReplicaId(1), ReplicaId(2));
/// let mut x = VectorClock::default();
/// x.increment(a);
/// let mut y = x.clone();
/// y.increment(b);
/// assert!(x < y);
/// x.increment(a);
/// assert!(x.is_concurrent(&y));
/// x.merge(&y);
/// assert!(x > y);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VectorClock {
    /// Sorted by replica, strictly increasing, no zero counters.
    entries: Vec<(ReplicaId, u64)>,
}

impl VectorClock {
    /// An empty clock (every counter 0).
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn position(&self, r: ReplicaId) -> Result<usize, usize> {
        // Linear scan beats binary search at the sizes we expect.
        if self.entries.len() <= 16 {
            for (i, (id, _)) in self.entries.iter().enumerate() {
                match id.cmp(&r) {
                    Ordering::Less => continue,
                    Ordering::Equal => return Ok(i),
                    Ordering::Greater => return Err(i),
                }
            }
            Err(self.entries.len())
        } else {
            self.entries.binary_search_by(|(id, _)| id.cmp(&r))
        }
    }

    /// The counter of `r`, 0 if absent.
    #[inline]
    pub fn get(&self, r: ReplicaId) -> u64 {
        match self.position(r) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Advances the counter of `r` by one and returns the new counter (saturating).
    pub fn increment(&mut self, r: ReplicaId) -> u64 {
        match self.position(r) {
            Ok(i) => {
                let c = &mut self.entries[i].1;
                *c = c.saturating_add(1);
                *c
            }
            Err(i) => {
                self.entries.insert(i, (r, 1));
                1
            }
        }
    }

    /// Raises the counter of `r` to at least `counter` (the join with a single entry).
    #[inline]
    pub fn observe(&mut self, r: ReplicaId, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.position(r) {
            Ok(i) => {
                let c = &mut self.entries[i].1;
                *c = (*c).max(counter);
            }
            Err(i) => self.entries.insert(i, (r, counter)),
        }
    }

    /// The join: pointwise maximum.
    pub fn merge(&mut self, other: &VectorClock) {
        if other.entries.is_empty() {
            return;
        }
        let same_keys = self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.0 == b.0);
        if same_keys {
            for (a, b) in self.entries.iter_mut().zip(&other.entries) {
                a.1 = a.1.max(b.1);
            }
            return;
        }
        let mut out = Vec::with_capacity(self.entries.len() + other.entries.len());
        let (mut i, mut j) = (0, 0);
        let (xs, ys) = (&self.entries, &other.entries);
        while i < xs.len() && j < ys.len() {
            match xs[i].0.cmp(&ys[j].0) {
                Ordering::Less => {
                    out.push(xs[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    out.push(ys[j]);
                    j += 1;
                }
                Ordering::Equal => {
                    out.push((xs[i].0, xs[i].1.max(ys[j].1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&xs[i..]);
        out.extend_from_slice(&ys[j..]);
        self.entries = out;
    }

    /// True iff neither clock happened before the other and they differ.
    pub fn is_concurrent(&self, other: &VectorClock) -> bool {
        self.partial_cmp(other).is_none()
    }

    /// True iff every counter of `self` is at least the one in `other` (`self ≥ other`).
    pub fn dominates(&self, other: &VectorClock) -> bool {
        matches!(
            self.partial_cmp(other),
            Some(Ordering::Greater | Ordering::Equal)
        )
    }

    /// The non-zero entries, sorted by replica.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (ReplicaId, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Number of replicas with a non-zero counter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True iff every counter is 0.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl PartialOrd for VectorClock {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let (xs, ys) = (&self.entries, &other.entries);
        let (mut less, mut greater) = (false, false);
        let (mut i, mut j) = (0, 0);
        while i < xs.len() && j < ys.len() {
            match xs[i].0.cmp(&ys[j].0) {
                // Present in self only: self has a larger counter there.
                Ordering::Less => {
                    greater = true;
                    i += 1;
                }
                Ordering::Greater => {
                    less = true;
                    j += 1;
                }
                Ordering::Equal => {
                    match xs[i].1.cmp(&ys[j].1) {
                        Ordering::Less => less = true,
                        Ordering::Greater => greater = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
            if less && greater {
                return None;
            }
        }
        greater |= i < xs.len();
        less |= j < ys.len();
        match (less, greater) {
            (false, false) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (true, true) => None,
        }
    }
}

impl FromIterator<(ReplicaId, u64)> for VectorClock {
    fn from_iter<I: IntoIterator<Item = (ReplicaId, u64)>>(iter: I) -> Self {
        let mut v = VectorClock::default();
        for (r, c) in iter {
            v.observe(r, c);
        }
        v
    }
}

/// Encoded as a sequence of `(replica, counter)` pairs, sorted, without zeros.
impl Serialize for VectorClock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.entries)
    }
}

/// Decoding rejects unsorted or duplicate replicas and zero counters: the canonical form is
/// what makes `Eq` and `Hash` meaningful, and nothing we encode violates it.
impl<'de> Deserialize<'de> for VectorClock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<(ReplicaId, u64)>::deserialize(d)?;
        for w in entries.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err(serde::de::Error::custom(format!(
                    "vector clock entries not strictly sorted by replica: {} then {}",
                    w[0].0, w[1].0
                )));
            }
        }
        if let Some((r, _)) = entries.iter().find(|(_, c)| *c == 0) {
            return Err(serde::de::Error::custom(format!(
                "vector clock entry for {r} has counter 0"
            )));
        }
        Ok(VectorClock { entries })
    }
}
