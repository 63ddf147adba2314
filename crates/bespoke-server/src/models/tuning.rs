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

use bespoke_algo::tune::{self, Config, SearchParams, TuneError};
use bespoke_algo::{Csr, ModelKind, Recency};

use super::meta::{Recencies, Serve, Tuned, TunedModel};
use super::snapshot::{Progress, Snapshot};
use crate::settings::Settings;

/// The served model family a configuration belongs to (`None` for those the server does not
/// serve from tuning: BPR and popularity).
fn served_kind(c: &Config) -> Option<ModelKind> {
    Some(c.model_kind().family()).filter(|k| SERVED.contains(k))
}

/// The families tuning chooses among for `model=auto`.
const SERVED: [ModelKind; 3] = [ModelKind::Als, ModelKind::Ease, ModelKind::Knn];

/// Runs the search on `snapshot` (budget `budget`) and returns what it chose; `None` when no
/// user has enough positive pairs to validate on.
pub fn tune(
    snapshot: &Snapshot,
    settings: &Settings,
    budget: usize,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Option<Tuned>, TuneError> {
    let t = &settings.training;
    let (train, valid) = snapshot.split_pairs();
    if valid.is_empty() {
        return Ok(None);
    }
    let mut kinds = vec![
        ModelKind::Als,
        ModelKind::Bm25,
        ModelKind::Cosine,
        ModelKind::Rp3,
    ];
    if snapshot.item_keys.len() <= t.ease_max_items {
        kinds.insert(1, ModelKind::Ease);
    }
    let kinds = kinds.iter().map(ModelKind::to_string).collect();
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
    let validate = |c: &Config, r: Recency| -> Result<f64, TuneError> {
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
    let best = tune::best(&trials, &params).ok_or(TuneError::NoTrial)?;
    // The best configuration of each servable type (the better of the two kNN similarities).
    let mut models: Vec<(ModelKind, TunedModel)> = Vec::new();
    for t in tune::best_per_kind(&trials, &params) {
        let Some(kind) = served_kind(&t.config) else {
            continue;
        };
        if models.iter().all(|m| m.0 != kind) {
            models.push((
                kind,
                TunedModel {
                    config: t.config.clone(),
                    recency: t.recency,
                    validation_ndcg: t.ndcg,
                },
            ));
        }
    }
    let mut serve = served_kind(&best.config).map_or_else(Serve::default, Serve::Single);
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
            models: [models[i].0, models[j].0],
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
        tuned_at: crate::time::format_rfc3339(crate::time::now_ms()),
        models,
        serve,
        validation_ndcg,
        trials,
    }))
}

/// The training settings with the tuned hyperparameters applied, and the recency of each
/// model family.
pub fn apply(settings: &Settings, tuned: Option<&Tuned>) -> (Settings, Recencies) {
    let mut s = settings.clone();
    let mut recency = Recencies::default();
    let Some(tuned) = tuned else {
        return (s, recency);
    };
    let t = &mut s.training;
    for kind in SERVED {
        let Some(m) = tuned.model(kind) else { continue };
        let applied = if let Some(p) = m.config.als_params(t.als_params()) {
            t.set_als_params(&p);
            true
        } else if let Some(p) = m.config.knn_params(t.knn_params()) {
            t.set_knn_params(&p);
            true
        } else if let Some(p) = m.config.ease_params() {
            t.set_ease_params(&p);
            true
        } else {
            false
        };
        if applied {
            recency.set(kind, m.recency);
        }
    }
    (s, recency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recencies_are_kept_per_family_and_recorded_only_when_on() {
        let mut r = Recencies::default();
        let on = Recency {
            half_life: 5.0,
            floor: 0.25,
        };
        r.set(ModelKind::Bm25, on);
        // A kNN variant sets and reads the family's weighting.
        assert_eq!(r.get(ModelKind::Knn), on);
        assert_eq!(r.get(ModelKind::Rp3), on);
        assert_eq!(r.recorded(ModelKind::Knn), Some(on));
        assert_eq!(r.get(ModelKind::Als), Recency::OFF);
        assert_eq!(r.recorded(ModelKind::Als), None);
    }

    #[test]
    fn serve_keeps_its_json() {
        let blend = Serve::Blend {
            models: [ModelKind::Als, ModelKind::Ease],
            weight: 0.5,
        };
        let json = serde_json::to_value(&blend).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"blend": {"models": ["als", "ease"], "weight": 0.5}})
        );
        assert_eq!(
            serde_json::to_value(Serve::default()).unwrap(),
            serde_json::json!({"single": "als"})
        );
    }
}
