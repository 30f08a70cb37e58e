//! Delta-state CRDTs (placeholder until the crdt issue lands).
#![deny(missing_docs)]
