//! `bespoke ope`: off-policy evaluation of a decision loop's logs, or the Open Bandit Dataset
//! experiment (`--obd`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use bespoke_algo::bandit::ope::{Estimate, Report};
use bespoke_server::Settings;
use bespoke_server::decisions::Loops;
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct OpeArgs {
    /// The loop whose logs to evaluate (read from the store).
    #[arg(long = "loop", required_unless_present = "obd")]
    loop_name: Option<String>,
    /// Most recent settled decisions to use (default decisions.evaluation_max_decisions).
    #[arg(long)]
    max_decisions: Option<usize>,
    /// Instead: the Open Bandit Dataset experiment on this folder (`../shared/data/obd`).
    #[arg(long, conflicts_with = "loop_name")]
    obd: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn fmt(e: &Estimate) -> String {
    format!("{:.4} [{:.4}, {:.4}]", e.value, e.ci95[0], e.ci95[1])
}

pub(crate) fn run(settings: &Settings, args: &OpeArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.obd {
        let results = crate::obd::run(dir)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&results)?);
            return Ok(());
        }
        let v = serde_json::to_value(&results)?;
        println!(
            "{:<8} {:<7} {:<8} {:>8}  {:>8} {:>6}  {:>8} {:>6}  {:>8} {:>6}  {:>8} {:>6}",
            "campaign",
            "target",
            "logs of",
            "true",
            "IPS",
            "err",
            "SNIPS",
            "err",
            "DR",
            "err",
            "SNDR",
            "err"
        );
        for r in v.as_array().context("results")? {
            let e = &r["estimates"];
            let err = &r["relative_error"];
            println!(
                "{:<8} {:<7} {:<8} {:>8.5}  {:>8.5} {:>5.1}%  {:>8.5} {:>5.1}%  {:>8.5} {:>5.1}%  {:>8.5} {:>5.1}%",
                r["campaign"].as_str().unwrap_or(""),
                r["target"].as_str().unwrap_or(""),
                r["logs_of"].as_str().unwrap_or(""),
                r["true_value"].as_f64().unwrap_or(f64::NAN),
                e["ips"]["value"].as_f64().unwrap_or(f64::NAN),
                err["ips"].as_f64().unwrap_or(f64::NAN) * 100.0,
                e["snips"]["value"].as_f64().unwrap_or(f64::NAN),
                err["snips"].as_f64().unwrap_or(f64::NAN) * 100.0,
                e["dr"]["value"].as_f64().unwrap_or(f64::NAN),
                err["dr"].as_f64().unwrap_or(f64::NAN) * 100.0,
                e["sndr"]["value"].as_f64().unwrap_or(f64::NAN),
                err["sndr"].as_f64().unwrap_or(f64::NAN) * 100.0,
            );
        }
        return Ok(());
    }
    let name = args.loop_name.as_deref().context("--loop is required")?;
    let cap = settings.decisions.evaluation_max_decisions;
    let limit = args.max_decisions.unwrap_or(cap);
    if limit == 0 {
        bail!("--max-decisions must be at least 1");
    }
    let store = bespoke_server::open_store(settings)?;
    let loops = Loops::open(store, settings.decisions.checkpoint_every)?;
    let report: Report = loops.evaluate(name, limit, Vec::new())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} decisions (slots), observed mean reward {:.4}; 95% intervals",
        report.decisions, report.observed_reward
    );
    println!(
        "{:<34} {:>30} {:>30} {:>30} {:>30}",
        "policy", "IPS", "SNIPS", "DR", "SNDR"
    );
    for p in &report.policies {
        println!(
            "{:<34} {:>30} {:>30} {:>30} {:>30}",
            p.policy,
            fmt(&p.estimates.ips),
            fmt(&p.estimates.snips),
            fmt(&p.estimates.dr),
            fmt(&p.estimates.sndr)
        );
    }
    match &report.best {
        Some(b) => println!(
            "best candidate: {b}{}; apply it with POST /v1/loops/{name}/evaluation/apply {{\"candidate\": \"{b}\"}}",
            if report.significant {
                " (its DR interval lies above the current estimate)"
            } else {
                " (not significantly better)"
            }
        ),
        None => println!("no candidate beats the current configuration"),
    }
    println!("feature importance (increase of the reward model's error without the namespace):");
    for f in &report.feature_importance {
        println!(
            "  {:<24} {:+.6} ({:+.1}%)",
            f.namespace,
            f.loss_increase,
            f.relative * 100.0
        );
    }
    Ok(())
}
