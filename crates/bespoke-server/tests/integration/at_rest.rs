//! Issue 23 (trust III), what the data directory holds at rest: no trace of an erased user in
//! any file (finding 2), the audit key outside the database (3), erasures with `retrain=true`
//! sharing one training (6), owner-only files (9).

use std::path::{Path, PathBuf};

use bespoke_server::Settings;
use bespoke_server::auth::Scope;
use bespoke_store::{AccessStore, SqliteStore, StoreOptions};
use hmac::Mac;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, client_with_key, start_with};

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

/// The files under `dir` whose raw bytes contain one of `needles`, with the needle.
fn traces(dir: &Path, needles: &[&[u8]]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == *needle) {
                found.push((file.clone(), String::from_utf8_lossy(needle).into_owned()));
            }
        }
    }
    found
}

const ERIN: &str = "erin-ERASE-5555";
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

/// Finding 2: after an erasure (with and without retraining), no file of the data directory
/// (database, WAL, shared memory, every model file) holds the user's key or attributes, nor
/// after shutdown.
#[tokio::test]
async fn issue_23_an_erased_user_leaves_no_bytes_in_any_file() {
    for retrain in [false, true] {
        let srv = start_with(settings).await;
        let data = srv.dir.path().join("data");
        load(&srv, ERIN).await;
        train(&srv).await;
        let needles: [&[u8]; 2] = [ERIN.as_bytes(), NICK.as_bytes()];
        // The scan finds them while they are held.
        let before = traces(&data, &needles);
        assert!(
            before.iter().any(|(_, n)| n == ERIN) && before.iter().any(|(_, n)| n == NICK),
            "{before:?}"
        );
        let (status, receipt) = srv
            .delete(&format!("/v1/users/{ERIN}?retrain={retrain}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{receipt}");
        let expected = if retrain {
            "complete"
        } else {
            "awaiting_retrain"
        };
        assert_eq!(receipt["status"], expected, "{receipt}");
        assert_eq!(
            traces(&data, &needles),
            vec![],
            "retrain={retrain}: files: {:?}",
            files_under(&data)
        );
        // The others are still there, and so is the store's content.
        assert!(!traces(&data, &[b"u07"]).is_empty());
        let dir = srv.stop().await;
        let data = dir.path().join("data");
        assert_eq!(
            traces(&data, &needles),
            vec![],
            "retrain={retrain}, after shutdown"
        );
    }
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

/// The reference the audit log gives `key` under the HMAC key `secret`.
fn user_ref(secret: &[u8], key: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(key.as_bytes());
    let tag = mac.finalize().into_bytes();
    let hex: String = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("user:{hex}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn erase(srv: &TestServer, key: &str) -> Value {
    let (status, body) = srv
        .put(&format!("/v1/users/{key}"), json!({ "attributes": {} }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, receipt) = srv.delete(&format!("/v1/users/{key}")).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    receipt
}

/// Starts a server on `dir` whose audit key comes from `key_file` only.
async fn start_with_key_file(dir: tempfile::TempDir, key_file: PathBuf) -> TestServer {
    crate::common::start_in(dir, move |s| {
        settings(s);
        s.privacy.audit_secret = Default::default();
        s.privacy.audit_secret_file = key_file;
    })
    .await
}

/// Finding 3: the audit key is never in the database. A store that kept it there (before this
/// change) has it moved to the key file once, so that earlier references stay valid, and
/// deleted from the database's bytes; a fresh store gets a key file beside (not inside) the
/// data directory; `privacy.audit_secret` is used as configured.
#[tokio::test]
async fn issue_23_the_audit_key_is_kept_out_of_the_database() {
    // An existing store with its key in the database, as earlier versions made it.
    let old_key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    let keys_dir = tempfile::tempdir().unwrap();
    let key_file = keys_dir.path().join("audit.key");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = SqliteStore::open(&data, StoreOptions::default()).unwrap();
        assert_eq!(store.secret("audit_user_ref", old_key).unwrap(), old_key);
        store.close();
    }
    assert!(
        !traces(&data, &[&old_key]).is_empty(),
        "the old key is on disk"
    );
    let srv = start_with_key_file(dir, key_file.clone()).await;
    let receipt = erase(&srv, "alice").await;
    assert_eq!(
        receipt["user_ref"],
        user_ref(&old_key, "alice"),
        "{receipt}"
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        hex(&old_key)
    );
    #[cfg(unix)]
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(traces(&data, &[&old_key]), vec![]);
    let dir = srv.stop().await;
    assert_eq!(traces(&data, &[&old_key]), vec![], "after shutdown");
    {
        let store = SqliteStore::open(&data, StoreOptions::default()).unwrap();
        assert_eq!(store.stored_secret("audit_user_ref").unwrap(), None);
        store.close();
    }
    // A restart reads the same key back.
    let srv = start_with_key_file(dir, key_file.clone()).await;
    assert_eq!(
        erase(&srv, "bob").await["user_ref"],
        user_ref(&old_key, "bob")
    );
    srv.stop().await;

    // A fresh store with nothing configured: a random key in `<data_dir>.audit-key`.
    let srv = start_with(|s| {
        settings(s);
        s.privacy.audit_secret = Default::default();
    })
    .await;
    let beside = srv.dir.path().join("data.audit-key");
    let text = std::fs::read_to_string(&beside).expect("key file beside the data directory");
    let key: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&text.trim()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(
        erase(&srv, "carol").await["user_ref"],
        user_ref(&key, "carol")
    );
    let data = srv.dir.path().join("data");
    assert_eq!(traces(&data, &[&key]), vec![]);
    srv.stop().await;

    // A configured secret is the key, and no file is made.
    let secret = "a configured audit secret of 32+ bytes, from the environment";
    let srv = start_with(|s| {
        settings(s);
        s.privacy.audit_secret = bespoke_server::settings::Secret(secret.into());
    })
    .await;
    assert_eq!(
        erase(&srv, "dave").await["user_ref"],
        user_ref(secret.as_bytes(), "dave")
    );
    assert!(!srv.dir.path().join("data.audit-key").exists());
    srv.stop().await;
}

/// Finding 6: erasures with `retrain=true` sent with a `write` key while a training run is in
/// progress coalesce: together they cause one more run, not one each, and every receipt is
/// complete once it answers (no model trained with any of them is served or stored).
#[tokio::test]
async fn issue_23_erasures_with_retrain_share_one_training() {
    let srv = start_with(settings).await;
    let victims = ["v-one", "v-two", "v-three", "v-four"];
    for v in victims {
        load(&srv, v).await;
    }
    train(&srv).await;
    let engine = srv.engine();
    let (write_key, _) = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            engine
                .access()
                .create_key("test", "backend", &[Scope::Write], None)
        })
        .await
        .unwrap()
        .unwrap()
    };
    let trainings = |audit: &Value| {
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "model.train")
            .count()
    };
    let (_, audit) = srv.get("/v1/audit?limit=1000").await;
    let trained_before = trainings(&audit);

    // A run in progress that read its snapshot before the erasures: it holds all of them until
    // the test lets it go on.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let running = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut first = true;
            engine.train(move |_| {
                if std::mem::take(&mut first) {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                }
            })
        })
    };
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();

    let writer = client_with_key(&write_key);
    let erasures: Vec<_> = victims
        .iter()
        .map(|v| {
            let req = writer
                .delete(format!("{}/v1/users/{v}?retrain=true", srv.base))
                .send();
            tokio::spawn(async move {
                let resp = req.await.unwrap();
                (resp.status(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    // Every user is deleted (the erasures are now waiting for a training) before the run in
    // progress may end.
    loop {
        let (_, audit) = srv.get("/v1/audit?limit=1000").await;
        let erased = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "user.erase")
            .count();
        if erased == victims.len() {
            break;
        }
        tokio::task::yield_now().await;
    }
    go_tx.send(()).unwrap();
    running.await.unwrap().expect("the run in progress trains");

    let mut versions = Vec::new();
    for e in erasures {
        let (status, receipt) = e.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{receipt}");
        assert_eq!(receipt["status"], "complete", "{receipt}");
        versions.push(receipt["first_model_without_user"]["version"].clone());
    }
    // One model without any of them completed every receipt.
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");
    let (_, audit) = srv.get("/v1/audit?limit=1000").await;
    assert_eq!(
        trainings(&audit) - trained_before,
        2,
        "the run in progress and one run for all the erasures: {audit}"
    );
    // No stored version names any of them.
    let data = srv.dir.path().join("data");
    let needles: Vec<&[u8]> = victims.iter().map(|v| v.as_bytes()).collect();
    assert_eq!(traces(&data, &needles), vec![]);
    srv.stop().await;
}
