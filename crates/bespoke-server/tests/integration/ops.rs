use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{assert_error, start};

#[tokio::test]
async fn every_documented_route_is_served() {
    let srv = start().await;
    srv.events(&[("x", "x", "view")]).await;
    let (status, doc) = srv.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path, _) in bespoke_server::api::ROUTES {
        let documented = &doc["paths"][path][method.to_lowercase()];
        assert!(documented.is_object(), "{method} {path} is not documented");
        let url = path.replace("{key}", "x").replace("{version}", "1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
        let (status, resp) = srv.request(method.clone(), &url, body).await;
        assert!(
            !matches!(status, StatusCode::METHOD_NOT_ALLOWED)
                && resp["error"]["code"] != "route_not_found",
            "{method} {url} is documented but not routed: {status} {resp}"
        );
        // The answer's status must be one the document lists for it.
        let listed = &documented["responses"][status.as_str()];
        assert!(
            listed.is_object(),
            "{method} {path} answered {status}, which the document does not list"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let srv = start().await;
    assert_error(
        &srv.get("/v1/nothing").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
        None,
    );
    assert_error(
        &srv.request(Method::PATCH, "/v1/users/x", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
    assert_error(
        &srv.get("/v1/events").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
}

#[tokio::test]
async fn health_and_metrics_report_counts_and_requests() {
    let srv = start().await;
    srv.events(&[("a", "b", "view"), ("a", "c", "click")]).await;
    // Public: no key needed, and it says nothing but "up".
    let resp = reqwest::get(format!("{}/healthz", srv.base)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
    srv.get("/v1/users/a/recommendations").await;
    srv.get("/v1/users/secret-user-key/recommendations?n=0")
        .await;
    let resp = srv
        .client
        .get(format!("{}/metrics", srv.base))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#"bespoke_http_requests_total{method="GET",route="/v1/users/{key}/recommendations",status="200"} 1"#), "{text}");
    assert!(
        text.contains(r#"route="/v1/users/{key}/recommendations",status="400"} 1"#),
        "{text}"
    );
    assert!(text.contains("bespoke_events 2\n"));
    assert!(text.contains("bespoke_users 1\n"), "{text}");
    assert!(text.contains("bespoke_items 2\n"), "{text}");
    assert!(
        !text.contains("secret-user-key"),
        "keys must never become metric labels"
    );
}

/// Every answer names its request (`X-Request-Id`): a new UUID v7 unless the caller sent a
/// plausible id of its own, which is kept; errors and unknown routes included.
#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let srv = start().await;
    let id_of = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut seen = std::collections::HashSet::new();
    for path in ["/healthz", "/v1/users/nobody", "/no/such/route", "/healthz"] {
        let resp = srv
            .client
            .get(format!("{}{path}", srv.base))
            .send()
            .await
            .unwrap();
        let id = id_of(&resp).unwrap_or_else(|| panic!("{path}: no x-request-id"));
        let uuid = uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(uuid.get_version_num(), 7, "{id}");
        assert!(seen.insert(id), "an id was given twice");
    }
    let send = |id: &'static str| {
        srv.client
            .get(format!("{}/healthz", srv.base))
            .header("x-request-id", id)
            .send()
    };
    let kept = send("lb-7f3a.42_x").await.unwrap();
    assert_eq!(id_of(&kept).as_deref(), Some("lb-7f3a.42_x"));
    // Not an id: replaced, never echoed (it would go into logs as it came).
    for bad in ["has space", "<script>", ""] {
        let resp = send(bad).await.unwrap();
        let id = id_of(&resp).unwrap();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
    let long: &'static str = Box::leak("x".repeat(65).into_boxed_str());
    let resp = send(long).await.unwrap();
    assert_ne!(id_of(&resp).unwrap(), long);
}
