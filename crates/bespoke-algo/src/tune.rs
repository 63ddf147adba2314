//! Model selection: every model type behind one interface ([`Fitted`]), a seeded search
//! space ([`Config::from_unit`]), successive halving over iteration budgets ([`search`]), and
//! score blending of two models ([`Blend`]).
//!
//! Selection is by NDCG@10 on a validation split the caller cuts from training data only.
//! Like the rest of the crate this module keeps no clocks: callers time fits if they wish.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::eval::MetricSums;
use std::sync::{Arc, Mutex};

use crate::{
    Als, AlsParams, Bpr, BprParams, Csr, Ease, EaseError, EaseParams, Gram, ItemKnn, ItemScorer,
    KnnParams, KnnSimilarity, ModelKind, Recency, Rng, ScoreScratch, Scored, TopK,
};

/// Why a model could not be fitted or a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// EASE could not be fitted (too many items, or its system is not positive definite).
    #[error("EASE: {0}")]
    Ease(#[from] EaseError),
    /// A thread computing a shared Gram matrix panicked, so the cache cannot be trusted.
    #[error("a Gram computation panicked")]
    GramPoisoned,
    /// [`search`] was given no budget or no model type.
    #[error("the search needs a budget of at least 1 and one model type")]
    EmptySearch,
    /// [`search`] was asked for a model type it does not know.
    #[error("unknown model type {0:?}: use one of {KINDS:?}")]
    UnknownKind(String),
    /// No trial trained its configuration in full, so there is nothing to choose.
    #[error("no trial finished")]
    NoTrial,
}

/// The result of this module's fallible functions.
pub type Result<T, E = TuneError> = std::result::Result<T, E>;

/// A model type and its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum Config {
    /// iALS.
    Als {
        /// Factors.
        factors: usize,
        /// L2 weight.
        regularization: f32,
        /// Confidence slope.
        alpha: f32,
        /// Iterations.
        iterations: usize,
        /// Conjugate gradient steps per half-iteration.
        #[serde(default = "default_cg_steps")]
        cg_steps: usize,
    },
    /// EASE.
    Ease {
        /// L2 weight λ.
        lambda: f64,
    },
    /// Item-kNN, cosine.
    Cosine {
        /// Neighbours per item.
        k: usize,
    },
    /// Item-kNN, BM25-weighted.
    Bm25 {
        /// Neighbours per item.
        k: usize,
    },
    /// Item-kNN, RP3beta random-walk similarity.
    Rp3 {
        /// Neighbours per item.
        k: usize,
        /// Exponent of the transition probabilities.
        alpha: f32,
        /// Popularity penalty.
        beta: f32,
    },
    /// BPR.
    Bpr {
        /// Factors.
        factors: usize,
        /// SGD step.
        learning_rate: f32,
        /// L2 weight.
        regularization: f32,
        /// Epochs.
        iterations: usize,
    },
    /// Item popularity (the same list for everyone).
    Popular,
}

/// Tuning results saved before `cg_steps` was searched used iALS's default.
fn default_cg_steps() -> usize {
    AlsParams::default().cg_steps
}

/// The value of `xs` whose equal share of `[0, 1)` holds `x`.
fn one_of<T: Copy>(x: f64, xs: &[T]) -> T {
    xs[((x * xs.len() as f64) as usize).min(xs.len() - 1)]
}

/// Dimensions of the unit cube [`Config::from_unit`] reads (the model's hyperparameters), before
/// the two of [`recency_from_unit`].
pub const CONFIG_DIMS: usize = 3;

/// Model type names [`Config::from_unit`] knows (the kinds a configuration can have).
pub const KINDS: &[&str] = &[
    ModelKind::Als.name(),
    ModelKind::Ease.name(),
    ModelKind::Cosine.name(),
    ModelKind::Bm25.name(),
    ModelKind::Rp3.name(),
    ModelKind::Bpr.name(),
    ModelKind::Popular.name(),
];

/// The model families a search covers when the caller names none: every type that learns
/// (popularity is a baseline, not a candidate). Callers leave out EASE where its dense matrix
/// would not fit their memory budget (see [`Ease::fit_bytes`]).
pub const FAMILIES: &[&str] = &[
    ModelKind::Als.name(),
    ModelKind::Ease.name(),
    ModelKind::Bm25.name(),
    ModelKind::Cosine.name(),
    ModelKind::Rp3.name(),
    ModelKind::Bpr.name(),
];

