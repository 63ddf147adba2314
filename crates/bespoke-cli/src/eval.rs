//! `bespoke eval`: offline evaluation on the anchors' files (`--train/--test` from
//! `../shared/anchors/split.py`) or on one interaction file split here (`--data --split`), with
//! exactly the metrics of `implicit_bench.py` and, with `--json`, its output keys, so that the
//! two can be compared by a script.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use bespoke_algo::eval::{K_MAX, MetricSums, Row, temporal_split};
use bespoke_algo::{
    Als, AlsParams, Bpr, BprParams, Csr, Ease, ItemKnn, ItemScorer, Rng, ScoreScratch, Scored,
    Similarity, TopK,
};
use clap::Args;
use rayon::prelude::*;
use serde_json::{Value, json};

#[derive(Debug, Clone, Args)]
pub(crate) struct EvalArgs {
    /// Training rows (`user_id,item_id,weight,timestamp`), as split.py writes them.
    #[arg(long, requires = "test", conflicts_with = "data")]
    pub(crate) train: Option<PathBuf>,
    /// Test rows, as split.py writes them.
    #[arg(long, requires = "train")]
    pub(crate) test: Option<PathBuf>,
    /// One interaction file to split here (see --split).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// How to split --data: `temporal:FRACTION` (split.py's per-user rule, 5 rows minimum).
    #[arg(long, default_value = "temporal:0.2")]
    pub(crate) split: String,
    /// Models to evaluate, comma-separated: als, bpr, ease, cosine (or knn), bm25, popular (or pop).
    #[arg(long, value_delimiter = ',', default_value = "als")]
    pub(crate) models: Vec<String>,
    /// iALS factors.
    #[arg(long, default_value_t = 64)]
    pub(crate) factors: usize,
    /// iALS iterations.
    #[arg(long, default_value_t = 15)]
    pub(crate) iterations: usize,
    /// iALS regularisation.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) regularization: f32,
    /// iALS confidence slope: c = 1 + alpha * weight.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) alpha: f32,
    /// iALS conjugate gradient steps.
    #[arg(long, default_value_t = 3)]
    pub(crate) cg_steps: usize,
    /// Neighbours per item for cosine and bm25.
    #[arg(long, default_value_t = 100)]
    pub(crate) knn_k: usize,
    /// BPR's SGD learning rate (BPR also uses --factors and --seed).
    #[arg(long, default_value_t = 0.01)]
    pub(crate) bpr_learning_rate: f32,
    /// BPR's L2 weight.
    #[arg(long, default_value_t = 0.01)]
    pub(crate) bpr_regularization: f32,
    /// BPR's epochs.
    #[arg(long, default_value_t = 100)]
    pub(crate) bpr_iterations: usize,
    /// EASE's L2 weight λ.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) ease_lambda: f64,
    /// Most items EASE accepts (its matrix is dense: items² × 8 bytes while fitting).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) ease_max_items: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Seed of the iALS initialisation and of the latency sample.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Users sampled for the single-user latency.
    #[arg(long, default_value_t = 1000)]
    pub(crate) latency_users: usize,
    /// Results per single-user call.
    #[arg(long, default_value_t = 20)]
    pub(crate) latency_n: usize,
    /// Item content for the cold-item evaluation: a JSONL file of items (`bespoke export
    /// items`' format, keys equal to the data's item ids) or MovieLens' `u.item`.
    #[arg(long)]
    pub(crate) items: Option<PathBuf>,
    /// Format of --items.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub(crate) items_format: crate::cold::ItemsFormat,
    /// Cold-item evaluation: hold out this share of items entirely (all their rows go to
    /// test) and rank only them for each user, with the hybrid content model, popularity
    /// predicted from content, and random. Needs --data and --items.
    #[arg(long)]
    pub(crate) cold_items: Option<f64>,
    /// The hybrid model's ridge weight λ (content → item factors).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) content_lambda: f64,
    /// Most sparse content features (categories, words, attributes) the hybrid model keeps.
    #[arg(long, default_value_t = 5000)]
    pub(crate) content_max_features: usize,
    /// `bespoke tune` only: configurations to train and validate (the search budget).
    #[arg(long, default_value_t = 12)]
    pub(crate) budget: usize,
    /// Print one JSON object per model (implicit_bench.py's keys) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the JSON (one object per line) to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

pub(crate) fn read_rows(path: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for_each_row(path, |r| rows.push(r))?;
    Ok(rows)
}

/// Streams an interaction CSV into the compact form: dense ids in order of first appearance
/// (`u32`), `f32` weights. Returns the id maps as well, to map the test file.
struct Columns {
    users: HashMap<i64, u32>,
    items: HashMap<i64, u32>,
    rows: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f32>,
    /// The one weight every row had so far (then `vals` stays empty).
    uniform: Option<f32>,
}

/// Calls `f` with every row of a `user_id,item_id,weight,timestamp` CSV; returns the count.
fn for_each_row(path: &Path, mut f: impl FnMut(Row)) -> anyhow::Result<usize> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .buffer_capacity(1 << 20)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let header = reader.headers()?.clone();
    let col = |name: &str| {
        header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column {name:?} (expected user_id,item_id,weight,timestamp)",
                path.display()
            )
        })
    };
    let (cu, ci, cw, ct) = (
        col("user_id")?,
        col("item_id")?,
        col("weight")?,
        col("timestamp")?,
    );
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    while reader.read_byte_record(&mut rec)? {
        let line = rec.position().map_or(0, |p| p.line());
        let field = |i: usize| -> anyhow::Result<&str> {
            std::str::from_utf8(rec.get(i).unwrap_or_default())
                .with_context(|| format!("{}: line {line} is not UTF-8", path.display()))
        };
        let bad = || {
            format!(
                "{}: line {line}: expected user_id,item_id,weight,timestamp numbers",
                path.display()
            )
        };
        f(Row {
            user: field(cu)?.parse().with_context(bad)?,
            item: field(ci)?.parse().with_context(bad)?,
            weight: field(cw)?.parse().with_context(bad)?,
            timestamp: field(ct)?.parse().with_context(bad)?,
        });
        n += 1;
    }
    Ok(n)
}

