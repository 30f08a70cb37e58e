//! Request parsing: path parameters by name (raw, never percent-decoded), the
//! `Idempotency-Key` and `Causal-Token` headers, and JSON bodies within `body_bytes_max`.

use super::error::ApiError;
use super::{AppState, ServerSettings};
use crate::node::Idempotency;
use crate::token::CausalToken;
use crate::validate::{CartId, IdempotencyKey, Sku};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use meridian_clocks::ReplicaId;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::time::Duration;

/// Most bytes of a refused body read (and discarded) so that the client reads the answer;
/// the connection is closed past it.
pub const BODY_DRAIN_BYTES_MAX: usize = 64 << 20;

/// The raw (not percent-decoded) text of the path parameter `name`: the segment of the
/// request path where the matched route template has `{name}`. Ids never need escaping, so
/// a `%` in it is refused by the id's parse, with a message that says so.
fn raw_param<'a>(parts: &'a Parts, name: &str) -> Result<&'a str, ApiError> {
    let template = parts
        .extensions
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let found = template.and_then(|t| {
        t.split('/')
            .zip(parts.uri.path().split('/'))
            .find(|(t, _)| t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) == Some(name))
            .map(|(_, raw)| raw)
    });
    found.ok_or_else(|| {
        tracing::error!(
            param = name,
            ?template,
            "a handler asked for a parameter its route lacks"
        );
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (logged)",
        )
    })
}

/// `{cart}` of `/carts/{cart}…`, parsed.
#[derive(Debug)]
pub(super) struct CartPath {
    pub(super) cart: CartId,
}

impl<S: Send + Sync> FromRequestParts<S> for CartPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let cart = CartId::parse(raw_param(parts, "cart")?)?;
        Ok(CartPath { cart })
    }
}

/// `{cart}` and `{sku}` of `/carts/{cart}/items/{sku}`, parsed (the cart first).
#[derive(Debug)]
pub(super) struct ItemPath {
    pub(super) cart: CartId,
    pub(super) sku: Sku,
}

impl<S: Send + Sync> FromRequestParts<S> for ItemPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let cart = CartId::parse(raw_param(parts, "cart")?)?;
        let sku = Sku::parse(raw_param(parts, "sku")?)?;
        Ok(ItemPath { cart, sku })
    }
}

/// The request's `Idempotency-Key`, with the fingerprint a retry must match.
pub(super) fn idempotency(
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

fn causal_token(headers: &HeaderMap) -> Result<Option<CausalToken>, ApiError> {
    let Some(v) = headers.get("causal-token") else {
        return Ok(None);
    };
    v.to_str()
        .map_err(|_| "not ASCII".to_owned())
        .and_then(|s| {
            s.parse()
                .map_err(|e: crate::token::TokenError| e.to_string())
        })
        .map(Some)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_causal_token", m))
}

/// Waits until this node has applied what the request's `Causal-Token` covers: for every
/// origin the token names, that origin's writes up to its seq.
pub(super) async fn await_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = causal_token(headers)? else {
        return Ok(());
    };
    let mut applied = state.applied.clone();
    let covered = async {
        let _ = applied
            .wait_for(|a| first_missing(a, &token).is_none())
            .await;
    };
    match tokio::time::timeout(state.settings.causal_wait, covered).await {
        Ok(()) => Ok(()),
        Err(_) => Err(causal_wait_timeout(state, &token)),
    }
}

/// The first `(origin, seq)` of `want` that `have` does not cover.
fn first_missing(have: &CausalToken, want: &CausalToken) -> Option<(ReplicaId, u64)> {
    want.entries()
        .iter()
        .find(|(n, s)| have.seq_of(*n) < *s)
        .copied()
}

