//! `POST /v1/events` and `GET /v1/users/{key}/events`.

use axum::Json;
use axum::extract::State;
use bespoke_store::{Event, NewEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::extract::{JsonBody, KeyPath, Params};
use super::{AppState, blocking, validate_key};
use crate::engine::now_ms;
use crate::error::ApiError;
use crate::settings::{Settings, WeightSpec};
use crate::time::{format_rfc3339, parse_rfc3339};

/// Body of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostEvents {
    events: Vec<EventIn>,
}

/// One event as sent by a client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventIn {
    event_id: Option<String>,
    user: String,
    item: String,
    #[serde(rename = "type")]
    kind: String,
    value: Option<f64>,
    timestamp: Option<String>,
    context: Option<Map<String, Value>>,
}

/// Answer of `POST /v1/events`: identical for a replay of the same batch.
#[derive(Debug, Serialize)]
pub(crate) struct PostEventsResponse {
    received: usize,
    event_ids: Vec<String>,
}

/// An event as returned by the API.
#[derive(Debug, Serialize)]
pub(crate) struct EventOut {
    event_id: String,
    user: String,
    item: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Map<String, Value>>,
}

impl From<Event> for EventOut {
    fn from(e: Event) -> Self {
        Self {
            event_id: e.event_id,
            user: e.user,
            item: e.item,
            kind: e.kind,
            value: e.value,
            timestamp: format_rfc3339(e.timestamp),
            context: e.context,
        }
    }
}

/// Validates one event and converts it for the store. `at` is its JSON path prefix.
pub(crate) fn validate_event(
    settings: &Settings,
    weights: &crate::engine::Weights,
    e: EventIn,
    at: &str,
    now: i64,
) -> Result<NewEvent, ApiError> {
    let limits = &settings.limits;
    let field = |name: &str| format!("{at}.{name}");
    validate_key(&field("user"), &e.user, limits.max_key_bytes)?;
    validate_key(&field("item"), &e.item, limits.max_key_bytes)?;
    if let Some(id) = &e.event_id {
        validate_key(&field("event_id"), id, limits.max_key_bytes)?;
    }
    let Some(spec) = weights.spec(&e.kind) else {
        return Err(ApiError::invalid(
            field("type"),
            format!(
                "unknown event type {:?}; configured types: {}",
                e.kind.chars().take(64).collect::<String>(),
                weights.kinds().join(", ")
            ),
        ));
    };
    if let Some(v) = e.value {
        if !v.is_finite() || v.abs() > 1e12 {
            return Err(ApiError::invalid(
                field("value"),
                "value must be a finite number of magnitude at most 1e12",
            ));
        }
    }
    if matches!(spec, WeightSpec::Value(_)) && e.value.is_none() {
        return Err(ApiError::invalid(
            field("value"),
            format!("events of type {:?} need a value (their weight)", e.kind),
        ));
    }
    let timestamp = match &e.timestamp {
        None => None,
        Some(t) => {
            let ms = parse_rfc3339(t)
                .map_err(|why| ApiError::invalid(field("timestamp"), format!("timestamp {why}")))?;
            let min = parse_rfc3339(&limits.min_event_time).expect("validated at start-up");
            let max = now + limits.max_clock_skew_secs as i64 * 1000;
            if ms < min || ms > max {
                return Err(ApiError::invalid(
                    field("timestamp"),
                    format!(
                        "timestamp {t} is outside the accepted range {} .. {} (limits.min_event_time, limits.max_clock_skew_secs)",
                        limits.min_event_time,
                        format_rfc3339(max)
                    ),
                ));
            }
            Some(ms)
        }
    };
    Ok(NewEvent {
        event_id: e.event_id,
        user: e.user,
        item: e.item,
        kind: e.kind,
        value: e.value,
        timestamp,
        context: e.context,
    })
}

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
#[derive(Debug, Serialize)]
pub(crate) struct EventPage {
    events: Vec<EventOut>,
    /// Pass as `cursor` to get the next (older) page; `null` on the last page.
    next_cursor: Option<String>,
}

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
        events: page.items.into_iter().map(EventOut::from).collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}
