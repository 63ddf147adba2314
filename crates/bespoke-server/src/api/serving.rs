//! Recommendations, similar items and popular items.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::extract::{KeyPath, Params};
use super::{AppState, validate_key};
use crate::engine::{PopularQuery, PopularSort, RecommendQuery, Recommendation};
use crate::error::ApiError;
use crate::settings::{ModelChoice, SimilarChoice};
use crate::time::parse_duration;

/// Answer of `GET /v1/users/{key}/recommendations`.
#[derive(Debug, Serialize)]
pub(crate) struct RecommendationsOut {
    user: String,
    /// Whether the user's own history shaped the results.
    personalized: bool,
    /// The model that ranked the results.
    model: &'static str,
    /// The trained model version, when one was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<u64>,
    items: Vec<Recommendation>,
}

/// Answer of `GET /v1/items/{key}/similar`.
#[derive(Debug, Serialize)]
pub(crate) struct SimilarOut {
    item: String,
    items: Vec<Recommendation>,
}

/// Answer of `GET /v1/popular`.
#[derive(Debug, Serialize)]
pub(crate) struct PopularOut {
    items: Vec<Recommendation>,
}

fn n_param(state: &AppState, params: &Params) -> Result<usize, ApiError> {
    let s = state.engine.settings();
    params.int("n", s.serving.default_n, 1, s.limits.max_n)
}

fn categories(state: &AppState, params: &Params) -> Result<Vec<String>, ApiError> {
    let cats = params.list("category");
    for c in &cats {
        validate_key("category", c, state.engine.settings().limits.max_key_bytes)?;
    }
    Ok(cats)
}

pub(crate) async fn recommendations(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<RecommendationsOut>, ApiError> {
    let limits = &state.engine.settings().limits;
    validate_key("key", &key, limits.max_key_bytes)?;
    params.allow(&["n", "category", "exclude", "include_seen", "model"])?;
    let exclude = params.list("exclude");
    if exclude.len() > limits.max_exclude {
        return Err(ApiError::invalid(
            "exclude",
            format!(
                "at most {} excluded items (limits.max_exclude)",
                limits.max_exclude
            ),
        ));
    }
    let q = RecommendQuery {
        n: n_param(&state, &params)?,
        categories: categories(&state, &params)?,
        exclude,
        include_seen: params.bool("include_seen", false)?,
        model: match params.get("model") {
            None => None,
            Some("als") => Some(ModelChoice::Als),
            Some("knn") => Some(ModelChoice::Knn),
            Some("popular") => Some(ModelChoice::Popular),
            Some(other) => {
                return Err(ApiError::invalid(
                    "model",
                    format!("model must be als, knn or popular, got {other:?}"),
                ));
            }
        },
    };
    // Scoring is bounded CPU work of tens of microseconds with no IO: it runs on the runtime
    // worker, which costs less than a hand-off to the blocking pool and back.
    let recs = state.engine.recommend(&key, &q);
    Ok(Json(RecommendationsOut {
        user: key,
        personalized: recs.personalized,
        model: recs.model,
        model_version: recs.model_version,
        items: recs.items,
    }))
}

pub(crate) async fn similar(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<SimilarOut>, ApiError> {
    validate_key("key", &key, state.engine.settings().limits.max_key_bytes)?;
    params.allow(&["n", "model"])?;
    let n = n_param(&state, &params)?;
    let choice = match params.get("model") {
        None => None,
        Some("knn") => Some(SimilarChoice::Knn),
        Some("als") => Some(SimilarChoice::Als),
        Some("cooccurrence") => Some(SimilarChoice::Cooccurrence),
        Some(other) => {
            return Err(ApiError::invalid(
                "model",
                format!("model must be knn, als or cooccurrence, got {other:?}"),
            ));
        }
    };
    let items = state
        .engine
        .similar(&key, n, choice)
        .ok_or_else(|| ApiError::not_found("item", &key))?;
    Ok(Json(SimilarOut { item: key, items }))
}

pub(crate) async fn popular(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<PopularOut>, ApiError> {
    params.allow(&["n", "category", "window", "sort"])?;
    let window = match params.get("window") {
        None | Some("all") => None,
        Some(w) => Some(
            parse_duration(w)
                .map_err(|why| ApiError::invalid("window", format!("window {why}, or all")))?,
        ),
    };
    let sort = match params.get("sort") {
        None | Some("count") => PopularSort::Count,
        Some("trending") => PopularSort::Trending,
        Some(other) => {
            return Err(ApiError::invalid(
                "sort",
                format!("sort must be count or trending, got {other:?}"),
            ));
        }
    };
    if sort == PopularSort::Trending && window.is_some() {
        return Err(ApiError::invalid(
            "window",
            "window applies to sort=count; trending already weighs recent events more",
        ));
    }
    let q = PopularQuery {
        n: n_param(&state, &params)?,
        categories: categories(&state, &params)?,
        window,
        sort,
    };
    let items = state.engine.popular(&q);
    Ok(Json(PopularOut { items }))
}
