//! The Gorse-compatible API under `/api/` (issue 19): Gorse's routes and JSON shapes mapped onto
//! the engine, so that an application written against Gorse (v0.4/v0.5, e.g. with `pygorse`)
//! switches by changing its address. See `docs/gorse.md` for the mapping and what differs.
//!
//! Keys are Bespoke's own, sent in Gorse's `X-API-Key` header (which `authorize` already reads),
//! with the native scopes: `read` for recommendations, neighbors, popular, latest, session
//! recommendations and single items; `write` for feedback, users and item changes. Feedback
//! types are Bespoke event types (`events.weights`); recommendations run the normal pipeline,
//! so saved rules, consent and hidden items apply. Errors keep Bespoke's JSON error shape:
//! Gorse's clients only read the status code and keep the body as text.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use bespoke_algo::{ItemIdx, UserIdx};
use bespoke_store::{ConsentUpdate, Event, Item, ItemUpsert, NewEvent, User, UserUpsert};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::extract::{JsonBody, KeyPath, Params};
use super::{AppState, blocking, validate_key};
use crate::auth::Caller;
use crate::engine::{PopularSort, Recommendations};
use crate::error::ApiError;
use crate::pipeline::request::{CommonIn, Form, RulesIn};
use crate::pipeline::{NeedsAttributes, RankRequest, Source};
use crate::time::{format_rfc3339, now_ms, parse_rfc3339};
use crate::validate::{check_event, check_item};

/// A feedback as Gorse spells it: `POST /api/feedback` items, and the answers of the listings.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Feedback {
    feedback_type: String,
    user_id: String,
    item_id: String,
    /// RFC 3339, or a date (`2022-02-24`, midnight UTC); now when empty or absent.
    #[serde(default)]
    timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(default)]
    comment: String,
}

/// A user as Gorse spells it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GorseUser {
    user_id: String,
    #[serde(default)]
    labels: Value,
    #[serde(default)]
    comment: String,
    /// Gorse's subscriptions: kept as the attribute `subscribe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subscribe: Option<Vec<String>>,
}

/// An item as Gorse spells it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GorseItem {
    item_id: String,
    #[serde(default)]
    is_hidden: bool,
    #[serde(default)]
    categories: Option<Vec<String>>,
    #[serde(default)]
    timestamp: String,
    #[serde(default)]
    labels: Value,
    #[serde(default)]
    comment: String,
}

/// `{"RowAffected": n}`, Gorse's answer to every write.
#[derive(Debug, Serialize)]
pub(crate) struct Affected {
    #[serde(rename = "RowAffected")]
    row_affected: usize,
}

/// A scored item, Gorse's `{"Id", "Score"}`.
#[derive(Debug, Serialize)]
pub(crate) struct Scored {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Score")]
    score: f32,
}

/// Attribute keys that hold Gorse fields without a Bespoke counterpart.
const LABELS: &str = "labels";
const COMMENT: &str = "comment";
const SUBSCRIBE: &str = "subscribe";
const TIMESTAMP: &str = "timestamp";

/// Gorse's `Labels` as attributes: an object's fields become attributes (so rules and the
/// content model see them one by one); anything else (v0.4's list of strings) is kept whole
/// under `labels`.
fn labels_into(labels: Value, attributes: &mut Map<String, Value>) {
    match labels {
        Value::Null => {}
        Value::Object(m) => attributes.extend(m),
        other => {
            attributes.insert(LABELS.into(), other);
        }
    }
}

/// The reverse of [`labels_into`], given the keys that hold other Gorse fields.
fn labels_from(attributes: &Map<String, Value>, others: &[&str]) -> Value {
    if let Some(v) = attributes.get(LABELS) {
        return v.clone();
    }
    let rest: Map<String, Value> = attributes
        .iter()
        .filter(|(k, _)| !others.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rest.is_empty() {
        Value::Array(Vec::new())
    } else {
        Value::Object(rest)
    }
}

/// Gorse's timestamps: RFC 3339, or a bare date; `None` (now) when empty.
fn parse_time(field: &str, s: &str) -> Result<Option<i64>, ApiError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    parse_rfc3339(&full)
        .map(Some)
        .map_err(|e| ApiError::invalid(field, format!("{field} {e}")))
}

