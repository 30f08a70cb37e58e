//! The HTTP driver around [`Node`]: axum routes, one writer thread (group commit),
//! Prometheus metrics, request ids, timeouts and graceful shutdown.
//!
//! Handlers parse and check the request (path, headers, body), then either read the cart
//! straight from storage or queue a [`WriteRequest`](crate::WriteRequest) for the writer thread, which drains up
//! to `write_batch_max` queued writes, applies them with [`Node::apply_batch`] as one
//! storage batch (fsynced in `fsync` mode), and answers each. The queue holds at most
//! `write_queue_max` writes; beyond that requests get 503 with `Retry-After`.
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
//! | `GET /replication` | `{"region","node_id","token","peers":[]}` (no replication yet) |
//! | `GET /metrics` | Prometheus text |
//!
//! Every success carries a `Causal-Token` header equal to the body's `token` (see
//! [`CausalToken`]). Every response echoes `X-Request-Id` (generated when absent), which
//! also tags the request's tracing span. A replayed idempotent answer carries
//! `Idempotent-Replayed: true`.
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
//! | 409 | `cart_too_large` | the encoded cart would exceed `cart_bytes_max` |
//! | 413 | `body_too_large` | a body beyond `body_bytes_max` |
//! | 415 | `unsupported_media_type` | a body without `Content-Type: application/json` |
//! | 422 | `invalid_body` | unknown or missing field, wrong type, a number that does not fit |
//! | 422 | `invalid_quantity` | quantity outside 1–10000 (add) or 0–10000 (set) |
//! | 422 | `idempotency_key_reused` | the key was used for a different request |
//! | 500 | `corrupt_data` | the stored cart cannot be decoded (logged; other carts are served) |
//! | 503 | `overloaded` / `storage_unavailable` / `causal_wait_timeout` / `shutting_down` | with `Retry-After` |
//! | 504 | `timeout` | the request exceeded `request_timeout_ms` (a write may still apply) |

use crate::config::{Config, Durability};
use crate::node::{self, Applied, Idempotency, Node, NodeError, Op, OpenError};
use crate::storage::{Storage, StorageError, StorageErrorKind};
use crate::token::CausalToken;
use crate::validate::{
    CartId, IdempotencyKey, Increment, InputError, InputErrorKind, Quantity, Sku,
};
use crate::RocksStorage;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use http_body_util::BodyExt;
use meridian_clocks::{PhysicalClock, SystemClock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::future::Future;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

/// How often the writer thread deletes expired idempotency records.
pub const IDEMPOTENCY_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Most idempotency records examined per sweep.
pub const IDEMPOTENCY_SWEEP_MAX: usize = 10_000;
/// Largest body read (and discarded) to answer 413 cleanly; larger ones are cut off.
pub const BODY_DRAIN_BYTES_MAX: usize = 64 << 20;

/// The settings the HTTP layer needs (the rest of [`Config`]).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Region name, reported by `/health` and `/replication`.
    pub region: String,
    /// Durability mode.
    pub durability: Durability,
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Most writes per batch.
    pub write_batch_max: usize,
    /// Most queued writes.
    pub write_queue_max: usize,
    /// How long to wait for a `Causal-Token`'s position.
    pub causal_wait: Duration,
    /// Configured peer regions (not contacted yet).
    pub peers: Vec<String>,
}

impl Default for ServerSettings {
    /// The config's defaults, for region `"local"` with no peers.
    fn default() -> Self {
        use crate::config::defaults;
        ServerSettings {
            region: "local".into(),
            durability: Durability::default(),
            body_bytes_max: defaults::body_bytes_max(),
            request_timeout: Duration::from_millis(defaults::request_timeout_ms()),
            write_batch_max: defaults::write_batch_max(),
            write_queue_max: defaults::write_queue_max(),
            causal_wait: Duration::from_millis(defaults::causal_wait_ms()),
            peers: vec![],
        }
    }
}

