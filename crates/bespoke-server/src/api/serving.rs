//! Recommendations, similar items, popular items and the ranking of supplied candidates: each
//! parses into one [`RankRequest`] and runs the ranking pipeline.
//!
//! Ranking is bounded CPU work of tens of microseconds with no IO, so it runs on the runtime
//! worker, which costs less than a hand-off to the blocking pool and back. The one store read a
//! ranking may need (a history-less user's attributes) goes to the blocking pool.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, KeyPath, Params};
use super::{AppState, blocking, validate_key};
use crate::engine::{
    Assigned, ExperimentRoute, PopularSort, Recommendation, Recommendations, Served,
};
use crate::error::ApiError;
use crate::pipeline::request::{CommonIn, Form, RULE_PARAMS, RulesIn, explain_param, model_param};
use crate::pipeline::{Filtered, NeedsAttributes, RankRequest, Ranked, RankedItem, Source};
use crate::rules::spec::{BoostSpec, PromoteSpec};
use crate::settings::SimilarChoice;
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
    /// The business rules that applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    /// With `explain=full`: what the rules kept out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
    /// The experiment variants this list was served with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    experiments: Vec<Assigned>,
}

/// Answer of `GET /v1/items/{key}/similar`.
#[derive(Debug, Serialize)]
pub(crate) struct SimilarOut {
    item: String,
    items: Vec<Recommendation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    experiments: Vec<Assigned>,
}

/// Answer of `GET /v1/popular`.
#[derive(Debug, Serialize)]
pub(crate) struct PopularOut {
    items: Vec<Recommendation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    experiments: Vec<Assigned>,
}

/// The shared fields of a ranking GET, checked against what the route `allowed`. `model` is a
/// recommendation model where `models` (similar items read their own).
pub(crate) fn query_request(
    state: &AppState,
    params: &Params,
    allowed: &[&str],
    models: bool,
) -> Result<RankRequest, ApiError> {
    let mut names: Vec<&str> = allowed.to_vec();
    names.extend(RULE_PARAMS);
    params.allow(&names)?;
    let settings = state.engine.settings();
    let max_n = settings.limits.max_n;
    let n = match params.get("n") {
        None => None,
        Some(raw) => Some(raw.trim().parse::<i128>().map_err(|_| {
            ApiError::invalid(
                "n",
                format!("n must be an integer from 1 to {max_n}, got {raw:?}"),
            )
        })?),
    };
    let diversity = match params.get("diversity") {
        None => None,
        Some(raw) => Some(raw.trim().parse::<f64>().map_err(|_| {
            ApiError::invalid(
                "diversity",
                format!("diversity must be a number from 0 to 1, got {raw:?}"),
            )
        })?),
    };
    let req = CommonIn {
        // Out of i64's range is out of range all the same.
        n: n.map(|n| n.clamp(i64::MIN as i128, i64::MAX as i128) as i64),
        model: params.get("model").filter(|_| models).map(str::to_owned),
        categories: params.list("category"),
        exclude: params.list("exclude"),
        include_seen: params.bool("include_seen", false)?,
        explain: params.get("explain").map(str::to_owned),
        diversity,
    }
    .validate(Form::Query, settings, None)?;
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .map(|raw| {
                raw.trim().parse::<i64>().map_err(|_| {
                    ApiError::invalid(name, format!("{name} must be an integer, got {raw:?}"))
                })
            })
            .transpose()
    };
    let number = |name: &str| -> Result<Option<f64>, ApiError> {
        params
            .get(name)
            .map(|raw| {
                raw.trim().parse::<f64>().map_err(|_| {
                    ApiError::invalid(name, format!("{name} must be a number, got {raw:?}"))
                })
            })
            .transpose()
    };
    let rules = RulesIn {
        filter: params.get("filter").map(str::to_owned),
        boost: json_param(params, "boost")?,
        promote: json_param(params, "promote")?,
        max_per_category: int("max_per_category")?,
        max_impressions: int("max_impressions")?,
        impression_window: params.get("impression_window").map(str::to_owned),
        no_repeat_lists: int("no_repeat_lists")?,
        hide_similar: params
            .get("hide_similar")
            .map(|raw| {
                raw.trim().parse::<f64>().map_err(|_| {
                    ApiError::invalid(
                        "hide_similar",
                        format!("hide_similar must be a number from 0 to 1, got {raw:?}"),
                    )
                })
            })
            .transpose()?,
        user: params.get("user").map(str::to_owned),
        skip_rules: params
            .get("skip_rules")
            .is_some()
            .then(|| params.list("skip_rules")),
        calibration: number("calibration")?,
        popularity: number("popularity")?,
        popularity_method: params.get("popularity_method").map(str::to_owned),
        protected: params.get("protected").map(str::to_owned),
        protected_share: number("protected_share")?,
        protected_alpha: number("protected_alpha")?,
    };
    with_rules(state, req, rules)
}