fn key_limit(state: &AppState) -> usize {
    state.engine.settings().limits.max_key_bytes
}

/// `POST /api/feedback`: feedback becomes events of type `FeedbackType` (a configured event
/// type), stored in one batch.
pub(crate) async fn insert_feedback(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Vec<Feedback>>,
) -> Result<Json<Affected>, ApiError> {
    let settings = state.engine.settings();
    let max = settings.limits.max_batch_events;
    if body.len() > max {
        return Err(ApiError::invalid(
            "feedback",
            format!(
                "a batch holds at most {max} feedback (limits.max_batch_events), got {}",
                body.len()
            ),
        ));
    }
    if body.is_empty() {
        return Ok(Json(Affected { row_affected: 0 }));
    }
    let now = now_ms();
    let mut events = Vec::with_capacity(body.len());
    for (i, f) in body.into_iter().enumerate() {
        let timestamp = parse_time(&format!("[{i}].Timestamp"), &f.timestamp)?;
        let context = (!f.comment.is_empty()).then(|| {
            let mut m = Map::new();
            m.insert(COMMENT.into(), Value::String(f.comment));
            m
        });
        let event = NewEvent {
            event_id: None,
            user: f.user_id,
            item: f.item_id,
            kind: f.feedback_type,
            value: f.value,
            timestamp,
            context,
        };
        check_event(settings, state.engine.weights(), &event, now).map_err(|e| {
            let field = match e.field.as_str() {
                "user" => "UserId",
                "item" => "ItemId",
                "type" => "FeedbackType",
                "timestamp" => "Timestamp",
                "value" => "Value",
                other => other,
            };
            ApiError::invalid(format!("[{i}].{field}"), e.message)
        })?;
        events.push(event);
    }
    let engine = state.engine.clone();
    let appended = blocking(move || engine.ingest(events).map_err(ApiError::from)).await?;
    let duplicates = appended.iter().filter(|a| a.duplicate).count();
    state
        .metrics
        .record_events((appended.len() - duplicates) as u64, duplicates as u64);
    Ok(Json(Affected {
        row_affected: appended.len(),
    }))
}

/// `GET /api/user/{key}/feedback` (and `/{type}`): the user's feedback, newest first, up to
/// `limits.max_page_size`.
async fn user_feedback(
    state: AppState,
    key: String,
    kind: Option<String>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let limit = state.engine.settings().limits.max_page_size;
    let engine = state.engine.clone();
    let k = key.clone();
    let page = blocking(move || engine.user_events(&k, None, limit).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("user", &key))?;
    let out = page
        .items
        .into_iter()
        .filter(|e| is_feedback(e, kind.as_deref()))
        .map(feedback_of)
        .collect();
    Ok(Json(out))
}

/// Whether an event is feedback (impressions are not) of type `kind` when one is asked for.
fn is_feedback(e: &Event, kind: Option<&str>) -> bool {
    e.kind != crate::settings::IMPRESSION && kind.is_none_or(|k| k == e.kind)
}

fn feedback_of(e: Event) -> Feedback {
    Feedback {
        comment: e
            .context
            .as_ref()
            .and_then(|c| c.get(COMMENT))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        feedback_type: e.kind,
        user_id: e.user,
        item_id: e.item,
        timestamp: format_rfc3339(e.timestamp),
        value: e.value,
    }
}

pub(crate) async fn list_user_feedback(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    user_feedback(state, key, None).await
}

pub(crate) async fn list_user_feedback_of_type(
    State(state): State<AppState>,
    Path((key, kind)): Path<(String, String)>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    user_feedback(state, key, Some(kind)).await
}

fn user_upsert(state: &AppState, u: GorseUser, at: &str) -> Result<UserUpsert, ApiError> {
    validate_key(&format!("{at}UserId"), &u.user_id, key_limit(state))?;
    let mut attributes = Map::new();
    labels_into(u.labels, &mut attributes);
    if !u.comment.is_empty() {
        attributes.insert(COMMENT.into(), Value::String(u.comment));
    }
    if let Some(s) = u.subscribe {
        attributes.insert(SUBSCRIBE.into(), s.into());
    }
    Ok(UserUpsert {
        key: u.user_id,
        attributes,
        consent: ConsentUpdate::default(),
        default_consent: state.engine.settings().consent.defaults(),
        restore_times: None,
    })
}