/// The `--train/--test` path, built for memory: the weight matrix is built straight from
/// compact columns, and the raw rows are never held.
fn load_split(train: &Path, test: &Path) -> anyhow::Result<Data> {
    let mut c = Columns {
        users: HashMap::new(),
        items: HashMap::new(),
        rows: Vec::new(),
        cols: Vec::new(),
        vals: Vec::new(),
        uniform: None,
    };
    let train_rows = for_each_row(
        train,
        |Row {
             user: u,
             item: i,
             weight,
             ..
         }| {
            let w = weight as f32;
            let next = c.users.len() as u32;
            let u = *c.users.entry(u).or_insert(next);
            let next = c.items.len() as u32;
            let i = *c.items.entry(i).or_insert(next);
            c.rows.push(u);
            c.cols.push(i);
            // Binary data (one weight for every row) keeps no weight column.
            match c.uniform {
                None if c.rows.len() == 1 => c.uniform = Some(w),
                Some(u) if u.to_bits() == w.to_bits() => {}
                Some(u) => {
                    c.vals = vec![u; c.rows.len() - 1];
                    c.vals.push(w);
                    c.uniform = None;
                }
                None => c.vals.push(w),
            }
        },
    )?;
    let weights = match c.uniform {
        Some(w) => Csr::from_fn(
            c.users.len(),
            c.items.len(),
            c.rows.len(),
            |k| (c.rows[k], c.cols[k], w),
            false,
        ),
        None => Csr::from_columns(
            c.users.len(),
            c.items.len(),
            &c.rows,
            &c.cols,
            &c.vals,
            false,
        ),
    };
    drop((
        std::mem::take(&mut c.rows),
        std::mem::take(&mut c.cols),
        std::mem::take(&mut c.vals),
    ));
    let mut by_user: std::collections::BTreeMap<u32, Vec<u32>> = std::collections::BTreeMap::new();
    let test_rows = for_each_row(
        test,
        |Row {
             user: u, item: i, ..
         }| {
            if let (Some(&u), Some(&i)) = (c.users.get(&u), c.items.get(&i)) {
                by_user.entry(u).or_default().push(i);
            }
        },
    )?;
    let mut test_pairs = 0;
    let eval = by_user
        .into_iter()
        .map(|(u, mut is)| {
            is.sort_unstable();
            is.dedup();
            test_pairs += is.len();
            (u, is)
        })
        .collect();
    Ok(Data {
        n_users: c.users.len(),
        n_items: c.items.len(),
        weights,
        eval,
        train_rows,
        test_rows,
        test_pairs,
    })
}

