//! Segments over HTTP: rule segments on attributes and behaviour, consent, members as pages and
//! streams, user memberships, size history, erasure, learned segments on a trained model, the
//! scheduled export to a signed webhook, and bad input.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use bespoke_server::time::{format_rfc3339, now_ms};
use bespoke_server::webhook::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, Verifier};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, start, two_tastes};

const DAY: i64 = 86_400_000;

/// An RFC 3339 time `days` before now.
fn ago(days: i64) -> String {
    format_rfc3339(now_ms() - days * DAY)
}

async fn put_user(srv: &TestServer, key: &str, body: Value) {
    let (status, resp) = srv.put(&format!("/v1/users/{key}"), body).await;
    assert!(status.is_success(), "{key}: {resp}");
}

async fn post_events(srv: &TestServer, events: Vec<Value>) {
    let (status, body) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Users of the members of a JSON page.
fn users(page: &Value) -> Vec<String> {
    page["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect()
}

/// Garden and kitchen items, and users who bought (or viewed) them at various times.
async fn shop() -> TestServer {
    let srv = start().await;
    for (item, category) in [("g1", "Garden"), ("g2", "Garden"), ("k1", "Kitchen")] {
        let (s, body) = srv
            .put(
                &format!("/v1/items/{item}"),
                json!({ "categories": [category] }),
            )
            .await;
        assert!(s.is_success(), "{body}");
    }
    let de = json!({ "attributes": { "country": "DE" } });
    for user in ["alice", "bob", "dave", "erin", "gina"] {
        put_user(&srv, user, de.clone()).await;
    }
    put_user(&srv, "carol", json!({ "attributes": { "country": "FR" } })).await;
    put_user(
        &srv,
        "frank",
        json!({ "attributes": { "country": "DE" }, "consent": { "marketing": false } }),
    )
    .await;
    put_user(
        &srv,
        "hank",
        json!({ "attributes": { "country": "DE" }, "consent": { "personalization": false } }),
    )
    .await;
    let event = |user: &str, item: &str, kind: &str, days: i64| json!({ "user": user, "item": item, "type": kind, "timestamp": ago(days) });
    post_events(
        &srv,
        vec![
            event("alice", "g1", "purchase", 10), // in
            event("bob", "g1", "purchase", 40),   // out: before the window
            event("carol", "g2", "purchase", 5),  // out: not DE
            event("dave", "k1", "purchase", 3),   // out: not Garden
            event("erin", "g1", "view", 2),       // out: not a purchase
            event("frank", "g2", "purchase", 1),  // out: objected to marketing
            event("gina", "g2", "purchase", 2),   // in
            event("gina", "k1", "view", 1),
            event("hank", "g1", "purchase", 4), // out: personalization off
        ],
    )
    .await;
    srv
}

const GARDEN_DE: &str = r#"purchased(category = "Garden", within = 30d) and country = "DE""#;

#[tokio::test]
async fn rule_segments_find_exactly_the_expected_users_and_leave_out_objectors() {
    let srv = shop().await;
    let (s, body) = srv
        .put(
            "/v1/segments/garden-de",
            json!({ "kind": "rule", "expression": GARDEN_DE, "description": "garden buyers" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "rule");
    assert_eq!(body["expression"], GARDEN_DE);
    let secret = body["webhook_secret"].as_str().expect("secret on creation");
    assert!(
        secret.starts_with("whsec_") && secret.len() == 70,
        "{secret}"
    );
    // Shown once: neither a replace nor a read returns it.
    let (s, body) = srv
        .put(
            "/v1/segments/garden-de",
            json!({ "kind": "rule", "expression": GARDEN_DE }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.get("webhook_secret").is_none(), "{body}");
    let (_, body) = srv.get("/v1/segments/garden-de").await;
    assert!(body.get("webhook_secret").is_none(), "{body}");
    assert!(body.get("last_refresh").is_none(), "{body}");

    let (s, body) = srv.post("/v1/segments/garden-de/refresh", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["size"], 2, "{body}");
    assert_eq!(
        body["excluded"],
        json!({ "marketing": 1, "personalization": 1, "training": 0 })
    );
    assert_eq!(body["evaluated_users"], 6, "{body}");
    let (s, page) = srv.get("/v1/segments/garden-de/members").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(users(&page), ["alice", "gina"]);
    assert!(page["members"][0]["score"] == 1.0, "{page}");
    assert!(page["members"][0].get("cluster").is_none(), "{page}");
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, body) = srv.get("/v1/segments/garden-de").await;
    assert_eq!(body["last_refresh"]["size"], 2, "{body}");

    // On attributes alone, personalization is not needed; an objection to marketing still is.
    let (s, _) = srv
        .put(
            "/v1/segments/de",
            json!({ "kind": "rule", "expression": "country = \"DE\"" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, body) = srv.post("/v1/segments/de/refresh", json!({})).await;
    assert_eq!(body["excluded"]["marketing"], 1, "{body}");
    assert_eq!(body["excluded"]["personalization"], 0, "{body}");
    let (_, page) = srv.get("/v1/segments/de/members").await;
    assert_eq!(
        users(&page),
        ["alice", "bob", "dave", "erin", "gina", "hank"]
    );

    // An objection after the refresh counts at the next one.
    put_user(
        &srv,
        "alice",
        json!({ "attributes": { "country": "DE" }, "consent": { "marketing": false } }),
    )
    .await;
    let (_, body) = srv.post("/v1/segments/garden-de/refresh", json!({})).await;
    assert_eq!(body["size"], 1, "{body}");
    assert_eq!(body["excluded"]["marketing"], 2, "{body}");
    let (_, page) = srv.get("/v1/segments/garden-de/members").await;
    assert_eq!(users(&page), ["gina"]);

    let (_, list) = srv.get("/v1/segments").await;
    let names: Vec<&str> = list["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["de", "garden-de"]);
    let (s, body) = srv.delete("/v1/segments/de").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_error(
        &srv.get("/v1/segments/de/members").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let (_, audit) = srv.get("/v1/audit?limit=50").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["segment.put", "segment.refresh", "segment.delete"] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
}

/// 250 users who viewed something, in a segment of everyone who did.
async fn viewers() -> TestServer {
    let srv = start().await;
    let events = (0..250)
        .map(|u| json!({ "user": format!("v{u:03}"), "item": "x", "type": "view" }))
        .collect();
    post_events(&srv, events).await;
    let (s, body) = srv
        .put(
            "/v1/segments/viewers",
            json!({ "kind": "rule", "expression": "viewed()" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (_, body) = srv.post("/v1/segments/viewers/refresh", json!({})).await;
    assert_eq!(body["size"], 250, "{body}");
    srv
}

#[tokio::test]
async fn members_pagination_covers_every_member_once() {
    let srv = viewers().await;
    for limit in [60, 50, 250, 1000] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/segments/viewers/members?limit={limit}&cursor={c}"),
                None => format!("/v1/segments/viewers/members?limit={limit}"),
            };
            let (s, page) = srv.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            let got = users(&page);
            assert!(got.len() <= limit);
            seen.extend(got);
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let want: Vec<String> = (0..250).map(|u| format!("v{u:03}")).collect();
        assert_eq!(seen, want, "limit {limit}");
        assert_eq!(pages, 250usize.div_ceil(limit), "limit {limit}");
    }
    assert_error(
        &srv.get("/v1/segments/viewers/members?cursor=nope").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("cursor"),
    );
    assert_error(
        &srv.get("/v1/segments/viewers/members?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("limit"),
    );
}

#[tokio::test]
async fn csv_and_jsonl_stream_every_member() {
    let srv = viewers().await;
    let want: Vec<String> = (0..250).map(|u| format!("v{u:03}")).collect();
    let fetch = |format: &'static str| {
        let srv = &srv;
        async move {
            let resp = srv
                .client
                .get(format!(
                    "{}/v1/segments/viewers/members?format={format}",
                    srv.base
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let headers = resp.headers().clone();
            (headers, resp.text().await.unwrap())
        }
    };
    let (headers, csv) = fetch("csv").await;
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"viewers.csv\""
    );
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("user,score"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 250);
    assert!(rows.iter().all(|r| r.ends_with(",1")), "{csv}");
    let got: Vec<String> = rows
        .iter()
        .map(|r| r.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(got, want);

    let (headers, jsonl) = fetch("jsonl").await;
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let got: Vec<String> = jsonl
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["score"], 1.0);
            v["user"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(got, want);

    // A stream is every member: no paging parameters.
    assert_error(
        &srv.get("/v1/segments/viewers/members?format=csv&limit=5")
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("limit"),
    );
    assert_error(
        &srv.get("/v1/segments/viewers/members?format=xml").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("format"),
    );
    // A missing segment is a 404 before any byte is streamed.
    assert_error(
        &srv.get("/v1/segments/nobody/members?format=csv").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}

#[tokio::test]
async fn memberships_sizes_and_erasure() {
    let srv = shop().await;
    for (name, expression) in [("garden-de", GARDEN_DE), ("de", "country = \"DE\"")] {
        let (s, body) = srv
            .put(
                &format!("/v1/segments/{name}"),
                json!({ "kind": "rule", "expression": expression }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let (s, body) = srv
            .post(&format!("/v1/segments/{name}/refresh"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (s, body) = srv.get("/v1/users/alice/segments").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["user"], "alice");
    let names: Vec<&str> = body["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["segment"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["de", "garden-de"]);
    assert_eq!(body["segments"][0]["score"], 1.0);
    assert!(body["segments"][0]["computed_at"].is_string(), "{body}");
    let (_, body) = srv.get("/v1/users/carol/segments").await;
    assert_eq!(body["segments"], json!([]));
    assert_error(
        &srv.get("/v1/users/nobody/segments").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    // Sizes accumulate: one point per refresh.
    let (_, body) = srv.get("/v1/segments/de/sizes").await;
    assert_eq!(body["sizes"].as_array().unwrap().len(), 1, "{body}");
    put_user(&srv, "ivan", json!({ "attributes": { "country": "DE" } })).await;
    srv.post("/v1/segments/de/refresh", json!({})).await;
    srv.post("/v1/segments/de/refresh", json!({})).await;
    let (_, body) = srv.get("/v1/segments/de/sizes").await;
    let sizes: Vec<u64> = body["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [6, 7, 7], "{body}");
    let times: Vec<&str> = body["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");

    // Erasure takes the user out of every segment at once, before any refresh.
    let (s, body) = srv.delete("/v1/users/alice").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, page) = srv.get("/v1/segments/garden-de/members").await;
    assert_eq!(users(&page), ["gina"]);
    let (_, page) = srv.get("/v1/segments/de/members").await;
    assert!(!users(&page).contains(&"alice".to_owned()), "{page}");
    let (_, csv) = srv.get("/v1/segments/de/members?format=csv").await;
    assert!(!csv.as_str().unwrap().contains("alice"), "{csv}");
    assert_error(
        &srv.get("/v1/users/alice/segments").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}

/// Whether a two-tastes key is an even user (the a-taste).
fn even(key: &str) -> bool {
    key[1..].parse::<u32>().unwrap() % 2 == 0
}

#[tokio::test]
async fn learned_segments_separate_the_two_tastes_with_descriptions() {
    let srv = start().await;
    // Without a trained model, a learned segment cannot be computed.
    let (s, body) = srv
        .put(
            "/v1/segments/tastes",
            json!({ "kind": "learned", "k": 2, "seed": 1 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_error(
        &srv.post("/v1/segments/tastes/refresh", json!({})).await,
        StatusCode::CONFLICT,
        "no_model",
        None,
    );
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
    for u in 0..60 {
        let taste = if u % 2 == 0 { "a" } else { "b" };
        put_user(
            &srv,
            &format!("u{u}"),
            json!({ "attributes": { "taste": taste, "tags": ["newsletter"] } }),
        )
        .await;
    }
    post_events(&srv, two_tastes()).await;
    let (s, body) = srv
        .request(Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let (s, body) = srv.post("/v1/segments/tastes/refresh", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "learned");
    assert_eq!(body["size"], 60, "{body}");
    assert_eq!(body["evaluated_users"], 60, "{body}");
    assert!(body["model_version"].is_u64(), "{body}");
    let clusters = body["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    for (c, cluster) in clusters.iter().enumerate() {
        assert_eq!(cluster["cluster"], c);
        assert_eq!(cluster["name"], format!("tastes/{c}"));
        assert_eq!(cluster["size"], 30, "{body}");
    }

    // Each cluster is pure, and its description says which taste it is.
    let mut taste_of_cluster = Vec::new();
    for (c, cluster) in clusters.iter().enumerate() {
        let (s, page) = srv
            .get(&format!(
                "/v1/segments/tastes/members?cluster={c}&limit=100"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let members = users(&page);
        assert_eq!(members.len(), 30);
        let evens = members.iter().filter(|u| even(u)).count();
        assert!(
            evens == 0 || evens == 30,
            "cluster {c} is mixed: {members:?}"
        );
        let (taste, category) = if evens == 30 {
            ("a", "Alpha")
        } else {
            ("b", "Beta")
        };
        taste_of_cluster.push(taste);
        assert!(
            page["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["cluster"] == c && m["score"].as_f64().unwrap() > 0.5),
            "{page}"
        );
        assert_eq!(cluster["categories"][0]["category"], category, "{cluster}");
        assert_eq!(cluster["categories"][0]["share"], 1.0, "{cluster}");
        assert_eq!(cluster["categories"][0]["lift"], 2.0, "{cluster}");
        assert_eq!(cluster["attributes"][0]["attribute"], "taste", "{cluster}");
        assert_eq!(cluster["attributes"][0]["value"], taste, "{cluster}");
        // Shared by everyone, so it describes no cluster.
        assert!(!cluster.to_string().contains("newsletter"), "{cluster}");
    }
    assert_ne!(taste_of_cluster[0], taste_of_cluster[1]);

    // Without `cluster`, every member once, each with its cluster.
    let (_, page) = srv.get("/v1/segments/tastes/members?limit=25").await;
    assert_eq!(page["members"].as_array().unwrap().len(), 25);
    let (_, csv) = srv.get("/v1/segments/tastes/members?format=csv").await;
    let csv = csv.as_str().unwrap();
    assert_eq!(csv.lines().next(), Some("user,cluster,score"));
    assert_eq!(csv.lines().count(), 61);
    for line in csv.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let c: usize = fields[1].parse().unwrap();
        let taste = if even(fields[0]) { "a" } else { "b" };
        assert_eq!(taste_of_cluster[c], taste, "{line}");
    }

    // The user's membership names the cluster; sizes are per cluster.
    let (_, body) = srv.get("/v1/users/u0/segments").await;
    assert_eq!(body["segments"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["segments"][0]["segment"], "tastes");
    let c0 = body["segments"][0]["cluster"].as_u64().unwrap() as usize;
    assert_eq!(taste_of_cluster[c0], "a");
    let (_, body) = srv.get("/v1/segments/tastes/sizes").await;
    assert_eq!(body["sizes"][0]["size"], 60, "{body}");
    assert_eq!(body["sizes"][0]["clusters"], json!([30, 30]), "{body}");

    // The same seed on the same model gives the same clusters.
    let (_, again) = srv.post("/v1/segments/tastes/refresh", json!({})).await;
    assert_eq!(again["clusters"], Value::Array(clusters.clone()));

    // More clusters than users: the refresh says so, the old clusters stay.
    let (s, _) = srv
        .put("/v1/segments/tastes", json!({ "kind": "learned", "k": 61 }))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_error(
        &srv.post("/v1/segments/tastes/refresh", json!({})).await,
        StatusCode::CONFLICT,
        "segment_conflict",
        Some("k"),
    );
    let (_, page) = srv.get("/v1/segments/tastes/members?limit=100").await;
    assert_eq!(page["members"].as_array().unwrap().len(), 60);
    assert_error(
        &srv.get("/v1/segments/tastes/members?cluster=61").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("cluster"),
    );

    // Deleting a learned segment deletes every cluster's members.
    let (s, _) = srv.delete("/v1/segments/tastes").await;
    assert_eq!(s, StatusCode::OK);
    let (_, body) = srv.get("/v1/users/u0/segments").await;
    assert_eq!(body["segments"], json!([]), "{body}");
}

/// A delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: Bytes,
}

/// A webhook receiver on 127.0.0.1:<random port>: `/ok` records and answers 200, `/refuse`
/// records and answers 400.
async fn receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let record = |answer: AxumStatus| {
        let log = log.clone();
        move |headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                log.lock().push(Delivery {
                    id: header(ID_HEADER),
                    timestamp: header(TIMESTAMP_HEADER),
                    signature: header(SIGNATURE_HEADER),
                    content_type: header("content-type"),
                    body,
                });
                answer
            }
        }
    };
    let app = axum::Router::new()
        .route("/ok", axum::routing::post(record(AxumStatus::OK)))
        .route(
            "/refuse",
            axum::routing::post(record(AxumStatus::BAD_REQUEST)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), log)
}

#[tokio::test]
async fn scheduled_refresh_exports_signed_members_to_a_webhook() {
    let srv = shop().await;
    let (base, log) = receiver().await;
    let (s, body) = srv
        .put(
            "/v1/segments/de-daily",
            json!({ "kind": "rule", "expression": "country = \"DE\"", "refresh": "1d",
                    "export": { "url": format!("{base}/ok"), "format": "csv" } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let secret = body["webhook_secret"].as_str().unwrap().to_owned();
    let (s, body) = srv
        .put(
            "/v1/segments/refused",
            json!({ "kind": "rule", "expression": "country = \"FR\"", "refresh": "1d",
                    "export": { "url": format!("{base}/refuse") } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // Only on demand: never due.
    srv.put(
        "/v1/segments/manual",
        json!({ "kind": "rule", "expression": "country = \"DE\"" }),
    )
    .await;

    let engine = srv.engine();
    let now = now_ms();
    let mut runs = engine.run_due_segments(now).await;
    runs.sort_by(|a, b| a.segment.cmp(&b.segment));
    let names: Vec<&str> = runs.iter().map(|r| r.segment.as_str()).collect();
    assert_eq!(names, ["de-daily", "refused"]);
    let daily = &runs[0];
    assert_eq!(daily.refresh.as_ref().unwrap().size, 6);
    let export = daily.export.as_ref().expect("exported");
    assert!(export.ok, "{export:?}");
    assert_eq!(
        (export.status, export.attempts, export.members),
        (Some(200), 1, 6)
    );
    let refused = runs[1].export.as_ref().expect("attempted");
    assert!(!refused.ok);
    assert_eq!((refused.status, refused.attempts), (Some(400), 1));
    assert!(
        refused.error.as_deref().unwrap().contains("400"),
        "{refused:?}"
    );

    // The receiver checks the delivery with the secret it was given once.
    let delivery = log
        .lock()
        .iter()
        .find(|d| Some(&d.id) == export.delivery.as_ref())
        .cloned()
        .expect("delivered");
    let mut verifier = Verifier::new(secret.as_bytes().to_vec());
    verifier
        .verify(
            &delivery.id,
            &delivery.timestamp,
            &delivery.signature,
            &delivery.body,
            now_ms() / 1000,
        )
        .expect("a valid signature");
    assert!(
        Verifier::new(b"another secret".to_vec())
            .verify(
                &delivery.id,
                &delivery.timestamp,
                &delivery.signature,
                &delivery.body,
                now_ms() / 1000
            )
            .is_err()
    );
    assert_eq!(delivery.content_type, "text/csv; charset=utf-8");
    let body = String::from_utf8(delivery.body.to_vec()).unwrap();
    assert_eq!(
        body,
        "user,score\nalice,1\nbob,1\ndave,1\nerin,1\ngina,1\nhank,1\n"
    );

    // The outcome is recorded in the segment.
    let (_, seg) = srv.get("/v1/segments/de-daily").await;
    assert_eq!(seg["last_export"]["ok"], true, "{seg}");
    assert_eq!(seg["last_export"]["status"], 200, "{seg}");
    assert_eq!(seg["last_export"]["attempts"], 1, "{seg}");
    assert_eq!(seg["last_export"]["members"], 6, "{seg}");
    assert_eq!(seg["last_export"]["at"], format_rfc3339(now), "{seg}");
    assert_eq!(seg["next_refresh"], format_rfc3339(now + DAY), "{seg}");
    let (_, seg) = srv.get("/v1/segments/refused").await;
    assert_eq!(seg["last_export"]["ok"], false, "{seg}");
    assert_eq!(seg["last_export"]["status"], 400, "{seg}");

    // Not due again within its interval; due after it, with a new membership and delivery.
    assert!(engine.run_due_segments(now + DAY / 2).await.is_empty());
    put_user(&srv, "ivan", json!({ "attributes": { "country": "DE" } })).await;
    let runs = engine.run_due_segments(now + DAY).await;
    let names: Vec<&str> = runs.iter().map(|r| r.segment.as_str()).collect();
    assert_eq!(names, ["de-daily", "refused"]);
    let export = runs[0].export.clone().unwrap();
    assert!(export.ok && export.members == 7, "{export:?}");
    let second = log
        .lock()
        .iter()
        .find(|d| Some(&d.id) == export.delivery.as_ref())
        .cloned()
        .expect("delivered");
    verifier
        .verify(
            &second.id,
            &second.timestamp,
            &second.signature,
            &second.body,
            now_ms() / 1000,
        )
        .expect("a valid signature");
    assert!(String::from_utf8_lossy(&second.body).contains("ivan,1"));
    let (_, sizes) = srv.get("/v1/segments/de-daily/sizes").await;
    let sizes: Vec<u64> = sizes["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [6, 7]);

    // Deleting the segment deletes its secret: a new one of the same name gets another.
    srv.delete("/v1/segments/de-daily").await;
    let (_, body) = srv
        .put(
            "/v1/segments/de-daily",
            json!({ "kind": "rule", "expression": "country = \"DE\"" }),
        )
        .await;
    assert_ne!(body["webhook_secret"].as_str().unwrap(), secret);
    let (_, audit) = srv.get("/v1/audit?limit=50").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "segment.export" && e["actor"] == "scheduler"),
        "{audit}"
    );
}

#[tokio::test]
async fn bad_definitions_and_parameters_name_the_field() {
    let srv = shop().await;
    let put = |body: Value| {
        let srv = &srv;
        async move { srv.put("/v1/segments/s", body).await }
    };
    let hook = "http://127.0.0.1:9/hook";
    for (body, field) in [
        (json!({}), "kind"),
        (json!({ "kind": "cluster" }), "kind"),
        (json!({ "kind": "rule" }), "expression"),
        (
            json!({ "kind": "rule", "expression": "country = \"DE\"", "k": 3 }),
            "k",
        ),
        (
            json!({ "kind": "learned", "expression": "country = \"DE\"" }),
            "expression",
        ),
        (json!({ "kind": "learned", "k": 1 }), "k"),
        (json!({ "kind": "learned", "k": 65 }), "k"),
        (json!({ "kind": "learned", "refresh": "soon" }), "refresh"),
        (json!({ "kind": "learned", "refresh": "1m" }), "refresh"),
        (
            json!({ "kind": "learned", "refresh": "1d", "export": { "url": "ftp://example.com/x" } }),
            "export.url",
        ),
        (
            json!({ "kind": "learned", "refresh": "1d", "export": { "url": "https://example.com/x" } }),
            "export.url",
        ),
        (
            json!({ "kind": "learned", "refresh": "1d", "export": { "url": "example.com/x" } }),
            "export.url",
        ),
        (
            json!({ "kind": "learned", "refresh": "1d", "export": { "url": hook, "format": "xml" } }),
            "export.format",
        ),
        (
            json!({ "kind": "learned", "export": { "url": hook } }),
            "export",
        ),
    ] {
        assert_error(
            &put(body.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }
    // Expression errors name the field and the position.
    let got = put(json!({ "kind": "rule", "expression": "events(type = \"view\")" })).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("expression"),
    );
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("at position 21: expected a comparison"),
        "{message}"
    );
    // Unknown fields and names that could reach a cluster's member set.
    assert_error(
        &put(json!({ "kind": "rule", "expression": "x = 1", "colour": "red" })).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
    );
    for name in ["a%2F0", "two%20words"] {
        assert_error(
            &srv.put(
                &format!("/v1/segments/{name}"),
                json!({ "kind": "rule", "expression": "x = 1" }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("name"),
        );
    }
    // Nothing was stored.
    let (_, list) = srv.get("/v1/segments").await;
    assert_eq!(list["segments"], json!([]));

    // A kind does not change.
    let (s, _) = put(json!({ "kind": "rule", "expression": "x = 1" })).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_error(
        &put(json!({ "kind": "learned" })).await,
        StatusCode::CONFLICT,
        "segment_conflict",
        Some("kind"),
    );
    // Members: a rule segment has no clusters; unknown parameters are refused.
    for (query, field) in [
        ("cluster=0", "cluster"),
        ("cluster=first", "cluster"),
        ("page=2", "page"),
    ] {
        assert_error(
            &srv.get(&format!("/v1/segments/s/members?{query}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }
    for path in ["/v1/segments/none", "/v1/segments/none/sizes"] {
        assert_error(
            &srv.get(path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
    }
    assert_error(
        &srv.post("/v1/segments/none/refresh", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &srv.delete("/v1/segments/none").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}
