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

use std::borrow::Cow;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use bespoke_algo::{ItemIdx, UserIdx};
use bespoke_store::{ConsentUpdate, Event, Item, ItemUpsert, NewEvent, User, UserUpsert};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::{Ref, RefOr, schema::Schema};
use utoipa::{PartialSchema as _, ToSchema};

use super::extract::{JsonBody, KeyParam, KeyPath, Params};
use super::{AppState, blocking, validate_key};
use crate::auth::Caller;
use crate::engine::{PopularSort, Recommendations};
use crate::error::ApiError;
use crate::pipeline::request::{CommonIn, Form, RulesIn};
use crate::pipeline::{NeedsAttributes, RankRequest, Source};
use crate::time::{format_rfc3339, now_ms, parse_rfc3339};
use crate::validate::{check_event, check_item};

/// A feedback as Gorse spells it: `POST /api/feedback` items, and the answers of the listings.
/// Fields Gorse knows and Bespoke does not are accepted and ignored.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = GorseFeedback)]
pub(crate) struct Feedback {
    /// A configured event type (events.weights)
    feedback_type: String,
    user_id: String,
    item_id: String,
    /// RFC 3339, or a date (`2022-02-24`, midnight UTC); now when empty or absent. Answers use
    /// RFC 3339 with milliseconds.
    #[serde(default)]
    timestamp: String,
    /// The event's value (a rating, an amount); absent when the event has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    /// Kept in the event's context as `comment`.
    #[serde(default)]
    comment: String,
}

/// A user as Gorse spells it. Fields Gorse knows and Bespoke does not are accepted and ignored.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GorseUser {
    user_id: String,
    /// An object (its fields become attributes) or a list (kept as the attribute labels)
    #[serde(default)]
    labels: Value,
    /// Kept as the attribute `comment`.
    #[serde(default)]
    comment: String,
    /// Gorse's subscriptions: kept as the attribute `subscribe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subscribe: Option<Vec<String>>,
}

/// An item as Gorse spells it. Fields Gorse knows and Bespoke does not are accepted and ignored.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GorseItem {
    item_id: String,
    /// The opposite of available: a hidden item is not recommended.
    #[serde(default)]
    is_hidden: bool,
    #[serde(default)]
    categories: Option<Vec<String>>,
    /// RFC 3339 or a date, kept as the attribute `timestamp`; answered as the creation time
    /// when the item has none.
    #[serde(default)]
    timestamp: String,
    /// An object (its fields become attributes) or a list (kept as the attribute labels)
    #[serde(default)]
    labels: Value,
    /// Kept as the text field `comment` (the content model reads it).
    #[serde(default)]
    comment: String,
}

/// `{"RowAffected": n}`, Gorse's answer to every write.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GorseAffected)]
pub(crate) struct Affected {
    /// Rows written (or deleted).
    #[serde(rename = "RowAffected")]
    row_affected: usize,
}

/// A scored item, Gorse's `{"Id", "Score"}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GorseScore)]
pub(crate) struct Scored {
    #[serde(rename = "Id")]
    id: String,
    /// Higher is better; comparable within one answer.
    #[serde(rename = "Score")]
    score: f32,
}

/// Gorse's recommendations: item ids, or `{Id, Score}` with `X-API-Version: 2`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Recommended {
    Ids(Vec<String>),
    Scored(Vec<Scored>),
}

// By hand: the derive would make a `oneOf`, which an empty list (both shapes) fails.
impl utoipa::PartialSchema for Recommended {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
        AnyOfBuilder::new()
            .item(
                ArrayBuilder::new()
                    .items(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some("Item ids, best first")),
            )
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(Scored::name()))
                    .description(Some("Items and scores, best first (X-API-Version: 2)")),
            )
            .description(Some(
                "Item ids, or {Id, Score} objects with the header X-API-Version: 2",
            ))
            .into()
    }
}

impl ToSchema for Recommended {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("GorseRecommended")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Scored::name().into_owned(), Scored::schema()));
        <Scored as ToSchema>::schemas(schemas);
    }
}

/// A page of `GET /api/feedback` (and `/{type}`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = GorseFeedbackPage)]
pub(crate) struct FeedbackPage {
    /// The next page's cursor; empty after the last page.
    cursor: String,
    /// May hold fewer than n rows: impressions and other types are skipped.
    feedback: Vec<Feedback>,
}

