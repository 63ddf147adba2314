//! `bespoke eval`: offline evaluation on the anchors' files (`--train/--test` from
//! `../shared/anchors/split.py`) or on one interaction file split here (`--data --split`), with
//! exactly the metrics of `implicit_bench.py` and, with `--json`, its output keys, so that the
//! two can be compared by a script.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use bespoke_algo::eval::{K_MAX, Row, temporal_split};
use bespoke_algo::tune::{self, BLEND_CANDIDATES, Blend, Config, Fitted, Scratch, SearchParams};
use bespoke_algo::{
    AlsParams, BprParams, ContentParams, Csr, EaseParams, KnnParams, KnnSimilarity, ModelKind,
    Recency, Rng, Scored,
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
    /// Models, comma-separated: als, bpr, ease, cosine (or knn), bm25, rp3, popular (or pop),
    /// or for `eval` a blend of two such as `als+ease` (see --blend-weight). Default: `eval`
    /// evaluates als; `tune` searches every family that fits (als, ease, bm25, cosine, rp3,
    /// bpr; EASE only within --memory-budget-gb).
    #[arg(long, value_delimiter = ',')]
    pub(crate) models: Vec<String>,
    /// iALS factors.
    #[arg(long, default_value_t = AlsParams::default().factors)]
    pub(crate) factors: usize,
    /// iALS iterations.
    #[arg(long, default_value_t = AlsParams::default().iterations)]
    pub(crate) iterations: usize,
    /// iALS regularisation.
    #[arg(long, default_value_t = AlsParams::default().regularization)]
    pub(crate) regularization: f32,
    /// iALS confidence slope: c = 1 + alpha * weight.
    #[arg(long, default_value_t = AlsParams::default().alpha)]
    pub(crate) alpha: f32,
    /// iALS conjugate gradient steps.
    #[arg(long, default_value_t = AlsParams::default().cg_steps)]
    pub(crate) cg_steps: usize,
    /// Neighbours per item for cosine and bm25.
    #[arg(long, default_value_t = KnnParams::default().k)]
    pub(crate) knn_k: usize,
    /// RP3beta's exponent of the transition probabilities (rp3 also uses --knn-k).
    #[arg(long, default_value_t = KnnParams::default().rp3_alpha)]
    pub(crate) rp3_alpha: f32,
    /// RP3beta's popularity penalty.
    #[arg(long, default_value_t = KnnParams::default().rp3_beta)]
    pub(crate) rp3_beta: f32,
    /// BPR's SGD learning rate (BPR also uses --factors and --seed).
    #[arg(long, default_value_t = BprParams::default().learning_rate)]
    pub(crate) bpr_learning_rate: f32,
    /// BPR's L2 weight.
    #[arg(long, default_value_t = BprParams::default().regularization)]
    pub(crate) bpr_regularization: f32,
    /// BPR's epochs.
    #[arg(long, default_value_t = BprParams::default().iterations)]
    pub(crate) bpr_iterations: usize,
    /// EASE's L2 weight λ.
    #[arg(long, default_value_t = EaseParams::default().lambda)]
    pub(crate) ease_lambda: f64,
    /// Most items EASE accepts (its matrix is dense: items² × 8 bytes while fitting).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) ease_max_items: usize,
    /// `bespoke tune` only: memory EASE's dense matrices may take, in GB (two items × items
    /// matrices of f64 while fitting); without --models, EASE is left out of the search above it.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) memory_budget_gb: f64,
    /// Weight a user's latest interactions up: an interaction followed by `age` later ones of
    /// the same user counts `floor + (1 - floor) * 2^(-age / half_life)`; 0 turns it off.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) recency_half_life: f32,
    /// The weight the oldest interactions keep under --recency-half-life.
    #[arg(long, default_value_t = 0.25)]
    pub(crate) recency_floor: f32,
    /// Train iALS propensity-weighted (BPR samples positive pairs uniformly and ignores
    /// weights): each interaction's weight
    /// divided by its item's observation propensity (a power law of training popularity,
    /// --propensity-eta), at most --propensity-max-factor times (docs/fairness.md).
    #[arg(long)]
    pub(crate) propensity_weighted: bool,
    /// The exponent η of the propensity power law p_i = (n_i / max n)^η.
    #[arg(long, default_value_t = bespoke_algo::debias::DEFAULT_ETA)]
    pub(crate) propensity_eta: f64,
    /// The most an interaction's weight grows under --propensity-weighted.
    #[arg(long, default_value_t = bespoke_algo::debias::DEFAULT_MAX_FACTOR)]
    pub(crate) propensity_max_factor: f64,
    /// Also report inverse-propensity-weighted metrics (IPS and self-normalized SNIPS of
    /// ndcg@10 and recall@10; Yang et al. 2018), with the same propensities.
    #[arg(long)]
    pub(crate) ips: bool,
    /// `bespoke tune` only: do not search the recency weighting (keep --recency-*).
    #[arg(long)]
    pub(crate) no_recency_search: bool,
    /// `bespoke tune` only: share of --budget drawn near the best configurations found so far
    /// (the rest is spread over the whole search space first).
    #[arg(long, default_value_t = tune::LOCAL_SHARE)]
    pub(crate) local_share: f64,
    /// Weight of the first model of a blend (`a+b`); the second gets the rest. Each model's
    /// scores are divided by the user's top score before they are summed.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) blend_weight: f32,
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
    #[arg(long, default_value_t = ContentParams::default().lambda)]
    pub(crate) content_lambda: f64,
    /// Most sparse content features (categories, words, attributes) the hybrid model keeps.
    #[arg(long, default_value_t = ContentParams::default().max_features)]
    pub(crate) content_max_features: usize,
    /// `bespoke tune` only: configurations sampled and validated (the search budget); iterative
    /// models start with a quarter of their iterations and the best third of each type is
    /// trained again in full.
    #[arg(long, default_value_t = tune::DEFAULT_BUDGET)]
    pub(crate) budget: usize,
    /// Print one JSON object per model (implicit_bench.py's keys) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the JSON (one object per line) to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

impl EvalArgs {
    fn recency(&self) -> Recency {
        if self.recency_half_life > 0.0 {
            Recency {
                half_life: self.recency_half_life,
                floor: self.recency_floor,
            }
        } else {
            Recency::OFF
        }
    }
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
        log: Vec::new(),
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
    /// Every training row `(user, item, weight, time)`, kept to re-weight by recency (empty on
    /// the streaming `--train/--test` path, which runs without recency).
    log: Vec<(u32, u32, f32, i64)>,
}

impl Data {
    /// Observation propensities from training popularity (`debias::propensities_from_popularity`).
    fn propensities(&self, eta: f64) -> Vec<f64> {
        bespoke_algo::debias::propensities_from_popularity(
            &bespoke_algo::debias::item_counts(&self.weights),
            eta,
        )
    }

    /// The training matrix with `recency` applied (the plain one when it is off).
    fn matrix(&self, recency: Recency) -> std::borrow::Cow<'_, Csr> {
        if !recency.is_on() || self.log.is_empty() {
            return std::borrow::Cow::Borrowed(&self.weights);
        }
        let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); self.n_users];
        for (k, r) in self.log.iter().enumerate() {
            by_user[r.0 as usize].push(k);
        }
        let mut factor = vec![1.0f32; self.log.len()];
        for rows in &by_user {
            let times: Vec<i64> = rows.iter().map(|&k| self.log[k].3).collect();
            for (&k, f) in rows.iter().zip(recency.factors(&times)) {
                factor[k] = f;
            }
        }
        let triples: Vec<(u32, u32, f32)> = self
            .log
            .iter()
            .zip(&factor)
            .map(|(r, f)| (r.0, r.1, r.2 * f))
            .collect();
        std::borrow::Cow::Owned(Csr::from_triples(
            self.n_users,
            self.n_items,
            &triples,
            false,
        ))
    }
}

