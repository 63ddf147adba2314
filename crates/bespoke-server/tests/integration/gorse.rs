//! The Gorse-compatible API (`/api/...`, docs/gorse.md): Gorse's JSON shapes over raw HTTP with
//! keys in `X-API-Key`, and Gorse's own Python client (`pygorse`, pinned in
//! `.ci/requirements-test.txt`) against the live server.

use bespoke_server::auth::Scope;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use bespoke_algo::model::ModelKind;
use bespoke_server::settings::ModelChoice;

use crate::common::{TestServer, start_with};

/// A key with `scopes`, as an application would get one from `bespoke keys create`.
async fn key(srv: &TestServer, scopes: &'static [Scope]) -> String {
    let engine = srv.engine();
    tokio::task::spawn_blocking(move || {
        engine
            .access()
            .create_key("gorse", "gorse test", scopes, None)
    })
    .await
    .unwrap()
    .expect("key")
    .0
}

/// One request with `key` in Gorse's header; the status and the JSON (or text) body.
async fn call(
    srv: &TestServer,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Client::new()
        .request(method, format!("{}{path}", srv.base))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let text = resp.text().await.expect("body read");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Two tastes as Gorse feedback (`common::two_tastes`): 60 users, the even ones reading
/// a-items `a0`..`a9`, the odd ones b-items, each skipping a third of them.
fn feedback() -> Vec<Value> {
    let mut out = Vec::new();
    for u in 0..60 {
        let group = if u % 2 == 0 { "a" } else { "b" };
        for i in 0..10 {
            if (u + i) % 3 != 0 {
                out.push(json!({"FeedbackType": "view", "UserId": format!("u{u}"), "ItemId": format!("{group}{i}"), "Timestamp": ""}));
            }
        }
    }
    out
}

fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("an array: {body}"))
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            o => o["Id"].as_str().expect("Id").to_owned(),
        })
        .collect()
}

/// A server whose recommendations come from EASE: on data this small, iALS's unseen items all
/// score near zero and their order says nothing.
async fn start() -> TestServer {
    start_with(|s| s.serving.default_model = ModelChoice::Model(ModelKind::Ease)).await
}