async fn put_users(
    state: AppState,
    caller: Caller,
    users: Vec<GorseUser>,
    batch: bool,
) -> Result<Json<Affected>, ApiError> {
    let max = state.engine.settings().limits.max_batch_events;
    if users.len() > max {
        return Err(ApiError::invalid(
            "users",
            format!("a batch holds at most {max} users (limits.max_batch_events)"),
        ));
    }
    let upserts = users
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            let at = if batch {
                format!("[{i}].")
            } else {
                String::new()
            };
            user_upsert(&state, u, &at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if upserts.is_empty() {
        return Ok(Json(Affected { row_affected: 0 }));
    }
    let engine = state.engine.clone();
    let n = blocking(move || {
        engine
            .put_users_by(&caller.prefix, upserts)
            .map(|v| v.len())
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(Affected { row_affected: n }))
}

/// `POST /api/user`: creates or replaces a user (consent left as it was, or the defaults).
pub(crate) async fn insert_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<GorseUser>,
) -> Result<Json<Affected>, ApiError> {
    put_users(state, caller, vec![body], false).await
}

/// `POST /api/users`.
pub(crate) async fn insert_users(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Vec<GorseUser>>,
) -> Result<Json<Affected>, ApiError> {
    put_users(state, caller, body, true).await
}

/// `GET /api/user/{key}`.
pub(crate) async fn get_user(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<GorseUser>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    let user = blocking(move || engine.get_user(&k).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("user", &key))?;
    Ok(Json(gorse_user(user)))
}

fn gorse_user(user: User) -> GorseUser {
    let a = &user.attributes;
    GorseUser {
        labels: labels_from(a, &[COMMENT, SUBSCRIBE]),
        comment: a
            .get(COMMENT)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        subscribe: a
            .get(SUBSCRIBE)
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        user_id: user.key,
    }
}

/// `DELETE /api/user/{key}`: erases the user, as `DELETE /v1/users/{key}` does.
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
) -> Result<Json<Affected>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    blocking(move || {
        engine
            .erase_user(&caller.prefix, &k, false)
            .map_err(ApiError::from)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("user", &key))?;
    Ok(Json(Affected { row_affected: 1 }))
}

fn item_upsert(state: &AppState, i: GorseItem, at: &str) -> Result<ItemUpsert, ApiError> {
    let max_key = key_limit(state);
    validate_key(&format!("{at}ItemId"), &i.item_id, max_key)?;
    let mut attributes = Map::new();
    labels_into(i.labels, &mut attributes);
    if let Some(t) = parse_time(&format!("{at}Timestamp"), &i.timestamp)? {
        attributes.insert(TIMESTAMP.into(), Value::String(format_rfc3339(t)));
    }
    let mut text = std::collections::BTreeMap::new();
    if !i.comment.is_empty() {
        text.insert(COMMENT.to_owned(), i.comment);
    }
    let upsert = ItemUpsert {
        key: i.item_id,
        categories: i.categories.unwrap_or_default(),
        text,
        numeric: Default::default(),
        attributes,
        embeddings: Default::default(),
        available: !i.is_hidden,
    };
    check_item(&upsert, max_key)
        .map_err(|f| ApiError::invalid(format!("{at}{}", f.field), f.message))?;
    Ok(upsert)
}

