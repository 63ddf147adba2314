use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, keys, start};

/// Five items in two categories with popularity p1 > p2 > p3 (cat A) and p4 > p5 (cat B).
async fn shop() -> TestServer {
    let srv = start().await;
    for (item, cat) in [
        ("p1", "A"),
        ("p2", "A"),
        ("p3", "A"),
        ("p4", "B"),
        ("p5", "B"),
        ("off", "A"),
    ] {
        let available = item != "off";
        let (status, body) = srv
            .put(
                &format!("/v1/items/{item}"),
                json!({ "categories": [cat], "available": available }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut events = Vec::new();
    for (item, buyers) in [
        ("p1", 9),
        ("p2", 7),
        ("p3", 5),
        ("p4", 4),
        ("p5", 2),
        ("off", 20),
    ] {
        for u in 0..buyers {
            events.push((format!("fan{u}"), item.to_owned()));
        }
    }
    let refs: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(u, i)| (u.as_str(), i.as_str(), "purchase"))
        .collect();
    srv.events(&refs).await;
    srv
}

fn assert_reasons(body: &Value) {
    for r in body["items"].as_array().unwrap() {
        let reasons = r["reasons"].as_array().expect("reasons");
        assert!(!reasons.is_empty(), "a result without reasons: {r}");
        assert!(
            reasons
                .iter()
                .all(|x| x["kind"].is_string() && x["message"].is_string()),
            "{r}"
        );
        assert!(r["score"].is_number(), "{r}");
    }
}

#[tokio::test]
async fn recommendations_are_popular_unseen_available_items_with_reasons() {
    let srv = shop().await;
    srv.events(&[("me", "p1", "view"), ("me", "p4", "dislike")])
        .await;
    let (status, body) = srv.get("/v1/users/me/recommendations?n=3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        keys(&body),
        ["p2", "p3", "p5"],
        "seen (also disliked) and unavailable items are skipped"
    );
    assert_eq!(
        (body["personalized"].as_bool(), body["model"].as_str()),
        (Some(false), Some("popular"))
    );
    assert_reasons(&body);
    assert_eq!(body["items"][0]["reasons"][0]["kind"], "popular");
    assert_eq!(body["items"][0]["reasons"][0]["message"], "popular in A");
    assert_eq!(body["items"][0]["reasons"][1]["kind"], "fallback");
    assert!(
        body["items"][0]["reasons"][1]["message"]
            .as_str()
            .unwrap()
            .starts_with("no trained model yet")
    );
    let (_, body) = srv
        .get("/v1/users/me/recommendations?n=3&model=popular")
        .await;
    assert_eq!(keys(&body), ["p2", "p3", "p5"]);
    assert_eq!(
        body["items"][0]["reasons"][1]["kind"], "unseen",
        "popularity asked for is no fallback"
    );

    let (_, body) = srv
        .get("/v1/users/me/recommendations?n=2&include_seen=true")
        .await;
    assert_eq!(keys(&body), ["p1", "p2"]);
    let (_, body) = srv
        .get("/v1/users/me/recommendations?category=B&include_seen=true")
        .await;
    assert_eq!(keys(&body), ["p4", "p5"]);
    let (_, body) = srv
        .get("/v1/users/me/recommendations?category=B,A&exclude=p2,p3&exclude=p5")
        .await;
    assert_eq!(keys(&body), Vec::<String>::new(), "{body}");
    let (_, body) = srv.get("/v1/users/me/recommendations?category=nope").await;
    assert!(keys(&body).is_empty());
}

#[tokio::test]
async fn unknown_and_non_consenting_users_get_explicit_fallbacks() {
    let srv = shop().await;
    let (status, body) = srv.get("/v1/users/stranger/recommendations?n=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), ["p1", "p2"]);
    assert_eq!(body["personalized"], false);
    assert_eq!(body["items"][0]["reasons"][1]["kind"], "fallback");
    assert!(
        body["items"][0]["reasons"][1]["message"]
            .as_str()
            .unwrap()
            .contains("unknown user")
    );

    srv.put(
        "/v1/users/fan0",
        json!({ "consent": { "personalization": false } }),
    )
    .await;
    let (_, body) = srv.get("/v1/users/fan0/recommendations?n=1").await;
    assert_eq!(keys(&body), ["p1"], "history is not used without consent");
    assert_eq!(body["personalized"], false);
    assert!(
        body["items"][0]["reasons"][1]["message"]
            .as_str()
            .unwrap()
            .contains("personalization is off")
    );
    srv.put(
        "/v1/users/fan0",
        json!({ "consent": { "personalization": true } }),
    )
    .await;
    let (_, body) = srv.get("/v1/users/fan0/recommendations?n=1").await;
    assert_ne!(keys(&body), ["p1"], "consent applies to the next request");
}

#[tokio::test]
async fn n_and_parameters_are_validated() {
    let srv = shop().await;
    for bad in ["n=0", "n=-1", "n=1001", "n=2147483648", "n=abc", "n=1.5"] {
        assert_error(
            &srv.get(&format!("/v1/users/me/recommendations?{bad}"))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("n"),
        );
        assert_error(
            &srv.get(&format!("/v1/popular?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("n"),
        );
        assert_error(
            &srv.get(&format!("/v1/items/p1/similar?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("n"),
        );
    }
    assert_error(
        &srv.get("/v1/users/me/recommendations?categroy=A").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("categroy"),
    );
    assert_error(
        &srv.get("/v1/users/me/recommendations?include_seen=maybe")
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("include_seen"),
    );
    assert_error(
        &srv.get("/v1/popular?window=7y").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("window"),
    );
    assert_error(
        &srv.get("/v1/popular?sort=best").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("sort"),
    );
    assert_error(
        &srv.get("/v1/popular?sort=trending&window=1d").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("window"),
    );
    assert_error(
        &srv.get("/v1/popular?n=%FF").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
        Some("n"),
    );
    assert_error(
        &srv.get("/v1/popular?category=%C0").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
        Some("category"),
    );
    assert_error(
        &srv.get("/v1/popular?category=a%2").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
        Some("category"),
    );
    let (status, body) = srv.get("/v1/popular?n=1000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&body).len(),
        5,
        "n is a maximum; unavailable items never show"
    );
}

#[tokio::test]
async fn similar_items_come_from_co_occurrence_then_category_fallback() {
    let srv = shop().await;
    // p4 was bought by fan0..fan3, who also bought p1, p2, p3 (fan0..8, fan0..6, fan0..4).
    let (status, body) = srv.get("/v1/items/p4/similar?n=4").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_reasons(&body);
    // Cosine of buyer sets: p3 4/sqrt(4*5)=.894, p2 4/sqrt(4*7)=.756, p5 2/sqrt(4*2)=.707,
    // p1 4/sqrt(4*9)=.667; p4 itself and the unavailable item never appear.
    assert_eq!(keys(&body), ["p3", "p2", "p5", "p1"]);
    assert!((body["items"][0]["score"].as_f64().unwrap() - 0.894).abs() < 1e-3);
    assert_eq!(body["items"][0]["reasons"][0]["kind"], "co_occurrence");
    assert_eq!(body["items"][0]["reasons"][0]["count"], 4);
    assert_eq!(body["items"][2]["reasons"][0]["count"], 2);

    // A cold item (no events): popular items of its category, said so.
    srv.put("/v1/items/new", json!({ "categories": ["B"] }))
        .await;
    let (_, body) = srv.get("/v1/items/new/similar").await;
    assert_eq!(keys(&body), ["p4", "p5"]);
    assert_eq!(body["items"][0]["reasons"][1]["kind"], "fallback");
    let scores: Vec<f64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
}

#[tokio::test]
async fn popular_counts_windows_and_trending() {
    let srv = shop().await;
    let (_, body) = srv.get("/v1/popular?n=3").await;
    assert_eq!(keys(&body), ["p1", "p2", "p3"]);
    assert_eq!(body["items"][0]["score"], 72.0, "9 purchases of weight 8");
    assert_reasons(&body);
    let (_, body) = srv.get("/v1/popular?category=B").await;
    assert_eq!(keys(&body), ["p4", "p5"]);

    // Old events count all-time but not in a recent window, and weigh less when trending.
    let old: Vec<Value> = (0..30)
        .map(|u| json!({ "user": format!("old{u}"), "item": "vintage", "type": "purchase", "timestamp": "2020-01-01T00:00:00Z" }))
        .collect();
    srv.post("/v1/events", json!({ "events": old })).await;
    let (_, body) = srv.get("/v1/popular?n=1").await;
    assert_eq!(keys(&body), ["vintage"]);
    let (_, body) = srv.get("/v1/popular?n=1&window=7d").await;
    assert_eq!(keys(&body), ["p1"]);
    assert!(
        body["items"][0]["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .ends_with("in the last 7d")
    );
    let (_, body) = srv.get("/v1/popular?n=1&sort=trending").await;
    assert_eq!(keys(&body), ["p1"]);
    assert_eq!(body["items"][0]["reasons"][0]["kind"], "trending");
}

/// Anonymous sessions: the recent items are folded into the trained model on the fly.
#[tokio::test]
async fn anonymous_sessions_get_recommendations_from_their_items() {
    let srv = crate::common::start().await;
    // Two tastes: users of the a-items and users of the b-items.
    let events = crate::common::two_tastes();
    let (s, _) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(s, StatusCode::OK);
    let (s, t) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert!(s.is_success(), "{t}");
    for model in ["als", "knn"] {
        let (s, body) = srv
            .post(
                "/v1/recommendations",
                json!({"items": ["a1", {"item": "a2", "weight": 2}], "n": 5, "model": model}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["personalized"], true, "{body}");
        assert_eq!(body["model"], model);
        let keys: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["item"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), 5, "{body}");
        assert!(
            !keys.contains(&"a1") && !keys.contains(&"a2"),
            "session items come back: {keys:?}"
        );
        assert!(
            keys.iter().filter(|k| k.starts_with('a')).count() >= 4,
            "{model}: {keys:?}"
        );
        let reasons = body["items"][0]["reasons"].to_string();
        assert!(reasons.contains("a1") || reasons.contains("a2"), "{body}");
    }
    // The same session the other way round recommends the other taste.
    let (_, body) = srv
        .post(
            "/v1/recommendations",
            json!({"items": ["b3", "b4"], "n": 3}),
        )
        .await;
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["item"].as_str().unwrap().starts_with('b')),
        "{body}"
    );
    // Nothing known: popular items, and the reasons say why.
    let (_, body) = srv
        .post("/v1/recommendations", json!({"items": ["nope"], "n": 3}))
        .await;
    assert_eq!(body["personalized"], false);
    assert!(
        body["items"][0]["reasons"]
            .to_string()
            .contains("no item of this session is known"),
        "{body}"
    );
    // Bad input names the field.
    for (bad, field) in [
        (json!({"items": [""]}), "items[0]"),
        (json!({"items": ["a1"], "n": 0}), "n"),
        (json!({"items": ["a1"], "model": "magic"}), "model"),
        (
            json!({"items": [{"item": "a1", "weight": 1e300}]}),
            "items[0].weight",
        ),
        (json!({"items": ["a1"], "usr": "x"}), "usr"),
    ] {
        let got = srv.post("/v1/recommendations", bad.clone()).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{bad}: {}", got.1);
        assert!(
            got.1["error"]["field"]
                .as_str()
                .unwrap_or("")
                .starts_with(field),
            "{bad}: {}",
            got.1
        );
    }
    let many: Vec<String> = (0..501).map(|i| format!("x{i}")).collect();
    let got = srv
        .post("/v1/recommendations", json!({ "items": many }))
        .await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST);
    assert_eq!(got.1["error"]["field"], "items");
}

/// With `serving.recent_boost`, what a user did lately outweighs what they did long ago.
#[tokio::test]
async fn recent_interactions_can_be_weighted_up() {
    let month_ago = "2026-10-01T00:00:00Z";
    let mut answers = Vec::new();
    for boost in [0.0, 20.0] {
        let srv = crate::common::start_with(|s| {
            s.serving.recent_boost = boost;
            s.serving.recent_half_life_hours = 24.0;
        })
        .await;
        let mut events = crate::common::two_tastes();
        // The user: many b-items a month ago, two a-items just now.
        for i in 0..6 {
            events.push(json!({"user": "me", "item": format!("b{i}"), "type": "view", "timestamp": month_ago}));
        }
        for i in 0..2 {
            events.push(json!({"user": "me", "item": format!("a{i}"), "type": "view"}));
        }
        let (s, body) = srv.post("/v1/events", json!({ "events": events })).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let (s, t) = srv
            .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
            .await;
        assert!(s.is_success(), "{t}");
        let (_, body) = srv.get("/v1/users/me/recommendations?n=4&model=als").await;
        let a_items = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["item"].as_str().unwrap().starts_with('a'))
            .count();
        let first_is_a = body["items"][0]["item"].as_str().unwrap().starts_with('a');
        answers.push((a_items, first_is_a));
    }
    // Without the boost the month-old b-habit wins; with it, the recent a-items lead.
    assert_eq!(answers[0], (0, false), "{answers:?}");
    assert!(answers[1].1 && answers[1].0 >= 2, "{answers:?}");
}

/// EASE is trained for small catalogs and serves users and sessions with reasons.
#[tokio::test]
async fn ease_serves_users_and_sessions() {
    let srv = crate::common::start().await;
    let events = crate::common::two_tastes();
    srv.post("/v1/events", json!({ "events": events })).await;
    let (s, t) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert!(s.is_success(), "{t}");
    let (_, models) = srv.get("/v1/models").await;
    assert!(models.to_string().contains("\"ease\""), "{models}");
    let (s, body) = srv.get("/v1/users/u0/recommendations?n=3&model=ease").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["model"], "ease", "{body}");
    assert_eq!(body["personalized"], true);
    for r in body["items"].as_array().unwrap() {
        assert!(r["item"].as_str().unwrap().starts_with('a'), "{body}");
        assert_eq!(r["reasons"][0]["kind"], "ease", "{body}");
    }
    let (_, body) = srv
        .post(
            "/v1/recommendations",
            json!({"items": ["b1", "b2"], "n": 3, "model": "ease"}),
        )
        .await;
    assert_eq!(body["model"], "ease", "{body}");
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["item"].as_str().unwrap().starts_with('b')),
        "{body}"
    );
}

/// The hybrid content model: an item added after training is recommended at once from its
/// content, a user without history from their attributes, a visitor from the request context;
/// the reasons name the features.
#[tokio::test]
async fn content_model_serves_new_items_and_new_users() {
    let srv = crate::common::start().await;
    let genre = |g: &str| if g == "a" { "jazz" } else { "metal" };
    for g in ["a", "b"] {
        for i in 0..10 {
            let (s, t) = srv
                .put(
                    &format!("/v1/items/{g}{i}"),
                    json!({"categories": [genre(g)], "text": {"title": format!("{} album {i}", genre(g))},
                           "embeddings": {"clip": if g == "a" { [1.0, 0.1 * i as f64] } else { [0.1 * i as f64, 1.0] }}}),
                )
                .await;
            assert!(s.is_success(), "{t}");
        }
    }
    let mut events = Vec::new();
    for u in 0..60 {
        let group = if u % 2 == 0 { "a" } else { "b" };
        let country = if u % 2 == 0 { "fr" } else { "de" };
        let (s, t) = srv
            .put(
                &format!("/v1/users/u{u}"),
                json!({"attributes": {"country": country}}),
            )
            .await;
        assert!(s.is_success(), "{t}");
        for i in 0..10 {
            if (u + i) % 3 != 0 {
                events.push(
                    json!({"user": format!("u{u}"), "item": format!("{group}{i}"), "type": "view"}),
                );
            }
        }
    }
    srv.post("/v1/events", json!({ "events": events })).await;
    let (s, t) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert!(s.is_success(), "{t}");
    let (_, models) = srv.get("/v1/models").await;
    let meta = &models["models"][0]["meta"];
    assert!(meta["params"]["content"]["items"].is_object(), "{models}");
    assert!(meta["params"]["content"]["users"].is_object(), "{models}");

    // New items after training: no events, no retraining.
    for (key, g) in [("a-new", "a"), ("b-new", "b")] {
        let (s, t) = srv
            .put(
                &format!("/v1/items/{key}"),
                json!({"categories": [genre(g)], "text": {"title": format!("{} album deluxe", genre(g))}}),
            )
            .await;
        assert!(s.is_success(), "{t}");
    }
    // And two with an embedding only (an image or text vector computed elsewhere).
    for (key, v) in [("a-emb", [0.9, 0.2]), ("b-emb", [0.2, 0.9])] {
        let (s, t) = srv
            .put(
                &format!("/v1/items/{key}"),
                json!({"embeddings": {"clip": v}}),
            )
            .await;
        assert!(s.is_success(), "{t}");
    }
    let (s, body) = srv.get("/v1/users/u0/recommendations?n=20&model=als").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    let pos = |key: &str| items.iter().position(|r| r["item"] == key);
    let a_new = pos("a-new").unwrap_or_else(|| panic!("a-new missing: {body}"));
    assert!(pos("b-new").is_none_or(|b| b > a_new), "{body}");
    let a_emb = pos("a-emb").unwrap_or_else(|| panic!("a-emb missing: {body}"));
    assert!(pos("b-emb").is_none_or(|b| b > a_emb), "{body}");
    assert_eq!(
        items[a_emb]["reasons"][0]["feature"], "embedding:clip",
        "{body}"
    );
    let reasons = &items[a_new]["reasons"];
    assert_eq!(reasons[0]["kind"], "content", "{body}");
    let features: Vec<&str> = reasons
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["feature"].as_str())
        .collect();
    assert!(
        features
            .iter()
            .any(|f| *f == "category:jazz" || *f == "word:jazz"),
        "{body}"
    );
    // Its related items, by content, before any event.
    let (s, similar) = srv.get("/v1/items/a-new/similar?n=3").await;
    assert_eq!(s, StatusCode::OK, "{similar}");
    for r in similar["items"].as_array().unwrap() {
        assert!(r["item"].as_str().unwrap().starts_with('a'), "{similar}");
        assert_eq!(r["reasons"][0]["kind"], "content", "{similar}");
    }
    // A session of new items only: folded in through their content.
    let (s, session) = srv
        .post(
            "/v1/recommendations",
            json!({"items": ["a-new", "a-emb"], "n": 3, "model": "als"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{session}");
    assert_eq!(session["model"], "als", "{session}");
    for r in session["items"].as_array().unwrap() {
        assert!(r["item"].as_str().unwrap().starts_with('a'), "{session}");
        assert_eq!(r["reasons"][0]["kind"], "content", "{session}");
    }
    // Deleted, it is gone from the answers.
    srv.delete("/v1/items/a-new").await;
    let (_, body) = srv.get("/v1/users/u0/recommendations?n=20&model=als").await;
    assert!(!body.to_string().contains("a-new"), "{body}");

    // A user with attributes and no history.
    let (s, t) = srv
        .put("/v1/users/newbie", json!({"attributes": {"country": "fr"}}))
        .await;
    assert!(s.is_success(), "{t}");
    let (_, body) = srv.get("/v1/users/newbie/recommendations?n=3").await;
    assert_eq!(body["model"], "content", "{body}");
    assert_eq!(body["personalized"], true, "{body}");
    for r in body["items"].as_array().unwrap() {
        assert!(r["item"].as_str().unwrap().starts_with('a'), "{body}");
        assert_eq!(r["reasons"][0]["kind"], "profile", "{body}");
        assert_eq!(r["reasons"][0]["feature"], "attr:country=fr", "{body}");
    }
    // A visitor, from the request context alone.
    let (s, body) = srv
        .post(
            "/v1/recommendations",
            json!({"context": {"country": "de"}, "n": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["model"], "content", "{body}");
    for r in body["items"].as_array().unwrap() {
        assert!(r["item"].as_str().unwrap().starts_with('b'), "{body}");
    }
    // A context the model never saw is not personal: popular items, and the reasons say so.
    let (_, body) = srv
        .post(
            "/v1/recommendations",
            json!({"context": {"country": "jp"}, "n": 3}),
        )
        .await;
    assert_eq!(body["model"], "popular", "{body}");
    assert!(
        body.to_string().contains("content model knows nothing"),
        "{body}"
    );
    // Bad context: a 400 naming the field.
    let (s, body) = srv
        .post("/v1/recommendations", json!({"context": [1, 2]}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("context"), "{body}");
}