impl Config {
    /// The model type's name (that of [`Config::model_kind`]).
    pub fn kind(&self) -> &'static str {
        self.model_kind().name()
    }

    /// The model type.
    pub fn model_kind(&self) -> ModelKind {
        match self {
            Config::Als { .. } => ModelKind::Als,
            Config::Ease { .. } => ModelKind::Ease,
            Config::Cosine { .. } => ModelKind::Cosine,
            Config::Bm25 { .. } => ModelKind::Bm25,
            Config::Rp3 { .. } => ModelKind::Rp3,
            Config::Bpr { .. } => ModelKind::Bpr,
            Config::Popular => ModelKind::Popular,
        }
    }

    /// The configuration of `kind` with its model's default hyperparameters (`knn` is its
    /// default similarity); `None` for a kind that is not fitted from interactions alone
    /// (`content`).
    pub fn default_of(kind: ModelKind) -> Option<Self> {
        let knn = KnnParams::default();
        Some(match kind {
            ModelKind::Als => Self::als(&AlsParams::default()),
            ModelKind::Ease => Self::ease(&EaseParams::default()),
            ModelKind::Knn => Self::knn(&knn),
            ModelKind::Cosine | ModelKind::Bm25 | ModelKind::Rp3 => Self::knn(&KnnParams {
                similarity: kind.knn_similarity()?,
                ..knn
            }),
            ModelKind::Bpr => Self::bpr(&BprParams::default()),
            ModelKind::Popular => Config::Popular,
            ModelKind::Content => return None,
        })
    }

    /// The configuration of iALS with `p`.
    pub fn als(p: &AlsParams) -> Self {
        Config::Als {
            factors: p.factors,
            regularization: p.regularization,
            alpha: p.alpha,
            iterations: p.iterations,
            cg_steps: p.cg_steps,
        }
    }

    /// The configuration of BPR with `p`.
    pub fn bpr(p: &BprParams) -> Self {
        Config::Bpr {
            factors: p.factors,
            learning_rate: p.learning_rate,
            regularization: p.regularization,
            iterations: p.iterations,
        }
    }

    /// The configuration of EASE with `p`.
    pub fn ease(p: &EaseParams) -> Self {
        Config::Ease { lambda: p.lambda }
    }

    /// The configuration of item-kNN with `p` (the variant of its similarity).
    pub fn knn(p: &KnnParams) -> Self {
        match p.similarity {
            KnnSimilarity::Cosine => Config::Cosine { k: p.k },
            KnnSimilarity::Bm25 => Config::Bm25 { k: p.k },
            KnnSimilarity::Rp3 => Config::Rp3 {
                k: p.k,
                alpha: p.rp3_alpha,
                beta: p.rp3_beta,
            },
        }
    }

    /// iALS's parameters: `base` (the seed and what is not searched) with this configuration's;
    /// `None` for other types.
    pub fn als_params(&self, base: AlsParams) -> Option<AlsParams> {
        match *self {
            Config::Als {
                factors,
                regularization,
                alpha,
                iterations,
                cg_steps,
            } => Some(AlsParams {
                factors,
                regularization,
                alpha,
                iterations,
                cg_steps,
                ..base
            }),
            _ => None,
        }
    }

    /// BPR's parameters: `base` (the seed) with this configuration's; `None` for other types.
    pub fn bpr_params(&self, base: BprParams) -> Option<BprParams> {
        match *self {
            Config::Bpr {
                factors,
                learning_rate,
                regularization,
                iterations,
            } => Some(BprParams {
                factors,
                learning_rate,
                regularization,
                iterations,
                ..base
            }),
            _ => None,
        }
    }

    /// EASE's parameters; `None` for other types.
    pub fn ease_params(&self) -> Option<EaseParams> {
        match *self {
            Config::Ease { lambda } => Some(EaseParams { lambda }),
            _ => None,
        }
    }

    /// Item-kNN's parameters: `base` (RP3beta's exponents for the other similarities) with
    /// this configuration's; `None` for other types.
    pub fn knn_params(&self, base: KnnParams) -> Option<KnnParams> {
        Some(match *self {
            Config::Cosine { k } => KnnParams {
                k,
                similarity: KnnSimilarity::Cosine,
                ..base
            },
            Config::Bm25 { k } => KnnParams {
                k,
                similarity: KnnSimilarity::Bm25,
                ..base
            },
            Config::Rp3 { k, alpha, beta } => KnnParams {
                k,
                similarity: KnnSimilarity::Rp3,
                rp3_alpha: alpha,
                rp3_beta: beta,
            },
            _ => return None,
        })
    }

    /// The configuration of type `kind` (one of [`KINDS`]; `None` for an unknown type) at a
    /// point of the unit cube: `u(d)` in `[0, 1)` is its coordinate on dimension `d` (at most
    /// [`CONFIG_DIMS`]), mapped to the search space of each hyperparameter (log-uniform ranges,
    /// or one of a list of values). `iterations` is the full iteration budget of the iterative
    /// models.
    pub fn from_unit(
        kind: &str,
        iterations: usize,
        u: &mut dyn FnMut(usize) -> f64,
    ) -> Option<Self> {
        let log_uniform = |x: f64, lo: f64, hi: f64| (lo.ln() + x * (hi / lo).ln()).exp();
        let kind: ModelKind = kind.parse().ok()?;
        Some(match kind {
            ModelKind::Als => Config::Als {
                factors: one_of(u(0), &[32, 64, 128]),
                regularization: log_uniform(u(1), 0.01, 100.0) as f32,
                alpha: one_of(u(2), &[0.5f32, 1.0, 2.0, 5.0, 10.0]),
                iterations,
                cg_steps: AlsParams::default().cg_steps,
            },
            ModelKind::Ease => Config::Ease {
                lambda: log_uniform(u(0), 10.0, 3000.0),
            },
            // `knn` alone names no similarity: cosine, as the CLI has always read it.
            ModelKind::Cosine | ModelKind::Knn => Config::Cosine {
                k: one_of(u(0), &[25, 50, 100, 200, 400]),
            },
            ModelKind::Bm25 => Config::Bm25 {
                k: one_of(u(0), &[25, 50, 100, 200, 400]),
            },
            ModelKind::Rp3 => Config::Rp3 {
                k: one_of(u(0), &[25, 50, 100, 200, 400]),
                alpha: (0.3 + u(1) * 1.2) as f32,
                beta: (u(2) * 0.8) as f32,
            },
            ModelKind::Bpr => Config::Bpr {
                factors: one_of(u(0), &[32, 64, 128]),
                learning_rate: one_of(u(1), &[0.01f32, 0.02, 0.05, 0.1]),
                regularization: one_of(u(2), &[0.001f32, 0.01, 0.05]),
                iterations: iterations.max(1) * 100 / 15,
            },
            ModelKind::Popular => Config::Popular,
            ModelKind::Content => return None,
        })
    }

    /// Whether a lower iteration budget gives a cheaper, rougher version of this model.
    pub fn is_iterative(&self) -> bool {
        matches!(self, Config::Als { .. } | Config::Bpr { .. })
    }

    /// This configuration with `fraction` of its iterations (at least 2); others unchanged.
    pub fn at_fidelity(&self, fraction: f64) -> Self {
        let scale = |it: usize| ((it as f64 * fraction).round() as usize).clamp(2.min(it), it);
        let mut c = self.clone();
        match &mut c {
            Config::Als { iterations, .. } | Config::Bpr { iterations, .. } => {
                *iterations = scale(*iterations);
            }
            _ => {}
        }
        c
    }
}

