//! Decision loops over HTTP: decisions, rewards, activation, windows, apprentice mode,
//! explanations, restarts, erasure, evaluation and the Personalizer-compatible routes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{assert_error, start, start_in};

fn actions(n: usize) -> Value {
    json!((0..n)
        .map(|i| json!({"id": format!("a{i}"), "features": {"tone": if i % 2 == 0 { "formal" } else { "casual" }, "length": i as f64 / 10.0}}))
        .collect::<Vec<_>>())
}

fn decision(n: usize) -> Value {
    json!({"context": {"device": "mobile", "hour": 13, "user": {"age": 30}}, "actions": actions(n)})
}

#[tokio::test]
async fn decide_reward_and_errors() {
    let srv = start().await;
    let (status, d) = srv.post("/v1/loops/home/decisions", decision(5)).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    let ranking = d["ranking"].as_array().unwrap();
    assert_eq!(ranking.len(), 5);
    let total: f64 = ranking
        .iter()
        .map(|r| r["probability"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-9, "{d}");
    assert!(ranking[0]["probability"].as_f64().unwrap() > 0.0);
    let id = d["decision_id"].as_str().unwrap().to_owned();

    let (status, ack) = srv
        .post(&format!("/v1/decisions/{id}/reward"), json!({"value": 1.0}))
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["action"], ranking[0]["action"]);
    assert_eq!(ack["learned"], true);
    let (_, view) = srv.get("/v1/loops/home").await;
    assert_eq!(view["model_updates"], 1, "{view}");
    assert_eq!(view["stats"]["decisions"], 1);
    assert_eq!(view["stats"]["rewards"], 1);

    assert_error(
        &srv.post(&format!("/v1/decisions/{id}/reward"), json!({"value": 0.0}))
            .await,
        StatusCode::CONFLICT,
        "already_rewarded",
        Some("slot"),
    );
    assert_error(
        &srv.post(
            &format!("/v1/decisions/{id}/reward"),
            json!({"value": 1.0, "slot": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("slot"),
    );
    assert_error(
        &srv.post("/v1/decisions/nope/reward", json!({"value": 1.0}))
            .await,
        StatusCode::NOT_FOUND,
        "unknown_decision",
        Some("decision_id"),
    );
    assert_error(
        &srv.post(
            &format!("/v1/decisions/{id}/reward"),
            json!({"value": "high"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        Some("value"),
    );
    // A client-chosen id cannot be reused.
    let mut body = decision(2);
    body["decision_id"] = json!("mine-1");
    assert_eq!(
        srv.post("/v1/loops/home/decisions", body.clone()).await.0,
        StatusCode::CREATED
    );
    assert_error(
        &srv.post("/v1/loops/home/decisions", body).await,
        StatusCode::CONFLICT,
        "duplicate_decision",
        Some("decision_id"),
    );
    // Bad requests name the field.
    for (body, field) in [
        (json!({"actions": []}), "actions"),
        (
            json!({"actions": [{"id": "a"}, {"id": "a"}]}),
            "actions[1].id",
        ),
        (json!({"actions": [{"id": ""}]}), "actions[0].id"),
        (
            json!({"actions": [{"id": "a"}], "exclude": ["b"]}),
            "exclude[0]",
        ),
        (
            json!({"actions": [{"id": "a"}], "exclude": ["a"]}),
            "exclude",
        ),
        (json!({"actions": [{"id": "a"}], "slots": 2}), "slots"),
        (json!({"actions": [{"id": "a"}], "slots": -1}), "slots"),
        (
            json!({"actions": [{"id": "a"}], "baseline": "z"}),
            "baseline",
        ),
        (
            json!({"actions": [{"id": "a"}], "context": {"x": {"y": 1e300}}}),
            "context.x.y",
        ),
        (
            json!({"actions": [{"id": "a", "features": 3}]}),
            "actions[0].features",
        ),
        (json!({"actions": [{"id": "a"}], "colour": 1}), "colour"),
    ] {
        let got = srv.post("/v1/loops/home/decisions", body.clone()).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{body}: {}", got.1);
        let f = got.1["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            f.starts_with(field) || f.contains(field),
            "{body}: field {f}, want {field}"
        );
    }
    assert_error(
        &srv.post_raw(
            "/v1/loops/home/decisions",
            "application/json",
            br#"{"actions":[{"id":"a"}],"context":{"k":1,"k":2}}"#.to_vec(),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
    );
}

#[tokio::test]
async fn slates_exclusions_and_explanations() {
    let srv = start().await;
    let mut body = decision(60);
    body["slots"] = json!(10);
    body["exclude"] = json!(["a3", "a7"]);
    // Some learning first, so that the explanations have weights to show.
    for _ in 0..20 {
        let (_, d) = srv.post("/v1/loops/slate/decisions", body.clone()).await;
        let id = d["decision_id"].as_str().unwrap();
        for slot in 0..10 {
            let r = srv
                .post(
                    &format!("/v1/decisions/{id}/reward"),
                    json!({"value": (slot % 3) as f64 / 2.0, "slot": slot}),
                )
                .await;
            assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        }
    }
    let (status, d) = srv.post("/v1/loops/slate/decisions", body).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    assert_eq!(d["slots"], 10);
    let ranking = d["ranking"].as_array().unwrap();
    assert_eq!(ranking.len(), 60);
    let slate: Vec<&str> = ranking[..10]
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    let mut distinct = slate.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10);
    assert!(!slate.contains(&"a3") && !slate.contains(&"a7"));
    for r in &ranking[..10] {
        assert!(r["probability"].as_f64().unwrap() > 0.0);
    }
    // Excluded actions come last with probability 0.
    for r in &ranking[58..] {
        assert!(["a3", "a7"].contains(&r["action"].as_str().unwrap()));
        assert_eq!(r["probability"], 0.0);
    }
    // Contributions + exploration = served score.
    let explained = d["explanation"]["actions"].as_array().unwrap();
    assert_eq!(explained.len(), 20);
    let score_of = |a: &str| {
        ranking.iter().find(|r| r["action"] == a).unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    let mut nonzero = 0;
    for e in explained {
        let sum: f64 = e["contributions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["contribution"].as_f64().unwrap())
            .sum::<f64>()
            + e["exploration"].as_f64().unwrap();
        let score = score_of(e["action"].as_str().unwrap());
        assert!(
            (sum - score).abs() < 1e-4 * (1.0 + score.abs()),
            "{e}: {sum} vs {score}"
        );
        nonzero += e["contributions"].as_array().unwrap().len();
        // The reason schema of the ranking routes: context features, then exploration.
        let reasons = e["reasons"].as_array().expect("reasons");
        assert!(!reasons.is_empty(), "{e}");
        for r in reasons {
            assert!(
                ["context", "exploration"].contains(&r["kind"].as_str().unwrap()),
                "{r}"
            );
            assert!(r["message"].is_string(), "{r}");
        }
    }
    assert!(nonzero > 0, "{d}");
    assert!(
        explained[0]["contributions"][0]["feature"]
            .as_str()
            .unwrap()
            .contains(':')
    );
}

#[tokio::test]
async fn deferred_activation_windows_and_default_rewards() {
    let srv = start().await;
    let (s, _) = srv
        .put(
            "/v1/loops/w",
            json!({"reward_wait_seconds": 60, "default_reward": 0.25}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut body = decision(3);
    body["defer_activation"] = json!(true);
    let (_, d) = srv.post("/v1/loops/w/decisions", body).await;
    assert_eq!(d["activated"], false);
    let id = d["decision_id"].as_str().unwrap().to_owned();
    assert_error(
        &srv.post(&format!("/v1/decisions/{id}/reward"), json!({"value": 1.0}))
            .await,
        StatusCode::CONFLICT,
        "not_activated",
        None,
    );
    let (s, a) = srv
        .post(&format!("/v1/decisions/{id}/activate"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["changed"], true);
    // Two more decisions: one rewarded, one left to its window.
    let (_, d2) = srv.post("/v1/loops/w/decisions", decision(3)).await;
    let id2 = d2["decision_id"].as_str().unwrap().to_owned();
    let (_, d3) = srv.post("/v1/loops/w/decisions", decision(3)).await;
    let id3 = d3["decision_id"].as_str().unwrap().to_owned();
    assert_eq!(
        srv.post(&format!("/v1/decisions/{id2}/reward"), json!({"value": 1}))
            .await
            .0,
        StatusCode::OK
    );

    // Time is passed explicitly: no sleeping. A minute later the windows are closed.
    let engine = srv.engine();
    let later = bespoke_server::engine::now_ms() + 61_000;
    let id3_late = id3.clone();
    let settled = tokio::task::spawn_blocking(move || {
        let d = engine.decisions();
        let n = d.settle_expired(later).unwrap();
        let late = d.reward(&id3_late, None, 1.0, later);
        (n, late)
    })
    .await
    .unwrap();
    // `id2` closed when it got its reward; `id` and `id3` close now.
    assert_eq!(settled.0, 2);
    assert!(matches!(
        settled.1,
        Err(bespoke_server::decisions::DecisionError::Expired(_))
    ));
    let (_, view) = srv.get("/v1/loops/w").await;
    // Defaults for `id` (activated, unrewarded) and `id3`; `id2` had its reward.
    assert_eq!(view["stats"]["rewards"], 3, "{view}");
    assert_eq!(view["stats"]["default_rewards"], 2, "{view}");
    assert_eq!(view["model_updates"], 3);
    assert!((view["stats"]["mean_reward"].as_f64().unwrap() - 1.5 / 3.0).abs() < 1e-12);
    assert_error(
        &srv.post(&format!("/v1/decisions/{id3}/reward"), json!({"value": 1}))
            .await,
        StatusCode::GONE,
        "reward_window_closed",
        None,
    );
    assert_error(
        &srv.post("/v1/decisions/unknown/activate", json!({})).await,
        StatusCode::NOT_FOUND,
        "unknown_decision",
        None,
    );
}

#[tokio::test]
async fn apprentice_mode_serves_the_baseline_and_reports_agreement() {
    let srv = start().await;
    let (s, v) = srv
        .put("/v1/loops/app", json!({"mode": "apprentice"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The baseline is always a2, and a2 is the one that pays: the learner comes to agree.
    for _ in 0..200 {
        let mut body = decision(4);
        body["baseline"] = json!("a2");
        let (_, d) = srv.post("/v1/loops/app/decisions", body).await;
        assert_eq!(d["ranking"][0]["action"], "a2", "{d}");
        assert_eq!(d["ranking"][0]["probability"], 1.0);
        assert_eq!(d["explanation"]["mode"], "apprentice");
        let id = d["decision_id"].as_str().unwrap();
        srv.post(&format!("/v1/decisions/{id}/reward"), json!({"value": 1.0}))
            .await;
    }
    let (_, view) = srv.get("/v1/loops/app").await;
    let a = &view["stats"]["apprentice"];
    assert_eq!(a["decisions"], 200, "{view}");
    // Only the served action is ever rewarded, so the learner can only learn to prefer it.
    assert!(a["agreement_rate"].as_f64().unwrap() > 0.9, "{view}");
}

#[tokio::test]
async fn a_restart_loses_no_learning() {
    let srv = start_in(tempfile::tempdir().unwrap(), |s| {
        s.decisions.checkpoint_every = 7
    })
    .await;
    for i in 0..25 {
        let (_, d) = srv.post("/v1/loops/r/decisions", decision(4)).await;
        let id = d["decision_id"].as_str().unwrap();
        srv.post(
            &format!("/v1/decisions/{id}/reward"),
            json!({"value": (i % 2) as f64}),
        )
        .await;
    }
    let before = srv.engine().decisions().model_bytes("r").unwrap();
    let dir = srv.stop().await;
    let srv = start_in(dir, |_| {}).await;
    assert_eq!(srv.engine().decisions().model_bytes("r").unwrap(), before);
    let (_, view) = srv.get("/v1/loops/r").await;
    assert_eq!(view["model_updates"], 25);
}

#[tokio::test]
async fn configuration_changes_rebuild_from_the_log() {
    let srv = start().await;
    for i in 0..30 {
        let (_, d) = srv.post("/v1/loops/c/decisions", decision(3)).await;
        let id = d["decision_id"].as_str().unwrap();
        srv.post(
            &format!("/v1/decisions/{id}/reward"),
            json!({"value": (i % 3) as f64 / 2.0}),
        )
        .await;
    }
    let (s, v) = srv
        .put(
            "/v1/loops/c",
            json!({"learner": {"learning_rate": 0.5, "interactions": []}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Every logged reward was learned again under the new parameters.
    assert_eq!(v["model_updates"], 30, "{v}");
    assert_error(
        &srv.put("/v1/loops/c", json!({"learner": {"bits": 40}}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("learner.bits"),
    );
    assert_error(
        &srv.put(
            "/v1/loops/c",
            json!({"learner": {"exploration": {"policy": "epsilon_greedy", "epsilon": 2}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("learner.exploration.epsilon"),
    );
    assert_error(
        &srv.put("/v1/loops/c", json!({"mode": "sometimes"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        Some("mode"),
    );
    assert_error(
        &srv.get("/v1/loops/nope").await,
        StatusCode::NOT_FOUND,
        "unknown_loop",
        None,
    );
}

/// Erasing a user removes their decisions and what the learner learned from them: the learner
/// is then bit-identical to one that never saw them. One action per decision makes the choice,
/// and so the learning, independent of exploration draws.
#[tokio::test]
async fn erasure_reaches_the_decision_learner() {
    let with = start().await;
    let without = start().await;
    for i in 0..40 {
        let user = if i % 3 == 0 { "erased" } else { "kept" };
        let body = json!({"user": user, "context": {"hour": i % 24, "user": user},
            "actions": [{"id": format!("a{}", i % 5), "features": {"tone": i % 2}}]});
        let reward = json!({"value": (i % 4) as f64 / 3.0});
        for (srv, is_clean) in [(&with, false), (&without, true)] {
            if is_clean && user == "erased" {
                continue;
            }
            let (s, d) = srv.post("/v1/loops/e/decisions", body.clone()).await;
            assert_eq!(s, StatusCode::CREATED, "{d}");
            let id = d["decision_id"].as_str().unwrap();
            srv.post(&format!("/v1/decisions/{id}/reward"), reward.clone())
                .await;
        }
    }
    let (_, export) = with.get("/v1/users/erased/export").await;
    // Decisions alone do not create a user profile.
    assert_eq!(export["error"]["code"], "not_found", "{export}");
    let (s, receipt) = with.delete("/v1/users/erased").await;
    assert_eq!(s, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["removed"]["decisions"], 14, "{receipt}");
    assert_eq!(receipt["removed"]["decision_loops_rebuilt"], json!(["e"]));
    assert_eq!(
        with.engine().decisions().model_bytes("e").unwrap(),
        without.engine().decisions().model_bytes("e").unwrap()
    );
    let (_, view) = with.get("/v1/loops/e").await;
    assert_eq!(view["stats"]["decisions"], 26);
}

#[tokio::test]
async fn export_includes_decisions() {
    let srv = start().await;
    srv.events(&[("u1", "i1", "view")]).await;
    let body = json!({"user": "u1", "actions": [{"id": "x"}]});
    let (_, d) = srv.post("/v1/loops/x/decisions", body).await;
    let id = d["decision_id"].as_str().unwrap();
    srv.post(&format!("/v1/decisions/{id}/reward"), json!({"value": 1}))
        .await;
    let (s, export) = srv.get("/v1/users/u1/export").await;
    assert_eq!(s, StatusCode::OK);
    let decisions = export["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["decision_id"], id);
    assert_eq!(decisions[0]["rewards"][0]["value"], 1.0);
}

#[tokio::test]
async fn consent_applies_to_decisions() {
    let srv = start().await;
    let (s, _) = srv
        .put(
            "/v1/users/private",
            json!({"consent": {"personalization": false, "training": false}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, d) = srv
        .post("/v1/loops/k/decisions", json!({"user": "private", "context": {"city": "Oslo"}, "actions": [{"id": "a"}, {"id": "b"}]}))
        .await;
    assert_eq!(d["explanation"]["personalized"], false, "{d}");
    // The context is not used: no contribution mentions it.
    assert!(!d.to_string().contains("city="), "{d}");
    let id = d["decision_id"].as_str().unwrap();
    let (_, ack) = srv
        .post(&format!("/v1/decisions/{id}/reward"), json!({"value": 1}))
        .await;
    assert_eq!(ack["learned"], false);
    let (_, view) = srv.get("/v1/loops/k").await;
    assert_eq!(view["model_updates"], 0, "{view}");
}

#[tokio::test]
async fn evaluation_reports_every_policy_and_applies_a_candidate() {
    let srv = start().await;
    srv.put("/v1/loops/ev", json!({"reward_wait_seconds": 1}))
        .await;
    // A loop where the formal tone pays on mobile and the casual one on desktop.
    for i in 0..300 {
        let device = if i % 2 == 0 { "mobile" } else { "desktop" };
        let body = json!({"context": {"device": device}, "baseline": "a0",
            "actions": [{"id": "a0", "features": {"tone": "formal"}}, {"id": "a1", "features": {"tone": "casual"}}]});
        let (_, d) = srv.post("/v1/loops/ev/decisions", body).await;
        let id = d["decision_id"].as_str().unwrap();
        let chosen = d["ranking"][0]["action"].as_str().unwrap();
        let good = (device == "mobile") == (chosen == "a0");
        srv.post(
            &format!("/v1/decisions/{id}/reward"),
            json!({"value": if good { 1.0 } else { 0.0 }}),
        )
        .await;
    }
    let engine = srv.engine();
    let later = bespoke_server::engine::now_ms() + 5_000;
    tokio::task::spawn_blocking(move || engine.decisions().settle_expired(later).unwrap())
        .await
        .unwrap();
    let (s, report) = srv.get("/v1/loops/ev/evaluation").await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["decisions"], 300);
    let policies = report["policies"].as_array().unwrap();
    let value = |name: &str, estimator: &str| {
        policies
            .iter()
            .find(|p| p["policy"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {report}"))[estimator]["value"]
            .as_f64()
            .unwrap()
    };
    // The baseline (always formal) earns 0.5, uniform 0.5, the learner far more. IPS is
    // unbiased; DR leans on a reward model that has seen few bad choices, so only the learned
    // policy is checked with it.
    assert!((value("baseline", "ips") - 0.5).abs() < 0.15, "{report}");
    assert!((value("uniform", "ips") - 0.5).abs() < 0.15, "{report}");
    assert!(value("current_greedy", "dr") > 0.75, "{report}");
    assert!(value("online", "ips") > 0.75, "{report}");
    for p in policies {
        let dr = &p["dr"];
        assert!(dr["ci95"][0].as_f64().unwrap() <= dr["value"].as_f64().unwrap());
    }
    // The device and the tone carry the signal.
    let importance = report["feature_importance"].as_array().unwrap();
    assert!(
        importance
            .iter()
            .any(|f| f["namespace"] == "device" && f["loss_increase"].as_f64().unwrap() > 0.0),
        "{report}"
    );
    let (s, v) = srv
        .post(
            "/v1/loops/ev/evaluation/apply",
            json!({"candidate": "exploration=epsilon_greedy(0.05)"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["config"]["learner"]["exploration"]["policy"],
        "epsilon_greedy"
    );
    assert_error(
        &srv.post(
            "/v1/loops/ev/evaluation/apply",
            json!({"candidate": "magic"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("candidate"),
    );
    assert_error(
        &srv.get("/v1/loops/ev/evaluation?max_decisions=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("max_decisions"),
    );
}

#[tokio::test]
async fn personalizer_routes_with_the_subscription_key_header() {
    let srv = start().await;
    let client = reqwest::Client::new();
    let base = format!("{}/personalizer/v1.0", srv.base);
    let rank = json!({
        "contextFeatures": [{"timeOfDay": "morning"}, {"device": {"os": "ios"}}],
        "actions": [{"id": "news", "features": [{"topic": "politics"}]}, {"id": "sport", "features": [{"topic": "football"}]}],
        "excludedActions": ["sport"], "eventId": "evt-1", "deferActivation": false
    });
    let resp = client
        .post(format!("{base}/rank"))
        .header("Ocp-Apim-Subscription-Key", &srv.admin_key)
        .json(&rank)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["eventId"], "evt-1");
    assert_eq!(body["rewardActionId"], "news");
    assert_eq!(
        body["ranking"][1],
        json!({"id": "sport", "probability": 0.0})
    );
    let resp = client
        .post(format!("{base}/events/evt-1/reward"))
        .header("Ocp-Apim-Subscription-Key", &srv.admin_key)
        .json(&json!({"value": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = client
        .post(format!("{base}/events/evt-1/reward"))
        .json(&json!({"value": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (_, view) = srv.get("/v1/loops/personalizer").await;
    assert_eq!(view["model_updates"], 1, "{view}");
}

/// Runs one of the client scripts against the server; its JSON summary.
async fn run_client(srv: &crate::common::TestServer, script: &'static str) -> Value {
    let python = tokio::task::spawn_blocking(|| {
        crate::common::test_python(
            "azure.cognitiveservices.personalizer, msrest, azure.ai.personalizer",
            "Azure's Personalizer clients",
        )
    })
    .await
    .unwrap();
    let (base, key) = (srv.base.clone(), srv.admin_key.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("ENDPOINT", base)
            .env("KEY", key)
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
    serde_json::from_str(stdout.trim()).expect("JSON summary")
}

#[tokio::test]
async fn personalizer_python_client() {
    let srv = start().await;
    let summary = run_client(
        &srv,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/personalizer_client.py"
        ),
    )
    .await;
    assert_eq!(summary["ok"], true);
    let (_, view) = srv.get("/v1/loops/personalizer").await;
    assert_eq!(view["model_updates"], 2, "{view}");
    assert_eq!(view["stats"]["decisions"], 2, "{view}");

    // Azure's newer client: the version in the query, and the multi-slot routes.
    let summary = run_client(
        &srv,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/personalizer_multislot_client.py"
        ),
    )
    .await;
    assert_eq!(summary["ok"], true);
    let (_, view) = srv.get("/v1/loops/personalizer").await;
    // 2 before, then a single-slot reward, two slots of ms-1 and one slot of the deferred one.
    assert_eq!(view["model_updates"], 6, "{view}");
    assert_eq!(view["stats"]["decisions"], 5, "{view}");
}

#[tokio::test]
async fn retention_expires_old_decision_logs() {
    let srv = crate::common::start_with(|s| s.privacy.max_event_age_days = 7.0).await;
    // A reward window of 20 days keeps the old decision's deadline in the future, so the
    // background settler (which gives overdue decisions the default reward) leaves it to the
    // reward below; retention goes by the decision's age.
    let (status, _) = srv
        .put("/v1/loops/ret", json!({"reward_wait_seconds": 20 * 86_400}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let engine = srv.engine();
    let (old, recent) = tokio::task::spawn_blocking(move || {
        let d = engine.decisions();
        let consent = bespoke_server::decisions::DecisionConsent {
            personalization: true,
            training: true,
        };
        let input = |id: &str| bespoke_server::decisions::DecisionInput {
            id: Some(id.to_owned()),
            actions: vec![bespoke_server::decisions::ActionInput {
                id: "a".into(),
                features: json!({"k": 1}),
            }],
            ..Default::default()
        };
        let now = bespoke_server::engine::now_ms();
        let ten_days_ago = now - 10 * 86_400_000;
        d.decide("ret", input("old"), None, consent, ten_days_ago)
            .unwrap();
        d.reward("old", None, 1.0, ten_days_ago + 1).unwrap();
        d.decide("ret", input("recent"), None, consent, now)
            .unwrap();
        d.reward("recent", None, 1.0, now).unwrap();
        let expired = engine.apply_retention("test").unwrap();
        assert_eq!(expired, 0, "no events were stored");
        (
            engine.store().decision("old").unwrap(),
            engine.store().decision("recent").unwrap(),
        )
    })
    .await
    .unwrap();
    assert!(
        old.is_none(),
        "a decision past privacy.max_event_age_days is deleted"
    );
    assert!(recent.is_some());
    let (_, audit) = srv.get("/v1/audit").await;
    assert!(audit.to_string().contains("decisions.expire"), "{audit}");
}

/// Named slots with features of their own: the same action can be right for one slot and wrong
/// for another, and the loop learns which.
#[tokio::test]
async fn named_slots_learn_from_their_own_features() {
    let srv = start().await;
    let body = |id: Option<&str>| {
        let mut b = json!({
            "context": {"page": "home"},
            "actions": [{"id": "a", "features": {"shape": "wide"}}, {"id": "b", "features": {"shape": "tall"}},
                        {"id": "c", "features": {"shape": "square"}}],
            "slot_specs": [
                {"id": "banner", "features": {"size": "big"}, "exclude": ["c"]},
                {"id": "sidebar", "features": {"size": "small"}}
            ]
        });
        if let Some(id) = id {
            b["decision_id"] = json!(id);
        }
        b
    };
    for i in 0..400 {
        let (s, d) = srv.post("/v1/loops/slots/decisions", body(None)).await;
        assert_eq!(s, StatusCode::CREATED, "{d}");
        assert_eq!(d["slots"], 2);
        assert_ne!(d["ranking"][0]["action"], "c", "the banner excludes c: {d}");
        let id = d["decision_id"].as_str().unwrap();
        // Wide things pay in the big slot, tall things in the small one.
        for (slot, want) in [(0, "a"), (1, "b")] {
            let got = d["ranking"][slot]["action"].as_str().unwrap();
            let r = srv
                .post(
                    &format!("/v1/decisions/{id}/reward"),
                    json!({"slot": slot, "value": if got == want { 1.0 } else { 0.0 }}),
                )
                .await;
            assert_eq!(r.0, StatusCode::OK, "round {i}: {}", r.1);
        }
    }
    let mut right = 0;
    for k in 0..20 {
        let (_, d) = srv
            .post(
                "/v1/loops/slots/decisions",
                body(Some(&format!("check-{k}"))),
            )
            .await;
        right += usize::from(d["ranking"][0]["action"] == "a" && d["ranking"][1]["action"] == "b");
    }
    assert!(right >= 17, "only {right} of 20 slates right");
    for (bad, field) in [
        (json!([{"id": "x"}, {"id": "x"}]), "slot_specs[1].id"),
        (
            json!([{"id": "x", "exclude": ["zzz"]}]),
            "slot_specs[0].exclude[0]",
        ),
        (
            json!([{"id": "x", "exclude": ["a"], "baseline": "a"}]),
            "slot_specs[0].baseline",
        ),
    ] {
        let mut b = body(None);
        b["slot_specs"] = bad;
        assert_error(
            &srv.post("/v1/loops/slots/decisions", b).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }
}

/// Rewards arriving concurrently while checkpoints are taken: after a restart the learner has
/// learned each reward exactly once (checkpoint + replay of what came after it).
#[tokio::test]
async fn concurrent_rewards_survive_checkpoints_and_a_restart_exactly_once() {
    let srv = start_in(tempfile::tempdir().unwrap(), |s| {
        s.decisions.checkpoint_every = 7
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..160 {
        let (_, d) = srv.post("/v1/loops/conc/decisions", decision(3)).await;
        ids.push(d["decision_id"].as_str().unwrap().to_owned());
    }
    let srv = std::sync::Arc::new(srv);
    let mut tasks = Vec::new();
    for chunk in ids.chunks(20) {
        let srv = srv.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for (k, id) in chunk.iter().enumerate() {
                let (s, body) = srv
                    .post(
                        &format!("/v1/decisions/{id}/reward"),
                        json!({"value": (k % 2) as f64}),
                    )
                    .await;
                assert_eq!(s, StatusCode::OK, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, before) = srv.get("/v1/loops/conc").await;
    assert_eq!(before["model_updates"], 160, "{before}");
    let srv = std::sync::Arc::try_unwrap(srv)
        .ok()
        .expect("no other owner");
    let dir = srv.stop().await;
    let srv = start_in(dir, |_| {}).await;
    let (_, after) = srv.get("/v1/loops/conc").await;
    assert_eq!(after["model_updates"], 160, "{after}");
    assert_eq!(after["stats"]["rewards"], 160);
    assert_eq!(after["learned_through"], before["learned_through"]);
}
