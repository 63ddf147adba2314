//! The Python client (`clients/python`, issue 19) against the real server: its own unittest
//! suite, sync and async, including the check of every operation it calls against the live
//! `/openapi.json`. The package runs from its source tree (`PYTHONPATH`), with `httpx` from
//! `target/test-venv` (pinned in `.ci/requirements-test.txt`, installed by `.ci/setup`).

use std::path::Path;

use crate::common::start;

#[tokio::test]
async fn python_client() {
    let srv = start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let client = root.join("clients/python");
    let (base, key) = (srv.base.clone(), srv.admin_key.clone());
    let out = tokio::task::spawn_blocking(move || {
        let python = crate::common::test_python("httpx", "httpx");
        std::process::Command::new(python)
            .args([
                "-m", "unittest", "discover", "-v", "-s", "tests", "-t", "tests",
            ])
            .current_dir(&client)
            .env("PYTHONPATH", client.join("src"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("BESPOKE_URL", base)
            .env("BESPOKE_KEY", key)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    // unittest reports on stderr.
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client's tests failed:\n{}\n{report}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A suite that found nothing to run, or skipped, proves nothing.
    assert!(report.contains("\nOK"), "{report}");
    assert!(!report.contains("skipped"), "{report}");
    let ran: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .expect("unittest's summary");
    assert!(ran >= 19, "only {ran} Python tests ran:\n{report}");
}