async fn train(srv: &TestServer) {
    let (status, body) = srv
        .request(Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn gorse_routes_answer_in_gorse_shapes() {
    let srv = start().await;
    let write = key(&srv, &[Scope::Write]).await;
    let read = key(&srv, &[Scope::Read]).await;

    // Users and items.
    let (status, body) = call(
        &srv,
        &write,
        Method::POST,
        "/api/user",
        Some(json!({"UserId": "ann", "Labels": {"country": "fr"}, "Comment": "first"})),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"RowAffected": 1})));
    let (status, body) = call(&srv, &write, Method::GET, "/api/user/ann", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"UserId": "ann", "Labels": {"country": "fr"}, "Comment": "first"})
    );
    let users: Vec<Value> = (0..3)
        .map(|i| json!({"UserId": format!("x{i}"), "Labels": ["l"]}))
        .collect();
    let (status, body) = call(&srv, &write, Method::POST, "/api/users", Some(json!(users))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"RowAffected": 3})));
    let (_, body) = call(&srv, &write, Method::GET, "/api/user/x1", None).await;
    assert_eq!(body["Labels"], json!(["l"]), "{body}");

    let (status, body) = call(
        &srv,
        &write,
        Method::POST,
        "/api/item",
        Some(json!({"ItemId": "a0", "IsHidden": false, "Categories": ["books"], "Timestamp": "2026-01-01", "Labels": ["paper"], "Comment": "a book"})),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"RowAffected": 1})));
    // An item is a catalog read: the read key may get it.
    let (status, body) = call(&srv, &read, Method::GET, "/api/item/a0", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"ItemId": "a0", "IsHidden": false, "Categories": ["books"], "Timestamp": "2026-01-01T00:00:00.000Z", "Labels": ["paper"], "Comment": "a book"})
    );
    let items: Vec<Value> = (1..10)
        .flat_map(|i| {
            [
                json!({"ItemId": format!("a{i}"), "Categories": ["books"]}),
                json!({"ItemId": format!("b{i}"), "Categories": ["films"]}),
            ]
        })
        .chain([json!({"ItemId": "b0", "Categories": ["films"]})])
        .collect();
    let (status, body) = call(&srv, &write, Method::POST, "/api/items", Some(json!(items))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"RowAffected": 19})));

    // Feedback.
    let fb = feedback();
    let (status, body) = call(&srv, &write, Method::POST, "/api/feedback", Some(json!(fb))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"RowAffected": fb.len()}));
    let (status, body) = call(&srv, &write, Method::GET, "/api/user/u0/feedback", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut seen = ids(&json!(
        body.as_array()
            .unwrap()
            .iter()
            .map(|f| f["ItemId"].clone())
            .collect::<Vec<_>>()
    ));
    seen.sort();
    assert_eq!(seen, ["a1", "a2", "a4", "a5", "a7", "a8"]);
    assert_eq!(body[0]["FeedbackType"], "view");
    assert_eq!(body[0]["UserId"], "u0");
    // Stored as sent, now when empty.
    assert!(
        body[0]["Timestamp"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    let (_, body) = call(
        &srv,
        &write,
        Method::GET,
        "/api/user/u0/feedback/like",
        None,
    )
    .await;
    assert_eq!(body, json!([]));
    // An unknown feedback type is Bespoke's 400, naming Gorse's field.
    let (status, body) = call(
        &srv,
        &write,
        Method::POST,
        "/api/feedback",
        Some(json!([{"FeedbackType": "nope", "UserId": "u0", "ItemId": "a0", "Timestamp": ""}])),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "[0].FeedbackType", "{body}");

    // Scopes: the read key serves, but may not write.
    let (status, _) = call(&srv, &read, Method::POST, "/api/feedback", Some(json!(fb))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&srv, "not-a-key", Method::GET, "/api/popular", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    train(&srv).await;

    // Recommendations: ids by default, {Id, Score} with X-API-Version: 2; nothing seen.
    let (status, body) = call(&srv, &read, Method::GET, "/api/recommend/u0?n=3", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let recs = ids(&body);
    assert!(body[0].is_string(), "{body}");
    assert_eq!(recs.len(), 3, "{body}");
    for s in ["a1", "a2", "a4", "a5", "a7", "a8"] {
        assert!(!recs.contains(&s.to_owned()), "{s} was seen: {recs:?}");
    }
    assert!(
        ["a0", "a3", "a6", "a9"].contains(&recs[0].as_str()),
        "u0 reads a-items: {recs:?}"
    );
    let resp = Client::new()
        .get(format!("{}/api/recommend/u0/?n=2&offset=1", srv.base))
        .header("X-API-Key", &read)
        .header("X-API-Version", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let scored: Value = resp.json().await.unwrap();
    assert_eq!(ids(&scored), recs[1..3], "{scored}");
    assert!(scored[0]["Score"].is_number(), "{scored}");
    let (status, body) = call(&srv, &read, Method::GET, "/api/recommend/u0/films", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        ids(&body).iter().all(|i| i.starts_with('b')),
        "category films: {body}"
    );

    // Neighbors: co-read items.
    let (status, body) = call(&srv, &read, Method::GET, "/api/item/a1/neighbors?n=3", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let near = ids(&body);
    assert!(!near.is_empty(), "{body}");
    assert!(near.iter().all(|i| i.starts_with('a')), "{body}");
    assert!(body[0]["Score"].is_number(), "{body}");
    let (status, _) = call(&srv, &read, Method::GET, "/api/item/zz/neighbors", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Popular and latest.
    for path in ["/api/popular?n=4", "/api/latest?n=4"] {
        let (status, body) = call(&srv, &read, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(ids(&body).len(), 4, "{path}: {body}");
        assert!(body[0]["Score"].is_number(), "{path}: {body}");
    }

    // Session recommendations from feedback, the session's items left out.
    let session = json!([
        {"FeedbackType": "view", "UserId": "", "ItemId": "b1", "Timestamp": "2026-01-02T00:00:00Z"},
        {"FeedbackType": "view", "UserId": "", "ItemId": "b2", "Timestamp": "2026-01-02T00:01:00Z"}
    ]);
    let (status, body) = call(
        &srv,
        &read,
        Method::POST,
        "/api/session/recommend?n=3",
        Some(session),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = ids(&body);
    assert_eq!(got.len(), 3, "{body}");
    assert!(
        got.iter()
            .all(|i| i.starts_with('b') && i != "b1" && i != "b2"),
        "{body}"
    );

    // One user's feedback on one item: listed, deleted by type or all of it, and then
    // recommendable to them again.
    let (status, body) = call(&srv, &write, Method::GET, "/api/feedback/u0/a1", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(
        (&body[0]["UserId"], &body[0]["ItemId"]),
        (&json!("u0"), &json!("a1"))
    );
    let (_, body) = call(&srv, &write, Method::GET, "/api/feedback/like/u0/a1", None).await;
    assert_eq!(body, json!([]));
    let (status, body) = call(&srv, &write, Method::DELETE, "/api/feedback/u0/a1", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"RowAffected": 1})));
    let (_, body) = call(&srv, &write, Method::GET, "/api/feedback/u0/a1", None).await;
    assert_eq!(body, json!([]));
    let (status, body) = call(&srv, &read, Method::GET, "/api/recommend/u0?n=5", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        ids(&body).contains(&"a1".to_owned()),
        "a1 is unread again: {body}"
    );
    let (_, body) = call(
        &srv,
        &write,
        Method::DELETE,
        "/api/feedback/like/u0/a2",
        None,
    )
    .await;
    assert_eq!(body, json!({"RowAffected": 0}));
    let (_, body) = call(
        &srv,
        &write,
        Method::DELETE,
        "/api/feedback/view/u0/a2",
        None,
    )
    .await;
    assert_eq!(body, json!({"RowAffected": 1}));
    let (status, body) = call(
        &srv,
        &write,
        Method::DELETE,
        "/api/feedback/impression/u0/a4",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "type", "{body}");
    let (status, _) = call(&srv, &read, Method::DELETE, "/api/feedback/u0/a4", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Deletions.
    let (status, body) = call(&srv, &write, Method::DELETE, "/api/item/a0", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"RowAffected": 1})));
    let (status, _) = call(&srv, &read, Method::GET, "/api/item/a0", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&srv, &write, Method::DELETE, "/api/user/ann", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"RowAffected": 1})));
    let (status, body) = call(&srv, &write, Method::GET, "/api/user/ann", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        body["error"]["code"], "not_found",
        "Bespoke's error shape: {body}"
    );
}

/// Every page of a cursor listing, following `Cursor` until it is empty.
async fn all_pages(srv: &TestServer, key: &str, path: &str, field: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}n=4&cursor={cursor}");
        let (status, body) = call(srv, key, Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        let page = body[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field}: {body}"));
        assert!(page.len() <= 4, "{body}");
        out.extend(page.iter().cloned());
        cursor = body["Cursor"].as_str().expect("Cursor").to_owned();
        if cursor.is_empty() {
            return out;
        }
    }
    panic!("{path}: the cursor never ended");
}

#[tokio::test]
async fn gorse_listings_patches_and_categories() {
    let srv = start().await;
    let write = key(&srv, &[Scope::Write]).await;
    let read = key(&srv, &[Scope::Read]).await;
    let users: Vec<Value> = (0..10)
        .map(|i| json!({"UserId": format!("u{i}")}))
        .collect();
    call(&srv, &write, Method::POST, "/api/users", Some(json!(users))).await;
    let items: Vec<Value> = (0..9)
        .map(|i| json!({"ItemId": format!("i{i}"), "Categories": [if i % 3 == 0 { "tea" } else { "coffee" }]}))
        .collect();
    call(&srv, &write, Method::POST, "/api/items", Some(json!(items))).await;
    let mut fb = Vec::new();
    for u in 0..10 {
        for i in 0..3 {
            let kind = if i == 0 { "like" } else { "view" };
            fb.push(json!({"FeedbackType": kind, "UserId": format!("u{u}"), "ItemId": format!("i{}", (u + i) % 9), "Timestamp": ""}));
        }
    }
    call(&srv, &write, Method::POST, "/api/feedback", Some(json!(fb))).await;

    // Listings: every row exactly once across pages, in Gorse's shapes.
    let listed = all_pages(&srv, &write, "/api/users", "Users").await;
    let mut keys: Vec<&str> = listed
        .iter()
        .map(|u| u["UserId"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    let mut want: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
    let listed = all_pages(&srv, &read, "/api/items", "Items").await;
    assert_eq!(listed.len(), 9);
    assert_eq!(listed[0]["ItemId"], "i0");
    assert_eq!(listed[0]["Categories"], json!(["tea"]));
    let listed = all_pages(&srv, &write, "/api/feedback", "Feedback").await;
    assert_eq!(listed.len(), 30);
    let likes = all_pages(&srv, &write, "/api/feedback/like", "Feedback").await;
    assert_eq!(likes.len(), 10);
    assert!(
        likes.iter().all(|f| f["FeedbackType"] == "like"),
        "{likes:?}"
    );
    // Users and feedback are personal data: a read key lists only the catalog.
    let (status, _) = call(&srv, &read, Method::GET, "/api/users", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&srv, &read, Method::GET, "/api/feedback", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&srv, &write, Method::GET, "/api/users?cursor=abc", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "cursor", "{body}");

    // PATCH changes what it names and keeps the rest.
    let (status, body) = call(
        &srv,
        &write,
        Method::PATCH,
        "/api/item/i1",
        Some(json!({"IsHidden": true, "Comment": "dark roast"})),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"RowAffected": 1})));
    let (_, body) = call(&srv, &read, Method::GET, "/api/item/i1", None).await;
    assert_eq!(body["IsHidden"], true, "{body}");
    assert_eq!(body["Comment"], "dark roast", "{body}");
    assert_eq!(body["Categories"], json!(["coffee"]), "{body}");
    let (status, body) = call(
        &srv,
        &write,
        Method::PATCH,
        "/api/item/i1",
        Some(json!({"Colour": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(
        &srv,
        &write,
        Method::PATCH,
        "/api/item/nope",
        Some(json!({"IsHidden": true})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &srv,
        &read,
        Method::PATCH,
        "/api/item/i1",
        Some(json!({"IsHidden": false})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Categories one at a time, and the popular and latest items of a category.
    let (status, _) = call(&srv, &write, Method::PUT, "/api/item/i2/category/tea", None).await;
    assert_eq!(status, StatusCode::OK);
    call(&srv, &write, Method::PUT, "/api/item/i2/category/tea", None).await;
    let (_, body) = call(&srv, &read, Method::GET, "/api/item/i2", None).await;
    assert_eq!(body["Categories"], json!(["coffee", "tea"]), "{body}");
    let (status, _) = call(
        &srv,
        &write,
        Method::DELETE,
        "/api/item/i2/category/coffee",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = call(&srv, &read, Method::GET, "/api/item/i2", None).await;
    assert_eq!(body["Categories"], json!(["tea"]), "{body}");
    for path in ["/api/popular/tea?n=9", "/api/latest/tea?n=9"] {
        let (status, body) = call(&srv, &read, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let mut got = ids(&body);
        got.sort();
        assert_eq!(got, ["i0", "i2", "i3", "i6"], "{path}: {body}");
    }
}

#[tokio::test]
async fn gorse_python_client() {
    let srv = start().await;
    let write = key(&srv, &[Scope::Write]).await;
    let python = tokio::task::spawn_blocking(|| crate::common::test_python("gorse", "pygorse"))
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/gorse_client.py");
    let (base, admin) = (srv.base.clone(), srv.admin_key.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("ENDPOINT", base)
            .env("KEY", write)
            .env("ADMIN_KEY", admin)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    assert_eq!(summary["ok"], true, "{summary}");
}
