//! Federated training over HTTP (`/v1/federated/...`, docs/federated-http.md) on a real
//! server on a loopback port: simulated devices built from `bespoke_client::federated` and
//! `secagg` run whole rounds, drop out, and send bad input.
//!
//! A binary of its own (not a module of `tests/integration`) so that it can be built and run
//! alone; it borrows that binary's helpers.

#[path = "integration/common.rs"]
#[allow(dead_code)] // This binary uses only some of the shared helpers.
mod common;

use bespoke_client::federated::{self, Layout, StepParams};
use bespoke_client::secagg::{self, ClientKeys, RevealRequest};
use bespoke_client::{Bundle, History};
use bespoke_server::auth::Scope;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use common::{TestServer, assert_error, client_with_key, start};

const ITEMS: usize = 20;
const DIM: usize = 8;
const LAMBDA: f64 = 10.0;
const ALPHA: f64 = 1.0;
const CLIP: f64 = 5.0;

/// A simulated device: its id, X25519 keys and a small history of catalog items.
struct Device {
    id: u64,
    keys: ClientKeys,
    history: History,
}

fn devices(n: u64) -> Vec<Device> {
    (1..=n)
        .map(|id| {
            let mut history = History::default();
            for k in 0..4 {
                let item = (id * 3 + k * 5) % ITEMS as u64;
                history.push(&format!("i{item}"), "view", None, 1_000 + k as i64);
            }
            Device {
                id,
                keys: ClientKeys::from_secret([id as u8; 32]),
                history,
            }
        })
        .collect()
}

/// A server with `ITEMS` catalog items and a read key's client.
async fn server() -> (TestServer, Client, String) {
    let srv = start().await;
    for i in 0..ITEMS {
        let (status, body) = srv.put(&format!("/v1/items/i{i}"), json!({})).await;
        assert!(status.is_success(), "{body}");
    }
    let engine = srv.engine();
    let read = tokio::task::spawn_blocking(move || {
        engine
            .access()
            .create_key("device", "federated test", &[Scope::Read], None)
    })
    .await
    .unwrap()
    .expect("key")
    .0;
    (srv, client_with_key(&read), read)
}

