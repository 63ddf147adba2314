//! Traces over OTLP/HTTP (`--features otlp`, `log.otlp_endpoint`): the real `bespoke serve`
//! exports its spans (request → pipeline stages, request → store) to a collector, here a
//! loopback HTTP listener that keeps what it is sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::crash::{free_port, wait_ready};
use crate::{bespoke, json as json_out};

/// Requests a collector received: path and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP collector that answers 200 to everything and keeps each request.
fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                // Keep-alive: requests one after another on one connection.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    keep.lock().unwrap().push((path, body));
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                    )
                    .unwrap();
                }
            });
        }
    });
    (format!("http://{addr}"), received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn spans_reach_an_otlp_collector() {
    let (endpoint, received) = collector();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let key = json_out(&bespoke(
        &data,
        &[
            "keys", "create", "--name", "otlp", "--scopes", "write", "--json",
        ],
    ))["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bespoke"))
        .env(
            "BESPOKE__PRIVACY__AUDIT_SECRET",
            "CLI tests' audit key, 32 bytes or more",
        )
        .env("BESPOKE__LOG__LEVEL", "warn")
        .env("BESPOKE__LOG__OTLP_ENDPOINT", &endpoint)
        .env("BESPOKE__LOG__SERVICE_NAME", "bespoke-otlp-test")
        .env("BESPOKE__TRAINING__TRAIN_ON_START", "false")
        .env_remove("BESPOKE_CONFIG")
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &base, &mut child).await;
    let events = json!({"events": [{"user": "ann", "item": "tea", "type": "view"}]});
    let r = client
        .post(format!("{base}/v1/events"))
        .bearer_auth(&key)
        .header("X-Request-Id", "otlp-events-1")
        .json(&events)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = client
        .get(format!("{base}/v1/popular?n=3"))
        .bearer_auth(&key)
        .header("X-Request-Id", "otlp-popular-1")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // SIGTERM: a clean shutdown sends the spans still buffered.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let received = received.lock().unwrap();
    assert!(
        !received.is_empty(),
        "nothing reached the collector; stderr:\n{stderr}"
    );
    for (path, _) in received.iter() {
        assert_eq!(path, "/v1/traces");
    }
    // Protobuf keeps strings as they are: span names, attribute values and the service name
    // can be found in the bytes.
    let all: Vec<u8> = received.iter().flat_map(|(_, b)| b.clone()).collect();
    for needle in [
        "bespoke-otlp-test",
        "request",
        "otlp-events-1",
        "store.append_events",
        "otlp-popular-1",
        "rank",
        "retrieve",
        "rules",
    ] {
        assert!(contains(&all, needle), "{needle:?} not exported");
    }
}
