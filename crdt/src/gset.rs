//! [`GSet`]: a grow-only set.

use crate::{Error, Lattice, Validate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A grow-only set: join is union.
///
/// ```
/// use meridian_crdt::{GSet, Lattice};
/// let mut a = GSet::new();
/// let delta = a.insert("x");
/// let mut b = GSet::new();
/// b.insert("y");
/// b.merge(&delta);
/// assert_eq!(b.iter().copied().collect::<Vec<_>>(), ["x", "y"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GSet<T: Ord> {
    items: BTreeSet<T>,
}

impl<T: Ord> Default for GSet<T> {
    fn default() -> Self {
        GSet {
            items: BTreeSet::new(),
        }
    }
}

impl<T: Ord + Clone> GSet<T> {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `x`; returns the delta (`{x}`).
    pub fn insert(&mut self, x: T) -> GSet<T> {
        self.items.insert(x.clone());
        let mut delta = GSet::new();
        delta.items.insert(x);
        delta
    }

    /// True iff `x` was ever inserted.
    pub fn contains(&self, x: &T) -> bool {
        self.items.contains(x)
    }

    /// The elements, sorted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.items.iter()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True iff the set is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<T: Ord + Clone> Lattice for GSet<T> {
    fn merge(&mut self, other: &Self) {
        if other.items.len() <= self.items.len() {
            for x in &other.items {
                if !self.items.contains(x) {
                    self.items.insert(x.clone());
                }
            }
        } else {
            self.items.extend(other.items.iter().cloned());
        }
    }
}

/// Every set is valid.
impl<T: Ord> Validate for GSet<T> {
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}