/// A fitted model of any type, ready to recommend for the rows of its training matrix.
#[derive(Debug)]
pub enum Fitted {
    /// iALS and its scorer.
    Als(Als, ItemScorer),
    /// BPR and its scorer (item biases folded in).
    Bpr(Bpr, ItemScorer),
    /// EASE.
    Ease(Ease),
    /// Item-kNN.
    Knn(ItemKnn),
    /// Item counts.
    Popular(Vec<f32>),
}

/// Per-worker scratch for [`Fitted::recommend`].
#[derive(Debug)]
pub struct Scratch {
    scoring: ScoreScratch,
    scores: Vec<f32>,
    touched: Vec<u32>,
    top: TopK,
}

impl Scratch {
    /// Scratch for a catalog of `n_items`.
    pub fn new(n_items: usize) -> Self {
        Self {
            scoring: ScoreScratch::default(),
            scores: vec![0.0; n_items],
            touched: Vec::new(),
            top: TopK::new(100),
        }
    }
}

impl Fitted {
    /// Fits `config` on the users × items `weights` (`seed` for the random starts; `max_items`
    /// bounds EASE's dense matrix).
    pub fn fit(config: &Config, weights: &Csr, seed: u64, max_items: usize) -> Result<Self> {
        Self::fit_with(config, weights, seed, max_items, None)
    }

    /// [`Fitted::fit`], EASE from `gram` (the Gram matrix of `weights`) when given.
    fn fit_with(
        config: &Config,
        weights: &Csr,
        seed: u64,
        max_items: usize,
        gram: Option<&Gram>,
    ) -> Result<Self> {
        if let Some(p) = config.als_params(AlsParams {
            seed,
            ..AlsParams::default()
        }) {
            let m = Als::fit(weights, p, |_| {});
            let scorer = ItemScorer::new(m.item_factors().clone());
            return Ok(Fitted::Als(m, scorer));
        }
        if let Some(p) = config.bpr_params(BprParams {
            seed,
            ..BprParams::default()
        }) {
            let m = Bpr::fit(weights, p);
            let scorer = ItemScorer::new(m.item_factors_with_bias());
            return Ok(Fitted::Bpr(m, scorer));
        }
        if let Some(p) = config.knn_params(KnnParams::default()) {
            return Ok(Fitted::Knn(ItemKnn::fit(weights, p.similarity(), p.k)));
        }
        Ok(match *config {
            Config::Ease { lambda } => Fitted::Ease(match gram {
                Some(g) => Ease::from_gram(g, lambda),
                None => Ease::fit(weights, lambda, max_items),
            }?),
            Config::Popular => {
                let mut counts = vec![0f32; weights.n_cols()];
                for u in 0..weights.n_rows() {
                    for &i in weights.row(u).0 {
                        counts[i as usize] += 1.0;
                    }
                }
                Fitted::Popular(counts)
            }
            Config::Als { .. }
            | Config::Bpr { .. }
            | Config::Cosine { .. }
            | Config::Bm25 { .. }
            | Config::Rp3 { .. } => unreachable!("fitted above"),
        })
    }

