//! `bespoke migrate`: the demo shop moved from its SQLite data directory into a PostgreSQL
//! schema, verified table by table; the copy then serves the same recommendations, and a
//! second migration into the non-empty schema is refused. Skipped with a printed notice when
//! PostgreSQL is not reachable, unless `BESPOKE_REQUIRE_POSTGRES=1`.

use std::process::Command;

use crate::{bespoke, json, ok};

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn reachable() -> bool {
    if postgres::Client::connect(URL, postgres::NoTls).is_ok() {
        return true;
    }
    assert!(
        std::env::var("BESPOKE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "PostgreSQL not reachable at {URL} (BESPOKE_REQUIRE_POSTGRES=1)"
    );
    eprintln!("SKIPPED: PostgreSQL not reachable at {URL}");
    false
}

#[test]
fn the_demo_moves_to_postgres_and_serves_the_same() {
    if !reachable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shop");
    ok(&bespoke(
        &data,
        &[
            "demo",
            "--no-serve",
            "--users",
            "80",
            "--items",
            "40",
            "--events",
            "1500",
            "--anchor",
            "2026-01-01T00:00:00Z",
        ],
    ));
    let schema = format!("cli_migrate_{}", std::process::id());
    let from = data.to_str().unwrap();
    let migrate = || {
        bespoke(
            &data,
            &[
                "migrate", "--from", from, "--to", URL, "--schema", &schema, "--json",
            ],
        )
    };
    let report = json(&migrate());
    assert_eq!(report["committed"], true, "{report}");
    let tables = report["tables"].as_array().unwrap();
    assert!(tables.iter().all(|t| t["ok"] == true), "{report}");
    let events = tables.iter().find(|t| t["table"] == "events").unwrap();
    assert!(events["source_rows"].as_u64().unwrap() > 1_000, "{report}");

    // The same recommendation, with the same model, from either store.
    let recommend = |on_postgres: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bespoke"));
        cmd.env(
            "BESPOKE__PRIVACY__AUDIT_SECRET",
            "CLI tests' audit key, 32 bytes or more",
        )
        .env("BESPOKE__LOG__LEVEL", "warn")
        .env_remove("BESPOKE_CONFIG")
        .arg("--data-dir")
        .arg(&data);
        if on_postgres {
            cmd.env("BESPOKE__STORE__URL", URL)
                .env("BESPOKE__STORE__SCHEMA", &schema);
        }
        json(
            &cmd.args(["recommend", "user-00001", "--json"])
                .output()
                .unwrap(),
        )
    };
    let (sqlite, postgres) = (recommend(false), recommend(true));
    assert!(
        sqlite["items"].as_array().is_some_and(|a| !a.is_empty()),
        "{sqlite}"
    );
    assert_eq!(sqlite["items"], postgres["items"], "{sqlite}\n{postgres}");

    // Into a schema that holds data: refused, naming a table, nothing changed.
    let again = migrate();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("holds rows"), "{stderr}");

    let mut c = postgres::Client::connect(URL, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}
