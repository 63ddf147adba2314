//! `bespoke eval --cold-items FRACTION`: how well brand-new items are recommended.
//!
//! A seeded share of the items is held out entirely: none of their rows is trained on, all of
//! them are the test. iALS is trained on the rest, the hybrid content model learns
//! content → item factors on those warm items, and each test user ranks only the cold items
//! (the "new arrivals" shelf) by their iALS vector against the predicted factors. Baselines on
//! the same candidates: popularity predicted from content (a ridge map to log(1 + count)),
//! random (mean of five seeded shuffles), and, as a ceiling for any ranking that is the same
//! for everyone, the cold items' true popularity counted on the test rows themselves.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use bespoke_algo::eval::{K_MAX, MetricSums};
use bespoke_algo::tune::Fitted;
use bespoke_algo::{Bag, ContentVocab, Csr, Ridge, Rng, TopK, VocabParams};
use bespoke_server::models::content::item_bag;
use bespoke_server::wire::ItemJson;
use clap::ValueEnum;
use serde_json::json;

use crate::eval::{EvalArgs, config, dense_ids, metrics_json, read_rows};

/// Formats of the item content file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ItemsFormat {
    /// One item per line, as `bespoke export items` writes them.
    Jsonl,
    /// MovieLens 100K `u.item`: id|title|release date|video date|URL|19 genre flags (Latin-1).
    Movielens,
}

/// MovieLens 100K's genres, in `u.item`'s column order.
pub(crate) const GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Item key → content bag.
pub(crate) fn read_items(path: &Path, format: ItemsFormat) -> anyhow::Result<HashMap<String, Bag>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = HashMap::new();
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let at = || format!("{}: line {line_no}", path.display());
        match format {
            ItemsFormat::Jsonl => {
                let text =
                    std::str::from_utf8(&buf).with_context(|| format!("{} is not UTF-8", at()))?;
                if text.trim().is_empty() {
                    continue;
                }
                let item: ItemJson = serde_json::from_str(text).with_context(at)?;
                let key = item
                    .key
                    .clone()
                    .with_context(|| format!("{}: the item has no \"key\"", at()))?;
                out.insert(
                    key,
                    item_bag(
                        &item.categories,
                        &item.text,
                        &item.numeric,
                        &item.attributes,
                        &item.embeddings,
                    ),
                );
            }
            ItemsFormat::Movielens => {
                // Latin-1: every byte is the code point of the same value.
                let text: String = buf.iter().map(|&b| b as char).collect();
                let fields: Vec<&str> = text.trim_end().split('|').collect();
                if fields.len() < 5 + GENRES.len() {
                    bail!(
                        "{}: expected 24 '|'-separated fields, found {}",
                        at(),
                        fields.len()
                    );
                }
                let genres: Vec<String> = GENRES
                    .iter()
                    .zip(&fields[5..])
                    .filter(|(_, f)| **f == "1")
                    .map(|(g, _)| (*g).to_owned())
                    .collect();
                let title = BTreeMap::from([("title".to_owned(), fields[1].to_owned())]);
                out.insert(
                    fields[0].to_owned(),
                    item_bag(
                        &genres,
                        &title,
                        &BTreeMap::new(),
                        &serde_json::Map::new(),
                        &BTreeMap::new(),
                    ),
                );
            }
        }
    }
    Ok(out)
}

