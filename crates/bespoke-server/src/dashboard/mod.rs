//! The web dashboard at `/dashboard`: server-rendered pages (minijinja templates embedded in
//! the binary, autoescaped), a vendored chart library (uPlot) and one static script that
//! draws the charts from small JSON endpoints. No front-end build, nothing from the internet.
//!
//! Access: an admin API key is posted once to the login form and exchanged for a session
//! ([`session`]): an `HttpOnly; SameSite=Strict; Path=/dashboard` cookie holding a random id,
//! never the key. Every state-changing request (forms) carries the session's CSRF token.
//! Pages without a session redirect to the login page; the JSON endpoints answer 401.
//!
//! Every dashboard answer carries a strict `Content-Security-Policy` (no inline script or
//! style: the page script is a served file and takes its data from `data-` attributes and the
//! JSON endpoints), `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`; the API's
//! router adds `X-Content-Type-Options: nosniff` and `Cache-Control: no-store` (the assets
//! set their own, long-lived, under a path naming their content hash).
//!
//! The dashboard is mounted beside the API's routes, outside [`crate::api::ROUTES`]: its
//! routes are not API routes (no key header, not in the OpenAPI document), and [`session`]
//! is their access rule. The on-device demo page ([`device`]) answers with the API's own
//! device handlers' helpers, so that it gets the bytes a device gets.

// Helpers here return the page to answer with as their error: built at most once per request
// and returned straight away, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod charts;
mod device;
mod pages;
mod session;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{AuthError, FailedAuthThrottle, Scope};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::time::now_ms;
use session::{Session, Sessions};

/// The policy of every dashboard answer: scripts, styles and everything else from the
/// dashboard's own origin only, no inline code, no framing, forms post only back here.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";

/// State of the dashboard's handlers: the API's parts it uses, plus sessions, templates and
/// the event tally.
#[derive(Clone)]
pub(crate) struct Dash {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    throttle: Arc<FailedAuthThrottle>,
    sessions: Sessions,
    templates: Arc<Environment<'static>>,
    tally: Arc<Mutex<charts::Tally>>,
    /// The ingestion rate's samples.
    rate: Arc<Mutex<charts::Rate>>,
}

/// A static file: its name under `assets/`, its bytes and content type.
struct Asset {
    name: &'static str,
    bytes: &'static [u8],
    content_type: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "dashboard.js",
        bytes: include_bytes!("../../assets/dashboard.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        name: "dashboard.css",
        bytes: include_bytes!("../../assets/dashboard.css"),
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        name: "device-demo.mjs",
        bytes: include_bytes!("../../assets/device-demo.mjs"),
        content_type: "text/javascript; charset=utf-8",
    },
    // The library the JavaScript tests check (`cargo test -p bespoke-client --test js`), byte
    // for byte: the demo page runs what is tested, not a copy.
    Asset {
        name: "bespoke-device.mjs",
        bytes: include_bytes!("../../../../clients/js/bespoke-device.mjs"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        name: "uPlot.iife.min.js",
        bytes: include_bytes!("../../assets/vendor/uplot/uPlot.iife.min.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        name: "uPlot.min.css",
        bytes: include_bytes!("../../assets/vendor/uplot/uPlot.min.css"),
        content_type: "text/css; charset=utf-8",
    },
];

/// The first 12 hex digits of the SHA-256 of every asset: part of their paths, so that they
/// can be cached for a year and a new build is fetched anew.
fn asset_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let mut h = Sha256::new();
        for a in ASSETS {
            h.update(a.name.as_bytes());
            h.update(a.bytes);
        }
        h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // Templates named `*.html` are autoescaped (minijinja's default callback); every one is.
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("models.html", include_str!("templates/models.html")),
        ("users.html", include_str!("templates/users.html")),
        ("erase.html", include_str!("templates/erase.html")),
        ("items.html", include_str!("templates/items.html")),
        ("loops.html", include_str!("templates/loops.html")),
        ("more.html", include_str!("templates/more.html")),
        ("device.html", include_str!("templates/device.html")),
    ] {
        env.add_template(name, source)
            .expect("the embedded templates parse (the dashboard's tests render each)");
    }
    env
}

