//! [`ApiError`]: the JSON error shape `{"error":{"code","message"}}`, and how the write
//! path's errors map onto it.

use crate::node::NodeError;
use crate::validate::{InputError, InputErrorKind};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An API error: status, machine-readable code, and a message a developer can act on.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 504: the request's deadline passed before it finished; nothing was applied.
    pub(super) fn timeout(timeout: std::time::Duration) -> Self {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the request did not finish within {} ms (config key request_timeout_ms) and \
                 nothing was applied; retry it",
                timeout.as_millis()
            ),
        )
    }

    pub(super) fn retry_after(mut self, secs: u64) -> Self {
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
            NodeError::DotsExhausted(_) => {
                tracing::error!(error = %msg, "node id exhausted its dots; retire it");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "dots_exhausted", msg)
            }
            NodeError::Storage(_) => {
                tracing::error!(error = %msg, "storage failure");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", msg)
                    .retry_after(1)
            }
            // `NodeError` is non-exhaustive: a kind this driver does not know yet.
            _ => {
                tracing::error!(error = %msg, "unmapped write-path error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
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
