//! Recommendations, similar items and popular items.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, KeyPath, Params};
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

/// The `model` of a recommendation request.
fn model_param(name: Option<&str>) -> Result<Option<ModelChoice>, ApiError> {
    let Some(name) = name else {
        return Ok(None);
    };
    ModelChoice::from_name(name).map(Some).ok_or_else(|| {
        ApiError::invalid(
            "model",
            format!("model must be auto, als, knn, ease, bpr or popular, got {name:?}"),
        )
    })
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
        model: model_param(params.get("model"))?,
        context: None,
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

/// One item of a session: a key, or `{item, weight}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SessionItem {
    Key(String),
    Weighted {
        item: String,
        #[serde(default)]
        weight: Option<f64>,
    },
}

/// Body of `POST /v1/recommendations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionIn {
    #[serde(default)]
    items: Vec<SessionItem>,
    #[serde(default, deserialize_with = "crate::strict::opt_object")]
    context: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    include_seen: bool,
}

/// Answer of `POST /v1/recommendations`.
#[derive(Debug, Serialize)]
pub(crate) struct SessionOut {
    personalized: bool,
    model: &'static str,
    model_version: Option<u64>,
    items: Vec<crate::engine::Recommendation>,
}

/// `POST /v1/recommendations`: recommendations for an anonymous session from its recent items.
pub(crate) async fn session(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SessionIn>,
) -> Result<Json<SessionOut>, ApiError> {
    let settings = state.engine.settings();
    let limits = &settings.limits;
    if body.items.len() > settings.serving.max_session_items {
        return Err(ApiError::invalid(
            "items",
            format!(
                "at most {} items (serving.max_session_items)",
                settings.serving.max_session_items
            ),
        ));
    }
    let mut items = Vec::with_capacity(body.items.len());
    for (i, it) in body.items.into_iter().enumerate() {
        let (key, weight) = match it {
            SessionItem::Key(k) => (k, 1.0),
            SessionItem::Weighted { item, weight } => (item, weight.unwrap_or(1.0)),
        };
        validate_key(&format!("items[{i}]"), &key, limits.max_key_bytes)?;
        if !(weight.is_finite() && weight.abs() <= 1e6) {
            return Err(ApiError::invalid(
                format!("items[{i}].weight"),
                "must be a finite number of magnitude at most 1e6",
            ));
        }
        items.push((key, weight as f32));
    }
    if body.exclude.len() > limits.max_exclude {
        return Err(ApiError::invalid(
            "exclude",
            format!(
                "at most {} excluded items (limits.max_exclude)",
                limits.max_exclude
            ),
        ));
    }
    let n = match body.n {
        None => settings.serving.default_n,
        Some(n) if n >= 1 && (n as u64) <= limits.max_n as u64 => n as usize,
        Some(_) => {
            return Err(ApiError::invalid(
                "n",
                format!("n must be between 1 and {} (limits.max_n)", limits.max_n),
            ));
        }
    };
    let model = model_param(body.model.as_deref())?;
    let q = RecommendQuery {
        n,
        categories: body.categories,
        exclude: body.exclude,
        include_seen: body.include_seen,
        model,
        context: body.context,
    };
    let recs = state.engine.recommend_session(&items, &q);
    Ok(Json(SessionOut {
        personalized: recs.personalized,
        model: recs.model,
        model_version: recs.model_version,
        items: recs.items,
    }))
}
