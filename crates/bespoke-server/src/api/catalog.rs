//! Users and items: `PUT/GET/DELETE /v1/users/{key}` and `/v1/items/{key}`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bespoke_store::{Consent, ConsentUpdate, Item, ItemUpsert, User, UserUpsert};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::extract::{JsonBody, KeyPath};
use super::{AppState, blocking, validate_key};
use crate::error::ApiError;
use crate::time::format_rfc3339;

/// Most categories per item.
const MAX_CATEGORIES: usize = 100;
/// Longest embedding vector.
const MAX_EMBEDDING_DIM: usize = 4096;

/// Body of `PUT /v1/users/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserIn {
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(default)]
    consent: ConsentIn,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentIn {
    personalization: Option<bool>,
}

/// A user as returned by the API.
#[derive(Debug, Serialize)]
pub(crate) struct UserOut {
    key: String,
    attributes: Map<String, Value>,
    consent: Consent,
    created_at: String,
    updated_at: String,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        Self {
            key: u.key,
            attributes: u.attributes,
            consent: u.consent,
            created_at: format_rfc3339(u.created_at),
            updated_at: format_rfc3339(u.updated_at),
        }
    }
}

/// Answer of a deletion.
#[derive(Debug, Serialize)]
pub(crate) struct DeletedOut {
    key: String,
    deleted: bool,
    events_deleted: u64,
}

fn key_limit(state: &AppState) -> usize {
    state.engine.settings().limits.max_key_bytes
}

pub(crate) async fn put_user(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<UserIn>,
) -> Result<(StatusCode, Json<UserOut>), ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let upsert = UserUpsert {
        key,
        attributes: body.attributes,
        consent: ConsentUpdate {
            personalization: body.consent.personalization,
        },
        default_consent: Consent {
            personalization: state.engine.settings().consent.default_personalization,
        },
    };
    let engine = state.engine.clone();
    let out = blocking(move || engine.put_user(upsert).map_err(ApiError::from)).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out.record.into())))
}

pub(crate) async fn get_user(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<UserOut>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    let user = blocking(move || engine.get_user(&k).map_err(ApiError::from)).await?;
    user.map(|u| Json(u.into()))
        .ok_or_else(|| ApiError::not_found("user", &key))
}

pub(crate) async fn delete_user(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<DeletedOut>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    let deleted = blocking(move || engine.delete_user(&k).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("user", &key))?;
    tracing::info!(target: "serve::privacy", events = deleted.events, "deleted a user and their events");
    Ok(Json(DeletedOut {
        key,
        deleted: true,
        events_deleted: deleted.events,
    }))
}

/// Body of `PUT /v1/items/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemIn {
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    text: BTreeMap<String, String>,
    #[serde(default)]
    numeric: BTreeMap<String, f64>,
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(default)]
    embeddings: BTreeMap<String, Vec<f64>>,
    #[serde(default = "yes")]
    available: bool,
}

fn yes() -> bool {
    true
}

/// An item as returned by the API.
#[derive(Debug, Serialize)]
pub(crate) struct ItemOut {
    key: String,
    categories: Vec<String>,
    text: BTreeMap<String, String>,
    numeric: BTreeMap<String, f64>,
    attributes: Map<String, Value>,
    embeddings: BTreeMap<String, Vec<f32>>,
    available: bool,
    created_at: String,
    updated_at: String,
}

impl From<Item> for ItemOut {
    fn from(i: Item) -> Self {
        Self {
            key: i.key,
            categories: i.categories,
            text: i.text,
            numeric: i.numeric,
            attributes: i.attributes,
            embeddings: i.embeddings,
            available: i.available,
            created_at: format_rfc3339(i.created_at),
            updated_at: format_rfc3339(i.updated_at),
        }
    }
}

fn validate_item(key: String, body: ItemIn, max_key: usize) -> Result<ItemUpsert, ApiError> {
    if body.categories.len() > MAX_CATEGORIES {
        return Err(ApiError::invalid(
            "categories",
            format!("at most {MAX_CATEGORIES} categories per item"),
        ));
    }
    for (i, c) in body.categories.iter().enumerate() {
        validate_key(&format!("categories[{i}]"), c, max_key)?;
    }
    for name in body
        .text
        .keys()
        .chain(body.numeric.keys())
        .chain(body.embeddings.keys())
    {
        validate_key("field name", name, max_key)?;
    }
    for (name, v) in &body.numeric {
        if !v.is_finite() {
            return Err(ApiError::invalid(
                format!("numeric.{name}"),
                "must be a finite number",
            ));
        }
    }
    let mut embeddings = BTreeMap::new();
    for (name, v) in body.embeddings {
        let field = format!("embeddings.{name}");
        if v.is_empty() || v.len() > MAX_EMBEDDING_DIM {
            return Err(ApiError::invalid(
                field,
                format!(
                    "an embedding has 1 to {MAX_EMBEDDING_DIM} dimensions, got {}",
                    v.len()
                ),
            ));
        }
        let vector: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        if let Some(pos) = vector.iter().position(|x| !x.is_finite()) {
            return Err(ApiError::invalid(
                format!("{field}[{pos}]"),
                "embedding values must be finite and within the range of a 32-bit float",
            ));
        }
        embeddings.insert(name, vector);
    }
    Ok(ItemUpsert {
        key,
        categories: body.categories,
        text: body.text,
        numeric: body.numeric,
        attributes: body.attributes,
        embeddings,
        available: body.available,
    })
}

pub(crate) async fn put_item(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<ItemIn>,
) -> Result<(StatusCode, Json<ItemOut>), ApiError> {
    let max_key = key_limit(&state);
    validate_key("key", &key, max_key)?;
    let upsert = validate_item(key, body, max_key)?;
    let engine = state.engine.clone();
    let out = blocking(move || engine.put_item(upsert).map_err(ApiError::from)).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out.record.into())))
}

pub(crate) async fn get_item(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<ItemOut>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    let item = blocking(move || engine.get_item(&k).map_err(ApiError::from)).await?;
    item.map(|i| Json(i.into()))
        .ok_or_else(|| ApiError::not_found("item", &key))
}

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
