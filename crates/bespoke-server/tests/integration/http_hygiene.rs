//! Issue 23, findings 7, 8 and 10: what a read key may see, HEAD, CORS, response headers, and
//! per-source throttling of failed authentication.

use std::net::IpAddr;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, client_with_key, start, start_with};

async fn create_key(srv: &TestServer, scope: &str) -> String {
    let (status, body) = srv
        .post("/v1/keys", json!({ "name": scope, "scopes": [scope] }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// A client that connects from `source` (any 127.0.0.0/8 address reaches a loopback server on
/// Linux) and sends `key`, if any.
fn client_from(source: &str, key: Option<&str>) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
    }
    Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn status_of(client: &Client, method: Method, url: String) -> (StatusCode, Value) {
    let resp = client.request(method, url).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Finding 7: the read key, shipped to browsers, sees serving routes only, not the decision
/// loops' configuration and statistics; a write key reads the catalog it writes.
#[tokio::test]
async fn issue_23_read_key_sees_no_loops_and_write_key_reads_the_catalog() {
    let srv = start().await;
    let (status, body) = srv
        .put("/v1/items/sku-1", json!({ "categories": ["Kitchen"] }))
        .await;
    assert!(status.is_success(), "{status} {body}");
    let read = client_with_key(&create_key(&srv, "read").await);
    let write = client_with_key(&create_key(&srv, "write").await);
    for path in ["/v1/loops", "/v1/loops/checkout"] {
        let got = status_of(&read, Method::GET, format!("{}{path}", srv.base)).await;
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden", None);
        let (status, body) = status_of(&write, Method::GET, format!("{}{path}", srv.base)).await;
        assert!(
            status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
            "write key refused {path}: {status} {body}"
        );
    }
    // README said the write scope covers GET /v1/items/{key}; the server refused it.
    let (status, body) =
        status_of(&write, Method::GET, format!("{}/v1/items/sku-1", srv.base)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], "sku-1", "{body}");
    // The read key still serves.
    for path in [
        "/v1/items/sku-1",
        "/v1/popular",
        "/v1/items/sku-1/similar",
        "/openapi.json",
    ] {
        let (status, body) = status_of(&read, Method::GET, format!("{}{path}", srv.base)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}

/// Finding 8: HEAD is answered wherever GET is, under GET's scope, without a body.
#[tokio::test]
async fn issue_23_head_is_served_wherever_get_is_under_its_scope() {
    let srv = start().await;
    let read = client_with_key(&create_key(&srv, "read").await);
    let head = |client: &Client, path: &str| {
        let req = client.head(format!("{}{path}", srv.base));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.text().await.unwrap())
        }
    };
    assert_eq!(
        head(&Client::new(), "/healthz").await,
        (StatusCode::OK, String::new())
    );
    assert_eq!(
        head(&read, "/v1/popular").await,
        (StatusCode::OK, String::new())
    );
    assert_eq!(head(&read, "/openapi.json").await.0, StatusCode::OK);
    assert_eq!(head(&read, "/v1/keys").await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        head(&Client::new(), "/v1/popular").await.0,
        StatusCode::UNAUTHORIZED
    );
    // A route without GET still says which methods it takes.
    let resp = read
        .head(format!("{}/v1/events", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");
}

/// Finding 8: `nosniff` on every answer, and `no-store` on every answer, in particular those
/// that carry secrets or personal data.
#[tokio::test]
async fn issue_23_every_answer_is_nosniff_and_no_store() {
    let srv = start().await;
    srv.events(&[("ann", "sku-1", "view"), ("bob", "sku-1", "purchase")])
        .await;
    let (status, receipt) = srv.delete("/v1/users/bob").await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    let erasure = receipt["erasure_id"].as_str().unwrap().to_owned();
    let no_key = Client::new();
    let cases: Vec<(&Client, Method, String, Option<Value>)> = vec![
        (&no_key, Method::GET, "/healthz".into(), None),
        (&no_key, Method::GET, "/nowhere".into(), None),
        (&no_key, Method::GET, "/v1/users/ann".into(), None),
        (
            &srv.client,
            Method::POST,
            "/v1/keys".into(),
            Some(json!({ "name": "k", "scopes": ["read"] })),
        ),
        (&srv.client, Method::GET, "/v1/users/ann".into(), None),
        (
            &srv.client,
            Method::GET,
            "/v1/users/ann/events".into(),
            None,
        ),
        (
            &srv.client,
            Method::GET,
            "/v1/users/ann/export".into(),
            None,
        ),
        (
            &srv.client,
            Method::GET,
            "/v1/users/ann/recommendations".into(),
            None,
        ),
        (
            &srv.client,
            Method::GET,
            format!("/v1/erasures/{erasure}"),
            None,
        ),
        (&srv.client, Method::GET, "/v1/keys".into(), None),
        (&srv.client, Method::GET, "/metrics".into(), None),
        (&srv.client, Method::GET, "/v1/popular?n=0".into(), None),
    ];
    for (client, method, path, body) in cases {
        let mut req = client.request(method.clone(), format!("{}{path}", srv.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let what = format!("{method} {path} ({})", resp.status());
        let headers = resp.headers();
        assert_eq!(
            headers
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            headers.get("cache-control").map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{what}"
        );
    }
}

/// Finding 8: no CORS headers unless origins are configured.
#[tokio::test]
async fn issue_23_cors_is_off_by_default() {
    let srv = start().await;
    let resp = Client::new()
        .request(Method::OPTIONS, format!("{}/v1/popular", srv.base))
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    let resp = srv
        .client
        .get(format!("{}/v1/popular", srv.base))
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
}

/// Finding 8: an allowed origin's preflight is answered without a key, the real request still
/// needs one, and other origins get no CORS headers.
#[tokio::test]
async fn issue_23_cors_allows_exactly_the_configured_origins() {
    let srv = start_with(|s| {
        s.server.cors_allowed_origins = vec!["https://shop.example.com".into()];
    })
    .await;
    let read = create_key(&srv, "read").await;
    let preflight = |origin: &'static str| {
        Client::new()
            .request(
                Method::OPTIONS,
                format!("{}/v1/users/ann/recommendations", srv.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let resp = preflight("https://shop.example.com").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example.com");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    let resp = preflight("https://evil.example.com").await.unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));

    // The request itself: with the read key it is served; without, 401 (readable by the page).
    for (key, status) in [
        (Some(read.as_str()), StatusCode::OK),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let mut req = Client::new()
            .get(format!("{}/v1/popular", srv.base))
            .header("origin", "https://shop.example.com");
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://shop.example.com"
        );
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .parse()
        .unwrap()
}

/// Finding 10: a source that fails authentication past its budget gets 429 with Retry-After,
/// for any key, while other sources keep working; failures and refusals are counted.
#[tokio::test]
async fn issue_23_failed_authentication_is_throttled_per_source() {
    // Three failures at once, then one per 1,000 minutes: nothing refills during the test.
    let srv = start_with(|s| {
        s.auth.failed_per_minute = 0.001;
        s.auth.failed_burst = 3;
    })
    .await;
    let read = create_key(&srv, "read").await;
    let wrong = format!("bsk_00000000_{}", "0".repeat(64));
    let url = format!("{}/v1/popular", srv.base);
    let attacker = client_from("127.0.0.1", Some(&wrong));
    for _ in 0..3 {
        let got = status_of(&attacker, Method::GET, url.clone()).await;
        assert_error(
            &got,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some("Authorization"),
        );
    }
    let resp = attacker.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "auth_throttled", "{body}");
    // The throttled source is refused whatever it sends, a valid key and no key included.
    for key in [Some(read.as_str()), None] {
        let got = status_of(&client_from("127.0.0.1", key), Method::GET, url.clone()).await;
        assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "auth_throttled", None);
    }
    // /healthz needs no key, so it is not throttled.
    let (status, _) = status_of(&attacker, Method::GET, format!("{}/healthz", srv.base)).await;
    assert_eq!(status, StatusCode::OK);
    // Another source: valid keys work, and its own failures get 401 from its own budget.
    let (status, body) = status_of(
        &client_from("127.0.0.2", Some(&read)),
        Method::GET,
        url.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = status_of(
        &client_from("127.0.0.2", Some(&wrong)),
        Method::GET,
        url.clone(),
    )
    .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized", None);

    let admin = client_from("127.0.0.3", Some(&srv.admin_key));
    let (status, text) = status_of(&admin, Method::GET, format!("{}/metrics", srv.base)).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    // 127.0.0.1: three 401s and the failure that went over; 127.0.0.2: one.
    assert_eq!(
        metric(text, "bespoke_auth_failures_total{reason=\"invalid\"}"),
        5
    );
    // The failure that went over, then the valid key and the missing key.
    assert_eq!(metric(text, "bespoke_auth_throttled_total"), 3);
    assert_eq!(
        metric(text, "bespoke_auth_failures_total{reason=\"missing\"}"),
        0
    );
}
