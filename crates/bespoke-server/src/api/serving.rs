//! Recommendations, similar items, popular items and the ranking of supplied candidates: each
//! parses into one [`RankRequest`] and runs the ranking pipeline.
//!
//! Ranking is bounded CPU work of tens of microseconds with no IO, so it runs on the runtime
//! worker, which costs less than a hand-off to the blocking pool and back. The one store read a
//! ranking may need (a history-less user's attributes) goes to the blocking pool.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{JsonBody, KeyParam, KeyPath, Params};
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

/// Recommendations for a user, best first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Recommendations)]
pub(crate) struct RecommendationsOut {
    /// The user asked about.
    user: String,
    /// Whether the user's own history shaped the results.
    personalized: bool,
    /// The model that ranked the results.
    #[schema(inline, value_type = ServedModel)]
    model: &'static str,
    /// The trained model version, when one was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<u64>,
    /// Best first.
    items: Vec<Recommendation>,
    /// The business rules that applied: saved ones by name, the request's own as
    /// request.filter, request.boost\[0\], ...; hidden and no_repeat when they removed anything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    /// Items the rules kept out (explain=full).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
    /// The experiment variants this list was served with (docs/experiments.md); echo them in
    /// POST /v1/impressions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<super::events::ServedVariant>)]
    experiments: Vec<Assigned>,
}

/// The model that ranked a list.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum ServedModel {
    Als,
    Knn,
    Ease,
    Bpr,
    Blend,
    Content,
    Popular,
}

/// Items related to an item, best first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Similar)]
pub(crate) struct SimilarOut {
    /// The item asked about.
    item: String,
    /// Best first.
    items: Vec<Recommendation>,
    /// The business rules that applied (as on recommendations).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    /// Items the rules kept out (explain=full).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
    /// The experiment variants this list was served with (with `user`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<super::events::ServedVariant>)]
    experiments: Vec<Assigned>,
}

/// Popular items, best first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Popular)]
pub(crate) struct PopularOut {
    /// Best first.
    items: Vec<Recommendation>,
    /// The business rules that applied (as on recommendations).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    /// Items the rules kept out (explain=full).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
    /// The experiment variants this list was served with (with `user`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<super::events::ServedVariant>)]
    experiments: Vec<Assigned>,
}

// The ranking GETs read their query with `Params` (repeated parameters, precise errors); the
// structs below describe it for the OpenAPI document only. `tests::rule_query_lists_the_rule_
// parameters` keeps `RuleQuery` in step with what `query_request` reads.

/// The query parameters every ranking GET takes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct ListQuery {
    /// Number of results, 1 to limits.max_n (1000 by default); default serving.default_n
    #[param(minimum = 1)]
    n: Option<i64>,
    /// Only items in any of these categories (comma-separated or repeated)
    category: Option<String>,
    /// Item keys never to return (comma-separated or repeated), at most limits.max_exclude
    exclude: Option<String>,
    /// `reasons` (default) or `full`: each result also carries `contributions`, the terms of
    /// its score, which sum to it (see the Contribution schema for each model's terms)
    #[param(inline)]
    explain: Option<ExplainName>,
    /// λ of the diversity re-ranker, 0 to 1 (maximal marginal relevance over the candidates:
    /// (1 − λ)·relevance − λ·similarity to the items above, similarity the cosine of iALS item
    /// factors, else shared categories). 0 (default) leaves the ranking as scored; scores never
    /// change, and an item moved down gets a `diversity` reason
    #[param(minimum = 0, maximum = 1, default = 0)]
    diversity: Option<f64>,
}

/// How much explanation to give.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum ExplainName {
    Reasons,
    Full,
}

/// A model that ranks for a user.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
pub(crate) enum ModelName {
    Auto,
    Als,
    Knn,
    Ease,
    Bpr,
    Popular,
}

/// A model that finds similar items.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum SimilarModelName {
    Knn,
    Als,
    Cooccurrence,
}

/// The query parameters of recommendations for a user.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct RecommendationsQuery {
    /// auto (what the last tuning chose: a model or a blend), als, knn, ease (catalogs up to
    /// training.ease_max_items), bpr (with training.bpr) or popular; default
    /// serving.default_model
    #[param(inline)]
    model: Option<ModelName>,
    /// Also return items the user interacted with
    #[param(default = false)]
    include_seen: Option<bool>,
}

