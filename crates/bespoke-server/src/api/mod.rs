//! The HTTP API: routes, handlers and their JSON shapes.
//!
//! Handlers stay thin: they validate input, hand the work to the [`Engine`] on the blocking
//! pool (store IO and scoring must not stall the async runtime), and shape the answer.

pub(crate) mod admin;
pub(crate) mod audiences;
pub(crate) mod catalog;
pub(crate) mod decisions;
pub(crate) mod device;
pub(crate) mod events;
pub(crate) mod experiments;
mod extract;
pub(crate) mod federated;
#[cfg(test)]
mod fuzz;
pub(crate) mod gorse;
pub(crate) mod models;
pub(crate) mod ops;
pub(crate) mod personalizer;
pub(crate) mod reports;
pub(crate) mod rules;
pub(crate) mod segments;
pub(crate) mod serving;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::auth::{Access, AuthError, Caller, FailedAuthThrottle, Scope};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::metrics::{AuthFailure, Metrics};
pub(crate) use crate::validate::validate_key;

/// Shared state of all handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Per-source throttling of failed authentications.
    pub throttle: Arc<FailedAuthThrottle>,
}

impl AppState {
    /// The state for `engine`, with fresh metrics and a throttle configured from its settings.
    pub fn new(engine: Arc<Engine>) -> Self {
        let auth = &engine.settings().auth;
        let throttle = FailedAuthThrottle::new(auth.failed_per_minute, auth.failed_burst);
        Self {
            engine,
            metrics: Arc::new(Metrics::default()),
            throttle: Arc::new(throttle),
        }
    }
}

