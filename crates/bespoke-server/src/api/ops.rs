//! `/healthz`, `/metrics` and `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;

/// Public (load balancers hold no keys), so it says nothing but that the server is up; counts
/// are in `/metrics`.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(state.engine.counts());
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}

pub(crate) async fn openapi() -> Result<Json<Value>, ApiError> {
    Ok(Json(crate::openapi::document(
        super::ROUTES,
        &super::derived_openapi(),
    )))
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(crate) struct Api;
