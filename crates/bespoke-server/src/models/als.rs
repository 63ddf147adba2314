//! iALS (Hu, Koren and Volinsky) as a model family: trained on the signed weight matrix,
//! served with an exact fold-in of the user's current history, explained by history item.

use std::any::Any;
use std::sync::Arc;

use bespoke_algo::{Als, AlsParams, Csr, ModelKind, Scored, UserVector};

use super::artifact::{self, ALS_FILE, ArtifactError};
use super::meta::Recencies;
use super::meta::{KindParams, ModelMeta, ParamsMeta};
use super::model::{
    self, Artifact, Contribution, Explanation, FitContext, FitError, ModelFamily, Prepared, Scorer,
};
use super::snapshot::{Progress, key_seed};
use super::views::AlsServing;
use crate::settings::{ServingSettings, TrainingSettings};

/// iALS.
#[derive(Debug)]
pub struct Family;

impl ModelFamily for Family {
    fn kind(&self) -> ModelKind {
        ModelKind::Als
    }

    fn signed(&self) -> bool {
        true
    }

    /// Always: it is the default model, and the content model maps into its factors.
    fn trains(&self, _: &TrainingSettings, _: usize) -> bool {
        true
    }

    fn fit(&self, x: &Csr, ctx: &mut FitContext<'_>) -> Result<Box<dyn Artifact>, FitError> {
        let t = ctx.settings;
        // Each row starts from a seed of its key, so the model does not depend on which other
        // users and items exist (see training's module docs).
        let user_seeds: Vec<u64> = (ctx.snapshot.user_keys.iter())
            .map(|k| key_seed(k, t.seed))
            .collect();
        let item_seeds: Vec<u64> = (ctx.snapshot.item_keys.iter())
            .map(|k| key_seed(k, t.seed ^ 1))
            .collect();
        let params = AlsParams {
            compute_loss: true,
            ..t.als_params()
        };
        let (label, progress) = (ctx.label, &mut *ctx.progress);
        let model = Als::fit_seeded(x, params, &user_seeds, &item_seeds, |report| {
            progress(Progress::Iteration {
                fit: label,
                report,
                total: params.iterations,
            })
        });
        Ok(Box::new(model))
    }

    fn record(&self, t: &TrainingSettings, recency: &Recencies, params: &mut ParamsMeta) {
        params.als = Some(KindParams::new(t.als_params(), ModelKind::Als, recency));
    }

    fn files(&self) -> &'static [&'static str] {
        &[ALS_FILE]
    }

    fn decode(&self, files: &[Vec<u8>]) -> Result<Box<dyn Artifact>, ArtifactError> {
        Ok(Box::new(artifact::decode_als(&files[0])?))
    }
}

impl Artifact for Als {
    fn kind(&self) -> ModelKind {
        ModelKind::Als
    }

    fn encode(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![(ALS_FILE, artifact::encode_als(self))]
    }

    fn n_items(&self) -> usize {
        self.item_factors().rows()
    }

    fn user_row(&self, user: usize) -> Option<Vec<f32>> {
        Some(self.user_factors().row(user).to_vec())
    }

    fn into_scorer(self: Box<Self>, _: &ModelMeta, cache_capacity: usize) -> Arc<dyn Scorer> {
        Arc::new(AlsServing::new(&self, cache_capacity))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Scorer for AlsServing {
    fn kind(&self) -> ModelKind {
        ModelKind::Als
    }

    fn score(&self, history: &[(u32, f32)], candidates: &[u32]) -> Vec<f32> {
        match self.session_vector(history, &[]) {
            Some(v) => (candidates.iter())
                .map(|&c| bespoke_algo::simd::dot(&v.x, self.item_vector(c)))
                .collect(),
            None => vec![0.0; candidates.len()],
        }
    }

    fn similar(&self, item: u32, n: usize) -> Option<Vec<Scored>> {
        Some(AlsServing::similar(self, item, n, |_| true, None))
    }

    /// Exact: the fold-in's contributions (Hu, Koren and Volinsky §5) sum to `x_u · y_i`.
    fn explain(&self, history: &[(u32, f32)], item: u32) -> Vec<Contribution> {
        match self.session_vector(history, &[]) {
            Some(v) => model::item_terms(AlsServing::explain(self, &v, item)),
            None => Vec::new(),
        }
    }

    /// The solved [`UserVector`] (serving passes a cached one, or a session's with its new
    /// items, as [`Prepared::shared`]).
    fn prepare(&self, history: &[(u32, f32)], _: &ServingSettings) -> Option<Prepared> {
        self.session_vector(history, &[]).map(Prepared::new)
    }

    fn score_prepared(&self, prepared: &Prepared, items: &[u32]) -> Vec<f32> {
        match prepared.get::<UserVector>() {
            Some(v) => (items.iter())
                .map(|&c| bespoke_algo::simd::dot(&v.x, self.item_vector(c)))
                .collect(),
            None => vec![0.0; items.len()],
        }
    }

    fn top_k(
        &self,
        prepared: &Prepared,
        n: usize,
        keep: &mut dyn FnMut(u32) -> bool,
    ) -> Option<Vec<Scored>> {
        let v = prepared.get::<UserVector>()?;
        Some(AlsServing::top_k(self, &v.x, n, keep))
    }

    /// All items in one blocked solve against the user's factor.
    fn explain_prepared(
        &self,
        prepared: &Prepared,
        items: &[u32],
        terms: bool,
    ) -> Vec<Explanation> {
        match prepared.get::<UserVector>() {
            Some(v) => (self.explain_many(v, items).into_iter())
                .map(|parts| Explanation::from_items(parts, terms))
                .collect(),
            None => vec![Explanation::default(); items.len()],
        }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