/// Every route as `(method, path template, who may call it)`. The OpenAPI document must
/// describe exactly these (a test checks it, and another calls each one on a running server);
/// the authorization middleware reads the access from here, so a route cannot exist without one.
/// `HEAD` is served wherever `GET` is, under `GET`'s rule. README's scope table lists exactly
/// these (`tests::readme_scope_table_matches_routes`).
///
/// The `read` scope is what front-ends ship to browsers, so assume it leaks: it serves
/// recommendations, similar and popular items, single catalog items and this document, and
/// nothing else. The decision loops' configuration and statistics (`GET /v1/loops...`) need
/// `write`: the backend that asks for decisions and sends rewards needs to see the loops it
/// works in, while their actions, policies and reward figures are business data a visitor has
/// no use for.
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Public),
    ("GET", "/metrics", Access::Needs(Scope::Admin)),
    ("GET", "/openapi.json", Access::Needs(Scope::Read)),
    ("POST", "/v1/events", Access::Needs(Scope::Write)),
    ("POST", "/v1/impressions", Access::Needs(Scope::Write)),
    ("GET", "/v1/users/{key}/hidden", Access::Needs(Scope::Write)),
    (
        "PUT",
        "/v1/users/{key}/hidden/{item}",
        Access::Needs(Scope::Write),
    ),
    (
        "DELETE",
        "/v1/users/{key}/hidden/{item}",
        Access::Needs(Scope::Write),
    ),
    ("GET", "/v1/rules", Access::Needs(Scope::Admin)),
    ("GET", "/v1/rules/{key}", Access::Needs(Scope::Admin)),
    ("PUT", "/v1/rules/{key}", Access::Needs(Scope::Admin)),
    ("DELETE", "/v1/rules/{key}", Access::Needs(Scope::Admin)),
    ("GET", "/v1/users/{key}", Access::Needs(Scope::Write)),
    ("PUT", "/v1/users/{key}", Access::Needs(Scope::Write)),
    ("DELETE", "/v1/users/{key}", Access::Needs(Scope::Write)),
    ("GET", "/v1/users/{key}/events", Access::Needs(Scope::Write)),
    (
        "DELETE",
        "/v1/users/{key}/events",
        Access::Needs(Scope::Write),
    ),
    ("GET", "/v1/users/{key}/export", Access::Needs(Scope::Admin)),
    (
        "GET",
        "/v1/users/{key}/recommendations",
        Access::Needs(Scope::Read),
    ),
    ("POST", "/v1/users/{key}/rank", Access::Needs(Scope::Read)),
    (
        "GET",
        "/v1/users/{key}/explain",
        Access::Needs(Scope::Write),
    ),
    ("GET", "/v1/reports/fairness", Access::Needs(Scope::Admin)),
    ("POST", "/v1/audiences/query", Access::Needs(Scope::Admin)),
    ("GET", "/v1/device/bundle", Access::Needs(Scope::Read)),
    ("GET", "/v1/device/key", Access::Needs(Scope::Read)),
    ("POST", "/v1/federated/start", Access::Needs(Scope::Admin)),
    ("GET", "/v1/federated/status", Access::Needs(Scope::Admin)),
    ("GET", "/v1/federated/model", Access::Needs(Scope::Read)),
    ("GET", "/v1/federated/round", Access::Needs(Scope::Read)),
    ("POST", "/v1/federated/join", Access::Needs(Scope::Read)),
    (
        "POST",
        "/v1/federated/rounds/{round}/close-join",
        Access::Needs(Scope::Admin),
    ),
    (
        "POST",
        "/v1/federated/rounds/{round}/close",
        Access::Needs(Scope::Admin),
    ),
    (
        "POST",
        "/v1/federated/rounds/{round}/update",
        Access::Needs(Scope::Read),
    ),
    (
        "POST",
        "/v1/federated/rounds/{round}/reveal",
        Access::Needs(Scope::Read),
    ),
    ("GET", "/v1/experiments", Access::Needs(Scope::Admin)),
    ("GET", "/v1/experiments/{key}", Access::Needs(Scope::Admin)),
    ("PUT", "/v1/experiments/{key}", Access::Needs(Scope::Admin)),
    (
        "DELETE",
        "/v1/experiments/{key}",
        Access::Needs(Scope::Admin),
    ),
    (
        "POST",
        "/v1/experiments/{key}/start",
        Access::Needs(Scope::Admin),
    ),
    (
        "POST",
        "/v1/experiments/{key}/stop",
        Access::Needs(Scope::Admin),
    ),
    (
        "GET",
        "/v1/experiments/{key}/report",
        Access::Needs(Scope::Admin),
    ),
    ("GET", "/v1/segments", Access::Needs(Scope::Admin)),
    ("GET", "/v1/segments/{key}", Access::Needs(Scope::Admin)),
    ("PUT", "/v1/segments/{key}", Access::Needs(Scope::Admin)),
    ("DELETE", "/v1/segments/{key}", Access::Needs(Scope::Admin)),
    (
        "POST",
        "/v1/segments/{key}/refresh",
        Access::Needs(Scope::Admin),
    ),
    (
        "GET",
        "/v1/segments/{key}/members",
        Access::Needs(Scope::Admin),
    ),
    (
        "GET",
        "/v1/segments/{key}/sizes",
        Access::Needs(Scope::Admin),
    ),
    (
        "GET",
        "/v1/users/{key}/segments",
        Access::Needs(Scope::Write),
    ),
    ("GET", "/v1/items/{key}", Access::Needs(Scope::Read)),
    ("PUT", "/v1/items/{key}", Access::Needs(Scope::Write)),
    ("DELETE", "/v1/items/{key}", Access::Needs(Scope::Write)),
    ("GET", "/v1/items/{key}/similar", Access::Needs(Scope::Read)),
    ("GET", "/v1/popular", Access::Needs(Scope::Read)),
    ("POST", "/v1/recommendations", Access::Needs(Scope::Read)),
    ("GET", "/v1/models", Access::Needs(Scope::Admin)),
    ("POST", "/v1/models/train", Access::Needs(Scope::Admin)),
    ("POST", "/v1/models/tune", Access::Needs(Scope::Admin)),
    (
        "POST",
        "/v1/models/{version}/activate",
        Access::Needs(Scope::Admin),
    ),
    ("POST", "/v1/keys", Access::Needs(Scope::Admin)),
    ("GET", "/v1/keys", Access::Needs(Scope::Admin)),
    ("DELETE", "/v1/keys/{key}", Access::Needs(Scope::Admin)),
    ("GET", "/v1/audit", Access::Needs(Scope::Admin)),
    ("GET", "/v1/erasures/{key}", Access::Needs(Scope::Write)),
    ("GET", "/v1/loops", Access::Needs(Scope::Write)),
    ("GET", "/v1/loops/{key}", Access::Needs(Scope::Write)),
    ("PUT", "/v1/loops/{key}", Access::Needs(Scope::Admin)),
    (
        "POST",
        "/v1/loops/{key}/decisions",
        Access::Needs(Scope::Write),
    ),
    (
        "GET",
        "/v1/loops/{key}/evaluation",
        Access::Needs(Scope::Admin),
    ),
    (
        "POST",
        "/v1/loops/{key}/evaluation/apply",
        Access::Needs(Scope::Admin),
    ),
    (
        "POST",
        "/v1/decisions/{key}/reward",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/v1/decisions/{key}/activate",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/v1.0/rank",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/v1.0/events/{key}/reward",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/v1.0/events/{key}/activate",
        Access::Needs(Scope::Write),
    ),
    // The 2022-09-01-preview form (version in `?api-version=`), as Azure's newer clients call it.
    ("POST", "/personalizer/rank", Access::Needs(Scope::Write)),
    (
        "POST",
        "/personalizer/events/{key}/reward",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/events/{key}/activate",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/multislot/rank",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/multislot/events/{key}/reward",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/multislot/events/{key}/activate",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/v1.1-preview.1/multislot/rank",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/v1.1-preview.1/multislot/events/{key}/reward",
        Access::Needs(Scope::Write),
    ),
    (
        "POST",
        "/personalizer/v1.1-preview.1/multislot/events/{key}/activate",
        Access::Needs(Scope::Write),
    ),
    // The Gorse-compatible API (`api::gorse`, docs/gorse.md), with the native scopes.
    ("POST", "/api/feedback", Access::Needs(Scope::Write)),
    ("GET", "/api/feedback", Access::Needs(Scope::Write)),
    ("GET", "/api/feedback/{type}", Access::Needs(Scope::Write)),
    (
        "GET",
        "/api/feedback/{user}/{item}",
        Access::Needs(Scope::Write),
    ),
    (
        "DELETE",
        "/api/feedback/{user}/{item}",
        Access::Needs(Scope::Write),
    ),
    (
        "GET",
        "/api/feedback/{type}/{user}/{item}",
        Access::Needs(Scope::Write),
    ),
    (
        "DELETE",
        "/api/feedback/{type}/{user}/{item}",
        Access::Needs(Scope::Write),
    ),
    (
        "GET",
        "/api/user/{key}/feedback",
        Access::Needs(Scope::Write),
    ),
    (
        "GET",
        "/api/user/{key}/feedback/{type}",
        Access::Needs(Scope::Write),
    ),
    ("POST", "/api/user", Access::Needs(Scope::Write)),
    ("POST", "/api/users", Access::Needs(Scope::Write)),
    ("GET", "/api/users", Access::Needs(Scope::Write)),
    ("GET", "/api/user/{key}", Access::Needs(Scope::Write)),
    ("DELETE", "/api/user/{key}", Access::Needs(Scope::Write)),
    ("POST", "/api/item", Access::Needs(Scope::Write)),
    ("POST", "/api/items", Access::Needs(Scope::Write)),
    ("GET", "/api/items", Access::Needs(Scope::Read)),
    ("GET", "/api/item/{key}", Access::Needs(Scope::Read)),
    ("PATCH", "/api/item/{key}", Access::Needs(Scope::Write)),
    ("DELETE", "/api/item/{key}", Access::Needs(Scope::Write)),
    (
        "PUT",
        "/api/item/{key}/category/{category}",
        Access::Needs(Scope::Write),
    ),
    (
        "DELETE",
        "/api/item/{key}/category/{category}",
        Access::Needs(Scope::Write),
    ),
    (
        "GET",
        "/api/item/{key}/neighbors",
        Access::Needs(Scope::Read),
    ),
    ("GET", "/api/recommend/{key}", Access::Needs(Scope::Read)),
    ("GET", "/api/recommend/{key}/", Access::Needs(Scope::Read)),
    (
        "GET",
        "/api/recommend/{key}/{category}",
        Access::Needs(Scope::Read),
    ),
    ("GET", "/api/popular", Access::Needs(Scope::Read)),
    ("GET", "/api/popular/{category}", Access::Needs(Scope::Read)),
    ("GET", "/api/latest", Access::Needs(Scope::Read)),
    ("GET", "/api/latest/{category}", Access::Needs(Scope::Read)),
    ("POST", "/api/session/recommend", Access::Needs(Scope::Read)),
];