async fn put_items(
    state: AppState,
    items: Vec<GorseItem>,
    batch: bool,
) -> Result<Json<Affected>, ApiError> {
    let max = state.engine.settings().limits.max_batch_events;
    if items.len() > max {
        return Err(ApiError::invalid(
            "items",
            format!("a batch holds at most {max} items (limits.max_batch_events)"),
        ));
    }
    let upserts = items
        .into_iter()
        .enumerate()
        .map(|(i, it)| {
            let at = if batch {
                format!("[{i}].")
            } else {
                String::new()
            };
            item_upsert(&state, it, &at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if upserts.is_empty() {
        return Ok(Json(Affected { row_affected: 0 }));
    }
    let engine = state.engine.clone();
    let n = blocking(move || {
        let max = engine.settings().limits.max_categories;
        let all: Vec<String> = upserts
            .iter()
            .flat_map(|u| u.categories.iter().cloned())
            .collect();
        let known = engine.categories_after(&all);
        if known > max {
            return Err(too_many_categories(known, max));
        }
        engine
            .put_items(upserts)
            .map(|v| v.len())
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(Affected { row_affected: n }))
}

/// `POST /api/item`: creates or replaces an item.
pub(crate) async fn insert_item(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GorseItem>,
) -> Result<Json<Affected>, ApiError> {
    put_items(state, vec![body], false).await
}

/// `POST /api/items`.
pub(crate) async fn insert_items(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Vec<GorseItem>>,
) -> Result<Json<Affected>, ApiError> {
    put_items(state, body, true).await
}

/// `GET /api/item/{key}`.
pub(crate) async fn get_item(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<GorseItem>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    let item = blocking(move || engine.get_item(&k).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("item", &key))?;
    Ok(Json(gorse_item(item)))
}

fn gorse_item(item: Item) -> GorseItem {
    let a = &item.attributes;
    GorseItem {
        is_hidden: !item.available,
        categories: Some(item.categories.clone()),
        timestamp: a
            .get(TIMESTAMP)
            .and_then(Value::as_str)
            .map_or_else(|| format_rfc3339(item.created_at), str::to_owned),
        labels: labels_from(a, &[TIMESTAMP]),
        comment: item.text.get(COMMENT).cloned().unwrap_or_default(),
        item_id: item.key,
    }
}

/// The changes of `PATCH /api/item/{key}`: what is given replaces the stored value.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct ItemPatch {
    is_hidden: Option<bool>,
    categories: Option<Vec<String>>,
    timestamp: Option<String>,
    labels: Option<Value>,
    comment: Option<String>,
}

/// The stored item as an upsert that writes it back unchanged.
fn unchanged(item: Item) -> ItemUpsert {
    ItemUpsert {
        key: item.key,
        categories: item.categories,
        text: item.text,
        numeric: item.numeric,
        attributes: item.attributes,
        embeddings: item.embeddings,
        available: item.available,
    }
}

/// Reads an item, changes it and writes it back, on the blocking pool. Two changes of one item
/// at the same moment may both read the same version; the later write wins, as with Gorse.
async fn change_item(
    state: &AppState,
    key: String,
    change: impl FnOnce(&mut ItemUpsert) -> Result<(), ApiError> + Send + 'static,
) -> Result<Json<Affected>, ApiError> {
    let max_key = key_limit(state);
    validate_key("key", &key, max_key)?;
    let engine = state.engine.clone();
    blocking(move || {
        let item = engine
            .get_item(&key)?
            .ok_or_else(|| ApiError::not_found("item", &key))?;
        let mut upsert = unchanged(item);
        change(&mut upsert)?;
        check_item(&upsert, max_key).map_err(|f| ApiError::invalid(f.field, f.message))?;
        let max = engine.settings().limits.max_categories;
        let known = engine.categories_after(&upsert.categories);
        if known > max {
            return Err(too_many_categories(known, max));
        }
        engine.put_items(vec![upsert])?;
        Ok(Json(Affected { row_affected: 1 }))
    })
    .await
}

/// `PATCH /api/item/{key}`: changes the fields given, keeps the others.
pub(crate) async fn patch_item(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    JsonBody(patch): JsonBody<ItemPatch>,
) -> Result<Json<Affected>, ApiError> {
    let timestamp = match &patch.timestamp {
        Some(t) => parse_time("Timestamp", t)?,
        None => None,
    };
    change_item(&state, key, move |u| {
        if let Some(hidden) = patch.is_hidden {
            u.available = !hidden;
        }
        if let Some(c) = patch.categories {
            u.categories = c;
        }
        if let Some(t) = timestamp {
            u.attributes
                .insert(TIMESTAMP.into(), Value::String(format_rfc3339(t)));
        }
        if let Some(labels) = patch.labels {
            // New labels replace the old ones, not the other Gorse fields kept as attributes.
            let kept = u.attributes.remove(TIMESTAMP);
            u.attributes.clear();
            labels_into(labels, &mut u.attributes);
            if let Some(t) = kept {
                u.attributes.insert(TIMESTAMP.into(), t);
            }
        }
        if let Some(c) = patch.comment {
            if c.is_empty() {
                u.text.remove(COMMENT);
            } else {
                u.text.insert(COMMENT.to_owned(), c);
            }
        }
        Ok(())
    })
    .await
}

/// `PUT /api/item/{key}/category/{category}`: adds a category (once).
pub(crate) async fn add_item_category(
    State(state): State<AppState>,
    Path((key, category)): Path<(String, String)>,
) -> Result<Json<Affected>, ApiError> {
    change_item(&state, key, move |u| {
        if !u.categories.contains(&category) {
            u.categories.push(category);
        }
        Ok(())
    })
    .await
}

/// `DELETE /api/item/{key}/category/{category}`: removes a category.
pub(crate) async fn remove_item_category(
    State(state): State<AppState>,
    Path((key, category)): Path<(String, String)>,
) -> Result<Json<Affected>, ApiError> {
    change_item(&state, key, move |u| {
        u.categories.retain(|c| *c != category);
        Ok(())
    })
    .await
}

fn too_many_categories(known: usize, max: usize) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "too_many_categories",
        format!(
            "these items would bring the distinct categories to {known}; the limit (limits.max_categories) is {max}"
        ),
    )
    .at("Categories")
}

/// Gorse's cursor listings: `n` (default 10, at most `limits.max_page_size`) and `cursor`, an
/// opaque string that is empty at the start and in the answer after the last page. Bespoke's
/// cursor is the last internal id (or event sequence number) of the page.
fn cursor_page(state: &AppState, params: &Params) -> Result<(usize, Option<u64>), ApiError> {
    params.allow(&["n", "cursor"])?;
    let max = state.engine.settings().limits.max_page_size;
    let n = params.int("n", 10.min(max), 1, max)?;
    let cursor = match params.get("cursor").unwrap_or_default() {
        "" => None,
        c => Some(c.parse::<u64>().map_err(|_| {
            ApiError::invalid(
                "cursor",
                "cursor must be a value from an earlier answer's Cursor",
            )
        })?),
    };
    Ok((n, cursor))
}

/// `{"Cursor": ..., "<name>": [...]}`: the next page's cursor, empty after the last page.
fn listing<T: Serialize>(name: &str, rows: Vec<T>, full: bool, last: Option<u64>) -> Json<Value> {
    let cursor = match last {
        Some(l) if full => l.to_string(),
        _ => String::new(),
    };
    let mut out = Map::new();
    out.insert("Cursor".into(), Value::String(cursor));
    out.insert(
        name.into(),
        serde_json::to_value(rows).unwrap_or(Value::Null),
    );
    Json(Value::Object(out))
}

fn idx_u32(cursor: Option<u64>) -> Result<Option<u32>, ApiError> {
    cursor
        .map(|c| u32::try_from(c).map_err(|_| ApiError::invalid("cursor", "cursor out of range")))
        .transpose()
}

/// `GET /api/users`: every user, in creation order. With pseudonymized keys
/// (`privacy.pseudonymize_user_keys`) the listing shows the pseudonyms.
pub(crate) async fn list_users(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let (n, cursor) = cursor_page(&state, &params)?;
    let after = idx_u32(cursor)?.map(UserIdx);
    let engine = state.engine.clone();
    let users =
        blocking(move || engine.store().scan_users(after, n).map_err(ApiError::from)).await?;
    let last = users.last().map(|u| u64::from(u.idx.0));
    let full = users.len() == n;
    Ok(listing(
        "Users",
        users.into_iter().map(gorse_user).collect(),
        full,
        last,
    ))
}

/// `GET /api/items`: every item, in creation order.
pub(crate) async fn list_items(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let (n, cursor) = cursor_page(&state, &params)?;
    let after = idx_u32(cursor)?.map(ItemIdx);
    let engine = state.engine.clone();
    let items =
        blocking(move || engine.store().scan_items(after, n).map_err(ApiError::from)).await?;
    let last = items.last().map(|i| u64::from(i.idx.0));
    let full = items.len() == n;
    Ok(listing(
        "Items",
        items.into_iter().map(gorse_item).collect(),
        full,
        last,
    ))
}

async fn feedback_listing(
    state: AppState,
    params: Params,
    kind: Option<String>,
) -> Result<Json<Value>, ApiError> {
    let (n, cursor) = cursor_page(&state, &params)?;
    let engine = state.engine.clone();
    let events = blocking(move || {
        engine
            .store()
            .scan_events(cursor.unwrap_or(0), n)
            .map_err(ApiError::from)
    })
    .await?;
    let last = events.last().map(|e| e.seq);
    let full = events.len() == n;
    // A page may hold fewer than n feedback (impressions and other types are skipped), never
    // more; the cursor still moves past what was read.
    let rows = events
        .into_iter()
        .filter(|e| is_feedback(e, kind.as_deref()))
        .map(feedback_of)
        .collect();
    Ok(listing("Feedback", rows, full, last))
}

/// `GET /api/feedback`: all feedback in the order it was stored. With pseudonymized keys the
/// user ids are the pseudonyms.
pub(crate) async fn list_feedback(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    feedback_listing(state, params, None).await
}

/// `GET /api/feedback/{type}`: the feedback of one type.
pub(crate) async fn list_feedback_of_type(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    feedback_listing(state, params, Some(kind)).await
}

/// The feedback of one user on one item, newest first, of type `kind` when given (every
/// page of the user's events is read: a user's history is bounded by what they did).
async fn pair_feedback(
    state: AppState,
    user: String,
    item: String,
    kind: Option<String>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    check_pair(&state, &user, &item, kind.as_deref())?;
    let limit = state.engine.settings().limits.max_page_size;
    let engine = state.engine.clone();
    let events = blocking(move || {
        let mut out = Vec::new();
        let mut before = None;
        loop {
            let Some(page) = engine.user_events(&user, before, limit)? else {
                break;
            };
            let full = page.items.len() == limit;
            before = page.items.last().map(|e| e.seq);
            out.extend(
                page.items
                    .into_iter()
                    .filter(|e| e.item == item && is_feedback(e, kind.as_deref())),
            );
            if !full || before.is_none() {
                break;
            }
        }
        Ok::<_, ApiError>(out)
    })
    .await?;
    Ok(Json(events.into_iter().map(feedback_of).collect()))
}

/// The keys and type of a pair route: valid keys, and a type that is not `impression`
/// (impressions are not feedback).
fn check_pair(
    state: &AppState,
    user: &str,
    item: &str,
    kind: Option<&str>,
) -> Result<(), ApiError> {
    validate_key("user", user, key_limit(state))?;
    validate_key("item", item, key_limit(state))?;
    if let Some(k) = kind {
        validate_key("type", k, key_limit(state))?;
        if k == crate::settings::IMPRESSION {
            return Err(ApiError::invalid(
                "type",
                "impressions are not feedback: they are not listed or deleted here",
            ));
        }
    }
    Ok(())
}

/// `GET /api/feedback/{user}/{item}`: the user's feedback on the item.
pub(crate) async fn list_pair_feedback(
    State(state): State<AppState>,
    Path((user, item)): Path<(String, String)>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    pair_feedback(state, user, item, None).await
}

/// `GET /api/feedback/{type}/{user}/{item}`: the user's feedback of one type on the item.
pub(crate) async fn list_pair_feedback_of_type(
    State(state): State<AppState>,
    Path((kind, user, item)): Path<(String, String, String)>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    pair_feedback(state, user, item, Some(kind)).await
}

/// Deletes the user's feedback on the item (of type `kind` when given) from the store and from
/// serving; `RowAffected` counts the events deleted (0 when there were none).
async fn delete_pair(
    state: AppState,
    caller: Caller,
    user: String,
    item: String,
    kind: Option<String>,
) -> Result<Json<Affected>, ApiError> {
    check_pair(&state, &user, &item, kind.as_deref())?;
    let engine = state.engine.clone();
    let deleted = blocking(move || {
        engine
            .delete_pair_events(&caller.prefix, "feedback.delete", &user, &item, kind)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(Affected {
        row_affected: deleted,
    }))
}

/// `DELETE /api/feedback/{user}/{item}`: deletes the user's feedback on the item.
pub(crate) async fn delete_pair_feedback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((user, item)): Path<(String, String)>,
) -> Result<Json<Affected>, ApiError> {
    delete_pair(state, caller, user, item, None).await
}

/// `DELETE /api/feedback/{type}/{user}/{item}`: deletes the user's feedback of one type on
/// the item.
pub(crate) async fn delete_pair_feedback_of_type(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kind, user, item)): Path<(String, String, String)>,
) -> Result<Json<Affected>, ApiError> {
    delete_pair(state, caller, user, item, Some(kind)).await
}