/// The query parameters of similar items.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct SimilarQuery {
    /// knn (item neighbours), als (cosine of item factors) or cooccurrence; default
    /// serving.default_similar_model
    #[param(inline)]
    model: Option<SimilarModelName>,
    /// Whose hidden items and impressions apply
    user: Option<String>,
}

/// How popular items are ordered.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum PopularSortName {
    Count,
    Trending,
}

/// The query parameters of popular items.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct PopularQuery {
    /// Count only events of the last 90s, 30m, 24h, 7d, 2w…; `all` (default) for all time
    window: Option<String>,
    /// `count` (default) or `trending`
    #[param(inline)]
    sort: Option<PopularSortName>,
    /// Whose hidden items and impressions apply
    user: Option<String>,
}

/// The business-rule and re-ranker query parameters of the ranking GETs (docs/rules.md,
/// docs/fairness.md).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct RuleQuery {
    /// Keep only items this rule expression matches (docs/rules.md): comparisons on item
    /// attributes, `in`, `contains`, `and`/`or`/`not`, `now - 30d`, `context.<name>`
    #[param(example = "stock > 0 and price < 50")]
    filter: Option<String>,
    /// JSON array of boosts, applied in order: where `if` holds the score is multiplied by `by`
    /// (a negative score divided, so by > 1 always raises) or `add` is added; results are
    /// re-sorted
    #[param(example = "[{\"if\": \"tags contains \\\"organic\\\"\", \"by\": 1.5}]")]
    boost: Option<String>,
    /// JSON array of promotions: position `slot` (1 = first, at most n) holds the best-ranked
    /// item `if` matches
    #[param(example = "[{\"slot\": 3, \"if\": \"campaign = \\\"winter\\\"\"}]")]
    promote: Option<String>,
    /// At most this many results per category
    #[param(minimum = 1)]
    max_per_category: Option<i64>,
    /// No-repeat: drop items shown to the user at least this many times within
    /// impression_window without an interaction since; 0 off; default rules.max_impressions
    #[param(minimum = 0)]
    max_impressions: Option<i64>,
    /// The window of max_impressions (90m, 24h, 7d); default rules.impression_window
    impression_window: Option<String>,
    /// Drop what was in the user's last this many lists; 0 off; default rules.no_repeat_lists
    #[param(minimum = 0)]
    no_repeat_lists: Option<i64>,
    /// 0 to 1: how far items resembling one the user hid move down; default rules.hide_similar
    #[param(minimum = 0, maximum = 1)]
    hide_similar: Option<f64>,
    /// Saved rules not to apply (comma-separated or repeated); * for all
    skip_rules: Option<String>,
    /// Calibration re-ranker's λ, 0 to 1 (Steck 2018, greedy): the list's categories follow
    /// the user's history; 0 off; default fairness.calibration (docs/fairness.md)
    #[param(minimum = 0, maximum = 1)]
    calibration: Option<f64>,
    /// Popularity debiasing's weight, 0 to 1: lifts long-tail items; 0 off; default
    /// fairness.popularity
    #[param(minimum = 0, maximum = 1)]
    popularity: Option<f64>,
    /// xquad (smooth xQuAD over head and tail, Abdollahpouri 2019) or inverse (relevance /
    /// popularity^weight); default fairness.popularity_method
    #[param(inline)]
    popularity_method: Option<PopularityMethodName>,
    /// A rule expression naming the protected item group: every prefix of the list holds at
    /// least FA*IR's minimum of them (Zehlike 2017); empty turns the default off; default
    /// fairness.protected. A group with no item is a 400
    #[param(example = "maker = \"indie\"")]
    protected: Option<String>,
    /// FA*IR's minimum share p, between 0 and 1; default fairness.protected_share
    #[param(exclusive_minimum = 0, exclusive_maximum = 1)]
    protected_share: Option<f64>,
    /// FA*IR's significance α, between 0 and 1 (adjusted for testing every prefix); default
    /// fairness.protected_alpha
    #[param(exclusive_minimum = 0, exclusive_maximum = 1)]
    protected_alpha: Option<f64>,
}

