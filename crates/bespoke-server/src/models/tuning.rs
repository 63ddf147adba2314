//! Tuning from the server (`POST /v1/models/tune`, `training.tune_interval_hours`): the same
//! search as `bespoke tune` over the served model types (iALS, EASE, cosine / BM25 / RP3beta
//! item-kNN) (`bespoke_algo::tune`: Latin-hypercube draws per type, then draws near the
//! leading types' best, successive halving, the recency weighting searched with the models,
//! blends of the best model types), run on the
//! store's own data, validated on the latest 20% of each user's positive pairs.
//!
//! The result is recorded in the metadata of the model version trained with it (`tuning`), and
//! every later training run reads it back from the active version, so a tuned configuration
//! survives restarts and is used until the next tuning. `model=auto` (the default
//! `serving.default_model`) serves what tuning chose.

use bespoke_algo::tune::{self, Config, SearchParams};
use bespoke_algo::{Csr, Recency};
use serde::{Deserialize, Serialize};

use super::training::{Progress, Snapshot};
use crate::settings::{KnnSimilarity, Settings};

/// What tuning chose to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Serve {
    /// One model: `als`, `ease` or `knn`.
    Single(String),
    /// Two models' scores, each divided by the user's top score, weighted `weight` and
    /// `1 - weight`.
    Blend {
        /// The two models (`als`, `ease`, `knn`).
        models: [String; 2],
        /// Weight of the first.
        weight: f32,
    },
}

/// A tuned model: its configuration and the recency weighting of its training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunedModel {
    /// Hyperparameters.
    pub config: Config,
    /// Recency weighting.
    pub recency: Recency,
    /// Its validation NDCG@10.
    pub validation_ndcg: f64,
}

/// The result of a tuning run, as `meta.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuned {
    /// Configurations sampled.
    pub budget: usize,
    /// When it ran (RFC 3339).
    pub tuned_at: String,
    /// The best configuration of each servable model type: `als`, `ease`, `knn`.
    pub models: Vec<(String, TunedModel)>,
    /// What `model=auto` serves.
    pub serve: Serve,
    /// Validation NDCG@10 of `serve`.
    pub validation_ndcg: f64,
    /// Every trial: model, rung, parameters, validation NDCG@10.
    pub trials: Vec<serde_json::Value>,
}

impl Tuned {
    /// The tuned entry of a served model type (`als`, `ease`, `knn`).
    pub fn model(&self, name: &str) -> Option<&TunedModel> {
        self.models.iter().find(|m| m.0 == name).map(|m| &m.1)
    }

    /// Reads the `tuning` section of a model version's metadata.
    pub fn from_meta(meta: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(meta.get("tuning")?.clone()).ok()
    }
}

/// The served model type a configuration belongs to.
fn served_kind(c: &Config) -> Option<&'static str> {
    match c {
        Config::Als { .. } => Some("als"),
        Config::Ease { .. } => Some("ease"),
        Config::Cosine { .. } | Config::Bm25 { .. } | Config::Rp3 { .. } => Some("knn"),
        _ => None,
    }
}