/// `DELETE /api/item/{key}`: deletes the item and its events.
pub(crate) async fn delete_item(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<Affected>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let engine = state.engine.clone();
    let k = key.clone();
    blocking(move || engine.delete_item(&k).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("item", &key))?;
    Ok(Json(Affected { row_affected: 1 }))
}

/// Gorse's paging, `n` (default 10) and `offset`: the request asks the pipeline for
/// `offset + n` items and the answer skips `offset`.
struct Paging {
    n: usize,
    offset: usize,
}

fn paging(state: &AppState, params: &Params, allowed: &[&str]) -> Result<Paging, ApiError> {
    params.allow(allowed)?;
    let max = state.engine.settings().limits.max_n;
    let n = params.int("n", 10.min(max), 1, max)?;
    let offset = params.int("offset", 0, 0, max - n)?;
    Ok(Paging { n, offset })
}

/// The pipeline request for `offset + n` items in `categories`, with the saved rules checked.
fn request(
    state: &AppState,
    paging: &Paging,
    categories: Vec<String>,
) -> Result<RankRequest, ApiError> {
    let settings = state.engine.settings();
    let mut req = CommonIn {
        n: Some((paging.offset + paging.n) as i64),
        categories,
        ..CommonIn::default()
    }
    .validate(Form::Query, settings, None)?;
    RulesIn::default().apply(&mut req, settings)?;
    state
        .engine
        .serving()
        .check_rules(&req, req.n)
        .map_err(|p| ApiError::invalid(p.field, p.message))?;
    Ok(req)
}