/// A page of `GET /api/users`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = GorseUserPage)]
pub(crate) struct UserPage {
    /// The next page's cursor; empty after the last page.
    cursor: String,
    users: Vec<GorseUser>,
}

/// A page of `GET /api/items`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = GorseItemPage)]
pub(crate) struct ItemPage {
    /// The next page's cursor; empty after the last page.
    cursor: String,
    items: Vec<GorseItem>,
}

/// Gorse's `n` and `offset` query parameters (see [`Paging`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct PagingParams {
    /// Number of items, 1 to limits.max_n; default 10
    #[param(minimum = 1, default = 10)]
    n: Option<usize>,
    /// Items to skip first, 0 to limits.max_n − n; default 0
    #[param(minimum = 0, default = 0)]
    offset: Option<usize>,
}

/// Gorse's cursor listings' query parameters (see [`cursor_page`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct CursorParams {
    /// Page size, 1 to limits.max_page_size; default 10
    #[param(minimum = 1, default = 10)]
    n: Option<usize>,
    /// Empty for the first page, then the previous answer's Cursor
    cursor: Option<String>,
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

/// Gorse: insert feedback (stored as events of type FeedbackType)
///
/// Each feedback becomes an event of type `FeedbackType`, a configured event type
/// (events.weights); the batch is stored atomically, as `POST /v1/events` stores it, at most
/// limits.max_batch_events feedback. An error names the offending field (`[0].FeedbackType`).
#[utoipa::path(post, path = "/api/feedback", operation_id = "gorseInsertFeedback",
    tag = "Gorse compatibility",
    request_body = [Feedback],
    responses((status = 200, description = "Rows written", body = Affected),
        (status = 400), (status = 404), (status = 409), (status = 413), (status = 415),
        (status = 503), (status = 507)))]
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

/// Gorse: a user's feedback, newest first
///
/// Up to limits.max_page_size feedback (impressions are not feedback).
#[utoipa::path(get, path = "/api/user/{key}/feedback", operation_id = "gorseUserFeedback",
    tag = "Gorse compatibility",
    params(KeyParam),
    responses((status = 200, description = "Feedback", body = [Feedback]),
        (status = 400), (status = 404)))]
pub(crate) async fn list_user_feedback(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    user_feedback(state, key, None).await
}

/// Gorse: a user's feedback of one type, newest first
///
/// Up to limits.max_page_size feedback.
#[utoipa::path(get, path = "/api/user/{key}/feedback/{type}",
    operation_id = "gorseUserFeedbackOfType", tag = "Gorse compatibility",
    params(KeyParam, ("type" = String, Path, description = "A feedback type")),
    responses((status = 200, description = "Feedback", body = [Feedback]),
        (status = 400), (status = 404)))]
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

/// Gorse: create or replace a user
///
/// `Labels` become attributes, `Comment` and `Subscribe` the attributes `comment` and
/// `subscribe`; consent is left as it was (the defaults for a new user).
#[utoipa::path(post, path = "/api/user", operation_id = "gorseInsertUser",
    tag = "Gorse compatibility",
    request_body = GorseUser,
    responses((status = 200, description = "Rows written", body = Affected),
        (status = 400), (status = 413), (status = 415), (status = 507)))]
pub(crate) async fn insert_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<GorseUser>,
) -> Result<Json<Affected>, ApiError> {
    put_users(state, caller, vec![body], false).await
}

/// Gorse: create or replace users
///
/// As `POST /api/user`, at most limits.max_batch_events users.
#[utoipa::path(post, path = "/api/users", operation_id = "gorseInsertUsers",
    tag = "Gorse compatibility",
    request_body = [GorseUser],
    responses((status = 200, description = "Rows written", body = Affected),
        (status = 400), (status = 413), (status = 415), (status = 507)))]
pub(crate) async fn insert_users(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Vec<GorseUser>>,
) -> Result<Json<Affected>, ApiError> {
    put_users(state, caller, body, true).await
}

/// Gorse: get a user
#[utoipa::path(get, path = "/api/user/{key}", operation_id = "gorseGetUser",
    tag = "Gorse compatibility",
    params(KeyParam),
    responses((status = 200, description = "The user", body = GorseUser),
        (status = 400), (status = 404)))]
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