/// Routes that may legitimately run past `server.request_timeout_secs`, as
/// `(method, path template)`: training and tuning (`?wait=true`), erasure (`?retrain=true`),
/// and decision-loop changes and evaluations, which replay a loop's whole log. All of them need
/// the admin scope except erasure, which has no body; `authorize` runs before a body is read, so
/// only an admin key can send these a slow body (still cut by `server.body_timeout_secs`).
pub const UNBOUNDED_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/models/train"),
    ("POST", "/v1/models/tune"),
    ("DELETE", "/v1/users/{key}"),
    ("PUT", "/v1/loops/{key}"),
    ("GET", "/v1/loops/{key}/evaluation"),
    ("POST", "/v1/loops/{key}/evaluation/apply"),
    ("GET", "/v1/reports/fairness"),
    ("POST", "/v1/segments/{key}/refresh"),
    ("GET", "/v1/experiments/{key}/report"),
];

/// `HEAD` is answered by the `GET` handler (axum drops the body), so it follows `GET`'s rules.
fn as_table_method(method: &str) -> &str {
    if method == "HEAD" { "GET" } else { method }
}

/// Whether a route gets the whole-request deadline (`server.request_timeout_secs`): every
/// route but [`UNBOUNDED_ROUTES`].
pub fn has_deadline(method: &str, path: &str) -> bool {
    let method = as_table_method(method);
    !UNBOUNDED_ROUTES
        .iter()
        .any(|(m, p)| *m == method && *p == path)
}