fn scored(recs: Recommendations, offset: usize) -> Vec<Scored> {
    recs.items
        .into_iter()
        .skip(offset)
        .map(|r| Scored {
            id: r.item,
            score: r.score,
        })
        .collect()
}

/// Runs the pipeline for a user, reading their stored attributes on the blocking pool when a
/// user without history needs them.
async fn rank_user(
    state: &AppState,
    key: String,
    req: RankRequest,
) -> Result<Option<Recommendations>, ApiError> {
    let source = Source::User {
        key: &key,
        attributes: None,
    };
    match state.engine.serving().rank(source, &req) {
        Ok(out) => Ok(out),
        Err(NeedsAttributes) => {
            let engine = state.engine.clone();
            blocking(move || {
                let attributes = engine.user_attributes(&key);
                let source = Source::User {
                    key: &key,
                    attributes: Some(&attributes),
                };
                engine
                    .serving()
                    .rank(source, &req)
                    .map_err(|_| ApiError::internal("ranking", &"attributes were asked for twice"))
            })
            .await
        }
    }
}

/// `GET /api/recommend/{key}` (also with a trailing `/` and `/{category}`): the user's
/// recommendations, items they gave feedback on left out. An array of item ids, or of
/// `{"Id", "Score"}` with `X-API-Version: 2` (what `pygorse` sends).
async fn recommend_in(
    state: AppState,
    headers: HeaderMap,
    key: String,
    category: Option<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let paging = paging(&state, &params, &["n", "offset"])?;
    let categories = category.into_iter().filter(|c| !c.is_empty()).collect();
    let req = request(&state, &paging, categories)?;
    let recs = rank_user(&state, key, req).await?;
    let items = recs.map(|r| scored(r, paging.offset)).unwrap_or_default();
    let scores = headers
        .get("x-api-version")
        .is_some_and(|v| v.as_bytes() == b"2");
    let out = if scores {
        serde_json::to_value(items)
    } else {
        serde_json::to_value(items.into_iter().map(|s| s.id).collect::<Vec<_>>())
    };
    out.map(Json)
        .map_err(|e| ApiError::internal("recommendations", &e))
}

