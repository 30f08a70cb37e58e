//! The HTTP API as an OpenAPI 3 document ([`ApiDoc`]), generated from the code with utoipa,
//! served at `GET /openapi.json`, and committed as `docs/openapi.json`.
//!
//! The request bodies are the parser's own types (`AddBody`, `SetBody` in `parse`) and the
//! answers are the core's views ([`CartView`], [`OrderView`]), so their schemas follow the
//! code. The operations are described on documentation functions named after the handlers in
//! `routes` (`health`, `get_cart`, …), which keeps the handlers free of attributes; what every
//! operation shares (`X-Request-Id`, `Causal-Token`, `Idempotency-Key`, `Retry-After`) is
//! added in one place, [`CommonHeaders`], following the same rule the handlers do: cart
//! routes honour `Causal-Token`, and their writes take an `Idempotency-Key`.
//!
//! Drift is caught by tests: `tests/openapi.rs` checks that the router serves every documented
//! operation and no undocumented one, that every error code the server can send is in
//! [`ErrorCode`], that the real answers decode into the documented types, and that
//! `docs/openapi.json` equals [`document_json`]; `tests/schemathesis.rs` fuzzes a running
//! node against the document.

use super::parse::{AddBody, SetBody};
use crate::node::{CartView, LineView, OrderView};
use crate::token::TOKEN_BYTES_MAX;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, RefOr, Required, Type};
use utoipa::{Modify, OpenApi, ToSchema};

/// The syntax of cart ids and skus, as a JSON Schema pattern: 1–128 characters of
/// `[A-Za-z0-9._:-]`, never `.` or `..` (see [`crate::validate`]).
pub const ID_PATTERN: &str = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$";

/// The syntax of a `Causal-Token`: `v1:` and 0–64 `node=seq` entries (decimal `u64`s; 19
/// digits always fit), at most 2048 bytes. Nodes must also be strictly increasing, which a
/// pattern cannot say: the parameter's description does.
pub const CAUSAL_TOKEN_PATTERN: &str =
    r"^v1:([0-9]{1,19}=[0-9]{1,19}(,[0-9]{1,19}=[0-9]{1,19}){0,63})?$";

/// The syntax of an `Idempotency-Key`: 1–255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[!-~]{1,255}$";

/// The `X-Request-Id` values this document promises to echo unchanged.
pub const REQUEST_ID_PATTERN: &str = r"^[A-Za-z0-9._:-]{1,64}$";

/// The OpenAPI document of the HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Meridian cart-store",
        description = "One region of Meridian's geo-replicated shopping-cart service. \
            docs/CONTRACT.md is the contract in prose; this document is generated from the code. \
            Every error is `{\"error\":{\"code\",\"message\"}}`; an unknown route answers 404 \
            `not_found` and a known route with another method 405 `method_not_allowed`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        health,
        replication,
        metrics_text,
        get_cart,
        clear_cart,
        add_item,
        set_item,
        remove_item,
        checkout,
        openapi_json,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, ErrorCode, Health, HealthStatus, Durability, Replication, PeerStatus,
        CartView, OrderView, LineView, AddBody, SetBody,
    )),
    modifiers(&CommonHeaders),
    tags(
        (name = "carts", description = "Reading and changing carts"),
        (name = "node", description = "The node itself: health, replication, metrics, this document"),
    ),
)]
pub struct ApiDoc;

/// The document as pretty-printed JSON, exactly as committed in `docs/openapi.json` (with a
/// final newline).
pub fn document_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "node",
    responses((status = 200, description = "The OpenAPI 3 document of this API", body = Object)),
)]
pub(super) async fn openapi_json() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(document_json).clone();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Every error: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Machine-readable; fixed by the contract.
    pub code: ErrorCode,
    /// For a developer: says what to change.
    pub message: String,
}

/// Every error code the API sends (docs/CONTRACT.md's error table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: a cart id or sku outside `[A-Za-z0-9._:-]{1,128}`, `.`/`..`, or percent-encoded.
    InvalidId,
    /// 400: the body is not JSON.
    MalformedJson,
    /// 400: an `Idempotency-Key` that is not 1–255 visible ASCII characters.
    InvalidIdempotencyKey,
    /// 400: a `Causal-Token` that cannot be parsed.
    InvalidCausalToken,
    /// 400: the request body could not be read.
    BadBody,
    /// 4xx: a request refused by the HTTP layer before any handler.
    BadRequest,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: checkout of an empty cart.
    EmptyCart,
    /// 409: a new line beyond `cart_lines_max`.
    CartFull,
    /// 409: an add that would take the line past 10,000.
    LineFull,
    /// 409: the encoded cart would exceed `cart_bytes_max`.
    CartTooLarge,
    /// 413: a body beyond `body_bytes_max`.
    BodyTooLarge,
    /// 415: a body that is not `application/json`.
    UnsupportedMediaType,
    /// 422: an unknown or missing field, a wrong type, a number that does not fit.
    InvalidBody,
    /// 422: a quantity outside 1–10000 (add) or 0–10000 (set).
    InvalidQuantity,
    /// 422: the `Idempotency-Key` was used for a different request.
    IdempotencyKeyReused,
    /// 500: the stored cart cannot be decoded.
    CorruptData,
    /// 500: this node id used every dot it may in the cart; retire it.
    DotsExhausted,
    /// 500: a bug (logged).
    Internal,
    /// 503: the write queue is full.
    Overloaded,
    /// 503: storage failed.
    StorageUnavailable,
    /// 503: this node has not applied what the request's `Causal-Token` covers.
    CausalWaitTimeout,
    /// 503: the node is stopping.
    ShuttingDown,
    /// 504: the request did not finish within `request_timeout_ms`.
    Timeout,
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok` when the node answers.
    pub status: HealthStatus,
    /// This node's region.
    pub region: String,
    /// This node's replica id.
    pub node_id: u64,
    /// The durability mode.
    pub durability: Durability,
    /// The sequence number of the last write this node applied.
    pub applied_seq: u64,
}

/// [`Health::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// The node serves requests.
    Ok,
}

