//! Audiences over HTTP: users for items, a category or an expression; consent to marketing;
//! the size at a threshold; bad input.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, start, two_tastes};

/// The two-tastes world, a-items in category Alpha (and `season = "winter"` for a0..a4),
/// trained.
async fn world() -> TestServer {
    let srv = start().await;
    for i in 0..10 {
        let mut attributes = json!({});
        if i < 5 {
            attributes["season"] = json!("winter");
        }
        let (status, body) = srv
            .put(
                &format!("/v1/items/a{i}"),
                json!({ "categories": ["Alpha"], "attributes": attributes }),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    let (status, body) = srv
        .post("/v1/events", json!({ "events": two_tastes() }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    srv
}

fn users(body: &Value) -> Vec<String> {
    body["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_owned())
        .collect()
}

/// Even users are the a-cluster.
fn even(key: &str) -> bool {
    key[1..].parse::<u32>().unwrap() % 2 == 0
}

#[tokio::test]
async fn audiences_find_the_users_drawn_to_items_and_respect_consent() {
    let srv = world().await;
    let (s, body) = srv
        .post("/v1/audiences/query", json!({ "items": ["a3"], "n": 20 }))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let top = users(&body);
    assert_eq!(top.len(), 20);
    assert!(top.iter().all(|u| even(u)), "{body}");
    assert_eq!(body["scored_users"], 60, "{body}");
    assert_eq!(body["items_matched"], 1);
    let scores: Vec<f64> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{body}");
    let reason = &body["users"][0]["reasons"][0];
    assert_eq!(reason["item"], "a3", "{body}");

    // A category and an expression reach the same cluster.
    for q in [
        json!({ "category": "Alpha" }),
        json!({ "filter": "season = \"winter\"" }),
    ] {
        let (s, body) = srv.post("/v1/audiences/query", q.clone()).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let top: Vec<String> = users(&body).into_iter().take(20).collect();
        assert!(top.iter().all(|u| even(u)), "{q}: {body}");
    }

    // The size at a threshold: everyone at -inf-ish, fewer higher up.
    let size = |t: f64| {
        let srv = &srv;
        async move {
            let (_, body) = srv
                .post(
                    "/v1/audiences/query",
                    json!({ "items": ["a3"], "threshold": t }),
                )
                .await;
            body["size"]["users"].as_u64().unwrap()
        }
    };
    assert_eq!(size(-1e9).await, 60);
    let (low, high) = (size(0.0).await, size(scores[5]).await);
    assert!(high <= low && high >= 6, "{low} {high}");

    // Objecting to marketing, turning personalization off, or erasure: left out.
    let best = top[0].clone();
    let (status, body) = srv
        .put(
            &format!("/v1/users/{best}"),
            json!({ "consent": { "marketing": false } }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(body["consent"]["marketing"], false, "{body}");
    let second = top[1].clone();
    srv.put(
        &format!("/v1/users/{second}"),
        json!({ "consent": { "personalization": false } }),
    )
    .await;
    let third = top[2].clone();
    let (status, _) = srv.delete(&format!("/v1/users/{third}")).await;
    assert!(status.is_success());
    let (_, body) = srv
        .post("/v1/audiences/query", json!({ "items": ["a3"], "n": 60 }))
        .await;
    let now = users(&body);
    for gone in [&best, &second, &third] {
        assert!(!now.contains(gone), "{gone} is still in {body}");
    }
    assert_eq!(body["excluded"]["marketing"], 1, "{body}");
    assert_eq!(body["excluded"]["personalization"], 1, "{body}");
    assert_eq!(body["scored_users"], 57, "{body}");
    // The consent change is audited.
    let (_, audit) = srv.get("/v1/audit?limit=1000").await;
    assert!(audit.to_string().contains("\"marketing\":false"), "{audit}");
}

#[tokio::test]
async fn bad_audience_queries_name_the_field() {
    let srv = start().await;
    let got = srv
        .post("/v1/audiences/query", json!({ "items": ["x"] }))
        .await;
    assert_error(&got, StatusCode::CONFLICT, "no_model", None);
    let srv = world().await;
    let many: Vec<String> = (0..501).map(|i| format!("i{i}")).collect();
    for (body, field) in [
        (json!({}), "items"),
        (json!({ "items": many }), "items"),
        (json!({ "items": ["nope"] }), "items[0]"),
        (json!({ "items": ["a1"], "n": 0 }), "n"),
        (json!({ "category": "Nothing" }), "category"),
        (json!({ "filter": "season ==" }), "filter"),
    ] {
        let got = srv.post("/v1/audiences/query", body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field", Some(field));
    }
    let got = srv
        .post(
            "/v1/audiences/query",
            json!({ "items": ["a1"], "limit": 3 }),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_json", Some("limit"));
}

/// The same audience as CSV and JSONL, best first, threshold applied.
#[tokio::test]
async fn audiences_export_as_csv_and_jsonl() {
    let srv = world().await;
    let (_, json_body) = srv
        .post("/v1/audiences/query", json!({ "items": ["a3"], "n": 5 }))
        .await;
    let expected = users(&json_body);
    let (s, csv) = srv
        .post(
            "/v1/audiences/query",
            json!({ "items": ["a3"], "n": 5, "format": "csv" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{csv}");
    let csv = csv.as_str().expect("CSV text").to_owned();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "user,score");
    let got: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(got, expected);

    let (s, jsonl) = srv
        .post(
            "/v1/audiences/query",
            json!({ "items": ["a3"], "n": 5, "format": "jsonl" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let rows: Vec<Value> = jsonl
        .as_str()
        .expect("JSONL text")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["user"], expected[0].as_str());
    assert!(rows[0]["reason"].as_str().is_some(), "{rows:?}");

    // A threshold above the best score exports nobody.
    let top = json_body["users"][0]["score"].as_f64().unwrap();
    let (_, csv) = srv
        .post(
            "/v1/audiences/query",
            json!({ "items": ["a3"], "format": "csv", "threshold": top + 1.0 }),
        )
        .await;
    assert_eq!(csv.as_str().unwrap(), "user,score\n");

    let got = srv
        .post(
            "/v1/audiences/query",
            json!({ "items": ["a3"], "format": "xml" }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("format"),
    );
}