pub(crate) async fn recommend(
    State(state): State<AppState>,
    headers: HeaderMap,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    recommend_in(state, headers, key, None, params).await
}

pub(crate) async fn recommend_category(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((key, category)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    recommend_in(state, headers, key, Some(category), params).await
}

/// `GET /api/item/{key}/neighbors`: similar items (the configured similar-items model).
pub(crate) async fn neighbors(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let paging = paging(&state, &params, &["n", "offset"])?;
    let req = request(&state, &paging, Vec::new())?;
    let source = Source::Similar {
        item: &key,
        model: None,
    };
    let out = state
        .engine
        .serving()
        .rank(source, &req)
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::not_found("item", &key))?;
    Ok(Json(scored(out, paging.offset)))
}

async fn ranked_popular(
    state: &AppState,
    params: &Params,
    sort: PopularSort,
    category: Option<String>,
) -> Result<Json<Vec<Scored>>, ApiError> {
    let paging = paging(state, params, &["n", "offset"])?;
    let req = request(state, &paging, category.into_iter().collect())?;
    let out = state
        .engine
        .serving()
        .rank(Source::Popular { sort, window: None }, &req)
        .ok()
        .flatten();
    Ok(Json(
        out.map(|r| scored(r, paging.offset)).unwrap_or_default(),
    ))
}

