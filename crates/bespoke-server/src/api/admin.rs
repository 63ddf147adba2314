//! `/v1/keys` and `/v1/audit` (admin scope).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use bespoke_store::KeyRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{JsonBody, KeyPath, Params};
use super::{AppState, blocking};
use crate::auth::{Caller, parse_scopes};
use crate::error::ApiError;
use crate::time::format_rfc3339;

/// Longest key name, in bytes.
const MAX_NAME_BYTES: usize = 200;

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyIn {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    rate_per_second: Option<f64>,
}

fn key_json(r: &KeyRecord) -> Value {
    json!({
        "prefix": r.prefix,
        "name": r.name,
        "scopes": r.scopes,
        "rate_per_second": r.rate_per_second,
        "created_at": format_rfc3339(r.created_at),
        "revoked_at": r.revoked_at.map(format_rfc3339),
    })
}

pub(crate) async fn create_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<KeyIn>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let mut out = key_json(&record);
    out["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

pub(crate) async fn list_keys(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let engine = state.engine.clone();
    let keys = blocking(move || engine.access().keys().map_err(ApiError::from)).await?;
    Ok(Json(
        json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(prefix): KeyPath,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(key_json(&record)))
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
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
    let entries: Vec<Value> = page
        .items
        .iter()
        .map(|e| {
            json!({ "seq": e.seq, "at": format_rfc3339(e.at), "actor": e.actor, "action": e.action,
                    "target": e.target, "detail": e.detail })
        })
        .collect();
    Ok(Json(
        json!({ "entries": entries, "next_cursor": page.next.map(|n| n.to_string()) }),
    ))
}
