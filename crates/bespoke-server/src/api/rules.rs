//! Saved business rules (`/v1/rules`, admin, audited) and per-user hidden items
//! (`/v1/users/{key}/hidden`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{Value, json};

use super::extract::{JsonBody, KeyPath};
use super::{AppState, blocking, validate_key};
use crate::auth::Caller;
use crate::engine::{HiddenItem, RuleError};
use crate::error::ApiError;
use crate::rules::spec::{RuleSpec, SavedRule};

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::Invalid(p) => ApiError::invalid(p.field, p.message),
            RuleError::TooMany(max) => ApiError::new(
                StatusCode::CONFLICT,
                "too_many_rules",
                format!("at most {max} saved rules (rules.max_saved_rules); delete one first"),
            ),
            RuleError::Store(e) => e.into(),
        }
    }
}

/// Answer of `GET /v1/rules`.
#[derive(Debug, Serialize)]
pub(crate) struct RulesOut {
    rules: Vec<SavedRule>,
}

pub(crate) async fn list(State(state): State<AppState>) -> Json<RulesOut> {
    Json(RulesOut {
        rules: state.engine.rules(),
    })
}

pub(crate) async fn get(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
) -> Result<Json<SavedRule>, ApiError> {
    state
        .engine
        .rules()
        .into_iter()
        .find(|r| r.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("rule", &name))
}

/// `PUT /v1/rules/{name}`: checked against the catalog and the other rules before anything is
/// stored.
pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
    JsonBody(spec): JsonBody<RuleSpec>,
) -> Result<(StatusCode, Json<SavedRule>), ApiError> {
    validate_key("name", &name, state.engine.settings().limits.max_key_bytes)?;
    let engine = state.engine.clone();
    let (rule, created) = blocking(move || {
        let detail = serde_json::to_value(&spec).ok();
        let out = engine
            .put_rule(SavedRule {
                name: name.clone(),
                spec,
            })
            .map_err(ApiError::from)?;
        engine
            .access()
            .audit(&caller.prefix, "rule.put", Some(&name), detail);
        Ok(out)
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(rule)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
) -> Result<Json<Value>, ApiError> {
    let engine = state.engine.clone();
    let n = name.clone();
    let deleted = blocking(move || {
        let deleted = engine.delete_rule(&n).map_err(ApiError::from)?;
        if deleted {
            engine
                .access()
                .audit(&caller.prefix, "rule.delete", Some(&n), None);
        }
        Ok(deleted)
    })
    .await?;
    if !deleted {
        return Err(ApiError::not_found("rule", &name));
    }
    Ok(Json(json!({ "deleted": name })))
}

/// Answer of `GET /v1/users/{key}/hidden`.
#[derive(Debug, Serialize)]
pub(crate) struct HiddenOut {
    user: String,
    items: Vec<HiddenItem>,
}

pub(crate) async fn hidden(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<HiddenOut>, ApiError> {
    validate_key("key", &key, state.engine.settings().limits.max_key_bytes)?;
    let items = state
        .engine
        .hidden_items(&key)
        .ok_or_else(|| ApiError::not_found("user", &key))?;
    Ok(Json(HiddenOut { user: key, items }))
}

/// The user and item of `/v1/users/{key}/hidden/{item}`.
async fn block(
    state: AppState,
    (key, item): (String, String),
    blocked: bool,
) -> Result<Json<Value>, ApiError> {
    let max = state.engine.settings().limits.max_key_bytes;
    validate_key("key", &key, max)?;
    validate_key("item", &item, max)?;
    let engine = state.engine.clone();
    let (k, i) = (key.clone(), item.clone());
    blocking(move || engine.set_block(&k, &i, blocked).map_err(ApiError::from))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no user {key:?} or no item {item:?}"),
            )
        })?;
    Ok(Json(
        json!({ "user": key, "item": item, "hidden": blocked }),
    ))
}

/// `PUT /v1/users/{key}/hidden/{item}`: hide the item from the user.
pub(crate) async fn hide(
    State(state): State<AppState>,
    Path(path): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    block(state, path, true).await
}

/// `DELETE /v1/users/{key}/hidden/{item}`: show it again (also undoes a hiding event).
pub(crate) async fn unhide(
    State(state): State<AppState>,
    Path(path): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    block(state, path, false).await
}
