//! The ranking pipeline: supplied candidates, full explanations, the diversity re-ranker and
//! the attributes read for history-less users.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, keys, start_with};

/// 60 users in two tastes over a0..a9 and b0..b9, items with categories; trained with BPR.
async fn trained() -> TestServer {
    let srv = start_with(|s| {
        s.training.bpr = true;
        s.training.bpr_factors = 8;
    })
    .await;
    for g in ["a", "b"] {
        for i in 0..10 {
            let (s, t) = srv
                .put(
                    &format!("/v1/items/{g}{i}"),
                    json!({"categories": [format!("cat-{g}")], "text": {"title": format!("{g} thing {i}")}}),
                )
                .await;
            assert!(s.is_success(), "{t}");
        }
    }
    let events = crate::common::two_tastes();
    let (s, t) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    crate::privacy::train(&srv).await;
    srv
}

/// Every item's contributions sum to its score (1e-5, relative to scores above 1).
fn assert_terms_sum(body: &Value, what: &str) {
    let items = body["items"].as_array().expect("items");
    assert!(!items.is_empty(), "{what}: {body}");
    for r in items {
        let Some(score) = r["score"].as_f64() else {
            continue;
        };
        // No terms at all (serialized as no field) is a score of zero: nothing contributed.
        let terms = r["contributions"].as_array().cloned().unwrap_or_default();
        assert!(
            !terms.is_empty() || score == 0.0,
            "{what}: no contributions in {r}"
        );
        let sum: f64 = terms.iter().map(|t| t["value"].as_f64().unwrap()).sum();
        assert!(
            (sum - score).abs() <= 1e-5 * score.abs().max(1.0),
            "{what}: terms sum to {sum}, score {score}: {r}"
        );
    }
}