    /// Top `n` for row `u` of the training matrix `weights`, its training items excluded.
    pub fn recommend(&self, weights: &Csr, u: usize, n: usize, s: &mut Scratch) -> Vec<Scored> {
        let (seen, w) = weights.row(u);
        let keep = |i: u32| seen.binary_search(&i).is_err();
        if s.scores.len() < weights.n_cols() {
            s.scores.resize(weights.n_cols(), 0.0);
        }
        match self {
            Fitted::Als(m, scorer) => {
                scorer.top_k(m.user_factors().row(u), n, keep, &mut s.scoring)
            }
            Fitted::Bpr(m, scorer) => {
                scorer.top_k(&m.user_vector_with_bias(u), n, keep, &mut s.scoring)
            }
            Fitted::Ease(m) => {
                let history: Vec<(u32, f32)> =
                    seen.iter().copied().zip(w.iter().copied()).collect();
                m.recommend(&history, n, keep, &mut s.scores, &mut s.top)
            }
            Fitted::Knn(k) => {
                let history: Vec<(u32, f32)> =
                    seen.iter().copied().zip(w.iter().copied()).collect();
                k.recommend(&history, n, keep, &mut s.scores, &mut s.touched, &mut s.top)
            }
            Fitted::Popular(counts) => {
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

/// Fits the configurations of a search. EASE's Gram matrix depends only on the data (under a
/// recency weighting), not on λ: the last few are kept, so EASE trials at other λ skip it.
#[derive(Debug)]
pub struct Fitter {
    seed: u64,
    max_items: usize,
    grams: Mutex<Vec<(Recency, Arc<Gram>)>>,
}

/// Gram matrices a [`Fitter`] keeps (one per recency weighting, the most recent used).
const GRAMS_KEPT: usize = 2;

impl Fitter {
    /// A fitter with the seed of the random starts and EASE's item limit.
    pub fn new(seed: u64, max_items: usize) -> Self {
        Self {
            seed,
            max_items,
            grams: Mutex::new(Vec::new()),
        }
    }

    /// Fits `config` on `weights`, the training matrix under `recency` (the cache key: one
    /// fitter serves one data set).
    pub fn fit(&self, config: &Config, weights: &Csr, recency: Recency) -> Result<Fitted> {
        let gram = match config {
            Config::Ease { .. } => Some(self.gram(weights, recency)?),
            _ => None,
        };
        Fitted::fit_with(config, weights, self.seed, self.max_items, gram.as_deref())
    }

    /// Gram matrices computed so far (for tests and reports).
    pub fn grams_kept(&self) -> usize {
        self.grams.lock().map_or(0, |g| g.len())
    }

    fn gram(&self, weights: &Csr, recency: Recency) -> Result<Arc<Gram>> {
        let mut grams = self.grams.lock().map_err(|_| TuneError::GramPoisoned)?;
        if let Some(at) = grams.iter().position(|g| g.0 == recency) {
            let hit = grams.remove(at);
            let gram = hit.1.clone();
            grams.push(hit);
            return Ok(gram);
        }
        let gram = Arc::new(Gram::new(weights, self.max_items)?);
        if grams.len() >= GRAMS_KEPT {
            grams.remove(0);
        }
        grams.push((recency, gram.clone()));
        Ok(gram)
    }
}

/// The anchors' metrics of `rank` (user → ranking of at most 100 items) on `test`
/// (`(user, sorted items)`), computed in parallel.
pub fn evaluate(
    n_items: usize,
    test: &[(u32, Vec<u32>)],
    rank: impl Fn(usize, &mut Scratch) -> Vec<Scored> + Sync,
) -> MetricSums {
    test.par_iter()
        .with_min_len(64)
        .fold(
            || (MetricSums::new(n_items), Scratch::new(n_items)),
            |(mut sums, mut s), (u, items)| {
                let ranking: Vec<u32> = rank(*u as usize, &mut s).iter().map(|x| x.idx).collect();
                sums.add(&ranking, items);
                (sums, s)
            },
        )
        .map(|(sums, _)| sums)
        .reduce(
            || MetricSums::new(n_items),
            |mut a, b| {
                a.merge(&b);
                a
            },
        )
}

/// One evaluated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trial {
    /// What was trained (iterations as trained, at this rung's fidelity).
    pub config: Config,
    /// The recency weighting of the training data.
    pub recency: Recency,
    /// Index of the configuration among those sampled.
    pub candidate: usize,
    /// Successive-halving rung (0 = cheapest).
    pub rung: usize,
    /// Validation NDCG@10.
    pub ndcg: f64,
}

/// How [`search`] spends its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    /// Configurations sampled (each trained at least once, at the lowest fidelity).
    pub budget: usize,
    /// Model types, sampled in turn.
    pub kinds: Vec<String>,
    /// Full iteration budget of iterative models.
    pub iterations: usize,
    /// Fidelities (fractions of the iterations), increasing, the last 1.
    pub rungs: Vec<f64>,
    /// Share of candidates promoted to the next rung is `1 / eta` (at least one).
    pub eta: usize,
    /// Seed of the sampling.
    pub seed: u64,
    /// Also search the recency weighting of the data (see [`Recency`]).
    pub recency: bool,
    /// Share of the budget drawn near the best configurations found so far, after the rest
    /// has been spread over the whole space (0: all spread).
    pub local_share: f64,
    /// Most of the budget one model type may take (at least an equal share), so that a type
    /// that leads early, often the most expensive, does not crowd out the others.
    pub max_share: f64,
}

/// Configurations a search samples unless told otherwise (CLI and server alike): five per
/// family of [`FAMILIES`]. On MovieLens 100K it reaches 1.01× what 16 reach on average, with
/// half the spread between seeds (docs/benchmarks.md).
pub const DEFAULT_BUDGET: usize = 30;

/// The default [`SearchParams::max_share`].
pub const MAX_SHARE: f64 = 1.0 / 3.0;

/// The default [`SearchParams::local_share`].
pub const LOCAL_SHARE: f64 = 0.5;

/// Standard deviation of a local draw's step on each axis of the unit cube: a fifth of the
/// axis, so a five-valued hyperparameter moves off its value about two times in three.
const LOCAL_STEP: f64 = 0.2;

/// The recency weighting at a point `(a, b)` of the unit square: the half-life (off, 3, 5, 10,
/// 20 or 50 events) from `a`, the floor (0.1, 0.25 or 0.5) from `b`.
pub fn recency_from_unit(a: f64, b: f64) -> Recency {
    let half_life = one_of(a, &[0.0f32, 3.0, 5.0, 10.0, 20.0, 50.0]);
    if half_life == 0.0 {
        Recency::OFF
    } else {
        Recency {
            half_life,
            floor: one_of(b, &[0.1f32, 0.25, 0.5]),
        }
    }
}

/// `n` points of a Latin hypercube in `dims` dimensions: on every dimension, each of the `n`
/// equal strata of `[0, 1)` holds exactly one point. With a few draws per model type this
/// spreads them over every hyperparameter's range (each factor count, each decade of λ)
/// where independent draws often bunch up (Bergstra and Bengio 2012, §5; McKay et al. 1979).
pub fn latin_hypercube(n: usize, dims: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let mut points = vec![vec![0.0; dims]; n];
    for d in 0..dims {
        let mut strata: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            strata.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for (point, stratum) in points.iter_mut().zip(strata) {
            point[d] = (stratum as f64 + rng.f64()) / n as f64;
        }
    }
    points
}

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            budget: 12,
            kinds: vec!["als".into(), "ease".into(), "bm25".into(), "cosine".into()],
            iterations: 15,
            rungs: vec![0.25, 1.0],
            eta: 3,
            seed: 0,
            recency: false,
            local_share: 0.0,
            max_share: 1.0,
        }
    }
}

/// A configuration the search drew, with the point of the unit cube it came from and its score
/// at the first rung.
struct Candidate {
    config: Config,
    recency: Recency,
    point: Vec<f64>,
    ndcg: f64,
}

/// What one draw of `kind` costs against [`SearchParams::max_share`], in draws of the cheapest
/// types. BPR's 100 epochs of SGD over every positive pair took 77–119 s on the synthetic 2M
/// set where a full iALS fit took 15–23 s and a kNN one 1–5 s (docs/benchmarks.md, issue 21).
fn relative_cost(kind: &str) -> usize {
    match kind {
        "bpr" => 4,
        _ => 1,
    }
}

