use reqwest::StatusCode;
use serde_json::json;

use crate::common::{assert_error, start, start_with};

#[tokio::test]
async fn events_are_stored_and_listed_newest_first_with_pagination() {
    let srv = start().await;
    let events: Vec<_> = (0..7)
        .map(|i| json!({
            "event_id": format!("e{i}"), "user": "ann", "item": format!("i{i}"), "type": "rating",
            "value": 4.5, "timestamp": format!("2024-05-0{}T10:00:00Z", i + 1), "context": {"device": "ios"}
        }))
        .collect();
    let (status, body) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["received"], 7);
    assert_eq!(body["event_ids"][3], "e3");

    let (status, page) = srv.get("/v1/users/ann/events?limit=3").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e6", "e5", "e4"]);
    let first = &page["events"][0];
    assert_eq!(first["type"], "rating");
    assert_eq!(first["value"], 4.5);
    assert_eq!(first["timestamp"], "2024-05-07T10:00:00.000Z");
    assert_eq!(first["context"]["device"], "ios");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page2) = srv
        .get(&format!("/v1/users/ann/events?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(page2["events"][0]["event_id"], "e3");
    let cursor = page2["next_cursor"].as_str().unwrap().to_owned();
    let (_, page3) = srv
        .get(&format!("/v1/users/ann/events?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(page3["events"].as_array().unwrap().len(), 1);
    assert!(page3["next_cursor"].is_null());

    assert_error(
        &srv.get("/v1/users/nobody/events").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &srv.get("/v1/users/ann/events?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("limit"),
    );
    assert_error(
        &srv.get("/v1/users/ann/events?cursor=abc").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("cursor"),
    );
    assert_error(
        &srv.get("/v1/users/ann/events?limt=3").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("limt"),
    );
}

#[tokio::test]
async fn replays_are_idempotent_and_conflicts_change_nothing() {
    let srv = start().await;
    let batch = json!({ "events": [
        { "event_id": "a", "user": "u", "item": "x", "type": "view" },
        { "event_id": "b", "user": "u", "item": "y", "type": "purchase", "timestamp": "2024-01-01T00:00:00+01:00" }
    ]});
    let first = srv.post("/v1/events", batch.clone()).await;
    let replay = srv.post("/v1/events", batch).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first, replay, "a replay must get the same answer");
    let (_, page) = srv.get("/v1/users/u/events").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);

    // Same id, different payload: 409 naming the event, and the new event beside it is not kept.
    let conflict = srv
        .post(
            "/v1/events",
            json!({ "events": [
                { "event_id": "c", "user": "u", "item": "z", "type": "view" },
                { "event_id": "a", "user": "u", "item": "x", "type": "click" }
            ]}),
        )
        .await;
    assert_error(
        &conflict,
        StatusCode::CONFLICT,
        "event_conflict",
        Some("events[1].event_id"),
    );
    let (_, page) = srv.get("/v1/users/u/events").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(srv.counts().await["events"], 2);
}

#[tokio::test]
async fn bad_events_get_clear_errors_naming_the_field() {
    let srv = start_with(|s| {
        s.limits.max_batch_events = 3;
        s.limits.max_body_bytes = 4096;
    })
    .await;
    let cases = [
        (
            json!({ "events": [{ "user": "u", "item": "i" }] }),
            "invalid_json",
            "events[0]",
        ),
        (
            json!({ "events": [{ "user": "u", "item": "i", "type": "teleport" }] }),
            "invalid_field",
            "events[0].type",
        ),
        (
            json!({ "events": [{ "user": "u", "item": "i", "type": "rating" }] }),
            "invalid_field",
            "events[0].value",
        ),
        (
            json!({ "events": [{ "user": "", "item": "i", "type": "view" }] }),
            "invalid_field",
            "events[0].user",
        ),
        (
            json!({ "events": [{ "user": "u", "item": "a\u{0000}b", "type": "view" }] }),
            "invalid_field",
            "events[0].item",
        ),
        (
            json!({ "events": [{ "user": "u", "item": "i", "type": "view", "timestamp": "2024-05-01T10:00:00" }] }),
            "invalid_field",
            "events[0].timestamp",
        ),
        (
            json!({ "events": [{ "user": "u", "item": "i", "type": "view", "timestamp": "1970-01-01T00:00:00Z" }] }),
            "invalid_field",
            "events[0].timestamp",
        ),
        (
            json!({ "events": [{ "user": "u", "item": "i", "type": "view", "timestamp": "9999-12-31T00:00:00Z" }] }),
            "invalid_field",
            "events[0].timestamp",
        ),
        (
            json!({ "events": [{ "user": "u", "item": "i", "type": "view", "colour": "red" }] }),
            "invalid_json",
            "events[0].colour",
        ),
        (
            json!({ "events": [{ "user": "u", "item": "i", "type": "view", "value": "high" }] }),
            "invalid_json",
            "events[0].value",
        ),
        (json!({ "events": [] }), "invalid_field", "events"),
        (
            json!({ "events": [
            { "user": "u", "item": "i", "type": "view" }, { "user": "u", "item": "i", "type": "view" },
            { "user": "u", "item": "i", "type": "view" }, { "user": "u", "item": "i", "type": "view" }] }),
            "invalid_field",
            "events",
        ),
        (
            json!([{ "user": "u", "item": "i", "type": "view" }]),
            "invalid_json",
            "",
        ),
    ];
    for (body, code, field) in cases {
        let got = srv.post("/v1/events", body.clone()).await;
        let field = (!field.is_empty()).then_some(field);
        assert_error(&got, StatusCode::BAD_REQUEST, code, field);
    }
    assert_error(
        &srv.post_raw("/v1/events", "text/plain", b"{}".to_vec())
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        Some("Content-Type"),
    );
    assert_error(
        &srv.post_raw("/v1/events", "application/json", b"{\"events\": [".to_vec())
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
    );
    let huge = format!(
        "{{\"events\": [{{\"user\": \"{}\", \"item\": \"i\", \"type\": \"view\"}}]}}",
        "u".repeat(5000)
    );
    assert_error(
        &srv.post_raw("/v1/events", "application/json", huge.into_bytes())
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    );
    // Nothing was stored by any of these, and the server is still up.
    assert_eq!(srv.counts().await["events"], 0);
}

#[tokio::test]
async fn unknown_users_and_items_are_refused_when_creation_is_off() {
    let srv = start_with(|s| {
        s.events.create_missing_users = false;
        s.events.create_missing_items = false;
    })
    .await;
    let got = srv
        .post(
            "/v1/events",
            json!({ "events": [{ "user": "ghost", "item": "i", "type": "view" }] }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::NOT_FOUND,
        "unknown_user",
        Some("events[0].user"),
    );
    assert_eq!(
        srv.put("/v1/users/ghost", json!({})).await.0,
        StatusCode::CREATED
    );
    let got = srv
        .post(
            "/v1/events",
            json!({ "events": [{ "user": "ghost", "item": "i", "type": "view" }] }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::NOT_FOUND,
        "unknown_item",
        Some("events[0].item"),
    );
    assert_eq!(
        srv.put("/v1/items/i", json!({})).await.0,
        StatusCode::CREATED
    );
    let got = srv
        .post(
            "/v1/events",
            json!({ "events": [{ "user": "ghost", "item": "i", "type": "view" }] }),
        )
        .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

#[tokio::test]
async fn concurrent_clients_all_get_their_events_stored_once() {
    let srv = std::sync::Arc::new(start().await);
    let mut tasks = Vec::new();
    for c in 0..16 {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..5 {
                let events: Vec<_> = (0..20)
                    .map(|i| json!({ "event_id": format!("c{c}-b{b}-{i}"), "user": format!("u{c}"), "item": format!("i{i}"), "type": "click" }))
                    .collect();
                let body = json!({ "events": events });
                // Every batch is sent twice; the second is a replay.
                for _ in 0..2 {
                    let (status, resp) = srv.post("/v1/events", body.clone()).await;
                    assert_eq!(status, StatusCode::OK, "{resp}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(srv.counts().await["events"], 16 * 5 * 20);
    let (_, metrics) = srv.get("/metrics").await;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("bespoke_events_stored_total 1600\n"),
        "{text}"
    );
    assert!(
        text.contains("bespoke_events_duplicate_total 1600\n"),
        "{text}"
    );
}

/// `DELETE /v1/users/{key}/events?item=`: the user's events on one item leave the store and
/// serving at once (history, popularity, hides by event), impressions stay, and a restart
/// (serving rebuilt from the store) answers exactly as the live state did.
#[tokio::test]
async fn deleting_a_users_events_on_an_item_reaches_serving_and_survives_a_restart() {
    let srv = start().await;
    let mut events = vec![
        ("u1", "x", "like"),
        ("u1", "x", "like"),
        ("u1", "x", "view"),
        ("u1", "h", "not_interested"),
        ("u1", "y", "view"),
    ];
    for u in ["u2", "u3", "u4", "u5"] {
        events.extend([(u, "x", "like"), (u, "h", "purchase"), (u, "z", "view")]);
    }
    srv.events(&events).await;
    let (st, body) = srv
        .post(
            "/v1/impressions",
            json!({ "impressions": [{ "user": "u1", "items": ["y", "z"] }] }),
        )
        .await;
    assert!(st.is_success(), "{body}");
    let score = |body: &serde_json::Value, item: &str| {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["item"] == item)
            .map(|i| i["score"].as_f64().unwrap())
    };
    let (_, popular) = srv.get("/v1/popular?n=10").await;
    let x_before = score(&popular, "x").expect("x is popular");
    let (_, recs) = srv.get("/v1/users/u1/recommendations?n=10").await;
    let recs_before = crate::common::keys(&recs);
    assert!(
        !recs_before.contains(&"h".to_owned()),
        "h is hidden: {recs}"
    );
    let events_before = srv.counts().await["events"].as_u64().unwrap();

    // One type: the two likes go, the view stays.
    let (st, body) = srv.delete("/v1/users/u1/events?item=x&type=like").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "user": "u1", "item": "x", "deleted": 2 }));
    let (_, popular) = srv.get("/v1/popular?n=10").await;
    assert!(
        score(&popular, "x").unwrap() < x_before,
        "x's popularity kept the deleted likes: {popular}"
    );
    assert_eq!(
        srv.counts().await["events"].as_u64().unwrap(),
        events_before - 2
    );
    let (_, page) = srv.get("/v1/users/u1/events?limit=50").await;
    let kinds: Vec<(&str, &str)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["item"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .filter(|(i, _)| *i == "x")
        .collect();
    assert_eq!(kinds, [("x", "view")]);

    // Every type: the not_interested event goes, and with it the hide.
    let (st, body) = srv.delete("/v1/users/u1/events?item=h").await;
    assert_eq!((st, body["deleted"].clone()), (StatusCode::OK, json!(1)));
    let (_, recs) = srv.get("/v1/users/u1/recommendations?n=10").await;
    assert!(
        crate::common::keys(&recs).contains(&"h".to_owned()),
        "h is neither seen nor hidden any more: {recs}"
    );
    // Impressions are not feedback: deleting y's events keeps the impression.
    let (_, body) = srv.delete("/v1/users/u1/events?item=y").await;
    assert_eq!(body["deleted"], 1);
    let (_, page) = srv.get("/v1/users/u1/events?limit=50").await;
    assert!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["item"] == "y" && e["type"] == "impression"),
        "{page}"
    );
    // Idempotent; unknown keys delete nothing.
    for path in [
        "/v1/users/u1/events?item=h",
        "/v1/users/nobody/events?item=x",
        "/v1/users/u1/events?item=nothing",
    ] {
        let (st, body) = srv.delete(path).await;
        assert_eq!(
            (st, body["deleted"].clone()),
            (StatusCode::OK, json!(0)),
            "{path}"
        );
    }
    // Bad input names the parameter.
    for (path, field) in [
        ("/v1/users/u1/events", "item"),
        ("/v1/users/u1/events?item=", "item"),
        ("/v1/users/u1/events?item=x&type=", "type"),
        ("/v1/users/u1/events?item=x&kind=like", "kind"),
    ] {
        assert_error(
            &srv.delete(path).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }

    // What serving holds equals what a restart rebuilds from the store.
    let (_, popular) = srv.get("/v1/popular?n=10").await;
    let (_, recs) = srv.get("/v1/users/u1/recommendations?n=10").await;
    let counts = srv.counts().await;
    let dir = srv.stop().await;
    let srv = crate::common::start_in(dir, |_| {}).await;
    assert_eq!(
        srv.get("/v1/popular?n=10").await.1["items"],
        popular["items"]
    );
    assert_eq!(
        srv.get("/v1/users/u1/recommendations?n=10").await.1["items"],
        recs["items"]
    );
    assert_eq!(srv.counts().await, counts);
}
