//! Crash safety: the real `bespoke serve` is killed with SIGKILL at random moments while clients
//! send events (retrying until acknowledged); after every restart and at the end, each
//! acknowledged event is stored exactly once and the database passes `PRAGMA integrity_check`.
//!
//! `BESPOKE_KILL_CYCLES` sets the number of kills (50 by default; docs/reliability.md has the
//! longer run).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{bespoke, json as json_out, ok};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_server(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bespoke"))
        // Else the audit key file is made beside the temporary data directory, and left behind.
        .env(
            "BESPOKE__PRIVACY__AUDIT_SECRET",
            "CLI tests' audit key, 32 bytes or more",
        )
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("BESPOKE__LOG__LEVEL", "error")
        .env("BESPOKE__TRAINING__TRAIN_ON_START", "false")
        .env("BESPOKE__TRAINING__INTERVAL_MINUTES", "0")
        .env("BESPOKE__TRAINING__MIN_NEW_EVENTS", "0")
        .env_remove("BESPOKE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bespoke serve starts")
}

pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited during start-up: {status}");
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A tiny seeded generator for kill times and batch sizes.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_never_loses_or_duplicates_an_acknowledged_event() {
    let cycles: usize = std::env::var("BESPOKE_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let key = json_out(&bespoke(
        dir.path(),
        &[
            "keys", "create", "--name", "crash", "--scopes", "write", "--json",
        ],
    ))["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let port = free_port();
    let base = Arc::new(RwLock::new(format!("http://127.0.0.1:{port}")));
    let mut child = spawn_server(dir.path(), port);
    let first = base.read().unwrap().clone();
    wait_ready(&client, &first, &mut child).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let (client, base, stop, key) = (client.clone(), base.clone(), stop.clone(), key.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = Lcg(c + 1);
            let mut acked: Vec<String> = Vec::new();
            let mut n = 0u64;
            let mut retries = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let size = 1 + rng.below(20);
                let ids: Vec<String> = (0..size).map(|i| format!("c{c}-{}", n + i)).collect();
                n += size;
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| {
                        json!({ "event_id": id, "user": format!("u{}", rng.below(500)),
                                      "item": format!("i{}", rng.below(200)), "type": "view" })
                    })
                    .collect();
                let body = json!({ "events": events });
                // Retry the same batch (same ids) until it is acknowledged: replays are idempotent.
                loop {
                    let url = format!("{}/v1/events", base.read().unwrap());
                    match client.post(url).bearer_auth(&key).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            let answer: Value = r.json().await.unwrap_or(Value::Null);
                            if answer["received"] == size {
                                acked.extend(ids.iter().cloned());
                                break;
                            }
                            // The connection died mid-answer: not acknowledged, so retry.
                        }
                        Ok(r) if r.status().is_client_error() => {
                            panic!("refused: {} {:?}", r.status(), r.text().await)
                        }
                        _ => {}
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            (acked, retries)
        }));
    }

    let mut rng = Lcg(42);
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(30 + rng.below(250))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let port = free_port();
        *base.write().unwrap() = format!("http://127.0.0.1:{port}");
        child = spawn_server(dir.path(), port);
        let b = base.read().unwrap().clone();
        wait_ready(&client, &b, &mut child).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut retries = 0;
    for c in clients {
        let (a, r) = c.await.unwrap();
        acked.extend(a);
        retries += r;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        acked.len() > cycles,
        "too little traffic to mean anything: {}",
        acked.len()
    );
    assert!(
        retries > 0,
        "no request was ever interrupted: the kills missed"
    );

    let check = json_out(&bespoke(dir.path(), &["check", "--json"]));
    assert_eq!(check["ok"], true, "{check}");
    let export = ok(&bespoke(dir.path(), &["export", "events"]));
    let mut stored = HashSet::new();
    for line in export.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let id = e["event_id"].as_str().unwrap().to_owned();
        assert!(stored.insert(id.clone()), "{id} stored twice");
    }
    let acked: HashSet<String> = acked.into_iter().collect();
    let missing: Vec<&String> = acked.difference(&stored).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Every batch was retried until acknowledged, so nothing unacknowledged is left either.
    assert_eq!(stored.len(), acked.len());
    assert_eq!(check["events"], acked.len());
    eprintln!(
        "{}",
        json!({ "kill_cycles": cycles, "acknowledged_events": acked.len(), "client_retries": retries,
                "lost": 0, "duplicated": 0, "integrity_check": "ok" })
    );
}