/// Gorse: erase a user (as DELETE /v1/users/{key})
///
/// The user's profile, events, serving state and model rows go.
#[utoipa::path(delete, path = "/api/user/{key}", operation_id = "gorseDeleteUser",
    tag = "Gorse compatibility",
    params(KeyParam),
    responses((status = 200, description = "Erased", body = Affected),
        (status = 400), (status = 404), (status = 409), (status = 507)))]
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

/// Gorse: create or replace an item
///
/// `Categories` become categories, `IsHidden` the opposite of available, `Comment` the text
/// field `comment`, `Labels` attributes, `Timestamp` the attribute `timestamp`.
#[utoipa::path(post, path = "/api/item", operation_id = "gorseInsertItem",
    tag = "Gorse compatibility",
    request_body = GorseItem,
    responses((status = 200, description = "Rows written", body = Affected),
        (status = 400), (status = 409), (status = 413), (status = 415), (status = 507)))]
pub(crate) async fn insert_item(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GorseItem>,
) -> Result<Json<Affected>, ApiError> {
    put_items(state, vec![body], false).await
}

/// Gorse: create or replace items
///
/// As `POST /api/item`, at most limits.max_batch_events items.
#[utoipa::path(post, path = "/api/items", operation_id = "gorseInsertItems",
    tag = "Gorse compatibility",
    request_body = [GorseItem],
    responses((status = 200, description = "Rows written", body = Affected),
        (status = 400), (status = 409), (status = 413), (status = 415), (status = 507)))]
pub(crate) async fn insert_items(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Vec<GorseItem>>,
) -> Result<Json<Affected>, ApiError> {
    put_items(state, body, true).await
}

/// Gorse: get an item
#[utoipa::path(get, path = "/api/item/{key}", operation_id = "gorseGetItem",
    tag = "Gorse compatibility",
    params(KeyParam),
    responses((status = 200, description = "The item", body = GorseItem),
        (status = 400), (status = 404)))]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
#[schema(as = GorseItemPatch)]
pub(crate) struct ItemPatch {
    is_hidden: Option<bool>,
    categories: Option<Vec<String>>,
    /// RFC 3339 or a date
    timestamp: Option<String>,
    /// Replaces the labels
    labels: Option<Value>,
    /// Empty removes the comment
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

/// Gorse: change the fields given, keep the others
///
/// Read-modify-write: of two patches of one item at the same moment, the later wins.
#[utoipa::path(patch, path = "/api/item/{key}", operation_id = "gorsePatchItem",
    tag = "Gorse compatibility",
    params(KeyParam), request_body = ItemPatch,
    responses((status = 200, description = "Changed", body = Affected),
        (status = 400), (status = 404), (status = 409), (status = 413), (status = 415),
        (status = 507)))]
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

/// Gorse: add a category to an item
///
/// Once: an item already in the category is written back unchanged.
#[utoipa::path(put, path = "/api/item/{key}/category/{category}",
    operation_id = "gorseAddItemCategory", tag = "Gorse compatibility",
    params(KeyParam, ("category" = String, Path, description = "The category")),
    responses((status = 200, description = "Changed", body = Affected),
        (status = 400), (status = 404), (status = 409), (status = 507)))]
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

/// Gorse: remove a category from an item
#[utoipa::path(delete, path = "/api/item/{key}/category/{category}",
    operation_id = "gorseRemoveItemCategory", tag = "Gorse compatibility",
    params(KeyParam, ("category" = String, Path, description = "The category")),
    responses((status = 200, description = "Changed", body = Affected),
        (status = 400), (status = 404), (status = 507)))]
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

/// The next page's cursor: the last id of a full page, empty after the last page.
fn next_cursor(full: bool, last: Option<u64>) -> String {
    match last {
        Some(l) if full => l.to_string(),
        _ => String::new(),
    }
}

fn idx_u32(cursor: Option<u64>) -> Result<Option<u32>, ApiError> {
    cursor
        .map(|c| u32::try_from(c).map_err(|_| ApiError::invalid("cursor", "cursor out of range")))
        .transpose()
}

/// Gorse: all users, a page at a time
///
/// In creation order. With pseudonymized keys (privacy.pseudonymize_user_keys) the listing
/// shows the pseudonyms.
#[utoipa::path(get, path = "/api/users", operation_id = "gorseListUsers",
    tag = "Gorse compatibility",
    params(CursorParams),
    responses((status = 200, description = "A page and the next page's cursor", body = UserPage),
        (status = 400)))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<UserPage>, ApiError> {
    let (n, cursor) = cursor_page(&state, &params)?;
    let after = idx_u32(cursor)?.map(UserIdx);
    let engine = state.engine.clone();
    let users =
        blocking(move || engine.store().scan_users(after, n).map_err(ApiError::from)).await?;
    let last = users.last().map(|u| u64::from(u.idx.0));
    let full = users.len() == n;
    Ok(Json(UserPage {
        cursor: next_cursor(full, last),
        users: users.into_iter().map(gorse_user).collect(),
    }))
}

