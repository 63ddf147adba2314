//! The Open Bandit Dataset experiment (`bespoke ope --obd DIR`): estimate each logging policy's
//! click rate from the *other* policy's logs with IPS, SNIPS and doubly robust estimators, and
//! compare with the click rate it actually had on its own logs (Saito et al., "Open Bandit
//! Dataset and Pipeline", 2021).
//!
//! Each log row is one impression: an item shown at one of three positions, with the logging
//! policy's probability of that item at that position. Positions are evaluated independently,
//! as in the dataset's own benchmark. The target policies:
//! - uniform random: `1 / n_items` at every position, known exactly;
//! - Bernoulli Thompson sampling: context-free, with a distribution per position that changes
//!   slowly over the week. Its probabilities at the random log's rows are estimated by the
//!   frequency of each item at each position in the Thompson-sampling log, the unbiased
//!   estimate of its average probability over the period (`count / rows`).
//!
//! The reward model of DR is Bespoke's bandit learner (user features, position, item features
//! and the user–item affinity, with context × action interactions), cross-fitted on two folds
//! so that no row is predicted by a model that learned from it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use bespoke_algo::bandit::ope::{Estimates, Sample, estimate};
use bespoke_algo::bandit::{Learner, LearnerConfig, PreparedAction, PreparedContext, RawFeature};
use serde::Serialize;

/// One impression of a log.
struct Row {
    item: usize,
    position: usize,
    click: f64,
    propensity: f64,
    user: Vec<String>,
    affinity: Vec<f32>,
}

/// An item's features.
struct ItemFeatures(Vec<RawFeature>);

fn read_log(path: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rdr =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = rdr.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column {name}", path.display()))
    };
    let (item, pos, click, prop) = (
        col("item_id")?,
        col("position")?,
        col("click")?,
        col("propensity_score")?,
    );
    let users: Vec<usize> = (0..4)
        .map(|i| col(&format!("user_feature_{i}")))
        .collect::<anyhow::Result<_>>()?;
    let aff: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| h.starts_with("user-item_affinity_"))
        .map(|(i, _)| i)
        .collect();
    let mut rows = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{} line {}", path.display(), n + 2))?;
        let num = |i: usize| -> anyhow::Result<f64> {
            rec[i].parse::<f64>().with_context(|| {
                format!("{} line {}: column {}", path.display(), n + 2, &headers[i])
            })
        };
        let position = num(pos)? as usize;
        if !(1..=3).contains(&position) {
            bail!(
                "{} line {}: position {position} is not 1, 2 or 3",
                path.display(),
                n + 2
            );
        }
        rows.push(Row {
            item: num(item)? as usize,
            position: position - 1,
            click: num(click)?,
            propensity: num(prop)?,
            user: users.iter().map(|&i| rec[i].to_owned()).collect(),
            affinity: aff
                .iter()
                .map(|&i| num(i).map(|x| x as f32))
                .collect::<anyhow::Result<_>>()?,
        });
    }
    Ok(rows)
}

fn read_items(path: &Path) -> anyhow::Result<Vec<ItemFeatures>> {
    let mut rdr =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{} line {}", path.display(), n + 2))?;
        let f0: f32 = rec[2]
            .parse()
            .with_context(|| format!("{} line {}", path.display(), n + 2))?;
        out.push(ItemFeatures(vec![
            RawFeature::new("item", "f0", f0),
            RawFeature::new("item", format!("f1={}", &rec[3]), 1.0),
            RawFeature::new("item", format!("f2={}", &rec[4]), 1.0),
            RawFeature::new("item", format!("f3={}", &rec[5]), 1.0),
        ]));
    }
    Ok(out)
}

/// Estimates of one policy's value from one log, against its true (on-policy) click rate.
#[derive(Debug, Serialize)]
pub(crate) struct CrossEstimate {
    campaign: String,
    /// The policy evaluated.
    target: String,
    /// The policy whose log was used.
    logs_of: String,
    /// The target's click rate on its own log.
    true_value: f64,
    estimates: Estimates,
    /// |estimate − true| / true per estimator.
    relative_error: RelativeErrors,
}

#[derive(Debug, Serialize)]
pub(crate) struct RelativeErrors {
    ips: f64,
    snips: f64,
    dr: f64,
    sndr: f64,
}

