//! Issue 23, findings 1, 4 and 5: what a `write` key can make the server hold or learn.
//! Implicitly created decision loops are bounded and audited, rewards are bounded per loop and
//! cannot poison a learner, and one event cannot dominate popularity.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, client_with_key, keys, start_with};

async fn write_key(srv: &TestServer) -> (reqwest::Client, String) {
    let (status, body) = srv
        .post(
            "/v1/keys",
            json!({ "name": "backend", "scopes": ["write"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        client_with_key(body["key"].as_str().unwrap()),
        body["prefix"].as_str().unwrap().to_owned(),
    )
}

async fn send(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let resp = client.post(url).json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A two-action decision in loop `name`, sent with `client`'s key.
async fn decide(srv: &TestServer, client: &reqwest::Client, name: &str) -> (StatusCode, Value) {
    let decision = json!({"actions": [{"id": "a"}, {"id": "b"}]});
    send(
        client,
        format!("{}/v1/loops/{name}/decisions", srv.base),
        decision,
    )
    .await
}

/// Finding 1: `POST /v1/loops/flood-$i/decisions` created a loop per request (≈ 3.3 MB each),
/// unbounded and unaudited.
#[tokio::test]
async fn issue_23_decisions_cannot_create_loops_without_bound_or_audit() {
    let srv = start_with(|s| s.decisions.max_loops = 5).await;
    let (client, prefix) = write_key(&srv).await;
    for i in 0..5 {
        let (status, body) = decide(&srv, &client, &format!("flood-{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = decide(&srv, &client, "flood-5").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "too_many_loops");
    assert_eq!(body["error"]["field"], "loop");
    // An admin cannot pass the bound either; existing loops keep working.
    assert_error(
        &srv.put("/v1/loops/flood-6", json!({})).await,
        StatusCode::CONFLICT,
        "too_many_loops",
        Some("loop"),
    );
    let (status, body) = decide(&srv, &client, "flood-0").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The Personalizer-compatible loop is reserved: it is not counted and still works.
    let (status, body) = send(
        &client,
        format!("{}/personalizer/v1.0/rank", srv.base),
        json!({"actions": [{"id": "a"}, {"id": "b"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, loops) = srv.get("/v1/loops").await;
    assert_eq!(loops["loops"].as_array().unwrap().len(), 6, "{loops}");

    // Every creation is audited with the acting key's prefix.
    let (_, audit) = srv.get("/v1/audit").await;
    let created: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "loop.create")
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(created.len(), 6, "{audit}");
    assert!(
        created.contains(&(prefix.as_str(), "flood-4")),
        "{created:?}"
    );
    assert!(created.contains(&(prefix.as_str(), "personalizer")));

    // A loop that only decides holds no learner tables (allocated by the first reward).
    assert!(
        srv.engine()
            .decisions()
            .model_bytes("flood-1")
            .unwrap()
            .len()
            < 64
    );
}

#[tokio::test]
async fn issue_23_loops_can_be_explicit_only() {
    let srv = start_with(|s| s.decisions.auto_create_loops = false).await;
    let (client, _) = write_key(&srv).await;
    let (status, body) = decide(&srv, &client, "banner").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "unknown_loop");
    let (_, loops) = srv.get("/v1/loops").await;
    assert_eq!(loops["loops"], json!([]));
    // An admin creates it; then decisions work. Personalizer's loop needs no creation.
    let (status, body) = srv.put("/v1/loops/banner", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = decide(&srv, &client, "banner").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = send(
        &client,
        format!("{}/personalizer/v1.0/rank", srv.base),
        json!({"actions": [{"id": "a"}, {"id": "b"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// One decision in loop `edge` whose choice is forced by excluding the other action.
async fn forced(srv: &TestServer, action: &str) -> String {
    let other = if action == "good" { "bad" } else { "good" };
    let (status, d) = srv
        .post(
            "/v1/loops/edge/decisions",
            json!({
                "context": {"device": "mobile"},
                "actions": [{"id": "good", "features": {"tone": "warm"}},
                            {"id": "bad", "features": {"tone": "cold"}}],
                "exclude": [other],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    assert_eq!(d["ranking"][0]["action"], action);
    d["decision_id"].as_str().unwrap().to_owned()
}

/// Finding 4: rewards of 1e308, -1e308 and 1e300 were learned; the loop then predicted 0.0
/// for both actions for ever.
#[tokio::test]
async fn issue_23_huge_rewards_are_refused_and_edge_rewards_do_not_poison_the_loop() {
    let srv = start_with(|_| {}).await;
    let mut ids = Vec::new();
    for (i, huge) in [1e308, -1e308, 1e300].into_iter().enumerate() {
        let id = forced(&srv, if i % 2 == 0 { "good" } else { "bad" }).await;
        assert_error(
            &srv.post(
                &format!("/v1/decisions/{id}/reward"),
                json!({"value": huge}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("value"),
        );
        ids.push(id);
    }
    // Just outside the default range [-1, 1] is refused too; Personalizer's route as well.
    assert_error(
        &srv.post(
            &format!("/v1/decisions/{}/reward", ids[0]),
            json!({"value": 1.5}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("value"),
    );
    assert_error(
        &srv.post(
            &format!("/personalizer/v1.0/events/{}/reward", ids[0]),
            json!({"value": -2.0}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("value"),
    );
    let (_, view) = srv.get("/v1/loops/edge").await;
    assert_eq!(view["model_updates"], 0, "{view}");
    assert_eq!(view["config"]["reward_range"], json!([-1.0, 1.0]));

    // The same decisions get rewards at the edges of the range (the worst the range allows:
    // each contradicts the next)...
    for (id, edge) in ids.iter().zip([-1.0, 1.0, -1.0]) {
        let (status, ack) = srv
            .post(
                &format!("/v1/decisions/{id}/reward"),
                json!({"value": edge}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["learned"], true);
    }
    // ... then 30 normal rewards: `good` earns 1, `bad` 0.
    for i in 0..30 {
        let (action, value) = if i % 2 == 0 {
            ("good", 1.0)
        } else {
            ("bad", 0.0)
        };
        let id = forced(&srv, action).await;
        let (status, ack) = srv
            .post(
                &format!("/v1/decisions/{id}/reward"),
                json!({"value": value}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{ack}");
    }
    let (status, d) = srv
        .post(
            "/v1/loops/edge/decisions",
            json!({
                "context": {"device": "mobile"},
                "actions": [{"id": "good", "features": {"tone": "warm"}},
                            {"id": "bad", "features": {"tone": "cold"}}],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    let field = |action: &str, what: &str| -> f64 {
        let (list, key) = if what == "probability" {
            (&d["ranking"], "action")
        } else {
            (&d["explanation"]["actions"], "action")
        };
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r[key] == action)
            .unwrap()[what]
            .as_f64()
            .unwrap()
    };
    let (good, bad) = (field("good", "predicted"), field("bad", "predicted"));
    assert!(good.is_finite() && bad.is_finite(), "{d}");
    assert!(
        good > 0.7 && bad < 0.3,
        "predicted good {good}, bad {bad}: {d}"
    );
    let (pg, pb) = (field("good", "probability"), field("bad", "probability"));
    assert!(
        pg > 0.8 && pg > pb,
        "probabilities good {pg}, bad {pb}: {d}"
    );
}

#[tokio::test]
async fn issue_23_reward_ranges_are_per_loop_and_validated() {
    let srv = start_with(|_| {}).await;
    assert_error(
        &srv.put("/v1/loops/rev", json!({"reward_range": [5.0, 1.0]}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("reward_range"),
    );
    assert_error(
        &srv.put("/v1/loops/rev", json!({"default_reward": 3.0}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("default_reward"),
    );
    let (status, body) = srv
        .put("/v1/loops/rev", json!({"reward_range": [0.0, 100.0]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, d) = srv
        .post(
            "/v1/loops/rev/decisions",
            json!({"actions": [{"id": "a"}, {"id": "b"}], "slots": 2}),
        )
        .await;
    let id = d["decision_id"].as_str().unwrap();
    let (status, ack) = srv
        .post(
            &format!("/v1/decisions/{id}/reward"),
            json!({"value": 42.0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_error(
        &srv.post(
            &format!("/v1/decisions/{id}/reward"),
            json!({"value": -1.0, "slot": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("value"),
    );
}

/// Finding 5: one `{"type": "rating", "value": 1e12}` put its item first in `/v1/popular` for
/// everyone.
#[tokio::test]
async fn issue_23_one_event_cannot_dominate_popularity() {
    let srv = start_with(|_| {}).await;
    let (client, _) = write_key(&srv).await;
    let (status, body) = send(
        &client,
        format!("{}/v1/events", srv.base),
        json!({"events": [
            {"user": "u0", "item": "shared", "type": "view"},
            {"user": "mallory", "item": "pushed", "type": "rating", "value": 1e12},
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "events[1].value", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events.value_range"),
        "{body}"
    );
    // The batch is refused whole.
    assert_eq!(srv.counts().await["events"], 0);

    // Eleven users view `shared`; one user gives `pushed` the highest rating allowed, twice
    // over in one batch and again in another: each event weighs at most events.max_weight.
    let mut events: Vec<Value> = (0..11)
        .map(|u| json!({"user": format!("u{u}"), "item": "shared", "type": "view"}))
        .collect();
    events.push(json!({"user": "mallory", "item": "pushed", "type": "rating", "value": 10.0}));
    let (status, body) = send(
        &client,
        format!("{}/v1/events", srv.base),
        json!({ "events": events }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, popular) = srv.get("/v1/popular").await;
    assert_eq!(status, StatusCode::OK, "{popular}");
    assert_eq!(keys(&popular)[0], "shared", "{popular}");
    let top = popular["items"][0]["score"].as_f64().unwrap();
    assert!(top <= 11.0 + 1e-9, "{popular}");
}

#[tokio::test]
async fn issue_23_item_categories_are_bounded() {
    let srv = start_with(|s| s.limits.max_categories = 3).await;
    let (status, body) = srv
        .put("/v1/items/i1", json!({"categories": ["a", "b"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Replacing an item's categories with new ones would grow the in-memory map for ever.
    assert_error(
        &srv.put("/v1/items/i1", json!({"categories": ["c", "d"]}))
            .await,
        StatusCode::CONFLICT,
        "too_many_categories",
        Some("categories"),
    );
    let (status, body) = srv
        .put("/v1/items/i2", json!({"categories": ["a", "c"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