/// Gorse: all items, a page at a time
///
/// In creation order.
#[utoipa::path(get, path = "/api/items", operation_id = "gorseListItems",
    tag = "Gorse compatibility",
    params(CursorParams),
    responses((status = 200, description = "A page and the next page's cursor", body = ItemPage),
        (status = 400)))]
pub(crate) async fn list_items(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<ItemPage>, ApiError> {
    let (n, cursor) = cursor_page(&state, &params)?;
    let after = idx_u32(cursor)?.map(ItemIdx);
    let engine = state.engine.clone();
    let items =
        blocking(move || engine.store().scan_items(after, n).map_err(ApiError::from)).await?;
    let last = items.last().map(|i| u64::from(i.idx.0));
    let full = items.len() == n;
    Ok(Json(ItemPage {
        cursor: next_cursor(full, last),
        items: items.into_iter().map(gorse_item).collect(),
    }))
}

async fn feedback_listing(
    state: AppState,
    params: Params,
    kind: Option<String>,
) -> Result<Json<FeedbackPage>, ApiError> {
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
    let feedback = events
        .into_iter()
        .filter(|e| is_feedback(e, kind.as_deref()))
        .map(feedback_of)
        .collect();
    Ok(Json(FeedbackPage {
        cursor: next_cursor(full, last),
        feedback,
    }))
}

/// Gorse: all feedback in the order stored, a page at a time
///
/// Impressions are not feedback: a page may hold fewer than n rows when they (or, by type,
/// other types) were skipped. With pseudonymized keys the user ids are the pseudonyms.
#[utoipa::path(get, path = "/api/feedback", operation_id = "gorseListFeedback",
    tag = "Gorse compatibility",
    params(CursorParams),
    responses((status = 200, description = "A page and the next page's cursor",
            body = FeedbackPage),
        (status = 400)))]
pub(crate) async fn list_feedback(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<FeedbackPage>, ApiError> {
    feedback_listing(state, params, None).await
}

/// Gorse: the feedback of one type, a page at a time
///
/// In the order stored; a page may hold fewer than n rows when other types were skipped.
#[utoipa::path(get, path = "/api/feedback/{type}", operation_id = "gorseListFeedbackOfType",
    tag = "Gorse compatibility",
    params(("type" = String, Path, description = "A feedback type"), CursorParams),
    responses((status = 200, description = "A page and the next page's cursor",
            body = FeedbackPage),
        (status = 400)))]
pub(crate) async fn list_feedback_of_type(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    params: Params,
) -> Result<Json<FeedbackPage>, ApiError> {
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

/// Gorse: a user's feedback on an item, newest first
#[utoipa::path(get, path = "/api/feedback/{user}/{item}", operation_id = "gorsePairFeedback",
    tag = "Gorse compatibility",
    params(("user" = String, Path, description = "The user's key"),
        ("item" = String, Path, description = "The item's key")),
    responses((status = 200, description = "Feedback", body = [Feedback]), (status = 400)))]
pub(crate) async fn list_pair_feedback(
    State(state): State<AppState>,
    Path((user, item)): Path<(String, String)>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    pair_feedback(state, user, item, None).await
}

/// Gorse: a user's feedback of one type on an item, newest first
#[utoipa::path(get, path = "/api/feedback/{type}/{user}/{item}",
    operation_id = "gorsePairFeedbackOfType", tag = "Gorse compatibility",
    params(("type" = String, Path, description = "A feedback type (not impression)"),
        ("user" = String, Path, description = "The user's key"),
        ("item" = String, Path, description = "The item's key")),
    responses((status = 200, description = "Feedback", body = [Feedback]), (status = 400)))]
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

/// Gorse: delete a user's feedback on an item (as DELETE /v1/users/{key}/events?item=)
///
/// Every type but impressions, from the store and from serving at once. RowAffected counts
/// the events deleted, 0 when there were none. Audited as feedback.delete.
#[utoipa::path(delete, path = "/api/feedback/{user}/{item}",
    operation_id = "gorseDeletePairFeedback", tag = "Gorse compatibility",
    params(("user" = String, Path, description = "The user's key"),
        ("item" = String, Path, description = "The item's key")),
    responses((status = 200, description = "Events deleted", body = Affected),
        (status = 400), (status = 507)))]
