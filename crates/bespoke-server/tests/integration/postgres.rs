//! The server on a PostgreSQL store (`store.url`): the main paths end to end over HTTP, on a
//! schema of its own in the local test database (dropped after). Every store call must run off
//! the async runtime's workers (the blocking client panics inside one), so this also checks
//! that no handler touches the store from a runtime thread.
//!
//! Skipped with a printed notice when PostgreSQL is not reachable, unless
//! `BESPOKE_REQUIRE_POSTGRES=1` (CI).

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{keys, start_with, two_tastes};

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Connects (off the runtime) to check PostgreSQL is there; `None` (with a notice) when it is
/// not and not required.
async fn reachable() -> Option<()> {
    let ok =
        tokio::task::spawn_blocking(|| postgres::Client::connect(URL, postgres::NoTls).is_ok())
            .await
            .unwrap();
    if ok {
        return Some(());
    }
    if std::env::var("BESPOKE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("PostgreSQL not reachable at {URL} (BESPOKE_REQUIRE_POSTGRES=1)");
    }
    eprintln!("SKIPPED: PostgreSQL not reachable at {URL}");
    None
}

async fn drop_schema(schema: String) {
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(URL, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_postgres() {
    if reachable().await.is_none() {
        return;
    }
    let schema = format!(
        "srv_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let s = schema.clone();
    let srv = start_with(move |settings| {
        settings.store.url = URL.into();
        settings.store.schema = s;
    })
    .await;
    for i in 0..10 {
        let (st, body) = srv
            .put(
                &format!("/v1/items/a{i}"),
                json!({ "categories": ["Alpha"] }),
            )
            .await;
        assert!(st.is_success(), "{body}");
    }
    let (st, body) = srv
        .post("/v1/events", json!({ "events": two_tastes() }))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = srv.get("/v1/users/u0/recommendations?n=5").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["personalized"], true, "{body}");
    // u0 has seen a1, a2, a4, a5, a7 and a8; the model finds the unseen a-items among the b's.
    let unseen_a = keys(&body)
        .iter()
        .filter(|k| ["a0", "a3", "a6", "a9"].contains(&k.as_str()))
        .count();
    assert!(unseen_a >= 2, "{body}");

    // An experiment, a segment, an audience: their stores work on PostgreSQL too.
    let spec = json!({ "variants": [{ "name": "control" }, { "name": "diverse", "config": { "diversity": 0.5 } }] });
    let (st, body) = srv.put("/v1/experiments/e1", spec).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (st, _) = srv.post("/v1/experiments/e1/start", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    for u in 0..20 {
        let (st, body) = srv.get(&format!("/v1/users/u{u}/recommendations")).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let (st, report) = srv.get("/v1/experiments/e1/report").await;
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(report["users"], 20, "{report}");
    let (st, body) = srv
        .put(
            "/v1/segments/viewers",
            json!({ "kind": "rule", "expression": "events(type = \"view\") >= 5" }),
        )
        .await;
    assert!(st.is_success(), "{body}");
    let (st, body) = srv.post("/v1/segments/viewers/refresh", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["size"].as_u64().unwrap() > 0, "{body}");
    let (st, body) = srv
        .post("/v1/audiences/query", json!({ "items": ["a1"], "n": 5 }))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // Erasure reaches the store, the segment and the exposures.
    let (st, body) = srv.delete("/v1/users/u0").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _) = srv.get("/v1/users/u0").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, report) = srv.get("/v1/experiments/e1/report").await;
    assert_eq!(report["users"], 19, "{report}");
    let (st, body) = srv.get("/v1/audit?limit=20").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = srv.get("/metrics").await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // A restart on the same schema finds everything: model versions live in the database.
    let dir = srv.stop().await;
    let s = schema.clone();
    let srv = crate::common::start_in(dir, move |settings| {
        settings.store.url = URL.into();
        settings.store.schema = s;
    })
    .await;
    let (st, body) = srv.get("/v1/users/u2/recommendations?n=5").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["personalized"], true, "{body}");
    assert!(body["model_version"].as_u64().is_some(), "{body}");
    drop(srv.stop().await);
    drop_schema(schema).await;
}

fn fresh_schema(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    )
}

/// Polls `check` on `srv` until it holds or `within` passes; whether it held.
async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn leader(srv: &crate::common::TestServer) -> bool {
    let (st, body) = srv.get("/v1/models").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["cluster"]["shared_store"], true, "{body}");
    body["cluster"]["leader"].as_bool().unwrap()
}

