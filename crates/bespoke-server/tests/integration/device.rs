//! On-device ranking: the signed bundle over HTTP, verified and ranked with `bespoke-client`,
//! agrees with what the server recommends from the same history.

use bespoke_client::{Bundle, History, Query};
use bespoke_server::auth::Scope;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{TestServer, assert_error, client_with_key, start_with};

const DAY_MS: i64 = 86_400_000;

/// 40 items in two categories and 60 users with two tastes, views and purchases spread over
/// the last ten days (so that the recent boost has ages to work on); the events as
/// `(user, item, type, at_ms)`.
async fn shop(srv: &TestServer, now: i64) -> Vec<(String, String, &'static str, i64)> {
    for i in 0..20 {
        for (prefix, cat) in [("a", "A"), ("b", "B")] {
            let (status, body) = srv
                .put(
                    &format!("/v1/items/{prefix}{i}"),
                    json!({ "categories": [cat] }),
                )
                .await;
            assert!(status.is_success(), "{body}");
        }
    }
    let mut events = Vec::new();
    let mut x: u64 = 11;
    for u in 0..60 {
        let own = if u % 2 == 0 { "a" } else { "b" };
        for k in 0..10 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Mostly the user's own taste, sometimes the other.
            let prefix = if (x >> 60) == 0 {
                if own == "a" { "b" } else { "a" }
            } else {
                own
            };
            let item = format!("{prefix}{}", (x >> 33) % 20);
            let kind = if (x >> 40).is_multiple_of(4) {
                "purchase"
            } else {
                "view"
            };
            let at = now - (10 - k) * DAY_MS + ((x >> 20) % 1000) as i64;
            events.push((format!("u{u}"), item, kind, at));
        }
    }
    let body: Vec<_> = events
        .iter()
        .map(|(u, i, t, at)| {
            json!({ "user": u, "item": i, "type": t,
                    "timestamp": bespoke_server::time::format_rfc3339(*at) })
        })
        .collect();
    let (status, resp) = srv.post("/v1/events", json!({ "events": body })).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    events
}

async fn bundle_bytes(
    client: &reqwest::Client,
    srv: &TestServer,
    query: &str,
) -> reqwest::Response {
    client
        .get(format!("{}/v1/device/bundle{query}", srv.base))
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn a_device_ranks_as_the_server_does_from_a_verified_bundle() {
    let srv = start_with(|s| {
        s.serving.recent_boost = 0.5;
        s.serving.recent_half_life_hours = 48.0;
    })
    .await;
    assert_error(
        &srv.get("/v1/device/bundle").await,
        StatusCode::CONFLICT,
        "no_model",
        None,
    );
    let now = bespoke_server::time::now_ms();
    let events = shop(&srv, now).await;
    let (status, body) = srv
        .request(reqwest::Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // What a front-end ships: a read key fetches the key and the bundle.
    let engine = srv.engine();
    let read = tokio::task::spawn_blocking(move || {
        engine
            .access()
            .create_key("device", "device test", &[Scope::Read], None)
    })
    .await
    .unwrap()
    .expect("key")
    .0;
    let client = client_with_key(&read);
    let key: serde_json::Value = client
        .get(format!("{}/v1/device/key", srv.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(key["algorithm"], "Ed25519");
    let hex = key["public_key"].as_str().expect("hex key");
    let public: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();

    let resp = bundle_bytes(&client, &srv, "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.headers()["x-model-version"], "1");
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let bytes = resp.bytes().await.unwrap().to_vec();
    let bundle = Bundle::verify(&bytes, &public).expect("the bundle verifies");
    assert_eq!(bundle.len(), 40);
    assert_eq!(bundle.header().model_version, 1);

    // A bundle altered on the way, or checked against another key, is refused.
    let mut altered = bytes.clone();
    let mid = altered.len() / 2;
    altered[mid] ^= 0x10;
    assert!(Bundle::verify(&altered, &public).is_err());
    let mut other = public;
    other[0] ^= 1;
    assert!(Bundle::verify(&bytes, &other).is_err());

    // Revalidation: unchanged content answers 304; the other encoding is other content.
    let again = client
        .get(format!("{}/v1/device/bundle", srv.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let int8 = bundle_bytes(&client, &srv, "?encoding=int8").await;
    assert_eq!(int8.status(), StatusCode::OK);
    assert_ne!(int8.headers()["etag"].to_str().unwrap(), etag);
    let int8 = Bundle::verify(&int8.bytes().await.unwrap(), &public).expect("int8 verifies");
    assert!(bytes.len() > 2 * (int8.len() * int8.header().dim as usize));
    assert_error(
        &srv.get("/v1/device/bundle?encoding=f16").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("encoding"),
    );

    // The device, holding only its own user's events, ranks as the server does.
    let mut compared = 0;
    for user in ["u0", "u1", "u7", "u12", "u33"] {
        let mut history = History::default();
        for (u, item, kind, at) in &events {
            if u == user {
                history.push(item, kind, None, *at);
            }
        }
        for category in [None, Some("B")] {
            let query = Query {
                n: 10,
                categories: category.into_iter().map(str::to_owned).collect(),
                now_ms: bespoke_server::time::now_ms(),
                ..Query::default()
            };
            let device = bundle.recommend(&history, &query);
            let path = match category {
                None => format!("/v1/users/{user}/recommendations?model=als&n=10"),
                Some(c) => format!("/v1/users/{user}/recommendations?model=als&n=10&category={c}"),
            };
            let (status, server) = srv.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{server}");
            let server: Vec<(String, f64)> = server["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["item"].as_str().unwrap().to_owned(),
                        r["score"].as_f64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(device.len(), server.len(), "{user} {category:?}");
            for (d, (item, score)) in device.iter().zip(&server) {
                // f32 on the server, f64 on the device: equal to the server's rounding.
                assert!(
                    (d.score - score).abs() <= 1e-4 * score.abs().max(1.0),
                    "{user} {category:?}: device {} {} vs server {item} {score}",
                    d.item,
                    d.score
                );
                if d.item != *item {
                    // Only a near-tie may swap places.
                    let theirs = server.iter().find(|(i, _)| *i == d.item);
                    assert!(
                        theirs.is_some_and(|(_, s)| (s - d.score).abs() <= 1e-4),
                        "{user} {category:?}: device ranks {} where the server ranks {item}",
                        d.item
                    );
                }
                compared += 1;
            }
            if category.is_some() {
                assert!(device.iter().all(|s| s.item.starts_with('b')));
            }
            // The quantized bundle keeps most of the top of the list.
            let coarse = int8.recommend(&history, &query);
            let kept = coarse
                .iter()
                .filter(|s| device.iter().any(|d| d.item == s.item))
                .count();
            assert!(kept >= 7, "{user} {category:?}: int8 kept {kept} of 10");
        }
    }
    assert_eq!(compared, 5 * 2 * 10);
}
