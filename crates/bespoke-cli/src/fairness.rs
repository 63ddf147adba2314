//! `bespoke fairness`: the fairness and bias report (`docs/fairness.md`) on an evaluation
//! split, like `bespoke eval` (accuracy by user group needs held-out data), or with `--live`
//! on the data directory's served model. Re-rankers can be applied to the lists (`--calibration`,
//! `--popularity`, `--protected`), and `--sweep` runs each re-ranker over a range of weights:
//! the trade-off table of `docs/fairness.md`, drawn with `--chart`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bespoke_algo::eval::temporal_split;
use bespoke_algo::fairness::{self, CALIBRATION_ALPHA, Groups, Report, ReportInput, UserCase};
use bespoke_algo::rerank::{Fair, calibrate, inverse_popularity, xquad};
use bespoke_algo::tune::{Fitted, Scratch};
use bespoke_algo::{Csr, Scored};
use clap::{Args, ValueEnum};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::eval::{EvalArgs, config, dense_ids, read_rows};

/// Popularity debiasing's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Method {
    /// Smooth xQuAD over head and tail.
    Xquad,
    /// Relevance / popularity^β.
    Inverse,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct FairnessArgs {
    #[command(flatten)]
    pub(crate) eval: EvalArgs,
    /// Users' attributes for accuracy by group: MovieLens `u.user` (gender, age band,
    /// occupation) or JSONL lines `{"key": ..., "attributes": {...}}`.
    #[arg(long)]
    users: Option<PathBuf>,
    /// Length of the lists measured.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// User attributes to group accuracy by (default: every attribute --users has).
    #[arg(long = "user-attribute")]
    user_attributes: Vec<String>,
    /// Item attributes whose exposure is compared (`category` for the first category;
    /// MovieLens items also have `decade`).
    #[arg(long = "item-attribute")]
    item_attributes: Vec<String>,
    /// Calibration's λ (0 = off).
    #[arg(long, default_value_t = 0.0)]
    calibration: f64,
    /// Popularity debiasing's weight (0 = off).
    #[arg(long, default_value_t = 0.0)]
    popularity: f64,
    /// Popularity debiasing's method.
    #[arg(long, value_enum, default_value = "xquad")]
    popularity_method: Method,
    /// The protected item group as `attribute=value` (`category=Documentary`).
    #[arg(long)]
    protected: Option<String>,
    /// FA*IR's minimum protected share p.
    #[arg(long, default_value_t = 0.3)]
    protected_share: f64,
    /// FA*IR's significance α.
    #[arg(long, default_value_t = 0.1)]
    protected_alpha: f64,
    /// Candidates the re-rankers choose the k from.
    #[arg(long, default_value_t = 100)]
    candidates: usize,
    /// Run calibration and popularity debiasing over weights 0, 0.1, ..., 1 and print the
    /// trade-off table.
    #[arg(long)]
    sweep: bool,
    /// With --sweep: draw NDCG@10 against popularity lift and against miscalibration (PNG).
    #[arg(long, requires = "sweep")]
    chart: Option<PathBuf>,
    /// Measure the data directory's served model instead (no accuracy: no held-out data).
    #[arg(long, conflicts_with_all = ["sweep", "users"])]
    live: bool,
}

/// One item's content as the report needs it.
#[derive(Debug, Clone, Default)]
struct ItemInfo {
    categories: Vec<String>,
    attributes: HashMap<String, String>,
}

/// The re-rankers applied to every list.
#[derive(Debug, Clone, Copy)]
struct Rerank {
    calibration: f64,
    popularity: f64,
    method: Method,
}

