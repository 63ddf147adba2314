//! The HTTP API: routes, handlers and their JSON shapes.
//!
//! Handlers stay thin: they validate input, hand the work to the [`Engine`] on the blocking
//! pool (store IO and scoring must not stall the async runtime), and shape the answer.

mod catalog;
mod events;
mod extract;
mod models;
mod ops;
mod serving;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};

use crate::engine::Engine;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Shared state of all handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
}

/// Every route as `(method, path template)`. The OpenAPI document must describe exactly these
/// (a test checks it, and another calls each one on a running server).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/events"),
    ("GET", "/v1/users/{key}"),
    ("PUT", "/v1/users/{key}"),
    ("DELETE", "/v1/users/{key}"),
    ("GET", "/v1/users/{key}/events"),
    ("GET", "/v1/users/{key}/recommendations"),
    ("GET", "/v1/items/{key}"),
    ("PUT", "/v1/items/{key}"),
    ("DELETE", "/v1/items/{key}"),
    ("GET", "/v1/items/{key}/similar"),
    ("GET", "/v1/popular"),
    ("GET", "/v1/models"),
    ("POST", "/v1/models/train"),
    ("POST", "/v1/models/{version}/activate"),
];

/// The application router with its middleware.
pub fn router(state: AppState) -> Router {
    let limits = &state.engine.settings().limits;
    let body_limit = limits.max_body_bytes;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1/events", post(events::post_events))
        .route(
            "/v1/users/{key}",
            put(catalog::put_user)
                .get(catalog::get_user)
                .delete(catalog::delete_user),
        )
        .route("/v1/users/{key}/events", get(events::user_events))
        .route(
            "/v1/users/{key}/recommendations",
            get(serving::recommendations),
        )
        .route(
            "/v1/items/{key}",
            put(catalog::put_item)
                .get(catalog::get_item)
                .delete(catalog::delete_item),
        )
        .route("/v1/items/{key}/similar", get(serving::similar))
        .route("/v1/popular", get(serving::popular))
        .route("/v1/models", get(models::list))
        .route("/v1/models/train", post(models::train))
        .route("/v1/models/{version}/activate", post(models::activate))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn route_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route; see /openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept this method; see /openapi.json",
    )
}

/// Records metrics per route template, and logs each request at debug level without its
/// path (which may hold a user key).
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .record(method.as_str(), &route, status, elapsed);
    tracing::debug!(target: "serve::http", %method, route, status, micros = elapsed.as_micros() as u64, "request");
    response
}

/// Runs blocking engine work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("blocking task", &e))?
}

/// Checks a key, naming `field` in the error.
pub(crate) fn validate_key(field: &str, key: &str, max_bytes: usize) -> Result<(), ApiError> {
    crate::validate::check_key(field, key, max_bytes).map_err(|m| ApiError::invalid(field, m))
}
