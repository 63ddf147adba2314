//! BPR-MF as a model family: trained on item-kNN's positive matrix (`training.bpr`), a user's
//! vector is folded in from their history by BPR's own user step (items fixed).

use std::any::Any;
use std::sync::Arc;

use bespoke_algo::{Bpr, BprParams, Csr, ModelKind, Scored};

use super::artifact::{self, ArtifactError, BPR_FILE};
use super::meta::Recencies;
use super::meta::{KindParams, ModelMeta, ParamsMeta};
use super::model::{
    Artifact, Contribution, Explanation, FitContext, FitError, ModelFamily, Prepared, Scorer, Term,
};
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
            scorer: super::views::item_scorer(self.item_factors_with_bias()),
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
    /// The folded-in vector of a history (bias slot included) with `epochs` of the user step,
    /// and the sorted positive history it was folded in from.
    fn fold(&self, history: &[(u32, f32)], epochs: usize) -> Option<BprPrepared> {
        let mut items: Vec<u32> = (history.iter())
            .filter(|h| h.1 > 0.0)
            .map(|h| h.0)
            .collect();
        items.sort_unstable();
        let vector = self.fold_in(&items, epochs)?;
        Some(BprPrepared {
            vector,
            history: items,
        })
    }

    /// `v·q_item + b_item` split by latent factor, the bias last.
    fn terms(&self, vector: &[f32], item: u32) -> Vec<Contribution> {
        let row = self.scorer.items().row(item as usize);
        let f = row.len() - 1;
        let mut out: Vec<Contribution> = (0..f)
            .map(|k| Contribution {
                term: Term::Factor(k as u32),
                value: vector[k] * row[k],
            })
            .collect();
        out.push(Contribution {
            term: Term::Bias,
            value: vector[f] * row[f],
        });
        out
    }
}

/// A history as BPR prepares it: the folded-in vector (the 1 of the bias slot last) and the
/// sorted positive history.
#[derive(Debug, Clone)]
pub struct BprPrepared {
    /// The user's vector.
    pub vector: Vec<f32>,
    /// The positive history items, sorted.
    pub history: Vec<u32>,
}

impl Scorer for BprServing {
    fn kind(&self) -> ModelKind {
        ModelKind::Bpr
    }

    fn score(&self, history: &[(u32, f32)], candidates: &[u32]) -> Vec<f32> {
        match self.prepare(history, &ServingSettings::default()) {
            Some(p) => self.score_prepared(&p, candidates),
            None => vec![0.0; candidates.len()],
        }
    }

    fn similar(&self, _: u32, _: usize) -> Option<Vec<Scored>> {
        None
    }

    /// Not by history item: the fold-in is SGD, not linear in the history, so a score splits
    /// only by latent factor (the user's times the item's) and the item's bias.
    fn explain(&self, history: &[(u32, f32)], item: u32) -> Vec<Contribution> {
        match self.fold(history, ServingSettings::default().bpr_fold_in_epochs) {
            Some(p) => self.terms(&p.vector, item),
            None => Vec::new(),
        }
    }

    /// The folded-in vector, with `serving.bpr_fold_in_epochs` of the user step.
    fn prepare(&self, history: &[(u32, f32)], serving: &ServingSettings) -> Option<Prepared> {
        self.fold(history, serving.bpr_fold_in_epochs)
            .map(Prepared::new)
    }

    fn score_prepared(&self, prepared: &Prepared, items: &[u32]) -> Vec<f32> {
        match prepared.get::<BprPrepared>() {
            Some(p) => (items.iter())
                .map(|&c| bespoke_algo::simd::dot(&p.vector, self.scorer.items().row(c as usize)))
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
        let p = prepared.get::<BprPrepared>()?;
        Some(BprServing::top_k(self, &p.vector, n, keep))
    }

    /// The terms by factor; the reasons name the history items closest to the item in BPR's
    /// factors (its score has no split by history item).
    fn explain_prepared(
        &self,
        prepared: &Prepared,
        items: &[u32],
        terms: bool,
    ) -> Vec<Explanation> {
        let Some(p) = prepared.get::<BprPrepared>() else {
            return vec![Explanation::default(); items.len()];
        };
        (items.iter())
            .map(|&c| Explanation {
                because: BprServing::explain(self, &p.history, c),
                terms: if terms {
                    self.terms(&p.vector, c)
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