pub(crate) async fn delete_pair_feedback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((user, item)): Path<(String, String)>,
) -> Result<Json<Affected>, ApiError> {
    delete_pair(state, caller, user, item, None).await
}

/// Gorse: delete a user's feedback of one type on an item (as DELETE /v1/users/{key}/events?item=&type=)
///
/// From the store and from serving at once. RowAffected counts the events deleted, 0 when
/// there were none. Audited as feedback.delete.
#[utoipa::path(delete, path = "/api/feedback/{type}/{user}/{item}",
    operation_id = "gorseDeletePairFeedbackOfType", tag = "Gorse compatibility",
    params(("type" = String, Path, description = "A feedback type (not impression)"),
        ("user" = String, Path, description = "The user's key"),
        ("item" = String, Path, description = "The item's key")),
    responses((status = 200, description = "Events deleted", body = Affected),
        (status = 400), (status = 507)))]
pub(crate) async fn delete_pair_feedback_of_type(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kind, user, item)): Path<(String, String, String)>,
) -> Result<Json<Affected>, ApiError> {
    delete_pair(state, caller, user, item, Some(kind)).await
}

/// Gorse: delete an item and its events
#[utoipa::path(delete, path = "/api/item/{key}", operation_id = "gorseDeleteItem",
    tag = "Gorse compatibility",
    params(KeyParam),
    responses((status = 200, description = "Deleted", body = Affected),
        (status = 400), (status = 404), (status = 507)))]
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
) -> Result<Json<Recommended>, ApiError> {
    validate_key("key", &key, key_limit(&state))?;
    let paging = paging(&state, &params, &["n", "offset"])?;
    let categories = category.into_iter().filter(|c| !c.is_empty()).collect();
    let req = request(&state, &paging, categories)?;
    let recs = rank_user(&state, key, req).await?;
    let items = recs.map(|r| scored(r, paging.offset)).unwrap_or_default();
    let scores = headers
        .get("x-api-version")
        .is_some_and(|v| v.as_bytes() == b"2");
    Ok(Json(if scores {
        Recommended::Scored(items)
    } else {
        Recommended::Ids(items.into_iter().map(|s| s.id).collect())
    }))
}

/// Gorse: a user's recommendations (items they gave feedback on left out), through the ranking pipeline
///
/// The default model, saved rules, consent and hidden items apply. Also served with a
/// trailing `/`.
#[utoipa::path(get, path = "/api/recommend/{key}", operation_id = "gorseRecommend",
    tag = "Gorse compatibility",
    params(KeyParam, PagingParams, ("X-API-Version" = Option<String>, Header, nullable = false,
            description = "2: answer {Id, Score} objects instead of ids")),
    responses((status = 200, description = "Item ids, or {Id, Score} with X-API-Version: 2",
            body = Recommended),
        (status = 400)))]
pub(crate) async fn recommend(
    State(state): State<AppState>,
    headers: HeaderMap,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<Recommended>, ApiError> {
    recommend_in(state, headers, key, None, params).await
}

/// Gorse: a user's recommendations in a category (items they gave feedback on left out), through the ranking pipeline
///
/// The default model, saved rules, consent and hidden items apply.
#[utoipa::path(get, path = "/api/recommend/{key}/{category}",
    operation_id = "gorseRecommendCategory", tag = "Gorse compatibility",
    params(KeyParam, ("category" = String, Path, description = "Only items in this category"),
        PagingParams, ("X-API-Version" = Option<String>, Header, nullable = false,
            description = "2: answer {Id, Score} objects instead of ids")),
    responses((status = 200, description = "Item ids, or {Id, Score} with X-API-Version: 2",
            body = Recommended),
        (status = 400)))]
pub(crate) async fn recommend_category(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((key, category)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Recommended>, ApiError> {
    recommend_in(state, headers, key, Some(category), params).await
}

/// Gorse: similar items (the configured similar-items model)
///
/// The model is serving.default_similar_model; an item it does not know is a 404.
#[utoipa::path(get, path = "/api/item/{key}/neighbors", operation_id = "gorseNeighbors",
    tag = "Gorse compatibility",
    params(KeyParam, PagingParams),
    responses((status = 200, description = "Items, best first", body = [Scored]),
        (status = 400), (status = 404)))]
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

