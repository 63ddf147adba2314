//! The web dashboard (`/dashboard`) on a real server on a loopback port.
//!
//! Plain HTTP tests check the access rules (no session: redirect or 401; non-admin keys
//! refused; CSRF tokens required; logout and key revocation end sessions), escaping and the
//! security headers. The browser test drives headless Chromium through chromedriver
//! (WebDriver, `fantoccini`): it logs in, reads each page's figures, checks that the charts
//! drew, rolls a model back and erases a user from the UI. Without chromedriver it prints a
//! notice and passes, unless `BESPOKE_REQUIRE_BROWSER=1` (CI), where it fails.
//! `BESPOKE_SCREENSHOTS=1` saves a screenshot of each page into `docs/img/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bespoke_server::auth::Scope;
use bespoke_server::{Server, Settings};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode, redirect};
use serde_json::{Value, json};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";
const XSS: &str = "<script>alert(1)</script>";
const USERS: usize = 20;
const ITEMS: usize = 12;
/// Items each user viewed.
const PER_USER: usize = 4;

/// A server with a catalog, events, optionally two trained model versions and a decision
/// loop, and keys to reach it.
struct Fixture {
    base: String,
    admin_key: String,
    read_key: String,
    /// Sends the admin key on every request.
    api: Client,
    server: Option<Server>,
    /// What the server was started with, to start it again ([`Fixture::restart`]).
    settings: Settings,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(trained: bool) -> Fixture {
        Self::start_with(trained, |_| {}).await
    }

