//! `bespoke keys create|list|revoke`: API keys, written to the store directly (a running
//! server picks the change up within a second).

use anyhow::Context;
use bespoke_server::Settings;
use bespoke_server::auth::{new_key, parse_scopes};
use bespoke_store::NewAudit;
use clap::{Args, Subcommand};
use serde_json::json;

/// `bespoke keys`.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (it is shown this once; only its SHA-256 is stored).
    Create {
        /// A name for people ("shop backend", "web front-end").
        #[arg(long)]
        name: String,
        /// Scopes: read (serving), write (events, users, items), admin (everything).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Requests per second for this key (default auth.rate_per_second; 0 = unlimited).
        #[arg(long)]
        rate: Option<f64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys: prefixes, names, scopes, creation and revocation times (never the keys).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its prefix (bsk_xxxxxxxx).
    Revoke {
        /// The key's prefix (or the whole key).
        prefix: String,
    },
}

pub(crate) fn run(settings: &Settings, args: &KeysArgs) -> anyhow::Result<()> {
    let store = bespoke_server::open_store(settings)
        .with_context(|| format!("opening the store in {}", settings.store.data_dir.display()))?;
    match &args.command {
        KeysCommand::Create {
            name,
            scopes,
            rate,
            json,
        } => {
            let scopes = parse_scopes(scopes).map_err(|m| anyhow::anyhow!("--scopes: {m}"))?;
            if name.trim().is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            if rate.is_some_and(|r| !(r.is_finite() && r >= 0.0)) {
                anyhow::bail!("--rate must be 0 (unlimited) or positive");
            }
            let (key, record) = new_key(name, &scopes, *rate).context("reading randomness")?;
            let record = store.insert_key(record)?;
            store.audit(NewAudit {
                actor: "cli".into(),
                action: "key.create".into(),
                target: Some(record.prefix.clone()),
                detail: Some(json!({ "scopes": record.scopes, "name": record.name })),
            })?;
            if *json {
                println!(
                    "{}",
                    json!({ "key": key, "prefix": record.prefix, "name": record.name, "scopes": record.scopes })
                );
            } else {
                eprintln!(
                    "created {} ({}) with scopes {}; the key is shown this once:",
                    record.prefix,
                    record.name,
                    record.scopes.join(",")
                );
                println!("{key}");
            }
        }
        KeysCommand::List { json } => {
            let keys = store.keys()?;
            if *json {
                for k in &keys {
                    println!(
                        "{}",
                        json!({ "prefix": k.prefix, "name": k.name, "scopes": k.scopes,
                                "rate_per_second": k.rate_per_second,
                                "created_at": bespoke_server::time::format_rfc3339(k.created_at),
                                "revoked_at": k.revoked_at.map(bespoke_server::time::format_rfc3339) })
                    );
                }
            } else {
                println!(
                    "{:<14} {:<18} {:<24} {:<22} name",
                    "prefix", "scopes", "created", "revoked"
                );
                for k in &keys {
                    println!(
                        "{:<14} {:<18} {:<24} {:<22} {}",
                        k.prefix,
                        k.scopes.join(","),
                        bespoke_server::time::format_rfc3339(k.created_at),
                        k.revoked_at
                            .map_or("-".into(), bespoke_server::time::format_rfc3339),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { prefix } => {
            // Accept the whole key too; only its prefix is looked at.
            let prefix: String = prefix.chars().take(12).collect();
            let record = store
                .revoke_key(&prefix)?
                .with_context(|| format!("no API key with prefix {prefix}"))?;
            store.audit(NewAudit {
                actor: "cli".into(),
                action: "key.revoke".into(),
                target: Some(prefix.clone()),
                detail: None,
            })?;
            eprintln!("revoked {} ({})", record.prefix, record.name);
        }
    }
    Ok(())
}