/// Random search with successive halving: `budget` configurations are sampled (model types
/// in turn, see [`latin_hypercube`]); iterative ones are first trained with a fraction of their
/// iterations, and only the best `1/eta` of each type go on to the next, more expensive rung.
/// Non-iterative models (EASE, kNN, popularity) are exact at any rung and trained once. With a
/// `local_share`, that share of the budget is drawn last, one at a time, each near the best
/// configuration so far of a leading model type (those within 5 % of the best score take
/// turns); a type that holds `max_share` of the budget (draws weighted by their cost, see
/// `relative_cost`) draws no more, and when no type under its cap is within 5 % of the best,
/// every type under its cap takes turns in score order. `run` trains and scores one configuration (validation NDCG@10).
/// Returns every trial; the best full-fidelity trial is the choice.
pub fn search<E: From<TuneError>>(
    params: &SearchParams,
    mut run: impl FnMut(&Config, Recency) -> Result<f64, E>,
) -> Result<Vec<Trial>, E> {
    if params.budget == 0 || params.kinds.is_empty() {
        return Err(TuneError::EmptySearch.into());
    }
    let mut rng = Rng::seed_from_u64(params.seed ^ 0x7475_6e65);
    let kinds = &params.kinds;
    let local = ((params.budget as f64 * params.local_share.clamp(0.0, 1.0)) as usize)
        .min(params.budget.saturating_sub(kinds.len()));
    let spread = params.budget - local;
    let dims = CONFIG_DIMS + 2;
    let draw = |kind: &str, point: &[f64]| {
        let u = &mut |d: usize| point[d];
        let config = Config::from_unit(kind, params.iterations, u)
            .ok_or_else(|| TuneError::UnknownKind(kind.to_owned()))?;
        let recency = if params.recency && config != Config::Popular {
            recency_from_unit(u(CONFIG_DIMS), u(CONFIG_DIMS + 1))
        } else {
            Recency::OFF
        };
        Ok::<_, E>((config, recency))
    };
    let last = params.rungs.len().saturating_sub(1);
    let first = |c: &Config| match params.rungs.first() {
        Some(&f) if last > 0 => c.at_fidelity(f),
        _ => c.clone(),
    };
    let mut trials: Vec<Trial> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    // Draws `kind` at `point`, then at points from `next` while the draw repeats a candidate
    // (a small discrete space such as kNN's five K values runs out, and a repeat would spend
    // budget on a known result), and trains the draw at the first rung.
    let mut add = |kind: &str,
                   mut point: Vec<f64>,
                   next: &mut dyn FnMut() -> Vec<f64>,
                   candidates: &mut Vec<Candidate>|
     -> Result<(), E> {
        let mut drawn = draw(kind, &point)?;
        for _ in 0..32 {
            if !candidates
                .iter()
                .any(|c| c.config == drawn.0 && c.recency == drawn.1)
            {
                break;
            }
            point = next();
            drawn = draw(kind, &point)?;
        }
        let (config, recency) = drawn;
        let trained = first(&config);
        let ndcg = run(&trained, recency)?;
        trials.push(Trial {
            config: trained,
            recency,
            candidate: candidates.len(),
            rung: 0,
            ndcg,
        });
        candidates.push(Candidate {
            config,
            recency,
            point,
            ndcg,
        });
        Ok(())
    };

    // Spread: model types take turns; the draws of one type are a Latin hypercube over its
    // hyperparameters and the recency weighting (a repeat is drawn afresh, uniformly).
    let mut points: Vec<std::vec::IntoIter<Vec<f64>>> = (0..kinds.len())
        .map(|k| latin_hypercube((spread + kinds.len() - 1 - k) / kinds.len(), dims, &mut rng))
        .map(Vec::into_iter)
        .collect();
    for t in 0..spread {
        let point = points[t % kinds.len()].next().expect("a point per draw");
        let mut uniform = || (0..dims).map(|_| rng.f64()).collect();
        add(
            &kinds[t % kinds.len()],
            point,
            &mut uniform,
            &mut candidates,
        )?;
    }

    // Local: near the best point of a leading type, one step of a Gaussian walk on the cube.
    // The cap counts draws weighted by their cost, so an expensive type reaches it sooner.
    let cap = ((params.budget as f64 * params.max_share.clamp(0.0, 1.0)).ceil() as usize)
        .max(params.budget.div_ceil(kinds.len()));
    for j in 0..local {
        let spent = |kind: &str| {
            candidates
                .iter()
                .filter(|c| c.config.kind() == kind)
                .count()
                * relative_cost(kind)
        };
        // The best candidate of each type still under its cap, best type first.
        let mut leaders: Vec<usize> = Vec::new();
        for (c, cand) in candidates.iter().enumerate() {
            if spent(cand.config.kind()) >= cap {
                continue;
            }
            match leaders
                .iter_mut()
                .find(|l| candidates[**l].config.kind() == cand.config.kind())
            {
                Some(l) if cand.ndcg > candidates[*l].ndcg => *l = c,
                Some(_) => {}
                None => leaders.push(c),
            }
        }
        if leaders.is_empty() {
            // Every type is at its cap: the rest of the budget is not worth its cost.
            break;
        }
        leaders.sort_by(|a, b| candidates[*b].ndcg.total_cmp(&candidates[*a].ndcg));
        let top = candidates
            .iter()
            .map(|c| c.ndcg)
            .fold(f64::NEG_INFINITY, f64::max);
        // Types within 5 % of the best score found share the draws. When none is (the leader
        // is at its cap and the others trail), every type under its cap takes turns in score
        // order: each may be the partner of a blend with the leader, and a type whose few
        // spread draws missed its good region (RP3beta's β) gets a second look.
        let close: Vec<usize> = leaders
            .iter()
            .copied()
            .filter(|l| candidates[*l].ndcg >= 0.95 * top)
            .collect();
        if !close.is_empty() {
            leaders = close;
        }
        let center = &candidates[leaders[j % leaders.len()]];
        let (kind, from) = (center.config.kind(), center.point.clone());
        let mut step = || {
            from.iter()
                .map(|&x| {
                    let y = (x + LOCAL_STEP * rng.normal()).rem_euclid(2.0);
                    // Reflected at the faces of the cube.
                    (if y > 1.0 { 2.0 - y } else { y }).min(1.0 - f64::EPSILON)
                })
                .collect()
        };
        let point = step();
        add(kind, point, &mut step, &mut candidates)?;
    }

    // Successive halving within each model type: a model trained with a quarter of its
    // iterations is compared with its own kind, not with exact models.
    let mut alive: Vec<(usize, f64)> = candidates.iter().map(|c| c.ndcg).enumerate().collect();
    for (rung, &fidelity) in params.rungs.iter().enumerate().skip(1) {
        let mut next = Vec::with_capacity(alive.len());
        for kind in KINDS {
            let mut group: Vec<(usize, f64)> = alive
                .iter()
                .copied()
                .filter(|(c, _)| candidates[*c].config.kind() == *kind)
                .collect();
            group.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let iterative = group
                .first()
                .is_some_and(|g| candidates[g.0].config.is_iterative());
            let keep = if iterative {
                group.len().div_ceil(params.eta.max(1))
            } else {
                0
            };
            next.extend(group.into_iter().take(keep));
        }
        next.sort_by_key(|a| a.0);
        alive = next;
        for (c, score) in &mut alive {
            let (config, recency) = (&candidates[*c].config, candidates[*c].recency);
            let config = if rung == last {
                config.clone()
            } else {
                config.at_fidelity(fidelity)
            };
            *score = run(&config, recency)?;
            trials.push(Trial {
                config,
                recency,
                candidate: *c,
                rung,
                ndcg: *score,
            });
        }
    }
    Ok(trials)
}