/// A JSON array in a query parameter (`boost`, `promote`).
fn json_param<T: serde::de::DeserializeOwned>(
    params: &Params,
    name: &str,
) -> Result<Option<Vec<T>>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            serde_json::from_str(raw).map_err(|e| {
                ApiError::invalid(
                    name,
                    format!(
                        "{name} must be a JSON array of {{\"if\": <expression>, ...}} objects: {e}"
                    ),
                )
            })
        })
        .transpose()
}

/// Sets the rule fields on `req` and checks them against the catalog and the saved rules.
fn with_rules(
    state: &AppState,
    mut req: RankRequest,
    rules: RulesIn,
) -> Result<RankRequest, ApiError> {
    rules.apply(&mut req, state.engine.settings())?;
    state
        .engine
        .serving()
        .check_rules(&req, req.n)
        .map_err(|p| ApiError::invalid(p.field, p.message))?;
    Ok(req)
}

/// Serves the user the variants of the experiments running on `route` (laid over `req`), and
/// writes buffered exposures in the background when enough have gathered.
fn experiments(
    state: &AppState,
    route: ExperimentRoute,
    user: &str,
    req: &mut RankRequest,
) -> Served {
    let out = state.engine.assign_experiments(route, user, req);
    if !out.assigned.is_empty() && state.engine.exposures_due() {
        let engine = state.engine.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = engine.flush_exposures() {
                tracing::warn!(error = %e, "could not write experiment exposures; kept for the next try");
            }
        });
    }
    out
}

/// Runs the pipeline for a user, reading their stored attributes on the blocking pool when a
/// user without history needs them.
async fn rank_user(
    state: &AppState,
    key: &str,
    req: RankRequest,
) -> Result<Recommendations, ApiError> {
    let source = Source::User {
        key,
        attributes: None,
    };
    match state.engine.serving().rank(source, &req) {
        Ok(out) => Ok(out.unwrap_or_else(empty)),
        Err(NeedsAttributes) => {
            let engine = state.engine.clone();
            let key = key.to_owned();
            blocking(move || {
                let attributes = engine.user_attributes(&key);
                let source = Source::User {
                    key: &key,
                    attributes: Some(&attributes),
                };
                engine
                    .serving()
                    .rank(source, &req)
                    .map(|out| out.unwrap_or_else(empty))
                    .map_err(|_| ApiError::internal("ranking", &"attributes were asked for twice"))
            })
            .await
        }
    }
}

/// `GET /v1/users/{key}/explain?item=`: where the item would rank for the user and which
/// stage removed or demoted it, under the same parameters as recommendations.
pub(crate) async fn why_not(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<crate::pipeline::WhyNot>, ApiError> {
    let max_key = state.engine.settings().limits.max_key_bytes;
    validate_key("key", &key, max_key)?;
    let item = params
        .get("item")
        .ok_or_else(|| ApiError::invalid("item", "item is required: the item to explain"))?
        .to_owned();
    validate_key("item", &item, max_key)?;
    let req = query_request(
        &state,
        &params,
        &[
            "item",
            "n",
            "category",
            "exclude",
            "include_seen",
            "model",
            "diversity",
        ],
        true,
    )?;
    let serving = state.engine.serving();
    let found = match serving.why_not(&key, &item, &req, None) {
        Ok(found) => found,
        Err(NeedsAttributes) => {
            let engine = state.engine.clone();
            let (key, item) = (key.clone(), item.clone());
            blocking(move || {
                let attributes = engine.user_attributes(&key);
                engine
                    .serving()
                    .why_not(&key, &item, &req, Some(&attributes))
                    .map_err(|_| ApiError::internal("ranking", &"attributes were asked for twice"))
            })
            .await?
        }
    };
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found("item", &item))
}