impl ServerSettings {
    /// The HTTP settings of a full config.
    pub fn from_config(c: &Config) -> Self {
        ServerSettings {
            region: c.region.clone(),
            durability: c.durability,
            body_bytes_max: c.body_bytes_max,
            request_timeout: c.request_timeout(),
            write_batch_max: c.write_batch_max,
            write_queue_max: c.write_queue_max,
            causal_wait: Duration::from_millis(c.causal_wait_ms),
            peers: c.peers.iter().map(|p| p.region.clone()).collect(),
        }
    }
}

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
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    /// The final flush failed.
    #[error("flushing storage at shutdown: {0}")]
    Flush(StorageError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// The node's Prometheus metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: HistogramFamily<HttpLabels>,
    write_latency: Histogram,
    batch_size: Histogram,
    fsyncs: Counter,
    carts_stored: Gauge,
    log_len: Gauge,
    applied_seq: Gauge,
    idempotency_expired: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(latency_histogram);
        let write_latency = latency_histogram();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let fsyncs = Counter::default();
        let carts_stored = Gauge::default();
        let log_len = Gauge::default();
        let applied_seq = Gauge::default();
        let idempotency_expired = Counter::default();
        r.register(
            "cart_store_http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        r.register(
            "cart_store_http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            http_latency.clone(),
        );
        r.register(
            "cart_store_storage_write_duration_seconds",
            "Time to apply and commit one storage batch (fsync included in fsync mode)",
            write_latency.clone(),
        );
        r.register(
            "cart_store_write_batch_size",
            "Writes committed per storage batch (group commit)",
            batch_size.clone(),
        );
        r.register(
            "cart_store_fsyncs",
            "Synced storage batches",
            fsyncs.clone(),
        );
        r.register(
            "cart_store_carts_stored",
            "Carts in storage",
            carts_stored.clone(),
        );
        r.register(
            "cart_store_delta_log_length",
            "Entries in the outgoing delta log",
            log_len.clone(),
        );
        r.register(
            "cart_store_applied_seq",
            "Last local sequence number committed",
            applied_seq.clone(),
        );
        r.register(
            "cart_store_idempotency_expired",
            "Idempotency records deleted after their TTL",
            idempotency_expired.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            http_requests,
            http_latency,
            write_latency,
            batch_size,
            fsyncs,
            carts_stored,
            log_len,
            applied_seq,
            idempotency_expired,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn set_node_gauges<S: Storage, C: PhysicalClock>(&self, node: &Node<S, C>) {
        self.carts_stored
            .set(i64::try_from(node.carts_stored()).unwrap_or(i64::MAX));
        self.log_len
            .set(i64::try_from(node.log_len()).unwrap_or(i64::MAX));
        self.applied_seq
            .set(i64::try_from(node.last_seq()).unwrap_or(i64::MAX));
    }
}

struct Job {
    req: node::WriteRequest,
    reply: oneshot::Sender<Result<Applied, NodeError>>,
}

enum Msg {
    Write(Job),
    Stop,
}

struct AppState {
    storage: Arc<dyn Storage>,
    settings: ServerSettings,
    node_id: u64,
    writer: SyncSender<Msg>,
    applied: watch::Receiver<u64>,
    metrics: Metrics,
}

/// A running node: the router, and the writer thread behind it.
pub struct Server {
    state: Arc<AppState>,
    writer: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("region", &self.state.settings.region)
            .field("node_id", &self.state.node_id)
            .finish()
    }
}