async fn send(client: &Client, url: String, body: Value) -> (StatusCode, Value) {
    let resp = client.post(url).json(&body).send().await.expect("sent");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get_json(client: &Client, url: String) -> Value {
    let resp = client.get(url).send().await.expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// The run's current factors, verified with the server's device key.
async fn model(srv: &TestServer, client: &Client) -> (Vec<f32>, Bundle) {
    let key = get_json(client, format!("{}/v1/device/key", srv.base)).await;
    let hexkey = key["public_key"].as_str().unwrap();
    let mut pk = [0u8; 32];
    for (i, b) in pk.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hexkey[2 * i..2 * i + 2], 16).unwrap();
    }
    let resp = client
        .get(format!("{}/v1/federated/model", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("x-federated-round"));
    let bytes = resp.bytes().await.unwrap();
    let bundle = Bundle::verify(&bytes, &pk).expect("the bundle verifies");
    let factors = (0..ITEMS as u32)
        .flat_map(|i| {
            bundle
                .factors(i)
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    (factors, bundle)
}

/// A device's clipped plain update against `factors`.
fn local(d: &Device, bundle: &Bundle, factors: &[f32]) -> Vec<f32> {
    let layout = Layout {
        items: ITEMS,
        dim: DIM,
    };
    let gram = federated::gram_reg(factors, DIM, LAMBDA);
    let weights = d.history.weights(bundle, 10_000);
    federated::local_update(layout, factors, &gram, ALPHA, &weights, CLIP)
        .expect("the history has catalog items")
        .vector
}

/// The server's step, computed here from the plain updates of the clients it took.
fn expected_step(factors: &[f32], updates: &[Vec<f32>], population: f64) -> Vec<f32> {
    let layout = Layout {
        items: ITEMS,
        dim: DIM,
    };
    let mut sum = vec![0f64; layout.len()];
    for u in updates {
        for (s, v) in sum.iter_mut().zip(u) {
            *s += f64::from(*v);
        }
    }
    let mut out = factors.to_vec();
    federated::server_step(
        layout,
        &mut out,
        &sum,
        StepParams {
            regularization: LAMBDA,
            population,
            clients: updates.len() as f64,
            curvature: 1.0,
            learning_rate: 1.0,
            damping: 0.0,
            min_curvature: 0.0,
        },
    );
    out
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

async fn join_all(srv: &TestServer, client: &Client, devs: &[Device]) {
    for d in devs {
        let key: String = d.keys.public().iter().map(|b| format!("{b:02x}")).collect();
        let got = send(
            client,
            format!("{}/v1/federated/join", srv.base),
            json!({"client_id": d.id, "public_key": key}),
        )
        .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    }
}

/// Twelve devices, two rounds with secure aggregation; in round 1 devices 11 and 12 mask but
/// never submit, and the round completes through the survivors' reveals.
#[tokio::test]
async fn twelve_devices_two_rounds_with_dropouts() {
    let (srv, client, _) = server().await;
    let (status, body) = srv
        .post(
            "/v1/federated/start",
            json!({"factors": DIM, "regularization": LAMBDA, "alpha": ALPHA, "clip": CLIP,
                   "population": 12, "min_clients": 3, "rounds": 3, "seed": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let devs = devices(12);

    for round in 1..=2u64 {
        let (factors, bundle) = model(&srv, &client).await;
        join_all(&srv, &client, &devs).await;
        let (status, view) = srv
            .post(
                &format!("/v1/federated/rounds/{round}/close-join"),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["phase"], "submit");
        let seed = view["round_seed"].as_u64().unwrap();
        let k = view["neighbours"].as_u64().unwrap() as usize;
        let participants: Vec<(u64, [u8; 32])> = view["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let h = p["public_key"].as_str().unwrap();
                let mut key = [0u8; 32];
                for (i, b) in key.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
                }
                (p["id"].as_u64().unwrap(), key)
            })
            .collect();
        assert_eq!(participants.len(), 12);
        let ids: Vec<u64> = participants.iter().map(|p| p.0).collect();
        let graph = secagg::neighbours(seed, &ids, k).unwrap();
        let with_keys = |id: u64| -> Vec<(u64, [u8; 32])> {
            graph
                .neighbours_of(id)
                .unwrap()
                .iter()
                .map(|n| *participants.iter().find(|p| p.0 == *n).unwrap())
                .collect()
        };
        let drops: &[u64] = if round == 1 { &[11, 12] } else { &[] };
        let mut plain = Vec::new();
        for d in &devs {
            let update = local(d, &bundle, &factors);
            let encoded = secagg::encode(&update, secagg::DEFAULT_SCALE_BITS).unwrap();
            let masked = secagg::mask(&encoded, round, d.id, &d.keys, &with_keys(d.id)).unwrap();
            if drops.contains(&d.id) {
                continue; // Masked, then gone.
            }
            plain.push(update);
            let bytes: Vec<u8> = masked.iter().flat_map(|w| w.to_le_bytes()).collect();
            let got = send(
                &client,
                format!("{}/v1/federated/rounds/{round}/update", srv.base),
                json!({"client_id": d.id, "masked": base64(&bytes)}),
            )
            .await;
            assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        }
        if !drops.is_empty() {
            let (status, view) = srv
                .post(&format!("/v1/federated/rounds/{round}/close"), json!({}))
                .await;
            assert_eq!(status, StatusCode::OK, "{view}");
            assert_eq!(view["phase"], "unmask");
            assert_eq!(view["dropped"], json!(drops));
            let requests = view["reveal_requests"].as_array().unwrap().clone();
            assert!(!requests.is_empty());
            for r in requests {
                let id = r["client_id"].as_u64().unwrap();
                let d = &devs[id as usize - 1];
                let request = RevealRequest {
                    round,
                    submitted: serde_json::from_value(r["submitted"].clone()).unwrap(),
                    dropped: serde_json::from_value(r["dropped"].clone()).unwrap(),
                };
                let seeds = secagg::reveal(round, id, &d.keys, &with_keys(id), &request).unwrap();
                let got = send(
                    &client,
                    format!("{}/v1/federated/rounds/{round}/reveal", srv.base),
                    json!({"client_id": id, "seeds": seeds}),
                )
                .await;
                assert_eq!(got.0, StatusCode::OK, "{}", got.1);
            }
        }
        let view = get_json(&client, format!("{}/v1/federated/round", srv.base)).await;
        assert_eq!(view["round"], round + 1, "{view}");
        assert_eq!(view["phase"], "join");
        // Noise off: the server's step is the in-process step on the survivors' sum.
        let (next, _) = model(&srv, &client).await;
        let want = expected_step(&factors, &plain, 12.0);
        let diff = max_diff(&next, &want);
        assert!(diff < 1e-4, "round {round}: factors differ by {diff}");
        assert!(max_diff(&next, &factors) > 1e-3, "the factors moved");
    }
    let (status, st) = srv.get("/v1/federated/status").await;
    assert_eq!(status, StatusCode::OK, "{st}");
    let history = st["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["clients"], 10);
    assert_eq!(history[0]["dropped"], 2);
    assert_eq!(history[1]["clients"], 12);
    srv.stop().await;
}

/// Bad and hostile input is refused with a 4xx naming the problem, and the round still
/// completes with every update that was accepted.
#[tokio::test]
async fn bad_updates_are_refused_and_the_round_completes() {
    let (srv, client, _) = server().await;
    let (status, body) = srv
        .post(
            "/v1/federated/start",
            json!({"factors": DIM, "regularization": LAMBDA, "alpha": ALPHA, "clip": CLIP,
                   "population": 4, "min_clients": 3, "rounds": 3,
                   "secure_aggregation": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = |p: &str| format!("{}/v1/federated/{p}", srv.base);
    let devs = devices(4);

    // A bad public key, then a duplicate join.
    let got = send(
        &client,
        url("join"),
        json!({"client_id": 1, "public_key": "zz"}),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("public_key"),
    );
    // The all-zero key is a low-order point: no neighbour could mask against it.
    let got = send(
        &client,
        url("join"),
        json!({"client_id": 1, "public_key": "0".repeat(64)}),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("public_key"),
    );
    join_all(&srv, &client, &devs).await;
    let key: String = devs[0]
        .keys
        .public()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let got = send(
        &client,
        url("join"),
        json!({"client_id": 1, "public_key": key}),
    )
    .await;
    assert_error(
        &got,
        StatusCode::CONFLICT,
        "duplicate_client",
        Some("client_id"),
    );
    // An update before submit opens: wrong phase.
    let got = send(
        &client,
        url("rounds/1/update"),
        json!({"client_id": 1, "update": [0.0]}),
    )
    .await;
    assert_error(&got, StatusCode::CONFLICT, "wrong_phase", None);

    let (status, view) = srv
        .post("/v1/federated/rounds/1/close-join", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let len = view["update_len"].as_u64().unwrap() as usize;
    let (factors, bundle) = model(&srv, &client).await;
    let updates: Vec<Vec<f32>> = devs.iter().map(|d| local(d, &bundle, &factors)).collect();
    assert_eq!(updates[0].len(), len);

    // Wrong length.
    let got = send(
        &client,
        url("rounds/1/update"),
        json!({"client_id": 1, "update": [0.5, 0.5]}),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "wrong_length",
        Some("update"),
    );
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&len.to_string()) && message.contains('2'),
        "{message}"
    );
    // NaN is not JSON; a number beyond f32 is not finite.
    let mut nan = String::from("{\"client_id\": 1, \"update\": [NaN");
    nan.push_str(&",0".repeat(len - 1));
    nan.push_str("]}");
    let got = srv
        .post_raw(
            "/v1/federated/rounds/1/update",
            "application/json",
            nan.into_bytes(),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_json", None);
    let mut huge = vec![json!(0.0); len];
    huge[3] = json!(1e39);
    let got = send(
        &client,
        url("rounds/1/update"),
        json!({"client_id": 1, "update": huge}),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("update[3]"),
    );
    // A client that did not join.
    let got = send(
        &client,
        url("rounds/1/update"),
        json!({"client_id": 99, "update": updates[0]}),
    )
    .await;
    assert_error(
        &got,
        StatusCode::FORBIDDEN,
        "unknown_client",
        Some("client_id"),
    );
    // A body far beyond what the layout needs.
    let big = json!({"client_id": 1, "update": vec![0.0; len * 40]});
    let got = send(&client, url("rounds/1/update"), big).await;
    assert_error(
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    );

    // The good updates; a second one from the same client is refused.
    for (d, u) in devs.iter().zip(&updates).take(3) {
        let got = send(
            &client,
            url("rounds/1/update"),
            json!({"client_id": d.id, "update": u}),
        )
        .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    }
    let got = send(
        &client,
        url("rounds/1/update"),
        json!({"client_id": 1, "update": updates[0]}),
    )
    .await;
    assert_error(
        &got,
        StatusCode::CONFLICT,
        "duplicate_update",
        Some("client_id"),
    );
    let got = send(
        &client,
        url("rounds/1/update"),
        json!({"client_id": 4, "update": updates[3]}),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(
        got.1["round"], 2,
        "the last update ends the round: {}",
        got.1
    );

    // Round 2: replaying round 1's update is refused.
    join_all(&srv, &client, &devs).await;
    let (status, view) = srv
        .post("/v1/federated/rounds/2/close-join", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let got = send(
        &client,
        url("rounds/1/update"),
        json!({"client_id": 1, "update": updates[0]}),
    )
    .await;
    assert_error(&got, StatusCode::CONFLICT, "wrong_round", Some("round"));

    // Nothing accepted was lost: round 1's step used all four updates.
    let (next, _) = model(&srv, &client).await;
    let want = expected_step(&factors, &updates, 4.0);
    let diff = max_diff(&next, &want);
    assert!(diff < 1e-4, "factors differ by {diff}");
    let (_, st) = srv.get("/v1/federated/status").await;
    assert_eq!(st["history"][0]["clients"], 4, "{st}");
    srv.stop().await;
}

/// With central noise, the accountant spends ε each round and the run ends when the next
/// round would pass the budget.
#[tokio::test]
async fn noise_spends_the_budget_and_ends_the_run() {
    let (srv, client, _) = server().await;
    let (status, body) = srv
        .post(
            "/v1/federated/start",
            json!({"factors": DIM, "clip": CLIP, "population": 1000, "min_clients": 3,
                   "expected_clients": 4, "rounds": 2, "epsilon": 2.0,
                   "secure_aggregation": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sigma = body["config"]["noise_multiplier"].as_f64().unwrap();
    assert!(sigma > 0.0, "{body}");
    let url = |p: &str| format!("{}/v1/federated/{p}", srv.base);
    let devs = devices(4);
    for round in 1..=2u64 {
        let (factors, bundle) = model(&srv, &client).await;
        join_all(&srv, &client, &devs).await;
        let (status, view) = srv
            .post(
                &format!("/v1/federated/rounds/{round}/close-join"),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        for d in &devs {
            let u = local(d, &bundle, &factors);
            let got = send(
                &client,
                url(&format!("rounds/{round}/update")),
                json!({"client_id": d.id, "update": u}),
            )
            .await;
            assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        }
    }
    let view = get_json(&client, url("round")).await;
    assert_eq!(view["phase"], "done", "{view}");
    let spent = view["epsilon_spent"].as_f64().unwrap();
    assert!(spent > 0.0 && spent <= 2.0, "{view}");
    let got = send(
        &client,
        url("join"),
        json!({"client_id": 1, "public_key": "ab".repeat(32)}),
    )
    .await;
    assert_error(&got, StatusCode::CONFLICT, "wrong_phase", None);
    let (_, st) = srv.get("/v1/federated/status").await;
    let history = st["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{st}");
    assert!(history[0]["epsilon"].as_f64().unwrap() < spent, "{st}");
    srv.stop().await;
}

/// Devices need a key; starting a run needs an admin key.
#[tokio::test]
async fn federated_routes_are_authorized() {
    let (srv, client, _) = server().await;
    let anonymous = Client::new();
    let resp = anonymous
        .post(format!("{}/v1/federated/join", srv.base))
        .json(&json!({"client_id": 1, "public_key": "00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let got = send(
        &client,
        format!("{}/v1/federated/start", srv.base),
        json!({}),
    )
    .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let got = send(
        &client,
        format!("{}/v1/federated/rounds/1/close-join", srv.base),
        json!({}),
    )
    .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    srv.stop().await;
}
