//! The sans-IO core of Meridian's cart store: the write path, the on-disk formats and the
//! storage trait, with no runtime, sockets, threads, system clock or RocksDB.
//!
//! This is to `meridian-cart-store` what quinn-proto is to quinn: the node binary is a thin
//! driver (HTTP, a writer thread, RocksDB) around it, and the tests and fuzzers drive it
//! directly. `cargo xtask test` checks that no tokio, quinn, rustls or rocksdb ever enters
//! its dependency graph.
//!
//! ```
//! use meridian_cart_store_core::{Durability, MemStorage, Node, NodeConfig, WriteRequest};
//! use meridian_clocks::{ManualClock, ReplicaId};
//!
//! let storage = MemStorage::new();
//! let clock = ManualClock::new(1_700_000_000_000);
//! let mut node = Node::open(storage.clone(), clock.clone(), NodeConfig::new(ReplicaId(1)))?;
//!
//! node.apply(WriteRequest::add("alice", "book", 2)?, Durability::Fsync)?;
//! node.apply(WriteRequest::add("alice", "book", 1)?, Durability::Process)?; // not fsynced
//! assert_eq!(node.read("alice")?.lines[0].quantity, 3);
//!
//! // After a power failure only fsynced writes remain, and the node restarts on them.
//! let node = Node::open(storage.crash(), clock, NodeConfig::new(ReplicaId(1)))?;
//! assert_eq!(node.read("alice")?.lines[0].quantity, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//!
//! | module | job |
//! |---|---|
//! | [`validate`] | parse client input into types that cannot hold a bad value ([`CartId`], [`Sku`], [`Quantity`], …) |
//! | [`cart`] | the cart CRDT the node stores |
//! | [`codec`] | every on-disk format, versioned, with golden vectors |
//! | [`digest`] | the Merkle tree over every stored cart that anti-entropy compares |
//! | [`storage`] | the [`Storage`] trait and [`MemStorage`], which models crashes |
//! | [`token`] | the `Causal-Token` format |
//! | [`node`] | the write path: validate, apply, encode, one atomic batch |
//! | [`replication`] | [`Replica`]: the node plus per-peer sync state; the protocol and its frames; anti-entropy; causal-stability compaction |
//!
//! The contract this implements (cart semantics, HTTP API, limits) is `docs/CONTRACT.md` in
//! the repository.
//!
//! # Crate features
//!
//! - `openapi`: derives `utoipa::ToSchema` for the API views, so the node can publish its
//!   OpenAPI document.
#![deny(missing_docs)]

pub mod cart;
pub mod codec;
pub mod digest;
pub mod node;
pub mod replication;
pub mod storage;
pub mod token;
pub mod validate;

pub use cart::Cart;
pub use node::{
    read_cart, read_log, read_log_raw, Answer, Applied, CartView, Committed, Idempotency, LineView,
    Node, NodeConfig, NodeError, Op, OpenError, OrderView, RemoteEntry, RemoteOutcome, RemoteState,
    StateOutcome, WriteRequest,
};
pub use replication::{Replica, ReplicationConfig, Transmit};
pub use storage::{Batch, Cf, Durability, MemStorage, Storage, StorageError, StorageErrorKind};
pub use token::CausalToken;
pub use validate::{CartId, IdempotencyKey, Increment, InputError, Quantity, Sku};