/// Dense ids as `np.unique` gives them: the sorted distinct values, and value → index.
pub(crate) fn dense_ids(values: impl Iterator<Item = i64>) -> (Vec<i64>, HashMap<i64, u32>) {
    let mut sorted: Vec<i64> = values.collect();
    sorted.sort_unstable();
    sorted.dedup();
    let index = sorted
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, i as u32))
        .collect();
    (sorted, index)
}

/// The anchors' metrics of `sums`, rounded to five decimals, as a JSON object.
pub(crate) fn metrics_json(sums: &bespoke_algo::eval::MetricSums) -> Value {
    sums.means()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(round5(v))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn build(train: &[Row], test: &[Row]) -> Data {
    let (users, uidx) = dense_ids(train.iter().map(|r| r.user));
    let (items, iidx) = dense_ids(train.iter().map(|r| r.item));
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
        log: train
            .iter()
            .map(|r| (uidx[&r.user], iidx[&r.item], r.weight as f32, r.timestamp))
            .collect(),
    }
}

/// What `eval` trains: one model, or a blend of two (from `tune`), each with the recency
/// weighting of its training data.
#[derive(Debug, Clone)]
enum Choice {
    Single(Config, Recency),
    Blend((Config, Recency), (Config, Recency), Blend),
}

/// The anchors' name of a model type.
fn anchor_name(kind: &str) -> &str {
    if ModelKind::Popular == kind {
        "pop"
    } else {
        kind
    }
}

