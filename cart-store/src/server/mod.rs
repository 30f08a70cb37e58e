//! The HTTP driver around [`Node`]: axum routes, one writer thread (group commit, and the
//! event loop of the replication core), Prometheus metrics, request ids, timeouts and
//! graceful shutdown.
//!
//! Handlers parse and check the request (path, headers, body), then either read the cart
//! straight from storage or queue a [`WriteRequest`](crate::WriteRequest) for the writer thread, which drains up
//! to `write_batch_max` queued writes, applies them with [`Node::apply_batch`] as one
//! storage batch (fsynced in `fsync` mode), and answers each. The queue holds at most
//! `write_queue_max` writes; beyond that requests get 503 with `Retry-After`.
//!
//! | module | job |
//! |---|---|
//! | `settings` | [`ServerSettings`], the HTTP part of the config |
//! | `metrics` | [`Metrics`], the Prometheus registry |
//! | `conn` | the accept loop: connection limit, header and idle timeouts, bounded shutdown |
//! | `writer` | the writer thread (group commit), the queue in front of it, request deadlines |
//! | `error` | [`ApiError`] and how the write path's errors map to statuses and codes |
//! | `routes` | the router, its handlers and middleware |
//! | `parse` | path parameters, headers and JSON bodies |
//!
//! # The API
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | `{"status":"ok","region","node_id","durability","applied_seq"}` |
//! | `GET /carts/{cart}` | `{"cart","lines":[{"sku","quantity"}],"token"}`, lines sorted by sku |
//! | `POST /carts/{cart}/items` `{"sku","quantity"}` | the cart after adding (1–10000) |
//! | `PUT /carts/{cart}/items/{sku}` `{"quantity"}` | the cart after setting (0–10000; 0 removes) |
//! | `DELETE /carts/{cart}/items/{sku}` | the cart after removing the line |
//! | `DELETE /carts/{cart}` | the cart after clearing it |
//! | `POST /carts/{cart}/checkout` | `{"order","cart","lines","token"}`: exactly the observed lines |
//! | `GET /replication` | `{"region","node_id","token","applied","durable","stable","log_entries","carts","digest","peers":[…]}`: per-origin progress, the digest root, and each peer's state (anti-entropy included) |
//! | `GET /metrics` | Prometheus text |
//!
//! Every success carries a `Causal-Token` header equal to the body's `token` (see
//! [`CausalToken`]). Every response echoes the client's
//! `X-Request-Id` if it is 1–64 characters of `[A-Za-z0-9._:-]`, and otherwise (absent,
//! longer, other characters) a generated one; the id tags the request's tracing span. A
//! replayed idempotent answer carries `Idempotent-Replayed: true`.
//!
//! Connections are limited too (see `conn`): at most `http_connections_max` open (more are
//! answered 503 `overloaded` and closed), a request head must arrive within
//! `http_header_timeout_ms`, a kept-alive connection idle for `http_idle_timeout_ms` is
//! closed, and a graceful shutdown waits at most `shutdown_timeout_ms` for open requests.
//!
//! Errors are `{"error":{"code","message"}}`:
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `invalid_id` | cart id or sku not 1–128 of `[A-Za-z0-9._:-]`, `.`/`..`, or percent-encoded |
//! | 400 | `malformed_json` | the body is not JSON |
//! | 400 | `invalid_idempotency_key` / `invalid_causal_token` | a header that cannot be parsed |
//! | 404 | `not_found` | no such route |
//! | 405 | `method_not_allowed` | the route exists, the method does not |
//! | 409 | `empty_cart` | checkout of an empty cart |
//! | 409 | `cart_full` | a new line beyond `cart_lines_max` |
//! | 409 | `line_full` | an add that would take the line past 10,000 |
//! | 409 | `cart_too_large` | the encoded cart would exceed `cart_bytes_max` |
//! | 413 | `body_too_large` | a body beyond `body_bytes_max` (judged from `Content-Length` at once, when it is sent) |
//! | 415 | `unsupported_media_type` | a body without `Content-Type: application/json`, or with a `Content-Encoding` other than `identity` |
//! | 422 | `invalid_body` | unknown or missing field, wrong type, a number that does not fit |
//! | 422 | `invalid_quantity` | quantity outside 1–10000 (add) or 0–10000 (set) |
//! | 422 | `idempotency_key_reused` | the key was used for a different request |
//! | 431 | (no body) | a request head beyond `http_head_bytes_max` (hyper's own answer; the connection is closed) |
//! | 500 | `corrupt_data` | the stored cart cannot be decoded (logged; other carts are served) |
//! | 500 | `dots_exhausted` | this node id used every dot it may in the cart: retire it |
//! | 503 | `overloaded` / `storage_unavailable` / `causal_wait_timeout` / `shutting_down` | with `Retry-After` |
//! | 504 | `timeout` | the request did not finish within `request_timeout_ms`; nothing was applied |
//!
//! A 504 means "not applied": the writer takes a write into a batch only before its
//! request's deadline, and drops it unapplied after. A write the writer has already taken
//! into the batch it is committing when the deadline passes is not cut off: it answers
//! with its own result once that commit ends, late rather than 504.

