use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, keys, start};

#[tokio::test]
async fn users_are_created_replaced_read_and_deleted_with_their_events() {
    let srv = start().await;
    let (status, user) = srv
        .put("/v1/users/ann", json!({ "attributes": { "plan": "pro", "age": 31 }, "consent": { "personalization": false } }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["key"], "ann");
    assert_eq!(user["attributes"]["plan"], "pro");
    assert_eq!(user["consent"]["personalization"], false);

    let (status, user) = srv
        .put("/v1/users/ann", json!({ "attributes": { "plan": "free" } }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        user["attributes"],
        json!({ "plan": "free" }),
        "attributes are replaced"
    );
    assert_eq!(
        user["consent"]["personalization"], false,
        "consent not given is kept"
    );
    let (status, got) = srv.get("/v1/users/ann").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, user);

    srv.events(&[
        ("ann", "a", "view"),
        ("ann", "b", "purchase"),
        ("bob", "a", "view"),
    ])
    .await;
    let (status, del) = srv.delete("/v1/users/ann").await;
    assert_eq!(status, StatusCode::OK, "{del}");
    assert_eq!(del["events_deleted"], 2);
    assert_error(
        &srv.get("/v1/users/ann").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &srv.delete("/v1/users/ann").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &srv.get("/v1/users/ann/events").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    // Serving forgot the user's events at once: only bob's view of `a` counts now.
    let (_, popular) = srv.get("/v1/popular").await;
    assert_eq!(keys(&popular), ["a"]);
    assert_eq!(popular["items"][0]["score"], 1.0);
    let health = srv.counts().await;
    assert_eq!(
        (health["users"].as_u64(), health["events"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn user_bodies_are_validated() {
    let srv = start().await;
    assert_error(
        &srv.put(
            "/v1/users/u",
            json!({ "consent": { "personalisation": true } }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        Some("consent.personalisation"),
    );
    assert_error(
        &srv.put("/v1/users/u", json!({ "attributes": [1, 2] }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        Some("attributes"),
    );
    assert_error(
        &srv.get("/v1/users/a%00b").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("key"),
    );
    assert_error(
        &srv.get(&format!("/v1/users/{}", "k".repeat(257))).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("key"),
    );
    assert_error(
        &srv.get("/v1/users/%FF%FE").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("key"),
    );
}

#[tokio::test]
async fn items_round_trip_with_embeddings_of_fixed_dimension() {
    let srv = start().await;
    let body = json!({
        "categories": ["books", "sci-fi"],
        "text": { "title": "Dune", "description": "Spice and sand" },
        "numeric": { "price": 9.99 },
        "attributes": { "author": "Herbert" },
        "embeddings": { "text": [0.25, -0.5, 1.0] }
    });
    let (status, item) = srv.put("/v1/items/dune", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{item}");
    assert_eq!(item["available"], true);
    assert_eq!(item["embeddings"]["text"], json!([0.25, -0.5, 1.0]));
    let (status, got) = srv.get("/v1/items/dune").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["categories"], json!(["books", "sci-fi"]));
    assert_eq!(got["text"]["title"], "Dune");
    assert_eq!(got["numeric"]["price"], 9.99);

    let wrong = srv
        .put(
            "/v1/items/other",
            json!({ "embeddings": { "text": [1.0, 2.0] } }),
        )
        .await;
    assert_error(
        &wrong,
        StatusCode::UNPROCESSABLE_ENTITY,
        "dimension_mismatch",
        Some("embeddings.text"),
    );
    assert_error(
        &srv.get("/v1/items/other").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &srv.put("/v1/items/x", json!({ "embeddings": { "img": [] } }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("embeddings.img"),
    );
    assert_error(
        &srv.put("/v1/items/x", json!({ "embeddings": { "img": [1e39] } }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("embeddings.img[0]"),
    );
    assert_error(
        &srv.put("/v1/items/x", json!({ "categories": [""] })).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("categories[0]"),
    );
    assert_error(
        &srv.put("/v1/items/x", json!({ "price": 3 })).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        Some("price"),
    );
    assert_error(
        &srv.put("/v1/items/x", json!({ "available": "yes" })).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        Some("available"),
    );

    srv.events(&[("u", "dune", "view"), ("u", "x2", "view")])
        .await;
    let (status, del) = srv.delete("/v1/items/dune").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(del["events_deleted"], 1);
    assert_error(
        &srv.get("/v1/items/dune").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &srv.get("/v1/items/dune/similar").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &srv.delete("/v1/items/dune").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let (_, popular) = srv.get("/v1/popular").await;
    assert_eq!(keys(&popular), ["x2"]);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let srv = start().await;
    srv.put("/v1/items/a", json!({ "categories": ["c1"] }))
        .await;
    srv.put(
        "/v1/users/quiet",
        json!({ "consent": { "personalization": false } }),
    )
    .await;
    srv.events(&[
        ("u1", "a", "purchase"),
        ("u2", "a", "view"),
        ("u2", "b", "view"),
        ("quiet", "b", "view"),
    ])
    .await;
    let (_, before_pop) = srv.get("/v1/popular?category=c1").await;
    let (_, before_rec) = srv.get("/v1/users/u1/recommendations").await;
    let (_, before_quiet) = srv.get("/v1/users/quiet/recommendations").await;
    let dir = srv.stop().await;
    let srv = crate::common::start_in(dir, |_| {}).await;
    assert_eq!(srv.get("/v1/popular?category=c1").await.1, before_pop);
    assert_eq!(srv.get("/v1/users/u1/recommendations").await.1, before_rec);
    let (_, quiet) = srv.get("/v1/users/quiet/recommendations").await;
    assert_eq!(quiet, before_quiet);
    assert_eq!(quiet["personalized"], false);
    assert_eq!(srv.counts().await["events"], 4);
}
