//! [`LwwRegister`]: a last-writer-wins register ordered by HLC timestamps.

use crate::{Error, Lattice, Validate};
use meridian_clocks::{HlcTimestamp, ReplicaId};
use serde::{Deserialize, Serialize};

/// A last-writer-wins register. Writes are ordered by `(HLC timestamp, replica id)`: the
/// same winner everywhere, and a write that causally follows another (through the HLC) wins.
///
/// Two writes with the same timestamp *and* replica cannot come from a correct replica (its
/// HLC is strictly monotonic); should they meet anyway, the larger value wins, so `merge`
/// stays a deterministic join. That is why `T: Ord`.
///
/// ```
/// use meridian_crdt::{Lattice, LwwRegister};
/// use meridian_clocks::{HlcTimestamp, ReplicaId};
/// let mut a = LwwRegister::new();
/// a.set(ReplicaId(1), HlcTimestamp::new(1_000, 0), "old");
/// let mut b = LwwRegister::new();
/// b.set(ReplicaId(2), HlcTimestamp::new(2_000, 0), "new");
/// a.merge(&b);
/// assert_eq!(a.get(), Some(&"new"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LwwRegister<T> {
    /// `(timestamp, writer, value)`; `None` before the first write.
    write: Option<(HlcTimestamp, ReplicaId, T)>,
}

impl<T> Default for LwwRegister<T> {
    fn default() -> Self {
        LwwRegister { write: None }
    }
}

impl<T: Ord + Clone> LwwRegister<T> {
    /// The empty register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `v` at `(ts, r)`; returns the delta (the write itself). A write older than the
    /// current one changes nothing locally, and its delta loses wherever the newer write
    /// has arrived.
    pub fn set(&mut self, r: ReplicaId, ts: HlcTimestamp, v: T) -> LwwRegister<T> {
        let delta = LwwRegister {
            write: Some((ts, r, v)),
        };
        self.merge(&delta);
        delta
    }

    /// The current value.
    pub fn get(&self) -> Option<&T> {
        self.write.as_ref().map(|w| &w.2)
    }

    /// The timestamp and writer of the current value.
    pub fn stamp(&self) -> Option<(HlcTimestamp, ReplicaId)> {
        self.write.as_ref().map(|w| (w.0, w.1))
    }
}

impl<T: Ord + Clone> Lattice for LwwRegister<T> {
    fn merge(&mut self, other: &Self) {
        if let Some(theirs) = &other.write {
            let replace = match &self.write {
                None => true,
                Some(mine) => (theirs.0, theirs.1, &theirs.2) > (mine.0, mine.1, &mine.2),
            };
            if replace {
                self.write = Some(theirs.clone());
            }
        }
    }
}

/// Every register is valid.
impl<T> Validate for LwwRegister<T> {
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}
