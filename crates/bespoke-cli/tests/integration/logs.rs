//! JSON logs (`log.format = "json"`): `bespoke serve` writes one JSON object per line on stderr,
//! and the lines a request causes carry its `X-Request-Id`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::crash::free_port;

#[test]
fn json_logs_name_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_bespoke"))
        .env(
            "BESPOKE__PRIVACY__AUDIT_SECRET",
            "CLI tests' audit key, 32 bytes or more",
        )
        .env("BESPOKE__LOG__FORMAT", "json")
        .env("BESPOKE__LOG__LEVEL", "info,serve::http=debug")
        .env("BESPOKE__TRAINING__TRAIN_ON_START", "false")
        .env_remove("BESPOKE_CONFIG")
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            c.write_all(
                b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: logs-test-1\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            break answer;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: logs-test-1"),
        "{answer}"
    );
    // SIGTERM: a clean shutdown flushes the log.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let mut found = false;
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        found |= v["target"] == "serve::http" && v["fields"]["request_id"] == "logs-test-1";
    }
    assert!(found, "no request line naming logs-test-1 in:\n{stderr}");
}
