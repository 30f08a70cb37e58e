//! Meridian: logical clocks, delta-state CRDTs, and a geo-replicated cart store.
//!
//! This root package re-exports the embeddable crates so that examples, benches and
//! integration tests can use one name:
//!
//! ```
//! use meridian::clocks::{LamportClock, ReplicaId};
//! let mut c = LamportClock::new(ReplicaId(1));
//! assert_eq!(c.tick().counter, 1);
//! ```
#![deny(missing_docs)]

pub use meridian_clocks as clocks;
pub use meridian_crdt as crdt;

/// The README's code examples, compiled and run as doc tests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