#[tokio::test]
async fn full_explanations_sum_to_the_score_for_every_model() {
    let srv = trained().await;
    for model in ["als", "knn", "ease", "bpr", "popular"] {
        let (s, body) = srv
            .get(&format!(
                "/v1/users/u0/recommendations?n=8&model={model}&explain=full"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["model"], model, "{body}");
        assert_terms_sum(&body, model);
        // Without explain=full, no contributions.
        let (_, plain) = srv
            .get(&format!("/v1/users/u0/recommendations?n=8&model={model}"))
            .await;
        assert!(plain["items"][0].get("contributions").is_none(), "{plain}");
        assert_eq!(
            keys(&plain),
            keys(&body),
            "{model}: explain changes nothing else"
        );
    }
    for model in ["als", "knn", "ease", "bpr"] {
        let (_, body) = srv
            .post(
                "/v1/recommendations",
                json!({"items": ["a1", "a2"], "n": 6, "model": model, "explain": "full"}),
            )
            .await;
        assert_eq!(body["model"], model, "{body}");
        assert_terms_sum(&body, &format!("session {model}"));
        let (_, body) = srv
            .post(
                "/v1/users/visitor/rank",
                json!({"items": ["a3", "b3", "a5", "b7"], "history": ["a1", "a2"], "model": model, "explain": "full"}),
            )
            .await;
        assert_eq!(body["model"], model, "{body}");
        assert_terms_sum(&body, &format!("rank {model}"));
    }
    for path in [
        "/v1/popular?n=5&explain=full",
        "/v1/popular?n=5&sort=trending&explain=full",
        "/v1/items/a3/similar?n=5&model=als&explain=full",
        "/v1/items/a3/similar?n=5&model=knn&explain=full",
        "/v1/items/a3/similar?n=5&model=cooccurrence&explain=full",
    ] {
        let (s, body) = srv.get(path).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_terms_sum(&body, path);
    }
    // A new item placed by its content: its terms are its content features.
    srv.put(
        "/v1/items/a-new",
        json!({"categories": ["cat-a"], "text": {"title": "a thing deluxe"}}),
    )
    .await;
    let (_, body) = srv
        .get("/v1/users/u0/recommendations?n=20&model=als&explain=full")
        .await;
    assert!(keys(&body).contains(&"a-new".to_owned()), "{body}");
    assert_terms_sum(&body, "als with a new item");
    assert_error(
        &srv.get("/v1/popular?explain=most").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("explain"),
    );
}

/// The active version saved again as a new version whose metadata serves `serve` (what
/// tuning would record), and activated: a blend without depending on what a search picks.
async fn serve_as(srv: &TestServer, serve: Value) -> u64 {
    let engine = srv.engine();
    tokio::task::spawn_blocking(move || {
        let store = engine.store();
        let active = store.active_model().unwrap().expect("a trained version");
        let record = (store.list_models().unwrap().into_iter())
            .find(|m| m.version == active)
            .unwrap();
        let files: Vec<(String, Vec<u8>)> = (record.files.iter())
            .map(|n| (n.clone(), store.read_model_file(active, n).unwrap()))
            .collect();
        let refs: Vec<(&str, &[u8])> = (files.iter())
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let mut meta = record.meta;
        meta["serve"] = serve;
        let version = store.save_model(&refs, &meta).unwrap();
        engine.activate(version).unwrap();
        version
    })
    .await
    .unwrap()
}

/// With a tuned blend served, `explain=full` gives each recommendation the terms of both
/// models (prefixed with the model, scaled by its blend weight) summing to the blended score;
/// the rank route, which ranks by the blend's first model, sums to its scores too.
#[tokio::test]
async fn full_explanations_of_a_blend_sum_to_the_score() {
    let srv = trained().await;
    for (first, second) in [("als", "ease"), ("knn", "als")] {
        let version = serve_as(
            &srv,
            json!({"blend": {"models": [first, second], "weight": 0.7}}),
        )
        .await;
        let (s, body) = srv
            .get("/v1/users/u0/recommendations?n=8&model=auto&explain=full")
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["model"], "blend", "{body}");
        assert_eq!(body["model_version"], version, "{body}");
        let what = format!("blend of {first} and {second}");
        assert_terms_sum(&body, &what);
        let terms: Vec<String> = (body["items"].as_array().unwrap().iter())
            .flat_map(|r| r["contributions"].as_array().cloned().unwrap_or_default())
            .map(|t| t["term"].as_str().unwrap().to_owned())
            .collect();
        for model in [first, second] {
            assert!(
                terms.iter().any(|t| t.starts_with(&format!("{model}."))),
                "{what}: no {model} term: {body}"
            );
        }
        // Every term of a model result is one of the blended models' (popular top-ups aside).
        for r in body["items"].as_array().unwrap() {
            if r["reasons"].to_string().contains("topped up") {
                continue;
            }
            for t in r["contributions"].as_array().unwrap() {
                let term = t["term"].as_str().unwrap();
                assert!(
                    term.starts_with(&format!("{first}."))
                        || term.starts_with(&format!("{second}.")),
                    "{what}: {term} in {r}"
                );
            }
        }
        let (_, plain) = srv.get("/v1/users/u0/recommendations?n=8&model=auto").await;
        assert_eq!(
            keys(&plain),
            keys(&body),
            "{what}: explain changes nothing else"
        );
        // The rank route, for a user and for a visitor's history: the blend's first model.
        for (user, extra) in [("u0", json!(null)), ("visitor", json!(["a1", "a2"]))] {
            let mut req = json!({"items": ["a3", "b3", "a5", "b7", "a9"], "explain": "full"});
            if !extra.is_null() {
                req["history"] = extra;
            }
            let (s, body) = srv.post(&format!("/v1/users/{user}/rank"), req).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            assert_eq!(body["model"], first, "{what}: {body}");
            assert_terms_sum(&body, &format!("rank {user}, {what}"));
            for r in body["items"].as_array().unwrap() {
                assert!(!r["reasons"].as_array().unwrap().is_empty(), "{r}");
            }
        }
    }
}

