//! Authorization: every route × every kind of credential, key lifecycle, rate limits.

use bespoke_server::auth::{Access, Scope};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, client_with_key, start, start_with};

async fn create_key(srv: &TestServer, scopes: &[&str], rate: Option<f64>) -> (String, String) {
    let (status, body) = srv
        .post(
            "/v1/keys",
            json!({ "name": format!("{scopes:?}"), "scopes": scopes, "rate_per_second": rate }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["key"].as_str().unwrap().to_owned();
    let prefix = body["prefix"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&prefix));
    (key, prefix)
}

async fn call(client: &Client, base: &str, method: &str, path: &str) -> (StatusCode, Value, bool) {
    let url = format!(
        "{base}{}",
        path.replace("{key}", "x").replace("{version}", "1")
    );
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(method.clone(), url);
    if matches!(method, Method::POST | Method::PUT) {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let challenge = resp.headers().contains_key("www-authenticate");
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        challenge,
    )
}

/// The route table × {no key, malformed key, unknown key, tampered key, revoked key, read,
/// write, admin}: 401 without a valid key, 403 without the scope (a scope includes the weaker
/// ones), and neither with it. Every `GET` route is also called with `HEAD`, which must get the
/// same answer (issue 23: it got 403 everywhere).
#[tokio::test]
async fn every_route_is_authorized_for_exactly_its_scopes() {
    // Every bad credential below comes from 127.0.0.1: raise its failed-authentication budget.
    let srv = start_with(|s| s.auth.failed_burst = 100_000).await;
    let (read, _) = create_key(&srv, &["read"], None).await;
    let (write, _) = create_key(&srv, &["write"], None).await;
    let (admin, _) = create_key(&srv, &["admin"], None).await;
    let (revoked, revoked_prefix) = create_key(&srv, &["admin"], None).await;
    let (status, _) = srv.delete(&format!("/v1/keys/{revoked_prefix}")).await;
    assert_eq!(status, StatusCode::OK);
    // Well-formed but never issued: same shape as a real key.
    let unknown = format!("bsk_00000000_{}", "0".repeat(64));
    let mut tampered = read.clone();
    tampered.pop();
    tampered.push(if read.ends_with('0') { '1' } else { '0' });

    let no_key = Client::new();
    let bad: Vec<(&str, Client)> = vec![
        ("no key", no_key.clone()),
        ("malformed", client_with_key("hunter2")),
        ("unknown", client_with_key(&unknown)),
        ("tampered", client_with_key(&tampered)),
        ("revoked", client_with_key(&revoked)),
    ];
    let good: Vec<(Scope, Client)> = vec![
        (Scope::Read, client_with_key(&read)),
        (Scope::Write, client_with_key(&write)),
        (Scope::Admin, client_with_key(&admin)),
    ];
    let mut checked = 0;
    let mut heads = 0;
    for (method, path, access) in bespoke_server::api::ROUTES {
        for (what, client) in &bad {
            let (status, body, challenge) = call(client, &srv.base, method, path).await;
            if *access == Access::Public {
                assert_eq!(status, StatusCode::OK, "{what} {method} {path}: {body}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{what} {method} {path}: {body}"
                );
                assert_eq!(body["error"]["code"], "unauthorized");
                assert!(challenge, "401 without WWW-Authenticate on {method} {path}");
            }
            if *method == "GET" {
                let (head, _, head_challenge) = call(client, &srv.base, "HEAD", path).await;
                assert_eq!(head, status, "{what} HEAD {path}");
                assert_eq!(head_challenge, challenge, "{what} HEAD {path}");
            }
            checked += 1;
        }
        for (scope, client) in &good {
            let (status, body, _) = call(client, &srv.base, method, path).await;
            let allowed = match access {
                Access::Public => true,
                Access::Needs(needed) => scope >= needed,
            };
            if allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{scope} {method} {path} refused: {status} {body}"
                );
            } else {
                assert_error(&(status, body), StatusCode::FORBIDDEN, "forbidden", None);
            }
            if *method == "GET" {
                let (head, head_body, _) = call(client, &srv.base, "HEAD", path).await;
                assert_eq!(head, status, "{scope} HEAD {path}");
                assert_eq!(
                    head_body,
                    Value::String(String::new()),
                    "HEAD {path} has a body"
                );
                heads += 1;
            }
            checked += 1;
        }
    }
    assert_eq!(checked, bespoke_server::api::ROUTES.len() * 8);
    let gets = bespoke_server::api::ROUTES
        .iter()
        .filter(|(m, _, _)| *m == "GET")
        .count();
    assert_eq!(heads, gets * 3);
}

