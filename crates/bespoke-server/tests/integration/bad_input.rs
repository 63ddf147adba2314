//! Hostile and broken input: every case gets a 4xx that says what was wrong and where, the server
//! stays up, and nothing stored before is lost.

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, client_with_key, start_with};

const BODY_LIMIT: usize = 64 * 1024;

async fn raw(
    srv: &TestServer,
    method: Method,
    path: &str,
    ct: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = srv.client.request(method, format!("{}{path}", srv.base));
    if let Some(ct) = ct {
        req = req.header("content-type", ct);
    }
    let resp = req.body(body).send().await.expect("the server answers");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_json(srv: &TestServer, path: &str, body: &str) -> (StatusCode, Value) {
    raw(
        srv,
        Method::POST,
        path,
        Some("application/json"),
        body.as_bytes().to_vec(),
    )
    .await
}

/// A 4xx JSON error whose field (if `field` is given) starts with it.
fn refused(got: &(StatusCode, Value), status: StatusCode, field: Option<&str>, case: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{case}: {body}");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(!msg.is_empty(), "{case}: no message in {body}");
    if let Some(f) = field {
        let got = body["error"]["field"].as_str().unwrap_or("");
        assert!(
            got.starts_with(f),
            "{case}: field {got:?}, expected {f:?}: {body}"
        );
    }
}

/// Sends `GET <path>` over a bare TCP connection; the status line of the answer, or nothing if
/// the server closed the connection.
async fn raw_request_line(srv: &TestServer, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        // The server may stop reading and close before the whole request is written.
        let _ = s.write_all(req.as_bytes());
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    })
    .await
    .unwrap()
}

fn event(user: &str) -> Value {
    json!({ "user": user, "item": "i1", "type": "view" })
}