/// How popularity debiasing re-ranks.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
pub(crate) enum PopularityMethodName {
    Xquad,
    Inverse,
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

/// The query of "why not?": the item, and the parameters of the recommendations asked about
/// (doc only: read with `Params`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct WhyNotQuery {
    /// The item to explain
    item: String,
    /// Number of results, 1 to limits.max_n (1000 by default); default serving.default_n
    #[param(minimum = 1)]
    n: Option<i64>,
    /// As for recommendations
    #[param(inline)]
    model: Option<ModelName>,
    /// Only items in any of these categories (comma-separated or repeated)
    category: Option<String>,
    /// Item keys never to return (comma-separated or repeated), at most limits.max_exclude
    exclude: Option<String>,
    /// Also return items the user interacted with
    #[param(default = false)]
    include_seen: Option<bool>,
    /// λ of the diversity re-ranker, 0 to 1 (as for recommendations)
    #[param(minimum = 0, maximum = 1, default = 0)]
    diversity: Option<f64>,
}

/// Why not? Where an item would rank for a user and which stage removed or demoted it
///
/// Runs the recommendation pipeline with the same parameters, once as asked and again with
/// stages turned off, and reports the item's score and its terms, its rank by the model alone
/// and after the rules, and each stage's verdict in pipeline order: consent, availability,
/// exclude, category, rule (hidden, no_repeat, a filter), already_seen, rules (boosts, category
/// cap), ranking (below the cut), hide_similar, diversity, fairness.
#[utoipa::path(get, path = "/v1/users/{key}/explain", operation_id = "whyNot",
    params(KeyParam, WhyNotQuery, RuleQuery),
    responses((status = 200, description = "The explanation", body = crate::pipeline::WhyNot),
        (status = 400), (status = 404)))]
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

/// Recommendations for a user
///
/// Unknown users and users without personalization consent get popular items; the reasons say
/// so.
#[utoipa::path(get, path = "/v1/users/{key}/recommendations", operation_id = "getRecommendations",
    params(KeyParam, ListQuery, RecommendationsQuery, RuleQuery),
    responses((status = 200, description = "Recommendations, best first", body = RecommendationsOut),
        (status = 400)))]
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

/// Items related to an item (co-occurrence; popular items of its category when there is too little data)
#[utoipa::path(get, path = "/v1/items/{key}/similar", operation_id = "getSimilar",
    params(KeyParam, ListQuery, SimilarQuery, RuleQuery),
    responses((status = 200, description = "Related items, best first", body = SimilarOut),
        (status = 400), (status = 404)))]
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

