//! The cart CRDT the node stores: [`meridian_crdt::Cart`], re-exported.
//!
//! A node applies each local write with the cart's delta mutators (`add`, `set`, `remove`,
//! `clear`, and `snapshot` + `checkout`), stores the new state, and logs the returned
//! delta for replication. States read back from disk are validated
//! ([`meridian_crdt::wire::accept`]) before use.

pub use meridian_crdt::{Cart, Lattice, Snapshot, Validate};