impl Server {
    /// Opens RocksDB in `config.data_dir`, opens the node on it, and starts the writer.
    pub fn open(config: &Config) -> Result<Server, ServeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| ServeError::Storage {
            dir: config.data_dir.clone(),
            source: StorageError::new(StorageErrorKind::Open, e.to_string()),
        })?;
        let storage: Arc<dyn Storage> =
            Arc::new(RocksStorage::open(&config.data_dir).map_err(|source| {
                ServeError::Storage {
                    dir: config.data_dir.clone(),
                    source,
                }
            })?);
        let node = Node::open(storage, SystemClock, config.node_config()).map_err(|source| {
            ServeError::Open {
                dir: config.data_dir.clone(),
                source,
            }
        })?;
        Ok(Server::with_node(node, ServerSettings::from_config(config)))
    }

    /// Serves `node` (on any storage and clock), starting its writer thread.
    pub fn with_node<C: PhysicalClock + Send + 'static>(
        node: Node<Arc<dyn Storage>, C>,
        settings: ServerSettings,
    ) -> Server {
        let metrics = Metrics::new();
        metrics.set_node_gauges(&node);
        let (tx, rx) = sync_channel(settings.write_queue_max);
        let (applied_tx, applied_rx) = watch::channel(node.last_seq());
        let state = Arc::new(AppState {
            storage: node.storage().clone(),
            node_id: node.config().node_id.0,
            settings: settings.clone(),
            writer: tx,
            applied: applied_rx,
            metrics: metrics.clone(),
        });
        let durability = settings.durability;
        let batch_max = settings.write_batch_max;
        let writer = std::thread::Builder::new()
            .name("cart-store-writer".into())
            .spawn(move || writer_loop(node, rx, applied_tx, metrics, durability, batch_max))
            .expect("spawning the writer thread");
        Server {
            state,
            writer: Some(writer),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then finishes in-flight requests,
    /// stops the writer and flushes storage.
    pub async fn run(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
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

fn writer_loop<C: PhysicalClock>(
    mut node: Node<Arc<dyn Storage>, C>,
    rx: Receiver<Msg>,
    applied: watch::Sender<u64>,
    metrics: Metrics,
    durability: Durability,
    batch_max: usize,
) -> Result<(), StorageError> {
    let mut last_sweep = Instant::now();
    let mut stopping = false;
    while !stopping {
        let mut jobs = Vec::new();
        match rx.recv_timeout(IDEMPOTENCY_SWEEP_INTERVAL) {
            Ok(Msg::Write(j)) => jobs.push(j),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        while !stopping && !jobs.is_empty() && jobs.len() < batch_max {
            match rx.try_recv() {
                Ok(Msg::Write(j)) => jobs.push(j),
                Ok(Msg::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            let (reqs, replies): (Vec<_>, Vec<_>) =
                jobs.into_iter().map(|j| (j.req, j.reply)).unzip();
            let n = reqs.len();
            let before = node.last_seq();
            let start = Instant::now();
            let results = node.apply_batch(reqs, durability);
            metrics.write_latency.observe(start.elapsed().as_secs_f64());
            metrics.batch_size.observe(n as f64);
            if durability == Durability::Fsync && node.last_seq() != before {
                metrics.fsyncs.inc();
            }
            metrics.set_node_gauges(&node);
            applied.send_replace(node.last_seq());
            for (reply, result) in replies.into_iter().zip(results) {
                if let Err(
                    e @ (NodeError::Corrupt { .. }
                    | NodeError::CorruptLog { .. }
                    | NodeError::Storage(_)),
                ) = &result
                {
                    tracing::error!(error = %e, "write failed");
                }
                // The client may have gone (timeout); the write stands regardless.
                let _ = reply.send(result);
            }
        }
        if last_sweep.elapsed() >= IDEMPOTENCY_SWEEP_INTERVAL {
            last_sweep = Instant::now();
            match node.sweep_idempotency(IDEMPOTENCY_SWEEP_MAX) {
                Ok(n) => {
                    metrics.idempotency_expired.inc_by(n as u64);
                }
                Err(e) => tracing::error!(error = %e, "idempotency sweep failed"),
            }
        }
    }
    node.storage().sync()
}

// ---------------------------------------------------------------------------------------
// Errors

/// An API error: status, machine-readable code, and a message a developer can act on.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let msg = e.to_string();
        match e {
            NodeError::Input(e) => e.into(),
            NodeError::CartFull { .. } => ApiError::new(StatusCode::CONFLICT, "cart_full", msg),
            NodeError::LineFull { .. } => ApiError::new(StatusCode::CONFLICT, "line_full", msg),
            NodeError::CartTooLarge { .. } => {
                ApiError::new(StatusCode::CONFLICT, "cart_too_large", msg)
            }
            NodeError::EmptyCart(_) => ApiError::new(StatusCode::CONFLICT, "empty_cart", msg),
            NodeError::IdempotencyMismatch(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                msg,
            ),
            NodeError::Corrupt { .. } | NodeError::CorruptLog { .. } => {
                tracing::error!(error = %msg, "corrupt stored data");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data", msg)
            }
            NodeError::Storage(_) => {
                tracing::error!(error = %msg, "storage failure");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", msg)
                    .retry_after(1)
            }
        }
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        let msg = e.to_string();
        match e.kind() {
            InputErrorKind::Quantity => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_quantity", msg)
            }
            InputErrorKind::IdempotencyKey => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", msg)
            }
            _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", msg),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Routes

fn router(state: Arc<AppState>) -> Router {
    let timeout = state.settings.request_timeout;
    Router::new()
        .route("/health", get(health))
        .route("/replication", get(replication))
        .route("/metrics", get(metrics_text))
        .route("/carts/{cart}", get(get_cart).delete(clear_cart))
        .route("/carts/{cart}/items", post(add_item))
        .route("/carts/{cart}/items/{sku}", put(set_item).delete(remove_item))
        .route("/carts/{cart}/checkout", post(checkout))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            with_timeout(timeout, req, next)
        }))
        .layer(middleware::from_fn(json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error (logged)",
                )
                .into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
        .with_state(state)
}

/// Request ids for requests that bring none: a per-process random prefix and a counter
/// (`3f9a2c1e-42`), unique enough to correlate logs and cheaper than a UUID per request,
/// which costs a `getrandom` system call.
#[derive(Clone)]
struct RequestIds {
    prefix: u32,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS once per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        RequestIds {
            prefix: h.finish() as u32,
            next: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

async fn with_timeout(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the request did not finish within {} ms; a write may still be applied, so \
                 retry with the same Idempotency-Key",
                timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Any error response not already in the JSON error shape (e.g. from axum itself) gets it.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = body
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out = ApiError::new(status, "bad_request", message).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

async fn record_metrics(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let labels = HttpLabels {
        route,
        method,
        status: resp.status().as_u16().to_string(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {method} {}; the API serves /health, /metrics, /replication and \
             /carts/{{cart}}[/items[/{{sku}}]|/checkout]",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "region": state.settings.region,
        "node_id": state.node_id,
        "durability": match state.settings.durability {
            Durability::Process => "process",
            Durability::Fsync => "fsync",
        },
        "applied_seq": *state.applied.borrow(),
    });
    axum::Json(body).into_response()
}

async fn replication(State(state): State<Arc<AppState>>) -> Response {
    let seq = *state.applied.borrow();
    let body = serde_json::json!({
        "region": state.settings.region,
        "node_id": state.node_id,
        "token": CausalToken::single(state.node_id, seq).to_string(),
        "peers": [],
        "configured_peers": state.settings.peers,
        "note": "replication is not implemented yet; configured peers are not contacted",
    });
    axum::Json(body).into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Request parsing

/// The raw (not percent-decoded) path segment `index` (`/carts/{cart}/items/{sku}`: the
/// cart is 2, the sku 4). Ids never need escaping, so any `%` is refused by the parse.
fn path_segment(uri: &axum::http::Uri, index: usize) -> &str {
    uri.path().split('/').nth(index).unwrap_or("")
}

fn cart_param(uri: &axum::http::Uri) -> Result<CartId, ApiError> {
    Ok(CartId::parse(path_segment(uri, 2))?)
}

fn sku_param(uri: &axum::http::Uri) -> Result<Sku, ApiError> {
    Ok(Sku::parse(path_segment(uri, 4))?)
}

fn idempotency(
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = IdempotencyKey::parse(v.to_str().unwrap_or(""))?;
    Ok(Some(Idempotency {
        key,
        fingerprint: crate::codec::fnv1a64(&[method.as_str().as_bytes(), path.as_bytes(), body]),
    }))
}

/// Waits until this node has applied what the request's `Causal-Token` covers.
async fn await_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get("causal-token") else {
        return Ok(());
    };
    let token: CausalToken = v
        .to_str()
        .map_err(|_| "not ASCII".to_owned())
        .and_then(|s| {
            s.parse()
                .map_err(|e: crate::token::TokenError| e.to_string())
        })
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_causal_token", m))?;
    let own = token.seq_of(state.node_id);
    let foreign = token
        .entries()
        .iter()
        .find(|(n, s)| *n != state.node_id && *s > 0)
        .copied();
    let mut applied = state.applied.clone();
    let covered = async {
        if foreign.is_some() {
            // No replication yet: another node's writes never arrive here.
            std::future::pending::<()>().await;
        }
        let _ = applied.wait_for(|a| *a >= own).await;
    };
    match tokio::time::timeout(state.settings.causal_wait, covered).await {
        Ok(()) => Ok(()),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "causal_wait_timeout",
            match foreign {
                Some((n, s)) => format!(
                    "this node has not received node {n}'s writes up to {s} (replication is \
                     not running); retry later or read from the region that wrote them"
                ),
                None => format!(
                    "this node has applied its writes up to {}, but the token needs {own}; \
                     retry later",
                    *state.applied.borrow()
                ),
            },
        )
        .retry_after(1)),
    }
}

/// Reads the body, refusing it (413) past `limit` but draining up to
/// [`BODY_DRAIN_BYTES_MAX`] so the client reads the answer.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the request body failed: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total <= limit {
                buf.extend_from_slice(&data);
            } else if total > BODY_DRAIN_BYTES_MAX {
                break;
            }
        }
    }
    if total > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(buf))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body exceeds {limit} bytes (config key body_bytes_max)"),
    )
}