/// [`Health::durability`]: the config key `durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A write is in the WAL before the ack (survives `kill -9`).
    Process,
    /// A write is fsynced before the ack (survives power loss).
    Fsync,
}

pub use meridian_cart_store_core::replication::PeerStatus;
/// `GET /replication`: this node's per-origin progress and each peer's state.
pub use meridian_cart_store_core::replication::ReplicationStatus as Replication;

/// Adds what every operation shares, by the rule the handlers follow: every response echoes
/// `X-Request-Id` and every 503 has `Retry-After`; cart operations honour a `Causal-Token`
/// and answer with one; their writes (POST, PUT, DELETE) take an `Idempotency-Key` and may
/// answer `Idempotent-Replayed: true`.
#[derive(Debug)]
pub struct CommonHeaders;

impl Modify for CommonHeaders {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let string = |pattern: &str| {
            let max = (pattern == CAUSAL_TOKEN_PATTERN).then_some(TOKEN_BYTES_MAX);
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
                .max_length(max)
                .build()
        };
        let header_param = |name: &str, pattern: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(string(pattern)))
                .build()
        };
        let header = |description: &str| {
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(description))
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let is_cart = path.starts_with("/carts/");
            let ops = [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Put, item.put.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let is_write = is_cart && method != HttpMethod::Get;
                let params = op.parameters.get_or_insert_with(Vec::new);
                params.push(header_param(
                    "X-Request-Id",
                    REQUEST_ID_PATTERN,
                    "Tags the request's log lines and is echoed on the response; \
                     generated when absent.",
                ));
                if is_cart {
                    params.push(header_param(
                        "Causal-Token",
                        CAUSAL_TOKEN_PATTERN,
                        "The `token` of an earlier answer (`v1:node=seq,…`, nodes strictly \
                         increasing). Serve only once this node has applied everything the \
                         token covers; after `causal_wait_ms` the answer \
                         is 503 `causal_wait_timeout` with `Retry-After`, never a stale one.",
                    ));
                }
                if is_write {
                    params.push(header_param(
                        "Idempotency-Key",
                        IDEMPOTENCY_KEY_PATTERN,
                        "A retry with the same key and the same request is applied once and \
                         answers with the first answer; the same key with a different request \
                         is a 422 `idempotency_key_reused`.",
                    ));
                }
                for (status, response) in op.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    response.headers.insert(
                        "X-Request-Id".into(),
                        header(
                            "The request's id: the client's `X-Request-Id`, or a generated one.",
                        ),
                    );
                    if status == "503" {
                        response.headers.insert(
                            "Retry-After".into(),
                            header("Seconds to wait before retrying."),
                        );
                    }
                    if status == "200" && is_cart {
                        response.headers.insert(
                            "Causal-Token".into(),
                            header(
                                "The causal position of this answer, equal to the body's `token`.",
                            ),
                        );
                    }
                    if status == "200" && is_write {
                        response.headers.insert(
                            "Idempotent-Replayed".into(),
                            header("`true` when this replays the first answer to the same `Idempotency-Key`."),
                        );
                    }
                }
            }
        }
    }
}

// Documentation functions, one per handler in `routes` and named after it; never called.

/// Whether the node is up, and its region, id, durability mode and applied position.
#[utoipa::path(
    get,
    path = "/health",
    tag = "node",
    responses((status = 200, description = "The node is up", body = Health)),
)]
#[allow(dead_code)]
fn health() {}

/// Replication state, per peer.
#[utoipa::path(
    get,
    path = "/replication",
    tag = "node",
    responses(
        (status = 200, description = "Per-origin progress and per-peer replication state", body = Replication),
        (status = 503, description = "The writer queue is full", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn replication() {}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    responses((
        status = 200,
        description = "Prometheus text format; every label has bounded cardinality",
        body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8",
    )),
)]
#[allow(dead_code)]
fn metrics_text() {}