/// Gorse: popular items by total event weight
#[utoipa::path(get, path = "/api/popular", operation_id = "gorsePopular",
    tag = "Gorse compatibility",
    params(PagingParams),
    responses((status = 200, description = "Items, best first", body = [Scored]),
        (status = 400)))]
pub(crate) async fn popular(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    ranked_popular(&state, &params, PopularSort::Count, None).await
}

/// Gorse: popular items in a category
#[utoipa::path(get, path = "/api/popular/{category}", operation_id = "gorsePopularCategory",
    tag = "Gorse compatibility",
    params(("category" = String, Path, description = "Only items in this category"),
        PagingParams),
    responses((status = 200, description = "Items, best first", body = [Scored]),
        (status = 400)))]
pub(crate) async fn popular_category(
    State(state): State<AppState>,
    Path(category): Path<String>,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    ranked_popular(&state, &params, PopularSort::Count, Some(category)).await
}

/// Gorse: trending items (popularity decayed by event age); Bespoke keeps no index of items by time
///
/// The trending ranking favours what is new and already picked up; an item nobody has touched
/// does not show.
#[utoipa::path(get, path = "/api/latest", operation_id = "gorseLatest", tag = "Gorse compatibility",
    params(PagingParams),
    responses((status = 200, description = "Items, best first", body = [Scored]),
        (status = 400)))]
pub(crate) async fn latest(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    ranked_popular(&state, &params, PopularSort::Trending, None).await
}

/// Gorse: trending items in a category
#[utoipa::path(get, path = "/api/latest/{category}", operation_id = "gorseLatestCategory",
    tag = "Gorse compatibility",
    params(("category" = String, Path, description = "Only items in this category"),
        PagingParams),
    responses((status = 200, description = "Items, best first", body = [Scored]),
        (status = 400)))]
pub(crate) async fn latest_category(
    State(state): State<AppState>,
    Path(category): Path<String>,
    params: Params,
) -> Result<Json<Vec<Scored>>, ApiError> {
    ranked_popular(&state, &params, PopularSort::Trending, Some(category)).await
}