/// Checks the content type and size, and reads the body.
async fn json_bytes(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // A client waiting for `100 Continue` gets the 413 without sending the body;
        // otherwise drain what is cheap to drain, so it reads the 413 rather than a reset.
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue {
            let _ = read_body(body, limit).await;
        }
        return Err(too_large(limit));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        let _ = read_body(body, limit).await;
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if ct.is_empty() {
                "missing Content-Type: send the body as JSON with Content-Type: application/json"
                    .to_owned()
            } else {
                format!("Content-Type {ct:?} is not supported; send application/json")
            },
        ));
    }
    read_body(body, limit).await
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("{e}; expected a body like {example}"),
            ),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {e}; expected a body like {example}"),
            ),
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    sku: String,
    quantity: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    quantity: u64,
}

fn reply_response(applied: Applied) -> Response {
    let body = serde_json::to_vec(&applied.answer).expect("API views serialize");
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(applied.answer.token()) {
        h.insert("causal-token", v);
    }
    if applied.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

async fn submit(state: &AppState, req: node::WriteRequest) -> Result<Response, ApiError> {
    let (tx, rx) = oneshot::channel();
    match state.writer.try_send(Msg::Write(Job { req, reply: tx })) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "{} writes are queued (config key write_queue_max); retry shortly",
                    state.settings.write_queue_max
                ),
            )
            .retry_after(1))
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the node is shutting down",
            )
            .retry_after(1))
        }
    }
    let reply = rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node stopped before answering; retry with the same Idempotency-Key",
        )
        .retry_after(1)
    })??;
    Ok(reply_response(reply))
}