/// The access rule of a route, `None` for a route not in [`ROUTES`]. `HEAD` has the rule of
/// `GET` on the same path.
pub fn access(method: &str, path: &str) -> Option<Access> {
    let method = as_table_method(method);
    ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|r| r.2)
}

/// The CORS layer for `server.cors_allowed_origins`, `None` when the list is empty (no CORS
/// headers at all). Preflight requests are answered by the layer itself, before `authorize`,
/// so they need no key; the requests they clear still do. No credentials mode: keys travel
/// in headers, never in cookies.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).expect("origins are checked by Settings::validate"))
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("ocp-apim-subscription-key"),
            ])
            .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
            .max_age(Duration::from_secs(600)),
    )
}

/// The application router with its middleware.
pub fn router(state: AppState) -> Router {
    let settings = state.engine.settings();
    let body_limit = settings.limits.max_body_bytes;
    let body_timeout = Duration::from_secs(settings.server.body_timeout_secs);
    let cors = cors(&settings.server.cors_allowed_origins);
    let router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1/events", post(events::post_events))
        .route("/v1/impressions", post(events::post_impressions))
        .route("/v1/users/{key}/hidden", get(rules::hidden))
        .route(
            "/v1/users/{key}/hidden/{item}",
            put(rules::hide).delete(rules::unhide),
        )
        .route("/v1/rules", get(rules::list))
        .route(
            "/v1/rules/{key}",
            get(rules::get).put(rules::put).delete(rules::delete),
        )
        .route(
            "/v1/users/{key}",
            put(catalog::put_user)
                .get(catalog::get_user)
                .delete(catalog::delete_user),
        )
        .route(
            "/v1/users/{key}/events",
            get(events::user_events).delete(events::delete_user_events),
        )
        .route("/v1/users/{key}/export", get(catalog::export_user))
        .route(
            "/v1/users/{key}/recommendations",
            get(serving::recommendations),
        )
        .route("/v1/users/{key}/rank", post(serving::rank))
        .route("/v1/users/{key}/explain", get(serving::why_not))
        .route("/v1/reports/fairness", get(reports::fairness))
        .route("/v1/audiences/query", post(audiences::query))
        .route("/v1/device/bundle", get(device::bundle))
        .route("/v1/device/key", get(device::key))
        .route("/v1/federated/start", post(federated::start))
        .route("/v1/federated/status", get(federated::status))
        .route("/v1/federated/model", get(federated::model))
        .route("/v1/federated/round", get(federated::round))
        .route("/v1/federated/join", post(federated::join))
        .route(
            "/v1/federated/rounds/{round}/close-join",
            post(federated::close_join),
        )
        .route("/v1/federated/rounds/{round}/close", post(federated::close))
        // An update's size follows the run's layout: the handler checks that limit, under
        // a fixed ceiling that replaces limits.max_body_bytes here.
        .route(
            "/v1/federated/rounds/{round}/update",
            post(federated::update).layer(axum::extract::DefaultBodyLimit::max(
                federated::UPDATE_BODY_CEILING,
            )),
        )
        .route(
            "/v1/federated/rounds/{round}/reveal",
            post(federated::reveal),
        )
        .route("/v1/experiments", get(experiments::list))
        .route(
            "/v1/experiments/{key}",
            get(experiments::get)
                .put(experiments::put)
                .delete(experiments::delete),
        )
        .route("/v1/experiments/{key}/start", post(experiments::start))
        .route("/v1/experiments/{key}/stop", post(experiments::stop))
        .route("/v1/experiments/{key}/report", get(experiments::report))
        .route("/v1/segments", get(segments::list))
        .route(
            "/v1/segments/{key}",
            get(segments::get)
                .put(segments::put)
                .delete(segments::delete),
        )
        .route("/v1/segments/{key}/refresh", post(segments::refresh))
        .route("/v1/segments/{key}/members", get(segments::members))
        .route("/v1/segments/{key}/sizes", get(segments::sizes))
        .route("/v1/users/{key}/segments", get(segments::of_user))
        .route(
            "/v1/items/{key}",
            put(catalog::put_item)
                .get(catalog::get_item)
                .delete(catalog::delete_item),
        )
        .route("/v1/items/{key}/similar", get(serving::similar))
        .route("/v1/popular", get(serving::popular))
        .route("/v1/recommendations", post(serving::session))
        .route("/v1/models", get(models::list))
        .route("/v1/models/train", post(models::train))
        .route("/v1/models/tune", post(models::tune))
        .route("/v1/models/{version}/activate", post(models::activate))
        .route("/v1/keys", post(admin::create_key).get(admin::list_keys))
        .route("/v1/keys/{key}", delete(admin::revoke_key))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/erasures/{key}", get(catalog::get_erasure))
        .route("/v1/loops", get(decisions::list_loops))
        .route(
            "/v1/loops/{key}",
            get(decisions::get_loop).put(decisions::put_loop),
        )
        .route("/v1/loops/{key}/decisions", post(decisions::decide))
        .route("/v1/loops/{key}/evaluation", get(decisions::evaluation))
        .route(
            "/v1/loops/{key}/evaluation/apply",
            post(decisions::apply_candidate),
        )
        .route("/v1/decisions/{key}/reward", post(decisions::reward))
        .route("/v1/decisions/{key}/activate", post(decisions::activate))
        .route("/personalizer/v1.0/rank", post(personalizer::rank))
        .route(
            "/personalizer/v1.0/events/{key}/reward",
            post(personalizer::reward),
        )
        .route(
            "/personalizer/v1.0/events/{key}/activate",
            post(personalizer::activate),
        )
        .route("/personalizer/rank", post(personalizer::rank))
        .route(
            "/personalizer/events/{key}/reward",
            post(personalizer::reward),
        )
        .route(
            "/personalizer/events/{key}/activate",
            post(personalizer::activate),
        )
        .route(
            "/personalizer/multislot/rank",
            post(personalizer::multislot_rank),
        )
        .route(
            "/personalizer/multislot/events/{key}/reward",
            post(personalizer::multislot_reward),
        )
        .route(
            "/personalizer/multislot/events/{key}/activate",
            post(personalizer::activate),
        )
        .route(
            "/personalizer/v1.1-preview.1/multislot/rank",
            post(personalizer::multislot_rank),
        )
        .route(
            "/personalizer/v1.1-preview.1/multislot/events/{key}/reward",
            post(personalizer::multislot_reward),
        )
        .route(
            "/personalizer/v1.1-preview.1/multislot/events/{key}/activate",
            post(personalizer::activate),
        )
        .route(
            "/api/feedback",
            post(gorse::insert_feedback).get(gorse::list_feedback),
        )
        .route("/api/feedback/{type}", get(gorse::list_feedback_of_type))
        .route(
            "/api/feedback/{user}/{item}",
            get(gorse::list_pair_feedback).delete(gorse::delete_pair_feedback),
        )
        .route(
            "/api/feedback/{type}/{user}/{item}",
            get(gorse::list_pair_feedback_of_type).delete(gorse::delete_pair_feedback_of_type),
        )
        .route("/api/user/{key}/feedback", get(gorse::list_user_feedback))
        .route(
            "/api/user/{key}/feedback/{type}",
            get(gorse::list_user_feedback_of_type),
        )
        .route("/api/user", post(gorse::insert_user))
        .route(
            "/api/users",
            post(gorse::insert_users).get(gorse::list_users),
        )
        .route(
            "/api/user/{key}",
            get(gorse::get_user).delete(gorse::delete_user),
        )
        .route("/api/item", post(gorse::insert_item))
        .route(
            "/api/items",
            post(gorse::insert_items).get(gorse::list_items),
        )
        .route(
            "/api/item/{key}",
            get(gorse::get_item)
                .patch(gorse::patch_item)
                .delete(gorse::delete_item),
        )
        .route(
            "/api/item/{key}/category/{category}",
            put(gorse::add_item_category).delete(gorse::remove_item_category),
        )
        .route("/api/item/{key}/neighbors", get(gorse::neighbors))
        .route("/api/recommend/{key}", get(gorse::recommend))
        .route("/api/recommend/{key}/", get(gorse::recommend))
        .route(
            "/api/recommend/{key}/{category}",
            get(gorse::recommend_category),
        )
        .route("/api/popular", get(gorse::popular))
        .route("/api/popular/{category}", get(gorse::popular_category))
        .route("/api/latest", get(gorse::latest))
        .route("/api/latest/{category}", get(gorse::latest_category))
        .route("/api/session/recommend", post(gorse::session_recommend))
        // Only matched routes reach `authorize`; unknown paths get a plain 404.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        // Outside `authorize`, so that the deadline covers it and the body.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline,
        ))
        // After the route layers: the dashboard's routes have sessions, not keys.
        .merge(crate::dashboard::router(
            state.engine.clone(),
            state.metrics.clone(),
            state.throttle.clone(),
        ))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        // A stalled body fails `JsonBody` with tower-http's `TimeoutError`, answered 408.
        .layer(RequestBodyTimeoutLayer::new(body_timeout));
    // Inside `track`, so that preflight answers are counted too.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        // Outermost, so that every answer carries them, errors and preflights included. Every
        // answer but `/healthz` is behind a key and many carry secrets or personal data (new
        // keys, exports, a user's data and events, recommendations, erasure receipts), so none
        // may be kept by a browser or shared cache; a route that wants caching sets its own.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
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