/// Items by key: MovieLens `u.item` (genres, `decade` of release) or JSONL.
fn read_items(
    path: &Path,
    format: crate::cold::ItemsFormat,
) -> anyhow::Result<HashMap<String, ItemInfo>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let at = || format!("{}: line {}", path.display(), n + 1);
        match format {
            crate::cold::ItemsFormat::Movielens => {
                // Latin-1.
                let text: String = line.iter().map(|&b| b as char).collect();
                let text = text.trim_end();
                if text.is_empty() {
                    continue;
                }
                let f: Vec<&str> = text.split('|').collect();
                if f.len() < 5 + crate::cold::GENRES.len() {
                    bail!(
                        "{}: expected 24 '|'-separated fields, found {}",
                        at(),
                        f.len()
                    );
                }
                let categories = crate::cold::GENRES
                    .iter()
                    .zip(&f[5..])
                    .filter(|(_, v)| **v == "1")
                    .map(|(g, _)| (*g).to_owned())
                    .collect();
                let mut attributes = HashMap::new();
                // "01-Jan-1995": the decade of the year.
                if let Some(year) = f[2].rsplit('-').next().and_then(|y| y.parse::<u32>().ok()) {
                    attributes.insert("decade".to_owned(), format!("{}s", year / 10 * 10));
                }
                out.insert(
                    f[0].to_owned(),
                    ItemInfo {
                        categories,
                        attributes,
                    },
                );
            }
            crate::cold::ItemsFormat::Jsonl => {
                let text =
                    std::str::from_utf8(line).with_context(|| format!("{} is not UTF-8", at()))?;
                if text.trim().is_empty() {
                    continue;
                }
                let item: bespoke_server::wire::ItemJson =
                    serde_json::from_str(text).with_context(at)?;
                let key = item
                    .key
                    .clone()
                    .with_context(|| format!("{}: no \"key\"", at()))?;
                let attributes = item
                    .attributes
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), group_value(v)?)))
                    .collect();
                out.insert(
                    key,
                    ItemInfo {
                        categories: item.categories.clone(),
                        attributes,
                    },
                );
            }
        }
    }
    Ok(out)
}

fn group_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// MovieLens 1M's age bands, used for 100K's exact ages.
fn age_band(age: u32) -> &'static str {
    match age {
        0..=17 => "under 18",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=49 => "45-49",
        50..=55 => "50-55",
        _ => "56+",
    }
}

/// Users' attributes by key: MovieLens `u.user` (`id|age|gender|occupation|zip`) or JSONL.
fn read_users(path: &Path) -> anyhow::Result<HashMap<String, HashMap<String, String>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let at = || format!("{}: line {}", path.display(), n + 1);
        let text = std::str::from_utf8(line).with_context(|| format!("{} is not UTF-8", at()))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if text.starts_with('{') {
            let v: Value = serde_json::from_str(text).with_context(at)?;
            let key = v["key"]
                .as_str()
                .with_context(|| format!("{}: no \"key\"", at()))?;
            let attrs = v["attributes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), group_value(v)?)))
                        .collect()
                })
                .unwrap_or_default();
            out.insert(key.to_owned(), attrs);
        } else {
            let f: Vec<&str> = text.split('|').collect();
            if f.len() < 4 {
                bail!("{}: expected id|age|gender|occupation|zip", at());
            }
            let age: u32 = f[1]
                .parse()
                .with_context(|| format!("{}: age {:?} is not a number", at(), f[1]))?;
            out.insert(
                f[0].to_owned(),
                HashMap::from([
                    ("gender".to_owned(), f[2].to_owned()),
                    ("age".to_owned(), age_band(age).to_owned()),
                    ("occupation".to_owned(), f[3].to_owned()),
                ]),
            );
        }
    }
    Ok(out)
}

/// One evaluated user: the model's candidates (best first), their training profile and their
/// relevant test items.
struct Evaluated {
    candidates: Vec<Scored>,
    profile: Vec<(u32, f64)>,
    relevant: Vec<u32>,
}

/// The split, the model's candidates per evaluated user, and everything the report reads.
struct Prepared {
    n_items: usize,
    popularity: Vec<f64>,
    item_categories: Vec<Vec<u32>>,
    category_names: Vec<String>,
    tail: Vec<bool>,
    /// Per evaluated user: candidates (best first), profile, relevant test items.
    users: Vec<Evaluated>,
    user_groups: Vec<Groups>,
    item_groups: Vec<Groups>,
    protected: Option<Vec<bool>>,
    model: String,
}

