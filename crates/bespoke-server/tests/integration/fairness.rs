//! Fairness over HTTP (docs/fairness.md): the re-rankers on ranking routes, "why not?", the
//! fairness report, and their bad input.

use bespoke_algo::rerank::Fair;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, keys, start};

/// Eight items, `k0`..`k3` in Kitchen and `g0`..`g3` in Garden, popularity
/// k0 > g0 > k1 > g1 > k2 > g2 > k3 > g3 (20, 18, ..., 6 buyers): the head (80% of
/// interactions) is the first six, the tail `k3` and `g3`. Garden items from "indie" makers.
/// `gardener` bought g1 and g2 (and nothing else); fans have Kitchen attributes.
async fn shop() -> TestServer {
    let srv = start().await;
    let order = ["k0", "g0", "k1", "g1", "k2", "g2", "k3", "g3"];
    for item in order {
        let (category, maker) = if item.starts_with('k') {
            ("Kitchen", "big")
        } else {
            ("Garden", "indie")
        };
        let (status, body) = srv
            .put(
                &format!("/v1/items/{item}"),
                json!({ "categories": [category], "attributes": { "maker": maker } }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut events = Vec::new();
    for (rank, item) in order.iter().enumerate() {
        for u in 0..(20 - 2 * rank) {
            events.push((format!("fan{u}"), item.to_string()));
        }
    }
    events.push(("gardener".into(), "g1".into()));
    events.push(("gardener".into(), "g2".into()));
    let refs: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(u, i)| (u.as_str(), i.as_str(), "purchase"))
        .collect();
    srv.events(&refs).await;
    for u in 0..20 {
        let gender = if u % 2 == 0 { "f" } else { "m" };
        let (status, body) = srv
            .put(
                &format!("/v1/users/fan{u}"),
                json!({ "attributes": { "gender": gender } }),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    srv
}

fn fairness_reasons<'a>(item: &'a Value, stage: &str) -> Vec<&'a Value> {
    item["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "fairness" && r["stage"] == stage)
        .collect()
}

fn garden_share(body: &Value) -> f64 {
    let k = keys(body);
    k.iter().filter(|i| i.starts_with('g')).count() as f64 / k.len() as f64
}

#[tokio::test]
async fn calibration_pulls_a_list_toward_the_users_categories() {
    let srv = shop().await;
    let (s, plain) = srv.get("/v1/popular?n=4&user=gardener").await;
    assert_eq!(s, StatusCode::OK, "{plain}");
    assert_eq!(keys(&plain), ["k0", "g0", "k1", "g1"]);
    let (s, body) = srv
        .get("/v1/popular?n=4&user=gardener&calibration=0.9")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // The gardener's history is all Garden: the calibrated list is too.
    assert_eq!(garden_share(&body), 1.0, "{body}");
    let moved: Vec<&Value> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !fairness_reasons(r, "calibration").is_empty())
        .collect();
    assert!(!moved.is_empty(), "{body}");
    for r in moved {
        let reason = fairness_reasons(r, "calibration")[0];
        assert_ne!(reason["from"], reason["to"], "{reason}");
        assert!(reason["message"].as_str().unwrap().contains("calibration"));
    }
    // λ = 0 leaves the order as scored, with no fairness reason.
    let (_, zero) = srv.get("/v1/popular?n=4&user=gardener&calibration=0").await;
    assert_eq!(keys(&zero), keys(&plain));
}

#[tokio::test]
async fn popularity_debiasing_lifts_the_long_tail() {
    let srv = shop().await;
    let (_, plain) = srv.get("/v1/popular?n=4").await;
    let tail = |body: &Value| {
        keys(body)
            .iter()
            .filter(|k| *k == "k3" || *k == "g3")
            .count()
    };
    assert_eq!(tail(&plain), 0);
    // (Inverse popularity cannot reorder a ranking by popularity: relevance / popularity is
    // the same for every item. It is tested with a model in `the_report_…` and in the algo
    // crate.)
    for method in ["xquad"] {
        let (s, body) = srv
            .get(&format!(
                "/v1/popular?n=4&popularity=1&popularity_method={method}"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert!(tail(&body) >= 1, "{method}: {body}");
        let lifted = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["item"] == "k3" || r["item"] == "g3")
            .unwrap();
        let reason = fairness_reasons(lifted, "popularity");
        assert_eq!(reason.len(), 1, "{lifted}");
        assert!(
            reason[0]["message"].as_str().unwrap().contains("long-tail"),
            "{lifted}"
        );
    }
}

#[tokio::test]
async fn a_protected_group_gets_its_share_at_every_prefix() {
    let srv = shop().await;
    let (p, alpha, n) = (0.9, 0.1, 6);
    let table = Fair::new(n, p, alpha).unwrap();
    let expr = "maker%20%3D%20%22indie%22";
    let (s, body) = srv
        .get(&format!(
            "/v1/popular?n={n}&protected={expr}&protected_share={p}&protected_alpha={alpha}"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let list = keys(&body);
    assert_eq!(list.len(), n);
    let mut protected = 0;
    for (k, item) in list.iter().enumerate() {
        protected += usize::from(item.starts_with('g'));
        assert!(
            protected >= table.mtable()[k],
            "prefix {} holds {protected} protected, needs {}: {body}",
            k + 1,
            table.mtable()[k]
        );
    }
    // The table asks for more than popularity gives, so some item was moved up, and says so.
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| !fairness_reasons(r, "protected_share").is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn bad_fairness_parameters_are_400s_naming_the_field() {
    let srv = shop().await;
    for (query, field) in [
        ("calibration=2", "calibration"),
        ("calibration=x", "calibration"),
        ("popularity=-0.5", "popularity"),
        (
            "popularity=0.5&popularity_method=magic",
            "popularity_method",
        ),
        ("protected_share=1", "protected_share"),
        ("protected_alpha=0", "protected_alpha"),
        ("protected=maker%20%3D%3D", "protected"),
        ("protected=maker%20%3D%20%22nobody%22", "protected"),
    ] {
        let got = srv.get(&format!("/v1/popular?n=4&{query}")).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field", Some(field));
    }
    // The same checks in a JSON body.
    let got = srv
        .post(
            "/v1/recommendations",
            json!({ "items": [{"item": "g1"}], "calibration": 1.5 }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("calibration"),
    );
}

#[tokio::test]
async fn why_not_names_the_stage_that_removed_or_demoted_an_item() {
    let srv = shop().await;
    // fan15 bought k0, g0 and k1.
    let (s, body) = srv.get("/v1/users/fan15/explain?item=k0").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["position"], Value::Null);
    let last = body["stages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["stage"], "already_seen", "{body}");
    assert_eq!(last["outcome"], "removed");

    let (_, body) = srv
        .get("/v1/users/fan15/explain?item=g1&filter=maker%20%3D%20%22big%22")
        .await;
    let last = body["stages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["stage"], "rule", "{body}");
    assert_eq!(last["rule"], "request.filter", "{body}");

    // g3 is the least popular: with two places it is not shown, and says where it ranks.
    let (_, body) = srv.get("/v1/users/fan15/explain?item=g3&n=2").await;
    assert_eq!(body["position"], Value::Null, "{body}");
    let last = body["stages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["stage"], "ranking", "{body}");
    assert_eq!(last["outcome"], "demoted");
    assert_eq!(body["rank_after_rules"], 5, "{body}");

    // With enough places it is shown, at the same position as recommendations give.
    let (_, recs) = srv.get("/v1/users/fan15/recommendations?n=8").await;
    let at = keys(&recs).iter().position(|k| k == "g3").unwrap() + 1;
    let (_, body) = srv.get("/v1/users/fan15/explain?item=g3&n=8").await;
    assert_eq!(body["position"], at, "{body}");
    assert!(body["verdict"].as_str().unwrap().starts_with("shown"));

    // Moved out by a re-ranker: the protected share needs garden items near the top.
    let (_, body) = srv
        .get("/v1/users/fan15/explain?item=k2&n=2&protected=maker%20%3D%20%22indie%22&protected_share=0.99")
        .await;
    assert_eq!(body["position"], Value::Null, "{body}");

    // Without consent to personalization the list is by popularity, and the first stage says
    // so.
    let (status, body) = srv
        .put(
            "/v1/users/fan15",
            json!({ "consent": { "personalization": false } }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, body) = srv.get("/v1/users/fan15/explain?item=g3&n=8").await;
    assert_eq!(body["stages"][0]["stage"], "consent", "{body}");
    assert_eq!(body["stages"][0]["outcome"], "applied", "{body}");
    assert_eq!(body["model"], "popular", "{body}");

    let got = srv.get("/v1/users/fan15/explain?item=nope").await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
    let got = srv.get("/v1/users/fan15/explain").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field", Some("item"));
}

#[tokio::test]
async fn the_fairness_report_measures_the_served_lists() {
    let srv = shop().await;
    let (s, body) = srv
        .get("/v1/reports/fairness?k=2&item_attribute=maker&item_attribute=category")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // 21 users with a history; without a model every list is the two most popular unseen items.
    assert_eq!(body["users"], 21, "{body}");
    assert_eq!(body["catalog_items"], 8, "{body}");
    assert_eq!(body["k"], 2);
    let coverage = body["coverage"].as_f64().unwrap();
    assert!(coverage > 0.0 && coverage <= 1.0, "{body}");
    let gini = body["gini"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&gini), "{body}");
    let exposure = body["exposure"].as_array().unwrap();
    assert_eq!(exposure.len(), 2);
    assert_eq!(exposure[0]["attribute"], "maker");
    let shares: f64 = exposure[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["exposure_share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{body}");
    assert!(body["popularity_lift"]["lift"].is_number(), "{body}");
    // The report measures lists as served with the re-rankers asked for: calibration lowers
    // the miscalibration it reports.
    let (_, calibrated) = srv.get("/v1/reports/fairness?k=2&calibration=1").await;
    assert!(
        calibrated["miscalibration"]["mean"].as_f64().unwrap()
            < body["miscalibration"]["mean"].as_f64().unwrap(),
        "{calibrated}"
    );

    let got = srv
        .get("/v1/reports/fairness?user_attribute=shoe_size")
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("user_attribute"),
    );
    let got = srv.get("/v1/reports/fairness?k=0").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field", Some("k"));
}

/// A skewed shop: five head items most of 80 users bought, and 40 tail items in ten taste
/// clusters of four, each bought by some of its cluster's eight users.
async fn skewed(srv: &TestServer) {
    let mut events = Vec::new();
    let mut x: u64 = 11;
    let mut draw = |n: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % n
    };
    for u in 0..80u64 {
        for h in 0..5 {
            if draw(10) < 7 {
                events.push(
                    json!({ "user": format!("u{u}"), "item": format!("h{h}"), "type": "purchase" }),
                );
            }
        }
        let cluster = u % 10;
        for t in 0..4 {
            if draw(10) < 5 {
                events.push(json!({ "user": format!("u{u}"), "item": format!("t{}", cluster * 4 + t), "type": "purchase" }));
            }
        }
    }
    let (status, body) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn propensity_weighted_training_is_recorded_changes_the_model_and_stays_explained() {
    let plain = start().await;
    skewed(&plain).await;
    let weighted = crate::common::start_with(|s| {
        s.training.propensity_weighting = true;
    })
    .await;
    skewed(&weighted).await;
    let (_, models) = weighted.get("/v1/models").await;
    assert_eq!(
        models["models"][0]["meta"]["params"]["propensity"],
        json!({ "eta": 0.5, "max_factor": 10.0 }),
        "{models}"
    );
    let (_, models) = plain.get("/v1/models").await;
    assert!(
        models["models"][0]["meta"]["params"]["propensity"].is_null(),
        "{models}"
    );
    let mut differ = 0;
    for u in 0..20 {
        let path = format!("/v1/users/u{u}/recommendations?n=5&model=als&explain=full");
        let (_, p) = plain.get(&path).await;
        let (s, w) = weighted.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{w}");
        differ += usize::from(keys(&p) != keys(&w));
        // Serving folds the history in with the training weights: the terms still sum to
        // the score.
        for r in w["items"].as_array().unwrap() {
            let score = r["score"].as_f64().unwrap();
            let sum: f64 = r["contributions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["value"].as_f64().unwrap())
                .sum();
            assert!(
                (sum - score).abs() <= 1e-4 * score.abs().max(1e-3),
                "{sum} vs {score}: {r}"
            );
        }
    }
    assert!(differ > 0, "propensity weighting changed no list");
}

#[tokio::test]
async fn training_evaluation_reports_ips_metrics_from_impressions_where_shown() {
    let srv = start().await;
    skewed(&srv).await;
    let (_, models) = srv.get("/v1/models").await;
    let metrics = &models["models"][0]["meta"]["metrics"];
    assert_eq!(
        metrics["propensity"], "(n / max n)^0.5 of training popularity",
        "{models}"
    );
    for key in [
        "ndcg@10_ips",
        "ndcg@10_snips",
        "recall@10_ips",
        "recall@10_snips",
    ] {
        let v = metrics["als"]["debiased"][key].as_f64();
        assert!(
            v.is_some_and(|v| v.is_finite() && v >= 0.0),
            "{key}: {metrics}"
        );
    }
    // Once the application sends impressions, the items shown get exposure propensities.
    let impressions: Vec<Value> = (0..80)
        .map(|u| json!({ "user": format!("u{u}"), "items": ["h0", "h1", "t0", "t5"] }))
        .collect();
    let (status, body) = srv
        .post("/v1/impressions", json!({ "impressions": impressions }))
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, models) = srv.get("/v1/models").await;
    let newest = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|v| v["version"].as_u64())
        .unwrap();
    assert_eq!(
        newest["meta"]["metrics"]["propensity"], "impressions where shown, else (n / max n)^0.5",
        "{newest}"
    );
}

#[tokio::test]
async fn re_rankers_chain_over_the_whole_pool_and_respect_consent() {
    let srv = shop().await;
    // Calibration pulls the gardener's list to Garden; a protected share of Kitchen makers
    // after it still finds Kitchen items below the cut it made.
    let (s, body) = srv
        .get("/v1/popular?n=2&user=gardener&calibration=0.9&protected=maker%20%3D%20%22big%22&protected_share=0.99")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let table = Fair::new(2, 0.99, 0.1).unwrap();
    let list = keys(&body);
    let kitchen = list.iter().filter(|k| k.starts_with('k')).count();
    assert!(kitchen >= table.mtable()[1], "{body}");
    // Without consent to personalization the history shapes nothing.
    let (status, body) = srv
        .put(
            "/v1/users/gardener",
            json!({ "consent": { "personalization": false } }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, plain) = srv.get("/v1/popular?n=4&user=gardener").await;
    let (_, calibrated) = srv
        .get("/v1/popular?n=4&user=gardener&calibration=0.9")
        .await;
    assert_eq!(keys(&calibrated), keys(&plain), "{calibrated}");
}
