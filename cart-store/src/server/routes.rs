//! The router: routes and handlers, and the middleware around them (request ids, tracing,
//! metrics, the JSON error shape, the request deadline).

use super::error::ApiError;
use super::metrics::{method_label, HttpLabels};
use super::parse::{
    await_token, idempotency, json_bytes, parse_json, AddBody, CartPath, ItemPath, SetBody,
};
use super::writer::{submit, Deadline};
use super::AppState;
use crate::config::Durability;
use crate::node::{self, Applied, Op};

use crate::validate::{CartId, Increment, Quantity, Sku};
use axum::body::Body;
use axum::extract::{Extension, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

/// The API's routes with their middleware.
pub(super) fn router(state: Arc<AppState>) -> Router {
    let timeout = state.settings.request_timeout;
    Router::new()
        .route("/health", get(health))
        .route("/replication", get(replication))
        .route("/metrics", get(metrics_text))
        .route("/carts/{cart}", get(get_cart).delete(clear_cart))
        .route("/carts/{cart}/items", post(add_item))
        .route(
            "/carts/{cart}/items/{sku}",
            put(set_item).delete(remove_item),
        )
        .route("/carts/{cart}/checkout", post(checkout))
        .route("/openapi.json", get(super::openapi::openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            with_deadline(timeout, req, next)
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
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
        .layer(middleware::from_fn(refuse_bad_request_id))
        .with_state(state)
}

/// Longest `X-Request-Id` echoed; a longer one is replaced by a generated id.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// `true` for a request id this node echoes and logs: 1–64 characters of
/// `[A-Za-z0-9._:-]`, so it can neither flood a log line nor forge log fields.
fn is_request_id(v: &[u8]) -> bool {
    (1..=REQUEST_ID_BYTES_MAX).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Removes a client's `X-Request-Id` that is not [a request id](is_request_id) (or that
/// comes more than once), so the next layer generates a fresh one.
async fn refuse_bad_request_id(mut req: Request, next: Next) -> Response {
    let ids = req.headers().get_all("x-request-id");
    let mut ids = ids.iter();
    let good = match (ids.next(), ids.next()) {
        (Some(id), None) => is_request_id(id.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !good {
        tracing::debug!("refused the client's X-Request-Id; generating one");
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
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

/// Gives the request a [`Deadline`] `timeout` from now. At the deadline the request is
/// answered 504 unless the writer has already taken its write into a batch; then the
/// write's own answer follows the commit.
async fn with_deadline(timeout: Duration, mut req: Request, next: Next) -> Response {
    let deadline = Deadline::after(timeout);
    req.extensions_mut().insert(deadline.clone());
    let mut answer = std::pin::pin!(next.run(req));
    tokio::select! {
        resp = answer.as_mut() => resp,
        () = tokio::time::sleep(timeout) => {
            if deadline.abandon() {
                deadline.expired().into_response()
            } else {
                answer.await
            }
        }
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
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    let labels = HttpLabels {
        route,
        method,
        status: resp.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
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

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
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
        "node_id": state.node_id.0,
        "durability": match state.settings.durability {
            Durability::Process => "process",
            Durability::Fsync => "fsync",
        },
        "applied_seq": state.applied.borrow().seq_of(state.node_id),
    });
    axum::Json(body).into_response()
}

async fn replication(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let status = super::writer::status(&state).await?;
    Ok(axum::Json(status).into_response())
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    if let Some(links) = &state.links {
        state
            .metrics
            .set_link_stats(&links.stats(), &links.refusals());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The HTTP answer to an applied write: its JSON, `Causal-Token`, and
/// `Idempotent-Replayed` when it replays an earlier answer.
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

/// What every write handler does once the request is parsed: idempotency key, causal wait,
/// then the writer.
async fn write(
    state: Arc<AppState>,
    (method, uri, headers, deadline): (Method, Uri, HeaderMap, Deadline),
    cart: CartId,
    op: Op,
    body: &[u8],
) -> Result<Response, ApiError> {
    let idempotency = idempotency(&headers, &method, uri.path(), body)?;
    await_token(&state, &headers).await?;
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let req = node::WriteRequest {
        cart,
        op,
        idempotency,
        request_id: None,
    }
    .with_request_id(request_id);
    let reply = reply_response(submit(&state, req, deadline).await?);
    // The origin's half of the write trail; each region that applies it logs the same id.
    tracing::info!(target: "cart_store::writes", request_id, "write committed");
    Ok(reply)
}

async fn get_cart(
    State(state): State<Arc<AppState>>,
    CartPath { cart }: CartPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    await_token(&state, &headers).await?;
    // Read the position first: the cart read after it is at least that new.
    let token = state.applied.borrow().clone();
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
    CartPath { cart }: CartPath,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Extension(deadline): Extension<Deadline>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = json_bytes(&headers, body, &state.settings).await?;
    let b: AddBody = parse_json(&bytes, r#"{"sku": "book-1", "quantity": 2}"#)?;
    let op = Op::Add {
        sku: Sku::parse(&b.sku)?,
        quantity: Increment::new(b.quantity)?,
    };
    write(state, (method, uri, headers, deadline), cart, op, &bytes).await
}

async fn set_item(
    State(state): State<Arc<AppState>>,
    ItemPath { cart, sku }: ItemPath,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Extension(deadline): Extension<Deadline>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = json_bytes(&headers, body, &state.settings).await?;
    let b: SetBody = parse_json(&bytes, r#"{"quantity": 3}"#)?;
    let op = Op::Set {
        sku,
        quantity: Quantity::new(b.quantity)?,
    };
    write(state, (method, uri, headers, deadline), cart, op, &bytes).await
}

async fn remove_item(
    State(state): State<Arc<AppState>>,
    ItemPath { cart, sku }: ItemPath,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Extension(deadline): Extension<Deadline>,
) -> Result<Response, ApiError> {
    let op = Op::Remove { sku };
    write(state, (method, uri, headers, deadline), cart, op, &[]).await
}

async fn clear_cart(
    State(state): State<Arc<AppState>>,
    CartPath { cart }: CartPath,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Extension(deadline): Extension<Deadline>,
) -> Result<Response, ApiError> {
    write(
        state,
        (method, uri, headers, deadline),
        cart,
        Op::Clear,
        &[],
    )
    .await
}

async fn checkout(
    State(state): State<Arc<AppState>>,
    CartPath { cart }: CartPath,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Extension(deadline): Extension<Deadline>,
) -> Result<Response, ApiError> {
    write(
        state,
        (method, uri, headers, deadline),
        cart,
        Op::Checkout,
        &[],
    )
    .await
}
