//! One region of Meridian's shopping-cart service: durable storage, the write path, and an
//! HTTP API, in a single `cart-store` binary.
//!
//! Every region accepts writes. A write is validated, applied to the cart CRDT, and
//! committed — new cart state, its delta in the outgoing log, the idempotency record and
//! the HLC bound — as **one** atomic storage batch before it is acknowledged. The write
//! path ([`Node`]) is sans-IO: it has no runtime, sockets or threads, so it runs the same
//! over RocksDB in production and over [`MemStorage`] (which models crashes) in tests.
//!
//! ```
//! use meridian_cart_store::{MemStorage, Node, NodeConfig, Op, WriteRequest};
//! use meridian_clocks::{ManualClock, ReplicaId};
//!
//! let storage = MemStorage::new();
//! let clock = ManualClock::new(1_700_000_000_000);
//! let mut node = Node::open(storage.clone(), clock.clone(), NodeConfig::new(ReplicaId(1)))?;
//!
//! let add = |sku: &str, quantity| WriteRequest {
//!     cart: "alice".into(),
//!     op: Op::Add { sku: sku.into(), quantity },
//!     idempotency: None,
//! };
//! node.apply(add("book", 2), true)?;
//! node.apply(add("book", 1), false)?; // not synced: a power failure loses it
//! assert_eq!(node.read("alice")?.lines[0].quantity, 3);
//!
//! // After a crash only synced writes remain, and the node restarts on them.
//! let node = Node::open(storage.crash(), clock, NodeConfig::new(ReplicaId(1)))?;
//! assert_eq!(node.read("alice")?.lines[0].quantity, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//!
//! | module | job |
//! |---|---|
//! | [`config`] | the TOML config and its defaults |
//! | [`validate`] | id, sku, quantity and idempotency-key syntax |
//! | [`cart`] | the cart CRDT the node stores |
//! | [`codec`] | every on-disk format, versioned, with golden vectors |
//! | [`storage`] | the [`Storage`] trait, [`RocksStorage`] and [`MemStorage`] |
//! | [`token`] | the `Causal-Token` format |
//! | [`node`] | the sans-IO write path |
//! | [`server`] | the HTTP driver: axum routes, one writer thread, metrics, shutdown |
//! | [`certs`] | the development CA of `cart-store certs` |
//! | [`load`] | the load generator of `cart-store load` |
//!
//! # Durability
//!
//! All writes go through one writer thread that drains up to `write_batch_max` queued
//! requests and commits them as one batch. With `durability = "process"` (the default) the
//! batch is in RocksDB's WAL (not fsynced) before any of them is acknowledged, so
//! `kill -9` loses nothing; with `durability = "fsync"` the batch is fsynced, so
//! concurrent requests share one fsync (group commit). Reads go straight to storage.
//!
//! # Crate features
//!
//! None.
#![deny(missing_docs)]

pub mod cart;
pub mod certs;
pub mod codec;
pub mod config;
pub mod load;
pub mod node;
pub mod server;
pub mod storage;
pub mod token;
pub mod validate;

pub use cart::Cart;
pub use config::{Config, ConfigError, Durability};
pub use node::{
    read_cart, read_log, CartView, Idempotency, Node, NodeConfig, NodeError, Op, OpenError,
    OrderView, Reply, WriteRequest,
};
pub use storage::{Batch, Cf, MemStorage, RocksStorage, Storage, StorageError};
pub use token::CausalToken;