fn config_json(c: &Config, r: Recency) -> Value {
    let mut v = serde_json::to_value(c).expect("plain data");
    if r.is_on() {
        v["recency"] = serde_json::to_value(r).expect("plain data");
    }
    v
}

impl Choice {
    fn name(&self) -> String {
        match self {
            Choice::Single(c, _) => anchor_name(c.kind()).to_owned(),
            Choice::Blend((a, _), (b, _), _) => format!("blend:{}+{}", a.kind(), b.kind()),
        }
    }

    fn params(&self, a: &EvalArgs) -> Value {
        let mut p = match self {
            Choice::Single(c, r) => config_json(c, *r),
            Choice::Blend((x, rx), (y, ry), blend) => {
                json!({"models": [config_json(x, *rx), config_json(y, *ry)],
                "weight": (blend.weight as f64 * 100.0).round() / 100.0})
            }
        };
        p["threads"] = json!(a.threads);
        p["seed"] = json!(a.seed);
        p
    }
}

/// A trained [`Choice`]: one or two models, each with its training matrix when recency
/// re-weighted it, and the blend of two.
struct Trained {
    parts: Vec<(Fitted, Option<Csr>)>,
    blend: Option<Blend>,
}

impl Trained {
    fn fit(choice: &Choice, a: &EvalArgs, data: &Data) -> anyhow::Result<Self> {
        let fit = |c: &Config, r: Recency| -> anyhow::Result<(Fitted, Option<Csr>)> {
            let mut m = data.matrix(r);
            if a.propensity_weighted && matches!(c, Config::Als { .. }) {
                m = std::borrow::Cow::Owned(bespoke_algo::debias::weight_by_propensity(
                    &m,
                    &data.propensities(a.propensity_eta),
                    a.propensity_max_factor,
                ));
            }
            let f = Fitted::fit(c, &m, a.seed, a.ease_max_items).map_err(|e| anyhow::anyhow!(e))?;
            Ok((
                f,
                match m {
                    std::borrow::Cow::Owned(m) => Some(m),
                    std::borrow::Cow::Borrowed(_) => None,
                },
            ))
        };
        Ok(match choice {
            Choice::Single(c, r) => Trained {
                parts: vec![fit(c, *r)?],
                blend: None,
            },
            Choice::Blend((x, rx), (y, ry), b) => Trained {
                parts: vec![fit(x, *rx)?, fit(y, *ry)?],
                blend: Some(*b),
            },
        })
    }

