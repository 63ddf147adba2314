//! BPR-MF as a model family: trained on item-kNN's positive matrix (`training.bpr`), a user's
//! vector is folded in from their history by BPR's own user step (items fixed).

use std::any::Any;
use std::sync::Arc;

use bespoke_algo::{Bpr, BprParams, Csr, ItemScorer, ModelKind, Scored};

use super::artifact::{self, ArtifactError, BPR_FILE};
use super::meta::Recencies;
use super::meta::{KindParams, ModelMeta, ParamsMeta};
use super::model::{Artifact, Contribution, FitContext, FitError, ModelFamily, Scorer, Term};
use super::snapshot::Progress;
use super::views::BprServing;
use crate::settings::{ServingSettings, TrainingSettings};

/// BPR.
#[derive(Debug)]
pub struct Family;

impl ModelFamily for Family {
    fn kind(&self) -> ModelKind {
        ModelKind::Bpr
    }

    fn matrix_of(&self) -> ModelKind {
        ModelKind::Knn
    }

    /// With `training.bpr` only: its SGD costs about 20× iALS on the same data.
    fn trains(&self, t: &TrainingSettings, _: usize) -> bool {
        t.bpr
    }

    fn fit(&self, x: &Csr, ctx: &mut FitContext<'_>) -> Result<Box<dyn Artifact>, FitError> {
        (ctx.progress)(Progress::Stage("training BPR"));
        Ok(Box::new(Bpr::fit(x, ctx.settings.bpr_params())))
    }

    fn record(&self, t: &TrainingSettings, recency: &Recencies, params: &mut ParamsMeta) {
        // Trained on item-kNN's matrix, so under its weighting.
        params.bpr = Some(KindParams::new(t.bpr_params(), ModelKind::Knn, recency));
    }

    fn files(&self) -> &'static [&'static str] {
        &[BPR_FILE]
    }

    fn decode(&self, files: &[Vec<u8>]) -> Result<Box<dyn Artifact>, ArtifactError> {
        Ok(Box::new(artifact::decode_bpr(&files[0])?))
    }
}

impl Artifact for Bpr {
    fn kind(&self) -> ModelKind {
        ModelKind::Bpr
    }

    fn encode(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![(BPR_FILE, artifact::encode_bpr(self))]
    }

    fn n_items(&self) -> usize {
        self.item_factors().rows()
    }

    fn user_row(&self, user: usize) -> Option<Vec<f32>> {
        Some(self.user_factors().row(user).to_vec())
    }

    fn into_scorer(self: Box<Self>, meta: &ModelMeta, _: usize) -> Arc<dyn Scorer> {
        let recorded = meta
            .params
            .bpr
            .as_ref()
            .map_or_else(BprParams::default, |b| b.params);
        Arc::new(BprServing {
            scorer: ItemScorer::new(self.item_factors_with_bias()),
            // The factor count is the file's; the epochs are serving's own.
            params: BprParams {
                factors: self.item_factors().dim(),
                iterations: 0,
                ..recorded
            },
            model: *self,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl BprServing {
    /// The folded-in vector of a history (bias slot included), with serving's default epochs.
    fn vector(&self, history: &[(u32, f32)]) -> Option<Vec<f32>> {
        let items: Vec<u32> = (history.iter())
            .filter(|h| h.1 > 0.0)
            .map(|h| h.0)
            .collect();
        let p = BprParams {
            iterations: ServingSettings::default().bpr_fold_in_epochs,
            ..self.params
        };
        self.model.fold_in(&items, &p)
    }
}

impl Scorer for BprServing {
    fn kind(&self) -> ModelKind {
        ModelKind::Bpr
    }

    fn score(&self, history: &[(u32, f32)], candidates: &[u32]) -> Vec<f32> {
        match self.vector(history) {
            Some(v) => (candidates.iter())
                .map(|&c| bespoke_algo::simd::dot(&v, self.scorer.items().row(c as usize)))
                .collect(),
            None => vec![0.0; candidates.len()],
        }
    }

    fn similar(&self, _: u32, _: usize) -> Option<Vec<Scored>> {
        None
    }

    /// Not by history item: the fold-in is SGD, not linear in the history, so a score splits
    /// only into the user's factors as a whole and the item's bias.
    fn explain(&self, history: &[(u32, f32)], item: u32) -> Vec<Contribution> {
        let Some(v) = self.vector(history) else {
            return Vec::new();
        };
        let row = self.scorer.items().row(item as usize);
        let f = row.len() - 1;
        vec![
            Contribution {
                term: Term::Latent,
                value: bespoke_algo::simd::dot(&v[..f], &row[..f]),
            },
            Contribution {
                term: Term::Bias,
                value: row[f],
            },
        ]
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
