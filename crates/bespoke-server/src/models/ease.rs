//! EASE (Steck 2019) as a model family: a dense items × items weight matrix, trained on
//! positive pairs when the catalog is small enough (`training.ease_max_items`).

use std::any::Any;
use std::sync::Arc;

use bespoke_algo::{Csr, Ease, ModelKind, Scored};

use super::artifact::{self, ArtifactError, EASE_FILE};
use super::meta::Recencies;
use super::meta::{KindParams, ModelMeta, ParamsMeta};
use super::model::{
    self, Artifact, Contribution, FitContext, FitError, ModelFamily, Prepared, Scorer,
};
use super::snapshot::Progress;
use crate::settings::{ServingSettings, TrainingSettings};

/// EASE.
#[derive(Debug)]
pub struct Family;

/// A trained EASE and the λ it was trained with (written into its file).
#[derive(Debug)]
pub struct EaseArtifact {
    /// The model.
    pub model: Ease,
    /// Its L2 weight.
    pub lambda: f64,
}

impl ModelFamily for Family {
    fn kind(&self) -> ModelKind {
        ModelKind::Ease
    }

    fn trains(&self, t: &TrainingSettings, n_items: usize) -> bool {
        n_items > 0 && n_items <= t.ease_max_items
    }

    fn fit(&self, x: &Csr, ctx: &mut FitContext<'_>) -> Result<Box<dyn Artifact>, FitError> {
        (ctx.progress)(Progress::Stage("training EASE"));
        let t = ctx.settings;
        let lambda = t.ease_params().lambda;
        let model = Ease::fit(x, lambda, t.ease_max_items).map_err(|e| FitError {
            kind: ModelKind::Ease,
            message: e.to_string(),
        })?;
        Ok(Box::new(EaseArtifact { model, lambda }))
    }

    fn record(&self, t: &TrainingSettings, recency: &Recencies, params: &mut ParamsMeta) {
        params.ease = Some(KindParams::new(t.ease_params(), ModelKind::Ease, recency));
    }

    fn files(&self) -> &'static [&'static str] {
        &[EASE_FILE]
    }

    fn decode(&self, files: &[Vec<u8>]) -> Result<Box<dyn Artifact>, ArtifactError> {
        let (model, lambda) = artifact::decode_ease(&files[0])?;
        Ok(Box::new(EaseArtifact { model, lambda }))
    }
}

impl Artifact for EaseArtifact {
    fn kind(&self) -> ModelKind {
        ModelKind::Ease
    }

    fn encode(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![(EASE_FILE, artifact::encode_ease(&self.model, self.lambda))]
    }

    fn n_items(&self) -> usize {
        self.model.n_items()
    }

    /// Item–item weights only.
    fn user_row(&self, _: usize) -> Option<Vec<f32>> {
        None
    }

    fn into_scorer(self: Box<Self>, _: &ModelMeta, _: usize) -> Arc<dyn Scorer> {
        Arc::new(self.model)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Scorer for Ease {
    fn kind(&self) -> ModelKind {
        ModelKind::Ease
    }

    fn score(&self, history: &[(u32, f32)], candidates: &[u32]) -> Vec<f32> {
        let history = model::positive(history);
        (candidates.iter())
            .map(|&c| history.iter().map(|&(i, w)| w * self.weight(i, c)).sum())
            .collect()
    }

    /// EASE's weights are not a similarity (they are asymmetric and signed).
    fn similar(&self, _: u32, _: usize) -> Option<Vec<Scored>> {
        None
    }

    /// Exact: a score is the sum of `w_i · B_i,item` over the history.
    fn explain(&self, history: &[(u32, f32)], item: u32) -> Vec<Contribution> {
        model::item_terms(Ease::explain(self, &model::positive(history), item))
    }

    /// The positive history.
    fn prepare(&self, history: &[(u32, f32)], _: &ServingSettings) -> Option<Prepared> {
        model::positive_prepared(history)
    }

    fn top_k(
        &self,
        prepared: &Prepared,
        n: usize,
        keep: &mut dyn FnMut(u32) -> bool,
    ) -> Option<Vec<Scored>> {
        let history = prepared.get::<Vec<(u32, f32)>>()?;
        let mut scores = vec![0.0f32; self.n_items()];
        let mut top = bespoke_algo::TopK::new(n);
        Some(self.recommend(history, n, keep, &mut scores, &mut top))
    }

    fn item_term(&self) -> &'static str {
        "item_weight"
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
