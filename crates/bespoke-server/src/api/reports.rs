//! `GET /v1/reports/fairness`: the fairness and bias report on the live model.

use axum::Json;
use axum::extract::State;
use utoipa::IntoParams;

use super::AppState;
use super::extract::Params;
use super::serving::{ModelName, RuleQuery, query_request};
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