/// Answers 408 `request_timeout` when a request with a deadline (see [`has_deadline`]) is not
/// answered within `server.request_timeout_secs`. The handler's future is dropped then, but work
/// it handed to the blocking pool runs to its end: a write may still be stored, which is why
/// event writes carry `event_id`s for retries.
async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if !has_deadline(req.method().as_str(), route.unwrap_or_default()) {
        return next.run(req).await;
    }
    let secs = state.engine.settings().server.request_timeout_secs;
    match tokio::time::timeout(Duration::from_secs(secs), next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request was not answered within server.request_timeout_secs ({secs} s)"),
        )
        .into_response(),
    }
}

/// The API key of a request: `Authorization: Bearer <key>`, `X-Api-Key: <key>` or
/// `Ocp-Apim-Subscription-Key: <key>`.
fn presented_key(req: &Request) -> Option<&str> {
    let headers = req.headers();
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers
        .get("x-api-key")
        // Azure Personalizer's clients send their key here.
        .or_else(|| headers.get("ocp-apim-subscription-key"))
        .and_then(|v| v.to_str().ok())
}

/// Authenticates the key, checks the route's scope and the key's rate limit, and hands the
/// [`Caller`] to the handler. Runs on matched routes only (see [`ROUTES`]).
async fn authorize(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    // A route missing from the table is refused rather than served unprotected.
    let needed = access(req.method().as_str(), &route).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route has no access rule",
        )
    })?;
    let Access::Needs(scope) = needed else {
        return Ok(next.run(req).await);
    };
    let engine = &state.engine;
    let caller = if engine.settings().auth.enabled {
        // Without a peer (a router driven in-process), every request shares one budget.
        let source = crate::auth::source_of(
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        );
        if let Err(wait) = state.throttle.check(source) {
            state.metrics.record_auth_throttled();
            return Ok(throttled(wait));
        }
        match engine.access().authenticate(presented_key(&req)) {
            Ok(c) => c,
            Err(e) => {
                state.metrics.record_auth_failure(match e {
                    AuthError::Missing => AuthFailure::Missing,
                    AuthError::Invalid => AuthFailure::Invalid,
                    AuthError::Revoked => AuthFailure::Revoked,
                });
                if let Err(wait) = state.throttle.fail(source) {
                    state.metrics.record_auth_throttled();
                    // The address is personal data: logged at debug level only.
                    tracing::warn!(target: "serve::auth", "a source address failed authentication too often; throttled");
                    tracing::debug!(target: "serve::auth", %source, wait_secs = wait.as_secs_f64(), "throttled source");
                    return Ok(throttled(wait));
                }
                let had_header = req.headers().contains_key("authorization");
                let mut resp = unauthorized(e, had_header).into_response();
                resp.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
                return Ok(resp);
            }
        }
    } else {
        Caller::anonymous()
    };
    if !caller.scopes.grants(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this route needs the {scope} scope; key {} has {}",
                caller.prefix,
                caller
                    .scopes
                    .list()
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Err(wait) = engine.access().rate_limit(&caller) {
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("key {} is over its rate limit; retry later", caller.prefix),
        )
        .into_response();
        let secs = wait.ceil().max(1.0) as u64;
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
        return Ok(resp);
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// 429 `auth_throttled` with `Retry-After` (whole seconds, at least 1).
fn throttled(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "auth_throttled",
        format!(
            "too many failed authentications from this address; retry in {secs} s (see auth.failed_per_minute)"
        ),
    )
    .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
    resp
}

