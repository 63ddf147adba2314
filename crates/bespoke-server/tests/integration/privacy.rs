//! Consent, erasure that reaches the model (bit-identical retraining), export.

use std::path::Path;

use reqwest::{Method, StatusCode};
use safetensors::SafeTensors;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, keys, start_with};

/// Training settings that make runs comparable: fixed threads, no background training.
async fn server() -> TestServer {
    start_with(|s| {
        s.training.threads = 2;
        s.training.iterations = 6;
        s.training.factors = 8;
    })
    .await
}

/// 40 users with seeded events at fixed times on 30 items; `victim` adds events of their own,
/// including on `solo`, an item nobody else touches.
fn events(with_victim: bool) -> Vec<Value> {
    let mut out = Vec::new();
    let mut x: u64 = 11;
    let mut t = 1_700_000_000_000i64;
    let kinds = ["view", "click", "purchase", "rating"];
    for u in 0..40u64 {
        for _ in 0..10 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let item = (x >> 33) % 30;
            let kind = kinds[((x >> 20) % 4) as usize];
            t += 60_000;
            let mut e = json!({ "user": format!("u{u:02}"), "item": format!("i{item:02}"), "type": kind,
                                "timestamp": bespoke_server::time::format_rfc3339(t) });
            if kind == "rating" {
                e["value"] = json!(((x >> 40) % 5 + 1) as f64);
            }
            out.push(e);
            if with_victim && u % 7 == 0 {
                out.push(json!({ "user": "victim", "item": format!("i{:02}", (item + 3) % 30), "type": "purchase",
                                 "timestamp": bespoke_server::time::format_rfc3339(t + 1) }));
            }
        }
    }
    if with_victim {
        for k in 0..3 {
            out.push(json!({ "user": "victim", "item": "solo", "type": "like",
                             "timestamp": bespoke_server::time::format_rfc3339(t + 10 + k) }));
        }
    }
    out
}

