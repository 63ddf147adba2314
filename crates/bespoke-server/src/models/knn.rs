//! Item-kNN (cosine, BM25 or RP3beta similarities) as a model family: trained on positive
//! pairs, a score is the sum of the history items' similarities to the candidate.

use std::any::Any;
use std::sync::Arc;

use bespoke_algo::{Csr, ItemKnn, ModelKind, Scored};

use super::artifact::{self, ArtifactError, KNN_FILE};
use super::meta::Recencies;
use super::meta::{KnnMeta, ModelMeta, ParamsMeta};
use super::model::{
    self, Artifact, Contribution, FitContext, FitError, ModelFamily, Prepared, Scorer,
};
use super::views::KnnServing;
use crate::settings::{ServingSettings, TrainingSettings};

/// Item-kNN.
#[derive(Debug)]
pub struct Family;

impl ModelFamily for Family {
    fn kind(&self) -> ModelKind {
        ModelKind::Knn
    }

    /// Always: it serves similar items by default.
    fn trains(&self, _: &TrainingSettings, _: usize) -> bool {
        true
    }

    fn fit(&self, x: &Csr, ctx: &mut FitContext<'_>) -> Result<Box<dyn Artifact>, FitError> {
        let p = ctx.settings.knn_params();
        Ok(Box::new(ItemKnn::fit(x, p.similarity(), p.k)))
    }

    fn record(&self, t: &TrainingSettings, recency: &Recencies, params: &mut ParamsMeta) {
        params.knn = Some(KnnMeta::new(&t.knn_params(), recency));
    }

    fn files(&self) -> &'static [&'static str] {
        &[KNN_FILE]
    }

    fn decode(&self, files: &[Vec<u8>]) -> Result<Box<dyn Artifact>, ArtifactError> {
        Ok(Box::new(artifact::decode_knn(&files[0])?))
    }
}

impl Artifact for ItemKnn {
    fn kind(&self) -> ModelKind {
        ModelKind::Knn
    }

    fn encode(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![(KNN_FILE, artifact::encode_knn(self))]
    }

    fn n_items(&self) -> usize {
        ItemKnn::n_items(self)
    }

    /// Item–item similarities only.
    fn user_row(&self, _: usize) -> Option<Vec<f32>> {
        None
    }

    fn into_scorer(self: Box<Self>, _: &ModelMeta, _: usize) -> Arc<dyn Scorer> {
        Arc::new(KnnServing { model: *self })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Scorer for KnnServing {
    fn kind(&self) -> ModelKind {
        ModelKind::Knn
    }

    fn score(&self, history: &[(u32, f32)], candidates: &[u32]) -> Vec<f32> {
        let history = model::positive(history);
        (candidates.iter())
            .map(|&c| self.model.explain(&history, c).iter().map(|p| p.1).sum())
            .collect()
    }

    fn similar(&self, item: u32, n: usize) -> Option<Vec<Scored>> {
        Some(self.neighbours(item, n, |_| true))
    }

    /// Exact: a score is the sum of `w_i · sim(i, item)` over the history.
    fn explain(&self, history: &[(u32, f32)], item: u32) -> Vec<Contribution> {
        model::item_terms(self.model.explain(&model::positive(history), item))
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
        Some(self.recommend(history, n, keep))
    }

    fn item_term(&self) -> &'static str {
        "neighbour"
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
