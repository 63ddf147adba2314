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

/// Body of `POST /v1/audiences/query`: at least one of items, category and filter; their items
/// are merged.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AudienceIn {
    /// Item keys.
    #[serde(default)]
    #[schema(max_items = 500)]
    items: Vec<String>,
    /// Every item of this category.
    #[serde(default)]
    category: Option<String>,
    /// An item rule expression (docs/rules.md).
    #[serde(default)]
    filter: Option<String>,
    /// Users to return.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000, default = 100)]
    n: Option<i64>,
    /// Also count the users scoring at least this (the audience's size).
    #[serde(default)]
    threshold: Option<f64>,
    /// `json` (default), or `csv` (`user,score`) or `jsonl` (user, score, reason per line):
    /// these answer with the users above threshold as text/csv or application/x-ndjson.
    #[serde(default)]
    #[schema(inline, value_type = Option<super::segments::ListFormat>, default = "json")]
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

/// The users most likely to respond to items, a category or an item expression
///
/// The query's items (listed, every item of a category, or every item a rule expression
/// matches) become one vector, the mean of their iALS factors, scored against every trained
/// user vector. Users who objected to marketing (consent.marketing = false), turned
/// personalization off or withheld their data from training are left out and counted. Keys are
/// the stored ones (pseudonymous with privacy.pseudonymize). 409 without a trained model.
#[utoipa::path(post, path = "/v1/audiences/query", operation_id = "queryAudience",
    request_body = AudienceIn,
    responses((status = 200, description = "The audience, best first", content(
            (Audience = "application/json"),
            (String = "text/csv"),
            (String = "application/x-ndjson"))),
        (status = 400), (status = 409), (status = 413), (status = 415)))]
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
#[openapi(paths(query))]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    #[test]
    fn the_request_schema_says_what_the_type_reads() {
        crate::openapi::tests::assert_request_schema::<super::AudienceIn>("AudienceIn");
    }
}
