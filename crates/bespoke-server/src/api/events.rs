//! `POST /v1/events`, `GET /v1/users/{key}/events` and `DELETE /v1/users/{key}/events`.

use axum::extract::State;
use axum::{Extension, Json};
use bespoke_store::NewEvent;
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, KeyParam, KeyPath, Params};
use super::{AppState, blocking, validate_key};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::settings::Settings;
use crate::time::now_ms;
use crate::validate::check_event;
use crate::wire::EventJson;
use utoipa::ToSchema;

/// Body of `POST /v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EventBatch)]
pub(crate) struct PostEvents {
    /// At most limits.max_batch_events (10,000 by default).
    #[schema(min_items = 1)]
    pub(super) events: Vec<EventJson>,
}

/// Answer of `POST /v1/events`: identical for a replay of the same batch.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EventsAccepted)]
pub(crate) struct PostEventsResponse {
    /// Events in the batch (replays included).
    received: usize,
    /// Each event's id, in the batch's order (issued ones included).
    event_ids: Vec<String>,
}

/// Validates one event and converts it for the store. `at` is its JSON path prefix.
pub(super) fn validate_event(
    settings: &Settings,
    weights: &crate::weights::Weights,
    e: EventJson,
    at: &str,
    now: i64,
) -> Result<NewEvent, ApiError> {
    let event = e
        .into_new_event()
        .map_err(|e| ApiError::invalid(format!("{at}.timestamp"), e.to_string()))?;
    check_event(settings, weights, &event, now)
        .map_err(|f| ApiError::invalid(format!("{at}.{}", f.field), f.message))?;
    Ok(event)
}

/// Record a batch of events (atomic: all stored or none)
///
/// Events with an `event_id` are idempotent: a replay with the same payload is stored once and
/// answered the same; the same id with a different payload is a 409. Unknown users and items
/// are created unless disabled in the configuration.
#[utoipa::path(post, path = "/v1/events", operation_id = "postEvents",
    request_body = PostEvents,
    responses(
        (status = 200, description = "Stored (or recognised as replays)", body = PostEventsResponse),
        (status = 400), (status = 404), (status = 409), (status = 413), (status = 415),
        (status = 503), (status = 507)))]
pub(crate) async fn post_events(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PostEvents>,
) -> Result<Json<PostEventsResponse>, ApiError> {
    let settings = state.engine.settings();
    let max = settings.limits.max_batch_events;
    if body.events.len() > max {
        return Err(ApiError::invalid(
            "events",
            format!(
                "a batch holds at most {max} events (limits.max_batch_events), got {}",
                body.events.len()
            ),
        ));
    }
    if body.events.is_empty() {
        return Err(ApiError::invalid("events", "events must not be empty"));
    }
    let now = now_ms();
    let events = body
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            validate_event(
                settings,
                state.engine.weights(),
                e,
                &format!("events[{i}]"),
                now,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let engine = state.engine.clone();
    let appended = blocking(move || engine.ingest(events).map_err(ApiError::from)).await?;
    let duplicates = appended.iter().filter(|a| a.duplicate).count() as u64;
    state
        .metrics
        .record_events(appended.len() as u64 - duplicates, duplicates);
    Ok(Json(PostEventsResponse {
        received: appended.len(),
        event_ids: appended.into_iter().map(|a| a.event_id).collect(),
    }))
}

/// A page of a user's events.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventPage {
    /// Newest first.
    pub(super) events: Vec<EventJson>,
    /// Pass as `cursor` to get the next (older) page; `null` on the last page.
    next_cursor: Option<String>,
}

/// A user's events, newest first, paginated
#[utoipa::path(get, path = "/v1/users/{key}/events", operation_id = "getUserEvents",
    params(KeyParam,
        ("limit" = Option<u32>, Query, minimum = 1,
            description = "Page size, 1 to limits.max_page_size; default 100"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "A page", body = EventPage),
        (status = 400), (status = 404)))]