/// Whether a trial trained its configuration in full (the last rung, or an exact model).
pub fn is_full(trial: &Trial, params: &SearchParams) -> bool {
    trial.rung + 1 >= params.rungs.len() || !trial.config.is_iterative()
}

/// The best trial at full fidelity.
pub fn best<'a>(trials: &'a [Trial], params: &SearchParams) -> Option<&'a Trial> {
    trials.iter().filter(|t| is_full(t, params)).max_by(|a, b| {
        a.ndcg
            .total_cmp(&b.ndcg)
            .then(b.candidate.cmp(&a.candidate))
    })
}

/// The best full-fidelity trial of each model type, best first.
pub fn best_per_kind<'a>(trials: &'a [Trial], params: &SearchParams) -> Vec<&'a Trial> {
    let mut out: Vec<&Trial> = Vec::new();
    for t in trials.iter().filter(|t| is_full(t, params)) {
        match out.iter_mut().find(|b| b.config.kind() == t.config.kind()) {
            Some(b) if t.ndcg > b.ndcg => *b = t,
            Some(_) => {}
            None => out.push(t),
        }
    }
    out.sort_by(|a, b| b.ndcg.total_cmp(&a.ndcg));
    out
}

/// A weighted sum of two models' scores, each divided by the user's top score for that model,
/// over the union of their top candidates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Blend {
    /// Weight of the first model; the second gets `1 - weight`.
    pub weight: f32,
}

/// Candidates taken from each model before blending.
pub const BLEND_CANDIDATES: usize = 200;

impl Blend {
    /// Blends two rankings (best first, with scores) into the top `n`.
    pub fn combine(&self, a: &[Scored], b: &[Scored], n: usize) -> Vec<Scored> {
        let scale = |r: &[Scored]| {
            r.first()
                .map_or(1.0, |s| s.score.abs().max(f32::MIN_POSITIVE))
        };
        let (sa, sb) = (scale(a), scale(b));
        let mut merged: Vec<(u32, f32)> = a
            .iter()
            .map(|s| (s.idx, self.weight * s.score / sa))
            .collect();
        merged.sort_unstable_by_key(|m| m.0);
        for s in b {
            let add = (1.0 - self.weight) * s.score / sb;
            match merged.binary_search_by_key(&s.idx, |m| m.0) {
                Ok(at) => merged[at].1 += add,
                Err(at) => merged.insert(at, (s.idx, add)),
            }
        }
        let mut top = TopK::new(n);
        for (i, s) in merged {
            top.push(i, s);
        }
        top.into_sorted()
    }

    /// The blend weight (0.1 to 0.9) that maximises validation NDCG@10 for two fitted models,
    /// each with its training matrix (the same interactions, maybe weighted differently), with
    /// that NDCG.
    pub fn fit(
        (a, train): (&Fitted, &Csr),
        (b, train_b): (&Fitted, &Csr),
        valid: &[(u32, Vec<u32>)],
    ) -> (Self, f64) {
        // Each user's candidates once, then every weight on them.
        let lists: Vec<(Vec<Scored>, Vec<Scored>)> = valid
            .par_iter()
            .map_init(
                || Scratch::new(train.n_cols()),
                |s, (u, _)| {
                    (
                        a.recommend(train, *u as usize, BLEND_CANDIDATES, s),
                        b.recommend(train_b, *u as usize, BLEND_CANDIDATES, s),
                    )
                },
            )
            .collect();
        let mut best = (Blend { weight: 1.0 }, f64::NEG_INFINITY);
        for step in 1..10 {
            let blend = Blend {
                weight: step as f32 / 10.0,
            };
            let mut sums = MetricSums::new(train.n_cols());
            for ((la, lb), (_, items)) in lists.iter().zip(valid) {
                let ranking: Vec<u32> = blend.combine(la, lb, 100).iter().map(|s| s.idx).collect();
                sums.add(&ranking, items);
            }
            let ndcg = sums.means()["ndcg@10"];
            if ndcg > best.1 {
                best = (blend, ndcg);
            }
        }
        best
    }
}