    fn recommend(&self, weights: &Csr, u: usize, n: usize, s: &mut Scratch) -> Vec<Scored> {
        let run = |(f, m): &(Fitted, Option<Csr>), n: usize, s: &mut Scratch| {
            f.recommend(m.as_ref().unwrap_or(weights), u, n, s)
        };
        match (&self.parts[..], self.blend) {
            ([x, y], Some(b)) => {
                let lx = run(x, BLEND_CANDIDATES, s);
                let ly = run(y, BLEND_CANDIDATES, s);
                b.combine(&lx, &ly, n)
            }
            (parts, _) => run(&parts[0], n, s),
        }
    }
}

/// The configuration `eval` trains for model type `name` from the command line.
pub(crate) fn config(name: &str, a: &EvalArgs) -> anyhow::Result<Config> {
    let kind: ModelKind = name.parse()?;
    let knn = |similarity: KnnSimilarity| {
        Config::knn(&KnnParams {
            k: a.knn_k,
            similarity,
            rp3_alpha: a.rp3_alpha,
            rp3_beta: a.rp3_beta,
        })
    };
    Ok(match kind {
        ModelKind::Als => Config::als(&AlsParams {
            factors: a.factors,
            regularization: a.regularization,
            alpha: a.alpha,
            iterations: a.iterations,
            cg_steps: a.cg_steps,
            ..AlsParams::default()
        }),
        ModelKind::Bpr => Config::bpr(&BprParams {
            factors: a.factors,
            learning_rate: a.bpr_learning_rate,
            regularization: a.bpr_regularization,
            iterations: a.bpr_iterations,
            ..BprParams::default()
        }),
        ModelKind::Ease => Config::ease(&EaseParams {
            lambda: a.ease_lambda,
        }),
        // `knn` alone has always meant cosine here.
        ModelKind::Knn | ModelKind::Cosine => knn(KnnSimilarity::Cosine),
        ModelKind::Bm25 => knn(KnnSimilarity::Bm25),
        ModelKind::Rp3 => knn(KnnSimilarity::Rp3),
        ModelKind::Popular => Config::Popular,
        ModelKind::Content => {
            bail!("the content model is evaluated with --cold-items, not --models")
        }
    })
}

pub(crate) fn round5(v: f64) -> f64 {
    (v * 1e5).round() / 1e5
}