use crate::config::Config;
use crate::node::{Node, OpenError};
use crate::storage::{Storage, StorageError, StorageErrorKind};
use crate::token::CausalToken;
use crate::transport::{Faults, Inbound, Outbound, StatsHandle, Transport};
use crate::RocksStorage;
use axum::Router;
use crossbeam_channel::{Receiver, Sender};
use meridian_cart_store_core::{Replica, ReplicationConfig};
use meridian_clocks::{PhysicalClock, ReplicaId, SystemClock};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

mod conn;
mod error;
mod metrics;
pub mod openapi;
mod parse;
mod routes;
mod settings;
mod writer;

pub use error::ApiError;
pub use metrics::Metrics;
pub use parse::BODY_DRAIN_BYTES_MAX;
pub use routes::REQUEST_ID_BYTES_MAX;
pub use settings::{ConnectionLimits, ServerSettings};
pub use writer::{IDEMPOTENCY_SWEEP_INTERVAL, IDEMPOTENCY_SWEEP_MAX};

use writer::{Msg, Writer};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory could not be opened.
    #[error("data directory {dir}: {source}")]
    Storage {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: StorageError,
    },
    /// The node refused the data directory.
    #[error("data directory {dir}: {source}")]
    Open {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: OpenError,
    },
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The QUIC transport could not start (certificates, address).
    #[error("replication transport: {0}")]
    Transport(crate::transport::TransportError),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    /// The final flush failed.
    #[error("flushing storage at shutdown: {0}")]
    Flush(StorageError),
}

/// What every handler shares.
struct AppState {
    storage: Arc<dyn Storage>,
    settings: ServerSettings,
    node_id: ReplicaId,
    writer: Sender<Msg>,
    /// The committed causal position (every origin's progress).
    applied: watch::Receiver<CausalToken>,
    /// Node id → region of the peers that have said hello.
    regions: watch::Receiver<std::collections::BTreeMap<ReplicaId, String>>,
    metrics: Metrics,
    /// The transport's per-link counters, read at each `/metrics` scrape.
    links: Option<StatsHandle>,
}

/// A running node: the router, the writer thread behind it, and the QUIC transport to its
/// peers (if any are configured).
pub struct Server {
    state: Arc<AppState>,
    writer: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
    transport: Option<Transport>,
    faults: Option<Faults>,
}

/// What the writer and the metrics need of a running transport.
pub struct PeerLinks {
    /// Connection events and messages from peers.
    pub inbound: Receiver<Inbound>,
    /// The per-peer outbound queues.
    pub outbound: Outbound,
    /// The per-link counters.
    pub stats: StatsHandle,
}

/// Capacity of the channel from the transport to the writer: messages beyond it are
/// dropped (and resent by the protocol).
pub const PEER_INBOX_MAX: usize = 4096;

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("region", &self.state.settings.region)
            .field("node_id", &self.state.node_id)
            .finish()
    }
}

impl Server {
    /// Opens the node (see [`open`](Self::open)) and, if peers are configured, starts the
    /// QUIC transport on `peer_listen` and replicates with them. Needs a tokio runtime.
    pub async fn start(config: &Config) -> Result<Server, ServeError> {
        let node = Self::open_node(config)?;
        let settings = ServerSettings::from_config(config);
        let replication = config.replication_config();
        let Some(tc) = config.transport_config() else {
            return Ok(Server::with_replica(node, settings, replication, None));
        };
        let (tx, rx) = crossbeam_channel::bounded(PEER_INBOX_MAX);
        let (transport, outbound, faults) = Transport::start(tc, tx)
            .await
            .map_err(ServeError::Transport)?;
        let links = PeerLinks {
            inbound: rx,
            outbound,
            stats: transport.stats_handle(),
        };
        let mut server = Server::with_replica(node, settings, replication, Some(links));
        server.transport = Some(transport);
        server.faults = Some(faults);
        Ok(server)
    }

