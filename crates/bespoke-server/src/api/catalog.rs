//! Users and items: `PUT/GET/DELETE /v1/users/{key}` and `/v1/items/{key}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use bespoke_store::{ConsentUpdate, UserUpsert};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::extract::{JsonBody, KeyParam, KeyPath, Params};
use super::{AppState, blocking, validate_key};
use crate::auth::Caller;
use crate::engine::ErasureReceipt;
use crate::error::ApiError;
use crate::validate::check_item;
use crate::wire::{ConsentJson, ItemJson, UserJson};

/// Body of `PUT /v1/users/{key}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserIn {
    /// Attributes, replacing the stored ones as a whole.
    #[serde(default, deserialize_with = "crate::strict::object")]
    #[schema(value_type = Object)]
    attributes: Map<String, Value>,
    /// The flags to set; the others keep their value (or the defaults, for a new user).
    #[serde(default)]
    consent: ConsentJson,
}

/// Answer of a deletion.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Deleted)]
pub(crate) struct DeletedOut {
    /// The key deleted.
    key: String,
    /// Always true (an unknown key is a 404).
    deleted: bool,
    /// Events deleted with it.
    events_deleted: u64,
}

fn key_limit(state: &AppState) -> usize {
    state.engine.settings().limits.max_key_bytes
}

/// Create or replace a user's attributes and consent
#[utoipa::path(put, path = "/v1/users/{key}", operation_id = "putUser", params(KeyParam),
    request_body = UserIn,
    responses((status = 200, description = "Updated", body = UserJson),
        (status = 201, description = "Created", body = UserJson),
        (status = 400), (status = 413), (status = 415), (status = 507)))]
pub(crate) async fn put_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<UserIn>,
) -> Result<(StatusCode, Json<UserJson>), ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let upsert = UserUpsert {
        key,
        attributes: body.attributes,
        consent: ConsentUpdate {
            personalization: body.consent.personalization,
            training: body.consent.training,
            marketing: body.consent.marketing,
        },
        default_consent: state.engine.settings().consent.defaults(),
        restore_times: None,
    };
    let engine = state.engine.clone();
    let out = blocking(move || {
        engine
            .put_users_by(&caller.prefix, vec![upsert])
            .map(|mut v| v.remove(0))
            .map_err(ApiError::from)
    })
    .await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out.record.into())))
}

/// Get a user
#[utoipa::path(get, path = "/v1/users/{key}", operation_id = "getUser", params(KeyParam),
    responses((status = 200, description = "The user", body = UserJson),
        (status = 400), (status = 404)))]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<UserJson>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    let user = blocking(move || engine.get_user(&k).map_err(ApiError::from)).await?;
    user.map(|u| Json(u.into()))
        .ok_or_else(|| ApiError::not_found("user", &key))
}

/// The answer of an erasure: the receipt, plus the key (which the stored receipt does not hold).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Erased)]
pub(crate) struct ErasedOut {
    #[serde(flatten)]
    receipt: ErasureReceipt,
    /// The erased user's key: only in this answer.
    key: String,
    /// Always true.
    deleted: bool,
    /// Events removed (as `removed.events`).
    events_deleted: u64,
}

/// The query of `DELETE /v1/users/{key}` (doc only: read with `Params`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct EraseQuery {
    /// Train a model without the user now and answer when it is active
    #[param(default = false)]
    retrain: Option<bool>,
}

/// The `{key}` of an erasure receipt.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
struct ErasureParam {
    /// The receipt's erasure_id
    key: String,
}

/// Erase a user: profile, events, derived serving state at once; stored model rows at once; the model itself at the next training (or now, with retrain=true)
///
/// Answers with an erasure receipt, also available later from GET /v1/erasures/{id}.
#[utoipa::path(delete, path = "/v1/users/{key}", operation_id = "deleteUser",
    params(KeyParam, EraseQuery),
    responses((status = 200, description = "Erased", body = ErasedOut),
        (status = 400), (status = 404), (status = 409), (status = 507)))]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<ErasedOut>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    params.allow(&["retrain"])?;
    let retrain = params.bool("retrain", false)?;
    let engine = state.engine.clone();
    let k = key.clone();
    let receipt = blocking(move || {
        engine
            .erase_user(&caller.prefix, &k, retrain)
            .map_err(ApiError::from)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("user", &key))?;
    tracing::info!(target: "serve::privacy", events = receipt.removed.events, erasure = %receipt.erasure_id, "erased a user");
    Ok(Json(ErasedOut {
        events_deleted: receipt.removed.events,
        receipt,
        key,
        deleted: true,
    }))
}