#[tokio::test]
async fn supplied_candidates_are_ranked_for_users_visitors_and_unknown_items() {
    let srv = trained().await;
    srv.put(
        "/v1/items/a-new",
        json!({"categories": ["cat-a"], "text": {"title": "a thing deluxe"}}),
    )
    .await;
    srv.put("/v1/items/bare", json!({})).await;
    let items = json!(["b2", "nowhere", "a4", "bare", "b5", "a-new", "a7"]);
    let (s, body) = srv
        .post("/v1/users/u0/rank", json!({"items": items, "model": "als"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["personalized"], true, "{body}");
    let got = keys(&body);
    assert_eq!(got.len(), 7, "every supplied item comes back: {body}");
    // u0 has the a-taste: a-items first; unknown ones last in the order given, flagged.
    assert!(got[..3].iter().all(|k| k.starts_with('a')), "{body}");
    // An item without events is placed by its content, even bare (the content model's bias);
    // one the catalog does not have comes last.
    assert_eq!(got[6], "nowhere", "{body}");
    for r in &body["items"].as_array().unwrap()[6..] {
        assert_eq!(r["unknown"], true, "{r}");
        assert!(r["score"].is_null(), "{r}");
        assert_eq!(r["reasons"][0]["kind"], "cold_start", "{r}");
    }
    let new = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"] == "a-new")
        .unwrap();
    assert_eq!(new["reasons"][0]["kind"], "content", "{body}");
    assert!(new.get("unknown").is_none(), "{body}");
    let scores: Vec<f64> = body["items"].as_array().unwrap()[..6]
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // A visitor never seen is ranked by the history in the request.
    let (_, body) = srv
        .post(
            "/v1/users/somebody-new/rank",
            json!({"items": ["a1", "b1", "a2", "b2"], "history": ["b3", "b4"]}),
        )
        .await;
    assert_eq!(keys(&body)[0], "b1", "{body}");
    assert_eq!(body["personalized"], true, "{body}");
    // Without any history: popularity, and the reasons say so.
    let (_, body) = srv
        .post(
            "/v1/users/somebody-new/rank",
            json!({"items": ["a1", "b1"]}),
        )
        .await;
    assert_eq!(body["model"], "popular", "{body}");
    assert!(body.to_string().contains("ranked by popularity"), "{body}");

    // Bad input names the field.
    let many: Vec<String> = (0..1001).map(|i| format!("x{i}")).collect();
    for (bad, field) in [
        (json!({"items": many}), "items"),
        (json!({"items": []}), "items"),
        (json!({"items": ["a1", ""]}), "items[1]"),
        (json!({"items": ["a1", "b1", "a1"]}), "items[2]"),
        (json!({"items": ["a1"], "model": "magic"}), "model"),
        (json!({"items": ["a1"], "diversity": 2}), "diversity"),
        (json!({"items": ["a1"], "history": [""]}), "history[0]"),
        (json!({"items": ["a1"], "n": 3}), "n"),
    ] {
        let got = srv.post("/v1/users/u0/rank", bad.clone()).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{bad}: {}", got.1);
        assert_eq!(got.1["error"]["field"], field, "{bad}: {}", got.1);
    }
}

#[tokio::test]
async fn diversity_reranks_and_says_why_on_every_route() {
    let srv = trained().await;
    // Default off: the answer is the plain one.
    let (_, plain) = srv
        .get("/v1/users/u0/recommendations?n=10&include_seen=true&model=als")
        .await;
    let (_, zero) = srv
        .get("/v1/users/u0/recommendations?n=10&include_seen=true&model=als&diversity=0")
        .await;
    assert_eq!(keys(&plain), keys(&zero));
    let a_first = keys(&plain)[..4]
        .iter()
        .filter(|k| k.starts_with('a'))
        .count();
    assert_eq!(a_first, 4, "{plain}");
    let (s, diverse) = srv
        .get("/v1/users/u0/recommendations?n=10&include_seen=true&model=als&diversity=0.9")
        .await;
    assert_eq!(s, StatusCode::OK, "{diverse}");
    let top4 = &keys(&diverse)[..4];
    assert!(top4.iter().any(|k| k.starts_with('b')), "{diverse}");
    assert!(
        diverse.to_string().contains("\"kind\":\"diversity\""),
        "{diverse}"
    );
    // Popular items without a model: similarity by shared categories.
    let plain_srv = start_with(|_| {}).await;
    for (item, cat) in [("x1", "X"), ("x2", "X"), ("y1", "Y")] {
        plain_srv
            .put(&format!("/v1/items/{item}"), json!({"categories": [cat]}))
            .await;
    }
    plain_srv
        .events(&[
            ("p", "x1", "purchase"),
            ("q", "x1", "purchase"),
            ("r", "x1", "purchase"),
            ("p", "x2", "purchase"),
            ("q", "x2", "purchase"),
            ("p", "y1", "purchase"),
        ])
        .await;
    let (_, body) = plain_srv.get("/v1/popular?n=2").await;
    assert_eq!(keys(&body), ["x1", "x2"]);
    let (_, body) = plain_srv.get("/v1/popular?n=2&diversity=0.8").await;
    assert_eq!(keys(&body), ["x1", "y1"], "{body}");
    assert_error(
        &srv.get("/v1/items/a1/similar?diversity=-1").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("diversity"),
    );
    let (s, body) = srv
        .get("/v1/items/a1/similar?n=3&diversity=0.5&category=cat-b")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        keys(&body).iter().all(|k| k.starts_with('b')),
        "filters apply to similar: {body}"
    );
}

/// A user without history is placed by their stored attributes, read on the blocking pool:
/// many at once on a two-worker runtime all get personal answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_less_users_are_placed_by_attributes_off_the_runtime() {
    let srv = start_with(|_| {}).await;
    let mut events = Vec::new();
    for u in 0..40 {
        let (group, country) = if u % 2 == 0 { ("a", "fr") } else { ("b", "de") };
        srv.put(
            &format!("/v1/users/u{u}"),
            json!({"attributes": {"country": country}}),
        )
        .await;
        for i in 0..8 {
            if (u + i) % 3 != 0 {
                events.push(
                    json!({"user": format!("u{u}"), "item": format!("{group}{i}"), "type": "view"}),
                );
            }
        }
    }
    srv.post("/v1/events", json!({ "events": events })).await;
    crate::privacy::train(&srv).await;
    for k in 0..16 {
        srv.put(
            &format!("/v1/users/new{k}"),
            json!({"attributes": {"country": "fr"}}),
        )
        .await;
    }
    let srv = std::sync::Arc::new(srv);
    let mut calls = Vec::new();
    for k in 0..16 {
        let srv = srv.clone();
        calls.push(tokio::spawn(async move {
            let rec = srv
                .get(&format!("/v1/users/new{k}/recommendations?n=3"))
                .await;
            let rank = srv
                .post(
                    &format!("/v1/users/new{k}/rank"),
                    json!({"items": ["b1", "a1"]}),
                )
                .await;
            (rec, rank)
        }));
    }
    for c in calls {
        let ((s, rec), (s2, rank)) = c.await.unwrap();
        assert_eq!((s, s2), (StatusCode::OK, StatusCode::OK), "{rec} {rank}");
        assert_eq!(rec["model"], "content", "{rec}");
        assert!(keys(&rec).iter().all(|k| k.starts_with('a')), "{rec}");
        assert_eq!(rank["model"], "content", "{rank}");
        assert_eq!(keys(&rank), ["a1", "b1"], "{rank}");
        assert_eq!(rank["items"][0]["reasons"][0]["kind"], "profile", "{rank}");
    }
}
