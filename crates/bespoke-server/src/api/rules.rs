//! Saved business rules (`/v1/rules`, admin, audited) and per-user hidden items
//! (`/v1/users/{key}/hidden`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{Value, json};

use super::extract::{JsonBody, KeyParam, KeyPath};
use super::{AppState, blocking, validate_key};
use crate::auth::Caller;
use crate::engine::{HiddenItem, RuleError};
use crate::error::ApiError;
use crate::rules::spec::{RuleSpec, SavedRule};

/// The `{key}` path parameter of the rule routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct RuleName {
    /// The rule's name
    key: String,
}

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
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RuleList)]
pub(crate) struct RulesOut {
    /// By name.
    rules: Vec<SavedRule>,
}

/// Saved business rules, by name
#[utoipa::path(get, path = "/v1/rules", operation_id = "listRules",
    responses((status = 200, description = "Rules", body = RulesOut)))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<RulesOut> {
    Json(RulesOut {
        rules: state.engine.rules(),
    })
}

/// A saved rule
#[utoipa::path(get, path = "/v1/rules/{key}", operation_id = "getRule", params(RuleName),
    responses((status = 200, description = "The rule", body = SavedRule),
        (status = 400), (status = 404)))]
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

/// Create or replace a saved rule (audited); applied by default to its routes
///
/// Checked before anything is stored: every expression must compile against the catalog's
/// attributes, slots must be distinct and not taken by another saved rule on a shared route.
#[utoipa::path(put, path = "/v1/rules/{key}", operation_id = "putRule", params(RuleName),
    request_body = RuleSpec,
    responses((status = 200, description = "Replaced", body = SavedRule),
        (status = 201, description = "Created", body = SavedRule),
        (status = 400), (status = 409), (status = 413), (status = 415), (status = 507)))]
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

/// Delete a saved rule (audited)
#[utoipa::path(delete, path = "/v1/rules/{key}", operation_id = "deleteRule", params(RuleName),
    responses((status = 200, description = "Deleted: `{\"deleted\": name}`"),
        (status = 400), (status = 404), (status = 507)))]
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

/// The items a user hid, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Hidden)]
pub(crate) struct HiddenOut {
    /// The user.
    user: String,
    /// Newest first.
    items: Vec<HiddenItem>,
}

/// A hidden item's state after a change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HiddenChange {
    /// The user.
    user: String,
    /// The item.
    item: String,
    /// Whether the item is now on the user's block list.
    hidden: bool,
}

/// The `{key}` and `{item}` of `/v1/users/{key}/hidden/{item}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
struct HiddenParams {
    /// The user's key
    key: String,
    /// The item's key
    item: String,
}

/// Items the user hid (block list and hiding events such as not_interested), newest first
#[utoipa::path(get, path = "/v1/users/{key}/hidden", operation_id = "getHidden", params(KeyParam),
    responses((status = 200, description = "Hidden items", body = HiddenOut),
        (status = 400), (status = 404)))]
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
) -> Result<Json<HiddenChange>, ApiError> {
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
    Ok(Json(HiddenChange {
        user: key,
        item,
        hidden: blocked,
    }))
}

/// Hide an item from the user on every ranking route
#[utoipa::path(put, path = "/v1/users/{key}/hidden/{item}", operation_id = "hideItem",
    params(HiddenParams),
    responses((status = 200, description = "Hidden", body = HiddenChange),
        (status = 400), (status = 404), (status = 507)))]
pub(crate) async fn hide(
    State(state): State<AppState>,
    Path(path): Path<(String, String)>,
) -> Result<Json<HiddenChange>, ApiError> {
    block(state, path, true).await
}

/// Show an item again (undoes a block or a hiding event)
#[utoipa::path(delete, path = "/v1/users/{key}/hidden/{item}", operation_id = "unhideItem",
    params(HiddenParams),
    responses((status = 200, description = "Shown again", body = HiddenChange),
        (status = 400), (status = 404), (status = 507)))]
pub(crate) async fn unhide(
    State(state): State<AppState>,
    Path(path): Path<(String, String)>,
) -> Result<Json<HiddenChange>, ApiError> {
    block(state, path, false).await
}
