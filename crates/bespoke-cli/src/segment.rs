//! `bespoke segment`: list segments, refresh one, write its members (docs/segments.md), on the
//! data directory. Segments are defined over the API (`PUT /v1/segments/{key}`); a refresh here
//! stores members a running server serves at once, and is audited with the actor `cli`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bespoke_server::Settings;
use bespoke_server::engine::{MemberFormat, Segment, SegmentKind, SegmentRefresh};
use clap::{Args, Subcommand, ValueEnum};

/// `bespoke segment`.
#[derive(Debug, Args)]
pub(crate) struct SegmentArgs {
    #[command(subcommand)]
    command: SegmentCommand,
}

#[derive(Debug, Subcommand)]
enum SegmentCommand {
    /// Create or replace a segment from a JSON definition (docs/segments.md); a new one with
    /// a webhook export prints its signing secret, once.
    Create {
        /// The segment's name.
        name: String,
        /// The definition: a JSON file, `-` for stdin.
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a segment, its members and size history.
    Delete {
        /// The segment's name.
        name: String,
    },
    /// List every segment with its last refresh and export.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compute a segment's members now and store them (learned segments need a trained
    /// model); users who objected to marketing are left out.
    Refresh {
        /// The segment's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a segment's stored members (as of its last refresh).
    Members {
        /// The segment's name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// Only this cluster of a learned segment.
        #[arg(long)]
        cluster: Option<u32>,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// `user,score` (`user,cluster,score` for a learned segment) with a header.
    Csv,
    /// One `{"user", "score"}` object per line (with `"cluster"` for a learned segment).
    Jsonl,
}

pub(crate) fn run(settings: &Settings, args: &SegmentArgs) -> anyhow::Result<()> {
    let store = bespoke_server::open_store(settings)?;
    let engine = bespoke_server::Engine::open(store, Arc::new(settings.clone()))?;
    match &args.command {
        SegmentCommand::Create { name, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let input: bespoke_server::engine::SegmentIn = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a segment definition", file.display()))?;
            let put = engine.put_segment(name, input)?;
            engine
                .access()
                .audit("cli", "segment.put", Some(name), None);
            eprintln!(
                "{} segment {name:?}; compute its members with `bespoke segment refresh {name}`",
                if put.created { "created" } else { "replaced" }
            );
            if let Some(secret) = put.webhook_secret {
                eprintln!("webhook signing secret (shown once): {secret}");
            }
        }
        SegmentCommand::Delete { name } => {
            if !engine.delete_segment(name)? {
                anyhow::bail!("no segment {name:?}");
            }
            engine
                .access()
                .audit("cli", "segment.delete", Some(name), None);
            eprintln!("deleted {name:?}");
        }
        SegmentCommand::List { json } => {
            let all = engine.segments()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                eprintln!("no segments");
            } else {
                for s in &all {
                    println!("{}", line(s));
                }
            }
        }
        SegmentCommand::Refresh { name, json } => {
            let r = engine.refresh_segment(name, bespoke_server::time::now_ms())?;
            engine.access().audit(
                "cli",
                "segment.refresh",
                Some(name),
                Some(serde_json::json!({ "size": r.size })),
            );
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", summary(name, &r));
            }
        }
        SegmentCommand::Members {
            name,
            format,
            cluster,
            out,
        } => {
            let format = match format {
                Format::Csv => MemberFormat::Csv,
                Format::Jsonl => MemberFormat::Jsonl,
            };
            let mut w: Box<dyn Write> = match out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let written = engine
                .write_segment_members(name, *cluster, format, |piece| w.write_all(&piece))?;
            w.flush()?;
            eprintln!("{written} members");
        }
    }
    Ok(())
}

/// One segment on a line: name, kind and definition, schedule, last refresh.
fn line(s: &Segment) -> String {
    let what = match &s.spec.kind {
        SegmentKind::Rule { expression } => format!("rule     {expression}"),
        SegmentKind::Learned { k, seed } => format!("learned  k={k} seed={seed}"),
    };
    let refresh = s.spec.refresh.as_deref().unwrap_or("on demand");
    let last = s.last_refresh.as_ref().map_or_else(
        || "never refreshed".to_owned(),
        |r| {
            format!(
                "{} members at {}",
                r.size,
                bespoke_server::time::format_rfc3339(r.computed_at)
            )
        },
    );
    format!("{:<24} {what}  ({refresh}; {last})", s.name)
}

/// A refresh for people.
fn summary(name: &str, r: &SegmentRefresh) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let e = &r.excluded;
    let _ = writeln!(
        out,
        "{name}: {} members of {} users evaluated in {} ms (left out: {} objected to marketing, {} without personalization, {} without training consent)",
        r.size, r.evaluated_users, r.elapsed_ms, e.marketing, e.personalization, e.training
    );
    for c in &r.clusters {
        let categories: Vec<String> = c
            .categories
            .iter()
            .map(|l| format!("{} ({:.0}%, ×{:.1})", l.category, l.share * 100.0, l.lift))
            .collect();
        let attributes: Vec<String> = c
            .attributes
            .iter()
            .map(|l| {
                let value = l
                    .value
                    .as_str()
                    .map_or_else(|| l.value.to_string(), str::to_owned);
                format!(
                    "{}={value} ({:.0}%, ×{:.1})",
                    l.attribute,
                    l.share * 100.0,
                    l.lift
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  {:<20} {:>8} members  categories: {}  attributes: {}",
            c.name,
            c.size,
            if categories.is_empty() {
                "-".into()
            } else {
                categories.join(", ")
            },
            if attributes.is_empty() {
                "-".into()
            } else {
                attributes.join(", ")
            },
        );
    }
    out
}
