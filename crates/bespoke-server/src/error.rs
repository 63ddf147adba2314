//! `ApiError`: the one error type of the HTTP layer, rendered as
//! `{"error": {"code", "message", "field"}}` with a 4xx status for the caller's mistakes and a 5xx
//! status only for ours.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer. `code` is stable and meant for programs; `message` is for people.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invalid_field`.
    pub code: &'static str,
    /// What went wrong, in words.
    pub message: String,
    /// Where in the request: a JSON path (`events[3].user`), a query parameter or a path segment.
    pub field: Option<String>,
    /// Seconds after which the request may be sent again, sent as `Retry-After`.
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An error with the given status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Names the field at fault.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Asks the client to wait `secs` seconds before sending the request again (`Retry-After`).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400 `invalid_field`: a value that parses but is not allowed.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", message).at(field)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str, key: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} with key {key:?}"),
        )
    }

    /// 500 `internal`: our fault. The details go to the log, not to the client.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, context, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// `Retry-After` of a 503 `store_unavailable`: the store replaces lost connections on the next
/// call, so a database that is back is used again at once.
const STORE_RETRY_AFTER_SECS: u32 = 1;

impl From<bespoke_store::Error> for ApiError {
    fn from(e: bespoke_store::Error) -> Self {
        use bespoke_store::Error as E;
        match e {
            E::EventConflict { index, event_id } => Self::new(
                StatusCode::CONFLICT,
                "event_conflict",
                format!("event_id {event_id:?} was already used for a different event"),
            )
            .at(format!("events[{index}].event_id")),
            E::ReservedEventId { index, .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                format!("{e}; leave event_id out to get a server-issued one"),
            )
            .at(format!("events[{index}].event_id")),
            E::UnknownUser { index, key } => Self::new(
                StatusCode::NOT_FOUND,
                "unknown_user",
                format!("user {key:?} does not exist and events.create_missing_users is off"),
            )
            .at(format!("events[{index}].user")),
            E::UnknownItem { index, key } => Self::new(
                StatusCode::NOT_FOUND,
                "unknown_item",
                format!("item {key:?} does not exist and events.create_missing_items is off"),
            )
            .at(format!("events[{index}].item")),
            E::DimensionMismatch { ref name, .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "dimension_mismatch",
                e.to_string(),
            )
            .at(format!("embeddings.{name}")),
            E::UnknownModel(v) => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no model version {v}"),
            ),
            E::InvalidInput(msg) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", msg)
            }
            E::StorageFull => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the server's storage is full; nothing of this request was stored",
            ),
            E::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down; retry on another node or later",
            )
            .retry_after(1),
            E::Unavailable(cause) => {
                // The cause (which connection failed, how) is for the operator, not the client.
                tracing::warn!(error = %cause, "the database is unavailable; answered 503");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database cannot be reached right now; retry the request later \
                     (a write may or may not have been stored: events sent again with the same \
                     event_id are stored once)",
                )
                .retry_after(STORE_RETRY_AFTER_SECS)
            }
            other => Self::internal("store", &other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_store_is_a_503_with_retry_after() {
        let e = ApiError::from(bespoke_store::Error::Unavailable(
            "connection refused".into(),
        ));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
        assert!(!e.message.contains("refused"), "the cause stays in the log");
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");
    }
}