/// Everything held about a user: profile, consent, every event, and what was derived (history, user vector); `bespoke import` takes it back
#[utoipa::path(get, path = "/v1/users/{key}/export", operation_id = "exportUser",
    params(KeyParam),
    responses((status = 200, description = "The export", body = crate::wire::UserExport),
        (status = 400), (status = 404)))]
pub(crate) async fn export_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
) -> Result<Json<crate::wire::UserExport>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    blocking(move || {
        engine
            .export_user(&caller.prefix, &k)
            .map_err(ApiError::from)
    })
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("user", &key))
}

/// An erasure receipt
#[utoipa::path(get, path = "/v1/erasures/{key}", operation_id = "getErasure",
    params(ErasureParam),
    responses((status = 200, description = "The receipt", body = ErasureReceipt),
        (status = 400), (status = 404)))]
pub(crate) async fn get_erasure(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
) -> Result<Json<ErasureReceipt>, ApiError> {
    let engine = state.engine.clone();
    let i = id.clone();
    blocking(move || engine.erasure(&i).map_err(ApiError::from))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("erasure", &id))
}

/// Create or replace an item
///
/// A new item (or one without events) is placed by its content at once: recommendable before
/// the next training.
#[utoipa::path(put, path = "/v1/items/{key}", operation_id = "putItem", params(KeyParam),
    request_body = ItemJson,
    responses((status = 200, description = "Updated", body = ItemJson),
        (status = 201, description = "Created", body = ItemJson),
        (status = 400), (status = 409), (status = 413), (status = 415), (status = 422),
        (status = 507)))]
pub(crate) async fn put_item(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<ItemJson>,
) -> Result<(StatusCode, Json<ItemJson>), ApiError> {
    let max_key = key_limit(&state);
    validate_key("key", &key, max_key)?;
    if body.key.as_ref().is_some_and(|k| *k != key) {
        return Err(ApiError::invalid(
            "key",
            "the key in the body differs from the key in the path",
        ));
    }
    let upsert = body.into_upsert(key);
    check_item(&upsert, max_key).map_err(|f| ApiError::invalid(f.field, f.message))?;
    let engine = state.engine.clone();
    let out = blocking(move || {
        let max = engine.settings().limits.max_categories;
        let known = engine.categories_after(&upsert.categories);
        if known > max {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_categories",
                format!(
                    "this item would bring the distinct categories to {known}; the limit (limits.max_categories) is {max}"
                ),
            )
            .at("categories"));
        }
        engine.put_item(upsert).map_err(ApiError::from)
    })
    .await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out.record.into())))
}

/// Get an item
#[utoipa::path(get, path = "/v1/items/{key}", operation_id = "getItem", params(KeyParam),
    responses((status = 200, description = "The item", body = ItemJson),
        (status = 400), (status = 404)))]
pub(crate) async fn get_item(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<ItemJson>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    let item = blocking(move || engine.get_item(&k).map_err(ApiError::from)).await?;
    item.map(|i| Json(i.into()))
        .ok_or_else(|| ApiError::not_found("item", &key))
}

/// Delete an item and all events on it
#[utoipa::path(delete, path = "/v1/items/{key}", operation_id = "deleteItem", params(KeyParam),
    responses((status = 200, description = "Deleted", body = DeletedOut),
        (status = 400), (status = 404), (status = 507)))]
pub(crate) async fn delete_item(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<DeletedOut>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    let deleted = blocking(move || engine.delete_item(&k).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("item", &key))?;
    Ok(Json(DeletedOut {
        key,
        deleted: true,
        events_deleted: deleted.events,
    }))
}