    async fn start_with(trained: bool, configure: impl FnOnce(&mut Settings)) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.server.bind = "127.0.0.1:0".parse().expect("an address");
        settings.store.data_dir = dir.path().to_owned();
        settings.training.train_on_start = false;
        settings.training.interval_minutes = 0;
        settings.training.tune_interval_hours = 0.0;
        settings.training.min_new_events = 0;
        settings.privacy.audit_secret =
            bespoke_server::settings::Secret("dashboard tests' audit key, 32+ bytes".into());
        configure(&mut settings);
        let server = bespoke_server::start(settings.clone())
            .await
            .expect("server starts");
        let engine = server.engine().clone();
        let (admin_key, read_key) = tokio::task::spawn_blocking(move || {
            let access = engine.access();
            let admin = access.create_key("test", "admin", &[Scope::Admin], None);
            let read = access.create_key("test", "read", &[Scope::Read], None);
            (admin.expect("admin key").0, read.expect("read key").0)
        })
        .await
        .expect("keys created");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {admin_key}").parse().expect("a header"),
        );
        let api = Client::builder()
            .default_headers(headers)
            .build()
            .expect("client");
        let fx = Fixture {
            base: format!("http://{}", server.addr()),
            admin_key,
            read_key,
            api,
            server: Some(server),
            settings,
            _dir: dir,
        };
        fx.load(trained).await;
        fx
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.api.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn load(&self, trained: bool) {
        use reqwest::Method;
        for i in 0..ITEMS {
            let body = json!({ "categories": [if i % 2 == 0 { "even" } else { "odd" }],
                               "text": { "title": format!("Item number {i}") } });
            let (s, b) = self
                .call(Method::PUT, &format!("/v1/items/i{i}"), Some(body))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
        let (s, b) = self
            .call(
                Method::PUT,
                "/v1/items/xss",
                Some(json!({ "text": { "title": XSS } })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let events: Vec<Value> = (0..USERS)
            .flat_map(|u| {
                (0..PER_USER).map(move |j| {
                    json!({ "user": format!("u{u}"), "item": format!("i{}", (u + j) % ITEMS), "type": "view" })
                })
            })
            .collect();
        let (s, b) = self
            .call(
                Method::POST,
                "/v1/events",
                Some(json!({ "events": events })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        // Three impressions, two of them of i0: exposure, not activity.
        let shown = json!({ "impressions": [{ "user": "u10", "items": ["i0", "i1"] },
                                            { "user": "u11", "items": ["i0"] }] });
        let (s, b) = self
            .call(Method::POST, "/v1/impressions", Some(shown))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        if !trained {
            return;
        }
        // Two versions, so that the models page has a line and something to roll back to.
        for _ in 0..2 {
            let (s, b) = self
                .call(Method::POST, "/v1/models/train?wait=true", None)
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        // An experiment and a segment for the summaries page; every user viewed even items.
        let experiment = json!({ "variants": [{ "name": "control" },
                                              { "name": "evens", "config": { "filter": "category in [\"even\"]" } }],
                                 "metrics": [{ "kind": "conversion", "name": "viewers", "event": "view" }] });
        let (s, b) = self
            .call(Method::PUT, "/v1/experiments/evens-only", Some(experiment))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = self
            .call(
                Method::POST,
                "/v1/experiments/evens-only/start",
                Some(json!({})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let segment = json!({ "kind": "rule", "expression": "viewed(category = \"even\")" });
        let (s, b) = self
            .call(Method::PUT, "/v1/segments/even-viewers", Some(segment))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        // Refreshed twice, so that its chart of sizes has a line.
        for _ in 0..2 {
            let (s, b) = self
                .call(
                    Method::POST,
                    "/v1/segments/even-viewers/refresh",
                    Some(json!({})),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(b["size"], USERS, "{b}");
        }
        // A decision loop whose rewards alternate 1 and 0: mean reward 0.5.
        for n in 0..30 {
            let body = json!({ "context": { "device": "mobile" },
                               "actions": [{ "id": "a" }, { "id": "b" }, { "id": "c" }] });
            let (s, d) = self
                .call(Method::POST, "/v1/loops/home/decisions", Some(body))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{d}");
            let id = d["decision_id"].as_str().expect("decision id");
            let reward = json!({ "value": if n % 2 == 0 { 1.0 } else { 0.0 } });
            let (s, r) = self
                .call(
                    Method::POST,
                    &format!("/v1/decisions/{id}/reward"),
                    Some(reward),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{r}");
        }
    }

    /// Users who viewed item `i{item}` in the fixture.
    fn viewers(item: usize) -> usize {
        (0..USERS)
            .filter(|u| (0..PER_USER).any(|j| (u + j) % ITEMS == item))
            .count()
    }

    /// Stops the server and starts another on the same store (on a new port).
    async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        let server = bespoke_server::start(self.settings.clone())
            .await
            .expect("server starts again");
        self.base = format!("http://{}", server.addr());
        self.server = Some(server);
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A client that follows no redirect and keeps no cookie: tests send the cookie themselves.
fn browserless() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in with `key`; the status and the session cookie (`name=value`), if one was set.
async fn login(fx: &Fixture, key: &str) -> (StatusCode, Option<String>, String) {
    let resp = browserless()
        .post(format!("{}/dashboard/login", fx.base))
        .form(&[("key", key)])
        .send()
        .await
        .expect("login sent");
    let status = resp.status();
    let set = resp
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let cookie = set
        .as_ref()
        .map(|s| s.split(';').next().expect("a pair").to_owned());
    (status, cookie, set.unwrap_or_default())
}

async fn get(fx: &Fixture, cookie: Option<&str>, path: &str) -> reqwest::Response {
    let mut req = browserless().get(format!("{}{path}", fx.base));
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    req.send().await.expect("request sent")
}

async fn post_form(
    fx: &Fixture,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browserless()
        .post(format!("{}{path}", fx.base))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .expect("request sent")
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + "name=\"csrf\" value=\"".len();
    html[at..at + 64].to_owned()
}

#[tokio::test]
async fn no_session_no_dashboard() {
    let fx = Fixture::start(false).await;
    for page in [
        "/dashboard",
        "/dashboard/models",
        "/dashboard/users?key=u1",
        "/dashboard/loops",
        "/dashboard/device",
    ] {
        let resp = get(&fx, None, page).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(resp.headers()[LOCATION], "/dashboard/login", "{page}");
    }
    // An API key in a header is no session either.
    let resp = browserless()
        .get(format!("{}/dashboard/api/events", fx.base))
        .bearer_auth(&fx.admin_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    // A made-up session id neither.
    let fake = format!("bespoke_session={}", "ab".repeat(32));
    assert_eq!(
        get(&fx, Some(&fake), "/dashboard/api/models")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // The login page itself is open, and carries the headers.
    let resp = get(&fx, None, "/dashboard/login").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_SECURITY_POLICY], CSP);
    fx.stop().await;
}

#[tokio::test]
async fn login_takes_admin_keys_only_and_sets_a_strict_cookie() {
    let fx = Fixture::start(false).await;
    let (status, cookie, _) = login(&fx, "bsk_not_a_key").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(cookie.is_none());
    let (status, cookie, _) = login(&fx, &fx.read_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(cookie.is_none());

    let (status, cookie, set) = login(&fx, &fx.admin_key).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    // Plain HTTP on loopback: not `Secure`, or the browser would drop it.
    assert!(!set.contains("Secure"), "{set}");
    let id = cookie
        .strip_prefix("bespoke_session=")
        .expect("the session cookie");
    assert_eq!(id.len(), 64, "256 random bits, hex");
    assert!(!set.contains(&fx.admin_key) && !fx.admin_key.contains(id));
    let resp = get(&fx, Some(&cookie), "/dashboard").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.expect("page");
    assert!(
        !html.contains(&fx.admin_key),
        "the key must not reach a page"
    );

    // Logout needs the token too, then ends the session.
    let token = csrf_of(&html);
    let resp = post_form(&fx, &cookie, "/dashboard/logout", &[("csrf", "0")]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        get(&fx, Some(&cookie), "/dashboard").await.status(),
        StatusCode::OK
    );
    let resp = post_form(&fx, &cookie, "/dashboard/logout", &[("csrf", &token)]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        resp.headers()[SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    assert_eq!(
        get(&fx, Some(&cookie), "/dashboard").await.status(),
        StatusCode::SEE_OTHER
    );

    // Revoking the key ends its sessions at once.
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    assert_eq!(
        get(&fx, Some(&cookie), "/dashboard").await.status(),
        StatusCode::OK
    );
    let (_, keys) = fx.call(reqwest::Method::GET, "/v1/keys", None).await;
    let prefix = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["prefix"].as_str())
        .find(|p| fx.admin_key.starts_with(p))
        .expect("the admin key's prefix")
        .to_owned();
    let (s, b) = fx
        .call(reqwest::Method::DELETE, &format!("/v1/keys/{prefix}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        get(&fx, Some(&cookie), "/dashboard").await.status(),
        StatusCode::SEE_OTHER
    );
    fx.stop().await;
}

/// Sessions live in the store: a server started on it knows the sessions another opened (as
/// every node of a cluster does), and logging out there ends them for all.
#[tokio::test]
async fn sessions_live_in_the_store_not_in_one_server() {
    let mut fx = Fixture::start(false).await;
    let (status, cookie, _) = login(&fx, &fx.admin_key.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("a session cookie");
    let first = get(&fx, Some(&cookie), "/dashboard").await;
    assert_eq!(first.status(), StatusCode::OK);
    let csrf = csrf_of(&first.text().await.expect("page"));
    fx.restart().await;
    let again = get(&fx, Some(&cookie), "/dashboard").await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "the session did not survive"
    );
    assert_eq!(csrf_of(&again.text().await.expect("page")), csrf);
    let out = post_form(&fx, &cookie, "/dashboard/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    fx.restart().await;
    let gone = get(&fx, Some(&cookie), "/dashboard").await;
    assert_eq!(gone.status(), StatusCode::SEE_OTHER);
    assert_eq!(gone.headers()[LOCATION], "/dashboard/login");
    fx.stop().await;
}

#[tokio::test]
async fn without_auth_any_key_opens_a_session() {
    // Auth off (allowed on a loopback bind only): the dashboard follows the API, which then
    // serves everyone as an anonymous admin.
    let fx = Fixture::start_with(false, |s| s.auth.enabled = false).await;
    let (status, cookie, _) = login(&fx, "anything").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("a session cookie");
    let resp = get(&fx, Some(&cookie), "/dashboard").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.expect("page");
    assert!(
        html.contains(&format!("id=\"catalog-size\">{}<", ITEMS + 1)),
        "{html}"
    );
    // Still no session, still no page.
    assert_eq!(
        get(&fx, None, "/dashboard").await.status(),
        StatusCode::SEE_OTHER
    );
    fx.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled() {
    let fx = Fixture::start(false).await;
    // `auth.failed_burst` is 30 by default: the 31st failure is refused.
    let mut statuses = Vec::new();
    for _ in 0..32 {
        statuses.push(login(&fx, "bsk_wrong").await.0);
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Throttled, a right key does not get in either.
    assert_eq!(
        login(&fx, &fx.admin_key).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    fx.stop().await;
}

#[tokio::test]
async fn erasure_needs_the_csrf_token() {
    let fx = Fixture::start(false).await;
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    let page = get(&fx, Some(&cookie), "/dashboard/users/erase?key=u1").await;
    assert_eq!(page.status(), StatusCode::OK);
    let token = csrf_of(&page.text().await.expect("page"));

    let wrong = "f".repeat(64);
    let resp = post_form(
        &fx,
        &cookie,
        "/dashboard/users/erase",
        &[("csrf", &wrong), ("key", "u1")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = post_form(&fx, &cookie, "/dashboard/users/erase", &[("key", "u1")]).await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let (s, _) = fx.call(reqwest::Method::GET, "/v1/users/u1", None).await;
    assert_eq!(s, StatusCode::OK, "the user must still be there");

    let resp = post_form(
        &fx,
        &cookie,
        "/dashboard/users/erase",
        &[("csrf", &token), ("key", "u1")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.expect("page");
    assert!(html.contains("id=\"erasure-id\""), "{html}");
    let (s, _) = fx.call(reqwest::Method::GET, "/v1/users/u1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Bad input gets a clear 4xx, not a panic.
    let long = "x".repeat(10_000);
    let resp = get(&fx, Some(&cookie), &format!("/dashboard/users?key={long}")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = post_form(
        &fx,
        &cookie,
        "/dashboard/models/notanumber/activate",
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = get(&fx, Some(&cookie), "/dashboard/api/events?by=week").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    fx.stop().await;
}

/// A segment's chart plots what `GET /v1/segments/{name}/sizes` lists, against time; an
/// unknown segment is a 404, and the page draws one chart per computed segment.
#[tokio::test]
async fn segment_sizes_chart_what_the_api_lists() {
    use reqwest::Method;
    let fx = Fixture::start(true).await;
    let (s, api) = fx
        .call(Method::GET, "/v1/segments/even-viewers/sizes", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{api}");
    let sizes: Vec<f64> = (api["sizes"].as_array().expect("sizes").iter())
        .map(|p| p["size"].as_f64().expect("a size"))
        .collect();
    assert_eq!(sizes, [USERS as f64, USERS as f64], "{api}");
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    let resp = get(
        &fx,
        Some(&cookie),
        "/dashboard/api/segments/even-viewers/sizes",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let chart: Value = resp.json().await.expect("JSON");
    assert_eq!(chart["time"], true, "{chart}");
    assert_eq!(chart["series"][0]["label"], "members", "{chart}");
    let plotted: Vec<f64> = (chart["series"][0]["values"]
        .as_array()
        .expect("values")
        .iter())
    .map(|v| v.as_f64().expect("a value"))
    .collect();
    assert_eq!(plotted, sizes, "{chart}");
    let x: Vec<f64> = (chart["x"].as_array().expect("x").iter())
        .map(|v| v.as_f64().expect("seconds"))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        x[0] <= x[1] && x[1] <= now + 1.0 && x[0] > now - 3600.0,
        "{chart}"
    );
    let resp = get(&fx, Some(&cookie), "/dashboard/api/segments/nope/sizes").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Without a session, no data.
    let resp = get(&fx, None, "/dashboard/api/segments/even-viewers/sizes").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let html = get(&fx, Some(&cookie), "/dashboard/more")
        .await
        .text()
        .await
        .expect("page");
    assert!(
        html.contains("data-src=\"/dashboard/api/segments/even-viewers/sizes\""),
        "{html}"
    );
    fx.stop().await;
}

#[tokio::test]
async fn erasure_can_retrain_until_complete() {
    let fx = Fixture::start(true).await;
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    let page = get(&fx, Some(&cookie), "/dashboard/users/erase?key=u2").await;
    let token = csrf_of(&page.text().await.expect("page"));
    let form = [("csrf", token.as_str()), ("key", "u2"), ("retrain", "on")];
    let resp = post_form(&fx, &cookie, "/dashboard/users/erase", &form).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.expect("page");
    // A model trained without the user is served: the erasure is complete.
    assert!(html.contains("id=\"erasure-status\">complete<"), "{html}");
    let (_, models) = fx.call(reqwest::Method::GET, "/v1/models", None).await;
    assert_eq!(models["active"], 3, "{models}");
    fx.stop().await;
}

#[tokio::test]
async fn experiment_report_shows_each_variant() {
    let fx = Fixture::start(true).await;
    // Exposure: the running experiment assigns each user who asks for recommendations.
    for u in 0..USERS {
        let (s, b) = fx
            .call(
                reqwest::Method::GET,
                &format!("/v1/users/u{u}/recommendations"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, api) = fx
        .call(
            reqwest::Method::GET,
            "/v1/experiments/evens-only/report",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{api}");
    assert_eq!(api["users"], USERS, "{api}");
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    let html = get(&fx, Some(&cookie), "/dashboard/more")
        .await
        .text()
        .await
        .expect("page");
    assert!(
        html.contains("/dashboard/more?experiment=evens-only"),
        "{html}"
    );
    let html = get(&fx, Some(&cookie), "/dashboard/more?experiment=evens-only")
        .await
        .text()
        .await
        .expect("page");
    assert!(
        html.contains(&format!("id=\"experiment-users\">{USERS}<")),
        "{html}"
    );
    let variants = &html[html.find("id=\"experiment-variants\"").expect("variants")..];
    for v in api["variants"].as_array().expect("variants") {
        let row = format!(
            "<td>{}</td><td class=\"variant-users\">{}</td>",
            v["variant"].as_str().expect("a name"),
            v["users"]
        );
        assert!(variants.contains(&row), "{row} in {variants}");
    }
    assert!(html.contains("id=\"experiment-comparisons\""), "{html}");
    assert!(html.contains("<td>evens</td><td>viewers</td>"), "{html}");
    let html = get(&fx, Some(&cookie), "/dashboard/more?experiment=nope")
        .await
        .text()
        .await
        .expect("page");
    assert!(html.contains("id=\"experiment-missing\""), "{html}");
    fx.stop().await;
}

/// The users of the dashboard's audience table, in order.
fn audience_users(html: &str) -> Vec<String> {
    html.split("class=\"audience-user\"><a href=\"")
        .skip(1)
        .map(|cell| {
            let name = &cell[cell.find('>').expect("a link") + 1..];
            name[..name.find('<').expect("the link's end")].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn audience_form_lists_who_the_api_lists() {
    let fx = Fixture::start(true).await;
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    for (form, body) in [
        (
            "audience_items=i0,+i3&audience_n=5",
            json!({ "items": ["i0", "i3"], "n": 5 }),
        ),
        (
            "audience_category=even",
            json!({ "category": "even", "n": 20 }),
        ),
    ] {
        let (s, api) = fx
            .call(reqwest::Method::POST, "/v1/audiences/query", Some(body))
            .await;
        assert_eq!(s, StatusCode::OK, "{api}");
        let want: Vec<String> = api["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["user"].as_str().expect("a key").to_owned())
            .collect();
        assert!(!want.is_empty(), "{api}");
        let resp = get(&fx, Some(&cookie), &format!("/dashboard/more?{form}")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{form}");
        let html = resp.text().await.expect("page");
        assert_eq!(audience_users(&html), want, "{form}");
        let matched = format!("id=\"audience-matched\">{}<", api["items_matched"]);
        assert!(html.contains(&matched), "{form}: {html}");
    }
    // What the engine refuses is said on the page; what the form cannot be is a 400.
    let html = get(
        &fx,
        Some(&cookie),
        "/dashboard/more?audience_items=nothing-like-it",
    )
    .await
    .text()
    .await
    .expect("page");
    assert!(html.contains("id=\"audience-error\""), "{html}");
    for bad in [
        "audience_items=i0&audience_n=0",
        "audience_category=even&audience_n=lots",
    ] {
        let resp = get(&fx, Some(&cookie), &format!("/dashboard/more?{bad}")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            resp.text().await.expect("page").contains("users to list"),
            "{bad}"
        );
    }
    fx.stop().await;
}

/// The `data-value` of the element with id `id` in `html`.
fn data_value(html: &str, id: &str) -> f64 {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}: {html}"));
    let rest = &html[at..];
    let start = rest.find("data-value=\"").expect("a data-value") + "data-value=\"".len();
    let end = start + rest[start..].find('"').expect("a closing quote");
    rest[start..end]
        .parse()
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
}

#[tokio::test]
async fn fairness_section_reports_what_the_api_reports() {
    let fx = Fixture::start(true).await;
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    // Not computed on page load: it ranks users.
    let html = get(&fx, Some(&cookie), "/dashboard/more")
        .await
        .text()
        .await
        .expect("page");
    assert!(!html.contains("id=\"fairness-report\""), "{html}");
    let path = format!("/dashboard/more?fairness_users={USERS}&item_attribute=category");
    let resp = get(&fx, Some(&cookie), &path).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.expect("page");
    let (s, api) = fx
        .call(
            reqwest::Method::GET,
            &format!("/v1/reports/fairness?users={USERS}&item_attribute=category"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{api}");
    assert_eq!(data_value(&html, "fairness-users"), USERS as f64, "{api}");
    for (id, field) in [("fairness-coverage", "coverage"), ("fairness-gini", "gini")] {
        let want = api[field].as_f64().expect("a measure");
        let got = data_value(&html, id);
        assert!((got - want).abs() < 1e-9, "{id}: page {got}, API {want}");
    }
    // Exposure by category: both fixture categories, escaped names as they are.
    let exposure = &html[html.find("fairness-exposure").expect("an exposure table")..];
    assert!(
        exposure.contains("<td>even</td>") && exposure.contains("<td>odd</td>"),
        "{exposure}"
    );
    // An attribute nobody has is said on the page; a bad sample size is a 400.
    let html = get(
        &fx,
        Some(&cookie),
        "/dashboard/more?fairness_users=5&item_attribute=colour",
    )
    .await
    .text()
    .await
    .expect("page");
    assert!(html.contains("id=\"fairness-error\""), "{html}");
    assert!(html.contains("colour"), "{html}");
    for bad in ["0", "many", "20001"] {
        let resp = get(
            &fx,
            Some(&cookie),
            &format!("/dashboard/more?fairness_users={bad}"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            resp.text().await.expect("page").contains("users to sample"),
            "{bad}"
        );
    }
    fx.stop().await;
}

#[tokio::test]
async fn pages_escape_what_they_show_and_send_security_headers() {
    let fx = Fixture::start(false).await;
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    let resp = get(&fx, Some(&cookie), "/dashboard/items?key=xss").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h[CONTENT_SECURITY_POLICY], CSP);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    let html = resp.text().await.expect("page");
    assert!(!html.contains(XSS), "unescaped: {html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    // The only scripts are served files: the policy forbids inline ones anyway.
    for page in [
        "/dashboard",
        "/dashboard/models",
        "/dashboard/users?key=u2",
        "/dashboard/items?key=xss",
        "/dashboard/loops",
        "/dashboard/more",
        "/dashboard/device",
        "/dashboard/login",
    ] {
        // minijinja escapes `/` too; the browser reads `&#x2f;` as `/`.
        let html = get(&fx, Some(&cookie), page)
            .await
            .text()
            .await
            .expect("page")
            .replace("&#x2f;", "/");
        for tag in html.split("<script").skip(1) {
            let head = &tag[..tag.find('>').expect("a closed tag")];
            assert!(
                head.contains(" src=\"/dashboard/assets/"),
                "{page}: inline script {head}"
            );
        }
        assert!(!html.contains(" style="), "{page}: inline style");
        for handler in [
            " onclick=",
            " onload=",
            " onsubmit=",
            " onchange=",
            " onerror=",
        ] {
            assert!(!html.contains(handler), "{page}: inline handler {handler}");
        }
    }
    // Assets: long-lived, under their content tag; another tag is not served.
    let html = get(&fx, Some(&cookie), "/dashboard")
        .await
        .text()
        .await
        .expect("page")
        .replace("&#x2f;", "/");
    let at = html.find("/dashboard/assets/").expect("assets");
    let js = &html[at..at + html[at..].find('"').expect("end")];
    let js = js.replace("uPlot.min.css", "dashboard.js");
    let resp = get(&fx, None, &js).await;
    assert_eq!(resp.status(), StatusCode::OK, "{js}");
    assert_eq!(
        resp.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/javascript")
    );
    assert_eq!(
        get(&fx, None, "/dashboard/assets/000000000000/dashboard.js")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    fx.stop().await;
}

/// chromedriver as a child process on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

/// Starts chromedriver, or explains why the browser test cannot run: a failure with
/// `BESPOKE_REQUIRE_BROWSER=1`, a skip otherwise.
async fn driver() -> Option<Driver> {
    let required = std::env::var("BESPOKE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let missing = |why: &str| {
        assert!(
            !required,
            "BESPOKE_REQUIRE_BROWSER=1 but {why}: run .ci/setup (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "notice: skipping the dashboard's browser test: {why} (install chromium and chromium-driver, see .ci/setup)"
        );
        None
    };
    let Some(path) = find_chromedriver() else {
        return missing("chromedriver is not on PATH");
    };
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return missing("/usr/bin/chromium is missing");
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Ready when its status says so; polled, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = browserless().get(format!("{}/status", d.url)).send().await;
        if let Ok(r) = status
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            return Some(d);
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not become ready in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_browser(d: &Driver) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1100", "--hide-scrollbars"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("a browser session")
}

/// Waits for the chart in `#id` to draw, then counts its canvas pixels in the first series'
/// colour (#2563eb, give or take anti-aliasing): the line or points themselves, not just
/// axes.
async fn chart_pixels(b: &Browser, id: &str) -> u64 {
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&format!("#{id}[data-drawn='1'] canvas")))
        .await
        .unwrap_or_else(|e| panic!("chart {id} did not draw: {e}"));
    let n = b
        .execute(
            "const c = document.querySelector('#' + arguments[0] + ' canvas');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0;
             for (let i = 0; i < d.length; i += 4) {
               if (d[i + 3] > 64 && Math.abs(d[i] - 37) < 40 && Math.abs(d[i + 1] - 99) < 40 && Math.abs(d[i + 2] - 235) < 40) n++;
             }
             return n;",
            vec![json!(id)],
        )
        .await
        .expect("pixels read");
    n.as_u64().expect("a count")
}

async fn text(b: &Browser, css: &str) -> String {
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

/// Clicks `what` and waits until `then` is on the page.
async fn click_then_wait(b: &Browser, what: Locator<'_>, then: Locator<'_>) {
    b.find(what)
        .await
        .expect("an element to click")
        .click()
        .await
        .expect("clicked");
    b.wait()
        .for_element(then)
        .await
        .expect("the page after the click");
}

/// Saves a screenshot as `docs/img/dashboard-<name>.png` when `BESPOKE_SCREENSHOTS=1`.
async fn screenshot(b: &Browser, name: &str) {
    if std::env::var("BESPOKE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let png = b.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");
        std::fs::create_dir_all(&dir).expect("docs/img");
        std::fs::write(dir.join(format!("dashboard-{name}.png")), png).expect("screenshot saved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_walks_every_page() {
    let Some(d) = driver().await else {
        return;
    };
    let fx = Arc::new(Fixture::start(true).await);
    let b = open_browser(&d).await;
    // The walk runs as a task so that a failed assertion still closes the browser (and
    // chromedriver's Chromium with it) before the test reports it.
    let walked = tokio::spawn({
        let (fx, b) = (fx.clone(), b.clone());
        async move { walk(&fx, &b).await }
    })
    .await;
    let _ = b.close().await;
    if let Ok(fx) = Arc::try_unwrap(fx) {
        fx.stop().await;
    }
    if let Err(e) = walked {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn walk(fx: &Fixture, b: &Browser) {
    let base = &fx.base;
    // No session: the login page.
    b.goto(&format!("{base}/dashboard")).await.expect("goto");
    b.wait()
        .for_element(Locator::Id("login-form"))
        .await
        .expect("login page");
    assert!(
        b.current_url()
            .await
            .expect("url")
            .path()
            .ends_with("/dashboard/login")
    );
    screenshot(b, "login").await;
    // A read key is refused.
    b.find(Locator::Id("key"))
        .await
        .expect("key field")
        .send_keys(&fx.read_key)
        .await
        .expect("typed");
    b.find(Locator::Id("login-submit"))
        .await
        .expect("button")
        .click()
        .await
        .expect("clicked");
    let err = text(b, "#login-error").await;
    assert!(err.contains("admin"), "{err}");
    b.find(Locator::Id("key"))
        .await
        .expect("key field")
        .send_keys(&fx.admin_key)
        .await
        .expect("typed");
    b.find(Locator::Id("login-submit"))
        .await
        .expect("button")
        .click()
        .await
        .expect("clicked");

    // Overview: the figures of the fixture.
    assert_eq!(text(b, "#catalog-size").await, (ITEMS + 1).to_string());
    assert_eq!(text(b, "#user-count").await, USERS.to_string());
    assert_eq!(
        text(b, "#event-count").await,
        (USERS * PER_USER).to_string()
    );
    assert_eq!(text(b, "#active-day").await, USERS.to_string());
    assert_eq!(text(b, "#impression-count").await, "3");
    // The fixture's events all arrived after the server started, seconds ago.
    let rate: f64 = text(b, "#ingest-rate").await.parse().expect("a number");
    assert!(rate > 0.0, "{rate}");
    assert_eq!(text(b, "#model-version").await, "2");
    assert!(
        chart_pixels(b, "chart-events-hour").await > 0,
        "events per hour: no line"
    );
    assert!(
        chart_pixels(b, "chart-events-day").await > 0,
        "events per day: no line"
    );
    screenshot(b, "overview").await;

    // Models: two versions, a metrics chart, and a roll back to version 1.
    b.goto(&format!("{base}/dashboard/models"))
        .await
        .expect("goto");
    b.wait()
        .for_element(Locator::Css("#models-table"))
        .await
        .expect("models");
    assert_eq!(
        b.find_all(Locator::Css("tr.model-row"))
            .await
            .expect("rows")
            .len(),
        2
    );
    assert_eq!(text(b, "tr.model-row.active td").await, "2 served");
    assert!(
        chart_pixels(b, "chart-models").await > 0,
        "models chart: no points"
    );
    screenshot(b, "models").await;
    assert_eq!(text(b, "#activate-1").await, "Roll back to v1");
    click_then_wait(
        b,
        Locator::Id("activate-1"),
        Locator::Css("tr.model-row.active[data-version='1']"),
    )
    .await;
    let (_, models) = fx.call(reqwest::Method::GET, "/v1/models", None).await;
    assert_eq!(models["active"], 1, "{models}");
    // Version 2 is newer than the one served now: activating it is not a roll back.
    assert_eq!(text(b, "#activate-2").await, "Activate v2");

    // Users: history, recommendations with reasons, consent.
    b.goto(&format!("{base}/dashboard/users?key=u3"))
        .await
        .expect("goto");
    assert_eq!(text(b, "#user-key").await, "u3");
    assert_eq!(
        b.find_all(Locator::Css("#history tbody tr"))
            .await
            .expect("rows")
            .len(),
        PER_USER
    );
    let recs = b
        .find_all(Locator::Css("#recommendations > li"))
        .await
        .expect("recs");
    assert!(!recs.is_empty());
    assert!(
        !b.find_all(Locator::Css("#recommendations .reasons li"))
            .await
            .expect("reasons")
            .is_empty()
    );
    assert!(text(b, "#consent").await.contains("personalization: yes"));
    screenshot(b, "users").await;

    // Items: exposure figures and similar items; the XSS title shown as text.
    b.goto(&format!("{base}/dashboard/items?key=i0"))
        .await
        .expect("goto");
    assert_eq!(
        text(b, "#item-users").await,
        Fixture::viewers(0).to_string()
    );
    assert_eq!(text(b, "#item-impressions").await, "2");
    assert!(
        !b.find_all(Locator::Css("#similar > li a"))
            .await
            .expect("similar")
            .is_empty()
    );
    screenshot(b, "items").await;
    b.goto(&format!("{base}/dashboard/items?key=xss"))
        .await
        .expect("goto");
    assert_eq!(text(b, "td.text-field").await, XSS);

    // Decision loops: counts, reward over time, off-policy estimates.
    b.goto(&format!("{base}/dashboard/loops?key=home"))
        .await
        .expect("goto");
    assert_eq!(text(b, "td.loop-decisions").await, "30");
    assert_eq!(text(b, "#observed-reward").await, "0.5");
    assert!(
        !b.find_all(Locator::Css("#ope tbody tr"))
            .await
            .expect("rows")
            .is_empty()
    );
    let pixels = chart_pixels(b, "chart-rewards").await;
    screenshot(b, "loops").await;
    assert!(pixels > 0, "rewards chart: no line");

    b.goto(&format!("{base}/dashboard/more"))
        .await
        .expect("goto");
    assert_eq!(text(b, "td.exp-status").await, "running");
    // An experiment's report, one click away.
    click_then_wait(
        b,
        Locator::LinkText("evens-only"),
        Locator::Id("experiment-report"),
    )
    .await;
    screenshot(b, "experiment").await;
    assert_eq!(text(b, "td.seg-size").await, USERS.to_string());
    assert!(
        chart_pixels(b, "chart-segment-1").await > 0,
        "segment sizes chart: nothing drawn"
    );
    // The fairness form, submitted as a user would: the report of every fixture user.
    click_then_wait(
        b,
        Locator::Css("#fairness button[type=submit]"),
        Locator::Id("fairness-report"),
    )
    .await;
    assert_eq!(text(b, "#fairness-users").await, USERS.to_string());
    screenshot(b, "more").await;
    // The audience form: who is most drawn to the even items.
    b.find(Locator::Css("#audience-form input[name=audience_category]"))
        .await
        .expect("the audience form")
        .send_keys("even")
        .await
        .expect("typed");
    click_then_wait(
        b,
        Locator::Css("#audience-form button[type=submit]"),
        Locator::Id("audience-users"),
    )
    .await;
    assert_eq!(text(b, "#audience-matched").await, (ITEMS / 2).to_string());
    screenshot(b, "audience").await;

    // Erase a user from the UI: confirmation, then the receipt.
    b.goto(&format!("{base}/dashboard/users?key=u5"))
        .await
        .expect("goto");
    b.wait()
        .for_element(Locator::Id("erase-link"))
        .await
        .expect("link")
        .click()
        .await
        .expect("clicked");
    b.wait()
        .for_element(Locator::Id("erase-confirm"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("clicked");
    let erasure = text(b, "#erasure-id").await;
    assert!(!erasure.is_empty());
    assert_eq!(text(b, "#events-removed").await, PER_USER.to_string());
    screenshot(b, "erased").await;
    let (s, _) = fx.call(reqwest::Method::GET, "/v1/users/u5", None).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "erased users are gone from the API"
    );
    let (s, receipt) = fx
        .call(
            reqwest::Method::GET,
            &format!("/v1/erasures/{erasure}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{receipt}");

    // Phone width: the overview still shows its figures.
    b.set_window_size(390, 900).await.expect("resized");
    b.goto(&format!("{base}/dashboard")).await.expect("goto");
    assert_eq!(text(b, "#user-count").await, (USERS - 1).to_string());
    // The events tally started over after the erasure: the erased user is no longer active.
    assert_eq!(text(b, "#active-day").await, (USERS - 1).to_string());
    let overflow = b
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1",
            vec![],
        )
        .await
        .expect("js");
    assert_eq!(
        overflow,
        json!(false),
        "the page scrolls sideways on a phone"
    );
    screenshot(b, "phone").await;
}

/// The on-device demo's data endpoints take a session, not a key, and answer what the API
/// answers a device: the same bundle bytes, the same key.
#[tokio::test]
async fn device_demo_serves_the_apis_bundle_to_sessions_only() {
    let fx = Fixture::start(true).await;
    for path in [
        "/dashboard/api/device/key",
        "/dashboard/api/device/bundle",
        "/dashboard/api/device/titles",
    ] {
        let resp = browserless()
            .get(format!("{}{path}", fx.base))
            .bearer_auth(&fx.admin_key)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let (_, cookie, _) = login(&fx, &fx.admin_key).await;
    let cookie = cookie.expect("a session cookie");
    let (api_bytes, api_key) = device_bundle_from_api(&fx).await;
    let resp = get(&fx, Some(&cookie), "/dashboard/api/device/bundle").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].clone();
    assert_eq!(
        resp.bytes().await.expect("bytes").as_ref(),
        api_bytes.as_slice()
    );
    let again = browserless()
        .get(format!("{}/dashboard/api/device/bundle", fx.base))
        .header(COOKIE, &cookie)
        .header("if-none-match", etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let int8 = get(
        &fx,
        Some(&cookie),
        "/dashboard/api/device/bundle?encoding=int8",
    )
    .await;
    assert_eq!(int8.status(), StatusCode::OK);
    let int8 = int8.bytes().await.expect("bytes");
    let decoded = bespoke_client::Bundle::verify(&int8, &api_key).expect("verifies");
    assert_eq!(decoded.header().encoding, bespoke_client::Encoding::Int8);
    let bad = get(
        &fx,
        Some(&cookie),
        "/dashboard/api/device/bundle?encoding=f16",
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let key: Value = get(&fx, Some(&cookie), "/dashboard/api/device/key")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(key["public_key"], hex(&api_key), "{key}");
    let titles: Value = get(&fx, Some(&cookie), "/dashboard/api/device/titles")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(titles["titles"]["i3"], "Item number 3", "{titles}");
    assert_eq!(titles["titles"]["xss"], XSS, "{titles}");
    assert_eq!(titles["truncated"], false, "{titles}");
    // The module the page imports is the tested library, byte for byte.
    let html = get(&fx, Some(&cookie), "/dashboard/device")
        .await
        .text()
        .await
        .expect("page")
        .replace("&#x2f;", "/");
    let at = html.find("/dashboard/assets/").expect("assets");
    let tag = &html[at + "/dashboard/assets/".len()..][..12];
    let module = get(
        &fx,
        None,
        &format!("/dashboard/assets/{tag}/bespoke-device.mjs"),
    )
    .await;
    assert_eq!(module.status(), StatusCode::OK);
    let library = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/js/bespoke-device.mjs"),
    )
    .expect("the library");
    assert_eq!(module.bytes().await.expect("bytes").as_ref(), library);
    fx.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The f32 bundle and the public key, as a device gets them from `/v1` with a read key.
async fn device_bundle_from_api(fx: &Fixture) -> (Vec<u8>, [u8; 32]) {
    let key: Value = browserless()
        .get(format!("{}/v1/device/key", fx.base))
        .bearer_auth(&fx.read_key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let hex_key = key["public_key"].as_str().expect("a key");
    let key: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&hex_key[2 * i..2 * i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>()
        .try_into()
        .expect("32 bytes");
    let resp = browserless()
        .get(format!("{}/v1/device/bundle", fx.base))
        .bearer_auth(&fx.read_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    (resp.bytes().await.expect("bytes").to_vec(), key)
}

/// Requests the server counted, by method and route template, from its Prometheus counters
/// (`bespoke_http_requests_total`, every status summed). Every request goes through them,
/// the dashboard's and unmatched ones included.
async fn requests_by_route(fx: &Fixture) -> std::collections::BTreeMap<(String, String), u64> {
    let (s, body) = fx.call(reqwest::Method::GET, "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let text = body.as_str().expect("the exposition text");
    let label = |labels: &str, name: &str| {
        let at = labels.find(&format!("{name}=\"")).expect("a label") + name.len() + 2;
        labels[at..at + labels[at..].find('"').expect("a closing quote")].to_owned()
    };
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("bespoke_http_requests_total{") else {
            continue;
        };
        let (labels, n) = rest.split_once("} ").expect("labels, then a count");
        let n: u64 = n.trim().parse().expect("a whole count");
        *counts
            .entry((label(labels, "method"), label(labels, "route")))
            .or_default() += n;
    }
    counts
}

/// Events in the store and in serving, and users in serving.
async fn stored_events(fx: &Fixture) -> (u64, u64, u64) {
    let engine = fx
        .server
        .as_ref()
        .expect("a running server")
        .engine()
        .clone();
    tokio::task::spawn_blocking(move || {
        let stats = engine.store().stats().expect("store stats");
        let counts = engine.counts();
        (stats.events, counts.events, counts.users)
    })
    .await
    .expect("stats read")
}

/// The recommendations the page shows, with the exact scores it computed.
async fn page_recommendations(b: &Browser) -> Vec<(String, f64)> {
    let v = b
        .execute(
            "return [...document.querySelectorAll('#recs > li')].map(li => [li.dataset.item, li.dataset.score]);",
            vec![],
        )
        .await
        .expect("js");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            let item = p[0].as_str().expect("an item").to_owned();
            let score = p[1].as_str().expect("a score").parse().expect("a number");
            (item, score)
        })
        .collect()
}

/// What `bespoke_client` ranks for the history the page keeps in localStorage, at the time
/// and in the category the page ranked with.
async fn client_recommendations(
    b: &Browser,
    bundle: &bespoke_client::Bundle,
) -> Vec<(String, f64)> {
    let v = b
        .execute(
            "const r = document.getElementById('recs');
             return [localStorage.getItem('bespoke.device-demo.history'), r.dataset.nowMs, r.dataset.category];",
            vec![],
        )
        .await
        .expect("js");
    let history = match v[0].as_str() {
        Some(json) => bespoke_client::History::from_json(json).expect("a stored history"),
        None => bespoke_client::History::default(),
    };
    let now_ms: i64 = v[1].as_str().expect("a time").parse().expect("ms");
    let category = v[2].as_str().expect("a category");
    let query = bespoke_client::Query {
        n: 10,
        categories: if category.is_empty() {
            Vec::new()
        } else {
            vec![category.to_owned()]
        },
        now_ms,
        ..bespoke_client::Query::default()
    };
    bundle
        .recommend(&history, &query)
        .into_iter()
        .map(|s| (s.item, s.score))
        .collect()
}

/// The page's ranking is the Rust crate's: the same items in the same order, each score
/// within 1e-5.
async fn assert_ranks_as_the_crate(
    b: &Browser,
    bundle: &bespoke_client::Bundle,
) -> Vec<(String, f64)> {
    let page = page_recommendations(b).await;
    let rust = client_recommendations(b, bundle).await;
    let items = |r: &[(String, f64)]| r.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
    assert_eq!(items(&page), items(&rust), "page {page:?}, crate {rust:?}");
    for ((item, p), (_, r)) in page.iter().zip(&rust) {
        assert!((p - r).abs() <= 1e-5, "{item}: page {p}, crate {r}");
    }
    page
}

/// Clicks a View/Buy button and waits for the page to re-rank with one more event.
async fn act(b: &Browser, button: &str, events: usize) {
    b.find(Locator::Css(button))
        .await
        .unwrap_or_else(|e| panic!("{button}: {e}"))
        .click()
        .await
        .expect("clicked");
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&format!("#recs[data-events='{events}']")))
        .await
        .unwrap_or_else(|e| panic!("no ranking after {button}: {e}"));
}

/// The page's own account of its requests since it loaded: all GETs of what it needs, none
/// suspect.
async fn assert_network_panel_clean(b: &Browser) {
    let summary = b
        .find(Locator::Id("network-summary"))
        .await
        .expect("the summary");
    assert_eq!(
        summary.attr("data-suspect").await.expect("attr").as_deref(),
        Some("0"),
        "{}",
        summary.text().await.expect("text")
    );
    let total: usize = summary
        .attr("data-total")
        .await
        .expect("attr")
        .expect("a total")
        .parse()
        .expect("a count");
    // The page, two stylesheets, three scripts, the module, the key, the bundle, the titles.
    assert!(total >= 10, "{total} requests");
    assert!(
        summary
            .text()
            .await
            .expect("text")
            .contains("0 carried an event")
    );
    let methods = b
        .execute(
            "return [...document.querySelectorAll('#network tbody tr')].map(tr => tr.dataset.method);",
            vec![],
        )
        .await
        .expect("js");
    let methods = methods.as_array().expect("a list");
    assert_eq!(methods.len(), total);
    assert!(methods.iter().all(|m| m == "GET"), "{methods:?}");
}

/// Waits for the demo page to verify its bundle; its status line if it could not.
async fn demo_ready(b: &Browser) {
    b.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#device:not([data-state='loading'])"))
        .await
        .expect("the bundle loads");
    let state = b
        .find(Locator::Id("device"))
        .await
        .expect("the card")
        .attr("data-state")
        .await
        .expect("attr");
    assert_eq!(
        state.as_deref(),
        Some("ready"),
        "{}",
        text(b, "#bundle-status").await
    );
}

/// The demo page (`/dashboard/device`) in Chromium: it verifies the bundle, ranks on the
/// device after each click exactly as `bespoke_client` does, keeps the history in localStorage
/// across a reload, forgets it on request, and the server receives no event: the store's and
/// serving's counts do not move, and its request counters show only GETs of the page, its
/// assets, the key, the bundle and the titles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_ranks_on_the_device_and_sends_no_event() {
    let Some(d) = driver().await else {
        return;
    };
    let fx = Arc::new(Fixture::start(true).await);
    let b = open_browser(&d).await;
    let ran = tokio::spawn({
        let (fx, b) = (fx.clone(), b.clone());
        async move { device_demo(&fx, &b).await }
    })
    .await;
    let _ = b.close().await;
    if let Ok(fx) = Arc::try_unwrap(fx) {
        fx.stop().await;
    }
    if let Err(e) = ran {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn device_demo(fx: &Fixture, b: &Browser) {
    let base = &fx.base;
    // A title that is markup, on an item the model holds (`xss` has no events): the page must
    // show it as text.
    let (s, body) = fx
        .call(
            reqwest::Method::PUT,
            "/v1/items/i11",
            Some(json!({ "categories": ["odd"], "text": { "title": XSS } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    b.goto(&format!("{base}/dashboard/login"))
        .await
        .expect("goto");
    b.find(Locator::Id("key"))
        .await
        .expect("key field")
        .send_keys(&fx.admin_key)
        .await
        .expect("typed");
    b.find(Locator::Id("login-submit"))
        .await
        .expect("button")
        .click()
        .await
        .expect("clicked");
    b.wait()
        .for_element(Locator::Id("catalog-size"))
        .await
        .expect("the overview");
    // A page without charts, so that no request of the overview is still on its way when the
    // counts are taken.
    b.goto(&format!("{base}/dashboard/users"))
        .await
        .expect("goto");
    b.wait()
        .for_element(Locator::LinkText("On-device demo"))
        .await
        .expect("the navigation");
    let (bytes, key) = device_bundle_from_api(fx).await;
    let bundle = bespoke_client::Bundle::verify(&bytes, &key).expect("the API's bundle verifies");
    let events_before = stored_events(fx).await;
    let requests_before = requests_by_route(fx).await;

    b.find(Locator::LinkText("On-device demo"))
        .await
        .expect("the link")
        .click()
        .await
        .expect("clicked");
    demo_ready(b).await;
    assert!(
        text(b, "#bundle-status")
            .await
            .contains("Signature verified"),
        "{}",
        text(b, "#bundle-status").await
    );
    let version = b
        .find(Locator::Id("device"))
        .await
        .expect("card")
        .attr("data-model-version")
        .await
        .expect("attr");
    assert_eq!(
        version.as_deref(),
        Some(bundle.header().model_version.to_string().as_str())
    );
    // The bundle's items, with the catalog's titles shown as text.
    assert_eq!(
        b.find_all(Locator::Css("#catalog tbody tr"))
            .await
            .expect("rows")
            .len(),
        bundle.len()
    );
    assert_eq!(
        text(b, "#catalog tr[data-item='i3'] .title").await,
        "Item number 3"
    );
    assert_eq!(text(b, "#catalog tr[data-item='i11'] .title").await, XSS);
    // No history yet: nothing ranked.
    assert!(page_recommendations(b).await.is_empty());

    act(b, "#catalog button[data-item='i0'][data-type='view']", 1).await;
    let first = assert_ranks_as_the_crate(b, &bundle).await;
    assert!(!first.is_empty());
    // Buying the top recommendation: it is seen now, so it leaves the list.
    let top = first[0].0.clone();
    act(
        b,
        &format!("#recs li[data-item='{top}'] button[data-type='purchase']"),
        2,
    )
    .await;
    let second = assert_ranks_as_the_crate(b, &bundle).await;
    assert_ne!(second, first, "the ranking did not change");
    assert!(second.iter().all(|(i, _)| *i != top), "{second:?}");
    act(b, "#catalog button[data-item='i7'][data-type='view']", 3).await;
    let third = assert_ranks_as_the_crate(b, &bundle).await;

    // Within a category.
    b.find(Locator::Id("category"))
        .await
        .expect("the filter")
        .select_by_value("even")
        .await
        .expect("selected");
    b.wait()
        .for_element(Locator::Css("#recs[data-category='even']"))
        .await
        .expect("ranked in the category");
    let even = assert_ranks_as_the_crate(b, &bundle).await;
    assert!(!even.is_empty());
    for (item, _) in &even {
        let row = bundle.item(item).expect("a bundle item");
        let cats = &bundle.header().item_categories[row as usize];
        assert!(
            cats.iter()
                .any(|&c| bundle.header().categories[c as usize] == "even"),
            "{item} is not even"
        );
    }
    screenshot(b, "device").await;
    assert_network_panel_clean(b).await;

    // The history outlives a reload: it is in localStorage.
    b.refresh().await.expect("reloaded");
    demo_ready(b).await;
    b.wait()
        .for_element(Locator::Css("#recs[data-events='3']"))
        .await
        .expect("the history is back");
    assert_eq!(
        b.find_all(Locator::Css("#history > li"))
            .await
            .expect("rows")
            .len(),
        3
    );
    assert_eq!(assert_ranks_as_the_crate(b, &bundle).await, third);

    assert_network_panel_clean(b).await;
    // Forget my history: gone from the page and from localStorage.
    b.find(Locator::Id("forget"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("clicked");
    b.wait()
        .for_element(Locator::Css("#recs[data-events='0']"))
        .await
        .expect("forgotten");
    assert!(page_recommendations(b).await.is_empty());
    let stored = b
        .execute(
            "return localStorage.getItem('bespoke.device-demo.history');",
            vec![],
        )
        .await
        .expect("js");
    assert_eq!(stored, Value::Null);

    // The server's side: no event arrived, and the page made GETs of what it needs only.
    assert_eq!(stored_events(fx).await, events_before, "events arrived");
    let after = requests_by_route(fx).await;
    let mut delta = std::collections::BTreeMap::new();
    for (k, n) in &after {
        let d = n - requests_before.get(k).copied().unwrap_or(0);
        if d > 0 {
            delta.insert(k.clone(), d);
        }
    }
    let allowed = [
        "/dashboard/device",
        "/dashboard/assets/{tag}/{name}",
        "/dashboard/api/device/key",
        "/dashboard/api/device/bundle",
        "/dashboard/api/device/titles",
        // The test's own first count.
        "/metrics",
    ];
    for ((method, route), n) in &delta {
        assert!(
            method == "GET" && allowed.contains(&route.as_str()),
            "{n} × {method} {route} during the demo: {delta:?}"
        );
    }
    let got = |route: &str| delta.get(&("GET".to_owned(), route.to_owned())).copied();
    // Loaded twice (the link, the reload): the page, its key and its bundle, once each time.
    assert_eq!(got("/dashboard/device"), Some(2), "{delta:?}");
    assert_eq!(got("/dashboard/api/device/key"), Some(2), "{delta:?}");
    assert_eq!(got("/dashboard/api/device/bundle"), Some(2), "{delta:?}");
}