fn causal_wait_timeout(state: &AppState, want: &CausalToken) -> ApiError {
    let have = state.applied.borrow().clone();
    let message = match first_missing(&have, want) {
        Some((ReplicaId(n), s)) if n == state.node_id.0 => format!(
            "this node has applied its writes up to {}, but the token needs {s}; retry later",
            have.seq_of(ReplicaId(n))
        ),
        Some((ReplicaId(n), s)) => {
            let region = state.regions.borrow().get(&ReplicaId(n)).map_or_else(
                || "a region not connected now".to_owned(),
                |r| format!("region {r}"),
            );
            format!(
                "waiting for {region} (node {n}): this node has applied its writes up to {}, \
                 but the token needs {s}; they have not replicated here yet. Retry later, or \
                 read from the region that wrote them",
                have.seq_of(ReplicaId(n))
            )
        }
        None => "the token's position was reached just now; retry".to_owned(),
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "causal_wait_timeout",
        message,
    )
    .retry_after(1)
}

/// Reads the body, refusing it (413) as soon as it passes `limit`.
async fn read_body(body: Body, limit: usize, drain_for: Duration) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the request body failed: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                discard(body, drain_for);
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards the rest of a refused body in the background, so that a client still
/// sending it reads the answer rather than a reset: at most [`BODY_DRAIN_BYTES_MAX`] bytes
/// for at most `drain_for`. The answer does not wait for it, so a body that never comes
/// delays nothing.
fn discard(body: Body, drain_for: Duration) {
    let drain = async move {
        let mut body = body;
        let mut total = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            total = total.saturating_add(frame.data_ref().map_or(0, |d| d.len()));
            if total > BODY_DRAIN_BYTES_MAX {
                break;
            }
        }
    };
    tokio::spawn(tokio::time::timeout(drain_for, drain));
}

/// Refuses a body without reading it: a client waiting for `100 Continue` never gets it
/// (and never sends the body); any other body is [discarded](discard).
fn refuse_body(headers: &HeaderMap, body: Body, drain_for: Duration) {
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        discard(body, drain_for);
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body exceeds {limit} bytes (config key body_bytes_max)"),
    )
}

/// Checks the declared size, the encoding and the content type, and reads the body. A
/// refusal answers at once, without waiting for the body.
pub(super) async fn json_bytes(
    headers: &HeaderMap,
    body: Body,
    settings: &ServerSettings,
) -> Result<Bytes, ApiError> {
    let (limit, drain_for) = (settings.body_bytes_max, settings.request_timeout);
    let refused = check_body_headers(headers, limit);
    if let Err(e) = refused {
        refuse_body(headers, body, drain_for);
        return Err(e);
    }
    read_body(body, limit, drain_for).await
}

/// Refuses a body by its headers alone: a `Content-Length` past `limit` (413), a
/// `Content-Encoding` other than `identity` (415), a `Content-Type` other than JSON (415).
fn check_body_headers(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    for encoding in headers.get_all(header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(encoding.as_bytes());
        let unsupported = text
            .split(',')
            .map(str::trim)
            .find(|e| !e.eq_ignore_ascii_case("identity"));
        if let Some(e) = unsupported {
            return Err(unsupported_encoding(e));
        }
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(unsupported_content_type(ct));
    }
    Ok(())
}

fn unsupported_encoding(encoding: &str) -> ApiError {
    let shown: String = encoding.chars().take(40).collect();
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "Content-Encoding {shown:?} is not supported; send the body unencoded (no \
             Content-Encoding, or identity)"
        ),
    )
}

fn unsupported_content_type(ct: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        if ct.is_empty() {
            "missing Content-Type: send the body as JSON with Content-Type: application/json"
                .to_owned()
        } else {
            format!("Content-Type {ct:?} is not supported; send application/json")
        },
    )
}

/// Parses a JSON body; `example` shows what was expected.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T, ApiError> {
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

/// `POST /carts/{cart}/items`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddBody {
    #[schema(pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$")]
    pub(super) sku: String,
    #[schema(minimum = 1, maximum = 10000)]
    pub(super) quantity: u64,
}

/// `PUT /carts/{cart}/items/{sku}`: 0 removes the line.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetBody {
    #[schema(minimum = 0, maximum = 10000)]
    pub(super) quantity: u64,
}