/// Cross-fitted predicted click probability of every item at each row's position.
fn reward_model(rows: &[Row], items: &[ItemFeatures]) -> Vec<Vec<f32>> {
    let config = LearnerConfig::default();
    let actions = |r: &Row| -> Vec<PreparedAction> {
        items
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut feats = f.0.clone();
                feats.push(RawFeature::new(
                    "affinity",
                    "affinity",
                    r.affinity.get(i).copied().unwrap_or(0.0),
                ));
                PreparedAction::new(&i.to_string(), &feats)
            })
            .collect()
    };
    let context = |r: &Row| -> PreparedContext {
        let mut f: Vec<RawFeature> = r
            .user
            .iter()
            .enumerate()
            .map(|(k, v)| RawFeature::new(format!("user{k}"), format!("u{k}={v}"), 1.0))
            .collect();
        f.push(RawFeature::new(
            "position",
            format!("pos={}", r.position),
            1.0,
        ));
        PreparedContext::new(&f)
    };
    let mut out = vec![Vec::new(); rows.len()];
    let half = rows.len() / 2;
    for (train, test) in [(0..half, half..rows.len()), (half..rows.len(), 0..half)] {
        let mut learner = Learner::new(config.clone());
        for r in &rows[train] {
            let a = actions(r);
            let x = learner.vector(&context(r), &a[r.item]);
            learner.learn(&x, r.click as f32);
        }
        for t in test {
            let r = &rows[t];
            // Clicks are probabilities: a regression that strays outside [0, 1] on items it
            // has hardly seen would otherwise dominate the DR sum over every item.
            out[t] = learner
                .score(&context(r), &actions(r))
                .0
                .into_iter()
                .map(|v| v.clamp(0.0, 1.0))
                .collect();
        }
    }
    out
}

/// `labels`: campaign, target policy, policy whose logs are used.
fn cross(
    [campaign, target, logs_of]: [&str; 3],
    rows: &[Row],
    q: &[Vec<f32>],
    pi: impl Fn(usize, usize) -> f64,
    n_items: usize,
    true_value: f64,
) -> CrossEstimate {
    let samples: Vec<Sample> = rows
        .iter()
        .zip(q)
        .map(|(r, q)| Sample {
            reward: r.click,
            logged: r.propensity,
            target: pi(r.item, r.position),
            q_chosen: q[r.item] as f64,
            q_target: (0..n_items).map(|a| pi(a, r.position) * q[a] as f64).sum(),
        })
        .collect();
    let e = estimate(&samples);
    let rel = |v: f64| (v - true_value).abs() / true_value;
    CrossEstimate {
        campaign: campaign.to_owned(),
        target: target.to_owned(),
        logs_of: logs_of.to_owned(),
        true_value,
        relative_error: RelativeErrors {
            ips: rel(e.ips.value),
            snips: rel(e.snips.value),
            dr: rel(e.dr.value),
            sndr: rel(e.sndr.value),
        },
        estimates: e,
    }
}

/// Runs the experiment on `dir` (the `obd` folder: `random/` and `bts/`, campaigns `men` and
/// `women`).
pub(crate) fn run(dir: &Path) -> anyhow::Result<Vec<CrossEstimate>> {
    let mut out = Vec::new();
    for campaign in ["men", "women"] {
        let random = read_log(&dir.join(format!("random/{campaign}/{campaign}.csv")))?;
        let bts = read_log(&dir.join(format!("bts/{campaign}/{campaign}.csv")))?;
        let items = read_items(&dir.join(format!("random/{campaign}/item_context.csv")))?;
        let n = items.len();
        if random
            .iter()
            .chain(&bts)
            .any(|r| r.item >= n || r.propensity.is_nan() || r.propensity <= 0.0)
        {
            bail!("{campaign}: an item id outside item_context.csv or a non-positive propensity");
        }
        let ctr = |rows: &[Row]| rows.iter().map(|r| r.click).sum::<f64>() / rows.len() as f64;
        // Thompson sampling's average probability of each item at each position.
        let mut freq: HashMap<(usize, usize), f64> = HashMap::new();
        let mut per_pos = [0.0f64; 3];
        for r in &bts {
            *freq.entry((r.item, r.position)).or_default() += 1.0;
            per_pos[r.position] += 1.0;
        }
        let pi_bts =
            |a: usize, pos: usize| freq.get(&(a, pos)).copied().unwrap_or(0.0) / per_pos[pos];
        let pi_random = |_: usize, _: usize| 1.0 / n as f64;
        let q_random = reward_model(&random, &items);
        let q_bts = reward_model(&bts, &items);
        out.push(cross(
            [campaign, "bts", "random"],
            &random,
            &q_random,
            pi_bts,
            n,
            ctr(&bts),
        ));
        out.push(cross(
            [campaign, "random", "bts"],
            &bts,
            &q_bts,
            pi_random,
            n,
            ctr(&random),
        ));
    }
    Ok(out)
}
