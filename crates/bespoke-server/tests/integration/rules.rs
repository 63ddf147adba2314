//! Business rules over HTTP: filters, boosts, promotions, caps, saved rules, impressions and
//! no-repeat, hiding, explanations, and bad input (docs/rules.md).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, client_with_key, keys, start};

/// Eight items: `k0`..`k3` in Kitchen, `g0`..`g3` in Garden, popularity k0 > g0 > k1 > g1 > ...
/// Prices 10, 20, ... by popularity; even items organic; `g3` in the winter campaign.
async fn shop() -> TestServer {
    let srv = start().await;
    let order = ["k0", "g0", "k1", "g1", "k2", "g2", "k3", "g3"];
    for (rank, item) in order.iter().enumerate() {
        let category = if item.starts_with('k') {
            "Kitchen"
        } else {
            "Garden"
        };
        let mut attributes =
            json!({ "tags": if rank % 2 == 0 { json!(["organic"]) } else { json!(["plain"]) } });
        if *item == "g3" {
            attributes["campaign"] = json!("winter");
        }
        let (status, body) = srv
            .put(
                &format!("/v1/items/{item}"),
                json!({ "categories": [category], "numeric": { "price": 10.0 * (rank + 1) as f64 },
                        "attributes": attributes }),
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
    let refs: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(u, i)| (u.as_str(), i.as_str(), "purchase"))
        .collect();
    srv.events(&refs).await;
    srv
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rule_reasons<'a>(item: &'a Value, effect: &str) -> Vec<&'a Value> {
    item["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "rule" && r["effect"] == effect)
        .collect()
}

#[tokio::test]
async fn a_filter_applies_on_every_ranking_route() {
    let srv = shop().await;
    let f = enc("price < 45 and tags contains \"organic\"");
    let (s, body) = srv
        .get(&format!("/v1/users/new/recommendations?n=8&filter={f}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(keys(&body), ["k0", "k1"], "{body}");
    assert_eq!(body["rules"], json!(["request.filter"]));
    let (_, body) = srv.get(&format!("/v1/popular?n=8&filter={f}")).await;
    assert_eq!(keys(&body), ["k0", "k1"], "{body}");
    let (s, body) = srv
        .get(&format!("/v1/items/g0/similar?n=8&filter={f}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(keys(&body).iter().all(|k| k == "k0" || k == "k1"), "{body}");
    let (s, body) = srv
        .post(
            "/v1/recommendations",
            json!({ "items": ["g3"], "n": 8, "filter": "category in [\"Garden\"] and price >= 40" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(keys(&body), ["g1", "g2"], "{body}");
    let (s, body) = srv
        .post(
            "/v1/users/fan1/rank",
            json!({ "items": ["k3", "g3", "k0"], "filter": "not (campaign = \"winter\")" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let ranked: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"].as_str().unwrap())
        .collect();
    assert!(!ranked.contains(&"g3") && ranked.len() == 2, "{body}");
    assert_eq!(body["filtered"][0]["item"], "g3", "{body}");
    assert_eq!(body["filtered"][0]["rule"], "request.filter", "{body}");
}

#[tokio::test]
async fn boosts_reorder_and_say_so_and_terms_still_sum() {
    let srv = shop().await;
    let boost = enc(r#"[{"if": "category contains \"Garden\"", "by": 10}]"#);
    let (s, body) = srv
        .get(&format!("/v1/popular?n=4&boost={boost}&explain=full"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(keys(&body), ["g0", "g1", "g2", "g3"], "{body}");
    for item in body["items"].as_array().unwrap() {
        assert_eq!(rule_reasons(item, "boost").len(), 1, "{item}");
        let sum: f64 = item["contributions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["value"].as_f64().unwrap())
            .sum();
        let score = item["score"].as_f64().unwrap();
        assert!((sum - score).abs() <= 1e-4 * score.abs().max(1.0), "{item}");
    }
    // Additive, lowering.
    let boost = enc(r#"[{"if": "item = \"k0\"", "add": -1000}]"#);
    let (_, body) = srv.get(&format!("/v1/popular?n=2&boost={boost}")).await;
    assert_eq!(keys(&body), ["g0", "k1"], "{body}");
}

#[tokio::test]
async fn a_promotion_fills_its_slot_from_beyond_the_candidates() {
    let srv = shop().await;
    let promote = enc(r#"[{"slot": 2, "if": "campaign = \"winter\""}]"#);
    let (s, body) = srv.get(&format!("/v1/popular?n=3&promote={promote}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(keys(&body), ["k0", "g3", "g0"], "{body}");
    let promoted = &body["items"][1];
    assert_eq!(rule_reasons(promoted, "promote").len(), 1, "{promoted}");
    // A slot past n is refused, naming it.
    let promote = enc(r#"[{"slot": 4, "if": "campaign = \"winter\""}]"#);
    let got = srv.get(&format!("/v1/popular?n=3&promote={promote}")).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("promote[0].slot"),
    );
}

#[tokio::test]
async fn a_category_cap_keeps_the_list_varied() {
    let srv = shop().await;
    let (_, body) = srv
        .get("/v1/popular?n=4&max_per_category=1&explain=full")
        .await;
    assert_eq!(keys(&body), ["k0", "g0"], "only two categories: {body}");
    let filtered: Vec<&str> = body["filtered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["item"].as_str().unwrap())
        .collect();
    assert!(
        filtered.contains(&"k1") && filtered.contains(&"g1"),
        "{body}"
    );
}

#[tokio::test]
async fn saved_rules_apply_by_default_are_admin_only_and_audited() {
    let srv = shop().await;
    let rule =
        json!({ "description": "cheap only", "routes": ["popular"], "filter": "price <= 30" });
    let (s, body) = srv.put("/v1/rules/cheap", rule.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "cheap");
    let (s, _) = srv.put("/v1/rules/cheap", rule).await;
    assert_eq!(s, StatusCode::OK);
    let (_, body) = srv.get("/v1/popular?n=8").await;
    assert_eq!(keys(&body), ["k0", "g0", "k1"], "{body}");
    assert_eq!(body["rules"], json!(["cheap"]));
    // Other routes are untouched; skip_rules turns it off.
    let (_, body) = srv.get("/v1/users/new/recommendations?n=8").await;
    assert_eq!(keys(&body).len(), 8, "{body}");
    let (_, body) = srv.get("/v1/popular?n=8&skip_rules=cheap").await;
    assert_eq!(keys(&body).len(), 8, "{body}");
    let got = srv.get("/v1/popular?n=8&skip_rules=nope").await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("skip_rules"),
    );
    let (_, body) = srv.get("/v1/rules").await;
    assert_eq!(body["rules"][0]["filter"], "price <= 30", "{body}");
    let (_, audit) = srv.get("/v1/audit?limit=50").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .or(audit["items"].as_array())
        .expect("audit entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"rule.put"), "{audit}");
    // A write key may not change rules.
    let (_, key) = srv
        .post("/v1/keys", json!({ "name": "w", "scopes": ["write"] }))
        .await;
    let writer = client_with_key(key["key"].as_str().unwrap());
    let resp = writer
        .put(format!("{}/v1/rules/x", srv.base))
        .json(&json!({ "filter": "price < 1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (s, _) = srv.delete("/v1/rules/cheap").await;
    assert_eq!(s, StatusCode::OK);
    let (_, body) = srv.get("/v1/popular?n=8").await;
    assert_eq!(keys(&body).len(), 8, "{body}");
    assert_error(
        &srv.delete("/v1/rules/cheap").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}

#[tokio::test]
async fn bad_rules_are_refused_naming_the_part_and_change_nothing() {
    let srv = shop().await;
    let cases = [
        (json!({ "filter": "pric < 3" }), "filter"),
        (json!({ "filter": "price > \"abc\"" }), "filter"),
        (json!({ "filter": "price <" }), "filter"),
        (
            json!({ "boost": [{ "if": "price < 3", "by": 0 }] }),
            "boost[0]",
        ),
        (
            json!({ "promote": [{ "slot": 1, "if": "price < 3" }, { "slot": 1, "if": "price > 3" }] }),
            "promote[1].slot",
        ),
        (json!({}), ""),
    ];
    for (rule, field) in cases {
        let got = srv.put("/v1/rules/bad", rule.clone()).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{rule}: {}", got.1);
        if !field.is_empty() {
            assert_eq!(got.1["error"]["field"], field, "{rule}: {}", got.1);
        }
    }
    let (s, body) = srv
        .put(
            "/v1/rules/slot",
            json!({ "promote": [{ "slot": 2, "if": "price < 30" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // Contradicts the saved promotion of slot 2 on the same routes.
    let got = srv
        .put(
            "/v1/rules/other",
            json!({ "promote": [{ "slot": 2, "if": "price > 30" }] }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("promote[0].slot"),
    );
    let (_, body) = srv.get("/v1/rules").await;
    assert_eq!(body["rules"].as_array().unwrap().len(), 1, "{body}");
    // Per request: huge and deep expressions, unknown attributes, mismatched types.
    let huge = "price < 1 or ".repeat(10_000) + "price < 2";
    let deep = "(".repeat(1000) + "price < 1" + &")".repeat(1000);
    let nots = "not ".repeat(1000) + "price < 1";
    for (expr, what) in [
        (huge.as_str(), "long"),
        (deep.as_str(), "deep"),
        (nots.as_str(), "deep"),
        ("colour = \"red\"", "colour"),
        ("price > \"abc\"", "price"),
    ] {
        let got = srv
            .post(
                "/v1/recommendations",
                json!({ "items": ["k0"], "filter": expr }),
            )
            .await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{what}: {}", got.1);
        assert_eq!(got.1["error"]["field"], "filter", "{}", got.1);
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("position"), "{what}: {message}");
    }
    let (s, _) = srv.get("/healthz").await;
    assert_eq!(s, StatusCode::OK, "the server stays up");
}

#[tokio::test]
async fn impressions_stop_repeats_without_counting_as_feedback() {
    let srv = shop().await;
    let before = srv.counts().await;
    for _ in 0..3 {
        let (s, body) = srv
            .post(
                "/v1/impressions",
                json!({ "impressions": [{ "user": "fan0", "items": ["k3", "g3"] }] }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["stored"], 2);
    }
    // Not feedback: popularity and histories unchanged.
    let after = srv.counts().await;
    assert_eq!(before["users"], after["users"]);
    let (_, body) = srv
        .get("/v1/users/fan19/recommendations?n=8&include_seen=true&explain=full")
        .await;
    assert_eq!(keys(&body).len(), 8, "fan19 saw nothing: {body}");
    let (_, body) = srv
        .get("/v1/users/fan0/recommendations?n=8&include_seen=true&explain=full")
        .await;
    let got = keys(&body);
    assert!(
        !got.contains(&"k3".to_owned()) && !got.contains(&"g3".to_owned()),
        "{body}"
    );
    assert!(
        body["rules"]
            .as_array()
            .unwrap()
            .contains(&json!("no_repeat")),
        "{body}"
    );
    assert!(
        body["filtered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["item"] == "k3" && f["rule"] == "no_repeat"),
        "{body}"
    );
    // The policy per request: off, or stricter.
    let (_, body) = srv
        .get("/v1/users/fan0/recommendations?n=8&include_seen=true&max_impressions=0")
        .await;
    assert_eq!(keys(&body).len(), 8, "{body}");
    let (_, body) = srv
        .get("/v1/popular?n=8&user=fan0&max_impressions=0&no_repeat_lists=1")
        .await;
    assert_eq!(keys(&body).len(), 6, "{body}");
    // Bad input names the list and the position.
    let got = srv
        .post(
            "/v1/impressions",
            json!({ "impressions": [{ "user": "fan0", "items": ["ok", ""] }] }),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("impressions[0].items[1]"),
    );
    // Impressions go with the user's erasure.
    let (s, _) = srv.delete("/v1/users/fan0").await;
    assert_eq!(s, StatusCode::OK);
    let (_, body) = srv.get("/v1/popular?n=8&user=fan0&no_repeat_lists=1").await;
    assert_eq!(keys(&body).len(), 8, "{body}");
}

#[tokio::test]
async fn hidden_items_stay_hidden_until_shown_again() {
    let srv = shop().await;
    srv.events(&[("me", "k0", "not_interested")]).await;
    let (_, body) = srv
        .get("/v1/users/me/recommendations?n=8&include_seen=true")
        .await;
    assert!(!keys(&body).contains(&"k0".to_owned()), "{body}");
    let (s, body) = srv.put("/v1/users/me/hidden/g0", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for path in [
        "/v1/popular?n=8&user=me",
        "/v1/items/k1/similar?n=8&user=me",
    ] {
        let (_, body) = srv.get(path).await;
        let got = keys(&body);
        assert!(
            !got.contains(&"k0".to_owned()) && !got.contains(&"g0".to_owned()),
            "{path}: {body}"
        );
    }
    let (_, body) = srv.get("/v1/users/me/hidden").await;
    let hidden: Vec<(&str, &str)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["item"].as_str().unwrap(), h["by"].as_str().unwrap()))
        .collect();
    assert_eq!(hidden.len(), 2, "{body}");
    assert!(
        hidden.contains(&("k0", "event")) && hidden.contains(&("g0", "block")),
        "{body}"
    );
    let (s, _) = srv.delete("/v1/users/me/hidden/k0").await;
    assert_eq!(s, StatusCode::OK);
    let (_, body) = srv.get("/v1/popular?n=8&user=me").await;
    assert!(keys(&body).contains(&"k0".to_owned()), "{body}");
    assert_error(
        &srv.put("/v1/users/me/hidden/nope", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    // Erasure forgets the block list; the export lists it first.
    let (_, export) = srv.get("/v1/users/me/export").await;
    assert_eq!(export["derived"]["hidden"][0]["item"], "g0", "{export}");
    let (s, _) = srv.delete("/v1/users/me").await;
    assert_eq!(s, StatusCode::OK);
    assert_error(
        &srv.get("/v1/users/me/hidden").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}

#[tokio::test]
async fn blocks_and_saved_rules_survive_a_restart() {
    let srv = shop().await;
    let (s, _) = srv.put("/v1/users/fan1/hidden/k0", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = srv
        .put(
            "/v1/rules/garden",
            json!({ "filter": "category contains \"Garden\"" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let engine = srv.engine();
    drop(engine);
    let dir = srv.stop().await;
    let srv = crate::common::start_in(dir, |_| {}).await;
    let (_, body) = srv.get("/v1/popular?n=8&user=fan1&skip_rules=*").await;
    assert!(!keys(&body).contains(&"k0".to_owned()), "{body}");
    let (_, body) = srv.get("/v1/popular?n=8").await;
    assert_eq!(keys(&body), ["g0", "g1", "g2", "g3"], "{body}");
}

#[tokio::test]
async fn hide_similar_moves_down_what_resembles_a_hidden_item() {
    let srv = start().await;
    let events = crate::common::two_tastes();
    let (s, _) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(s, StatusCode::OK);
    let (s, t) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert!(s.is_success(), "{t}");
    srv.events(&[("me", "a0", "not_interested")]).await;
    // a3, a6 and a9 have exactly a0's viewers (two_tastes skips by (user + item) % 3), so
    // their factors are a0's; the others' are not.
    let twins = ["a3", "a6", "a9"];
    let (_, plain) = srv.get("/v1/popular?n=19&user=me").await;
    let got = keys(&plain);
    assert_eq!(got.len(), 19, "{plain}");
    assert!(!got.contains(&"a0".to_owned()), "{plain}");
    assert!(
        !got[16..].iter().all(|k| twins.contains(&k.as_str())),
        "popularity alone does not put them last: {plain}"
    );
    let (s, body) = srv.get("/v1/popular?n=19&user=me&hide_similar=1").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let got = keys(&body);
    assert!(
        got[16..].iter().all(|k| twins.contains(&k.as_str())),
        "{body}"
    );
    for r in &body["items"].as_array().unwrap()[16..] {
        let reasons = rule_reasons(r, "hide_similar");
        assert_eq!(reasons.len(), 1, "{r}");
        assert!(
            reasons[0]["message"].as_str().unwrap().contains("a0"),
            "{r}"
        );
    }
}

/// A saved rule's expression is kept evaluated per item: it must follow every catalog change
/// (an update, a new item, a new attribute, a deletion) at once.
#[tokio::test]
async fn saved_rules_follow_catalog_changes() {
    let srv = shop().await;
    let (s, body) = srv
        .put(
            "/v1/rules/organic",
            json!({ "filter": "tags contains \"organic\" and not (campaign = \"clearance\")" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (_, body) = srv.get("/v1/popular?n=8").await;
    assert_eq!(keys(&body), ["k0", "k1", "k2", "k3"], "{body}");
    // k1 stops being organic; g0 becomes organic; new items come with a campaign no item had
    // when the rule was saved, and with an attribute never seen before.
    for (item, tags, category, campaign) in [
        ("k1", "plain", "Kitchen", None),
        ("g0", "organic", "Garden", None),
        ("n0", "organic", "Garden", Some("clearance")),
        ("n1", "organic", "Garden", Some("summer")),
    ] {
        let mut attributes = json!({ "tags": [tags], "color": "red" });
        if let Some(c) = campaign {
            attributes["campaign"] = json!(c);
        }
        let (s, body) = srv
            .put(
                &format!("/v1/items/{item}"),
                json!({ "categories": [category], "attributes": attributes }),
            )
            .await;
        assert!(s.is_success(), "{body}");
    }
    srv.events(&[("fan0", "n0", "purchase"), ("fan0", "n1", "purchase")])
        .await;
    let (_, body) = srv.get("/v1/popular?n=8").await;
    let mut got = keys(&body);
    got.sort();
    assert_eq!(got, ["g0", "k0", "k2", "k3", "n1"], "{body}");
    let (s, _) = srv.delete("/v1/items/k0").await;
    assert!(s.is_success());
    let (_, body) = srv.get("/v1/popular?n=8").await;
    assert!(!keys(&body).contains(&"k0".to_string()), "{body}");
    assert_eq!(body["rules"], json!(["organic"]), "{body}");
}

/// Recommendations (item and score) for `u0`..`u29`, then items similar by iALS to
/// `i000`..`i119` (every sixth), with `query` appended.
async fn answers(srv: &TestServer, query: &str) -> Vec<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let paths = (0..30)
        .map(|u| format!("/v1/users/u{u}/recommendations?n=10{query}"))
        .chain(
            (0..120)
                .step_by(6)
                .map(|i| format!("/v1/items/i{i:03}/similar?n=10&model=als{query}")),
        );
    for path in paths {
        let (s, body) = srv.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let list = body["items"].as_array().unwrap().iter();
        out.push(
            list.map(|r| {
                let item = r["item"].as_str().unwrap().to_owned();
                (item, r["score"].as_f64().unwrap())
            })
            .collect(),
        );
    }
    out
}

/// A saved rule's filter is served from a scan of its own items (recommendations and similar
/// items), and its bit is asked before a new item is scored; a filter sent with the request is
/// evaluated item by item. Both must give the same answers, before and after catalog changes
/// move items into and out of it.
#[tokio::test]
async fn a_saved_filter_answers_as_the_same_filter_per_request() {
    let srv = start().await;
    // 120 items with events (prices 1..120, every fifth a new arrival) and 10 without (priced
    // 3, 6, ..., 30), which the content model places.
    let mut items: Vec<(String, f64, bool)> = (0..120)
        .map(|i| (format!("i{i:03}"), f64::from(i + 1), i % 5 == 0))
        .collect();
    items.extend((0..10).map(|k| (format!("c{k}"), f64::from(3 * (k + 1)), k % 2 == 0)));
    for (n, (item, price, new)) in items.iter().enumerate() {
        let (s, body) = srv
            .put(
                &format!("/v1/items/{item}"),
                json!({ "categories": [format!("cat-{}", n % 3)],
                        "text": { "title": format!("thing of kind {} and {}", n % 3, n % 7) },
                        "numeric": { "price": price },
                        "attributes": { "new_arrival": new } }),
            )
            .await;
        assert!(s.is_success(), "{body}");
    }
    let events: Vec<Value> = (0..40)
        .flat_map(|u| {
            (0..12).map(move |j| {
                json!({ "user": format!("u{u}"), "item": format!("i{:03}", (u * 3 + j * 7) % 120),
                        "type": "purchase" })
            })
        })
        .collect();
    let (s, body) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    crate::privacy::train(&srv).await;
    let (filter, boost) = ("price < 30", r#"[{"if": "new_arrival = true", "by": 1.5}]"#);
    let per_request = format!("&filter={}&boost={}", enc(filter), enc(boost));
    let rule = json!({ "filter": filter, "boost": [{ "if": "new_arrival = true", "by": 1.5 }] });
    for round in 0..2 {
        let want = answers(&srv, &per_request).await;
        let cold = want.iter().flatten().filter(|(i, _)| i.starts_with('c'));
        assert!(
            cold.count() > 0,
            "round {round}: no new item placed: {want:?}"
        );
        for list in &want[..30] {
            assert_eq!(list.len(), 10, "round {round}: {want:?}");
        }
        assert!(
            want[30..].iter().any(|l| !l.is_empty()),
            "round {round}: {want:?}"
        );
        let (s, body) = srv.put("/v1/rules/cheap", rule.clone()).await;
        assert!(s.is_success(), "{body}");
        assert_eq!(answers(&srv, "").await, want, "round {round}");
        let (s, _) = srv.delete("/v1/rules/cheap").await;
        assert!(s.is_success());
        // Items move: some into the filter, some out of it, a new item in it.
        for (item, price) in [("i050", 2.0), ("i003", 90.0), ("i010", 29.5), ("c1", 80.0)] {
            let (s, body) = srv
                .put(
                    &format!("/v1/items/{item}"),
                    json!({ "categories": ["cat-0"], "numeric": { "price": price },
                            "attributes": { "new_arrival": true } }),
                )
                .await;
            assert!(s.is_success(), "{body}");
        }
    }
    // Changed while the rule is saved: its kept evaluation (and the scan built from it) must
    // follow at once.
    let (s, body) = srv.put("/v1/rules/cheap", rule.clone()).await;
    assert!(s.is_success(), "{body}");
    let before = answers(&srv, "").await;
    for (item, price) in [("i060", 1.5), ("i012", 95.0)] {
        let (s, body) = srv
            .put(
                &format!("/v1/items/{item}"),
                json!({ "categories": ["cat-1"], "numeric": { "price": price } }),
            )
            .await;
        assert!(s.is_success(), "{body}");
    }
    let after = answers(&srv, "").await;
    assert_ne!(after, before, "moving items changed nothing");
    let (s, _) = srv.delete("/v1/rules/cheap").await;
    assert!(s.is_success());
    assert_eq!(after, answers(&srv, &per_request).await);
}
