//! The wire format: serde shapes, their version, and validation of what arrives.
//!
//! Every type of this crate derives serde, and that serde shape *is* the wire format. One
//! alternative form exists, opted into by wrapping: [`DeltaKeyed`](crate::DeltaKeyed), a
//! smaller binary form of an [`AwSet`](crate::AwSet) of integer-like elements.
//! The crate itself depends on nothing but serde, so it names no binary codec; Meridian
//! encodes with bincode 2 (`bincode::config::standard()`, varint integers) and uses JSON
//! for humans. Frame each encoding with [`FORMAT_VERSION`](crate::wire::FORMAT_VERSION) and pass every decoded remote
//! value through [`accept`](crate::wire::accept) before merging it:
//!
//! ```
//! use meridian_crdt::{wire, Cart};
//! use meridian_clocks::ReplicaId;
//! let cfg = bincode::config::standard();
//!
//! let mut cart = Cart::default();
//! let delta = cart.add(ReplicaId(1), "tea", 2)?;
//! let mut bytes = vec![wire::FORMAT_VERSION];
//! bytes.extend(bincode::serde::encode_to_vec(&delta, cfg)?);
//! assert!(bytes.len() <= 48);
//!
//! // Receiving side: version, decode, validate, and only then merge.
//! let (&version, body) = bytes.split_first().expect("non-empty");
//! assert_eq!(version, wire::FORMAT_VERSION);
//! let limited = cfg.with_limit::<{ wire::DECODE_BYTES_MAX }>();
//! let (decoded, _): (Cart, usize) = bincode::serde::decode_from_slice(body, limited)?;
//! let decoded = wire::accept(decoded)?;
//! assert_eq!(decoded, delta);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Decoding itself rejects what cannot be represented (unsorted dot sets, a vector clock
//! out of order, a bad timestamp in JSON); [`accept`](crate::wire::accept) rejects the rest (a dot outside its
//! context or held twice, a non-compact context, a counter above
//! [`DOT_COUNTER_MAX`](crate::DOT_COUNTER_MAX), a cart entry of quantity 0). Golden vectors in
//! `crdt/tests/wire.rs` pin the bincode and JSON forms of every type, so the format cannot
//! drift unnoticed: changing them is a deliberate, versioned act.

use crate::{Error, Validate};

/// The version of the serde shapes of this crate's types. Bump it on any change to them.
pub const FORMAT_VERSION: u8 = 1;

/// The most bytes one decoded value may claim (1 MiB): a cart of 1000 lines is far
/// smaller. Pass it to the decoder's limit.
pub const DECODE_BYTES_MAX: usize = 1 << 20;

/// The most dots one decoded [`AwSet`](crate::AwSet) may hold in its binary runs (2^20).
///
/// A run spells out its elements but not their dots, and an element of a zero-sized type
/// costs no bytes at all, so [`DECODE_BYTES_MAX`] cannot bound the dots: ten bytes could
/// claim millions. The decoder counts them instead and stops at this limit, which is the
/// number of one-byte elements that `DECODE_BYTES_MAX` admits.
pub const DECODE_DOTS_MAX: usize = 1 << 20;

/// Validates a value decoded from the network or disk, returning it if it is sound.
pub fn accept<T: Validate>(value: T) -> Result<T, Error> {
    value.validate()?;
    Ok(value)
}
