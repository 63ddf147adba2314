//! Issue 23, findings 7 and 8: what a read key may see, HEAD, CORS and response headers.

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
