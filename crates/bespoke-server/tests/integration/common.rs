use bespoke_server::auth::Scope;
use bespoke_server::{Server, Settings};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// A server on 127.0.0.1:<random port> over a temporary data directory, with an admin key that
/// `client` sends on every request.
pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) client: Client,
    pub(crate) admin_key: String,
    server: Option<Server>,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn start() -> TestServer {
    start_with(|_| {}).await
}

pub(crate) async fn start_with(configure: impl FnOnce(&mut Settings)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    start_in(dir, configure).await
}

pub(crate) async fn start_in(
    dir: tempfile::TempDir,
    configure: impl FnOnce(&mut Settings),
) -> TestServer {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.store.data_dir = dir.path().to_owned();
    // No background training unless a test asks for it: results must not change under it.
    settings.training.train_on_start = false;
    settings.training.interval_minutes = 0;
    settings.training.tune_interval_hours = 0.0;
    settings.training.min_new_events = 0;
    // A configured audit key: by default the server would create a key file beside the data
    // directory, outside the temporary directory that the test removes.
    settings.privacy.audit_secret =
        bespoke_server::settings::Secret("integration tests' audit key, 32+ bytes".into());
    configure(&mut settings);
    let server = bespoke_server::start(settings)
        .await
        .expect("server starts");
    let engine = server.engine().clone();
    let (admin_key, _) = tokio::task::spawn_blocking(move || {
        engine
            .access()
            .create_key("test", "test admin", &[Scope::Admin], None)
    })
    .await
    .unwrap()
    .expect("admin key");
    TestServer {
        base: format!("http://{}", server.addr()),
        client: client_with_key(&admin_key),
        admin_key,
        server: Some(server),
        dir,
    }
}

/// A client that sends `key` as a bearer token on every request.
pub(crate) fn client_with_key(key: &str) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    Client::builder().default_headers(headers).build().unwrap()
}

impl TestServer {
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, None).await
    }

    /// Sends raw bytes with a given content type.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts events given as (user, item, type) triples and asserts success.
    pub(crate) async fn events(&self, triples: &[(&str, &str, &str)]) {
        let events: Vec<Value> = triples
            .iter()
            .map(|(u, i, t)| json!({ "user": u, "item": i, "type": t }))
            .collect();
        let (status, body) = self.post("/v1/events", json!({ "events": events })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Users, items and events known to serving, read from `/metrics`.
    pub(crate) async fn counts(&self) -> Value {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let text = text.as_str().expect("metrics text");
        let gauge = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from /metrics"))
                .parse()
                .unwrap()
        };
        json!({
            "users": gauge("bespoke_users"),
            "items": gauge("bespoke_items"),
            "events": gauge("bespoke_events"),
        })
    }

    /// The engine behind the server (for time-dependent checks that must not sleep).
    pub(crate) fn engine(&self) -> std::sync::Arc<bespoke_server::Engine> {
        self.server.as_ref().expect("running").engine().clone()
    }

    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        self.server
            .take()
            .expect("running")
            .shutdown()
            .await
            .expect("clean shutdown");
        self.dir
    }
}

/// Asserts an error answer: status, stable code and (if given) the field it names.
pub(crate) fn assert_error(
    got: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
    if let Some(f) = field {
        assert_eq!(body["error"]["field"], f, "{body}");
    }
}

/// Two tastes: 60 users `u0`..`u59`, the even ones viewing a-items `a0`..`a9`, the odd ones
/// b-items, each skipping a third of them.
pub(crate) fn two_tastes() -> Vec<Value> {
    let mut events = Vec::new();
    for u in 0..60 {
        let group = if u % 2 == 0 { "a" } else { "b" };
        for i in 0..10 {
            if (u + i) % 3 != 0 {
                events.push(
                    serde_json::json!({"user": format!("u{u}"), "item": format!("{group}{i}"), "type": "view"}),
                );
            }
        }
    }
    events
}

/// Item keys of a list of results.
pub(crate) fn keys(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items array")
        .iter()
        .map(|r| r["item"].as_str().expect("item key").to_owned())
        .collect()
}

/// The Python of `target/test-venv`, which `.ci/setup` makes from the pinned
/// `.ci/requirements-test.txt` (tests install nothing themselves), checked to import
/// `imports` (e.g. `"httpx"`); fails naming `.ci/setup` and `what` when it cannot.
pub(crate) fn test_python(imports: &str, what: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join("target/test-venv/bin/python");
    match std::process::Command::new(&python)
        .args(["-c", &format!("import {imports}")])
        .output()
    {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "{} lacks {what} ({}): run `bash .ci/setup` first",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "no test Python at {} ({e}): run `bash .ci/setup` first (it installs .ci/requirements-test.txt)",
            python.display()
        ),
    }
}