pub(crate) async fn user_events(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<EventPage>, ApiError> {
    let limits = &state.engine.settings().limits;
    validate_key("key", &key, limits.max_key_bytes)?;
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
    let key2 = key.clone();
    let page = blocking(move || {
        engine
            .user_events(&key2, before, limit)
            .map_err(ApiError::from)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("user", &key))?;
    Ok(Json(EventPage {
        events: page.items.into_iter().map(EventJson::from).collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}

/// Answer of `DELETE /v1/users/{key}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventsDeleted {
    /// The user's key.
    user: String,
    /// The item's key.
    item: String,
    /// How many events were deleted (0 when there were none: the call is idempotent).
    deleted: usize,
}

/// Delete a user's events on one item (undo a like, a rating): from the store and from serving at once, on every node
///
/// Every type but impressions, or one type. The user's history, popularity, related items and
/// hides by event (not_interested) forget them at once and the user's vector is folded in
/// again; the next trained model is the first without them. Idempotent: 0 when there were
/// none. The events' ids may be used again. Audited as events.delete.
#[utoipa::path(delete, path = "/v1/users/{key}/events", operation_id = "deleteUserEvents",
    params(KeyParam,
        ("item" = String, Query, description = "The item's key"),
        ("type" = Option<String>, Query,
            description = "Only events of this type (default: every type but impression)")),
    responses((status = 200, description = "Deleted", body = EventsDeleted),
        (status = 400), (status = 507)))]
pub(crate) async fn delete_user_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<EventsDeleted>, ApiError> {
    let max = state.engine.settings().limits.max_key_bytes;
    validate_key("key", &key, max)?;
    params.allow(&["item", "type"])?;
    let item = params
        .get("item")
        .ok_or_else(|| ApiError::invalid("item", "the item whose events to delete is required"))?
        .to_owned();
    validate_key("item", &item, max)?;
    let kind = params.get("type").map(str::to_owned);
    if let Some(t) = &kind {
        validate_key("type", t, max)?;
    }
    let engine = state.engine.clone();
    let (user, it) = (key.clone(), item.clone());
    let deleted = blocking(move || {
        engine
            .delete_pair_events(&caller.prefix, "events.delete", &user, &it, kind)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(EventsDeleted {
        user: key,
        item,
        deleted,
    }))
}

/// One list shown to a user, in `POST /v1/impressions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Impression)]
pub(crate) struct ImpressionJson {
    /// The user's key.
    user: String,
    /// The items shown, in the order shown.
    #[schema(min_items = 1)]
    items: Vec<String>,
    /// Idempotency key of the list; its items get `{list_id}#{position}`.
    list_id: Option<String>,
    /// RFC 3339 time; now when absent. Every item of the list gets it: lists are told apart by
    /// their time.
    #[schema(format = DateTime)]
    timestamp: Option<String>,
    /// The experiment variants the list was served with, as the ranking response named them;
    /// kept in each impression's context (docs/experiments.md).
    #[serde(default)]
    #[schema(max_items = 8)]
    experiments: Vec<ServedVariant>,
}

/// The variant a ranking response was served with: the response's `experiments` entry, echoed
/// as it came in `POST /v1/impressions`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServedVariant {
    /// The experiment's name.
    experiment: String,
    /// A variant's name, holdout, or interleaved.
    variant: String,
    /// The variant could not apply; the request was served as sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fallback: bool,
    /// Interleaving: the variant that gave each item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    teams: Vec<String>,
}

/// Body of `POST /v1/impressions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Impressions, example = json!({ "impressions": [{ "user": "u1", "items": ["i3", "i7", "i9"], "list_id": "home-7f3a" }] }))]
pub(crate) struct PostImpressions {
    impressions: Vec<ImpressionJson>,
}

/// Answer of `POST /v1/impressions`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ImpressionsStored)]
pub(crate) struct PostImpressionsResponse {
    /// Lists received.
    lists: usize,
    /// Impression events stored (duplicates of a replayed list not counted).
    stored: usize,
}

/// `POST /v1/impressions`: what users were shown, one entry per list. Stored as events of type
/// `impression` (one per item), which retention and erasure cover like any event; they feed the
/// no-repeat policy, never training or popularity.
#[utoipa::path(post, path = "/v1/impressions", operation_id = "postImpressions",
    summary = "Record what users were shown: one entry per list",
    description = "Stored as events of type impression (one per item, all with the list's timestamp), covered by retention, export and erasure like other events. They never count as feedback: no training, no popularity. They feed the no-repeat policy (max_impressions, no_repeat_lists).",
    request_body = PostImpressions,
    responses((status = 200, description = "Stored", body = PostImpressionsResponse),
        (status = 400), (status = 404), (status = 409), (status = 413), (status = 415),
        (status = 507)))]
