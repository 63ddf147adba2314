//! NATS JetStream ingestion (`src/nats.rs`) against the local NATS server at 127.0.0.1:4222.
//!
//! A binary of its own, built only with the `nats` feature (which the crate's dev-dependency on
//! itself switches on, so plain `cargo test` runs it). Each test uses a stream and subject of its
//! own and deletes the stream at its end; in the streams the tests create themselves, messages
//! expire after an hour, should a failed test leave one behind. Without a reachable server each
//! test that needs one prints `SKIPPED: NATS not reachable at 127.0.0.1:4222` and passes, unless
//! `BESPOKE_REQUIRE_NATS=1`.
#![cfg(feature = "nats")]

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, consumer, stream};
use bespoke_server::{Server, Settings};
use bespoke_store::Event;
use serde_json::{Value, json};

const NATS_URL: &str = "nats://127.0.0.1:4222";
/// Longest wait for the consumer to catch up; polled, not slept.
const DEADLINE: Duration = Duration::from_secs(30);

/// One test's stream and subject on the local NATS server.
struct Nats {
    js: jetstream::Context,
    stream: String,
    subject: String,
}

impl Nats {
    /// Connects, or says why the test is skipped (`None`); panics instead when
    /// `BESPOKE_REQUIRE_NATS=1`.
    async fn connect(test: &str) -> Option<Nats> {
        let connected = tokio::time::timeout(Duration::from_secs(5), async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(NATS_URL)
                .await
                .map_err(|e| e.to_string())?;
            let js = jetstream::new(client);
            // JetStream answers for a stream that does not exist; a server without JetStream
            // does not.
            match js.get_stream("BESPOKE_PROBE").await {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => {}
                Err(e) => return Err(format!("JetStream: {e}")),
            }
            Ok::<_, String>(js)
        })
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        let js = match connected {
            Ok(js) => js,
            Err(why) => {
                assert!(
                    std::env::var("BESPOKE_REQUIRE_NATS").as_deref() != Ok("1"),
                    "NATS not reachable at 127.0.0.1:4222 and BESPOKE_REQUIRE_NATS=1: {why}"
                );
                println!("SKIPPED: NATS not reachable at 127.0.0.1:4222");
                eprintln!("({test}: {why})");
                return None;
            }
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "{test}_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Some(Nats {
            js,
            stream: format!("BT_{unique}"),
            subject: format!("bespoke.test.{unique}"),
        })
    }

    /// Creates the stream as an operator would, before the server starts (the server then
    /// uses it as it is).
    ///
    /// Tried again on failure: nats-server 2.9 removes an account's stream directory when its
    /// last stream is deleted, and a stream created meanwhile (by a test running in parallel)
    /// fails with "error creating store for stream".
    async fn create_stream(&self) {
        let start = Instant::now();
        loop {
            let created = self
                .js
                .create_stream(stream::Config {
                    name: self.stream.clone(),
                    subjects: vec![self.subject.clone()],
                    max_age: Duration::from_secs(3600),
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => return,
                Err(e) => assert!(start.elapsed() < DEADLINE, "creating the stream: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes one message and returns its stream sequence number once the stream holds it.
    async fn publish(&self, payload: impl Into<Vec<u8>>) -> u64 {
        let payload: Vec<u8> = payload.into();
        self.js
            .publish(self.subject.clone(), payload.into())
            .await
            .expect("published")
            .await
            .expect("stored by the stream")
            .sequence
    }

    async fn publish_json(&self, value: Value) -> u64 {
        self.publish(serde_json::to_vec(&value).unwrap()).await
    }

    /// Whether `durable` has acknowledged (or terminated) every message up to `last`, with
    /// nothing left pending or waiting for an acknowledgement.
    async fn drained(&self, durable: &str, last: u64) -> bool {
        let Ok(stream) = self.js.get_stream(&self.stream).await else {
            return false;
        };
        let Ok(mut consumer) = stream.get_consumer::<consumer::pull::Config>(durable).await else {
            return false;
        };
        let Ok(info) = consumer.info().await else {
            return false;
        };
        info.num_pending == 0 && info.num_ack_pending == 0 && info.ack_floor.stream_sequence >= last
    }

    /// Settings for a server over `dir` that consumes this stream.
    fn settings(&self, dir: &Path) -> Settings {
        settings(dir, &self.stream, &self.subject)
    }

    /// Whether no client waits for `durable`'s messages (no pull request is open).
    async fn idle(&self, durable: &str) -> bool {
        let Ok(stream) = self.js.get_stream(&self.stream).await else {
            return false;
        };
        let Ok(mut consumer) = stream.get_consumer::<consumer::pull::Config>(durable).await else {
            return false;
        };
        consumer
            .info()
            .await
            .is_ok_and(|info| info.num_waiting == 0)
    }

    async fn delete(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

/// Settings for a server over `dir` that consumes `stream` on `subject`, with auth off
/// (loopback) so that the test can read `/metrics`, and no background training.
fn settings(dir: &Path, stream: &str, subject: &str) -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".parse().unwrap();
    s.store.data_dir = dir.to_owned();
    s.auth.enabled = false;
    s.training.train_on_start = false;
    s.training.interval_minutes = 0;
    s.training.tune_interval_hours = 0.0;
    s.training.min_new_events = 0;
    s.privacy.audit_secret =
        bespoke_server::settings::Secret("nats tests' audit key, at least 32 bytes".into());
    s.nats.url = NATS_URL.into();
    s.nats.stream = stream.into();
    s.nats.subject = subject.into();
    s
}

async fn start(settings: Settings) -> Server {
    bespoke_server::start(settings)
        .await
        .expect("server starts")
}

/// Every stored event, in sequence order.
async fn stored(server: &Server) -> Vec<Event> {
    let engine = server.engine().clone();
    tokio::task::spawn_blocking(move || engine.store().scan_events(0, 100_000))
        .await
        .unwrap()
        .expect("events read")
}

/// A counter of the server's `/metrics`.
async fn metric(server: &Server, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", server.addr()))
        .await
        .expect("metrics answered")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .parse()
        .unwrap()
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
async fn wait_until<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event_id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_to_nats_are_stored() {
    let Some(nats) = Nats::connect("stored").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The server creates the stream: nothing exists before it starts.
    let server = start(nats.settings(dir.path())).await;
    wait_until("the server created the stream", || async {
        nats.js.get_stream(&nats.stream).await.is_ok()
    })
    .await;
    let one = nats
        .publish_json(json!({"user": "u1", "item": "i1", "type": "view"}))
        .await;
    let two = nats
        .publish_json(json!([
            {"user": "u1", "item": "i2", "type": "click", "timestamp": "2024-05-01T10:00:00Z"},
            {"event_id": "client-1", "user": "u2", "item": "i1", "type": "rating", "value": 4.0},
        ]))
        .await;
    // Terminated, and so deleted from the work queue too.
    let bad = nats.publish("[{\"user\": \"u1\"").await;
    wait_until("3 events are stored", || async {
        stored(&server).await.len() == 3
    })
    .await;
    let events = stored(&server).await;
    let prefix = format!("nats:{}:", nats.stream);
    assert!(
        events[0].event_id.starts_with(&prefix) && events[0].event_id.ends_with(&format!(":{one}")),
        "{}",
        events[0].event_id
    );
    assert!(
        events[1].event_id.starts_with(&prefix)
            && events[1].event_id.ends_with(&format!(":{two}#0")),
        "{}",
        events[1].event_id
    );
    assert_eq!(events[2].event_id, "client-1");
    assert_eq!(
        (events[1].user.as_str(), events[1].item.as_str()),
        ("u1", "i2")
    );
    assert_eq!(events[1].timestamp, 1_714_557_600_000);
    assert_eq!(events[2].value, Some(4.0));
    // Counted like the events of `POST /v1/events`, and applied to serving.
    assert_eq!(metric(&server, "bespoke_events_stored_total").await, 3);
    assert_eq!(server.engine().counts().events, 3);
    wait_until("the consumer acknowledged everything", || {
        nats.drained("bespoke", bad)
    })
    .await;
    // The stream the server created is a work queue: NATS keeps no copy of stored events.
    let mut stream = nats.js.get_stream(&nats.stream).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.retention, stream::RetentionPolicy::WorkQueue);
    assert_eq!(info.state.messages, 0);
    server.shutdown().await.expect("clean shutdown");
    nats.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_again_is_stored_once() {
    let Some(nats) = Nats::connect("replay").await else {
        return;
    };
    nats.create_stream().await;
    // A publisher's retry: the same event with its id, twice.
    let event = json!({"event_id": "e-1", "user": "u1", "item": "i1", "type": "purchase"});
    nats.publish_json(event.clone()).await;
    nats.publish_json(event).await;
    // And an event without an id, whose id is derived from its place in the stream.
    let last = nats
        .publish_json(json!({"user": "u2", "item": "i1", "type": "view"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(nats.settings(dir.path())).await;
    wait_until("the consumer acknowledged everything", || {
        nats.drained("bespoke", last)
    })
    .await;
    let events = stored(&server).await;
    assert_eq!(events.len(), 2, "{:?}", ids(&events));
    assert_eq!(metric(&server, "bespoke_events_stored_total").await, 2);
    assert_eq!(metric(&server, "bespoke_events_duplicate_total").await, 1);
    server.shutdown().await.expect("clean shutdown");

    // Every message delivered again, as after a crash between the commit and the
    // acknowledgements: a new durable consumer reads the stream from its start.
    let mut again = nats.settings(dir.path());
    again.nats.durable = "bespoke-again".into();
    let server = start(again).await;
    wait_until("the new consumer acknowledged everything", || {
        nats.drained("bespoke-again", last)
    })
    .await;
    assert_eq!(ids(&stored(&server).await), ids(&events), "stored again");
    assert_eq!(metric(&server, "bespoke_events_stored_total").await, 0);
    assert_eq!(metric(&server, "bespoke_events_duplicate_total").await, 3);
    server.shutdown().await.expect("clean shutdown");
    nats.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_skipped_and_later_ones_still_arrive() {
    let Some(nats) = Nats::connect("bad").await else {
        return;
    };
    nats.create_stream().await;
    nats.publish_json(json!({"event_id": "good-1", "user": "u1", "item": "i1", "type": "view"}))
        .await;
    nats.publish("not json at all").await;
    nats.publish_json(json!({"user": "u1", "item": "i1", "type": "teleport"}))
        .await;
    nats.publish_json(json!([])).await;
    // One bad event spoils its whole message, as it spoils a `POST /v1/events` batch.
    nats.publish_json(json!([
        {"event_id": "spoilt", "user": "u1", "item": "i9", "type": "view"},
        {"user": "", "item": "i1", "type": "view"},
    ]))
    .await;
    // An id already used for another event: refused by the store, not by the parser.
    nats.publish_json(json!({"event_id": "good-1", "user": "u1", "item": "i2", "type": "view"}))
        .await;
    nats.publish_json(json!({"event_id": "good-2", "user": "u2", "item": "i1", "type": "view"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(nats.settings(dir.path())).await;
    let last = nats
        .publish_json(json!({"event_id": "good-3", "user": "u3", "item": "i1", "type": "view"}))
        .await;
    wait_until("the consumer settled every message", || {
        nats.drained("bespoke", last)
    })
    .await;
    let events = stored(&server).await;
    assert_eq!(ids(&events), ["good-1", "good-2", "good-3"]);
    // The bad ones are terminated, not delivered again and again.
    let mut consumer = nats
        .js
        .get_stream(&nats.stream)
        .await
        .unwrap()
        .get_consumer::<consumer::pull::Config>("bespoke")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    server.shutdown().await.expect("clean shutdown");
    nats.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_durable_consumer() {
    let Some(nats) = Nats::connect("restart").await else {
        return;
    };
    nats.create_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(nats.settings(dir.path())).await;
    let mut last = 0;
    for i in 0..3 {
        last = nats
            .publish_json(json!({"user": "u1", "item": format!("i{i}"), "type": "view"}))
            .await;
    }
    wait_until("the first server acknowledged everything", || {
        nats.drained("bespoke", last)
    })
    .await;
    assert_eq!(stored(&server).await.len(), 3);
    server.shutdown().await.expect("clean shutdown");

    // A message published while the stopped server's pull request is still open would go
    // to it and come again only after the ack wait (`docs/nats.md`); its unsubscription
    // reaches NATS just after the shutdown.
    wait_until("the first server's pull request is gone", || {
        nats.idle("bespoke")
    })
    .await;
    // Published while no server runs: the stream keeps them for the durable consumer.
    for i in 3..5 {
        last = nats
            .publish_json(json!([{"user": "u2", "item": format!("i{i}"), "type": "click"}]))
            .await;
    }
    let server = start(nats.settings(dir.path())).await;
    wait_until("the second server acknowledged everything", || {
        nats.drained("bespoke", last)
    })
    .await;
    let events = stored(&server).await;
    assert_eq!(events.len(), 5, "{:?}", ids(&events));
    let mut unique = ids(&events);
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 5);
    // It resumed after what the first one acknowledged: nothing came twice.
    assert_eq!(metric(&server, "bespoke_events_stored_total").await, 2);
    assert_eq!(metric(&server, "bespoke_events_duplicate_total").await, 0);
    server.shutdown().await.expect("clean shutdown");
    nats.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_while_nats_is_unreachable() {
    // A port nothing listens on: the consumer keeps retrying in the background.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), "BT_unreachable", "bespoke.test.unreachable");
    s.nats.url = format!("nats://127.0.0.1:{port}");
    let server = start(s).await;
    let health = reqwest::get(format!("http://{}/healthz", server.addr()))
        .await
        .expect("answered");
    assert!(health.status().is_success(), "{}", health.status());
    // Events still come in over HTTP.
    let posted = reqwest::Client::new()
        .post(format!("http://{}/v1/events", server.addr()))
        .json(&json!({"events": [{"user": "u1", "item": "i1", "type": "view"}]}))
        .send()
        .await
        .expect("answered");
    assert!(posted.status().is_success(), "{}", posted.status());
    assert_eq!(stored(&server).await.len(), 1);
    server.shutdown().await.expect("clean shutdown");
}
