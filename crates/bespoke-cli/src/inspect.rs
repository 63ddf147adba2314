//! `bespoke stats` and `bespoke recommend`: look at the store without starting a server.

use std::sync::Arc;

use anyhow::Context;
use bespoke_server::engine::RecommendQuery;
use bespoke_server::time::format_rfc3339;
use bespoke_server::{Engine, Settings};
use clap::Args;

pub(crate) fn stats(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = bespoke_server::open_store(settings)
        .with_context(|| format!("opening the store in {}", settings.store.data_dir.display()))?;
    let stats = store.stats()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    println!("data directory  {}", settings.store.data_dir.display());
    println!("users           {}", stats.users);
    println!("items           {}", stats.items);
    println!("events          {}", stats.events);
    for (kind, n) in &stats.events_by_kind {
        println!("  {kind:<14}{n}");
    }
    if let Some((first, last)) = stats.time_range {
        println!("first event     {}", format_rfc3339(first));
        println!("last event      {}", format_rfc3339(last));
    }
    println!(
        "size on disk    {:.1} MiB",
        stats.bytes_on_disk as f64 / (1024.0 * 1024.0)
    );
    println!("schema version  {}", stats.schema_version);
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct RecommendArgs {
    /// User key.
    user: String,
    /// Number of results.
    #[arg(short, default_value_t = 10)]
    n: usize,
    /// Only items in these categories (comma-separated).
    #[arg(long, value_delimiter = ',')]
    category: Vec<String>,
    /// Item keys never to return (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Also return items the user already interacted with.
    #[arg(long)]
    include_seen: bool,
    /// Print JSON (the API's shape) instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn recommend(settings: &Settings, args: &RecommendArgs) -> anyhow::Result<()> {
    if args.n == 0 || args.n > settings.limits.max_n {
        anyhow::bail!(
            "-n must be from 1 to {} (limits.max_n)",
            settings.limits.max_n
        );
    }
    let store = bespoke_server::open_store(settings)
        .with_context(|| format!("opening the store in {}", settings.store.data_dir.display()))?;
    let engine = Engine::open(store, Arc::new(settings.clone()))?;
    let q = RecommendQuery {
        n: args.n,
        categories: args.category.clone(),
        exclude: args.exclude.clone(),
        include_seen: args.include_seen,
    };
    let recs = engine.recommend(&args.user, &q);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "user": args.user, "personalized": recs.personalized, "items": recs.items
            }))?
        );
        return Ok(());
    }
    for (rank, r) in recs.items.iter().enumerate() {
        let why: Vec<&str> = r.reasons.iter().map(|x| x.message.as_str()).collect();
        println!(
            "{:>3}. {:<24} {:>10.3}  {}",
            rank + 1,
            r.item,
            r.score,
            why.join("; ")
        );
    }
    if recs.items.is_empty() {
        println!("no recommendations (is the store empty?)");
    }
    Ok(())
}