#[tokio::test]
async fn hostile_input_is_refused_clearly_and_loses_nothing() {
    let srv = start_with(|s| s.limits.max_body_bytes = BODY_LIMIT).await;
    // What must survive everything below.
    let baseline: Vec<Value> = (0..20).map(|u| event(&format!("keep{u}"))).collect();
    let (status, _) = srv.post("/v1/events", json!({ "events": baseline })).await;
    assert_eq!(status, StatusCode::OK);

    // Bodies: one byte over the limit is refused; exactly at the limit is fine.
    let valid = json!({ "events": [event("edge")] }).to_string();
    let at_limit = format!("{valid}{}", " ".repeat(BODY_LIMIT - valid.len()));
    assert_eq!(
        post_json(&srv, "/v1/events", &at_limit).await.0,
        StatusCode::OK
    );
    let over = format!("{at_limit} ");
    refused(
        &post_json(&srv, "/v1/events", &over).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
        "over the limit",
    );

    // Nesting 200 deep in the context.
    let deep = format!(
        r#"{{"events":[{{"user":"u","item":"i","type":"view","context":{}1{}}}]}}"#,
        r#"{"a":"#.repeat(200),
        "}".repeat(200)
    );
    let got = post_json(&srv, "/v1/events", &deep).await;
    refused(
        &got,
        StatusCode::BAD_REQUEST,
        Some("events[0].context"),
        "200 deep",
    );
    assert_eq!(got.1["error"]["code"], "invalid_json");

    // A million-element array, and one event over the batch limit.
    let million = format!(r#"{{"events":[{}0]}}"#, "0,".repeat(999_999));
    let srv_big = start_with(|_| {}).await;
    refused(
        &post_json(&srv_big, "/v1/events", &million).await,
        StatusCode::BAD_REQUEST,
        Some("events[0]"),
        "million",
    );
    let too_many: Vec<Value> = (0..10_001).map(|i| event(&format!("m{i}"))).collect();
    refused(
        &srv_big
            .post("/v1/events", json!({ "events": too_many }))
            .await,
        StatusCode::BAD_REQUEST,
        Some("events"),
        "10,001",
    );
    drop(srv_big);

    // n out of range, on every route that takes it.
    for route in [
        "/v1/users/keep1/recommendations",
        "/v1/popular",
        "/v1/items/i1/similar",
    ] {
        for n in ["0", "-1", "2147483648", "1001", "ten", "1e3", ""] {
            let got = srv.get(&format!("{route}?n={n}")).await;
            refused(
                &got,
                StatusCode::BAD_REQUEST,
                Some("n"),
                &format!("{route} n={n}"),
            );
        }
    }

    // Keys in paths: too long, NUL, CRLF, RTL override, invalid UTF-8, percent-encoded junk.
    let long = "k".repeat(300);
    for key in [
        long.as_str(),
        "a%00b",
        "a%0D%0Ab",
        "a%E2%80%AEb",
        "a%FFb",
        "a%C0%80",
    ] {
        let got = srv.get(&format!("/v1/users/{key}")).await;
        refused(
            &got,
            StatusCode::BAD_REQUEST,
            Some("key"),
            &format!("path key {key}"),
        );
        let got = srv.put(&format!("/v1/items/{key}"), json!({})).await;
        refused(
            &got,
            StatusCode::BAD_REQUEST,
            Some("key"),
            &format!("item path key {key}"),
        );
    }
    // An empty key.
    let got = srv.get("/v1/users//recommendations").await;
    refused(&got, StatusCode::BAD_REQUEST, Some("key"), "empty path key");
    // A 1 MB path (more than HTTP clients will send): refused before routing, without harm.
    let answer = raw_request_line(&srv, &format!("/v1/users/{}", "k".repeat(1 << 20))).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "1 MB path answered {:?}",
        answer.chars().take(40).collect::<String>()
    );

    // Keys in bodies.
    let mb = "k".repeat(1 << 20);
    for (user, why) in [
        ("", "empty"),
        ("a\u{0}b", "NUL"),
        ("a\r\nb", "CRLF"),
        ("a\u{202e}b", "RTL"),
        (mb.as_str(), "1 MB"),
    ] {
        let body = json!({ "events": [event("fine"), event(user)] }).to_string();
        let srv_ok = if user.len() > BODY_LIMIT {
            None
        } else {
            Some(())
        };
        if srv_ok.is_some() {
            refused(
                &post_json(&srv, "/v1/events", &body).await,
                StatusCode::BAD_REQUEST,
                Some("events[1].user"),
                why,
            );
        } else {
            refused(
                &post_json(&srv, "/v1/events", &body).await,
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                why,
            );
        }
    }
    // Invalid UTF-8 and lone surrogates in JSON strings.
    let mut bytes = br#"{"events":[{"user":"a"#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(br#"","item":"i","type":"view"}]}"#);
    refused(
        &raw(
            &srv,
            Method::POST,
            "/v1/events",
            Some("application/json"),
            bytes,
        )
        .await,
        StatusCode::BAD_REQUEST,
        None,
        "invalid UTF-8",
    );
    refused(
        &post_json(
            &srv,
            "/v1/events",
            r#"{"events":[{"user":"\ud800","item":"i","type":"view"}]}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        Some("events[0].user"),
        "lone surrogate",
    );

    // Numbers JSON cannot hold, or that we will not.
    let digits = "9".repeat(400);
    for (value, why) in [
        ("NaN", "NaN"),
        ("1e309", "1e309"),
        (digits.as_str(), "400 digits"),
        ("Infinity", "Infinity"),
    ] {
        let body =
            format!(r#"{{"events":[{{"user":"u","item":"i","type":"rating","value":{value}}}]}}"#);
        refused(
            &post_json(&srv, "/v1/events", &body).await,
            StatusCode::BAD_REQUEST,
            None,
            why,
        );
    }
    refused(
        &srv.post(
            "/v1/events",
            json!({ "events": [{ "user": "u", "item": "i", "type": "rating", "value": 1e13 }] }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        Some("events[0].value"),
        "1e13",
    );

    // Duplicate keys, anywhere; unknown fields.
    for (body, field, why) in [
        (
            r#"{"events":[{"user":"a","user":"b","item":"i","type":"view"}]}"#,
            "events[0]",
            "duplicate field",
        ),
        (
            r#"{"events":[{"user":"a","item":"i","type":"view","context":{"p":1,"p":2}}]}"#,
            "events[0].context",
            "duplicate context key",
        ),
        (r#"{"events":[],"events":[]}"#, "", "duplicate top-level"),
        (
            r#"{"events":[{"user":"a","item":"i","type":"view","colour":"red"}]}"#,
            "events[0]",
            "unknown field",
        ),
        (r#"{"evnts":[]}"#, "", "misspelt"),
    ] {
        let got = post_json(&srv, "/v1/events", body).await;
        refused(&got, StatusCode::BAD_REQUEST, Some(field), why);
        assert_eq!(got.1["error"]["code"], "invalid_json", "{why}");
    }
    let got = raw(
        &srv,
        Method::PUT,
        "/v1/users/dup",
        Some("application/json"),
        br#"{"attributes":{"a":{"b":1,"b":2}}}"#.to_vec(),
    )
    .await;
    refused(
        &got,
        StatusCode::BAD_REQUEST,
        Some("attributes.a"),
        "duplicate nested attribute",
    );

    // Timestamps.
    for (ts, why) in [
        (json!("1970-01-01T00:00:00Z"), "1970"),
        (json!("9999-12-31T23:59:59Z"), "9999"),
        (json!("-0001-01-01T00:00:00Z"), "negative year"),
        (json!("2024-06-01T10:00:00"), "no time zone"),
        (json!("2024-13-01T10:00:00Z"), "month 13"),
        (json!("yesterday"), "words"),
        (json!(-5), "a negative number"),
        (json!(1_700_000_000), "a number"),
    ] {
        let got = srv.post("/v1/events", json!({ "events": [{ "user": "u", "item": "i", "type": "view", "timestamp": ts }] })).await;
        refused(
            &got,
            StatusCode::BAD_REQUEST,
            Some("events[0].timestamp"),
            why,
        );
    }

    // Content types.
    let body = json!({ "events": [event("ct")] }).to_string().into_bytes();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let got = raw(&srv, Method::POST, "/v1/events", ct, body.clone()).await;
        refused(
            &got,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("Content-Type"),
            &format!("{ct:?}"),
        );
    }
    // Not JSON at all, empty, truncated.
    for text in ["", "{", "[]", "null", "{\"events\": [", "\u{feff}{}"] {
        refused(
            &post_json(&srv, "/v1/events", text).await,
            StatusCode::BAD_REQUEST,
            None,
            &format!("{text:?}"),
        );
    }

    // Keys: missing, wrong, revoked.
    let (status, created) = srv
        .post("/v1/keys", json!({ "name": "doomed", "scopes": ["write"] }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let doomed = created["key"].as_str().unwrap().to_owned();
    srv.delete(&format!("/v1/keys/{}", created["prefix"].as_str().unwrap()))
        .await;
    for client in [
        Client::new(),
        client_with_key("bsk_wrong"),
        client_with_key(&doomed),
    ] {
        let resp = client
            .post(format!("{}/v1/events", srv.base))
            .json(&json!({ "events": [event("nokey")] }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["field"], "Authorization");
    }

    // Still up, and everything accepted is still there; nothing refused was stored.
    let (status, _) = srv.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let counts = srv.counts().await;
    assert_eq!(counts["events"], 20 + 1, "{counts}");
    for u in 0..20 {
        let (status, page) = srv.get(&format!("/v1/users/keep{u}/events")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["events"].as_array().unwrap().len(), 1);
    }
    let (status, _) = srv.get("/v1/users/fine").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused batch stores none of its events"
    );
}

/// A full store (here: the size cap, which fails exactly like a full disk) answers 507, never
/// acknowledges what it did not commit, and keeps everything it did.
#[tokio::test]
async fn a_full_store_answers_507_and_keeps_what_it_acknowledged() {
    let srv = start_with(|s| s.store.max_size_mib = 2).await;
    let mut acked = 0u64;
    let mut full = None;
    for batch in 0..500 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                json!({ "user": format!("user-{batch}-{i}-{}", "x".repeat(60)), "item": format!("item-{i}"),
                        "type": "view", "context": { "page": "p".repeat(100) } })
            })
            .collect();
        let (status, body) = srv.post("/v1/events", json!({ "events": events })).await;
        match status {
            StatusCode::OK => acked += 100,
            StatusCode::INSUFFICIENT_STORAGE => {
                full = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let body = full.expect("the cap was never reached");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    assert!(acked > 0);
    // Reads still work, and exactly the acknowledged events are there.
    assert_eq!(srv.counts().await["events"], acked);
    let (status, _) = srv.get("/v1/popular").await;
    assert_eq!(status, StatusCode::OK);
    let dir = srv.stop().await;
    let store = bespoke_store::SqliteStore::open(dir.path(), Default::default()).unwrap();
    use bespoke_store::{EventStore, PrivacyStore};
    assert_eq!(store.stats().unwrap().events, acked);
    assert_eq!(store.integrity_check().unwrap(), Vec::<String>::new());
}
