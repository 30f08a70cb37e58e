//! [`ReplicaId`]: the identity of a replica or node.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of a replica (a node, a region, a process).
///
/// Ids are chosen by the operator (`node_id` in the cart-store config) and are never reused:
/// two replicas with one id would issue the same [`Dot`](crate::Dot)s and silently corrupt
/// every CRDT built on them.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ReplicaId(pub u64);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl From<u64> for ReplicaId {
    fn from(v: u64) -> Self {
        ReplicaId(v)
    }
}
