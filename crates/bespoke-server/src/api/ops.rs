//! `/healthz`, `/metrics` and `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;

pub(crate) async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let counts = state.engine.counts();
    Json(
        json!({ "status": "ok", "users": counts.users, "items": counts.items, "events": counts.events }),
    )
}

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(state.engine.counts());
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

pub(crate) async fn openapi() -> Result<Json<Value>, ApiError> {
    Ok(Json(crate::openapi::document()))
}
