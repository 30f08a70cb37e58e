//! [`MvRegister`]: a multi-value register that keeps every concurrent write.

use crate::dotstore::{validate_causal, DeltaContext, DotFun, DotStore};
use crate::{Error, Lattice, Validate};
use meridian_clocks::{CausalContext, ReplicaId};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// A multi-value register: a write replaces every value it has seen; concurrent writes are
/// all kept until a later write, which has seen them, replaces them.
///
/// A [`DotFun`] of values plus a causal context: no vector clock per value (as in
/// `crdts::MVReg`), one dot per concurrent value.
///
/// ```
/// use meridian_crdt::{Lattice, MvRegister};
/// use meridian_clocks::ReplicaId;
/// let mut a = MvRegister::new();
/// let mut b = MvRegister::new();
/// a.write(ReplicaId(1), "red")?;
/// b.write(ReplicaId(2), "blue")?;
/// a.merge(&b);
/// assert_eq!(a.read(), [&"blue", &"red"]);
/// a.write(ReplicaId(1), "green")?; // has seen both
/// assert_eq!(a.read(), [&"green"]);
/// # Ok::<(), meridian_crdt::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: Deserialize<'de> + Clone + Debug + Ord"
))]
pub struct MvRegister<T> {
    store: DotFun<T>,
    cc: CausalContext,
}

impl<T> Default for MvRegister<T> {
    fn default() -> Self {
        MvRegister {
            store: DotFun::new(),
            cc: CausalContext::new(),
        }
    }
}

impl<T: Clone + Debug + Ord> MvRegister<T> {
    /// The empty register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `v` on behalf of `r`, replacing every value seen; returns the delta.
    ///
    /// Fails with [`Error::DotsExhausted`], changing nothing, if `r` has no fresh dot left.
    pub fn write(&mut self, r: ReplicaId, v: T) -> Result<MvRegister<T>, Error> {
        let mut m = DeltaContext::new(&self.cc, r);
        let store = self.store.write(&mut m, v)?;
        let delta = MvRegister {
            store,
            cc: m.into_context(),
        };
        self.merge(&delta);
        Ok(delta)
    }

    /// The concurrent values, sorted (empty before the first write).
    pub fn read(&self) -> Vec<&T> {
        let mut v: Vec<&T> = self.store.entries().iter().map(|(_, x)| x).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The causal context: every write this replica has seen.
    pub fn context(&self) -> &CausalContext {
        &self.cc
    }
}

impl<T: Clone + Debug + Ord> Lattice for MvRegister<T> {
    fn merge(&mut self, other: &Self) {
        self.store.join(&self.cc, &other.store, &other.cc);
        self.cc.merge(&other.cc);
    }
}

impl<T: Clone + Debug + Ord> Validate for MvRegister<T> {
    fn validate(&self) -> Result<(), Error> {
        validate_causal(&self.store, &self.cc)
    }
}
