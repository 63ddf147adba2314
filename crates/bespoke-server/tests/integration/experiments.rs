//! Experiments over HTTP: create, start, serve variants by a stable hash, record exposures,
//! report, stop; bad input; fallback to the control; erasure of exposures.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, keys, start, two_tastes};

/// The two-tastes world with a-items in category Alpha and b-items in Beta.
async fn world() -> TestServer {
    let srv = start().await;
    for (prefix, category) in [("a", "Alpha"), ("b", "Beta")] {
        for i in 0..10 {
            let (s, body) = srv
                .put(
                    &format!("/v1/items/{prefix}{i}"),
                    json!({ "categories": [category] }),
                )
                .await;
            assert!(s.is_success(), "{body}");
        }
    }
    let (s, body) = srv
        .post("/v1/events", json!({ "events": two_tastes() }))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    srv
}

fn alpha_test() -> Value {
    json!({
        "description": "Only Alpha items for half the users",
        "variants": [
            { "name": "control" },
            { "name": "alpha", "config": { "filter": "category in [\"Alpha\"]" } }
        ],
        "metrics": [
            { "kind": "conversion", "name": "purchasers", "event": "purchase" },
            { "kind": "revenue", "name": "revenue", "event": "purchase" },
            { "kind": "ratio", "name": "ctr", "numerator": "click", "denominator": "impression" }
        ]
    })
}

fn variant(body: &Value) -> String {
    body["experiments"][0]["variant"]
        .as_str()
        .unwrap_or_else(|| panic!("no variant in {body}"))
        .to_owned()
}