/// Runs the search on `snapshot` (budget `budget`) and returns what it chose; `None` when no
/// user has enough positive pairs to validate on.
pub fn tune(
    snapshot: &Snapshot,
    settings: &Settings,
    budget: usize,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Option<Tuned>, String> {
    let t = &settings.training;
    let (train, valid) = snapshot.split_pairs();
    if valid.is_empty() {
        return Ok(None);
    }
    let mut kinds: Vec<String> = ["als", "bm25", "cosine", "rp3"].map(str::to_owned).to_vec();
    if snapshot.item_keys.len() <= t.ease_max_items {
        kinds.insert(1, "ease".to_owned());
    }
    let params = SearchParams {
        budget: budget.max(1),
        kinds,
        iterations: t.iterations,
        rungs: vec![0.25, 1.0],
        eta: 3,
        seed: t.seed,
        recency: true,
        local_share: tune::LOCAL_SHARE,
        max_share: tune::MAX_SHARE,
    };
    let matrix = |r: Recency| snapshot.positive_matrix(&train, r);
    let fitter = tune::Fitter::new(t.seed, t.ease_max_items);
    let fit = |c: &Config, r: Recency, m: &Csr| fitter.fit(c, m, r);
    let validate = |c: &Config, r: Recency| -> Result<f64, String> {
        let m = matrix(r);
        // One configuration that cannot be fitted (EASE's system not positive definite, say)
        // scores nothing rather than stopping the search.
        let f = match fit(c, r, &m) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(target: "train::tuning", model = c.kind(), error = %e, "trial failed");
                return Ok(0.0);
            }
        };
        let sums = tune::evaluate(m.n_cols(), &valid, |u, s| f.recommend(&m, u, 100, s));
        Ok(sums.means()["ndcg@10"])
    };
    let mut done = 0usize;
    let trials = tune::search(&params, |c, r| {
        done += 1;
        progress(Progress::Stage(&format!(
            "tuning: trial {done} ({})",
            c.kind()
        )));
        validate(c, r)
    })?;
    let best = tune::best(&trials, &params).ok_or("no trial finished")?;
    // The best configuration of each servable type (the better of the two kNN similarities).
    let mut models: Vec<(String, TunedModel)> = Vec::new();
    for t in tune::best_per_kind(&trials, &params) {
        let Some(kind) = served_kind(&t.config) else {
            continue;
        };
        if models.iter().all(|m| m.0 != kind) {
            models.push((
                kind.to_owned(),
                TunedModel {
                    config: t.config.clone(),
                    recency: t.recency,
                    validation_ndcg: t.ndcg,
                },
            ));
        }
    }
    let mut serve = Serve::Single(served_kind(&best.config).unwrap_or("als").to_owned());
    let mut validation_ndcg = best.ndcg;
    // Blends of the best served types, pair by pair; kept when one beats the best single model.
    let members: Vec<(&Config, Recency)> =
        models.iter().map(|m| (&m.1.config, m.1.recency)).collect();
    let blended = tune::best_blend(
        &members,
        |r| std::borrow::Cow::<Csr>::Owned(matrix(r)),
        fit,
        &valid,
        |a, b| {
            progress(Progress::Stage(&format!(
                "tuning: blending {} and {}",
                a.kind(),
                b.kind()
            )))
        },
    )?;
    if let Some((i, j, blend, ndcg)) = blended
        && ndcg > validation_ndcg
    {
        validation_ndcg = ndcg;
        serve = Serve::Blend {
            models: [models[i].0.clone(), models[j].0.clone()],
            weight: blend.weight,
        };
    }
    let trials = trials
        .iter()
        .map(|t| {
            serde_json::json!({"model": t.config.kind(), "candidate": t.candidate, "rung": t.rung,
            "params": t.config, "recency": t.recency, "validation_ndcg@10": t.ndcg})
        })
        .collect();
    Ok(Some(Tuned {
        budget: params.budget,
        tuned_at: crate::time::format_rfc3339(crate::engine::now_ms()),
        models,
        serve,
        validation_ndcg,
        trials,
    }))
}

/// The training settings with the tuned hyperparameters applied, and the recency of each
/// model (`als`, `knn`, `ease`).
pub fn apply(settings: &Settings, tuned: Option<&Tuned>) -> (Settings, [Recency; 3]) {
    let mut s = settings.clone();
    let mut recency = [Recency::OFF; 3];
    let Some(tuned) = tuned else {
        return (s, recency);
    };
    let t = &mut s.training;
    if let Some(m) = tuned.model("als")
        && let Config::Als {
            factors,
            regularization,
            alpha,
            iterations,
            cg_steps,
        } = m.config
    {
        (
            t.factors,
            t.regularization,
            t.alpha,
            t.iterations,
            t.cg_steps,
        ) = (factors, regularization, alpha, iterations, cg_steps);
        recency[0] = m.recency;
    }
    if let Some(m) = tuned.model("knn") {
        match m.config {
            Config::Cosine { k } => (t.knn_similarity, t.knn_k) = (KnnSimilarity::Cosine, k),
            Config::Bm25 { k } => (t.knn_similarity, t.knn_k) = (KnnSimilarity::Bm25, k),
            Config::Rp3 { k, alpha, beta } => {
                (t.knn_similarity, t.knn_k) = (KnnSimilarity::Rp3, k);
                (t.rp3_alpha, t.rp3_beta) = (alpha, beta);
            }
            _ => {}
        }
        recency[1] = m.recency;
    }
    if let Some(m) = tuned.model("ease")
        && let Config::Ease { lambda } = m.config
    {
        t.ease_lambda = lambda;
        recency[2] = m.recency;
    }
    (s, recency)
}