fn prepare(a: &FairnessArgs) -> anyhow::Result<Prepared> {
    let e = &a.eval;
    let Some(data) = &e.data else {
        bail!("--data is required (an interaction file to split), or --live");
    };
    let frac = crate::eval::temporal_fraction(&e.split)?;
    let (train, test, _) = temporal_split(read_rows(data)?, frac, 5);
    if train.is_empty() || test.is_empty() {
        bail!(
            "the split of {} is empty: no user has 5 interactions",
            data.display()
        );
    }
    let (users, uidx) = dense_ids(train.iter().map(|r| r.user));
    let (items, iidx) = dense_ids(train.iter().map(|r| r.item));
    let triples: Vec<(u32, u32, f32)> = train
        .iter()
        .map(|r| (uidx[&r.user], iidx[&r.item], r.weight as f32))
        .collect();
    let weights = Csr::from_triples(users.len(), items.len(), &triples, false);
    let mut relevant: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for r in &test {
        if let (Some(&u), Some(&i)) = (uidx.get(&r.user), iidx.get(&r.item)) {
            relevant.entry(u).or_default().push(i);
        }
    }
    let mut popularity = vec![0.0; items.len()];
    let mut profiles: Vec<Vec<(u32, f64)>> = vec![Vec::new(); users.len()];
    for &(u, i, w) in &triples {
        popularity[i as usize] += 1.0;
        profiles[u as usize].push((i, f64::from(w)));
    }
    let info = match &e.items {
        Some(p) => read_items(p, e.items_format)?,
        None => HashMap::new(),
    };
    let mut category_names: Vec<String> =
        info.values().flat_map(|i| i.categories.clone()).collect();
    category_names.sort();
    category_names.dedup();
    let item_info: Vec<Option<&ItemInfo>> =
        items.iter().map(|id| info.get(&id.to_string())).collect();
    let item_categories: Vec<Vec<u32>> = item_info
        .iter()
        .map(|i| {
            i.map_or_else(Vec::new, |i| {
                i.categories
                    .iter()
                    .map(|c| category_names.binary_search(c).expect("listed") as u32)
                    .collect()
            })
        })
        .collect();
    let attribute = |i: &ItemInfo, name: &str| -> Option<String> {
        if name == "category" {
            i.categories.first().cloned()
        } else {
            i.attributes.get(name).cloned()
        }
    };
    let mut item_groups = Vec::new();
    for name in &a.item_attributes {
        let g = Groups::from_values(
            name,
            item_info.iter().map(|i| i.and_then(|i| attribute(i, name))),
        );
        if g.names.is_empty() {
            bail!("no item of --items has the attribute {name:?}");
        }
        item_groups.push(g);
    }
    let protected = match &a.protected {
        None => None,
        Some(spec) => {
            let (name, value) = spec
                .split_once('=')
                .with_context(|| format!("--protected {spec:?}: expected attribute=value"))?;
            let flags: Vec<bool> = item_info
                .iter()
                .map(|i| {
                    i.is_some_and(|i| {
                        if name == "category" {
                            i.categories.iter().any(|c| c == value)
                        } else {
                            i.attributes.get(name).is_some_and(|v| v == value)
                        }
                    })
                })
                .collect();
            if !flags.iter().any(|f| *f) {
                bail!("--protected {spec:?}: no item of the catalog is in that group");
            }
            Some(flags)
        }
    };
    let eval_users: Vec<(u32, Vec<u32>)> = relevant
        .into_iter()
        .map(|(u, mut is)| {
            is.sort_unstable();
            is.dedup();
            (u, is)
        })
        .collect();
    let mut user_groups = Vec::new();
    if let Some(p) = &a.users {
        let attrs = read_users(p)?;
        let mut names: Vec<String> = if a.user_attributes.is_empty() {
            attrs.values().flat_map(|m| m.keys().cloned()).collect()
        } else {
            a.user_attributes.clone()
        };
        names.sort();
        names.dedup();
        for name in names {
            let g = Groups::from_values(
                &name,
                eval_users.iter().map(|(u, _)| {
                    attrs
                        .get(&users[*u as usize].to_string())
                        .and_then(|m| m.get(&name))
                        .cloned()
                }),
            );
            if g.names.is_empty() {
                bail!("no user of {} has the attribute {name:?}", p.display());
            }
            user_groups.push(g);
        }
    } else if !a.user_attributes.is_empty() {
        bail!("--user-attribute needs --users");
    }
    let model_name = e.models.first().map_or("als", String::as_str).to_owned();
    let cfg = config(&model_name, e)?;
    let fitted =
        Fitted::fit(&cfg, &weights, e.seed, e.ease_max_items).map_err(|e| anyhow::anyhow!(e))?;
    let pool = a.candidates.max(a.k);
    let n_items = items.len();
    let scored: Vec<Vec<Scored>> = eval_users
        .par_iter()
        .map_init(
            || Scratch::new(n_items),
            |s, (u, _)| fitted.recommend(&weights, *u as usize, pool, s),
        )
        .collect();
    let users_out = eval_users
        .into_iter()
        .zip(scored)
        .map(|((u, relevant), candidates)| Evaluated {
            candidates,
            profile: std::mem::take(&mut profiles[u as usize]),
            relevant,
        })
        .collect();
    let tail = fairness::tail_items(&popularity, fairness::HEAD_SHARE);
    Ok(Prepared {
        n_items,
        popularity,
        item_categories,
        category_names,
        tail,
        users: users_out,
        user_groups,
        item_groups,
        protected,
        model: model_name,
    })
}