async fn write(
    state: Arc<AppState>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    cart: CartId,
    op: Op,
    body: &[u8],
) -> Result<Response, ApiError> {
    let idempotency = idempotency(&headers, &method, uri.path(), body)?;
    await_token(&state, &headers).await?;
    let req = node::WriteRequest {
        cart,
        op,
        idempotency,
    };
    submit(&state, req).await
}

async fn get_cart(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cart = cart_param(&uri)?;
    await_token(&state, &headers).await?;
    // Read the position first: the cart read after it is at least that new.
    let seq = *state.applied.borrow();
    let token = CausalToken::single(state.node_id, seq);
    // A point read from RocksDB (memtable or block cache, microseconds) runs inline: handing
    // it to the blocking pool cost more in thread wake-ups than the read itself (perf, bench-node).
    let loaded = node::read_cart(state.storage.as_ref(), &cart)?;
    let view = node::cart_view(&cart, &loaded, &token);
    let mut resp = axum::Json(view).into_response();
    if let Ok(v) = HeaderValue::from_str(&token.to_string()) {
        resp.headers_mut().insert("causal-token", v);
    }
    Ok(resp)
}

async fn add_item(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cart = cart_param(&uri)?;
    let bytes = json_bytes(&headers, body, state.settings.body_bytes_max).await?;
    let b: AddBody = parse_json(&bytes, r#"{"sku": "book-1", "quantity": 2}"#)?;
    let op = Op::Add {
        sku: Sku::parse(&b.sku)?,
        quantity: Increment::new(b.quantity)?,
    };
    write(state, method, uri, headers, cart, op, &bytes).await
}

async fn set_item(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cart = cart_param(&uri)?;
    let sku = sku_param(&uri)?;
    let bytes = json_bytes(&headers, body, state.settings.body_bytes_max).await?;
    let b: SetBody = parse_json(&bytes, r#"{"quantity": 3}"#)?;
    let op = Op::Set {
        sku,
        quantity: Quantity::new(b.quantity)?,
    };
    write(state, method, uri, headers, cart, op, &bytes).await
}

async fn remove_item(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cart = cart_param(&uri)?;
    let sku = sku_param(&uri)?;
    write(state, method, uri, headers, cart, Op::Remove { sku }, &[]).await
}

async fn clear_cart(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cart = cart_param(&uri)?;
    write(state, method, uri, headers, cart, Op::Clear, &[]).await
}

async fn checkout(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cart = cart_param(&uri)?;
    write(state, method, uri, headers, cart, Op::Checkout, &[]).await
}