    /// Opens RocksDB in `config.data_dir`, opens the node on it, and starts the writer,
    /// without replication (see [`start`](Self::start)).
    pub fn open(config: &Config) -> Result<Server, ServeError> {
        let node = Self::open_node(config)?;
        Ok(Server::with_node(node, ServerSettings::from_config(config)))
    }

    fn open_node(config: &Config) -> Result<Node<Arc<dyn Storage>, SystemClock>, ServeError> {
        let storage_err = |source| ServeError::Storage {
            dir: config.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| storage_err(StorageError::new(StorageErrorKind::Open, e.to_string())))?;
        let storage: Arc<dyn Storage> =
            Arc::new(RocksStorage::open(&config.data_dir).map_err(storage_err)?);
        Node::open(storage, SystemClock, config.node_config()).map_err(|source| ServeError::Open {
            dir: config.data_dir.clone(),
            source,
        })
    }

    /// Serves `node` (on any storage and clock) without peers, starting its writer thread.
    pub fn with_node<C: PhysicalClock + Send + 'static>(
        node: Node<Arc<dyn Storage>, C>,
        settings: ServerSettings,
    ) -> Server {
        let replication =
            ReplicationConfig::new(settings.region.clone(), Vec::new(), settings.durability);
        Server::with_replica(node, settings, replication, None)
    }

    /// Serves `node` with replication over `peers`, the transport's channels (`None`: no
    /// peers).
    pub fn with_replica<C: PhysicalClock + Send + 'static>(
        node: Node<Arc<dyn Storage>, C>,
        settings: ServerSettings,
        replication: ReplicationConfig,
        peers: Option<PeerLinks>,
    ) -> Server {
        let metrics = Metrics::new();
        metrics.set_node_gauges(&node);
        let (tx, rx) = crossbeam_channel::bounded(settings.write_queue_max);
        let (applied_tx, applied_rx) = watch::channel(node.token());
        let (regions_tx, regions_rx) = watch::channel(Default::default());
        let state = Arc::new(AppState {
            storage: node.storage().clone(),
            node_id: node.config().node_id,
            settings: settings.clone(),
            writer: tx,
            applied: applied_rx,
            regions: regions_rx,
            metrics: metrics.clone(),
            links: peers.as_ref().map(|l| l.stats.clone()),
        });
        let (peer_rx, outbound) = match peers {
            Some(l) => (l.inbound, Some(l.outbound)),
            // A channel nobody sends on: the writer's select never fires on it.
            None => (crossbeam_channel::never(), None),
        };
        let writer = Writer {
            rx,
            peers: peer_rx,
            outbound,
            applied: applied_tx,
            regions: regions_tx,
            metrics,
            batch_max: settings.write_batch_max,
            held_back_warned: Default::default(),
        };
        let replica = Replica::new(node, replication, std::time::Instant::now());
        let writer = std::thread::Builder::new()
            .name("cart-store-writer".into())
            .spawn(move || writer.run(replica))
            .expect("spawning the writer thread");
        Server {
            state,
            writer: Some(writer),
            transport: None,
            faults: None,
        }
    }

    /// The QUIC address peers reach this node at, if replication runs.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.transport.as_ref().map(Transport::local_addr)
    }

    /// Link fault injection (cut and heal a peer link), if replication runs: for the demo
    /// and tests.
    pub fn faults(&self) -> Option<&Faults> {
        self.faults.as_ref()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting, lets open
    /// requests finish for up to `shutdown_timeout`, closes the connections left, stops the
    /// writer after the writes it has queued, and flushes storage.
    pub async fn run(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let limits = self.state.settings.connections.clone();
        let metrics = self.state.metrics.clone();
        conn::serve(listener, self.router(), limits, metrics, shutdown).await;
        if let Some(t) = self.transport.take() {
            t.shutdown().await;
        }
        self.stop()
    }

    /// Stops the writer thread after the queued writes, and flushes storage.
    pub fn stop(&mut self) -> Result<(), ServeError> {
        if let Some(w) = self.writer.take() {
            // The queue is bounded; a blocking send waits for the writer to drain it.
            let _ = self.state.writer.send(Msg::Stop);
            match w.join() {
                Ok(r) => r.map_err(ServeError::Flush)?,
                Err(_) => {
                    return Err(ServeError::Flush(StorageError::new(
                        StorageErrorKind::Other,
                        "writer panicked",
                    )))
                }
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