fn unauthorized(e: AuthError, had_header: bool) -> ApiError {
    let message = match e {
        AuthError::Missing if had_header => {
            "the Authorization header must be `Bearer <key>`".to_owned()
        }
        AuthError::Missing => {
            "this route needs an API key: `Authorization: Bearer <key>` (create one with `bespoke keys create`)"
                .to_owned()
        }
        AuthError::Invalid => "the API key is not valid".to_owned(),
        AuthError::Revoked => "the API key has been revoked".to_owned(),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).at("Authorization")
}

/// Records metrics per route template, and logs each request at debug level without its
/// path (which may hold a user key).
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let id = request_id(req.headers());
    // Every log line of the request carries it, work handed to `blocking` included.
    let span = tracing::info_span!("request", request_id = %id, %method, route);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .record(method.as_str(), &route, status, elapsed);
    tracing::debug!(target: "serve::http", request_id = %id, %method, route, status, micros = elapsed.as_micros() as u64, "request");
    response
}

/// The header that names a request, in both directions.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's `X-Request-Id` when it is a plausible id (1 to 64 characters of letters,
/// digits, `-`, `_`, `.`: a proxy's or a client's, kept so that logs correlate across hops),
/// else a new UUID v7 (time-ordered).
fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// The operations of the handler modules without an `Api` of their own (events, catalog,
/// rules, admin), described from their handlers and types (`#[utoipa::path]`, `ToSchema`);
/// `openapi::document` lays them, with every module's `Api`, into the document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        events::post_events,
        events::user_events,
        events::delete_user_events,
        events::post_impressions,
        catalog::put_user,
        catalog::get_user,
        catalog::put_item,
        catalog::get_item,
        catalog::delete_item,
        catalog::delete_user,
        catalog::export_user,
        catalog::get_erasure,
        rules::hidden,
        rules::hide,
        rules::unhide,
        rules::list,
        rules::get,
        rules::put,
        rules::delete,
        admin::create_key,
        admin::list_keys,
        admin::revoke_key,
        admin::audit,
    ),
    components(schemas(
        crate::pipeline::explain::Reason,
        crate::pipeline::explain::Contribution,
    ))
)]
pub(crate) struct Derived;

