//! Issue 23 (trust III), what the data directory holds at rest: owner-only files (finding 9).

use std::path::{Path, PathBuf};

use bespoke_server::Settings;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, start_with};

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir(&p).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

const NICK: &str = "erin-NICK-5555";

/// Settings of these tests: a data directory that does not exist yet (so the server creates
/// it), small fixed training.
fn settings(s: &mut Settings) {
    s.store.data_dir = s.store.data_dir.join("data");
    s.training.threads = 2;
    s.training.iterations = 4;
    s.training.factors = 8;
}

/// 30 users with seeded events on 20 items, and `user` with a profile, an updated profile and
/// events of their own.
async fn load(srv: &TestServer, user: &str) {
    let mut events = Vec::new();
    let mut x: u64 = 23;
    for u in 0..30u64 {
        for _ in 0..8 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            events.push(
                json!({ "user": format!("u{u:02}"), "item": format!("i{:02}", (x >> 33) % 20),
                                "type": "purchase" }),
            );
        }
    }
    for i in 0..6 {
        events.push(json!({ "user": user, "item": format!("i{i:02}"), "type": "purchase" }));
    }
    let (status, body) = srv.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for attributes in [json!({ "plan": "x" }), json!({ "plan": "x", "nick": NICK })] {
        let (status, body) = srv
            .put(
                &format!("/v1/users/{user}"),
                json!({ "attributes": attributes }),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
}

async fn train(srv: &TestServer) -> Value {
    let (status, body) = srv
        .request(Method::POST, "/v1/models/train?wait=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Finding 9: the data directory and every directory the server creates in it are 0700, every
/// file 0600 (database, WAL, shared memory, model files, `ACTIVE`), whatever the umask.
#[cfg(unix)]
#[tokio::test]
async fn issue_23_files_at_rest_are_owner_only() {
    let srv = start_with(settings).await;
    load(&srv, "someone").await;
    train(&srv).await;
    let data = srv.dir.path().join("data");
    let mut dirs = vec![data.clone()];
    let mut stack = vec![data.clone()];
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir(&p).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path.clone());
                stack.push(path);
            }
        }
    }
    let files = files_under(&data);
    for suffix in [
        "bespoke.db",
        "bespoke.db-wal",
        "bespoke.db-shm",
        "models/ACTIVE",
    ] {
        assert!(files.contains(&data.join(suffix)), "{suffix} in {files:?}");
    }
    assert!(dirs.len() >= 3, "data, models and a version: {dirs:?}");
    let wide: Vec<(PathBuf, String)> = dirs
        .iter()
        .filter(|d| mode(d) != 0o700)
        .chain(files.iter().filter(|f| mode(f) != 0o600))
        .map(|p| (p.clone(), format!("{:o}", mode(p))))
        .collect();
    assert_eq!(wide, vec![], "paths that are not owner-only");
    srv.stop().await;
}