/// The dashboard's routes, with their state, to merge into the API's router. It takes the
/// API's parts rather than its state so that it does not depend on `api`'s state (`api`
/// imports it); the demo page borrows only `api::device`'s answer helpers.
pub(crate) fn router<S>(
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    throttle: Arc<FailedAuthThrottle>,
) -> Router<S> {
    let events = engine.counts().events;
    let sessions = Sessions::new(engine.store().clone());
    let dash = Dash {
        engine,
        metrics,
        throttle,
        sessions,
        templates: Arc::new(templates()),
        tally: Arc::new(Mutex::new(charts::Tally::default())),
        rate: Arc::new(Mutex::new(charts::Rate::new(Instant::now(), events))),
    };
    Router::new()
        .route("/dashboard", get(pages::overview))
        .route("/dashboard/", get(pages::overview))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/models", get(pages::models))
        .route(
            "/dashboard/models/{version}/activate",
            post(pages::activate_model),
        )
        .route("/dashboard/users", get(pages::users))
        .route("/dashboard/users/export", get(pages::export_user))
        .route(
            "/dashboard/users/erase",
            get(pages::erase_confirm).post(pages::erase),
        )
        .route("/dashboard/items", get(pages::items))
        .route("/dashboard/loops", get(pages::loops))
        .route("/dashboard/more", get(pages::more))
        .route("/dashboard/device", get(device::page))
        .route("/dashboard/api/device/key", get(device::key))
        .route("/dashboard/api/device/bundle", get(device::bundle))
        .route("/dashboard/api/device/titles", get(device::titles))
        .route("/dashboard/api/events", get(charts::events))
        .route("/dashboard/api/models", get(charts::models))
        .route("/dashboard/api/loops/{name}/rewards", get(charts::rewards))
        .route(
            "/dashboard/api/segments/{name}/sizes",
            get(charts::segment_sizes),
        )
        .route("/dashboard/assets/{tag}/{name}", get(asset))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .with_state(dash)
}

async fn asset(Path((tag, name)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|a| a.name == name);
    match found {
        Some(a) if tag == asset_tag() => (
            [
                (header::CONTENT_TYPE, a.content_type),
                // The path names the content: it never changes under this URL.
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.bytes,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

impl Dash {
    /// Renders a page template with `ctx`, plus what every page needs (asset path, the
    /// session's CSRF token and key prefix).
    fn render(&self, name: &str, session: Option<&Session>, ctx: minijinja::Value) -> Response {
        let common = minijinja::context! {
            assets => format!("/dashboard/assets/{}", asset_tag()),
            csrf => session.map(|s| s.csrf.clone()),
            who => session.map(|s| s.prefix.clone()),
        };
        let ctx = minijinja::context! { ..ctx, ..common };
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(target: "serve::dashboard", error = %e, template = name, "a dashboard page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        }
    }

    /// An error page with `status`.
    fn error(&self, session: Option<&Session>, status: StatusCode, message: &str) -> Response {
        let mut resp = self.render(
            "error.html",
            session,
            minijinja::context! { status => status.as_u16(), message },
        );
        *resp.status_mut() = status;
        resp
    }

    /// The session of a request, if its cookie names a live one whose key is still an admin
    /// key. A session whose key was revoked (or lost its admin scope) is ended here. `Err`
    /// when the store cannot be read.
    async fn session_of(&self, headers: &HeaderMap) -> bespoke_store::Result<Option<Session>> {
        let Some(id) = session::cookie_id(headers) else {
            return Ok(None);
        };
        let dash = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            let Some(s) = dash.sessions.touch(&id, now_ms())? else {
                return Ok(None);
            };
            if !dash.engine.settings().auth.enabled {
                return Ok(Some(s));
            }
            let still_admin = (dash.engine.access())
                .authenticate_digest(&s.prefix, &s.key_digest)
                .is_ok_and(|c| c.scopes.grants(Scope::Admin));
            if !still_admin {
                dash.sessions.close(&id)?;
                return Ok(None);
            }
            Ok(Some(s))
        })
        .await;
        found.unwrap_or_else(|e| {
            Err(bespoke_store::Error::Unavailable(format!(
                "session task: {e}"
            )))
        })
    }

    /// `Err(403 page)` unless `presented` is the session's CSRF token.
    fn check_csrf(&self, session: &Session, presented: &str) -> Result<(), Response> {
        if session.csrf_matches(presented) {
            Ok(())
        } else {
            Err(self.error(
                Some(session),
                StatusCode::FORBIDDEN,
                "this form is out of date or did not come from the dashboard (CSRF token mismatch); reload the page and try again",
            ))
        }
    }
}

/// The session of a page request; without one, the browser is sent to the login page.
pub(crate) struct PageSession(Session);

impl FromRequestParts<Dash> for PageSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Self, Response> {
        match dash.session_of(&parts.headers).await {
            Ok(Some(s)) => Ok(PageSession(s)),
            Ok(None) => Err(Redirect::to("/dashboard/login").into_response()),
            Err(e) => {
                tracing::error!(target: "serve::dashboard", error = %e, "could not read a session");
                Err(dash.error(
                    None,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable; try again shortly",
                ))
            }
        }
    }
}

/// The session of a JSON request; without one, 401.
pub(crate) struct ApiSession;

impl FromRequestParts<Dash> for ApiSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Self, ApiError> {
        match dash.session_of(&parts.headers).await {
            Ok(Some(_)) => Ok(ApiSession),
            Ok(None) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the dashboard's data needs a session: log in at /dashboard/login",
            )),
            Err(e) => Err(ApiError::from(e)),
        }
    }
}