/// The derived part of the OpenAPI document: [`Derived`] and each group's own `Api` (one per
/// handler module, so that groups convert independently).
pub(crate) fn derived_openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let mut doc = Derived::openapi();
    for part in [
        audiences::Api::openapi(),
        decisions::Api::openapi(),
        device::Api::openapi(),
        experiments::Api::openapi(),
        federated::Api::openapi(),
        gorse::Api::openapi(),
        models::Api::openapi(),
        ops::Api::openapi(),
        personalizer::Api::openapi(),
        reports::Api::openapi(),
        segments::Api::openapi(),
        serving::Api::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

/// Runs blocking engine work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    // The request's span (and its id) goes along, so the work's log lines carry it too.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| ApiError::internal("blocking task", &e))?
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// README's scope table lists, for each access rule, exactly the routes [`ROUTES`] gives
    /// it, so the documentation cannot drift from the code (finding 7 of issue 23: it did).
    #[test]
    fn readme_scope_table_matches_routes() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .expect("README.md");
        let start = readme
            .find("| scope | routes |")
            .expect("README has a `| scope | routes |` table");
        let mut documented = BTreeSet::new();
        for line in readme[start..].lines().skip(2) {
            let Some(row) = line.strip_prefix('|') else {
                break;
            };
            let (scope, routes) = row.split_once('|').expect("two columns");
            let name = scope.split('`').nth(1).expect("scope name in backticks");
            let rule = match name {
                "public" => Access::Public,
                other => Access::Needs(Scope::parse(other).expect("a scope name")),
            };
            // Routes are `METHOD /path` in backticks; other backticked words are not routes.
            for quoted in routes.split('`').skip(1).step_by(2) {
                for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                    if let Some(path) = quoted
                        .strip_prefix(method)
                        .and_then(|p| p.strip_prefix(' '))
                    {
                        let fresh = documented.insert((
                            method.to_owned(),
                            path.to_owned(),
                            format!("{rule:?}"),
                        ));
                        assert!(fresh, "README lists {method} {path} twice");
                    }
                }
            }
        }
        let routes: BTreeSet<(String, String, String)> = ROUTES
            .iter()
            .map(|(m, p, a)| (m.to_string(), p.to_string(), format!("{a:?}")))
            .collect();
        let missing: Vec<_> = routes.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "README's scope table differs from api::ROUTES\nnot in README (or under another scope): {missing:?}\nnot in ROUTES: {extra:?}"
        );
    }

    #[test]
    fn head_follows_get() {
        for (method, path, rule) in ROUTES {
            if *method == "GET" {
                assert_eq!(access("HEAD", path), Some(*rule));
                assert_eq!(has_deadline("HEAD", path), has_deadline("GET", path));
            } else if access("GET", path).is_none() {
                assert_eq!(access("HEAD", path), None, "{path} has no GET");
            }
        }
        // The read key is for browsers: it sees no loop configuration.
        assert_eq!(
            access("GET", "/v1/loops"),
            Some(Access::Needs(Scope::Write))
        );
    }

    #[test]
    fn only_long_admin_routes_escape_the_request_deadline() {
        for (method, path) in UNBOUNDED_ROUTES {
            assert!(
                access(method, path).is_some(),
                "{method} {path} is exempt from the deadline but not in ROUTES"
            );
            assert!(!has_deadline(method, path));
        }
        // Same paths, other methods, keep their deadline.
        assert!(has_deadline("GET", "/v1/users/{key}"));
        assert!(has_deadline("GET", "/v1/loops/{key}"));
        for path in [
            "/v1/events",
            "/v1/recommendations",
            "/personalizer/v1.0/rank",
        ] {
            assert!(has_deadline("POST", path));
        }
        assert_eq!(
            ROUTES
                .iter()
                .filter(|(m, p, _)| !has_deadline(m, p))
                .count(),
            UNBOUNDED_ROUTES.len()
        );
    }
}
