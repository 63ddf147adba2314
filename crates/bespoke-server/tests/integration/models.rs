use std::collections::BTreeSet;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, keys, start, start_with};

/// 60 users in two taste clusters: even users use items a0..a19, odd users b0..b19.
async fn clustered(srv: &TestServer) {
    let mut events = Vec::new();
    let mut x: u64 = 7;
    for u in 0..60u64 {
        let cluster = if u % 2 == 0 { "a" } else { "b" };
        for _ in 0..8 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let i = (x >> 33) % 20;
            events.push(json!({ "user": format!("u{u}"), "item": format!("{cluster}{i}"), "type": "purchase" }));
        }
    }
    let (status, body) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn train(srv: &TestServer) -> Value {
    let (status, body) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn in_cluster(body: &Value, prefix: char) -> usize {
    keys(body).iter().filter(|k| k.starts_with(prefix)).count()
}

#[tokio::test]
async fn trained_models_serve_explained_recommendations_and_versions_activate() {
    let srv = start().await;
    assert_error(
        &srv.request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
            .await,
        StatusCode::CONFLICT,
        "no_data",
        None,
    );
    clustered(&srv).await;
    let first = train(&srv).await;
    assert_eq!(
        (first["version"].as_u64(), first["activated"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(first["meta"]["data"]["users"], 60);
    assert!(
        first["meta"]["metrics"]["als"]["ndcg@10"]
            .as_f64()
            .is_some(),
        "{first}"
    );

    // u0 is in cluster a: its iALS recommendations come from cluster a, explained by its own
    // history.
    let (_, history) = srv.get("/v1/users/u0/events?limit=100").await;
    let seen: BTreeSet<String> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["item"].as_str().unwrap().to_owned())
        .collect();
    for model in ["als", "knn"] {
        let (status, body) = srv
            .get(&format!("/v1/users/u0/recommendations?n=5&model={model}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (body["model"].as_str(), body["model_version"].as_u64()),
            (Some(model), Some(1)),
            "{body}"
        );
        assert_eq!(body["personalized"], true);
        assert_eq!(in_cluster(&body, 'a'), 5, "{model}: {body}");
        for r in body["items"].as_array().unwrap() {
            assert!(
                !seen.contains(r["item"].as_str().unwrap()),
                "a seen item was recommended"
            );
            let reasons = r["reasons"].as_array().unwrap();
            assert!(!reasons.is_empty() && reasons.len() <= 3);
            for reason in reasons {
                assert_eq!(reason["kind"], model);
                assert!(
                    seen.contains(reason["item"].as_str().unwrap()),
                    "reasons name history items: {reason}"
                );
                assert!(reason["weight"].as_f64().unwrap() > 0.0);
            }
        }
    }
    for model in ["knn", "als"] {
        let (_, body) = srv
            .get(&format!("/v1/items/a3/similar?n=5&model={model}"))
            .await;
        assert_eq!(in_cluster(&body, 'a'), 5, "{model}: {body}");
        assert!(!keys(&body).contains(&"a3".to_owned()));
        assert_eq!(body["items"][0]["reasons"][0]["kind"], model);
    }
    assert_error(
        &srv.get("/v1/users/u0/recommendations?model=magic").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("model"),
    );
    assert_error(
        &srv.get("/v1/items/a3/similar?model=magic").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("model"),
    );

    // A second version; then back to the first.
    let second = train(&srv).await;
    assert_eq!(second["version"], 2);
    let (_, models) = srv.get("/v1/models").await;
    assert_eq!(models["active"], 2);
    assert_eq!(models["models"].as_array().unwrap().len(), 2);
    assert_eq!(models["training"]["running"], false);
    let (status, body) = srv
        .request(reqwest::Method::POST, "/v1/models/1/activate", None)
        .await;
    assert_eq!((status, body["active"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, body) = srv.get("/v1/users/u0/recommendations?n=3").await;
    assert_eq!(body["model_version"], 1);
    assert_error(
        &srv.request(reqwest::Method::POST, "/v1/models/99/activate", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &srv.request(reqwest::Method::POST, "/v1/models/x/activate", None)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("version"),
    );

    // The active version survives a restart.
    let dir = srv.stop().await;
    let srv = crate::common::start_in(dir, |_| {}).await;
    let (_, body) = srv.get("/v1/users/u0/recommendations?n=3").await;
    assert_eq!(body["model_version"], 1);
}

#[tokio::test]
async fn an_event_changes_the_next_recommendations_without_retraining() {
    let srv = start().await;
    clustered(&srv).await;
    train(&srv).await;
    // A brand-new user with one event gets personalized results at once.
    srv.events(&[("newcomer", "b4", "purchase")]).await;
    let (_, body) = srv.get("/v1/users/newcomer/recommendations?n=5").await;
    assert_eq!(
        (body["personalized"].as_bool(), body["model"].as_str()),
        (Some(true), Some("als")),
        "{body}"
    );
    assert!(in_cluster(&body, 'b') >= 4, "{body}");
    assert_eq!(body["items"][0]["reasons"][0]["item"], "b4");
    // Their taste moves to cluster a: the very next answer follows, with no retraining.
    let moves: Vec<(&str, &str, &str)> = (0..6)
        .map(|i| {
            (
                "newcomer",
                ["a1", "a2", "a5", "a8", "a9", "a11"][i],
                "purchase",
            )
        })
        .collect();
    srv.events(&moves).await;
    let (_, body) = srv.get("/v1/users/newcomer/recommendations?n=5").await;
    assert!(in_cluster(&body, 'a') >= 4, "{body}");
    assert_eq!(body["model_version"], 1);
    let (_, models) = srv.get("/v1/models").await;
    assert_eq!(
        models["models"].as_array().unwrap().len(),
        1,
        "no retraining happened"
    );
    // Erasure reaches serving at once: the user is unknown again.
    srv.delete("/v1/users/newcomer").await;
    let (_, body) = srv.get("/v1/users/newcomer/recommendations?n=5").await;
    assert_eq!(body["personalized"], false);
}

#[tokio::test]
async fn requests_never_fail_while_models_swap() {
    let srv = Arc::new(start().await);
    clustered(&srv).await;
    train(&srv).await;
    train(&srv).await;
    let mut readers = Vec::new();
    for r in 0..8 {
        let srv = srv.clone();
        readers.push(tokio::spawn(async move {
            let mut versions = BTreeSet::new();
            for k in 0..60 {
                let (status, body) = srv
                    .get(&format!(
                        "/v1/users/u{}/recommendations?n=5",
                        (r * 7 + k) % 60
                    ))
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(keys(&body).len(), 5, "{body}");
                versions.insert(body["model_version"].as_u64().expect("a model answered"));
            }
            versions
        }));
    }
    for k in 0..40 {
        let v = 1 + k % 2;
        let (status, body) = srv
            .request(
                reqwest::Method::POST,
                &format!("/v1/models/{v}/activate"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut seen = BTreeSet::new();
    for r in readers {
        seen.extend(r.await.unwrap());
    }
    assert!(seen.is_subset(&BTreeSet::from([1, 2])), "{seen:?}");
}

#[tokio::test]
async fn the_server_trains_in_the_background_once_data_arrives() {
    let srv = start_with(|s| {
        s.training.train_on_start = true;
        s.training.evaluate = false;
    })
    .await;
    clustered(&srv).await;
    // Poll with a deadline: the scheduler checks every few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (_, models) = srv.get("/v1/models").await;
        if models["active"].as_u64().is_some() {
            assert!(
                models["models"][0]["meta"]["training_seconds"]["total"]
                    .as_f64()
                    .is_some()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background training within 90 s: {models}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, body) = srv.get("/v1/users/u1/recommendations?n=3").await;
    assert_eq!(body["model"], "als");
}

/// By default the server tunes by itself: once a model that was never tuned is served, the
/// scheduler runs the search and the next version serves what it chose.
#[tokio::test]
async fn an_untuned_model_is_tuned_in_the_background_by_default() {
    assert!(
        bespoke_server::Settings::default()
            .training
            .tune_interval_hours
            > 0.0
    );
    let srv = start_with(|s| {
        s.training.train_on_start = true;
        s.training.evaluate = false;
        s.training.tune_interval_hours = bespoke_server::Settings::default()
            .training
            .tune_interval_hours;
        s.training.tune_budget = 4;
    })
    .await;
    clustered(&srv).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let tuning = loop {
        let (_, models) = srv.get("/v1/models").await;
        let active = models["active"].as_u64();
        let meta = models["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["version"].as_u64() == active && active.is_some())
            .map(|m| m["meta"].clone());
        if let Some(t) = meta.map(|m| m["tuning"].clone()).filter(|t| !t.is_null()) {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background tuning within 120 s: {models}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(tuning["budget"], 4, "{tuning}");
    let (_, recs) = srv.get("/v1/users/u1/recommendations?n=3").await;
    let served = match &tuning["serve"] {
        Value::Object(o) if o.contains_key("blend") => "blend".to_owned(),
        Value::Object(o) => o["single"].as_str().unwrap().to_owned(),
        other => panic!("serve {other}"),
    };
    assert_eq!(recs["model"], served.as_str(), "{recs}");
}

/// Tuning from the server: the search runs on the stored data, the new version records the
/// result, `model=auto` serves what it chose, and later trainings reuse it.
#[tokio::test]
async fn tuning_records_its_choice_serves_it_and_later_trainings_reuse_it() {
    let srv = start().await;
    clustered(&srv).await;
    let bad = srv
        .request(
            reqwest::Method::POST,
            "/v1/models/tune?wait=true&budget=0",
            None,
        )
        .await;
    assert_error(
        &bad,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("budget"),
    );
    let (status, tuned) = srv
        .request(
            reqwest::Method::POST,
            "/v1/models/tune?wait=true&budget=6",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tuned}");
    let meta = &tuned["meta"];
    let tuning = &meta["tuning"];
    assert_eq!(tuning["budget"], 6, "{tuning}");
    let candidates: BTreeSet<u64> = tuning["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["candidate"].as_u64().unwrap())
        .collect();
    assert_eq!(candidates.len(), 6, "{tuning}");
    assert_eq!(meta["serve"], tuning["serve"], "{meta}");
    assert!(meta["metrics"]["auto"]["ndcg@10"].is_number(), "{meta}");
    // The tuned iALS hyperparameters are the ones trained.
    if let Some(als) = tuning["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m[0] == "als")
    {
        assert_eq!(
            meta["params"]["als"]["factors"], als[1]["config"]["factors"],
            "{meta}"
        );
    }
    // The default model is auto: what tuning chose.
    let (status, recs) = srv.get("/v1/users/u0/recommendations?n=5").await;
    assert_eq!(status, StatusCode::OK, "{recs}");
    let expected = match &meta["serve"] {
        Value::Object(o) if o.contains_key("blend") => "blend".to_owned(),
        Value::Object(o) => o["single"].as_str().unwrap().to_owned(),
        other => panic!("serve {other}"),
    };
    assert_eq!(recs["model"], expected.as_str(), "{recs}");
    assert_eq!(recs["personalized"], true);
    assert!(in_cluster(&recs, 'a') >= 4, "{recs}");
    for r in recs["items"].as_array().unwrap() {
        assert!(!r["reasons"].as_array().unwrap().is_empty(), "{recs}");
    }
    // A plain training keeps the tuning (read back from the served version).
    let again = train(&srv).await;
    assert_eq!(again["meta"]["tuning"], *tuning);
    assert_eq!(again["meta"]["params"]["als"], meta["params"]["als"]);
}

/// RP3beta item-kNN is trained, saved, loaded back and served like the other similarities.
#[tokio::test]
async fn rp3beta_neighbours_are_served() {
    let srv = start_with(|s| {
        s.training.knn_similarity = bespoke_server::settings::KnnSimilarity::Rp3;
        s.training.rp3_beta = 0.3;
    })
    .await;
    clustered(&srv).await;
    let out = train(&srv).await;
    assert_eq!(out["meta"]["params"]["knn"]["similarity"], "rp3", "{out}");
    assert!(
        (out["meta"]["params"]["knn"]["rp3"]["beta"]
            .as_f64()
            .unwrap()
            - 0.3)
            .abs()
            < 1e-6
    );
    let (status, recs) = srv.get("/v1/users/u1/recommendations?n=5&model=knn").await;
    assert_eq!(status, StatusCode::OK, "{recs}");
    assert_eq!(recs["model"], "knn", "{recs}");
    assert!(in_cluster(&recs, 'b') >= 4, "{recs}");
    assert_eq!(recs["items"][0]["reasons"][0]["kind"], "knn", "{recs}");
}

/// BPR, with `training.bpr`: saved, loaded back and served with a fold-in of the current
/// history, for users and sessions; without it, `model=bpr` falls back and says why.
#[tokio::test]
async fn bpr_is_served_when_trained() {
    let off = start().await;
    clustered(&off).await;
    train(&off).await;
    let (_, recs) = off.get("/v1/users/u0/recommendations?n=3&model=bpr").await;
    assert_eq!(recs["model"], "popular", "{recs}");
    assert!(recs.to_string().contains("training.bpr"), "{recs}");

    let srv = start_with(|s| {
        s.training.bpr = true;
        s.training.bpr_factors = 16;
    })
    .await;
    clustered(&srv).await;
    let out = train(&srv).await;
    assert_eq!(out["meta"]["params"]["bpr"]["factors"], 16, "{out}");
    // Held out like every other model: the clusters make the next items easy to guess.
    let held_out = &out["meta"]["metrics"];
    let bpr_ndcg = held_out["bpr"]["ndcg@10"].as_f64().unwrap();
    assert!(
        bpr_ndcg > held_out["popular"]["ndcg@10"].as_f64().unwrap(),
        "{held_out}"
    );
    let (status, recs) = srv.get("/v1/users/u0/recommendations?n=5&model=bpr").await;
    assert_eq!(status, StatusCode::OK, "{recs}");
    assert_eq!(recs["model"], "bpr", "{recs}");
    assert!(in_cluster(&recs, 'a') >= 4, "{recs}");
    assert_eq!(recs["items"][0]["reasons"][0]["kind"], "bpr", "{recs}");
    // An event changes the next answer without retraining: the history is folded in per
    // request, so the new item is not recommended back.
    let top = keys(&recs)[0].clone();
    srv.post(
        "/v1/events",
        json!({ "events": [{ "user": "u0", "item": top, "type": "purchase" }] }),
    )
    .await;
    let (_, after) = srv.get("/v1/users/u0/recommendations?n=5&model=bpr").await;
    assert!(!keys(&after).contains(&top), "{after}");
    let (_, session) = srv
        .post(
            "/v1/recommendations",
            json!({ "items": ["b1", "b2", "b3"], "n": 5, "model": "bpr" }),
        )
        .await;
    assert_eq!(session["model"], "bpr", "{session}");
    assert!(in_cluster(&session, 'b') >= 4, "{session}");
}