/// Dense ids as `np.unique` would give them (sorted original ids), the weight matrix, and the
/// test items of every evaluated user.
struct Data {
    n_users: usize,
    n_items: usize,
    weights: Csr,
    /// `(user index, sorted test item indices)`, users in index order.
    eval: Vec<(u32, Vec<u32>)>,
    train_rows: usize,
    test_rows: usize,
    test_pairs: usize,
}

fn build(train: &[Row], test: &[Row]) -> Data {
    let mut users: Vec<i64> = train.iter().map(|r| r.user).collect();
    users.sort_unstable();
    users.dedup();
    let mut items: Vec<i64> = train.iter().map(|r| r.item).collect();
    items.sort_unstable();
    items.dedup();
    let uidx: HashMap<i64, u32> = users
        .iter()
        .enumerate()
        .map(|(i, &u)| (u, i as u32))
        .collect();
    let iidx: HashMap<i64, u32> = items
        .iter()
        .enumerate()
        .map(|(i, &x)| (x, i as u32))
        .collect();
    let triples: Vec<(u32, u32, f32)> = train
        .iter()
        .map(|r| (uidx[&r.user], iidx[&r.item], r.weight as f32))
        .collect();
    let weights = Csr::from_triples(users.len(), items.len(), &triples, false);
    let mut by_user: std::collections::BTreeMap<u32, Vec<u32>> = std::collections::BTreeMap::new();
    for r in test {
        if let (Some(&u), Some(&i)) = (uidx.get(&r.user), iidx.get(&r.item)) {
            by_user.entry(u).or_default().push(i);
        }
    }
    let mut test_pairs = 0;
    let eval = by_user
        .into_iter()
        .map(|(u, mut is)| {
            is.sort_unstable();
            is.dedup();
            test_pairs += is.len();
            (u, is)
        })
        .collect();
    Data {
        n_users: users.len(),
        n_items: items.len(),
        weights,
        eval,
        train_rows: train.len(),
        test_rows: test.len(),
        test_pairs,
    }
}

/// A fitted model, as the evaluation sees it.
enum Model {
    Als(Als, ItemScorer),
    Bpr(Bpr, ItemScorer),
    Ease(Ease),
    Knn(ItemKnn),
    Popular(Vec<f32>),
}

/// Per-worker scratch for recommending.
struct Scratch {
    scoring: ScoreScratch,
    scores: Vec<f32>,
    touched: Vec<u32>,
    top: TopK,
}

