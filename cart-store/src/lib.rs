//! One region of Meridian's shopping-cart service: durable storage, the write path, an
//! HTTP API and replication to the other regions over QUIC, in a single `cart-store`
//! binary.
//!
//! Every region accepts writes, with no coordination between regions on the write path. A write is validated, applied to the cart CRDT, and
//! committed — new cart state, its delta in the outgoing log, the idempotency record and
//! the HLC bound — as **one** atomic storage batch before it is acknowledged. The write
//! path ([`Node`]) is sans-IO: it has no runtime, sockets or threads, so it runs the same
//! over RocksDB in production and over [`MemStorage`] (which models crashes) in tests.
//!
//! The write path itself is [`meridian_cart_store_core`] (re-exported here), which has no
//! runtime, sockets or RocksDB; this crate adds what a running node needs around it.
//!
//! ```
//! use meridian_cart_store::{Durability, Node, NodeConfig, RocksStorage, WriteRequest};
//! use meridian_clocks::{ReplicaId, SystemClock};
//!
//! let dir = tempfile::tempdir()?;
//! let storage = RocksStorage::open(dir.path())?;
//! let mut node = Node::open(storage, SystemClock, NodeConfig::new(ReplicaId(1)))?;
//! node.apply(WriteRequest::add("alice", "book", 2)?, Durability::Process)?;
//! assert_eq!(node.read("alice")?.lines[0].quantity, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//!
//! | module | job |
//! |---|---|
//! | [`config`] | the TOML config and its defaults |
//! | [`rocks`] | [`RocksStorage`], the production [`Storage`] |
//! | [`server`] | the HTTP driver: axum routes, one writer thread (which also drives replication), metrics, shutdown |
//! | [`transport`] | QUIC with mutual TLS between regions: it moves replication messages and knows nothing of carts |
//! | [`certs`] | the development CA of `cart-store certs` |
//! | [`demo`] | `cart-store demo`: three regions in one process, a partition and the merge |
//! | re-exported from [`meridian_cart_store_core`] | [`validate`], [`cart`], [`codec`], [`storage`], [`token`], [`node`], [`replication`]: the sans-IO write path and replication core |
//!
//! The load generator is a separate binary (`cart-load`, package `meridian-cart-load`), so
//! the node carries no benchmark tooling.
//!
//! # Durability
//!
//! All writes go through one writer thread that drains up to `write_batch_max` queued
//! requests and commits them as one batch. With `durability = "process"` (the default) the
//! batch is in RocksDB's WAL (not fsynced) before any of them is acknowledged, so
//! `kill -9` loses nothing; with `durability = "fsync"` the batch is fsynced, so
//! concurrent requests share one fsync (group commit). Reads go straight to storage.
//!
//! # Replication
//!
//! [`Server::start`](server::Server::start) starts the QUIC transport when `[[peers]]` are
//! configured. The writer thread owns the [`Replica`]: deltas received from peers are
//! applied in the same batches as local writes, and what the replica transmits is handed to
//! the transport without waiting. The protocol, and why it loses nothing, is in the
//! [`replication`] module and ARCHITECTURE.md.
//!
//! # Crate features
//!
//! None.
#![deny(missing_docs)]

pub mod certs;
pub mod config;
pub mod demo;
pub mod rocks;
pub mod server;
pub mod transport;

pub use meridian_cart_store_core::*;

pub use config::{Config, ConfigError};
pub use rocks::RocksStorage;