/// Popular items: all-time, within a window, or trending (time-decayed)
#[utoipa::path(get, path = "/v1/popular", operation_id = "getPopular",
    params(ListQuery, PopularQuery, RuleQuery),
    responses((status = 200, description = "Popular items, best first", body = PopularOut),
        (status = 400)))]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum SessionItem {
    /// An item key (weight 1).
    Key(String),
    /// An item key and its weight.
    Weighted {
        /// The item key.
        item: String,
        /// Its weight, finite and of magnitude at most 1e6; default 1.
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

/// Body of `POST /v1/recommendations`: an anonymous session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionIn {
    /// The session's items, oldest first; at most serving.max_session_items.
    #[serde(default)]
    items: Vec<SessionItem>,
    /// Attributes of the visitor or the request (country, device, ...), named like user
    /// attributes: when no session item is known, the content model places the visitor by them.
    #[serde(default, deserialize_with = "crate::strict::opt_object")]
    #[schema(value_type = Option<Object>)]
    context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Number of results, 1 to limits.max_n; default serving.default_n.
    #[serde(default)]
    #[schema(minimum = 1)]
    n: Option<i64>,
    /// The model; default serving.default_model.
    #[serde(default)]
    #[schema(inline, value_type = Option<ModelName>)]
    model: Option<String>,
    /// Only items in any of these categories.
    #[serde(default)]
    categories: Vec<String>,
    /// Item keys never to return.
    #[serde(default)]
    exclude: Vec<String>,
    /// Also recommend the session's own items.
    #[serde(default)]
    include_seen: bool,
    /// `reasons` (default) or `full`.
    #[serde(default)]
    #[schema(inline, value_type = Option<ExplainName>)]
    explain: Option<String>,
    /// λ of the diversity re-ranker, 0 to 1; default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    diversity: Option<f64>,
    /// A rule expression (docs/rules.md): only items it matches.
    #[serde(default)]
    #[schema(example = "stock > 0 and price < 50")]
    filter: Option<String>,
    /// Boosts, applied in order.
    #[serde(default)]
    boost: Option<Vec<BoostSpec>>,
    /// Promotions to fixed positions.
    #[serde(default)]
    promote: Option<Vec<PromoteSpec>>,
    /// At most this many results per category.
    #[serde(default)]
    #[schema(minimum = 1)]
    max_per_category: Option<i64>,
    /// No-repeat: drop items shown at least this many times within impression_window.
    #[serde(default)]
    #[schema(minimum = 0)]
    max_impressions: Option<i64>,
    /// The window of max_impressions (90m, 24h, 7d).
    #[serde(default)]
    impression_window: Option<String>,
    /// Drop what was in the user's last this many lists.
    #[serde(default)]
    #[schema(minimum = 0)]
    no_repeat_lists: Option<i64>,
    /// 0 to 1: how far items resembling a hidden one move down.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    hide_similar: Option<f64>,
    /// Saved rules not to apply; `*` for all.
    #[serde(default)]
    skip_rules: Option<Vec<String>>,
    /// Calibration re-ranker's λ, 0 to 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    calibration: Option<f64>,
    /// Popularity debiasing's weight, 0 to 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    popularity: Option<f64>,
    /// xquad or inverse.
    #[serde(default)]
    #[schema(inline, value_type = Option<PopularityMethodName>)]
    popularity_method: Option<String>,
    /// A rule expression naming the protected item group (FA*IR).
    #[serde(default)]
    protected: Option<String>,
    /// FA*IR's minimum share p, between 0 and 1.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    protected_share: Option<f64>,
    /// FA*IR's significance α, between 0 and 1.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    protected_alpha: Option<f64>,
    /// Whose hidden items and impressions apply.
    #[serde(default)]
    user: Option<String>,
}

/// Recommendations for a session, best first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionRecommendations)]
pub(crate) struct SessionOut {
    /// Whether a known session item shaped the results.
    personalized: bool,
    /// The model that ranked the results.
    #[schema(inline, value_type = ServedModel)]
    model: &'static str,
    /// The trained model version, when one was used.
    model_version: Option<u64>,
    /// Best first.
    items: Vec<Recommendation>,
    /// The business rules that applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    /// Items the rules kept out (explain=full).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
}

/// Recommendations for an anonymous session from its recent items (folded into the model on the fly)
///
/// items: oldest first, each a key or {item, weight}; with serving.session_half_life_items,
/// older items count less. Session items are not recommended back unless include_seen. Unknown
/// items are ignored. Without a known item, the context (if any) places the visitor through the
/// content model; otherwise popular items fill in, and the reasons say so.
#[utoipa::path(post, path = "/v1/recommendations", operation_id = "recommendSession",
    request_body = SessionIn,
    responses((status = 200, description = "Recommendations, best first", body = SessionOut),
        (status = 400), (status = 413), (status = 415)))]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RankIn {
    /// Candidate item keys, each once.
    #[schema(min_items = 1, max_items = 1000)]
    items: Vec<String>,
    /// Attributes of the request, named like user attributes: place a user without history
    /// through the content model.
    #[serde(default, deserialize_with = "crate::strict::opt_object")]
    #[schema(value_type = Option<Object>)]
    context: Option<serde_json::Map<String, serde_json::Value>>,
    /// A session's items, oldest first (a key or {item, weight}); ranks a user never seen or
    /// one without history. At most serving.max_session_items.
    #[serde(default)]
    history: Vec<SessionItem>,
    /// The model; default serving.default_model.
    #[serde(default)]
    #[schema(inline, value_type = Option<ModelName>)]
    model: Option<String>,
    /// `reasons` (default) or `full`.
    #[serde(default)]
    #[schema(inline, value_type = Option<ExplainName>)]
    explain: Option<String>,
    /// λ of the diversity re-ranker, 0 to 1; default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    diversity: Option<f64>,
    /// A rule expression (docs/rules.md): only items it matches.
    #[serde(default)]
    #[schema(example = "stock > 0 and price < 50")]
    filter: Option<String>,
    /// Boosts, applied in order.
    #[serde(default)]
    boost: Option<Vec<BoostSpec>>,
    /// Promotions to fixed positions.
    #[serde(default)]
    promote: Option<Vec<PromoteSpec>>,
    /// At most this many results per category.
    #[serde(default)]
    #[schema(minimum = 1)]
    max_per_category: Option<i64>,
    /// No-repeat: drop items shown at least this many times within impression_window.
    #[serde(default)]
    #[schema(minimum = 0)]
    max_impressions: Option<i64>,
    /// The window of max_impressions (90m, 24h, 7d).
    #[serde(default)]
    impression_window: Option<String>,
    /// Drop what was in the user's last this many lists.
    #[serde(default)]
    #[schema(minimum = 0)]
    no_repeat_lists: Option<i64>,
    /// 0 to 1: how far items resembling a hidden one move down.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    hide_similar: Option<f64>,
    /// Saved rules not to apply; `*` for all.
    #[serde(default)]
    skip_rules: Option<Vec<String>>,
    /// Calibration re-ranker's λ, 0 to 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    calibration: Option<f64>,
    /// Popularity debiasing's weight, 0 to 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    popularity: Option<f64>,
    /// xquad or inverse.
    #[serde(default)]
    #[schema(inline, value_type = Option<PopularityMethodName>)]
    popularity_method: Option<String>,
    /// A rule expression naming the protected item group (FA*IR).
    #[serde(default)]
    protected: Option<String>,
    /// FA*IR's minimum share p, between 0 and 1.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    protected_share: Option<f64>,
    /// FA*IR's significance α, between 0 and 1.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    protected_alpha: Option<f64>,
}

