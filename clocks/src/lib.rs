//! Logical clocks for replicated systems: Lamport clocks, vector clocks, dots and causal
//! contexts, and hybrid logical clocks (HLC) with bounded drift.
//!
//! Physical clocks drift, get stepped backwards by NTP, and disagree between regions by
//! hundreds of milliseconds, so "later wall-clock time" is not "happened after". This crate
//! gives the standard fixes, small and fast enough to stamp every message:
//!
//! ```
//! use meridian_clocks::{Hlc, HlcTimestamp, ManualClock, ReplicaId, VectorClock};
//! use std::time::Duration;
//!
//! // Two regions whose wall clocks disagree: tokyo's runs 300 ms behind.
//! let virginia_wall = ManualClock::new(1_700_000_000_000);
//! let tokyo_wall = ManualClock::new(1_700_000_000_000 - 300);
//! let virginia = Hlc::new(virginia_wall, Duration::from_millis(500));
//! let tokyo = Hlc::new(tokyo_wall, Duration::from_millis(500));
//!
//! // Virginia sends a message; tokyo receives it, then acts.
//! let sent = virginia.now();
//! tokyo.update(sent)?;
//! let reply = tokyo.now();
//! // By wall clock the reply would be 300 ms *before* the message that caused it.
//! // By HLC it is after, and it still reads as (almost) physical time.
//! assert!(reply > sent);
//! assert_eq!(reply.physical_ms(), sent.physical_ms());
//!
//! // Vector clocks tell concurrent events apart from ordered ones.
//! let (a, b) = (ReplicaId(1), ReplicaId(2));
//! let mut x = VectorClock::new();
//! x.increment(a);
//! let mut y = VectorClock::new();
//! y.increment(b);
//! assert!(x.is_concurrent(&y));
//! # Ok::<(), meridian_clocks::ClockError>(())
//! ```
//!
//! # Overview
//!
//! | type | what it orders | size on the wire |
//! |---|---|---|
//! | [`LamportClock`] / [`LamportTimestamp`] | a total order extending happened-before; cannot see concurrency | 2 integers |
//! | [`VectorClock`] | happened-before exactly, and concurrency | one entry per replica |
//! | [`Dot`] / [`CausalContext`] | names single events; the set of events seen (for delta CRDTs) | prefix per replica + out-of-order dots |
//! | [`Hlc`] / [`HlcTimestamp`] | a total order extending happened-before, within `max_offset` of physical time | one `u64` |
//!
//! Physical time comes from a [`PhysicalClock`]: [`SystemClock`] in production (or, opted
//! into on Linux, `CoarseSystemClock`: a few nanoseconds a read, one kernel tick of
//! resolution), [`ManualClock`] in tests, [`DriftingClock`] in simulations and the
//! examples.
//!
//! # Examples
//!
//! Restarting a node without ever issuing a timestamp twice: persist [`Hlc::last`] with the
//! data it stamped, and resume from it.
//!
//! ```
//! use meridian_clocks::{ClockError, Hlc, ManualClock};
//! use std::time::Duration;
//!
//! let wall = ManualClock::new(10_000);
//! let before = Hlc::new(wall.clone(), Duration::from_millis(500));
//! let bound = before.now();                // persisted alongside the write it stamped
//! wall.set(9_800);                         // the machine restarts with its clock 200 ms back
//! let after = Hlc::resume(wall.clone(), Duration::from_millis(500), bound)?;
//! assert!(after.now() > bound);
//!
//! wall.set(6_000);                         // 4 s back: refuse, naming the gap
//! let err = Hlc::resume(wall, Duration::from_millis(500), bound).unwrap_err();
//! assert!(matches!(err, ClockError::BoundAhead { .. }));
//! assert!(err.to_string().contains("4000 ms ahead"));
//! # Ok::<(), ClockError>(())
//! ```
//!
//! # Crate features
//!
//! None. The dependencies are `serde` and, on Linux, `rustix` (with its libc backend), through
//! which [`SystemClock`] and `CoarseSystemClock` call libc's `clock_gettime` (so that
//! libfaketime still fakes them); the crate needs no async runtime and no C toolchain.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// Causal contexts and the dots they contain.
pub mod dot;
/// Operating errors.
pub mod error;
/// Hybrid logical clocks.
pub mod hlc;
/// Lamport clocks.
pub mod lamport;
/// Physical time sources.
pub mod physical;
/// Replica identities.
pub mod replica;
/// Vector clocks.
pub mod vclock;

pub use dot::{CausalContext, Dot, DotsExhausted};
pub use error::ClockError;
pub use hlc::{Hlc, HlcTimestamp, ParseTimestampError, DEFAULT_MAX_OFFSET};
pub use lamport::{LamportClock, LamportTimestamp};
#[cfg(target_os = "linux")]
pub use physical::CoarseSystemClock;
pub use physical::{DriftingClock, ManualClock, PhysicalClock, SystemClock};
pub use replica::ReplicaId;
pub use vclock::VectorClock;