async fn load(srv: &TestServer, with_victim: bool) {
    let (status, body) = srv
        .post("/v1/events", json!({ "events": events(with_victim) }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    if with_victim {
        let (status, body) = srv
            .put(
                "/v1/users/victim",
                json!({ "attributes": { "city": "Lyon" } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Trains a version now and returns the answer.
pub(crate) async fn train(srv: &TestServer) -> Value {
    let (status, body) = srv
        .request(Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn model_file(dir: &Path, version: u64, name: &str) -> Vec<u8> {
    std::fs::read(dir.join("models").join(version.to_string()).join(name))
        .unwrap_or_else(|e| panic!("model {version}/{name}: {e}"))
}

/// Every tensor of a safetensors file: name, dtype, shape and raw bytes.
fn tensors(bytes: &[u8]) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                format!("{:?}", t.dtype()),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    out.sort();
    out
}

fn user_row(dir: &Path, version: u64, key: &str) -> Option<usize> {
    let users: Vec<String> =
        serde_json::from_slice(&model_file(dir, version, "users.json")).unwrap();
    users.iter().position(|k| k == key)
}

/// The acceptance test of erasure: after erasing a user and retraining, the model is
/// bit-identical to one trained from a store that never held the user.
#[tokio::test]
async fn erasure_and_retraining_equal_never_having_held_the_user() {
    let a = server().await;
    load(&a, true).await;
    let v1 = train(&a).await;
    assert_eq!(v1["version"], 1);
    assert!(user_row(a.dir.path(), 1, "victim").is_some());

    let (status, receipt) = a.delete("/v1/users/victim?retrain=true").await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["key"], "victim");
    assert_eq!(receipt["status"], "complete", "{receipt}");
    assert_eq!(receipt["models_containing_user"], json!([1]));
    assert_eq!(receipt["model_rows_scrubbed"], json!([1]));
    assert_eq!(receipt["model_versions_deleted"], json!([1]));
    assert_eq!(receipt["first_model_without_user"]["version"], 2);
    assert_eq!(receipt["removed"]["profile"], true);
    assert_eq!(receipt["removed"]["events"], 6 * 10 + 3);
    let id = receipt["erasure_id"].as_str().unwrap();
    let (status, stored) = a.get(&format!("/v1/erasures/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stored["first_model_without_user"],
        receipt["first_model_without_user"]
    );
    assert!(
        stored.get("key").is_none(),
        "the stored receipt must not hold the key"
    );
    assert!(!stored.to_string().contains("victim"));

    let b = server().await;
    load(&b, false).await;
    let w1 = train(&b).await;
    assert_eq!(w1["version"], 1);

    let (da, db) = (a.dir.path(), b.dir.path());
    for file in ["als.safetensors", "knn.safetensors"] {
        let (ta, tb) = (
            tensors(&model_file(da, 2, file)),
            tensors(&model_file(db, 1, file)),
        );
        assert!(!ta.is_empty());
        assert!(ta == tb, "{file} differs from the never-held model");
    }
    for file in ["users.json", "items.json"] {
        assert_eq!(model_file(da, 2, file), model_file(db, 1, file), "{file}");
    }
    let (_, ma) = a.get("/v1/models").await;
    let (_, mb) = b.get("/v1/models").await;
    let (meta_a, meta_b) = (&ma["models"][0]["meta"], &mb["models"][0]["meta"]);
    assert_eq!(meta_a["metrics"], meta_b["metrics"]);
    assert_eq!(meta_a["data"]["users"], meta_b["data"]["users"]);
    assert_eq!(meta_a["data"]["pairs"], meta_b["data"]["pairs"]);
    // Version 1, trained with the user, is gone.
    assert!(!da.join("models/1").exists());

    // Serving forgot them at once too.
    let (_, popular) = a.get("/v1/popular?n=100").await;
    assert!(!keys(&popular).contains(&"solo".to_owned()));
    assert_error(
        &a.get("/v1/users/victim").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}

/// Without `retrain`, stored model rows are scrubbed at once and the receipt completes when
/// the next model trained without the user becomes active.
#[tokio::test]
async fn erasure_scrubs_stored_models_at_once_and_completes_at_the_next_training() {
    let a = server().await;
    load(&a, true).await;
    train(&a).await;
    let row = user_row(a.dir.path(), 1, "victim").unwrap();
    let (status, receipt) = a.delete("/v1/users/victim").await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["status"], "awaiting_retrain");
    assert!(receipt["first_model_without_user"].is_null());
    // The key is blanked and the row zeroed; other rows are untouched.
    let users: Vec<String> =
        serde_json::from_slice(&model_file(a.dir.path(), 1, "users.json")).unwrap();
    assert_eq!(users[row], "");
    assert!(!users.contains(&"victim".to_owned()));
    let als = model_file(a.dir.path(), 1, "als.safetensors");
    let st = SafeTensors::deserialize(&als).unwrap();
    let u = st.tensor("user_factors").unwrap();
    let dim = u.shape()[1];
    let data = u.data();
    assert!(
        data[row * dim * 4..(row + 1) * dim * 4]
            .iter()
            .all(|&b| b == 0)
    );
    assert!(data[..row * dim * 4].iter().any(|&b| b != 0));

    train(&a).await;
    let id = receipt["erasure_id"].as_str().unwrap();
    let (_, done) = a.get(&format!("/v1/erasures/{id}")).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["first_model_without_user"]["version"], 2);
    assert_eq!(done["model_versions_deleted"], json!([1]));
    assert!(user_row(a.dir.path(), 2, "victim").is_none());
    assert_error(
        &a.get("/v1/erasures/era_000000000000000000000000").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    // The audit log names the erasure by reference, never by key.
    let (_, audit) = a.get("/v1/audit").await;
    let erase = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.erase")
        .expect("erasure audited");
    assert_eq!(erase["target"], done["user_ref"]);
    assert!(!audit.to_string().contains("victim"));
}

/// A user who objects to training keeps personalized results from their own history, but their
/// events shape nothing shared; consenting again brings them back at once.
#[tokio::test]
async fn training_objection_keeps_events_out_of_everything_shared() {
    let srv = server().await;
    load(&srv, false).await;
    let (status, user) = srv
        .put(
            "/v1/users/objector",
            json!({ "consent": { "training": false } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(
        user["consent"],
        json!({ "personalization": true, "training": false, "marketing": true })
    );
    // Heavy activity on an item nobody else touches, plus co-occurrence with i00.
    let mut evs = vec![json!({ "user": "objector", "item": "i00", "type": "purchase" })];
    for _ in 0..30 {
        evs.push(json!({ "user": "objector", "item": "niche", "type": "purchase" }));
    }
    let (status, _) = srv.post("/v1/events", json!({ "events": evs })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, popular) = srv.get("/v1/popular?n=100").await;
    assert!(!keys(&popular).contains(&"niche".to_owned()), "{popular}");
    let (_, similar) = srv
        .get("/v1/items/i00/similar?n=50&model=cooccurrence")
        .await;
    assert!(!keys(&similar).contains(&"niche".to_owned()), "{similar}");
    // Their own history still personalizes their results (they allowed personalization).
    let (_, recs) = srv.get("/v1/users/objector/recommendations").await;
    assert!(
        !keys(&recs).contains(&"niche".to_owned()),
        "seen items are excluded"
    );

    let trained = train(&srv).await;
    assert_eq!(
        trained["meta"]["data"]["users"], 40,
        "the objector is not trained on"
    );
    let items: Vec<String> =
        serde_json::from_slice(&model_file(srv.dir.path(), 1, "items.json")).unwrap();
    assert!(!items.contains(&"niche".to_owned()));
    assert!(user_row(srv.dir.path(), 1, "objector").is_none());

    // Consent again: the next request sees them in popularity.
    let (status, _) = srv
        .put(
            "/v1/users/objector",
            json!({ "consent": { "training": true } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, popular) = srv.get("/v1/popular?n=1").await;
    assert_eq!(keys(&popular), ["niche"]);
    let (_, similar) = srv
        .get("/v1/items/i00/similar?n=50&model=cooccurrence")
        .await;
    assert!(keys(&similar).contains(&"niche".to_owned()), "{similar}");

    let (_, audit) = srv.get("/v1/audit").await;
    let changes: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "consent.change")
        .collect();
    assert_eq!(changes.len(), 2, "{audit}");
    assert_eq!(changes[0]["detail"]["after"]["training"], true);
    assert!(changes[0]["target"].as_str().unwrap().starts_with("user:"));
    assert!(!audit.to_string().contains("objector"));
}

#[tokio::test]
async fn export_returns_everything_held_about_a_user() {
    let srv = server().await;
    load(&srv, true).await;
    train(&srv).await;
    let (status, export) = srv.get("/v1/users/victim/export").await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["format"], "bespoke.user-export.v1");
    assert_eq!(export["user"]["key"], "victim");
    assert_eq!(export["user"]["attributes"], json!({ "city": "Lyon" }));
    assert_eq!(
        export["user"]["consent"],
        json!({ "personalization": true, "training": true, "marketing": true })
    );
    let events = export["events"].as_array().unwrap();
    assert_eq!(events.len(), 63);
    assert!(
        events
            .iter()
            .all(|e| e["user"] == "victim" && e["event_id"].is_string())
    );
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let derived = &export["derived"];
    assert!(
        derived["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["item"] == "solo")
    );
    assert_eq!(derived["model_version"], 1);
    assert_eq!(derived["user_vector"].as_array().unwrap().len(), 8);
    // The format tag comes first, so `bespoke import` recognises the file.
    let resp = srv
        .client
        .get(format!("{}/v1/users/victim/export", srv.base))
        .send()
        .await
        .unwrap();
    assert!(
        resp.text()
            .await
            .unwrap()
            .starts_with(r#"{"format":"bespoke.user-export.v1""#)
    );
    assert_error(
        &srv.get("/v1/users/nobody/export").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let (_, audit) = srv.get("/v1/audit").await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "user.export"));
    let train = entries
        .iter()
        .find(|e| e["action"] == "model.train")
        .expect("retrain audited");
    assert_eq!(train["actor"], srv.admin_key[..12]);
    assert_eq!(train["target"], "1");
}

/// Events past `privacy.max_event_age_days` leave the store and serving; new ones that old are
/// refused.
#[tokio::test]
async fn retention_expires_old_events_everywhere() {
    let srv = server().await;
    let now = bespoke_server::engine::now_ms();
    let day = 86_400_000i64;
    let at = |t: i64| bespoke_server::time::format_rfc3339(t);
    let mut evs = Vec::new();
    for u in 0..5 {
        evs.push(json!({ "user": format!("u{u}"), "item": "old", "type": "purchase", "timestamp": at(now - 40 * day) }));
        evs.push(json!({ "user": format!("u{u}"), "item": "new", "type": "view", "timestamp": at(now - day) }));
    }
    let (status, _) = srv.post("/v1/events", json!({ "events": evs })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, popular) = srv.get("/v1/popular?n=2").await;
    assert_eq!(keys(&popular), ["old", "new"]);
    let dir = srv.stop().await;

    let srv = crate::common::start_in(dir, |s| s.privacy.max_event_age_days = 30.0).await;
    // The server enforces retention when it starts; wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while srv.counts().await["events"] != 5 {
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, popular) = srv.get("/v1/popular?n=5").await;
    assert_eq!(keys(&popular), ["new"]);
    let (_, events) = srv.get("/v1/users/u0/events").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
    // The audit entry is written just after the expiry commits (its own transaction).
    let expire = loop {
        let (_, audit) = srv.get("/v1/audit").await;
        if let Some(e) = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "events.expire")
        {
            break e.clone();
        }
        assert!(std::time::Instant::now() < deadline, "expiry never audited");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(expire["detail"]["events"], 5);
    // An event already past the limit is refused, naming the field.
    let got = srv
        .post(
            "/v1/events",
            json!({ "events": [{ "user": "u0", "item": "x", "type": "view", "timestamp": at(now - 31 * day) }] }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("events[0].timestamp"),
    );
}

/// With pseudonymized keys, the API takes and answers raw keys while no file under the data
/// directory ever holds one; the store refuses to open with another secret.
#[tokio::test]
async fn pseudonymized_stores_never_hold_a_raw_user_key() {
    const SECRET: &str = "a test secret that is long enough to key an HMAC";
    let pseudonymize = |s: &mut bespoke_server::Settings| {
        s.privacy.pseudonymize_user_keys = true;
        s.privacy.pseudonym_secret = bespoke_server::settings::Secret(SECRET.into());
        s.training.threads = 1;
    };
    let srv = start_with(pseudonymize).await;
    let raw = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let (status, user) = srv
        .put(
            "/v1/users/alice@example.com",
            json!({ "attributes": { "plan": "pro" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(user["key"], "alice@example.com");
    let mut evs = Vec::new();
    for (n, u) in raw.iter().enumerate() {
        for i in 0..4 {
            evs.push(json!({ "user": u, "item": format!("i{}", (n + i) % 5), "type": "purchase" }));
        }
    }
    let (status, _) = srv.post("/v1/events", json!({ "events": evs })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, user) = srv.get("/v1/users/alice@example.com").await;
    assert_eq!(
        (user["key"].as_str(), user["attributes"]["plan"].as_str()),
        (Some("alice@example.com"), Some("pro"))
    );
    let (_, events) = srv.get("/v1/users/bob@example.com/events").await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| e["user"] == "bob@example.com"));
    train(&srv).await;
    let (_, recs) = srv.get("/v1/users/alice@example.com/recommendations").await;
    assert_eq!(recs["personalized"], true, "{recs}");
    let (_, export) = srv.get("/v1/users/carol@example.com/export").await;
    assert_eq!(export["user"]["key"], "carol@example.com");
    assert!(
        export["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user"] == "carol@example.com")
    );
    let (status, receipt) = srv.delete("/v1/users/carol@example.com").await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["models_containing_user"], json!([1]));

    let dir = srv.stop().await;
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("bespoke.db")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for key in raw {
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "{} holds {key}",
                f.display()
            );
        }
    }

    // Another secret, or none, would split every user in two: refused.
    let mut settings = bespoke_server::Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.store.data_dir = dir.path().to_owned();
    let err = bespoke_server::start(settings.clone()).await.unwrap_err();
    assert!(err.to_string().contains("pseudonym"), "{err}");
    settings.privacy.pseudonymize_user_keys = true;
    settings.privacy.pseudonym_secret =
        bespoke_server::settings::Secret("another secret of at least thirty-two bytes".into());
    let err = bespoke_server::start(settings).await.unwrap_err();
    assert!(err.to_string().contains("pseudonym"), "{err}");
    let srv = crate::common::start_in(dir, pseudonymize).await;
    let (status, _) = srv.get("/v1/users/alice@example.com").await;
    assert_eq!(status, StatusCode::OK);
}