fn empty() -> Recommendations {
    Recommendations {
        items: Vec::new(),
        personalized: false,
        model: "popular",
        model_version: None,
        rules: Vec::new(),
        filtered: Vec::new(),
    }
}

pub(crate) async fn recommendations(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<RecommendationsOut>, ApiError> {
    validate_key("key", &key, state.engine.settings().limits.max_key_bytes)?;
    let req = query_request(
        &state,
        &params,
        &[
            "n",
            "category",
            "exclude",
            "include_seen",
            "model",
            "explain",
            "diversity",
        ],
        true,
    )?;
    let mut req = req;
    let mut served = experiments(&state, ExperimentRoute::Recommendations, &key, &mut req);
    let n = req.n;
    let second = served.interleave.as_ref().map(|p| p.second.clone());
    let mut recs = rank_user(&state, &key, req).await?;
    if let Some(second) = second {
        let other = rank_user(&state, &key, second).await?;
        let first = std::mem::take(&mut recs.items);
        recs.items = state.engine.interleave(&mut served, first, other.items, n);
    }
    let assigned = served.assigned;
    Ok(Json(RecommendationsOut {
        user: key,
        personalized: recs.personalized,
        model: recs.model,
        model_version: recs.model_version,
        items: recs.items,
        rules: recs.rules,
        filtered: recs.filtered,
        experiments: assigned,
    }))
}

pub(crate) async fn similar(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    params: Params,
) -> Result<Json<SimilarOut>, ApiError> {
    validate_key("key", &key, state.engine.settings().limits.max_key_bytes)?;
    let req = query_request(
        &state,
        &params,
        &[
            "n",
            "model",
            "category",
            "exclude",
            "explain",
            "diversity",
            "user",
        ],
        false,
    )?;
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
    let mut req = req;
    let assigned = match req.user.clone() {
        Some(user) => experiments(&state, ExperimentRoute::Similar, &user, &mut req).assigned,
        None => Vec::new(),
    };
    let source = Source::Similar {
        item: &key,
        model: choice,
    };
    let out = state
        .engine
        .serving()
        .rank(source, &req)
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::not_found("item", &key))?;
    Ok(Json(SimilarOut {
        item: key,
        items: out.items,
        rules: out.rules,
        filtered: out.filtered,
        experiments: assigned,
    }))
}

