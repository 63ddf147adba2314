//! `POST /v1/audiences/query`: the users most drawn to items, a category or an item
//! expression, with consent respected (see `engine::audience`).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::extract::JsonBody;
use crate::engine::{Audience, AudienceError, AudienceQuery, MAX_AUDIENCE_ITEMS};
use crate::error::ApiError;
use crate::validate::validate_key;

/// Most users one query returns.
const MAX_AUDIENCE_USERS: i64 = 10_000;

/// Body of `POST /v1/audiences/query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AudienceIn {
    #[serde(default)]
    items: Vec<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    threshold: Option<f64>,
    /// `json` (default), `csv` (`user,score`) or `jsonl` (one user per line).
    #[serde(default)]
    format: Option<String>,
}

impl From<AudienceError> for ApiError {
    fn from(e: AudienceError) -> Self {
        match e {
            AudienceError::NoModel => {
                ApiError::new(axum::http::StatusCode::CONFLICT, "no_model", e.to_string())
            }
            AudienceError::NoItems(m) => ApiError::invalid("items", m),
            AudienceError::Invalid { field, message } => ApiError::invalid(field, message),
        }
    }
}

pub(crate) async fn query(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AudienceIn>,
) -> Result<Response, ApiError> {
    let max_key = state.engine.settings().limits.max_key_bytes;
    let format = body.format.clone().unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "csv" | "jsonl") {
        return Err(ApiError::invalid(
            "format",
            format!("format must be json, csv or jsonl, got {format:?}"),
        ));
    }
    if body.items.is_empty() && body.category.is_none() && body.filter.is_none() {
        return Err(ApiError::invalid(
            "items",
            "give items, a category or a filter expression",
        ));
    }
    if body.items.len() > MAX_AUDIENCE_ITEMS {
        return Err(ApiError::invalid(
            "items",
            format!(
                "at most {MAX_AUDIENCE_ITEMS} items, got {}",
                body.items.len()
            ),
        ));
    }
    for (i, item) in body.items.iter().enumerate() {
        validate_key(&format!("items[{i}]"), item, max_key)?;
    }
    if let Some(c) = &body.category {
        validate_key("category", c, max_key)?;
    }
    let n = match body.n {
        None => 100,
        Some(n) if (1..=MAX_AUDIENCE_USERS).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("n must be from 1 to {MAX_AUDIENCE_USERS}, got {n}"),
            ));
        }
    };
    let threshold = match body.threshold {
        None => None,
        Some(t) if t.is_finite() => Some(t as f32),
        Some(t) => {
            return Err(ApiError::invalid(
                "threshold",
                format!("threshold must be a finite number, got {t}"),
            ));
        }
    };
    let q = AudienceQuery {
        items: body.items,
        category: body.category,
        filter: body.filter,
        n,
        threshold,
    };
    let engine = state.engine.clone();
    // A pass over every user vector: off the runtime's workers.
    let audience: Audience = super::blocking(move || Ok(engine.audience(&q)?)).await?;
    // The exports hold the users (above the threshold, when one is given), best first; the
    // counts stay in the JSON form.
    let users = audience
        .users
        .iter()
        .filter(|u| threshold.is_none_or(|t| u.score >= t));
    Ok(match format.as_str() {
        "csv" => {
            let mut text = String::from("user,score\n");
            for u in users {
                text.push_str(&format!(
                    "{},{}\n",
                    crate::wire::csv_field(&u.user),
                    u.score
                ));
            }
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response()
        }
        "jsonl" => {
            let mut text = String::new();
            for u in users {
                let line = serde_json::json!({ "user": u.user, "score": u.score,
                    "reason": u.reasons.first().map(|r| r.message()) });
                text.push_str(&line.to_string());
                text.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response()
        }
        _ => Json(audience).into_response(),
    })
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(crate) struct Api;