/// Scores rescaled to `[0, 1]` over the candidates (all 1 when equal), as serving does.
fn relevance(cands: &[Scored]) -> Vec<f64> {
    let (lo, hi) = cands
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, c| {
            (a.0.min(f64::from(c.score)), a.1.max(f64::from(c.score)))
        });
    cands
        .iter()
        .map(|c| {
            if hi > lo {
                (f64::from(c.score) - lo) / (hi - lo)
            } else {
                1.0
            }
        })
        .collect()
}

/// A user's list of `k` after the re-rankers, in the serving pipeline's order.
fn rerank(
    p: &Prepared,
    cands: &[Scored],
    profile: &[(u32, f64)],
    r: Rerank,
    fair: Option<&Fair>,
    k: usize,
) -> Vec<u32> {
    let mut items: Vec<u32> = cands.iter().map(|c| c.idx).collect();
    let mut rel = relevance(cands);
    // Each stage keeps the whole pool in its new order, so the next chooses from all of it.
    let apply = |order: Vec<usize>, items: &mut Vec<u32>, rel: &mut Vec<f64>| {
        let mut seen = vec![false; items.len()];
        let mut idx: Vec<usize> = order;
        for &j in &idx {
            seen[j] = true;
        }
        idx.extend((0..items.len()).filter(|j| !seen[*j]));
        *items = idx.iter().map(|&j| items[j]).collect();
        *rel = idx.iter().map(|&j| rel[j]).collect();
    };
    if r.calibration > 0.0 {
        let target = fairness::category_distribution(
            profile.iter().copied(),
            &p.item_categories,
            p.category_names.len(),
        );
        if let Some(target) = target {
            let cats: Vec<&[u32]> = items
                .iter()
                .map(|&i| &p.item_categories[i as usize][..])
                .collect();
            let mut order = calibrate(&rel, &cats, &target, r.calibration, CALIBRATION_ALPHA, k);
            // Calibration chooses the set; shown best first (as serving does).
            order.sort_unstable();
            apply(order, &mut items, &mut rel);
        }
    }
    if r.popularity > 0.0 {
        let order = match r.method {
            Method::Xquad => {
                let total: f64 = profile.iter().map(|x| x.1.max(0.0)).sum();
                let tail: f64 = profile
                    .iter()
                    .filter(|x| p.tail[x.0 as usize])
                    .map(|x| x.1.max(0.0))
                    .sum();
                let pref = if total > 0.0 { tail / total } else { 0.5 };
                let is_tail: Vec<bool> = items.iter().map(|&i| p.tail[i as usize]).collect();
                xquad(&rel, &is_tail, pref, r.popularity, k)
            }
            Method::Inverse => {
                let pop: Vec<f64> = items.iter().map(|&i| p.popularity[i as usize]).collect();
                // A ratio of scores, as serving does.
                let top = cands.iter().map(|c| f64::from(c.score)).fold(0.0, f64::max);
                let ratio: Vec<f64> = items
                    .iter()
                    .map(|i| {
                        let s = cands
                            .iter()
                            .find(|c| c.idx == *i)
                            .map_or(0.0, |c| f64::from(c.score));
                        if top > 0.0 { s.max(0.0) / top } else { 1.0 }
                    })
                    .collect();
                inverse_popularity(&ratio, &pop, r.popularity, k)
            }
        };
        apply(order, &mut items, &mut rel);
    }
    if let (Some(fair), Some(flags)) = (fair, &p.protected) {
        let protected: Vec<bool> = items.iter().map(|&i| flags[i as usize]).collect();
        let order = fair.rerank(&protected, k).order;
        apply(order, &mut items, &mut rel);
    }
    items.truncate(k);
    items
}

fn report(p: &Prepared, a: &FairnessArgs, r: Rerank) -> anyhow::Result<Report> {
    let fair = match &p.protected {
        Some(_) => Some(
            Fair::new(a.k, a.protected_share, a.protected_alpha)
                .map_err(|e| anyhow::anyhow!("--protected-share/--protected-alpha: {e}"))?,
        ),
        None => None,
    };
    let cases: Vec<UserCase> = p
        .users
        .par_iter()
        .map(|e| UserCase {
            list: rerank(p, &e.candidates, &e.profile, r, fair.as_ref(), a.k),
            profile: e.profile.clone(),
            relevant: e.relevant.clone(),
        })
        .collect();
    let input = ReportInput {
        n_items: p.n_items,
        k: a.k,
        popularity: &p.popularity,
        item_categories: &p.item_categories,
        category_names: &p.category_names,
        users: &cases,
        user_groups: p.user_groups.iter().map(Groups::grouping).collect(),
        item_groups: p.item_groups.iter().map(Groups::grouping).collect(),
        bootstrap: 1000,
        seed: a.eval.seed,
    };
    Ok(fairness::report(&input))
}