/// Reads a cart.
#[utoipa::path(
    get,
    path = "/carts/{cart}",
    tag = "carts",
    params(
        ("cart" = String, Path, description = "The cart id", pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"),
    ),
    responses(
        (status = 200, description = "The cart, lines sorted by sku; a cart never written is empty", body = CartView),
        (status = 400, description = "`invalid_id`, `invalid_causal_token`", body = ErrorBody),
        (status = 500, description = "`corrupt_data`: the stored cart cannot be decoded", body = ErrorBody),
        (status = 503, description = "`causal_wait_timeout`, `storage_unavailable`", body = ErrorBody),
        (status = 504, description = "`timeout`", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn get_cart() {}

/// Clears a cart: removes every line it holds.
#[utoipa::path(
    delete,
    path = "/carts/{cart}",
    tag = "carts",
    params(
        ("cart" = String, Path, description = "The cart id", pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"),
    ),
    responses(
        (status = 200, description = "The cart after clearing it (empty)", body = CartView),
        (status = 400, description = "`invalid_id`, `invalid_idempotency_key`, `invalid_causal_token`", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 500, description = "`corrupt_data`", body = ErrorBody),
        (status = 503, description = "`overloaded`, `storage_unavailable`, `causal_wait_timeout`, `shutting_down`", body = ErrorBody),
        (status = 504, description = "`timeout` (the write may still apply: retry with the same `Idempotency-Key`)", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn clear_cart() {}

/// Adds `quantity` of `sku` to the cart (add wins over a concurrent remove).
#[utoipa::path(
    post,
    path = "/carts/{cart}/items",
    tag = "carts",
    params(
        ("cart" = String, Path, description = "The cart id", pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"),
    ),
    request_body(content = AddBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The cart after the add", body = CartView),
        (status = 400, description = "`invalid_id` (the cart or the body's sku), `malformed_json`, `invalid_idempotency_key`, `invalid_causal_token`, `bad_body`", body = ErrorBody),
        (status = 409, description = "`cart_full`, `line_full`, `cart_too_large`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: beyond `body_bytes_max`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_quantity`, `idempotency_key_reused`", body = ErrorBody),
        (status = 500, description = "`corrupt_data`, `dots_exhausted`", body = ErrorBody),
        (status = 503, description = "`overloaded`, `storage_unavailable`, `causal_wait_timeout`, `shutting_down`", body = ErrorBody),
        (status = 504, description = "`timeout` (the write may still apply: retry with the same `Idempotency-Key`)", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn add_item() {}

/// Sets the quantity of a line; 0 removes it.
#[utoipa::path(
    put,
    path = "/carts/{cart}/items/{sku}",
    tag = "carts",
    params(
        ("cart" = String, Path, description = "The cart id", pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"),
        ("sku" = String, Path, description = "The line's sku", pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"),
    ),
    request_body(content = SetBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The cart after the set (0 removes the line)", body = CartView),
        (status = 400, description = "`invalid_id`, `malformed_json`, `invalid_idempotency_key`, `invalid_causal_token`, `bad_body`", body = ErrorBody),
        (status = 409, description = "`cart_full`, `cart_too_large`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: beyond `body_bytes_max`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_quantity`, `idempotency_key_reused`", body = ErrorBody),
        (status = 500, description = "`corrupt_data`, `dots_exhausted`", body = ErrorBody),
        (status = 503, description = "`overloaded`, `storage_unavailable`, `causal_wait_timeout`, `shutting_down`", body = ErrorBody),
        (status = 504, description = "`timeout` (the write may still apply: retry with the same `Idempotency-Key`)", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn set_item() {}

/// Removes a line.
#[utoipa::path(
    delete,
    path = "/carts/{cart}/items/{sku}",
    tag = "carts",
    params(
        ("cart" = String, Path, description = "The cart id", pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"),
        ("sku" = String, Path, description = "The line's sku", pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"),
    ),
    responses(
        (status = 200, description = "The cart after removing the line (unchanged if it was absent)", body = CartView),
        (status = 400, description = "`invalid_id`, `invalid_idempotency_key`, `invalid_causal_token`", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 500, description = "`corrupt_data`", body = ErrorBody),
        (status = 503, description = "`overloaded`, `storage_unavailable`, `causal_wait_timeout`, `shutting_down`", body = ErrorBody),
        (status = 504, description = "`timeout` (the write may still apply: retry with the same `Idempotency-Key`)", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn remove_item() {}

/// Places an order of exactly the lines observed, and removes them from the cart.
#[utoipa::path(
    post,
    path = "/carts/{cart}/checkout",
    tag = "carts",
    params(
        ("cart" = String, Path, description = "The cart id", pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"),
    ),
    responses(
        (status = 200, description = "The order: exactly the observed lines, now removed from the cart", body = OrderView),
        (status = 400, description = "`invalid_id`, `invalid_idempotency_key`, `invalid_causal_token`", body = ErrorBody),
        (status = 409, description = "`empty_cart`", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 500, description = "`corrupt_data`", body = ErrorBody),
        (status = 503, description = "`overloaded`, `storage_unavailable`, `causal_wait_timeout`, `shutting_down`", body = ErrorBody),
        (status = 504, description = "`timeout` (the write may still apply: retry with the same `Idempotency-Key`)", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn checkout() {}