/// The peer's address, for the failed-authentication throttle.
struct Peer(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(crate::auth::source_of(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        )))
    }
}

async fn login_page(State(dash): State<Dash>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = dash.session_of(&headers).await {
        return Redirect::to("/dashboard").into_response();
    }
    dash.render("login.html", None, minijinja::context! {})
}

#[derive(serde::Deserialize)]
struct LoginForm {
    key: String,
}

/// Exchanges an admin key for a session. Failures count against the source's failed-auth
/// budget (`auth.failed_per_minute`), exactly as a wrong key on the API does.
async fn login(
    State(dash): State<Dash>,
    Peer(source): Peer,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let engine = dash.engine.clone();
    let refuse = |status: StatusCode, message: &str| {
        let mut resp = dash.render("login.html", None, minijinja::context! { message });
        *resp.status_mut() = status;
        resp
    };
    let caller = if engine.settings().auth.enabled {
        if dash.throttle.check(source).is_err() {
            dash.metrics.record_auth_throttled();
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins from this address; wait a minute and try again",
            );
        }
        match engine.access().authenticate(Some(form.key.trim())) {
            Ok(c) => c,
            Err(e) => {
                if dash.throttle.fail(source).is_err() {
                    dash.metrics.record_auth_throttled();
                }
                let message = match e {
                    AuthError::Revoked => "this key has been revoked",
                    _ => "this is not a valid API key",
                };
                return refuse(StatusCode::UNAUTHORIZED, message);
            }
        }
    } else {
        crate::auth::Caller::anonymous()
    };
    if !caller.scopes.grants(Scope::Admin) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the dashboard needs a key with the admin scope",
        );
    }
    let digest = crate::auth::digest(form.key.trim());
    let sessions = dash.sessions.clone();
    let prefix = caller.prefix.clone();
    let opened = tokio::task::spawn_blocking(move || sessions.open(prefix, digest, now_ms()))
        .await
        .unwrap_or_else(|e| {
            Err(bespoke_store::Error::Unavailable(format!(
                "session task: {e}"
            )))
        });
    let (id, _) = match opened {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "serve::dashboard", error = %e, "could not open a session");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not open a session",
            );
        }
    };
    let prefix = caller.prefix;
    let _ = tokio::task::spawn_blocking(move || {
        engine
            .access()
            .audit(&prefix, "dashboard.login", None, None);
    })
    .await;
    let mut resp = Redirect::to("/dashboard").into_response();
    let cookie = session::set_cookie(&id, session::over_https(&headers));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(refused) = dash.check_csrf(&s, &form.csrf) {
        return refused;
    }
    if let Some(id) = session::cookie_id(&headers) {
        let sessions = dash.sessions.clone();
        let closed = tokio::task::spawn_blocking(move || sessions.close(&id)).await;
        if !matches!(closed, Ok(Ok(()))) {
            return dash.error(
                Some(&s),
                StatusCode::SERVICE_UNAVAILABLE,
                "could not end the session: the store is unavailable; try again shortly",
            );
        }
    }
    let mut resp = Redirect::to("/dashboard/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie()).expect("a valid header value"),
    );
    resp
}

/// Runs blocking engine work off the runtime; an engine failure becomes a 500 page.
async fn blocking<T: Send + 'static>(
    dash: &Dash,
    session: &Session,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(target: "serve::dashboard", error = %e, "dashboard page failed");
            Err(dash.error(
                Some(session),
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server failed to read its data; see its log",
            ))
        }
        Err(e) => {
            tracing::error!(target: "serve::dashboard", error = %e, "dashboard task failed");
            Err(dash.error(
                Some(session),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ))
        }
    }
}

/// A value for templates, from anything serializable.
fn value<T: Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// Runs blocking engine work for a JSON endpoint off the runtime.
async fn json_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("blocking task", &e))?
}
