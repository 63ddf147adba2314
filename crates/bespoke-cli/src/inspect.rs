//! `bespoke stats` and `bespoke recommend`: look at the store without starting a server.

use std::sync::Arc;

use anyhow::Context;
use bespoke_server::engine::RecommendQuery;
use bespoke_server::rules::spec::{BoostSpec, PromoteSpec};
use bespoke_server::settings::ModelChoice;
use bespoke_server::time::format_rfc3339;
use bespoke_server::{Engine, Settings};
use clap::Args;
use serde_json::Value;

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
    /// Model: auto, als, knn, ease, bpr or popular (default: serving.default_model).
    #[arg(long, value_parser = ModelChoice::NAMES)]
    model: Option<String>,
    /// Keep only items this rule expression matches (docs/rules.md), such as
    /// 'stock > 0 and price < 50'.
    #[arg(long)]
    filter: Option<String>,
    /// Boost matching items: FACTOR:EXPRESSION multiplies their scores, such as
    /// '1.5:tags contains "organic"'. Repeatable.
    #[arg(long)]
    boost: Vec<String>,
    /// Reserve a position: SLOT:EXPRESSION, such as '3:campaign = "winter"'. Repeatable.
    #[arg(long)]
    promote: Vec<String>,
    /// At most this many results per category.
    #[arg(long)]
    max_per_category: Option<usize>,
    /// Print JSON (the API's shape) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Splits `PREFIX:EXPRESSION` at its first colon.
fn prefixed<'a>(flag: &str, raw: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    raw.split_once(':')
        .map(|(a, b)| (a.trim(), b.trim()))
        .ok_or_else(|| anyhow::anyhow!("--{flag} {raw:?}: expected {what}:EXPRESSION"))
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
        model: args.model.as_deref().and_then(ModelChoice::from_name),
        filter: args.filter.clone(),
        max_per_category: args.max_per_category,
        ..RecommendQuery::default()
    };
    let mut q = q;
    for raw in &args.boost {
        let (by, when) = prefixed("boost", raw, "FACTOR")?;
        let by: f64 = by
            .parse()
            .map_err(|_| anyhow::anyhow!("--boost {raw:?}: {by:?} is not a number"))?;
        q.boost.push(BoostSpec {
            when: when.to_owned(),
            by: Some(by),
            add: None,
        });
    }
    for raw in &args.promote {
        let (slot, when) = prefixed("promote", raw, "SLOT")?;
        let slot: usize = slot
            .parse()
            .map_err(|_| anyhow::anyhow!("--promote {raw:?}: {slot:?} is not a position"))?;
        q.promote.push(PromoteSpec {
            slot,
            when: when.to_owned(),
        });
    }
    if let Err(p) = engine.check_rules(&q) {
        let flag = p
            .field
            .split(['[', '.'])
            .next()
            .unwrap_or("filter")
            .replace('_', "-");
        anyhow::bail!("--{flag}: {}", p.message);
    }
    let recs = engine.recommend(&args.user, &q);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "user": args.user, "personalized": recs.personalized, "model": recs.model,
                "model_version": recs.model_version, "items": recs.items,
                "rules": recs.rules
            }))?
        );
        return Ok(());
    }
    match recs.model_version {
        Some(v) => println!("model: {} (version {v})", recs.model),
        None => println!("model: {}", recs.model),
    }
    for (rank, r) in recs.items.iter().enumerate() {
        let why: Vec<&str> = r.reasons.iter().map(|x| x.message()).collect();
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

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Train without making the new version the served one.
    #[arg(long)]
    no_activate: bool,
    /// Skip the held-out evaluation (faster; no offline metrics in the model's metadata).
    #[arg(long)]
    no_evaluate: bool,
    /// Tune model types and hyperparameters first (as `POST /v1/models/tune`); the new version
    /// records the result and later trainings reuse it.
    #[arg(long)]
    tune: bool,
    /// Configurations to try with --tune (default: training.tune_budget).
    #[arg(long, requires = "tune")]
    budget: Option<usize>,
    /// Print the new model's metadata as JSON.
    #[arg(long)]
    json: bool,
}