/// Every supplied item, best first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Ranked)]
pub(crate) struct RankOut {
    /// The user asked about.
    user: String,
    /// Whether the user's (or the request's) history shaped the order.
    personalized: bool,
    /// The model that scored them.
    #[schema(inline, value_type = ServedModel)]
    model: &'static str,
    /// The trained model version, when one was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<u64>,
    /// Scored items best first, then the unknown ones in the order given.
    items: Vec<RankedItem>,
    /// The business rules that applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    /// Supplied items the rules filtered out (always listed on this route).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filtered: Vec<Filtered>,
    /// The experiment variants this ranking was served with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<super::events::ServedVariant>)]
    experiments: Vec<Assigned>,
}

/// Rank supplied candidates for a user: every item back, best first, with scores and reasons
///
/// Up to 1,000 item keys, each once. Items are scored by one model (model, default
/// serving.default_model; a tuned blend ranks by its first model, as sessions do) from the
/// user's history; a user never seen, or one without history, is ranked by `history` (a
/// session, oldest first), else by their attributes and `context` through the content model.
/// Items the model has no row for are scored by the content model when the catalog has their
/// content (items without events); the rest come last, in the order given, with
/// `"unknown": true`, `score: null` and a `cold_start` reason. Without consent to
/// personalization, without a trained model or with model=popular, items are ranked by
/// popularity. The same pipeline as recommendations: `explain=full` and `diversity` work here
/// too.
#[utoipa::path(post, path = "/v1/users/{key}/rank", operation_id = "rankItems", params(KeyParam),
    request_body(content = RankIn, example = json!({ "items": ["sku-1", "sku-2", "sku-3", "sku-new"],
        "history": ["sku-9"], "context": { "device": "mobile" }, "explain": "full" })),
    responses((status = 200, description = "Every supplied item, best first", body = RankOut,
        example = json!({ "user": "u1", "personalized": true, "model": "als", "model_version": 3, "items": [
            { "item": "sku-2", "score": 0.82, "reasons": [{ "kind": "als", "message": "because of sku-9 in this history", "item": "sku-9", "weight": 0.8 }],
              "contributions": [{ "term": "history_item", "item": "sku-9", "value": 0.8 }, { "term": "history_item", "item": "sku-4", "value": 0.02 }] },
            { "item": "sku-1", "score": 0.31, "reasons": [{ "kind": "als", "message": "because of sku-9 in this history", "item": "sku-9", "weight": 0.31 }],
              "contributions": [{ "term": "history_item", "item": "sku-9", "value": 0.31 }] },
            { "item": "sku-new", "score": null, "unknown": true, "reasons": [{ "kind": "cold_start", "message": "not in the catalog: ranked last" }] } ] })),
        (status = 400), (status = 413), (status = 415)))]
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
#[openapi(paths(recommendations, similar, popular, session, rank, why_not))]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    use crate::openapi::tests::assert_request_schema;

    #[test]
    fn request_schemas_match_the_types() {
        assert_request_schema::<super::SessionIn>("SessionIn");
        assert_request_schema::<super::RankIn>("RankIn");
    }

    /// The documented rule parameters are the ones `query_request` reads.
    #[test]
    fn rule_query_lists_the_rule_parameters() {
        use utoipa::IntoParams as _;
        let documented: std::collections::BTreeSet<String> = super::RuleQuery::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        let read: std::collections::BTreeSet<String> = crate::pipeline::request::RULE_PARAMS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(documented, read);
    }
}