/// Two nodes on one schema: what one accepts, the other serves; a model one trains, the
/// other serves; an erasure on one reaches the other's memory; one leads, and the other takes
/// over when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_postgres_store() {
    if reachable().await.is_none() {
        return;
    }
    let schema = fresh_schema("two");
    let on = |s: String| {
        move |settings: &mut bespoke_server::Settings| {
            settings.store.url = URL.into();
            settings.store.schema = s;
        }
    };
    let a = start_with(on(schema.clone())).await;
    let b = start_with(on(schema.clone())).await;
    let wait = std::time::Duration::from_secs(5);

    // Events accepted by A reach B's memory.
    let (st, body) = a
        .post("/v1/events", json!({ "events": two_tastes() }))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let events = a.counts().await["events"].clone();
    assert!(
        eventually(wait, || async { b.counts().await["events"] == events }).await,
        "B never applied A's events: {} vs {events}",
        b.counts().await
    );

    // A model trained on A is served by B.
    let (st, body) = a
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let version = body["version"].as_u64().unwrap();
    assert!(
        eventually(wait, || async {
            let (_, r) = b.get("/v1/users/u0/recommendations?n=5").await;
            r["model_version"].as_u64() == Some(version)
        })
        .await,
        "B never served version {version}"
    );

    // An event on A changes B's recommendations: the item leaves the user's list.
    let (_, before) = b.get("/v1/users/u2/recommendations?n=3").await;
    let top = keys(&before)[0].clone();
    a.events(&[("u2", &top, "view")]).await;
    assert!(
        eventually(wait, || async {
            let (_, r) = b.get("/v1/users/u2/recommendations?n=3").await;
            !keys(&r).contains(&top)
        })
        .await,
        "B kept recommending {top} after u2 viewed it on A"
    );

    // The view deleted on B: A forgets it, and the item may be recommended to u2 again.
    let (st, body) = b.delete(&format!("/v1/users/u2/events?item={top}")).await;
    assert_eq!(
        (st, body["deleted"].clone()),
        (StatusCode::OK, json!(1)),
        "{body}"
    );
    assert!(
        eventually(wait, || async {
            let (_, r) = a.get("/v1/users/u2/recommendations?n=3").await;
            keys(&r).contains(&top) && a.counts().await["events"] == b.counts().await["events"]
        })
        .await,
        "A still holds u2's deleted view of {top}: {}",
        a.get("/v1/users/u2/recommendations?n=3").await.1
    );

    // A profile change on A (no personalization) holds on B.
    let (st, body) = a
        .put(
            "/v1/users/u4",
            json!({ "consent": { "personalization": false } }),
        )
        .await;
    assert!(st.is_success(), "{body}");
    assert!(
        eventually(wait, || async {
            let (_, r) = b.get("/v1/users/u4/recommendations?n=3").await;
            r["personalized"] == false
        })
        .await,
        "B kept personalizing for u4"
    );

    // An item deleted on B disappears from A's answers.
    let (st, _) = b.delete("/v1/items/a0").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        eventually(wait, || async {
            let (_, r) = a.get("/v1/popular?n=50").await;
            !keys(&r).contains(&"a0".to_owned())
        })
        .await,
        "A still serves the deleted item"
    );

    // An erasure on B reaches A's memory at once: u6 is unknown there.
    let (st, body) = b.delete("/v1/users/u6").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        eventually(wait, || async {
            let (_, r) = a.get("/v1/users/u6/recommendations?n=3").await;
            r["personalized"] == false
        })
        .await,
        "A still personalizes for the erased user"
    );
    let users = a.counts().await["users"].clone();
    assert_eq!(users, b.counts().await["users"]);

    // Decision loops learn from the rewards every node logs: decisions made on A, rewarded
    // half on A and half on B, reach both learners.
    let decision = json!({
        "context": { "device": "mobile" },
        "actions": [{ "id": "formal", "features": { "tone": "formal" } },
                    { "id": "casual", "features": { "tone": "casual" } }],
    });
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (st, d) = a.post("/v1/loops/home/decisions", decision.clone()).await;
        assert_eq!(st, StatusCode::CREATED, "{d}");
        ids.push(d["decision_id"].as_str().unwrap().to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        // B may not have heard of the loop yet: it knows it within a follow pass.
        assert!(
            eventually(wait, || async {
                let (st, _) = node
                    .post(
                        &format!("/v1/decisions/{id}/reward"),
                        json!({ "value": 1.0 }),
                    )
                    .await;
                st == StatusCode::OK
            })
            .await,
            "reward {i} refused"
        );
    }
    for node in [&a, &b] {
        assert!(
            eventually(wait, || async {
                let (_, view) = node.get("/v1/loops/home").await;
                view["model_updates"] == 4
            })
            .await,
            "a node's learner missed rewards logged on the other: {}",
            node.get("/v1/loops/home").await.1
        );
    }

    // Exactly one node leads; when it stops, the other takes over.
    assert!(
        eventually(wait, || async { leader(&a).await || leader(&b).await }).await,
        "nobody leads"
    );
    assert!(!(leader(&a).await && leader(&b).await), "two leaders");
    let (leading, other) = if leader(&a).await { (a, b) } else { (b, a) };
    drop(leading.stop().await);
    assert!(
        eventually(std::time::Duration::from_secs(15), || async {
            leader(&other).await
        })
        .await,
        "the other node never took over"
    );
    drop(other.stop().await);
    drop_schema(schema).await;
}
