//! Crash safety on PostgreSQL (issue 18, "Reliability"), with the real `bespoke serve` binary
//! and real SIGKILLs, on a fresh schema of the local test database each (dropped after):
//!
//! - the kill loop of `crash.rs` against a PostgreSQL store: every acknowledged event is stored
//!   exactly once (read from the schema), and `bespoke check` finds nothing wrong;
//! - two nodes on one schema, the leader killed in the middle of a training run: the other
//!   takes the leadership, trains the next version (the dead node's training lock went with its
//!   connection) and serves it.
//!
//! `BESPOKE_KILL_CYCLES` sets the number of kills (20 by default, fewer than on SQLite: each
//! restart reconnects and re-reads the state from the database). Skipped with a printed
//! notice when PostgreSQL is not reachable, unless `BESPOKE_REQUIRE_POSTGRES=1` (CI).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::crash::{Lcg, free_port, wait_ready};
use crate::json as json_out;

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

const AUDIT_SECRET: &str = "CLI tests' audit key, 32 bytes or more";

/// A schema of its own in the test database, dropped when the test ends (also when it fails).
struct Schema(String);

impl Schema {
    /// A fresh schema name, or `None` (having said so) when PostgreSQL is not reachable and not
    /// required.
    fn fresh(tag: &str) -> Option<Self> {
        // The blocking client must not run on an async runtime's thread.
        let reached = std::thread::spawn(|| postgres::Client::connect(URL, postgres::NoTls).err())
            .join()
            .unwrap();
        if let Some(e) = reached {
            if std::env::var("BESPOKE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PostgreSQL not reachable at {URL} (BESPOKE_REQUIRE_POSTGRES=1): {e}");
            }
            eprintln!("SKIPPED: PostgreSQL not reachable at {URL} ({e})");
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Some(Self(format!("{tag}_{}_{nanos}", std::process::id())))
    }

    /// Runs `f` on a connection to the test database, off the runtime.
    fn sql<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client, &str) -> T + Send + 'static,
    ) -> T {
        let name = self.0.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(URL, postgres::NoTls).unwrap();
            f(&mut c, &name)
        })
        .join()
        .unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sql(|c, name| c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
        }));
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop schema {}", self.0);
        }
    }
}

/// A running `bespoke serve`, killed (SIGKILL) when dropped, so that a failing test leaves no
/// server behind.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bespoke` with the store on `schema`.
fn command(dir: &Path, schema: &Schema) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bespoke"));
    c.env("BESPOKE__PRIVACY__AUDIT_SECRET", AUDIT_SECRET)
        .env("BESPOKE__STORE__URL", URL)
        .env("BESPOKE__STORE__SCHEMA", &schema.0)
        .env("BESPOKE__LOG__LEVEL", "error")
        .env_remove("BESPOKE_CONFIG")
        .arg("--data-dir")
        .arg(dir);
    c
}

fn cli(dir: &Path, schema: &Schema, args: &[&str]) -> Output {
    command(dir, schema)
        .args(args)
        .output()
        .expect("bespoke runs")
}

/// `bespoke serve` on `port`, nothing in the background unless `env` asks for it.
fn serve(dir: &Path, schema: &Schema, port: u16) -> Node {
    Node(
        command(dir, schema)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("BESPOKE__TRAINING__TRAIN_ON_START", "false")
            .env("BESPOKE__TRAINING__INTERVAL_MINUTES", "0")
            .env("BESPOKE__TRAINING__MIN_NEW_EVENTS", "0")
            .env("BESPOKE__TRAINING__TUNE_INTERVAL_HOURS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bespoke serve starts"),
    )
}