/// Gorse: recommendations for a session given as feedback (nothing is stored)
///
/// The feedback's items, oldest first by `Timestamp`, are the session, as in
/// `POST /v1/recommendations`; users and types are not used. At most
/// serving.max_session_items feedback.
#[utoipa::path(post, path = "/api/session/recommend", operation_id = "gorseSessionRecommend",
    tag = "Gorse compatibility",
    params(PagingParams), request_body = [Feedback],
    responses((status = 200, description = "Items, best first", body = [Scored]),
        (status = 400), (status = 413), (status = 415)))]
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
#[openapi(paths(
    insert_feedback,
    list_feedback,
    list_feedback_of_type,
    list_pair_feedback,
    delete_pair_feedback,
    list_pair_feedback_of_type,
    delete_pair_feedback_of_type,
    list_user_feedback,
    list_user_feedback_of_type,
    insert_user,
    insert_users,
    list_users,
    get_user,
    delete_user,
    insert_item,
    insert_items,
    list_items,
    get_item,
    patch_item,
    delete_item,
    add_item_category,
    remove_item_category,
    neighbors,
    recommend,
    recommend_category,
    popular,
    popular_category,
    latest,
    latest_category,
    session_recommend,
))]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;
    use crate::openapi::tests::{assert_request_schema, sample};

    fn doc() -> Value {
        crate::openapi::document(crate::api::ROUTES, &crate::api::derived_openapi())
    }

    /// Whether `value` is what `schema` describes, and every field it has is documented (a
    /// schema without a type is any value).
    fn conforms(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            return conforms(doc, &doc["components"]["schemas"][name], value);
        }
        if let Some(any) = schema["anyOf"].as_array() {
            return if any.iter().any(|s| conforms(doc, s, value).is_ok()) {
                Ok(())
            } else {
                Err(format!("{value} matches no choice of {schema}"))
            };
        }
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let kinds: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return Ok(()),
        };
        if !kinds
            .iter()
            .any(|k| *k == kind || (*k == "number" && kind == "integer"))
        {
            return Err(format!("{value} is not of type {kinds:?}"));
        }
        match value {
            Value::Array(items) => items
                .iter()
                .try_for_each(|v| conforms(doc, &schema["items"], v)),
            Value::Object(fields) => {
                for required in schema["required"].as_array().into_iter().flatten() {
                    let name = required.as_str().unwrap_or_default();
                    if !fields.contains_key(name) {
                        return Err(format!("{value} lacks {name}"));
                    }
                }
                fields.iter().try_for_each(|(k, v)| {
                    let property = &schema["properties"][k];
                    if property.is_null() {
                        Err(format!("{k} of {value} is not documented"))
                    } else {
                        conforms(doc, property, v)
                    }
                })
            }
            _ => Ok(()),
        }
    }

    /// The schema `name` reads as `T` does, and no stricter: a value with every documented
    /// property is read, one without a required property is refused, and one with a field
    /// Gorse sends and Bespoke ignores is read too.
    fn assert_lenient_request_schema<T: DeserializeOwned>(doc: &Value, name: &str) {
        let schema = &doc["components"]["schemas"][name];
        assert!(schema.is_object(), "no schema {name}");
        assert!(schema.get("additionalProperties").is_none(), "{name}");
        let full = sample(doc, schema);
        if let Err(e) = serde_json::from_value::<T>(full.clone()) {
            panic!("{name}: {full} is refused: {e}");
        }
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        assert!(!required.is_empty(), "{name}");
        for field in required {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(field.as_str().unwrap());
            assert!(
                serde_json::from_value::<T>(v).is_err(),
                "{name} reads a value without {field}"
            );
        }
        let mut minimal = serde_json::Map::new();
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            minimal.insert(field.to_owned(), full[field].clone());
        }
        minimal.insert("Extra".into(), json!({"any": 1}));
        if let Err(e) = serde_json::from_value::<T>(Value::Object(minimal.clone())) {
            panic!("{name}: {minimal:?} is refused: {e}");
        }
    }

    #[test]
    fn gorse_request_schemas_read_as_the_types_do() {
        let doc = doc();
        assert_lenient_request_schema::<Feedback>(&doc, "GorseFeedback");
        assert_lenient_request_schema::<GorseUser>(&doc, "GorseUser");
        assert_lenient_request_schema::<GorseItem>(&doc, "GorseItem");
        // A patch names what it changes: an unknown field is a 400.
        assert_request_schema::<ItemPatch>("GorseItemPatch");
        let body = |path: &str, method: &str| {
            doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
                .clone()
        };
        let one = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
        let list = |name: &str| json!({ "type": "array", "items": one(name) });
        assert_eq!(body("/api/feedback", "post"), list("GorseFeedback"));
        assert_eq!(
            body("/api/session/recommend", "post"),
            list("GorseFeedback")
        );
        assert_eq!(body("/api/users", "post"), list("GorseUser"));
        assert_eq!(body("/api/user", "post"), one("GorseUser"));
        assert_eq!(body("/api/items", "post"), list("GorseItem"));
        assert_eq!(body("/api/item", "post"), one("GorseItem"));
        assert_eq!(body("/api/item/{key}", "patch"), one("GorseItemPatch"));
    }

    /// An answer as the handlers' `Json` writes it.
    fn to<T: Serialize>(answer: &T) -> Value {
        serde_json::to_value(answer).expect("serializes")
    }

    fn event(value: Option<f64>, comment: Option<&str>) -> Event {
        Event {
            seq: 7,
            event_id: "e1".into(),
            user: "u1".into(),
            item: "i1".into(),
            kind: "star".into(),
            value,
            timestamp: 1_767_225_600_000,
            context: comment.map(|c| {
                let mut m = Map::new();
                m.insert(COMMENT.into(), json!(c));
                m
            }),
        }
    }

    fn user(attributes: Value) -> User {
        User {
            idx: UserIdx(0),
            key: "u1".into(),
            attributes: serde_json::from_value(attributes).unwrap(),
            consent: bespoke_store::Consent::ALL,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn item(attributes: Value, comment: Option<&str>) -> Item {
        Item {
            idx: ItemIdx(0),
            key: "i1".into(),
            categories: vec!["books".into()],
            text: comment
                .map(|c| (COMMENT.to_owned(), c.to_owned()))
                .into_iter()
                .collect(),
            numeric: Default::default(),
            attributes: serde_json::from_value(attributes).unwrap(),
            embeddings: Default::default(),
            available: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// Each answer, as the handlers build it, is what its operation's 200 documents.
    #[test]
    fn gorse_answers_match_their_schemas() {
        let doc = doc();
        let answer = |path: &str, method: &str| {
            doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
                .clone()
        };
        let check = |path: &str, method: &str, value: Value| {
            let schema = answer(path, method);
            assert!(schema.is_object(), "{method} {path} documents no answer");
            if let Err(e) = conforms(&doc, &schema, &value) {
                panic!("{method} {path}: {e}");
            }
        };

        let feedback = || {
            vec![
                feedback_of(event(Some(4.0), Some("good"))),
                feedback_of(event(None, None)),
            ]
        };
        let users = || {
            vec![
                gorse_user(user(
                    json!({"country": "fr", "comment": "c", "subscribe": ["x"]}),
                )),
                gorse_user(user(json!({"labels": ["a", "b"]}))),
                gorse_user(user(json!({}))),
            ]
        };
        let items = || {
            vec![
                gorse_item(item(
                    json!({"colour": "red", "timestamp": "2026-01-01T00:00:00.000Z"}),
                    Some("c"),
                )),
                gorse_item(item(json!({"labels": ["paper"]}), None)),
            ]
        };
        let affected = Affected { row_affected: 3 };
        let scores = || {
            vec![Scored {
                id: "i1".into(),
                score: 0.5,
            }]
        };

        for path in [
            "/api/user/{key}/feedback",
            "/api/user/{key}/feedback/{type}",
            "/api/feedback/{user}/{item}",
            "/api/feedback/{type}/{user}/{item}",
        ] {
            check(path, "get", to(&feedback()));
        }
        for path in ["/api/feedback", "/api/feedback/{type}"] {
            for cursor in ["", "17"] {
                let page = FeedbackPage {
                    cursor: cursor.into(),
                    feedback: feedback(),
                };
                check(path, "get", to(&page));
            }
        }
        let page = UserPage {
            cursor: "2".into(),
            users: users(),
        };
        check("/api/users", "get", to(&page));
        let page = ItemPage {
            cursor: String::new(),
            items: items(),
        };
        check("/api/items", "get", to(&page));
        for u in users() {
            check("/api/user/{key}", "get", to(&u));
        }
        for i in items() {
            check("/api/item/{key}", "get", to(&i));
        }
        for (path, method) in [
            ("/api/feedback", "post"),
            ("/api/feedback/{user}/{item}", "delete"),
            ("/api/feedback/{type}/{user}/{item}", "delete"),
            ("/api/user", "post"),
            ("/api/users", "post"),
            ("/api/user/{key}", "delete"),
            ("/api/item", "post"),
            ("/api/items", "post"),
            ("/api/item/{key}", "patch"),
            ("/api/item/{key}", "delete"),
            ("/api/item/{key}/category/{category}", "put"),
            ("/api/item/{key}/category/{category}", "delete"),
        ] {
            check(path, method, to(&affected));
        }
        for path in [
            "/api/item/{key}/neighbors",
            "/api/popular",
            "/api/popular/{category}",
            "/api/latest",
            "/api/latest/{category}",
        ] {
            check(path, "get", to(&scores()));
        }
        check("/api/session/recommend", "post", to(&scores()));
        for path in [
            "/api/recommend/{key}",
            "/api/recommend/{key}/",
            "/api/recommend/{key}/{category}",
        ] {
            check(path, "get", to(&Recommended::Ids(vec!["i1".into()])));
            check(path, "get", to(&Recommended::Scored(scores())));
            check(path, "get", to(&Recommended::Ids(Vec::new())));
        }
        // What is not documented is refused.
        assert!(conforms(&doc, &answer("/api/popular", "get"), &json!([{"Id": "i1"}])).is_err());
        assert!(
            conforms(
                &doc,
                &answer("/api/user/{key}", "get"),
                &json!({"UserId": "u", "Other": 1})
            )
            .is_err()
        );
    }

    /// Every Gorse route carries the tag, and no other route does.
    #[test]
    fn gorse_routes_are_tagged() {
        let doc = doc();
        for (method, path, _) in crate::api::ROUTES {
            let op = &doc["paths"][path][method.to_lowercase()];
            let gorse = op["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("Gorse compatibility")));
            assert_eq!(gorse, path.starts_with("/api/"), "{method} {path}");
        }
        assert_eq!(
            doc["paths"]["/api/recommend/{key}/"]["get"]["operationId"],
            "gorseRecommendSlash"
        );
    }
}