#[tokio::test]
async fn an_experiment_serves_stable_variants_and_reports_the_effect() {
    let srv = world().await;
    let (s, body) = srv.put("/v1/experiments/alpha-only", alpha_test()).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "draft");
    // A draft serves nothing.
    let (_, body) = srv.get("/v1/users/u1/recommendations").await;
    assert!(body.get("experiments").is_none(), "{body}");

    let (s, body) = srv
        .post("/v1/experiments/alpha-only/start", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "running");

    let mut arms = std::collections::HashMap::new();
    for u in 0..60 {
        let path = format!("/v1/users/u{u}/recommendations?n=5");
        let (s, body) = srv.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v = variant(&body);
        // The same user gets the same variant every time.
        let (_, again) = srv.get(&path).await;
        assert_eq!(variant(&again), v);
        if v == "alpha" {
            assert!(
                keys(&body).iter().all(|k| k.starts_with('a')),
                "the alpha variant's filter applies: {body}"
            );
        } else if u % 2 == 1 {
            // Odd users like b-items; the control leaves them be.
            assert!(keys(&body).iter().any(|k| k.starts_with('b')), "{body}");
        }
        arms.insert(format!("u{u}"), v);
        // The alpha users buy; the control users do not.
        let (kind, value) = if arms[&format!("u{u}")] == "alpha" {
            ("purchase", 10.0)
        } else {
            ("view", 1.0)
        };
        let (s, body) = srv
            .post(
                "/v1/events",
                json!({ "events": [{ "user": format!("u{u}"), "item": "a1", "type": kind, "value": value }] }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let alpha = arms.values().filter(|v| *v == "alpha").count();
    assert!(
        (15..=45).contains(&alpha),
        "a 50/50 split, got {alpha} of 60"
    );

    let (s, report) = srv.get("/v1/experiments/alpha-only/report").await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["users"], 60, "{report}");
    let by_name = |name: &str| {
        report["variants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["variant"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("alpha")["users"], alpha as u64, "{report}");
    assert_eq!(by_name("control")["users"], (60 - alpha) as u64);
    assert_eq!(by_name("alpha")["served"], (2 * alpha) as u64);
    assert_eq!(report["srm"]["alarm"], false, "{report}");
    let metrics = &report["comparisons"][0]["metrics"];
    assert_eq!(metrics[0]["metric"], "purchasers");
    assert_eq!(metrics[0]["control"], 0.0, "{report}");
    assert_eq!(metrics[0]["treatment"], 1.0, "{report}");
    assert_eq!(metrics[1]["effect"], 10.0, "{report}");
    assert_eq!(metrics[0]["significant"], true, "{report}");
    assert!(
        metrics[0]["p_value_holm"].as_f64().unwrap() >= metrics[0]["p_value"].as_f64().unwrap()
    );
    assert!(
        metrics[0]["sequential"]["always_valid_p"]
            .as_f64()
            .is_some()
    );
    // No impressions: the ratio has a zero denominator and says so instead of a number.
    assert!(metrics[2]["effect"].is_null(), "{report}");
    assert!(metrics[2]["note"].as_str().is_some(), "{report}");

    // A running experiment cannot change; a second on the same route needs another layer.
    let got = srv.put("/v1/experiments/alpha-only", alpha_test()).await;
    assert_error(
        &got,
        StatusCode::CONFLICT,
        "experiment_conflict",
        Some("status"),
    );
    let (s, _) = srv.put("/v1/experiments/second", alpha_test()).await;
    assert_eq!(s, StatusCode::CREATED);
    let got = srv.post("/v1/experiments/second/start", json!({})).await;
    assert_error(
        &got,
        StatusCode::CONFLICT,
        "experiment_conflict",
        Some("layer"),
    );

    // Erasing a user erases their exposure.
    let (s, body) = srv.delete("/v1/users/u3").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, report) = srv.get("/v1/experiments/alpha-only/report").await;
    assert_eq!(report["users"], 59, "{report}");

    // Stopped: requests are served as sent again, and the change is audited.
    let (s, body) = srv.post("/v1/experiments/alpha-only/stop", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "stopped");
    let (_, body) = srv.get("/v1/users/u1/recommendations").await;
    assert!(body.get("experiments").is_none(), "{body}");
    let (_, audit) = srv.get("/v1/audit?limit=50").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["experiment.put", "experiment.start", "experiment.stop"] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
}

#[tokio::test]
async fn experiments_reject_bad_definitions_naming_the_field() {
    let srv = world().await;
    let mut zero = alpha_test();
    zero["variants"][0]["weight"] = json!(0);
    zero["variants"][1]["weight"] = json!(0);
    let got = srv.put("/v1/experiments/x", zero).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("variants"),
    );

    let mut negative = alpha_test();
    negative["variants"][1]["weight"] = json!(-1);
    let got = srv.put("/v1/experiments/x", negative).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("variants[1].weight"),
    );

    let mut unknown = alpha_test();
    unknown["metrics"][0]["event"] = json!("purchased_twice");
    let got = srv.put("/v1/experiments/x", unknown).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("metrics[0].event"),
    );

    let mut bad_filter = alpha_test();
    bad_filter["variants"][1]["config"]["filter"] = json!("category in [");
    let got = srv.put("/v1/experiments/x", bad_filter).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("variants[1].config.filter"),
    );

    let mut bad_model = alpha_test();
    bad_model["variants"][1]["config"] = json!({ "model": "magic" });
    let got = srv.put("/v1/experiments/x", bad_model).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("variants[1].config.model"),
    );

    let got = srv
        .put(
            "/v1/experiments/x",
            json!({ "variants": [{ "name": "only" }] }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("variants"),
    );

    let mut holdout = alpha_test();
    holdout["holdout"] = json!(1.5);
    let got = srv.put("/v1/experiments/x", holdout).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("holdout"),
    );

    let got = srv.post("/v1/experiments/nothing/start", json!({})).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
    let (_, list) = srv.get("/v1/experiments").await;
    assert_eq!(list["experiments"], json!([]), "nothing was stored: {list}");
}

