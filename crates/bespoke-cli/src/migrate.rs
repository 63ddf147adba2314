//! `bespoke migrate --from <data dir> --to postgres://...`: copies an SQLite store into an empty
//! PostgreSQL schema and verifies the copy ([`bespoke_store::migrate`], `docs/postgres.md`).

use std::path::PathBuf;

use anyhow::Context;
use bespoke_store::PgOptions;
use bespoke_store::migrate::{Report, sqlite_to_postgres};

#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The SQLite data directory to copy (the one holding bespoke.db). Stop the server that
    /// uses it first: a write during the copy fails the migration.
    #[arg(long)]
    from: PathBuf,
    /// The PostgreSQL database to copy into: a postgres:// URL or a libpq key=value string.
    #[arg(long)]
    to: String,
    /// The schema to copy into, created if missing; it must hold no data (default: the
    /// connection's search_path, usually public).
    #[arg(long)]
    schema: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    let mut target = PgOptions::new(args.to.clone());
    target.schema = args.schema.clone();
    let report = sqlite_to_postgres(&args.from, target).with_context(|| {
        format!(
            "migrating {} to PostgreSQL (nothing was committed)",
            args.from.display()
        )
    })?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["events_per_second"] = serde_json::json!(report.events_per_second().round());
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", table(&report));
    }
    if !report.committed {
        let bad: Vec<&str> = report.mismatches().map(|t| t.table.as_str()).collect();
        anyhow::bail!(
            "the copy differs from the source in {}: rolled back, the target holds nothing",
            bad.join(", ")
        );
    }
    if !args.json {
        eprintln!(
            "committed: {} rows in {:.1} s ({:.0} events/s)",
            report.rows,
            report.elapsed_ms as f64 / 1000.0,
            report.events_per_second()
        );
        eprintln!(
            "next: run the server with store.url = {:?}{}",
            args.to,
            args.schema
                .as_ref()
                .map_or_else(String::new, |s| format!(" and store.schema = {s:?}"))
        );
        if let Some(key) = audit_key_file(&args.from) {
            eprintln!(
                "the audit key file {} is not in the database: keep store.data_dir = {} (or set \
                 privacy.audit_secret_file to it) so audit references and receipts still match",
                key.display(),
                args.from.display()
            );
        }
    }
    Ok(())
}

/// The default audit key file beside `data_dir`, if there is one.
fn audit_key_file(data_dir: &std::path::Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(data_dir).ok()?;
    let mut name = dir.file_name()?.to_owned();
    name.push(".audit-key");
    let path = dir.with_file_name(name);
    path.exists().then_some(path)
}

/// The report as a text table: table, source, rows on each side, checksum prefix, ok.
fn table(report: &Report) -> String {
    let mut out = format!(
        "{:<22} {:<18} {:>12} {:>12}  {:<16}  {}\n",
        "table", "source", "source rows", "target rows", "sha-256", "ok"
    );
    for t in &report.tables {
        let checksum = if t.ok {
            t.source_checksum[..16].to_owned()
        } else {
            format!(
                "{} != {}",
                &t.source_checksum[..16],
                &t.target_checksum[..16]
            )
        };
        out.push_str(&format!(
            "{:<22} {:<18} {:>12} {:>12}  {:<16}  {}\n",
            t.table,
            t.source,
            t.source_rows,
            t.target_rows,
            checksum,
            if t.ok { "ok" } else { "MISMATCH" }
        ));
    }
    out
}
