//! `bespoke audience export`: an audience (docs/audiences.md) from the data directory's
//! served model, as CSV or JSONL, to stdout or a file: the users most drawn to items, a
//! category or an item expression, without those who objected to marketing.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bespoke_server::Settings;
use bespoke_server::engine::{AudienceQuery, MAX_AUDIENCE_ITEMS};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

/// `bespoke audience`.
#[derive(Debug, Args)]
pub(crate) struct AudienceArgs {
    #[command(subcommand)]
    command: AudienceCommand,
}

#[derive(Debug, Subcommand)]
enum AudienceCommand {
    /// Write the users most drawn to items, a category or an item expression.
    Export(ExportArgs),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// `user,score` with a header.
    Csv,
    /// One `{"user", "score", "reason"}` object per line.
    Jsonl,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Item keys, comma-separated (at most 500).
    #[arg(long, value_delimiter = ',')]
    items: Vec<String>,
    /// Every item of this category.
    #[arg(long)]
    category: Option<String>,
    /// Every item this rule expression matches (docs/rules.md).
    #[arg(long)]
    filter: Option<String>,
    /// How many users.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Only users scoring at least this.
    #[arg(long)]
    threshold: Option<f32>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn run(settings: &Settings, args: &AudienceArgs) -> anyhow::Result<()> {
    let AudienceCommand::Export(a) = &args.command;
    if a.items.is_empty() && a.category.is_none() && a.filter.is_none() {
        bail!("give --items, --category or --filter");
    }
    if a.items.len() > MAX_AUDIENCE_ITEMS {
        bail!(
            "--items: at most {MAX_AUDIENCE_ITEMS} items, got {}",
            a.items.len()
        );
    }
    if !(1..=1_000_000).contains(&a.n) {
        bail!("--n must be from 1 to 1000000, got {}", a.n);
    }
    let store = bespoke_server::open_store(settings)?;
    let engine = bespoke_server::Engine::open(store, std::sync::Arc::new(settings.clone()))?;
    let audience = engine.audience(&AudienceQuery {
        items: a.items.clone(),
        category: a.category.clone(),
        filter: a.filter.clone(),
        n: a.n,
        threshold: a.threshold,
    })?;
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    if a.format == Format::Csv {
        writeln!(out, "user,score")?;
    }
    let mut written = 0;
    for u in audience
        .users
        .iter()
        .filter(|u| a.threshold.is_none_or(|t| u.score >= t))
    {
        match a.format {
            Format::Csv => writeln!(
                out,
                "{},{}",
                bespoke_server::wire::csv_field(&u.user),
                u.score
            )?,
            Format::Jsonl => writeln!(
                out,
                "{}",
                json!({ "user": u.user, "score": u.score,
                        "reason": u.reasons.first().map(|r| r.message()) })
            )?,
        }
        written += 1;
    }
    out.flush()?;
    eprintln!(
        "{written} users ({} scored; left out: {} objected to marketing, {} without personalization, {} without training consent)",
        audience.scored_users,
        audience.excluded.marketing,
        audience.excluded.personalization,
        audience.excluded.training
    );
    Ok(())
}