/// One row of the trade-off table.
fn sweep_row(stage: &str, weight: f64, r: &Report) -> Value {
    json!({
        "reranker": stage,
        "weight": weight,
        "ndcg@10": r.accuracy.as_ref().and_then(|a| a.ndcg10.mean),
        "recall@10": r.accuracy.as_ref().and_then(|a| a.recall10.mean),
        "popularity_lift": r.popularity_lift.lift,
        "miscalibration": r.miscalibration.mean,
        "coverage": r.coverage,
        "long_tail_share": r.long_tail.list_tail_share,
        "gini": r.gini,
    })
}

pub(crate) fn run(
    settings: &bespoke_server::settings::Settings,
    a: &FairnessArgs,
) -> anyhow::Result<()> {
    if !(1..=1000).contains(&a.k) {
        bail!("--k must be from 1 to 1000, got {}", a.k);
    }
    for (name, v) in [
        ("--calibration", a.calibration),
        ("--popularity", a.popularity),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} must be from 0 to 1, got {v}");
        }
    }
    if a.live {
        return live(settings, a);
    }
    let p = prepare(a)?;
    if a.sweep {
        let mut rows = Vec::new();
        let weights: Vec<f64> = (0..=10).map(|i| f64::from(i) / 10.0).collect();
        for &w in &weights {
            let r = report(
                &p,
                a,
                Rerank {
                    calibration: w,
                    popularity: 0.0,
                    method: a.popularity_method,
                },
            )?;
            rows.push(sweep_row("calibration", w, &r));
        }
        for &w in &weights {
            let r = report(
                &p,
                a,
                Rerank {
                    calibration: 0.0,
                    popularity: w,
                    method: a.popularity_method,
                },
            )?;
            rows.push(sweep_row("popularity", w, &r));
        }
        if let Some(path) = &a.chart {
            crate::chart::tradeoff(path, &p.model, &rows)?;
            eprintln!("chart written to {}", path.display());
        }
        if a.eval.json {
            for r in &rows {
                println!("{r}");
            }
        } else {
            println!("reranker     weight  ndcg@10  pop.lift  miscal.  coverage  tail");
            let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.4}"));
            for r in &rows {
                println!(
                    "{:<12} {:>6}  {:>7}  {:>8}  {:>7}  {:>8}  {:>5}",
                    r["reranker"].as_str().unwrap_or(""),
                    r["weight"],
                    f(&r["ndcg@10"]),
                    f(&r["popularity_lift"]),
                    f(&r["miscalibration"]),
                    f(&r["coverage"]),
                    f(&r["long_tail_share"]),
                );
            }
        }
        return Ok(());
    }
    let r = report(
        &p,
        a,
        Rerank {
            calibration: a.calibration,
            popularity: a.popularity,
            method: a.popularity_method,
        },
    )?;
    if a.eval.json {
        let mut v = serde_json::to_value(&r)?;
        v["model"] = json!(p.model);
        println!("{v}");
    } else {
        println!("model: {}", p.model);
        print!("{}", r.table());
    }
    Ok(())
}

/// The report on the served model, through the engine (in process, as the API computes it).
fn live(settings: &bespoke_server::settings::Settings, a: &FairnessArgs) -> anyhow::Result<()> {
    let store = bespoke_server::open_store(settings)?;
    let engine = bespoke_server::Engine::open(store, std::sync::Arc::new(settings.clone()))?;
    let req = bespoke_server::pipeline::RankRequest {
        n: a.k,
        fairness: bespoke_server::pipeline::request::FairnessRequest {
            calibration: Some(a.calibration as f32),
            popularity: Some(a.popularity as f32),
            ..Default::default()
        },
        ..Default::default()
    };
    let opts = bespoke_server::engine::ReportOptions {
        user_attributes: a.user_attributes.clone(),
        item_attributes: a.item_attributes.clone(),
        max_users: None,
        seed: a.eval.seed,
    };
    let out = engine.fairness_report(&req, &opts)?;
    if a.eval.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        if let Some(v) = out.model_version {
            println!("model version: {v}");
        }
        print!("{}", out.report.table());
    }
    Ok(())
}