fn shuffle(v: &mut [u32], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

pub(crate) fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let frac = a.cold_items.unwrap_or(0.1);
    if !(frac > 0.0 && frac < 1.0) {
        bail!("--cold-items {frac}: expected a share between 0 and 1");
    }
    let (Some(data), Some(items_path)) = (&a.data, &a.items) else {
        bail!("--cold-items needs --data (one interaction file) and --items (their content)");
    };
    let started = Instant::now();
    let rows = read_rows(data)?;
    let content = read_items(items_path, a.items_format)?;
    let (all_items, _) = dense_ids(rows.iter().map(|r| r.item));
    let mut order: Vec<u32> = (0..all_items.len() as u32).collect();
    shuffle(&mut order, &mut Rng::seed_from_u64(a.seed ^ 0x636f_6c64));
    let n_cold = ((all_items.len() as f64 * frac).round() as usize).clamp(1, all_items.len() - 1);

    let (cold_ids, cold_index) = dense_ids(order[..n_cold].iter().map(|&k| all_items[k as usize]));
    let (train, test): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|r| !cold_index.contains_key(&r.item));
    let (users, uidx) = dense_ids(train.iter().map(|r| r.user));
    let (warm_ids, widx) = dense_ids(train.iter().map(|r| r.item));
    let triples: Vec<(u32, u32, f32)> = train
        .iter()
        .map(|r| (uidx[&r.user], widx[&r.item], r.weight as f32))
        .collect();
    let weights = Csr::from_triples(users.len(), warm_ids.len(), &triples, false);
    let mut by_user: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut true_counts = vec![0f32; n_cold];
    for r in &test {
        true_counts[cold_index[&r.item] as usize] += 1.0;
        if let Some(&u) = uidx.get(&r.user) {
            by_user.entry(u).or_default().push(cold_index[&r.item]);
        }
    }
    let eval: Vec<(u32, Vec<u32>)> = by_user
        .into_iter()
        .map(|(u, mut is)| {
            is.sort_unstable();
            is.dedup();
            (u, is)
        })
        .collect();
    if eval.is_empty() {
        bail!("no user of the held-out items also has training rows: nothing to evaluate");
    }
    let load_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let Fitted::Als(als, _) = Fitted::fit(
        &config(bespoke_algo::ModelKind::Als.name(), a)?,
        &weights,
        a.seed,
        a.ease_max_items,
    )
    .map_err(|e| anyhow::anyhow!(e))?
    else {
        unreachable!("an iALS configuration fits iALS");
    };
    let als_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let bag = |id: i64| content.get(&id.to_string()).cloned().unwrap_or_default();
    let warm_bags: Vec<Bag> = warm_ids.iter().map(|&i| bag(i)).collect();
    let cold_bags: Vec<Bag> = cold_ids.iter().map(|&i| bag(i)).collect();
    let without_content = warm_bags
        .iter()
        .chain(&cold_bags)
        .filter(|b| b.sparse.is_empty() && b.dense.is_empty())
        .count();
    // The vocabulary is learned from warm items only, as if the cold ones arrived later.
    let vocab = ContentVocab::fit(
        &warm_bags,
        VocabParams {
            max_features: a.content_max_features,
            ..VocabParams::default()
        },
    );
    let x_warm: Vec<Vec<(u32, f32)>> = warm_bags.iter().map(|b| vocab.encode(b)).collect();
    let f = als.item_factors().dim();
    let mut counts = vec![0f32; warm_ids.len()];
    for u in 0..weights.n_rows() {
        for &i in weights.row(u).0 {
            counts[i as usize] += 1.0;
        }
    }
    let ridge = Ridge::fit(
        &x_warm,
        als.item_factors().as_slice(),
        vocab.dim(),
        f,
        a.content_lambda,
    )?;
    let log_counts: Vec<f32> = counts.iter().map(|c| c.ln_1p()).collect();
    let pop_ridge = Ridge::fit(&x_warm, &log_counts, vocab.dim(), 1, a.content_lambda)?;
    let x_cold: Vec<Vec<(u32, f32)>> = cold_bags.iter().map(|b| vocab.encode(b)).collect();
    let cold_factors: Vec<Vec<f32>> = x_cold.iter().map(|x| ridge.predict(x)).collect();
    let cold_pop: Vec<f32> = x_cold.iter().map(|x| pop_ridge.predict(x)[0]).collect();
    let content_s = started.elapsed().as_secs_f64();

    let rank = |scores: &mut dyn FnMut(u32) -> f32| -> Vec<u32> {
        let mut top = TopK::new(K_MAX);
        for c in 0..n_cold as u32 {
            top.push(c, scores(c));
        }
        top.into_sorted().into_iter().map(|s| s.idx).collect()
    };
    let mut hybrid = MetricSums::new(n_cold);
    let mut popular = MetricSums::new(n_cold);
    let mut oracle = MetricSums::new(n_cold);
    let mut random = MetricSums::new(n_cold);
    let pop_ranking = rank(&mut |c| cold_pop[c as usize]);
    let oracle_ranking = rank(&mut |c| true_counts[c as usize]);
    const RANDOM_RUNS: u64 = 5;
    let mut rng = Rng::seed_from_u64(a.seed ^ 0x7261_6e64);
    let mut shuffled: Vec<u32> = (0..n_cold as u32).collect();
    for (u, items) in &eval {
        let x = als.user_factors().row(*u as usize);
        let ranking = rank(&mut |c| {
            cold_factors[c as usize]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum()
        });
        hybrid.add(&ranking, items);
        popular.add(&pop_ranking, items);
        oracle.add(&oracle_ranking, items);
        for _ in 0..RANDOM_RUNS {
            shuffle(&mut shuffled, &mut rng);
            random.add(&shuffled[..K_MAX.min(n_cold)], items);
        }
    }
    let result = json!({
        "library": "bespoke",
        "bespoke_version": env!("CARGO_PKG_VERSION"),
        "protocol": format!("{:.0}% of items held out entirely (seed {}); their rows are the test; each test user ranks the held-out items only", frac * 100.0, a.seed),
        "data": {
            "file": data.display().to_string(), "items_file": items_path.display().to_string(),
            "items": all_items.len(), "cold_items": n_cold, "items_without_content": without_content,
            "train_rows": train.len(), "test_rows": test.len(), "n_eval_users": eval.len(),
            "content_features": vocab.dim(),
        },
        "params": {"als": {"factors": a.factors, "iterations": a.iterations, "regularization": a.regularization,
            "alpha": a.alpha, "cg_steps": a.cg_steps, "seed": a.seed},
            "content": {"lambda": a.content_lambda, "max_features": a.content_max_features}},
        "load_s": (load_s * 1e3).round() / 1e3,
        "fit_s": {"als": (als_s * 1e3).round() / 1e3, "content": (content_s * 1e3).round() / 1e3},
        "metrics": {
            "hybrid": metrics_json(&hybrid),
            "popular_from_content": metrics_json(&popular),
            "random": metrics_json(&random),
            "popular_true_counts": metrics_json(&oracle),
        },
    });
    if a.json {
        println!("{result}");
    } else {
        println!(
            "{} of {} items held out, {} users evaluated on them",
            n_cold,
            all_items.len(),
            eval.len()
        );
        println!(
            "{:<22} {:>9} {:>9} {:>9}",
            "ranking of cold items", "ndcg@10", "recall@20", "ndcg@100"
        );
        for name in [
            "hybrid",
            "popular_from_content",
            "random",
            "popular_true_counts",
        ] {
            let m = &result["metrics"][name];
            println!(
                "{:<22} {:>9.4} {:>9.4} {:>9.4}",
                name,
                m["ndcg@10"].as_f64().unwrap_or(0.0),
                m["recall@20"].as_f64().unwrap_or(0.0),
                m["ndcg@100"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if let Some(out) = &a.out {
        std::fs::write(out, format!("{result}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