/// `GET /api/popular`: the most popular items by total event weight.
pub(crate) async fn popular(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    ranked_popular(&state, &params, PopularSort::Count, None).await
}

/// `GET /api/popular/{category}`.
pub(crate) async fn popular_category(
    State(state): State<AppState>,
    Path(category): Path<String>,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    ranked_popular(&state, &params, PopularSort::Count, Some(category)).await
}

/// `GET /api/latest`: Bespoke keeps no index of items by time, so "latest" is the trending
/// ranking (popularity decayed by event age), which favours what is new and picked up.
pub(crate) async fn latest(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    ranked_popular(&state, &params, PopularSort::Trending, None).await
}

/// `GET /api/latest/{category}`.
pub(crate) async fn latest_category(
    State(state): State<AppState>,
    Path(category): Path<String>,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    ranked_popular(&state, &params, PopularSort::Trending, Some(category)).await
}

/// `POST /api/session/recommend`: recommendations for a session given as Gorse feedback (its
/// items, oldest first by `Timestamp`; users and types are not used, nothing is stored).
pub(crate) async fn session_recommend(
    State(state): State<AppState>,
    params: Params,
    JsonBody(body): JsonBody<Vec<Feedback>>,
) -> Result<Json<Vec<Scored>>, ApiError> {
    let paging = paging(&state, &params, &["n", "offset"])?;
    let settings = state.engine.settings();
    let max = settings.serving.max_session_items;
    if body.len() > max {
        return Err(ApiError::invalid(
            "feedback",
            format!("at most {max} feedback (serving.max_session_items)"),
        ));
    }
    let mut items = Vec::with_capacity(body.len());
    for (i, f) in body.into_iter().enumerate() {
        validate_key(
            &format!("[{i}].ItemId"),
            &f.item_id,
            settings.limits.max_key_bytes,
        )?;
        let at = parse_time(&format!("[{i}].Timestamp"), &f.timestamp)?.unwrap_or(i64::MAX);
        items.push((at, i, f.item_id));
    }
    items.sort_unstable();
    let items: Vec<(String, f32)> = items.into_iter().map(|(_, _, k)| (k, 1.0)).collect();
    let req = request(&state, &paging, Vec::new())?;
    let out = state
        .engine
        .serving()
        .rank(Source::Session(&items), &req)
        .ok()
        .flatten();
    Ok(Json(
        out.map(|r| scored(r, paging.offset)).unwrap_or_default(),
    ))
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(crate) struct Api;