#[tokio::test]
async fn a_variant_that_cannot_apply_falls_back_to_the_request_and_is_counted() {
    let srv = world().await;
    // Promoting into slot 5 cannot apply to a list of 2: those requests fall back.
    let spec = json!({
        "variants": [
            { "name": "control", "weight": 0 },
            { "name": "promo", "config": { "promote": [{ "slot": 5, "if": "category in [\"Beta\"]" }] } }
        ],
        "holdout": 0.0,
        "layer": "promotions"
    });
    let (s, body) = srv.put("/v1/experiments/promo", spec).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = srv.post("/v1/experiments/promo/start", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let (s, body) = srv.get("/v1/users/u0/recommendations?n=2").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["experiments"][0]["variant"], "promo", "{body}");
    assert_eq!(body["experiments"][0]["fallback"], true, "{body}");
    assert_eq!(keys(&body).len(), 2);
    // With room for slot 5 the promotion applies.
    let (_, body) = srv.get("/v1/users/u0/recommendations?n=6").await;
    assert!(body["experiments"][0].get("fallback").is_none(), "{body}");
    assert!(
        keys(&body)[4].starts_with('b'),
        "slot 5 holds a Beta item: {body}"
    );

    // The app echoes the variant with the impressions of the list it showed.
    let (s, body) = srv
        .post(
            "/v1/impressions",
            json!({ "impressions": [{ "user": "u0", "items": keys(&body),
                     "experiments": body["experiments"].clone() }] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, events) = srv.get("/v1/users/u0/events?limit=1").await;
    assert_eq!(
        events["events"][0]["context"]["experiments"][0],
        json!({ "experiment": "promo", "variant": "promo" }),
        "{events}"
    );
    let bad = srv
        .post(
            "/v1/impressions",
            json!({ "impressions": [{ "user": "u0", "items": ["a1"],
                     "experiments": [{ "experiment": "", "variant": "x" }] }] }),
        )
        .await;
    assert_error(
        &bad,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("impressions[0].experiments[0].experiment"),
    );

    let (_, report) = srv.get("/v1/experiments/promo/report").await;
    let promo = &report["variants"][1];
    assert_eq!(promo["variant"], "promo", "{report}");
    assert_eq!(promo["fallbacks"], 1, "{report}");
    assert_eq!(promo["served"], 2, "{report}");
}

#[tokio::test]
async fn interleaving_credits_clicks_to_the_ranker_that_gave_the_item() {
    let srv = world().await;
    let spec = json!({
        "mode": "interleave",
        "variants": [
            { "name": "beta", "config": { "filter": "category in [\"Beta\"]" } },
            { "name": "alpha", "config": { "filter": "category in [\"Alpha\"]" } }
        ]
    });
    let (s, body) = srv.put("/v1/experiments/drafted", spec).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = srv.post("/v1/experiments/drafted/start", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    for u in 0..40 {
        let (s, body) = srv
            .get(&format!("/v1/users/u{u}/recommendations?n=6"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let served = &body["experiments"][0];
        assert_eq!(served["variant"], "interleaved", "{body}");
        let items = keys(&body);
        let teams: Vec<&str> = served["teams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(teams.len(), items.len(), "{body}");
        // Each item came from the ranker whose filter it passes; both rankers contribute.
        for (item, team) in items.iter().zip(&teams) {
            let expected = if item.starts_with('a') {
                "alpha"
            } else {
                "beta"
            };
            assert_eq!(*team, expected, "{body}");
        }
        assert!(
            teams.contains(&"alpha") && teams.contains(&"beta"),
            "{body}"
        );
        // Every user clicks an Alpha item of the list.
        let clicked = items.iter().find(|k| k.starts_with('a')).unwrap();
        let (s, body) = srv
            .post(
                "/v1/events",
                json!({ "events": [{ "user": format!("u{u}"), "item": clicked, "type": "click" }] }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (s, report) = srv.get("/v1/experiments/drafted/report").await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let il = &report["interleaving"];
    assert_eq!(il["users"], 40, "{report}");
    assert_eq!(il["wins"]["alpha"], 40, "{report}");
    assert_eq!(il["wins"]["beta"], 0, "{report}");
    assert_eq!(il["preferred"], "alpha", "{report}");
    assert!(il["p_value"].as_f64().unwrap() < 1e-6, "{report}");
    assert!(report["srm"].is_null(), "{report}");

    // Interleaving takes the whole route: another experiment cannot start beside it.
    let (s, _) = srv.put("/v1/experiments/other", alpha_test()).await;
    assert_eq!(s, StatusCode::CREATED);
    let mut layered = alpha_test();
    layered["layer"] = json!("elsewhere");
    let (s, _) = srv.put("/v1/experiments/other", layered).await;
    assert_eq!(s, StatusCode::OK);
    let got = srv.post("/v1/experiments/other/start", json!({})).await;
    assert_error(
        &got,
        StatusCode::CONFLICT,
        "experiment_conflict",
        Some("layer"),
    );
    // Three variants cannot interleave.
    let got = srv
        .put(
            "/v1/experiments/three",
            json!({ "mode": "interleave", "variants": [{ "name": "a" }, { "name": "b" }, { "name": "c" }] }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("variants"),
    );
}
