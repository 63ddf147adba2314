//! Model selection: every model type behind one interface ([`Fitted`]), a seeded search
//! space ([`Config::sample`]), successive halving over iteration budgets ([`search`]), and
//! score blending of two models ([`Blend`]).
//!
//! Selection is by NDCG@10 on a validation split the caller cuts from training data only.
//! Like the rest of the crate this module keeps no clocks: callers time fits if they wish.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::eval::MetricSums;
use crate::{
    Als, AlsParams, Bpr, BprParams, Csr, Ease, ItemKnn, ItemScorer, Recency, Rng, ScoreScratch,
    Scored, Similarity, TopK,
};

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
        #[serde(default = "three")]
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

fn three() -> usize {
    3
}

/// Model type names [`Config::sample`] knows.
pub const KINDS: &[&str] = &["als", "ease", "cosine", "bm25", "rp3", "bpr", "popular"];

impl Config {
    /// The model type's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Config::Als { .. } => "als",
            Config::Ease { .. } => "ease",
            Config::Cosine { .. } => "cosine",
            Config::Bm25 { .. } => "bm25",
            Config::Rp3 { .. } => "rp3",
            Config::Bpr { .. } => "bpr",
            Config::Popular => "popular",
        }
    }

    /// A random configuration of model type `kind` (one of [`KINDS`]); `None` for an unknown
    /// type. `iterations` is the full iteration budget of the iterative models.
    pub fn sample(kind: &str, iterations: usize, rng: &mut Rng) -> Option<Self> {
        let log_uniform =
            |rng: &mut Rng, lo: f64, hi: f64| (lo.ln() + rng.f64() * (hi / lo).ln()).exp();
        let pick = |rng: &mut Rng, xs: &[usize]| xs[rng.below(xs.len() as u64) as usize];
        Some(match kind {
            "als" => Config::Als {
                factors: pick(rng, &[32, 64, 128]),
                regularization: log_uniform(rng, 0.01, 100.0) as f32,
                alpha: [0.5f32, 1.0, 2.0, 5.0, 10.0][rng.below(5) as usize],
                iterations,
                cg_steps: 3,
            },
            "ease" => Config::Ease {
                lambda: log_uniform(rng, 10.0, 3000.0),
            },
            "cosine" | "knn" => Config::Cosine {
                k: pick(rng, &[25, 50, 100, 200, 400]),
            },
            "bm25" => Config::Bm25 {
                k: pick(rng, &[25, 50, 100, 200, 400]),
            },
            "rp3" => Config::Rp3 {
                k: pick(rng, &[25, 50, 100, 200, 400]),
                alpha: (0.3 + rng.f64() * 1.2) as f32,
                beta: (rng.f64() * 0.8) as f32,
            },
            "bpr" => Config::Bpr {
                factors: pick(rng, &[32, 64, 128]),
                learning_rate: [0.01f32, 0.02, 0.05, 0.1][rng.below(4) as usize],
                regularization: [0.001f32, 0.01, 0.05][rng.below(3) as usize],
                iterations: iterations.max(1) * 100 / 15,
            },
            "popular" | "pop" => Config::Popular,
            _ => return None,
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
    pub fn fit(
        config: &Config,
        weights: &Csr,
        seed: u64,
        max_items: usize,
    ) -> Result<Self, String> {
        Ok(match *config {
            Config::Als {
                factors,
                regularization,
                alpha,
                iterations,
                cg_steps,
            } => {
                let m = Als::fit(
                    weights,
                    AlsParams {
                        factors,
                        iterations,
                        regularization,
                        alpha,
                        cg_steps,
                        seed,
                        compute_loss: false,
                    },
                    |_| {},
                );
                let scorer = ItemScorer::new(m.item_factors().clone());
                Fitted::Als(m, scorer)
            }
            Config::Bpr {
                factors,
                learning_rate,
                regularization,
                iterations,
            } => {
                let m = Bpr::fit(
                    weights,
                    BprParams {
                        factors,
                        learning_rate,
                        regularization,
                        iterations,
                        seed,
                    },
                );
                let scorer = ItemScorer::new(m.item_factors_with_bias());
                Fitted::Bpr(m, scorer)
            }
            Config::Ease { lambda } => {
                Fitted::Ease(Ease::fit(weights, lambda, max_items).map_err(|e| e.to_string())?)
            }
            Config::Cosine { k } => Fitted::Knn(ItemKnn::fit(weights, Similarity::Cosine, k)),
            Config::Bm25 { k } => Fitted::Knn(ItemKnn::fit(
                weights,
                Similarity::Bm25 { k1: 1.2, b: 0.75 },
                k,
            )),
            Config::Rp3 { k, alpha, beta } => Fitted::Knn(ItemKnn::fit(
                weights,
                Similarity::Rp3Beta { alpha, beta },
                k,
            )),
            Config::Popular => {
                let mut counts = vec![0f32; weights.n_cols()];
                for u in 0..weights.n_rows() {
                    for &i in weights.row(u).0 {
                        counts[i as usize] += 1.0;
                    }
                }
                Fitted::Popular(counts)
            }
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
}

/// A random recency weighting: off in one draw of six, else a half-life of 3 to 50 events.
pub fn sample_recency(rng: &mut Rng) -> Recency {
    let half_life = [0.0f32, 3.0, 5.0, 10.0, 20.0, 50.0][rng.below(6) as usize];
    let floor = [0.1f32, 0.25, 0.5][rng.below(3) as usize];
    if half_life == 0.0 {
        Recency::OFF
    } else {
        Recency { half_life, floor }
    }
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
        }
    }
}

/// Random search with successive halving: `budget` configurations are sampled (model types
/// in turn); iterative ones are first trained with a fraction of their iterations, and only
/// the best `1/eta` of all candidates go on to the next, more expensive rung. Non-iterative
/// models (EASE, kNN, popularity) are exact at any rung and trained once. `run` trains and
/// scores one configuration (validation NDCG@10). Returns every trial; the best full-fidelity
/// trial is the choice.
pub fn search(
    params: &SearchParams,
    mut run: impl FnMut(&Config, Recency) -> Result<f64, String>,
) -> Result<Vec<Trial>, String> {
    if params.budget == 0 || params.kinds.is_empty() {
        return Err("the search needs a budget of at least 1 and one model type".into());
    }
    let mut rng = Rng::seed_from_u64(params.seed ^ 0x7475_6e65);
    let mut candidates = Vec::with_capacity(params.budget);
    for t in 0..params.budget {
        let kind = &params.kinds[t % params.kinds.len()];
        let config = Config::sample(kind, params.iterations, &mut rng)
            .ok_or_else(|| format!("unknown model type {kind:?}: use one of {KINDS:?}"))?;
        let recency = if params.recency && config != Config::Popular {
            sample_recency(&mut rng)
        } else {
            Recency::OFF
        };
        candidates.push((config, recency));
    }
    let mut trials: Vec<Trial> = Vec::new();
    // (candidate, latest score)
    let mut alive: Vec<(usize, f64)> = (0..candidates.len()).map(|c| (c, f64::NAN)).collect();
    let last = params.rungs.len().saturating_sub(1);
    for (rung, &fidelity) in params.rungs.iter().enumerate() {
        for (c, score) in &mut alive {
            let (config, recency) = &candidates[*c];
            // Exact models keep the score of their one training.
            if !score.is_nan() && !config.is_iterative() {
                continue;
            }
            let config = if rung == last {
                config.clone()
            } else {
                config.at_fidelity(fidelity)
            };
            let ndcg = run(&config, *recency)?;
            *score = ndcg;
            trials.push(Trial {
                config,
                recency: *recency,
                candidate: *c,
                rung,
                ndcg,
            });
        }
        if rung < last {
            // Halving within each model type: a model trained with a quarter of its iterations
            // is compared with its own kind, not with exact models.
            let mut next = Vec::with_capacity(alive.len());
            for kind in KINDS {
                let mut group: Vec<(usize, f64)> = alive
                    .iter()
                    .copied()
                    .filter(|(c, _)| candidates[*c].0.kind() == *kind)
                    .collect();
                group.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let keep = if candidates
                    .get(group.first().map_or(0, |g| g.0))
                    .is_some_and(|c| c.0.is_iterative())
                {
                    group.len().div_ceil(params.eta.max(1))
                } else {
                    group.len()
                };
                next.extend(group.into_iter().take(keep));
            }
            next.sort_by_key(|a| a.0);
            alive = next;
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
/// a recency weighting, `fit` trains a configuration on it, `on_pair` hears of each pair as it
/// starts. `None` with fewer than two members.
pub fn best_blend<M: std::ops::Deref<Target = Csr>>(
    members: &[(&Config, Recency)],
    matrix: impl Fn(Recency) -> M,
    fit: impl Fn(&Config, &Csr) -> Result<Fitted, String>,
    valid: &[(u32, Vec<u32>)],
    mut on_pair: impl FnMut(&Config, &Config),
) -> Result<Option<(usize, usize, Blend, f64)>, String> {
    let mut best: Option<(usize, usize, Blend, f64)> = None;
    for (i, &(a, ra)) in members.iter().enumerate() {
        for (j, &(b, rb)) in members.iter().enumerate().skip(i + 1) {
            on_pair(a, b);
            let (ma, mb) = (matrix(ra), matrix(rb));
            let (fa, fb) = (fit(a, &ma)?, fit(b, &mb)?);
            let (blend, ndcg) = Blend::fit((&fa, &ma), (&fb, &mb), valid);
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
        let trials = search(&params, |c, _| {
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

    #[test]
    fn unknown_model_types_and_empty_budgets_are_refused() {
        let p = SearchParams {
            kinds: vec!["nope".into()],
            ..SearchParams::default()
        };
        assert!(search(&p, |_, _| Ok(0.0)).unwrap_err().contains("nope"));
        let p = SearchParams {
            budget: 0,
            ..SearchParams::default()
        };
        assert!(search(&p, |_, _| Ok(0.0)).is_err());
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