fn evaluate(
    choice: &Choice,
    a: &EvalArgs,
    data: &Data,
    load_s: f64,
    build_s: f64,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let model = Trained::fit(choice, a, data)?;
    let fit_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let sums = tune::evaluate(data.n_items, &data.eval, |u, s| {
        model.recommend(&data.weights, u, K_MAX, s)
    });
    let batch_s = started.elapsed().as_secs_f64();

    // Single-user latency: users drawn uniformly (seeded) from the evaluated users, 50 warm-up
    // calls, then one timed call each, as implicit_bench.py does.
    let mut rng = Rng::seed_from_u64(a.seed + 1);
    let sample: Vec<usize> = (0..a.latency_users.max(1))
        .map(|_| data.eval[rng.below(data.eval.len() as u64) as usize].0 as usize)
        .collect();
    let mut s = Scratch::new(data.n_items);
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

    let mut metrics = metrics_json(&sums);
    if a.ips {
        metrics["debiased"] = ips_json(a, data, &model);
    }
    let mut out = json!({
        "library": "bespoke",
        "bespoke_version": env!("CARGO_PKG_VERSION"),
        "model": choice.name(),
        "params": choice.params(a),
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
    if let Choice::Single(Config::Als { iterations, .. }, _) = choice {
        out["fit_s_per_iteration"] =
            json!((fit_s / (*iterations).max(1) as f64 * 1e4).round() / 1e4);
    }
    Ok(out)
}

/// IPS and SNIPS ndcg@10 and recall@10 of `model` on the test data, test items weighted by
/// their held-out propensity (`debias::held_out_propensities`, with the test share of all
/// interactions as the held-out fraction).
fn ips_json(a: &EvalArgs, data: &Data, model: &Trained) -> Value {
    use bespoke_algo::debias::{IpsSums, held_out_propensities};
    let fraction = data.test_pairs as f64 / (data.test_pairs + data.weights.nnz()).max(1) as f64;
    let p = held_out_propensities(
        &data.propensities(a.propensity_eta),
        fraction.clamp(1e-6, 1.0),
    );
    let sums = data
        .eval
        .par_iter()
        .fold(
            || (IpsSums::new(10), Scratch::new(data.n_items)),
            |(mut sums, mut s), (u, items)| {
                let ranking: Vec<u32> = model
                    .recommend(&data.weights, *u as usize, K_MAX, &mut s)
                    .iter()
                    .map(|x| x.idx)
                    .collect();
                sums.add(&ranking, items, &p);
                (sums, s)
            },
        )
        .map(|(sums, _)| sums)
        .reduce(
            || IpsSums::new(10),
            |mut x, y| {
                x.merge(&y);
                x
            },
        );
    let m = sums.means();
    json!({
        "ndcg@10_ips": round5(m.ndcg_ips), "ndcg@10_snips": round5(m.ndcg_snips),
        "recall@10_ips": round5(m.recall_ips), "recall@10_snips": round5(m.recall_snips),
        "propensity_eta": a.propensity_eta, "held_out_fraction": round5(fraction),
    })
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
    if let (Some(train), Some(test), false) = (&args.train, &args.test, args.recency().is_on()) {
        let data = load_split(train, test)?;
        // Loading and building are one streaming pass here.
        let load_s = started.elapsed().as_secs_f64();
        return evaluate_all(args, &data, load_s, 0.0);
    }
    let (train, test) = match (&args.train, &args.test, &args.data) {
        (Some(train), Some(test), _) => (read_rows(train)?, read_rows(test)?),
        (None, None, Some(data)) => {
            let frac = temporal_fraction(&args.split)?;
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

/// The held-out share of `--split temporal:FRACTION`.
pub(crate) fn temporal_fraction(split: &str) -> anyhow::Result<f64> {
    split
        .strip_prefix("temporal:")
        .and_then(|f| f.parse().ok())
        .filter(|f: &f64| *f > 0.0 && *f < 1.0)
        .with_context(|| {
            format!("--split {split:?}: expected temporal:FRACTION with 0 < FRACTION < 1")
        })
}

fn evaluate_all(args: &EvalArgs, data: &Data, load_s: f64, build_s: f64) -> anyhow::Result<()> {
    if data.eval.is_empty() {
        bail!("no test rows of users and items known from training: nothing to evaluate");
    }
    let mut lines = Vec::new();
    let models = if args.models.is_empty() {
        // iALS alone is the cheap default; say so, and how to see the rest.
        eprintln!(
            "evaluated als (the default); evaluate others with --models \
             als,ease,bm25,cosine,rp3,bpr,popular, or search them all with `bespoke tune`"
        );
        vec![ModelKind::Als.to_string()]
    } else {
        eprintln!("evaluated {}", args.models.join(", "));
        args.models.clone()
    };
    for name in &models {
        let name = name.trim();
        let recency = args.recency();
        let choice = match name.split_once('+') {
            Some((x, y)) => Choice::Blend(
                (config(x, args)?, recency),
                (config(y, args)?, recency),
                Blend {
                    weight: args.blend_weight,
                },
            ),
            None => Choice::Single(config(name, args)?, recency),
        };
        let result = evaluate(&choice, args, data, load_s, build_s)?;
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

/// The model families `tune` searches, with those left out and why (JSON: `model`, `reason`).
/// Named --models are checked (EASE must fit its item limit and the memory budget); without
/// them every family of [`tune::FAMILIES`] that fits is searched.
fn families(args: &EvalArgs, n_items: usize) -> anyhow::Result<(Vec<String>, Vec<Value>)> {
    if !(args.memory_budget_gb.is_finite() && args.memory_budget_gb > 0.0) {
        bail!("--memory-budget-gb must be a positive number");
    }
    let ease_bytes = bespoke_algo::Ease::fit_bytes(n_items);
    let budget_bytes = args.memory_budget_gb * 1e9;
    let gb = |b: f64| (b / 1e8).round() / 10.0;
    let ease_unfit = if n_items > args.ease_max_items {
        Some(format!(
            "its matrix is items × items: {n_items} items, above --ease-max-items {}",
            args.ease_max_items
        ))
    } else if ease_bytes as f64 > budget_bytes {
        Some(format!(
            "its dense items × items matrices need {} GB for {n_items} items, above \
             --memory-budget-gb {}",
            gb(ease_bytes as f64),
            args.memory_budget_gb
        ))
    } else {
        None
    };
    if args.models.is_empty() {
        let mut kinds = Vec::new();
        let mut skipped = Vec::new();
        for kind in tune::FAMILIES {
            match &ease_unfit {
                Some(why) if ModelKind::Ease == *kind => {
                    skipped.push(json!({"model": ModelKind::Ease, "reason": why}))
                }
                _ => kinds.push((*kind).to_owned()),
            }
        }
        return Ok((kinds, skipped));
    }
    let kinds: Vec<String> = args.models.iter().map(|m| m.trim().to_owned()).collect();
    // Refused now rather than when an EASE draw comes up, minutes into the search.
    let ease = kinds.iter().any(|k| ModelKind::Ease == k.as_str());
    if let (Some(why), true) = (&ease_unfit, ease) {
        bail!(
            "EASE cannot be searched: {why}; leave ease out of --models or raise the limit \
             (--ease-max-items, --memory-budget-gb)"
        );
    }
    Ok((kinds, Vec::new()))
}

/// `bespoke tune`: random search with successive halving over the model types and their
/// hyperparameters (`bespoke_algo::tune::search`). Each of `--budget` configurations (model
/// types in turn) is trained on the training data minus its latest 20% per user (split.py's
/// rule) and scored on that held-out tail by NDCG@10, iterative models first with a quarter of
/// their iterations, the best third then in full. The best configurations of the two best model
/// types are blended when that scores higher on validation. The choice is retrained on all the
/// training data and reported on the test data, with implicit_bench's keys plus the trials. The
/// test data never influences the choice.
pub(crate) fn tune(args: &EvalArgs) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build_global()
        .context("starting the worker threads")?;
    if args.budget == 0 {
        bail!("--budget must be at least 1");
    }
    let started = Instant::now();
    let began = started;
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
    // Refused now rather than when an EASE draw comes up, minutes into the search. The final
    // fit on all of train sees the most items.
    let n_items = train
        .iter()
        .map(|r| r.item)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let (kinds, skipped) = families(args, n_items)?;
    if !args.json {
        let skipped: String = skipped
            .iter()
            .map(|s| format!("; skipped {}: {}", s["model"], s["reason"]))
            .collect();
        eprintln!(
            "searching {} ({} configurations){skipped}",
            kinds.join(", "),
            args.budget
        );
    }
    let params = SearchParams {
        budget: args.budget,
        kinds: kinds.clone(),
        iterations: args.iterations,
        rungs: vec![0.25, 1.0],
        eta: 3,
        seed: args.seed,
        recency: !args.no_recency_search,
        local_share: args.local_share,
        max_share: tune::MAX_SHARE,
    };
    let bar = indicatif::ProgressBar::new(args.budget as u64).with_style(
        indicatif::ProgressStyle::with_template("tuning {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut fit_times = Vec::new();
    let fixed = args.recency();
    let fitter = tune::Fitter::new(args.seed, args.ease_max_items);
    let validate = |c: &Config, r: Recency| -> anyhow::Result<f64> {
        let m = valid.matrix(r);
        let fitted = fitter.fit(c, &m, r)?;
        let sums = tune::evaluate(valid.n_items, &valid.eval, |u, s| {
            fitted.recommend(&m, u, K_MAX, s)
        });
        Ok(sums.means()["ndcg@10"])
    };
    let trials = tune::search::<anyhow::Error>(&params, |c, r| {
        let r = if params.recency { r } else { fixed };
        let t = Instant::now();
        let ndcg = validate(c, r)?;
        fit_times.push(t.elapsed().as_secs_f64());
        if bar.position() >= bar.length().unwrap_or(0) {
            bar.inc_length(1);
        }
        bar.set_message(format!("{} {ndcg:.4}", c.kind()));
        bar.inc(1);
        Ok(ndcg)
    })?;
    let best = tune::best(&trials, &params).expect("budget >= 1").clone();
    // Blending: the best full configuration of each model type, two at a time.
    let by_kind = tune::best_per_kind(&trials, &params);
    let recency_of = |t: &tune::Trial| if params.recency { t.recency } else { fixed };
    let mut choice = Choice::Single(best.config.clone(), recency_of(&best));
    let mut blend_report = Value::Null;
    // Every pair of model types (the best configuration of each); the best pair on validation
    // is kept when it beats the best single model. Not only the best three: the best partner
    // of the leader is often a type that is weak alone (RP3beta beside iALS on the synthetic
    // 2M set, docs/benchmarks.md).
    let top: Vec<&tune::Trial> = by_kind.to_vec();
    let members: Vec<(&Config, Recency)> = top.iter().map(|t| (&t.config, recency_of(t))).collect();
    let blended = tune::best_blend(
        &members,
        |r| valid.matrix(r),
        |c, r, m| fitter.fit(c, m, r),
        &valid.eval,
        |x, y| bar.set_message(format!("blending {} and {}", x.kind(), y.kind())),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if let Some((i, j, blend, ndcg)) = blended {
        let (first, second) = (top[i], top[j]);
        let used = ndcg > best.ndcg;
        blend_report = json!({"models": [first.config.kind(), second.config.kind()],
            "weight": (blend.weight as f64 * 100.0).round() / 100.0, "validation_ndcg@10": ndcg,
            "used": used});
        if used {
            choice = Choice::Blend(
                (first.config.clone(), recency_of(first)),
                (second.config.clone(), recency_of(second)),
                blend,
            );
        }
    }
    bar.finish_and_clear();
    let started = Instant::now();
    let data = build(&train, &test);
    let build_s = started.elapsed().as_secs_f64();
    let mut result = evaluate(&choice, args, &data, load_s, build_s)?;
    let trial_json: Vec<Value> = trials
        .iter()
        .zip(&fit_times)
        .map(|(t, s)| {
            json!({"model": anchor_name(t.config.kind()), "candidate": t.candidate, "rung": t.rung,
                   "params": config_json(&t.config, recency_of(t)), "validation_ndcg@10": t.ndcg, "fit_s": round3(*s)})
        })
        .collect();
    result["tuning"] = json!({
        "budget": args.budget,
        "families": kinds,
        "skipped": skipped,
        "seconds": round3(began.elapsed().as_secs_f64()),
        "peak_rss_mib": crate::bench::peak_rss_mib(),
        "search": "random search with successive halving: iterative models first at 1/4 of their iterations, the best third in full (eta 3)",
        "validation": "latest 20% of each training user's rows (5 or more), split.py's rule",
        "best": {"model": anchor_name(best.config.kind()), "validation_ndcg@10": best.ndcg, "params": config_json(&best.config, recency_of(&best))},
        "blend": blend_report,
        "trials": trial_json,
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "{:<7} {:>4} {:>14}  params",
            "model", "rung", "valid NDCG@10"
        );
        for t in result["tuning"]["trials"].as_array().into_iter().flatten() {
            println!(
                "{:<7} {:>4} {:>14.5}  {}",
                t["model"].as_str().unwrap_or(""),
                t["rung"],
                t["validation_ndcg@10"].as_f64().unwrap_or(0.0),
                t["params"]
            );
        }
        if !blend_report.is_null() {
            println!(
                "blend {}: weight {} validation NDCG@10 {:.5}{}",
                blend_report["models"],
                blend_report["weight"],
                blend_report["validation_ndcg@10"].as_f64().unwrap_or(0.0),
                if blend_report["used"] == true {
                    " (chosen)"
                } else {
                    ""
                }
            );
        }
        println!(
            "\nchosen: {} (validation NDCG@10 {:.5}), on the test data:",
            choice.name(),
            blend_report["validation_ndcg@10"]
                .as_f64()
                .filter(|_| blend_report["used"] == true)
                .unwrap_or(best.ndcg)
        );
        print_table(std::slice::from_ref(&result));
    }
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{result}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