pub(crate) async fn popular(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<PopularOut>, ApiError> {
    let req = query_request(
        &state,
        &params,
        &[
            "n",
            "category",
            "window",
            "sort",
            "exclude",
            "explain",
            "diversity",
            "user",
        ],
        false,
    )?;
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
    let mut req = req;
    let assigned = match req.user.clone() {
        Some(user) => experiments(&state, ExperimentRoute::Popular, &user, &mut req).assigned,
        None => Vec::new(),
    };
    let out = state
        .engine
        .serving()
        .rank(Source::Popular { sort, window }, &req)
        .ok()
        .flatten()
        .unwrap_or_else(empty);
    Ok(Json(PopularOut {
        items: out.items,
        rules: out.rules,
        filtered: out.filtered,
        experiments: assigned,
    }))
}

/// One item of a session or a history: a key, or `{item, weight}`.
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

/// Checks a session's or a history's items (`field`: `items` or `history`) and their weights.
fn session_items(
    state: &AppState,
    field: &str,
    items: Vec<SessionItem>,
) -> Result<Vec<(String, f32)>, ApiError> {
    let settings = state.engine.settings();
    let max = settings.serving.max_session_items;
    if items.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("at most {max} items (serving.max_session_items)"),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let (key, weight) = match it {
            SessionItem::Key(k) => (k, 1.0),
            SessionItem::Weighted { item, weight } => (item, weight.unwrap_or(1.0)),
        };
        validate_key(
            &format!("{field}[{i}]"),
            &key,
            settings.limits.max_key_bytes,
        )?;
        if !(weight.is_finite() && weight.abs() <= 1e6) {
            return Err(ApiError::invalid(
                format!("{field}[{i}].weight"),
                "must be a finite number of magnitude at most 1e6",
            ));
        }
        out.push((key, weight as f32));
    }
    Ok(out)
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
    #[serde(default)]
    explain: Option<String>,
    #[serde(default)]
    diversity: Option<f64>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    boost: Option<Vec<BoostSpec>>,
    #[serde(default)]
    promote: Option<Vec<PromoteSpec>>,
    #[serde(default)]
    max_per_category: Option<i64>,
    #[serde(default)]
    max_impressions: Option<i64>,
    #[serde(default)]
    impression_window: Option<String>,
    #[serde(default)]
    no_repeat_lists: Option<i64>,
    #[serde(default)]
    hide_similar: Option<f64>,
    #[serde(default)]
    skip_rules: Option<Vec<String>>,
    #[serde(default)]
    calibration: Option<f64>,
    #[serde(default)]
    popularity: Option<f64>,
    #[serde(default)]
    popularity_method: Option<String>,
    #[serde(default)]
    protected: Option<String>,
    #[serde(default)]
    protected_share: Option<f64>,
    #[serde(default)]
    protected_alpha: Option<f64>,
    /// Whose hidden items and impressions apply.
    #[serde(default)]
    user: Option<String>,
}

/// Answer of `POST /v1/recommendations`.
#[derive(Debug, Serialize)]
pub(crate) struct SessionOut {
    personalized: bool,
    model: &'static str,
    model_version: Option<u64>,
    items: Vec<Recommendation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
}

/// `POST /v1/recommendations`: recommendations for an anonymous session from its recent items.
pub(crate) async fn session(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SessionIn>,
) -> Result<Json<SessionOut>, ApiError> {
    let items = session_items(&state, "items", body.items)?;
    let req = CommonIn {
        n: body.n,
        model: body.model,
        categories: body.categories,
        exclude: body.exclude,
        include_seen: body.include_seen,
        explain: body.explain,
        diversity: body.diversity,
    }
    .validate(Form::Body, state.engine.settings(), body.context)?;
    let rules = RulesIn {
        filter: body.filter,
        boost: body.boost,
        promote: body.promote,
        max_per_category: body.max_per_category,
        max_impressions: body.max_impressions,
        impression_window: body.impression_window,
        no_repeat_lists: body.no_repeat_lists,
        hide_similar: body.hide_similar,
        user: body.user,
        skip_rules: body.skip_rules,
        calibration: body.calibration,
        popularity: body.popularity,
        popularity_method: body.popularity_method,
        protected: body.protected,
        protected_share: body.protected_share,
        protected_alpha: body.protected_alpha,
    };
    let req = with_rules(&state, req, rules)?;
    let recs = state
        .engine
        .serving()
        .rank(Source::Session(&items), &req)
        .ok()
        .flatten()
        .unwrap_or_else(empty);
    Ok(Json(SessionOut {
        personalized: recs.personalized,
        model: recs.model,
        model_version: recs.model_version,
        items: recs.items,
        rules: recs.rules,
        filtered: recs.filtered,
    }))
}

/// Most candidates one rank request may carry.
pub(crate) const MAX_RANK_ITEMS: usize = 1000;

