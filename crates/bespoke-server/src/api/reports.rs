//! `GET /v1/reports/fairness`: the fairness and bias report on the live model.

use axum::Json;
use axum::extract::State;

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
    let mut req = query_request(
        &state,
        &params,
        &[
            "k",
            "users",
            "seed",
            "user_attribute",
            "item_attribute",
            "model",
            "category",
            "diversity",
        ],
        true,
    )?;
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
#[openapi()]
pub(crate) struct Api;