pub(crate) async fn post_impressions(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PostImpressions>,
) -> Result<Json<PostImpressionsResponse>, ApiError> {
    let settings = state.engine.settings();
    let max = settings.limits.max_batch_events;
    if body.impressions.is_empty() {
        return Err(ApiError::invalid(
            "impressions",
            "impressions must not be empty",
        ));
    }
    let total: usize = body.impressions.iter().map(|l| l.items.len()).sum();
    if total > max {
        return Err(ApiError::invalid(
            "impressions",
            format!(
                "a batch holds at most {max} shown items in all (limits.max_batch_events), got {total}"
            ),
        ));
    }
    let now = now_ms();
    let mut events = Vec::with_capacity(total);
    let lists = body.impressions.len();
    for (i, list) in body.impressions.into_iter().enumerate() {
        if list.items.is_empty() {
            return Err(ApiError::invalid(
                format!("impressions[{i}].items"),
                "items must not be empty",
            ));
        }
        if list.experiments.len() > 8 {
            return Err(ApiError::invalid(
                format!("impressions[{i}].experiments"),
                "at most 8 experiments per list",
            ));
        }
        for (j, x) in list.experiments.iter().enumerate() {
            if x.teams.len() > list.items.len() {
                return Err(ApiError::invalid(
                    format!("impressions[{i}].experiments[{j}].teams"),
                    "more teams than items shown",
                ));
            }
            let teams = x.teams.iter().map(|t| ("teams", t));
            for (name, v) in [("experiment", &x.experiment), ("variant", &x.variant)]
                .into_iter()
                .chain(teams)
            {
                if v.is_empty() || v.len() > 64 {
                    return Err(ApiError::invalid(
                        format!("impressions[{i}].experiments[{j}].{name}"),
                        format!("{name} must be 1 to 64 bytes"),
                    ));
                }
            }
        }
        let context = (!list.experiments.is_empty()).then(|| {
            let mut m = serde_json::Map::new();
            m.insert(
                "experiments".into(),
                serde_json::to_value(&list.experiments).expect("variants serialize"),
            );
            m
        });
        let timestamp = match &list.timestamp {
            None => now,
            Some(t) => crate::time::parse_rfc3339(t).map_err(|e| {
                ApiError::invalid(format!("impressions[{i}].timestamp"), e.to_string())
            })?,
        };
        for (pos, item) in list.items.into_iter().enumerate() {
            let event = NewEvent {
                event_id: list.list_id.as_ref().map(|id| format!("{id}#{pos}")),
                user: list.user.clone(),
                item,
                kind: crate::settings::IMPRESSION.to_owned(),
                value: None,
                timestamp: Some(timestamp),
                context: context.clone(),
            };
            check_event(settings, state.engine.weights(), &event, now).map_err(|f| {
                let field = match f.field.as_str() {
                    "item" => format!("impressions[{i}].items[{pos}]"),
                    "event_id" => format!("impressions[{i}].list_id"),
                    other => format!("impressions[{i}].{other}"),
                };
                ApiError::invalid(field, f.message)
            })?;
            events.push(event);
        }
    }
    let engine = state.engine.clone();
    let appended = blocking(move || engine.ingest(events).map_err(ApiError::from)).await?;
    let stored = appended.iter().filter(|a| !a.duplicate).count();
    state
        .metrics
        .record_events(stored as u64, (appended.len() - stored) as u64);
    Ok(Json(PostImpressionsResponse { lists, stored }))
}