/// What a trained version serves by default (`model=auto`), with each model's
/// hyperparameters and why they are these: a tuning result, or the configured `[training]`
/// settings when none exists.
fn served_summary(meta: &Value) -> String {
    let models: Vec<&str> = match &meta["serve"] {
        Value::String(m) => vec![m.as_str()],
        Value::Object(o) => match (o.get("single"), o.get("blend")) {
            (Some(Value::String(m)), _) => vec![m.as_str()],
            (_, Some(b)) => b["models"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    // Hyperparameters are f32 in training: print them as such (0.05, not 0.0500000007).
    let show = |v: &Value| match v {
        Value::Number(n) if n.is_f64() => format!("{}", n.as_f64().unwrap_or(0.0) as f32),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let what = match (&meta["serve"]["blend"], models.as_slice()) {
        (Value::Object(b), [a, c]) => format!(
            "a blend of {a} and {c} (weight {} on {a})",
            b.get("weight").and_then(Value::as_f64).unwrap_or(0.0) as f32
        ),
        (_, [m]) => (*m).to_owned(),
        _ => meta["serve"].to_string(),
    };
    let mut out = format!("serving {what} by default (model=auto)\n");
    for m in &models {
        let params: Vec<String> = meta["params"][*m]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::Object(o) => {
                    let inner: Vec<String> = o
                        .iter()
                        .map(|(k2, v2)| format!("{k2} {}", show(v2)))
                        .collect();
                    format!("{k} ({})", inner.join(", "))
                }
                v => format!("{k} {}", show(v)),
            })
            .collect();
        out.push_str(&format!("  {m}: {}\n", params.join(", ")));
    }
    let why = match meta["tuning"].as_object() {
        Some(t) => format!(
            "  why: chosen by the tuning of {} ({} configurations, validation NDCG@10 {:.4}); \
             every training reuses it until the next tuning\n",
            t.get("tuned_at").and_then(Value::as_str).unwrap_or("?"),
            t.get("budget").unwrap_or(&Value::Null),
            t.get("validation_ndcg")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        ),
        None => "  why: no tuning result yet, so the [training] settings (defaults unless \
                 configured); `bespoke train --tune` searches every served model family\n"
            .to_owned(),
    };
    out.push_str(&why);
    out
}

pub(crate) fn train(settings: &Settings, args: &TrainArgs) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    settings.training.auto_activate &= !args.no_activate;
    settings.training.evaluate &= !args.no_evaluate;
    let store = bespoke_server::open_store(&settings)
        .with_context(|| format!("opening the store in {}", settings.store.data_dir.display()))?;
    let engine = Engine::open(store, Arc::new(settings.clone()))?;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:32} {bar:30} {pos}/{len} {elapsed}")
            .expect("valid template"),
    );
    let budget = args.budget.unwrap_or(settings.training.tune_budget);
    if args.tune && !(1..=1000).contains(&budget) {
        anyhow::bail!("--budget must be between 1 and 1000");
    }
    let progress = |p: bespoke_server::models::Progress<'_>| match p {
        bespoke_server::models::Progress::Stage(stage) => {
            bar.set_length(0);
            bar.set_position(0);
            bar.set_message(stage.to_owned());
        }
        bespoke_server::models::Progress::Iteration { fit, report, total } => {
            bar.set_length(total as u64);
            bar.set_position(report.iteration as u64);
            let loss = report
                .loss
                .map(|l| format!(", loss {l:.5}"))
                .unwrap_or_default();
            bar.set_message(format!("iALS ({fit}){loss}"));
        }
    };
    let outcome = if args.tune {
        engine.tune_by("cli", budget, progress)?
    } else {
        engine.train_by("cli", progress)?
    };
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    let meta = &outcome.meta;
    println!(
        "trained model version {} on {} events ({} users, {} items) in {:.1} s{}",
        outcome.version,
        meta["data"]["events"],
        meta["data"]["users"],
        meta["data"]["items"],
        meta["training_seconds"]["total"].as_f64().unwrap_or(0.0),
        if outcome.activated {
            "; now active"
        } else {
            ""
        }
    );
    print!("{}", served_summary(meta));
    if let Some(m) = meta["metrics"]
        .as_object()
        .filter(|m| m.contains_key("als"))
    {
        println!(
            "held-out metrics ({} users):",
            m.get("eval_users").unwrap_or(&Value::Null)
        );
        println!(
            "  {:<8} {:>9} {:>9} {:>9}",
            "model", "recall@20", "ndcg@10", "ndcg@100"
        );
        // Only the models this training produced (EASE stops at training.ease_max_items, BPR
        // needs training.bpr).
        for name in ModelChoice::NAMES {
            let Some(x) = m.get(name).filter(|x| x.is_object()) else {
                continue;
            };
            println!(
                "  {:<8} {:>9.4} {:>9.4} {:>9.4}",
                name,
                x["recall@20"].as_f64().unwrap_or(0.0),
                x["ndcg@10"].as_f64().unwrap_or(0.0),
                x["ndcg@100"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