/// The best blend of two of `members` (every pair tried) on the validation data `valid`:
/// `(i, j, blend, NDCG@10)`, the first of equals kept. `matrix` gives the training matrix under
/// a recency weighting, `fit` trains a configuration on it (under that weighting), `on_pair` hears of each pair before
/// its blend weight is fitted (the members are trained first, once each). `None` with fewer than two members.
pub fn best_blend<M: std::ops::Deref<Target = Csr>>(
    members: &[(&Config, Recency)],
    matrix: impl Fn(Recency) -> M,
    fit: impl Fn(&Config, Recency, &Csr) -> Result<Fitted>,
    valid: &[(u32, Vec<u32>)],
    mut on_pair: impl FnMut(&Config, &Config),
) -> Result<Option<(usize, usize, Blend, f64)>> {
    // Each member is trained once, whatever the number of pairs it is in.
    let fitted: Vec<(M, Fitted)> = members
        .iter()
        .map(|&(c, r)| {
            let m = matrix(r);
            let f = fit(c, r, &m)?;
            Ok((m, f))
        })
        .collect::<Result<_>>()?;
    let mut best: Option<(usize, usize, Blend, f64)> = None;
    for (i, (ma, fa)) in fitted.iter().enumerate() {
        for (j, (mb, fb)) in fitted.iter().enumerate().skip(i + 1) {
            on_pair(members[i].0, members[j].0);
            let (blend, ndcg) = Blend::fit((fa, ma), (fb, mb), valid);
            if best.as_ref().is_none_or(|x| ndcg > x.3) {
                best = Some((i, j, blend, ndcg));
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successive_halving_promotes_the_best_third_and_trains_exact_models_once() {
        let params = SearchParams {
            budget: 9,
            kinds: vec!["als".into(), "ease".into(), "bpr".into()],
            ..SearchParams::default()
        };
        let mut calls = Vec::new();
        let trials = search::<TuneError>(&params, |c, _| {
            calls.push(c.clone());
            // A made-up score that favours few iterations' worth of regularization.
            Ok(match c {
                Config::Als { regularization, .. } => 1.0 / (1.0 + *regularization as f64),
                Config::Ease { lambda } => 0.5 - lambda / 10_000.0,
                _ => 0.1,
            })
        })
        .unwrap();
        // Rung 0: all 9 (iterative ones at a quarter of their iterations); rung 1: the best
        // third of each iterative kind (one of three ALS, one of three BPR) in full; EASE is
        // exact and not trained again.
        let rung0 = trials.iter().filter(|t| t.rung == 0).count();
        let rung1: Vec<&Trial> = trials.iter().filter(|t| t.rung == 1).collect();
        assert_eq!(rung0, 9);
        assert_eq!(rung1.len(), 2);
        assert!(
            trials
                .iter()
                .filter(|t| t.rung == 0)
                .all(|t| match t.config {
                    Config::Als { iterations, .. } => iterations == 4,
                    _ => true,
                })
        );
        let als: Vec<&Trial> = trials.iter().filter(|t| t.config.kind() == "als").collect();
        let best_als0 = als
            .iter()
            .filter(|t| t.rung == 0)
            .max_by(|a, b| a.ndcg.total_cmp(&b.ndcg))
            .unwrap();
        assert!(rung1.iter().any(|t| t.candidate == best_als0.candidate
            && matches!(t.config, Config::Als { iterations: 15, .. })));
        assert!(rung1.iter().any(|t| matches!(t.config, Config::Bpr { .. })));
        let b = best(&trials, &params).unwrap();
        assert!(trials.iter().all(|t| t.ndcg <= b.ndcg));
        assert_eq!(calls.len(), trials.len());
    }

    proptest::proptest! {
        #[test]
        fn a_latin_hypercube_puts_one_point_in_each_stratum(n in 1usize..40, seed in 0u64..1000) {
            let points = latin_hypercube(n, 5, &mut Rng::seed_from_u64(seed));
            proptest::prop_assert_eq!(points.len(), n);
            for d in 0..5 {
                let mut strata: Vec<usize> =
                    points.iter().map(|p| (p[d] * n as f64) as usize).collect();
                strata.sort_unstable();
                proptest::prop_assert_eq!(strata, (0..n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn spread_draws_cover_each_factor_count_and_never_repeat_a_configuration() {
        let params = SearchParams {
            budget: 12,
            kinds: vec!["als".into(), "cosine".into()],
            recency: false,
            ..SearchParams::default()
        };
        let trials = search::<TuneError>(&params, |_, _| Ok(0.1)).unwrap();
        let rung0: Vec<&Trial> = trials.iter().filter(|t| t.rung == 0).collect();
        assert_eq!(rung0.len(), 12);
        // Six iALS draws over three factor counts: two each.
        for f in [32, 64, 128] {
            let n = rung0
                .iter()
                .filter(|t| matches!(t.config, Config::Als { factors, .. } if factors == f))
                .count();
            assert_eq!(n, 2, "factors {f}");
        }
        // Six cosine draws over five K values: every value (the sixth is bound to repeat one).
        let mut ks: Vec<usize> = rung0
            .iter()
            .filter_map(|t| match t.config {
                Config::Cosine { k } => Some(k),
                _ => None,
            })
            .collect();
        ks.sort_unstable();
        ks.dedup();
        assert_eq!(ks, [25, 50, 100, 200, 400]);
    }

    #[test]
    fn local_draws_go_near_the_leading_types_best_configuration() {
        let params = SearchParams {
            budget: 20,
            kinds: vec!["als".into(), "ease".into(), "bm25".into(), "cosine".into()],
            local_share: 0.5,
            ..SearchParams::default()
        };
        // iALS is best near λ = 1, EASE near λ = 100, both within 5 % of each other over their
        // spread draws; the kNN models are far behind and get no local draws.
        let score = |c: &Config| match c {
            Config::Als { regularization, .. } => 0.3 - 0.005 * (*regularization as f64).ln().abs(),
            Config::Ease { lambda } => 0.295 - 0.002 * (lambda / 100.0).ln().abs(),
            _ => 0.05,
        };
        let trials = search::<TuneError>(&params, |c, _| Ok(score(c))).unwrap();
        let rung0: Vec<&Trial> = trials.iter().filter(|t| t.rung == 0).collect();
        assert_eq!(rung0.len(), 20);
        let local = &rung0[10..];
        assert!(
            local
                .iter()
                .all(|t| matches!(t.config.kind(), "als" | "ease"))
        );
        assert!(local.iter().any(|t| t.config.kind() == "als"));
        assert!(local.iter().any(|t| t.config.kind() == "ease"));
        // The walk improves on the spread phase's best iALS.
        let best_of = |ts: &[&Trial]| {
            ts.iter()
                .filter(|t| t.config.kind() == "als")
                .map(|t| t.ndcg)
                .fold(f64::NEG_INFINITY, f64::max)
        };
        assert!(best_of(local) >= best_of(&rung0[..10]));
    }

    #[test]
    fn a_leading_type_takes_at_most_its_share_and_the_others_take_turns_by_cost() {
        let params = SearchParams {
            budget: 18,
            kinds: FAMILIES.iter().map(|k| k.to_string()).collect(),
            local_share: 0.5,
            max_share: MAX_SHARE,
            ..SearchParams::default()
        };
        // EASE leads by far; iALS is second, within no 5 % of it; the rest trail.
        let score = |c: &Config| match c {
            Config::Ease { .. } => 0.4,
            Config::Als { regularization, .. } => 0.2 + 0.001 * *regularization as f64,
            _ => 0.05,
        };
        let trials = search::<TuneError>(&params, |c, _| Ok(score(c))).unwrap();
        let rung0: Vec<&Trial> = trials.iter().filter(|t| t.rung == 0).collect();
        assert_eq!(rung0.len(), 18);
        let count = |k: &str| rung0.iter().filter(|t| t.config.kind() == k).count();
        // A third of 18: EASE stops at 6. No other type is within 5 % of it, so the types under
        // their caps take the remaining turns in score order: iALS first, then the kNN types,
        // each beyond its spread draws (2 for iALS and BM25, 1 for cosine and RP3beta). BPR,
        // four times as costly, stops at 2 draws (8 against a cap of 6).
        assert_eq!(count("ease"), 6);
        assert_eq!(count("bpr"), 2);
        assert!(count("als") >= 3, "{}", count("als"));
        assert!(count("bm25") >= 3, "{}", count("bm25"));
        assert!(count("cosine") >= 2 && count("rp3") >= 2);
        assert_eq!(
            count("als") + count("bm25") + count("cosine") + count("rp3"),
            18 - 6 - 2
        );
        // Without the cap EASE takes every local draw.
        let uncapped = search::<TuneError>(
            &SearchParams {
                max_share: 1.0,
                ..params.clone()
            },
            |c, _| Ok(score(c)),
        )
        .unwrap();
        let ease = uncapped
            .iter()
            .filter(|t| t.rung == 0 && t.config.kind() == "ease")
            .count();
        assert!(ease > 6, "{ease}");
    }

    #[test]
    fn the_fitter_builds_one_gram_per_weighting_and_fits_as_a_fresh_fit_does() {
        // 40 users over 7 items, a few items each (repeats are summed).
        let triples: Vec<(u32, u32, f32)> = (0..40u32)
            .flat_map(|u| [u % 7, (u + 1) % 7, (u * 3) % 7].map(|i| (u, i, 1.0)))
            .collect();
        let x = Csr::from_triples(40, 7, &triples, false);
        let fitter = Fitter::new(0, 100);
        for lambda in [1.0, 10.0] {
            let c = Config::Ease { lambda };
            let Fitted::Ease(cached) = fitter.fit(&c, &x, Recency::OFF).unwrap() else {
                panic!("not EASE")
            };
            let Fitted::Ease(fresh) = Fitted::fit(&c, &x, 0, 100).unwrap() else {
                panic!("not EASE")
            };
            assert_eq!(cached.weights(), fresh.weights());
        }
        assert_eq!(fitter.grams_kept(), 1);
        let other = Recency {
            half_life: 3.0,
            floor: 0.5,
        };
        fitter
            .fit(&Config::Ease { lambda: 1.0 }, &x, other)
            .unwrap();
        assert_eq!(fitter.grams_kept(), 2);
    }

    #[test]
    fn unknown_model_types_and_empty_budgets_are_refused() {
        let p = SearchParams {
            kinds: vec!["nope".into()],
            ..SearchParams::default()
        };
        let err = search::<TuneError>(&p, |_, _| Ok(0.0)).unwrap_err();
        assert!(
            matches!(&err, TuneError::UnknownKind(k) if k == "nope"),
            "{err}"
        );
        assert!(err.to_string().contains("nope"));
        let p = SearchParams {
            budget: 0,
            ..SearchParams::default()
        };
        assert!(matches!(
            search::<TuneError>(&p, |_, _| Ok(0.0)),
            Err(TuneError::EmptySearch)
        ));
    }

    #[test]
    fn blend_sums_normalized_scores_over_both_lists() {
        let a = [Scored { idx: 1, score: 2.0 }, Scored { idx: 2, score: 1.0 }];
        let b = [
            Scored {
                idx: 3,
                score: 10.0,
            },
            Scored { idx: 2, score: 9.0 },
        ];
        let out = Blend { weight: 0.5 }.combine(&a, &b, 3);
        // 2: 0.5·0.5 + 0.5·0.9 = 0.7; 1: 0.5; 3: 0.5 (ties by the smaller id).
        assert_eq!(out.iter().map(|s| s.idx).collect::<Vec<_>>(), [2, 1, 3]);
        assert!((out[0].score - 0.7).abs() < 1e-6);
    }
}
