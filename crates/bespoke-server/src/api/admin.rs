//! `/v1/keys` and `/v1/audit` (admin scope).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use bespoke_store::KeyRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::{JsonBody, KeyPath, Params};
use super::{AppState, blocking};
use crate::auth::{Caller, parse_scopes};
use crate::error::ApiError;
use crate::time::format_rfc3339;

/// Longest key name, in bytes.
const MAX_NAME_BYTES: usize = 200;

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyIn {
    /// For people, 1 to 200 bytes.
    name: String,
    /// Scopes: read, write, admin (each includes the ones before it).
    #[schema(inline, value_type = Vec<ScopeName>)]
    scopes: Vec<String>,
    /// Requests per second; 0 = unlimited; default auth.rate_per_second.
    #[serde(default)]
    #[schema(minimum = 0)]
    rate_per_second: Option<f64>,
}

/// A scope's name.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum ScopeName {
    Read,
    Write,
    Admin,
}

/// An API key as listed: never the key itself, except in the answer to its creation.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Key)]
pub(crate) struct KeyOut {
    /// The key's first characters: how to name it (revoke, audit).
    prefix: String,
    name: String,
    scopes: Vec<String>,
    rate_per_second: Option<f64>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    /// The key itself; only in the answer to its creation, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl From<&KeyRecord> for KeyOut {
    fn from(r: &KeyRecord) -> Self {
        Self {
            prefix: r.prefix.clone(),
            name: r.name.clone(),
            scopes: r.scopes.clone(),
            rate_per_second: r.rate_per_second,
            created_at: format_rfc3339(r.created_at),
            revoked_at: r.revoked_at.map(format_rfc3339),
            key: None,
        }
    }
}

/// Answer of `GET /v1/keys`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Keys)]
pub(crate) struct KeysOut {
    keys: Vec<KeyOut>,
}

/// Create an API key (audited); the answer holds the key, shown once
#[utoipa::path(post, path = "/v1/keys", operation_id = "createKey", request_body = KeyIn,
    responses((status = 201, description = "Created; `key` is shown only now", body = KeyOut),
        (status = 400), (status = 413), (status = 415), (status = 507)))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<KeyIn>,
) -> Result<(StatusCode, Json<KeyOut>), ApiError> {
    if body.name.trim().is_empty() || body.name.len() > MAX_NAME_BYTES {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    if body.name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "name must not hold control characters",
        ));
    }
    let scopes =
        parse_scopes(&body.scopes).map_err(|e| ApiError::invalid("scopes", e.to_string()))?;
    if let Some(r) = body.rate_per_second
        && !(r.is_finite() && r >= 0.0)
    {
        return Err(ApiError::invalid(
            "rate_per_second",
            "rate_per_second must be 0 (unlimited) or positive",
        ));
    }
    let engine = state.engine.clone();
    let (secret, record) = blocking(move || {
        engine
            .access()
            .create_key(&caller.prefix, &body.name, &scopes, body.rate_per_second)
            .map_err(ApiError::from)
    })
    .await?;
    let mut out = KeyOut::from(&record);
    out.key = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

/// API keys (never the keys themselves)
#[utoipa::path(get, path = "/v1/keys", operation_id = "listKeys",
    responses((status = 200, description = "Keys", body = KeysOut)))]
pub(crate) async fn list_keys(State(state): State<AppState>) -> Result<Json<KeysOut>, ApiError> {
    let engine = state.engine.clone();
    let keys = blocking(move || engine.access().keys().map_err(ApiError::from)).await?;
    Ok(Json(KeysOut {
        keys: keys.iter().map(KeyOut::from).collect(),
    }))
}

/// Revoke an API key by its prefix (audited); it stops working at once here, on other nodes within a second
#[utoipa::path(delete, path = "/v1/keys/{key}", operation_id = "revokeKey",
    params(("key" = String, Path, description = "The key's prefix, e.g. bsk_3f9a1c2e")),
    responses((status = 200, description = "Revoked", body = KeyOut),
        (status = 400), (status = 404), (status = 507)))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(prefix): KeyPath,
) -> Result<Json<KeyOut>, ApiError> {
    let engine = state.engine.clone();
    let p = prefix.clone();
    let record = blocking(move || {
        engine
            .access()
            .revoke_key(&caller.prefix, &p)
            .map_err(ApiError::from)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("API key", &prefix))?;
    Ok(Json(KeyOut::from(&record)))
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditPage)]
pub(crate) struct AuditPage {
    /// Newest first.
    entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// One audited action.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    /// Its sequence number.
    seq: u64,
    /// When.
    #[schema(format = DateTime)]
    at: String,
    /// Key prefix, cli, or anonymous.
    actor: String,
    /// What was done (key.create, user.erase, model.activate, ...).
    action: String,
    /// What it was done to.
    target: Option<String>,
    /// Details, by action.
    #[schema(value_type = Option<Object>)]
    detail: Option<Value>,
}

/// The query of `GET /v1/audit` (doc only: read with `Params`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct AuditQuery {
    /// Entries per page, 1 to limits.max_page_size; default 100
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// A `next_cursor` from the page before
    cursor: Option<String>,
}

/// The audit log, newest first: key changes, exports, erasures, consent changes, retrains
#[utoipa::path(get, path = "/v1/audit", operation_id = "getAudit", params(AuditQuery),
    responses((status = 200, description = "A page", body = AuditPage), (status = 400)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<AuditPage>, ApiError> {
    let limits = &state.engine.settings().limits;
    params.allow(&["limit", "cursor"])?;
    let limit = params.int(
        "limit",
        100.min(limits.max_page_size),
        1,
        limits.max_page_size,
    )?;
    let before = match params.get("cursor") {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            ApiError::invalid("cursor", "cursor must be a value returned as next_cursor")
        })?),
    };
    let engine = state.engine.clone();
    let page = blocking(move || {
        engine
            .access()
            .audit_log(before, limit)
            .map_err(ApiError::from)
    })
    .await?;
    let entries = page
        .items
        .into_iter()
        .map(|e| AuditEntry {
            seq: e.seq,
            at: format_rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail: e.detail,
        })
        .collect();
    Ok(Json(AuditPage {
        entries,
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    /// The document's `KeyIn` says exactly what `POST /v1/keys` reads.
    #[test]
    fn key_request_schema_matches_the_type() {
        crate::openapi::tests::assert_request_schema::<super::KeyIn>("KeyIn");
    }
}