#[tokio::test]
async fn keys_are_listed_without_secrets_revoked_at_once_and_audited() {
    let srv = start().await;
    let (key, prefix) = create_key(&srv, &["read", "write"], None).await;
    let client = client_with_key(&key);
    let (status, _, _) = call(&client, &srv.base, "GET", "/v1/popular").await;
    assert_eq!(status, StatusCode::OK);
    // Also accepted as X-Api-Key.
    let resp = Client::new()
        .get(format!("{}/v1/popular", srv.base))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A scheme other than Bearer is refused with a message that says what is expected.
    let resp = Client::new()
        .get(format!("{}/v1/popular", srv.base))
        .header("authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("Bearer"));

    let (status, list) = srv.get("/v1/keys").await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(
        !text.contains(&key[prefix.len()..]),
        "listing leaks a secret"
    );
    let mine = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix.as_str())
        .unwrap();
    assert_eq!(mine["scopes"], json!(["read", "write"]));
    assert!(mine["revoked_at"].is_null());

    let (status, revoked) = srv.delete(&format!("/v1/keys/{prefix}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    let (status, body, _) = call(&client, &srv.base, "GET", "/v1/popular").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    assert_error(
        &srv.delete("/v1/keys/bsk_nothere").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    let (_, audit) = srv.get("/v1/audit").await;
    let actions: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let admin_prefix = &srv.admin_key[..12];
    assert!(actions.contains(&("key.revoke".into(), admin_prefix.into(), prefix.clone())));
    assert!(actions.contains(&("key.create".into(), admin_prefix.into(), prefix.clone())));
    // Newest first.
    assert_eq!(actions[0].0, "key.revoke");
}

#[tokio::test]
async fn bad_key_requests_are_refused_with_the_field() {
    let srv = start().await;
    for (body, field) in [
        (json!({ "name": "", "scopes": ["read"] }), "name"),
        (json!({ "name": "x", "scopes": ["root"] }), "scopes"),
        (json!({ "name": "x", "scopes": [] }), "scopes"),
        (
            json!({ "name": "x", "scopes": ["read"], "rate_per_second": -1 }),
            "rate_per_second",
        ),
    ] {
        let got = srv.post("/v1/keys", body).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field", Some(field));
    }
    assert_error(
        &srv.post("/v1/keys", json!({ "name": "x" })).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
    );
}

#[tokio::test]
async fn keys_created_by_another_process_work_within_a_second() {
    // The polling below fails authentication until the key arrives: not a throttling test.
    let srv = start_with(|s| s.auth.failed_per_minute = 0.0).await;
    // What `bespoke keys create` does: write the store directly, not through this server.
    let (key, record) = bespoke_server::auth::new_key("cli", &[Scope::Read], None).unwrap();
    let store = bespoke_store::SqliteStore::open(srv.dir.path(), Default::default()).unwrap();
    use bespoke_store::AccessStore;
    store.insert_key(record).unwrap();
    let client = client_with_key(&key);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _, _) = call(&client, &srv.base, "GET", "/v1/popular").await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(std::time::Instant::now() < deadline, "key never accepted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let srv = start_with(|s| s.auth.burst_seconds = 1.0).await;
    // 2 per second, bucket of 2: the third request in a row is refused.
    let (key, _) = create_key(&srv, &["read"], Some(2.0)).await;
    let client = client_with_key(&key);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let resp = client
            .get(format!("{}/v1/popular", srv.base))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
        if let Some(v) = resp.headers().get("retry-after") {
            retry_after = Some(v.to_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert!(retry_after.is_some_and(|s| s >= 1));
    // Another key has its own budget.
    let (status, _) = srv.get("/v1/popular").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn auth_can_be_off_only_on_loopback() {
    let srv = start_with(|s| s.auth.enabled = false).await;
    let (status, _, _) = call(&Client::new(), &srv.base, "GET", "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let mut settings = bespoke_server::Settings::default();
    settings.auth.enabled = false;
    settings.server.bind = "0.0.0.0:0".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    settings.store.data_dir = dir.path().to_owned();
    let err = bespoke_server::start(settings).await.unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}
