//! `GET /v1/reports/fairness`: the fairness and bias report on the live model.

use axum::Json;
use axum::extract::State;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::Params;
use super::serving::query_request;
use crate::engine::{LiveReport, ReportError, ReportOptions};
use crate::error::ApiError;

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::UnknownAttribute { what, .. } => {
                let field = if what == "user" {
                    "user_attribute"
                } else {
                    "item_attribute"
                };
                ApiError::invalid(field, e.to_string())
            }
            ReportError::Store(e) => e.into(),
        }
    }
}

/// Most users a report may be asked to sample (`users`).
const MAX_REPORT_USERS: i64 = 10_000_000;

// The report reads its query with `Params` (repeated parameters, precise errors); the structs
// below describe it for the OpenAPI document only, and `tests::the_query_parameters_are_
// the_ones_read` keeps them in step with what `fairness` allows.

/// The query parameters of the fairness report, besides the rule parameters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct FairnessQuery {
    /// List length measured; default fairness.report_k
    #[param(minimum = 1)]
    k: Option<i64>,
    /// Rank a seeded sample of at most this many users (all by default)
    #[param(minimum = 1)]
    users: Option<i64>,
    /// Seed of the sample and of the bootstrap
    #[param(minimum = 0)]
    seed: Option<i64>,
    /// A user attribute to group by (repeatable); one nobody has is a 400
    user_attribute: Option<String>,
    /// An item attribute whose groups' exposure is compared with their catalog share
    /// (repeatable; `category` for the first category); one no item has is a 400
    item_attribute: Option<String>,
    /// The model whose lists are measured (as for recommendations)
    #[param(inline)]
    model: Option<ModelName>,
    /// Only items in any of these categories (comma-separated or repeated)
    category: Option<String>,
    /// λ of the diversity re-ranker, 0 to 1 (maximal marginal relevance over the candidates:
    /// (1 − λ)·relevance − λ·similarity to the items above, similarity the cosine of iALS item
    /// factors, else shared categories). 0 (default) leaves the ranking as scored; scores never
    /// change, and an item moved down gets a `diversity` reason
    #[param(minimum = 0, maximum = 1, default = 0)]
    diversity: Option<f64>,
}

/// A model that ranks for a user (the OpenAPI description's enum).
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

/// The business-rule and re-ranker query parameters the report's lists are ranked with, as on
/// the ranking GETs (docs/rules.md, docs/fairness.md).
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

/// How popularity debiasing re-ranks (the OpenAPI description's enum).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
pub(crate) enum PopularityMethodName {
    Xquad,
    Inverse,
}

/// The report's own query parameters, as `fairness` allows them (the rule parameters are
/// `RULE_PARAMS`).
const REPORT_PARAMS: [&str; 8] = [
    "k",
    "users",
    "seed",
    "user_attribute",
    "item_attribute",
    "model",
    "category",
    "diversity",
];

/// Fairness and bias report on the live model
///
/// Ranks every user with a history through the pipeline (with the re-rankers asked for) and
/// measures the lists: catalog coverage@k, Gini of exposure, long-tail shares, popularity lift
/// (Abdollahpouri 2019), miscalibration (Steck 2018, α = 0.01), exposure by item group against
/// catalog share. Accuracy by user group needs held-out data: `bespoke fairness` on a split.
/// Values that are undefined are null, with notes.
#[utoipa::path(get, path = "/v1/reports/fairness", operation_id = "fairnessReport",
    params(FairnessQuery, RuleQuery),
    responses((status = 200, description = "The report", body = LiveReport), (status = 400)))]
pub(crate) async fn fairness(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<LiveReport>, ApiError> {
    let settings = state.engine.settings();
    let int = |name: &str, lo: i64, hi: i64| -> Result<Option<i64>, ApiError> {
        match params.get(name) {
            None => Ok(None),
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
                _ => Err(ApiError::invalid(
                    name,
                    format!("{name} must be an integer from {lo} to {hi}, got {raw:?}"),
                )),
            },
        }
    };
    let k = int("k", 1, settings.limits.max_n as i64)?
        .map_or(settings.fairness.report_k, |k| k as usize);
    let max_users = int("users", 1, MAX_REPORT_USERS)?.map(|u| u as usize);
    let seed = int("seed", 0, i64::MAX)?.unwrap_or(0) as u64;
    let mut req = query_request(&state, &params, &REPORT_PARAMS, true)?;
    req.n = k;
    let opts = ReportOptions {
        user_attributes: params.list("user_attribute"),
        item_attributes: params.list("item_attribute"),
        max_users,
        seed,
    };
    let engine = state.engine.clone();
    let report = super::blocking(move || Ok(engine.fairness_report(&req, &opts)?)).await?;
    Ok(Json(report))
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(fairness))]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::REPORT_PARAMS;
    use crate::pipeline::request::RULE_PARAMS;

    /// The document lists exactly the query parameters the handler allows.
    #[test]
    fn the_query_parameters_are_the_ones_read() {
        let doc = crate::openapi::document(crate::api::ROUTES, &crate::api::derived_openapi());
        let documented: BTreeSet<String> =
            doc["paths"]["/v1/reports/fairness"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
        let read: BTreeSet<String> = REPORT_PARAMS
            .iter()
            .chain(RULE_PARAMS.iter())
            .map(|p| (*p).to_owned())
            .collect();
        assert_eq!(documented, read);
    }
}