fn create_key(dir: &Path, schema: &Schema, scope: &str) -> String {
    json_out(&cli(
        dir,
        schema,
        &[
            "keys", "create", "--name", "crash", "--scopes", scope, "--json",
        ],
    ))["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The client event ids stored in `schema`, each once (the unique index would refuse a second
/// copy; this reads what is there).
fn stored_ids(schema: &Schema) -> Vec<String> {
    schema.sql(|c, name| {
        c.query(
            &format!("SELECT event_id FROM {name}.events WHERE event_id IS NOT NULL"),
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| {
            let b: Vec<u8> = r.get(0);
            // Ids of exactly 16 bytes are stored with a 0xFF appended (docs/postgres.md).
            let b = if b.len() == 17 && b[16] == 0xFF {
                &b[..16]
            } else {
                &b[..]
            };
            String::from_utf8(b.to_vec()).unwrap()
        })
        .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_on_postgres_never_loses_or_duplicates_an_acknowledged_event() {
    let Some(schema) = Schema::fresh("kill") else {
        return;
    };
    let cycles: usize = std::env::var("BESPOKE_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), &schema, "write");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let port = free_port();
    let base = Arc::new(RwLock::new(format!("http://127.0.0.1:{port}")));
    let mut child = serve(dir.path(), &schema, port);
    let first = base.read().unwrap().clone();
    wait_ready(&client, &first, &mut child.0).await;

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
                // The same batch (same ids) until it is acknowledged: replays are idempotent.
                loop {
                    let url = format!("{}/v1/events", base.read().unwrap());
                    match client.post(url).bearer_auth(&key).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            let answer: Value = r.json().await.unwrap_or(Value::Null);
                            if answer["received"] == size {
                                acked.extend(ids.iter().cloned());
                                break;
                            }
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

    let started = Instant::now();
    let mut restart = Duration::ZERO;
    let mut rng = Lcg(42);
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(30 + rng.below(250))).await;
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        let port = free_port();
        *base.write().unwrap() = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        child = serve(dir.path(), &schema, port);
        let b = base.read().unwrap().clone();
        wait_ready(&client, &b, &mut child.0).await;
        restart = restart.max(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut retries = 0;
    for c in clients {
        let (a, r) = c.await.unwrap();
        acked.extend(a);
        retries += r;
    }
    let elapsed = started.elapsed();
    drop(child);
    assert!(
        acked.len() > cycles,
        "too little traffic to mean anything: {}",
        acked.len()
    );
    assert!(
        retries > 0,
        "no request was ever interrupted: the kills missed"
    );

    let check = json_out(&cli(dir.path(), &schema, &["check", "--json"]));
    assert_eq!(check["ok"], true, "{check}");
    let mut stored = HashSet::new();
    for id in stored_ids(&schema) {
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
        json!({ "store": "postgres", "kill_cycles": cycles, "acknowledged_events": acked.len(),
                "client_retries": retries, "lost": 0, "duplicated": 0, "integrity_check": "ok",
                "seconds": elapsed.as_secs_f64(), "slowest_restart_ms": restart.as_millis() as u64 })
    );
}

/// `GET /v1/models` of the node at `base`.
async fn models(client: &reqwest::Client, base: &str, key: &str) -> Value {
    let r = client
        .get(format!("{base}/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// Polls until `check` holds on the node's `/v1/models`, or panics naming `what` after
/// `within`; how long it took.
async fn until(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let m = models(client, base, key).await;
        if check(&m) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_killed_mid_training_another_node_trains_the_next_version() {
    let Some(schema) = Schema::fresh("leader") else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = create_key(dir_a.path(), &schema, "admin");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // A starts first and takes the leadership at its first scheduler tick; then B.
    let (port_a, port_b) = (free_port(), free_port());
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let mut a = serve(dir_a.path(), &schema, port_a);
    wait_ready(&client, &base_a, &mut a.0).await;
    until(
        &client,
        &base_a,
        &key,
        Duration::from_secs(20),
        "A never led",
        |m| m["cluster"]["leader"] == true,
    )
    .await;
    let mut b = serve(dir_b.path(), &schema, port_b);
    wait_ready(&client, &base_b, &mut b.0).await;
    let m = models(&client, &base_b, &key).await;
    assert_eq!(m["cluster"]["shared_store"], true, "{m}");
    assert_eq!(m["cluster"]["leader"], false, "two leaders: {m}");

    // Enough synthetic events that a training run takes a while: users with tastes over
    // blocks of items, so the models have something to learn.
    let mut rng = Lcg(7);
    let (users, items, per_batch, batches) = (3_000u64, 900u64, 5_000, 6);
    for batch in 0..batches {
        let events: Vec<Value> = (0..per_batch)
            .map(|_| {
                let u = rng.below(users);
                let i = ((u % 30) * (items / 30) + rng.below(items / 30 + 20)) % items;
                json!({ "user": format!("u{u}"), "item": format!("i{i}"), "type": "view" })
            })
            .collect();
        let r = client
            .post(format!("{base_a}/v1/events"))
            .bearer_auth(&key)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "batch {batch}: {}", r.status());
    }

    // A trains in the background (202), and is killed as soon as it is under way.
    let r = client
        .post(format!("{base_a}/v1/models/train"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    until(
        &client,
        &base_a,
        &key,
        Duration::from_secs(20),
        "A never trained",
        |m| m["training"]["running"] == true,
    )
    .await;
    drop(a); // SIGKILL
    let killed = Instant::now();
    let m = models(&client, &base_b, &key).await;
    assert!(
        m["active"].is_null() && m["models"].as_array().unwrap().is_empty(),
        "A finished its run before it was killed: {m}"
    );

    // B takes over the leadership (at its next scheduler tick) ...
    let led_after = until(
        &client,
        &base_b,
        &key,
        Duration::from_secs(20),
        "B never led",
        |m| m["cluster"]["leader"] == true,
    )
    .await;
    // ... and trains: the dead node's training lock went with its connection. B may ask before
    // PostgreSQL noticed the connection is gone, and hear 409 `training_in_progress` then.
    let train_started = Instant::now();
    let outcome = loop {
        let r = client
            .post(format!("{base_b}/v1/models/train?wait=true"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status.is_success() {
            break body;
        }
        assert_eq!(
            body["error"]["code"], "training_in_progress",
            "{status} {body}"
        );
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the dead node's training lock was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let trained_in = train_started.elapsed();
    let version = outcome["version"].as_u64().unwrap();
    assert_eq!(outcome["activated"], true, "{outcome}");
    let m = models(&client, &base_b, &key).await;
    assert_eq!(m["active"].as_u64(), Some(version), "{m}");
    let r = client
        .get(format!("{base_b}/v1/users/u1/recommendations?n=5"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let recs: Value = r.json().await.unwrap();
    assert_eq!(recs["model_version"].as_u64(), Some(version), "{recs}");
    assert_eq!(recs["personalized"], true, "{recs}");
    drop(b);
    eprintln!(
        "{}",
        json!({ "events": per_batch * batches, "leader_after_kill_ms": led_after.as_millis() as u64,
                "next_version": version, "training_ms": trained_in.as_millis() as u64 })
    );
}
