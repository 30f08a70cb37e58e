//! Delta-state CRDTs that converge under any delivery order, ship tiny deltas, and include
//! a shopping cart whose merge semantics are written down and tested against a model.
//!
//! Two regions edit a cart during a partition, then exchange deltas:
//!
//! ```
//! use meridian_crdt::{Cart, Lattice};
//! use meridian_clocks::{HlcTimestamp, ReplicaId};
//!
//! let (virginia, tokyo) = (ReplicaId(1), ReplicaId(2));
//! let mut v = Cart::default();
//! let mut t = Cart::default();
//!
//! // Both regions start from the same cart.
//! let d = v.add(virginia, "coffee", 1)?;
//! t.merge(&d);
//!
//! // Partition: each side edits, and each mutator returns a small delta.
//! let d1 = v.add(virginia, "coffee", 1)?;                              // one more coffee
//! let d2 = t.set(tokyo, HlcTimestamp::new(1_700_000_000_000, 0), "tea", 3)?;
//! let d3 = t.remove("coffee");                                          // saw only the first
//!
//! // Heal: deltas arrive in any order, even twice.
//! for d in [&d3, &d2, &d3] {
//!     v.merge(d);
//! }
//! t.merge(&d1);
//! assert_eq!(v, t);
//! // The unseen add survives the remove (add wins); the set stands.
//! assert_eq!(v.lines(), [("coffee".to_string(), 1), ("tea".to_string(), 3)]);
//! # Ok::<(), meridian_crdt::Error>(())
//! ```
//!
//! # Overview
//!
//! Every type is a join-semilattice ([`Lattice`]): `merge` is commutative, associative and
//! idempotent, and it cannot fail. Every mutator applies to `self` and returns its **delta**,
//! a value of the same type: merging the delta into any replica that has seen the mutator's
//! causal past has the same effect as the mutation, and deltas join into delta groups with
//! the same `merge` (Almeida, Shoker and Baquero, "Delta State Replicated Data Types",
//! 2018). States from elsewhere are checked with [`Validate`] before they are merged.
//!
//! | type | what it is | metadata |
//! |---|---|---|
//! | [`GCounter`] | grow-only counter | one count per replica |
//! | [`PNCounter`] | counter with increments and decrements | two [`GCounter`]s |
//! | [`GSet`] | grow-only set | none |
//! | [`LwwRegister`] | last writer wins, by (HLC timestamp, replica) | one timestamp |
//! | [`MvRegister`] | keeps concurrent writes | one dot per value + a context |
//! | [`AwSet`] | add-wins observed-remove set, tombstone-free | ~one dot per element + one context |
//! | [`OrMap`] | observed-remove map of causal values ([`CausalCounter`], [`DotSet`], [`DotFun`], nested [`DotMap`]) | one context for the whole map |
//! | [`Cart`] | sku → quantity, with the cart table of `docs/CONTRACT.md` ("Cart semantics") | one context + one dot per live add/set; [`Cart::compact`] folds a replica's causally stable adds of a line into one |
//!
//! Two fast paths are opt-in: [`OrMap::inc`] / [`OrMap::dec`] update a counter without
//! allocating (equal to `update` with [`CausalCounter::inc`], returning an inline
//! [`CounterDelta`]), and [`DeltaKeyed`] encodes an [`AwSet`] of integer-like elements
//! ([`IntegerKey`]) in about a byte per sequential id.
//!
//! The causal types ([`MvRegister`], [`AwSet`], [`OrMap`], [`Cart`]) are *dot stores* plus
//! a [`CausalContext`](meridian_clocks::CausalContext) from `meridian-clocks`: a removal is
//! the absence of a dot that the context has seen, so no tombstone is ever kept.
//!
//! # Examples
//!
//! Checkout removes exactly what it observed; a concurrent add elsewhere stays in the cart:
//!
//! ```
//! use meridian_crdt::{Cart, Lattice};
//! use meridian_clocks::ReplicaId;
//! let (a, b) = (ReplicaId(1), ReplicaId(2));
//! let mut here = Cart::default();
//! here.add(a, "book", 1)?;
//! let mut there = here.clone();
//! let order = here.snapshot();
//! here.checkout(&order);
//! there.add(b, "pen", 2)?;                      // concurrent with the checkout
//! there.merge(&here);
//! assert_eq!(order.lines(), [("book".to_string(), 1)]);
//! assert_eq!(there.lines(), [("pen".to_string(), 2)]);
//! # Ok::<(), meridian_crdt::Error>(())
//! ```
//!
//! Validating a remote state before merging it:
//!
//! ```
//! use meridian_crdt::{AwSet, Error, Validate};
//! let remote: AwSet<u32> = serde_json::from_str(
//!     r#"{"store":{"7":[{"replica":1,"counter":5}]},"cc":{"vv":[],"cloud":[]}}"#,
//! )?;
//! // Its element 7 carries a dot its own context has never seen.
//! assert!(matches!(remote.validate(), Err(Error::DotOutsideContext { .. })));
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! # Crate features
//!
//! None. The only dependencies are `meridian-clocks` and `serde`: no async runtime, no C
//! toolchain.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// The add-wins observed-remove set.
pub mod awset;
/// The shopping cart.
pub mod cart;
/// The causal counter, a dot-store counter for map values.
pub mod ccounter;
/// Dot stores, the building blocks of the causal types.
pub mod dotstore;
/// Validation errors.
pub mod error;
/// The grow-only counter.
pub mod gcounter;
/// The grow-only set.
pub mod gset;
/// The `Lattice` and `Validate` traits.
pub mod lattice;
/// The last-writer-wins register.
pub mod lww;
/// The multi-value register.
pub mod mvreg;
/// The observed-remove map.
pub mod ormap;
/// The positive-negative counter.
pub mod pncounter;
/// The wire format and validation of remote input.
pub mod wire;

pub use awset::{AwSet, DeltaKeyed, IntegerKey};
pub use cart::{Cart, Entry, Snapshot};
pub use ccounter::CausalCounter;
pub use dotstore::{DeltaContext, DotFun, DotMap, DotSet, DotStore, DOT_COUNTER_MAX};
pub use error::Error;
pub use gcounter::GCounter;
pub use gset::GSet;
pub use lattice::{Lattice, Validate};
pub use lww::LwwRegister;
pub use mvreg::MvRegister;
pub use ormap::{CounterDelta, OrMap};
pub use pncounter::PNCounter;
