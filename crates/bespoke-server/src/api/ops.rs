//! `/healthz`, `/metrics` and `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use crate::error::ApiError;

/// The server is up.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Health)]
pub(crate) struct HealthOut {
    /// `ok`.
    status: &'static str,
}

/// Liveness
///
/// Public (load balancers hold no keys), so it says nothing but that the server is up; counts
/// are in `/metrics`.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz",
    responses((status = 200, description = "Serving", body = HealthOut)))]
pub(crate) async fn healthz() -> Json<HealthOut> {
    Json(HealthOut { status: "ok" })
}

/// Prometheus metrics (OpenMetrics text format)
#[utoipa::path(get, path = "/metrics", operation_id = "metrics",
    responses((status = 200, description = "Metrics", body = String,
        content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(state.engine.counts());
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}

/// This document
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub(crate) async fn openapi() -> Result<Json<Value>, ApiError> {
    Ok(Json(crate::openapi::document(
        super::ROUTES,
        &super::derived_openapi(),
    )))
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, metrics, openapi))]
pub(crate) struct Api;