/// Body of `POST /v1/users/{key}/rank`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RankIn {
    items: Vec<String>,
    #[serde(default, deserialize_with = "crate::strict::opt_object")]
    context: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    history: Vec<SessionItem>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    explain: Option<String>,
    #[serde(default)]
    diversity: Option<f64>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    boost: Option<Vec<BoostSpec>>,
    #[serde(default)]
    promote: Option<Vec<PromoteSpec>>,
    #[serde(default)]
    max_per_category: Option<i64>,
    #[serde(default)]
    max_impressions: Option<i64>,
    #[serde(default)]
    impression_window: Option<String>,
    #[serde(default)]
    no_repeat_lists: Option<i64>,
    #[serde(default)]
    hide_similar: Option<f64>,
    #[serde(default)]
    skip_rules: Option<Vec<String>>,
    #[serde(default)]
    calibration: Option<f64>,
    #[serde(default)]
    popularity: Option<f64>,
    #[serde(default)]
    popularity_method: Option<String>,
    #[serde(default)]
    protected: Option<String>,
    #[serde(default)]
    protected_share: Option<f64>,
    #[serde(default)]
    protected_alpha: Option<f64>,
}

/// Answer of `POST /v1/users/{key}/rank`.
#[derive(Debug, Serialize)]
pub(crate) struct RankOut {
    user: String,
    personalized: bool,
    model: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<u64>,
    items: Vec<RankedItem>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    /// Supplied items the rules filtered out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    experiments: Vec<Assigned>,
}

/// `POST /v1/users/{key}/rank`: the supplied items ordered for the user, with scores and
/// reasons.
pub(crate) async fn rank(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<RankIn>,
) -> Result<Json<RankOut>, ApiError> {
    let settings = state.engine.settings();
    let max_key = settings.limits.max_key_bytes;
    validate_key("key", &key, max_key)?;
    if body.items.is_empty() || body.items.len() > MAX_RANK_ITEMS {
        return Err(ApiError::invalid(
            "items",
            format!(
                "items must hold 1 to {MAX_RANK_ITEMS} item keys, got {}",
                body.items.len()
            ),
        ));
    }
    let mut seen = std::collections::HashMap::with_capacity(body.items.len());
    for (i, item) in body.items.iter().enumerate() {
        validate_key(&format!("items[{i}]"), item, max_key)?;
        if let Some(first) = seen.insert(item.as_str(), i) {
            return Err(ApiError::invalid(
                format!("items[{i}]"),
                format!("{item:?} is listed twice (also items[{first}])"),
            ));
        }
    }
    let history = session_items(&state, "history", body.history)?;
    let req = RankRequest {
        n: body.items.len(),
        model: model_param(body.model.as_deref())?,
        explain: explain_param(body.explain.as_deref())?,
        diversity: crate::pipeline::request::diversity_param(body.diversity)?,
        context: body.context,
        ..RankRequest::default()
    };
    let rules = RulesIn {
        filter: body.filter,
        boost: body.boost,
        promote: body.promote,
        max_per_category: body.max_per_category,
        max_impressions: body.max_impressions,
        impression_window: body.impression_window,
        no_repeat_lists: body.no_repeat_lists,
        hide_similar: body.hide_similar,
        user: None,
        skip_rules: body.skip_rules,
        calibration: body.calibration,
        popularity: body.popularity,
        popularity_method: body.popularity_method,
        protected: body.protected,
        protected_share: body.protected_share,
        protected_alpha: body.protected_alpha,
    };
    let mut req = with_rules(&state, req, rules)?;
    let assigned = experiments(&state, ExperimentRoute::Rank, &key, &mut req).assigned;
    let ranked = match state
        .engine
        .serving()
        .rank_supplied(&key, &body.items, &history, &req, None)
    {
        Ok(r) => r,
        Err(NeedsAttributes) => {
            let engine = state.engine.clone();
            let key = key.clone();
            blocking(move || {
                let attributes = engine.user_attributes(&key);
                engine
                    .serving()
                    .rank_supplied(&key, &body.items, &history, &req, Some(&attributes))
                    .map_err(|_| ApiError::internal("ranking", &"attributes were asked for twice"))
            })
            .await?
        }
    };
    let Ranked {
        items,
        personalized,
        model,
        model_version,
        rules,
        filtered,
    } = ranked;
    Ok(Json(RankOut {
        user: key,
        personalized,
        model,
        model_version,
        items,
        rules,
        filtered,
        experiments: assigned,
    }))
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(crate) struct Api;