impl Model {
    fn name(&self) -> &'static str {
        match self {
            Model::Als(..) => "als",
            Model::Bpr(..) => "bpr",
            Model::Ease(_) => "ease",
            Model::Knn(k) if matches!(k.similarity(), Similarity::Cosine) => "cosine",
            Model::Knn(_) => "bm25",
            Model::Popular(_) => "pop",
        }
    }

    /// Top `n` for user `u` of the training matrix, excluding its training items.
    fn recommend(&self, weights: &Csr, u: usize, n: usize, s: &mut Scratch) -> Vec<Scored> {
        let (seen, w) = weights.row(u);
        let keep = |i: u32| seen.binary_search(&i).is_err();
        match self {
            Model::Als(m, scorer) => scorer.top_k(m.user_factors().row(u), n, keep, &mut s.scoring),
            Model::Bpr(m, scorer) => {
                scorer.top_k(&m.user_vector_with_bias(u), n, keep, &mut s.scoring)
            }
            Model::Ease(m) => {
                let history: Vec<(u32, f32)> =
                    seen.iter().copied().zip(w.iter().copied()).collect();
                m.recommend(&history, n, keep, &mut s.scores, &mut s.top)
            }
            Model::Knn(k) => {
                let history: Vec<(u32, f32)> =
                    seen.iter().copied().zip(w.iter().copied()).collect();
                k.recommend(&history, n, keep, &mut s.scores, &mut s.touched, &mut s.top)
            }
            Model::Popular(counts) => {
                s.top.reset(n);
                for (i, &c) in counts.iter().enumerate() {
                    if keep(i as u32) {
                        s.top.push(i as u32, c);
                    }
                }
                s.top.drain_sorted()
            }
        }
    }
}

fn fit(name: &str, a: &EvalArgs, weights: &Csr) -> anyhow::Result<(Model, Value)> {
    Ok(match name {
        "als" => {
            let params = AlsParams {
                factors: a.factors,
                iterations: a.iterations,
                regularization: a.regularization,
                alpha: a.alpha,
                cg_steps: a.cg_steps,
                seed: a.seed,
                compute_loss: false,
            };
            let p = json!({"factors": a.factors, "iterations": a.iterations, "regularization": a.regularization,
                "alpha": a.alpha, "cg_steps": a.cg_steps, "threads": a.threads, "seed": a.seed});
            let model = Als::fit(weights, params, |_| {});
            let scorer = ItemScorer::new(model.item_factors().clone());
            (Model::Als(model, scorer), p)
        }
        "bpr" => {
            let params = BprParams {
                factors: a.factors,
                learning_rate: a.bpr_learning_rate,
                regularization: a.bpr_regularization,
                iterations: a.bpr_iterations,
                seed: a.seed,
            };
            let model = Bpr::fit(weights, params);
            let scorer = ItemScorer::new(model.item_factors_with_bias());
            (
                Model::Bpr(model, scorer),
                json!({"factors": a.factors, "learning_rate": a.bpr_learning_rate,
                    "regularization": a.bpr_regularization, "iterations": a.bpr_iterations,
                    "seed": a.seed, "threads": 1}),
            )
        }
        "ease" => (
            Model::Ease(Ease::fit(weights, a.ease_lambda, a.ease_max_items)?),
            json!({"lambda": a.ease_lambda, "threads": a.threads}),
        ),
        "cosine" | "knn" => (
            Model::Knn(ItemKnn::fit(weights, Similarity::Cosine, a.knn_k)),
            json!({"knn_k": a.knn_k, "threads": a.threads}),
        ),
        "bm25" => (
            Model::Knn(ItemKnn::fit(
                weights,
                Similarity::Bm25 { k1: 1.2, b: 0.75 },
                a.knn_k,
            )),
            json!({"knn_k": a.knn_k, "k1": 1.2, "b": 0.75, "threads": a.threads}),
        ),
        "pop" | "popular" => {
            let mut counts = vec![0f32; weights.n_cols()];
            for u in 0..weights.n_rows() {
                for &i in weights.row(u).0 {
                    counts[i as usize] += 1.0;
                }
            }
            (Model::Popular(counts), json!({"threads": a.threads}))
        }
        other => {
            bail!(
                "unknown model {other:?}: use als, bpr, ease, cosine (knn), bm25 or popular (pop)"
            )
        }
    })
}

pub(crate) fn round5(v: f64) -> f64 {
    (v * 1e5).round() / 1e5
}

