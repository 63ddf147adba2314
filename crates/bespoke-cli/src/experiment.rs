//! `bespoke experiment`: create, list, start, stop, delete and report experiments
//! (docs/experiments.md) in the data directory. A running server picks changes up within a
//! second. Every change is audited with the actor `cli`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use bespoke_server::Settings;
use bespoke_server::engine::{ExperimentReport, ExperimentSpec};
use clap::{Args, Subcommand};

/// `bespoke experiment`.
#[derive(Debug, Args)]
pub(crate) struct ExperimentArgs {
    #[command(subcommand)]
    command: ExperimentCommand,
}

#[derive(Debug, Subcommand)]
enum ExperimentCommand {
    /// Create a draft (or replace a draft) from a JSON definition (docs/experiments.md).
    Create {
        /// The experiment's name.
        name: String,
        /// The definition: a JSON file, `-` for stdin.
        #[arg(long)]
        file: PathBuf,
    },
    /// List every experiment.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a draft: its route serves the variants.
    Start {
        /// The experiment's name.
        name: String,
    },
    /// Stop a running experiment.
    Stop {
        /// The experiment's name.
        name: String,
    },
    /// Delete an experiment and its exposures.
    Delete {
        /// The experiment's name.
        name: String,
    },
    /// The results: users per variant, effects with intervals and p-values (fixed-horizon,
    /// Holm-adjusted, always-valid), CUPED, the sample-ratio-mismatch check.
    Report {
        /// The experiment's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(settings: &Settings, args: &ExperimentArgs) -> anyhow::Result<()> {
    let store = bespoke_server::open_store(settings)?;
    let engine = bespoke_server::Engine::open(store, Arc::new(settings.clone()))?;
    let audit = |action: &str, name: &str| {
        engine.access().audit("cli", action, Some(name), None);
    };
    match &args.command {
        ExperimentCommand::Create { name, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let spec: ExperimentSpec = serde_json::from_str(&text)
                .with_context(|| format!("{}: not an experiment definition", file.display()))?;
            let (e, created) = engine.put_experiment(name, spec)?;
            audit("experiment.put", name);
            eprintln!(
                "{} draft {:?}: {} variants, {} metrics; start it with `bespoke experiment start {name}`",
                if created { "created" } else { "replaced" },
                e.name,
                e.spec.variants.len(),
                e.spec.metrics.len()
            );
        }
        ExperimentCommand::List { json } => {
            let all = engine.experiments()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                eprintln!("no experiments");
            } else {
                for e in all {
                    let variants: Vec<&str> =
                        e.spec.variants.iter().map(|v| v.name.as_str()).collect();
                    println!(
                        "{:<24} {:<8} {:<16} {}",
                        e.name,
                        format!("{:?}", e.status).to_lowercase(),
                        serde_json::to_value(e.spec.route)?
                            .as_str()
                            .unwrap_or_default(),
                        variants.join(" vs ")
                    );
                }
            }
        }
        ExperimentCommand::Start { name } => {
            engine.start_experiment(name)?;
            audit("experiment.start", name);
            eprintln!("started {name:?}");
        }
        ExperimentCommand::Stop { name } => {
            engine.stop_experiment(name)?;
            audit("experiment.stop", name);
            eprintln!("stopped {name:?}");
        }
        ExperimentCommand::Delete { name } => {
            if !engine.delete_experiment(name)? {
                bail!("no experiment {name:?}");
            }
            audit("experiment.delete", name);
            eprintln!("deleted {name:?}");
        }
        ExperimentCommand::Report { name, json } => {
            let report = engine.experiment_report(name)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", table(&report));
            }
        }
    }
    Ok(())
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

/// The report as a table for people.
pub(crate) fn table(r: &ExperimentReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "experiment {:?} ({:?}), {} users, from {} to {}",
        r.experiment, r.status, r.users, r.started_at, r.analysed_until
    );
    if let Some(s) = &r.srm {
        let _ = writeln!(
            out,
            "sample ratio: chi2 {:.2}, p {:.4}{}",
            s.chi2,
            s.p_value,
            if s.alarm { "  ALARM" } else { "" }
        );
    }
    for v in &r.variants {
        let means: Vec<String> = v
            .means
            .iter()
            .map(|m| format!("{} {}", m.metric, num(m.mean)))
            .collect();
        let _ = writeln!(
            out,
            "  {:<16} {:>7} users  {}",
            v.variant,
            v.users,
            means.join(", ")
        );
    }
    for c in &r.comparisons {
        let _ = writeln!(out, "{} vs {}:", c.treatment, c.control);
        let _ = writeln!(
            out,
            "  {:<20} {:>10} {:>9} {:>23} {:>8} {:>8} {:>8} {:>6}",
            "metric", "effect", "relative", "95% interval", "p", "p holm", "p seq", "cuped"
        );
        for m in &c.metrics {
            if let Some(note) = &m.note {
                let _ = writeln!(out, "  {:<20} {note}", m.metric);
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<20} {:>10} {:>9} {:>23} {:>8} {:>8} {:>8} {:>6}{}",
                m.metric,
                num(m.effect),
                m.relative
                    .map_or_else(|| "-".into(), |r| format!("{:+.1}%", 100.0 * r)),
                format!("[{}, {}]", num(m.ci_low), num(m.ci_high)),
                num(m.p_value),
                num(m.p_value_holm),
                num(m.sequential.as_ref().map(|s| s.always_valid_p)),
                m.cuped_variance_reduction
                    .map_or_else(|| "-".into(), |v| format!("-{:.0}%", 100.0 * v)),
                if m.significant { "  *" } else { "" }
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