fn evaluate(
    name: &str,
    a: &EvalArgs,
    data: &Data,
    load_s: f64,
    build_s: f64,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let (model, params) = fit(name, a, &data.weights)?;
    let fit_s = started.elapsed().as_secs_f64();

    let scratch = || Scratch {
        scoring: ScoreScratch::default(),
        scores: vec![0.0; data.n_items],
        touched: Vec::new(),
        top: TopK::new(K_MAX),
    };
    let started = Instant::now();
    let sums = data
        .eval
        .par_iter()
        .with_min_len(64)
        .fold(
            || (MetricSums::new(data.n_items), scratch()),
            |(mut sums, mut s), (u, test)| {
                let ranking: Vec<u32> = model
                    .recommend(&data.weights, *u as usize, K_MAX, &mut s)
                    .iter()
                    .map(|x| x.idx)
                    .collect();
                sums.add(&ranking, test);
                (sums, s)
            },
        )
        .map(|(sums, _)| sums)
        .reduce(
            || MetricSums::new(data.n_items),
            |mut a, b| {
                a.merge(&b);
                a
            },
        );
    let batch_s = started.elapsed().as_secs_f64();

    // Single-user latency: users drawn uniformly (seeded) from the evaluated users, 50 warm-up
    // calls, then one timed call each, as implicit_bench.py does.
    let mut rng = Rng::seed_from_u64(a.seed + 1);
    let sample: Vec<usize> = (0..a.latency_users.max(1))
        .map(|_| data.eval[rng.below(data.eval.len() as u64) as usize].0 as usize)
        .collect();
    let mut s = scratch();
    for &u in sample.iter().take(50) {
        std::hint::black_box(model.recommend(&data.weights, u, a.latency_n, &mut s));
    }
    let mut lat: Vec<f64> = sample
        .iter()
        .map(|&u| {
            let t = Instant::now();
            std::hint::black_box(model.recommend(&data.weights, u, a.latency_n, &mut s));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;

    let metrics: serde_json::Map<String, Value> = sums
        .means()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(round5(v))))
        .collect();
    let mut out = json!({
        "library": "bespoke",
        "bespoke_version": env!("CARGO_PKG_VERSION"),
        "model": model.name(),
        "params": params,
        "data": {
            "train": a.train.as_ref().or(a.data.as_ref()).map(|p| p.display().to_string()),
            "test": a.test.as_ref().map(|p| p.display().to_string()),
            "train_rows": data.train_rows, "test_rows": data.test_rows,
            "n_users": data.n_users, "n_items": data.n_items, "train_nnz": data.weights.nnz(),
            "n_eval_users": data.eval.len(), "test_pairs_eval": data.test_pairs,
        },
        "load_s": round3(load_s),
        "build_s": round3(build_s),
        "fit_s": round3(fit_s),
        "batch_recommend": {"users": data.eval.len(), "n": K_MAX, "seconds": round3(batch_s),
            "users_per_s": (data.eval.len() as f64 / batch_s * 10.0).round() / 10.0},
        "metrics": metrics,
        "single_user_latency_us": {"n_calls": lat.len(), "n": a.latency_n,
            "median": round1(pct(0.5)), "p90": round1(pct(0.9)), "p99": round1(pct(0.99)), "mean": round1(mean)},
        "peak_rss_mb": crate::bench::peak_rss_mib().map(round1),
        "cpu_count": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    if let Model::Als(..) = model {
        out["fit_s_per_iteration"] =
            json!((fit_s / a.iterations.max(1) as f64 * 1e4).round() / 1e4);
    }
    Ok(out)
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub(crate) fn run(args: &EvalArgs) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build_global()
        .context("starting the worker threads")?;
    if args.cold_items.is_some() {
        return crate::cold::run(args);
    }
    let started = Instant::now();
    if let (Some(train), Some(test)) = (&args.train, &args.test) {
        let data = load_split(train, test)?;
        // Loading and building are one streaming pass here.
        let load_s = started.elapsed().as_secs_f64();
        return evaluate_all(args, &data, load_s, 0.0);
    }
    let (train, test) = match (&args.train, &args.test, &args.data) {
        (None, None, Some(data)) => {
            let frac: f64 = args
                .split
                .strip_prefix("temporal:")
                .and_then(|f| f.parse().ok())
                .filter(|f: &f64| *f > 0.0 && *f < 1.0)
                .with_context(|| {
                    format!(
                        "--split {:?}: expected temporal:FRACTION with 0 < FRACTION < 1",
                        args.split
                    )
                })?;
            let (train, test, _) = temporal_split(read_rows(data)?, frac, 5);
            (train, test)
        }
        _ => bail!("give --train and --test, or --data"),
    };
    let load_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let data = build(&train, &test);
    drop((train, test));
    let build_s = started.elapsed().as_secs_f64();
    evaluate_all(args, &data, load_s, build_s)
}

fn evaluate_all(args: &EvalArgs, data: &Data, load_s: f64, build_s: f64) -> anyhow::Result<()> {
    if data.eval.is_empty() {
        bail!("no test rows of users and items known from training: nothing to evaluate");
    }
    let mut lines = Vec::new();
    for name in &args.models {
        let result = evaluate(name.trim(), args, data, load_s, build_s)?;
        if args.json {
            println!("{result}");
        }
        lines.push(result);
    }
    if !args.json {
        print_table(&lines);
    }
    if let Some(out) = &args.out {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn print_table(results: &[Value]) {
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>11} {:>8} {:>12}",
        "model",
        "recall@20",
        "recall@50",
        "ndcg@10",
        "ndcg@100",
        "coverage@20",
        "fit s",
        "latency µs"
    );
    for r in results {
        let m = &r["metrics"];
        println!(
            "{:<8} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>11.4} {:>8.2} {:>12.1}",
            r["model"].as_str().unwrap_or("?"),
            m["recall@20"].as_f64().unwrap_or(0.0),
            m["recall@50"].as_f64().unwrap_or(0.0),
            m["ndcg@10"].as_f64().unwrap_or(0.0),
            m["ndcg@100"].as_f64().unwrap_or(0.0),
            m["coverage@20"].as_f64().unwrap_or(0.0),
            r["fit_s"].as_f64().unwrap_or(0.0),
            r["single_user_latency_us"]["median"]
                .as_f64()
                .unwrap_or(0.0),
        );
    }
}

/// One random configuration of `model` (seeded), applied to a copy of `base`.
fn sample_config(model: &str, base: &EvalArgs, rng: &mut Rng) -> (EvalArgs, Value) {
    let mut a = base.clone();
    let log_uniform =
        |rng: &mut Rng, lo: f64, hi: f64| (lo.ln() + rng.f64() * (hi / lo).ln()).exp();
    let pick = |rng: &mut Rng, xs: &[usize]| xs[rng.below(xs.len() as u64) as usize];
    let params = match model {
        "als" => {
            a.factors = pick(rng, &[32, 64, 128]);
            a.regularization = log_uniform(rng, 0.01, 100.0) as f32;
            a.alpha = [0.5f32, 1.0, 2.0, 5.0, 10.0][rng.below(5) as usize];
            json!({"factors": a.factors, "regularization": a.regularization, "alpha": a.alpha, "iterations": a.iterations})
        }
        "ease" => {
            a.ease_lambda = log_uniform(rng, 10.0, 3000.0);
            json!({"lambda": a.ease_lambda})
        }
        "bpr" => {
            a.factors = pick(rng, &[32, 64, 128]);
            a.bpr_learning_rate = [0.01f32, 0.02, 0.05, 0.1][rng.below(4) as usize];
            a.bpr_regularization = [0.001f32, 0.01, 0.05][rng.below(3) as usize];
            json!({"factors": a.factors, "learning_rate": a.bpr_learning_rate, "regularization": a.bpr_regularization})
        }
        _ => {
            a.knn_k = pick(rng, &[25, 50, 100, 200, 400]);
            json!({"knn_k": a.knn_k})
        }
    };
    (a, params)
}

/// `bespoke tune`: random search over the model types and their hyperparameters. Each of
/// `--budget` configurations (model types in turn) is trained on the training data minus its
/// latest 20% per user (split.py's rule) and scored on that held-out tail by NDCG@10; the best
/// is retrained on all the training data and reported on the test data, with implicit_bench's
/// keys plus the trials. The test data never influences the choice.
pub(crate) fn tune(args: &EvalArgs) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build_global()
        .context("starting the worker threads")?;
    if args.budget == 0 {
        bail!("--budget must be at least 1");
    }
    let started = Instant::now();
    let (train, test) = match (&args.train, &args.test, &args.data) {
        (Some(train), Some(test), _) => (read_rows(train)?, read_rows(test)?),
        (None, None, Some(data)) => {
            let (train, test, _) = temporal_split(read_rows(data)?, 0.2, 5);
            (train, test)
        }
        _ => bail!("give --train and --test, or --data"),
    };
    let load_s = started.elapsed().as_secs_f64();
    let (fit_rows, valid_rows, _) = temporal_split(train.clone(), 0.2, 5);
    let valid = build(&fit_rows, &valid_rows);
    if valid.eval.is_empty() {
        bail!("the training data has no user with 5 or more rows to validate on");
    }
    let mut rng = Rng::seed_from_u64(args.seed ^ 0x7075_6e65);
    let bar = indicatif::ProgressBar::new(args.budget as u64).with_style(
        indicatif::ProgressStyle::with_template("tuning {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut trials = Vec::with_capacity(args.budget);
    let mut best: Option<(f64, String, EvalArgs)> = None;
    for t in 0..args.budget {
        let model = args.models[t % args.models.len()].trim().to_owned();
        let (mut a, params) = sample_config(&model, args, &mut rng);
        a.latency_users = 1;
        let result = evaluate(&model, &a, &valid, 0.0, 0.0)?;
        let ndcg = result["metrics"]["ndcg@10"].as_f64().unwrap_or(0.0);
        bar.set_message(format!("{model} {ndcg:.4}"));
        bar.inc(1);
        trials.push(
            json!({"model": model, "params": params, "validation_ndcg@10": ndcg,
            "fit_s": result["fit_s"]}),
        );
        if best.as_ref().is_none_or(|b| ndcg > b.0) {
            best = Some((ndcg, model, a));
        }
    }
    bar.finish_and_clear();
    let (best_ndcg, model, mut a) = best.expect("budget >= 1");
    a.latency_users = args.latency_users;
    let started = Instant::now();
    let data = build(&train, &test);
    let build_s = started.elapsed().as_secs_f64();
    let mut result = evaluate(&model, &a, &data, load_s, build_s)?;
    result["tuning"] = json!({
        "budget": args.budget,
        "search": "random",
        "validation": "latest 20% of each training user's rows (5 or more), split.py's rule",
        "best": {"model": model, "validation_ndcg@10": best_ndcg, "params": trials.iter()
            .filter(|t| t["model"] == model.as_str() && t["validation_ndcg@10"] == json!(best_ndcg))
            .map(|t| t["params"].clone()).next()},
        "trials": trials,
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{:<7} {:>14}  params", "model", "valid NDCG@10");
        for t in result["tuning"]["trials"].as_array().into_iter().flatten() {
            println!(
                "{:<7} {:>14.5}  {}",
                t["model"].as_str().unwrap_or(""),
                t["validation_ndcg@10"].as_f64().unwrap_or(0.0),
                t["params"]
            );
        }
        println!("\nbest: {model} (validation NDCG@10 {best_ndcg:.5}), on the test data:");
        print_table(std::slice::from_ref(&result));
    }
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{result}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
