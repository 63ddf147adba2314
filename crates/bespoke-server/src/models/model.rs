//! Models as one abstraction, in three stages (tantivy's `Query` → `Weight` → `Scorer`):
//!
//! - a [`ModelFamily`] is what was asked: it decides whether a run trains it, fits it from an
//!   interaction matrix ([`Csr`]) and its typed hyperparameters (read from the settings, whose
//!   defaults are the parameter structs of `bespoke-algo`), and reads its files back;
//! - an [`Artifact`] is what was trained, bound to one model version: it encodes its files
//!   (safetensors; each declares the tensors with one row per user, see
//!   [`super::artifact::USER_ROWS`], so erasure, export and retention walk every file without
//!   per-model code) and becomes a scorer for serving;
//! - a [`Scorer`] serves: it scores a user's history against candidate items, finds similar
//!   items where the model can, and explains a score as contributions that sum to it.
//!
//! [`super::REGISTRY`] lists every family, one line each; training and loading iterate it. The hybrid
//! content model is not a family: it is fitted onto iALS's factors, not from interactions, and
//! it places items without events rather than ranking a history (see [`super::content`]).

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use bespoke_algo::{Csr, ModelKind, Scored};

use super::artifact::ArtifactError;
use super::meta::Recencies;
use super::meta::{ModelMeta, ParamsMeta};
use super::snapshot::{Progress, Snapshot};
use crate::settings::{ServingSettings, TrainingSettings};

/// What a family is fitted with besides its matrix.
pub struct FitContext<'a> {
    /// The data (its keys seed the factor rows).
    pub snapshot: &'a Snapshot,
    /// The training settings, tuned values applied.
    pub settings: &'a TrainingSettings,
    /// Which fit this is (`evaluation` or `final`).
    pub label: &'a str,
    /// Where progress goes.
    pub progress: &'a mut dyn FnMut(Progress<'_>),
}

impl std::fmt::Debug for FitContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FitContext")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Why a family could not be fitted on this data (the run goes on without it).
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FitError {
    /// The family.
    pub kind: ModelKind,
    /// What went wrong.
    pub message: String,
}

/// A model family: hyperparameters in, trained artifact out.
pub trait ModelFamily: Sync {
    /// Its kind.
    fn kind(&self) -> ModelKind;

    /// The family whose training matrix, and recency weighting, it trains on: its own unless
    /// it shares one (BPR trains on item-kNN's).
    fn matrix_of(&self) -> ModelKind {
        self.kind()
    }

    /// Whether its matrix keeps pairs of negative weight (iALS reads them as a confident
    /// "no"); the others train on positive pairs only.
    fn signed(&self) -> bool {
        false
    }

    /// Whether a run with these settings trains it on a catalog of `n_items`.
    fn trains(&self, settings: &TrainingSettings, n_items: usize) -> bool;

    /// Fits it on `x` (users × items, in the snapshot's key order).
    fn fit(&self, x: &Csr, ctx: &mut FitContext<'_>) -> Result<Box<dyn Artifact>, FitError>;

    /// Records its hyperparameters and recency weighting in the version's metadata.
    fn record(&self, settings: &TrainingSettings, recency: &Recencies, params: &mut ParamsMeta);

    /// The files its artifact writes, in the order [`ModelFamily::decode`] takes them.
    fn files(&self) -> &'static [&'static str];

    /// Reads an artifact written by [`Artifact::encode`] (`files` in [`ModelFamily::files`]
    /// order).
    fn decode(&self, files: &[Vec<u8>]) -> Result<Box<dyn Artifact>, ArtifactError>;
}

/// A trained model of one version.
pub trait Artifact: Any + Send + Sync + Debug {
    /// Its kind.
    fn kind(&self) -> ModelKind;

    /// Its files, named as in [`ModelFamily::files`].
    fn encode(&self) -> Vec<(&'static str, Vec<u8>)>;

    /// Items it has rows for (those of `items.json`).
    fn n_items(&self) -> usize;

    /// Everything it holds for user row `user` (of `users.json`), tensor after tensor; `None`
    /// when it holds nothing per user. Erasure zeroes exactly this.
    fn user_row(&self, user: usize) -> Option<Vec<f32>>;

    /// Becomes a scorer for serving, the version's metadata at hand.
    fn into_scorer(self: Box<Self>, meta: &ModelMeta, cache_capacity: usize) -> Arc<dyn Scorer>;

    /// For callers that need the concrete model (the content model reads iALS's factors).
    fn as_any(&self) -> &dyn Any;
}

/// What one term of an explanation stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Term {
    /// A history item (model row): "because you interacted with it".
    Item(u32),
    /// The item's own bias (popularity, for BPR).
    Bias,
    /// One latent factor of the user's vector times the item's, when the model cannot split
    /// a score by history item (BPR's fold-in is not linear in the history).
    Factor(u32),
}

/// One term of an explanation and what it adds to the score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// The term.
    pub term: Term,
    /// What it adds.
    pub value: f32,
}

/// A trained model, ready to serve.
///
/// A history is `(model item, weight)` sorted by item, as training reads a user's pairs;
/// models trained on positive pairs only ignore the others. An empty history, or one of items
/// the model cannot use, scores every candidate 0 (serving then falls back to popularity).
pub trait Scorer: Any + Send + Sync + Debug {
    /// Its kind.
    fn kind(&self) -> ModelKind;

    /// The score of each of `candidates` (model items) for `history`.
    fn score(&self, history: &[(u32, f32)], candidates: &[u32]) -> Vec<f32>;

    /// The `n` items most similar to model item `item` (itself excluded), best first; `None`
    /// when the model has no item-to-item similarity.
    fn similar(&self, item: u32, n: usize) -> Option<Vec<Scored>>;

    /// The score of `item` for `history` split into contributions that sum to it (up to f32
    /// rounding).
    fn explain(&self, history: &[(u32, f32)], item: u32) -> Vec<Contribution>;

    /// What the model derives from `history` once to score and explain many items (iALS: the
    /// solved vector and its factor; BPR: the folded-in vector); `None` when the history holds
    /// nothing the model can use. By default the history itself.
    fn prepare(&self, history: &[(u32, f32)], serving: &ServingSettings) -> Option<Prepared> {
        let _ = serving;
        (!history.is_empty()).then(|| Prepared::new(history.to_vec()))
    }

    /// The scores of `items` for a prepared history (what [`Scorer::score`] gives for it).
    fn score_prepared(&self, prepared: &Prepared, items: &[u32]) -> Vec<f32> {
        match prepared.get::<Vec<(u32, f32)>>() {
            Some(history) => self.score(history, items),
            None => vec![0.0; items.len()],
        }
    }

    /// The explanation of each of `items` for a prepared history, in order: the history items
    /// behind its score and, with `terms`, the contributions that sum to it. Many items at
    /// once, so that a model can share work between them (iALS solves once for all).
    fn explain_prepared(
        &self,
        prepared: &Prepared,
        items: &[u32],
        terms: bool,
    ) -> Vec<Explanation> {
        let history = prepared.get::<Vec<(u32, f32)>>();
        (items.iter())
            .map(|&item| {
                let parts = history.map_or_else(Vec::new, |h| self.explain(h, item));
                Explanation::from_terms(parts, terms)
            })
            .collect()
    }

    /// The `n` best items for a prepared history among those `keep` accepts, best first;
    /// `None` when the model does not retrieve (it then only scores given candidates).
    fn top_k(
        &self,
        prepared: &Prepared,
        n: usize,
        keep: &mut dyn FnMut(u32) -> bool,
    ) -> Option<Vec<Scored>> {
        let _ = (prepared, n, keep);
        None
    }

    /// What a [`Term::Item`] of this model is called in a response's contributions.
    fn item_term(&self) -> &'static str {
        "history_item"
    }

    /// For the typed views [`super::ServingModel`] keeps for today's serving code.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// A history as one model prepared it (see [`Scorer::prepare`]): shared, so that a cached
/// per-user state (iALS's vector) is not copied.
#[derive(Clone)]
pub struct Prepared(Arc<dyn Any + Send + Sync>);

impl Prepared {
    /// Wraps a model's prepared state.
    pub fn new<T: Any + Send + Sync>(state: T) -> Self {
        Self(Arc::new(state))
    }

    /// Wraps a state that is already shared (a cached user vector).
    pub fn shared<T: Any + Send + Sync>(state: Arc<T>) -> Self {
        Self(state)
    }

    /// The state, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared")
    }
}

/// Why one item scored what it did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Explanation {
    /// The history items behind the score, with their weight: what reasons name (the
    /// largest positive ones). Their contributions for most models; for BPR, whose score does
    /// not split by history item, the history items closest to the item in its factors.
    pub because: Vec<(u32, f32)>,
    /// The contributions that sum to the score; empty unless they were asked for.
    pub terms: Vec<Contribution>,
}

impl Explanation {
    /// An explanation from a score's contributions: its history items are what reasons name.
    pub fn from_terms(parts: Vec<Contribution>, terms: bool) -> Self {
        let because = (parts.iter())
            .filter_map(|c| match c.term {
                Term::Item(i) => Some((i, c.value)),
                _ => None,
            })
            .collect();
        Self {
            because,
            terms: if terms { parts } else { Vec::new() },
        }
    }

    /// An explanation from `(history item, contribution)` pairs.
    pub fn from_items(parts: Vec<(u32, f32)>, terms: bool) -> Self {
        Self {
            terms: if terms {
                item_terms(parts.clone())
            } else {
                Vec::new()
            },
            because: parts,
        }
    }
}

/// Contributions of history items.
pub(crate) fn item_terms(parts: Vec<(u32, f32)>) -> Vec<Contribution> {
    parts
        .into_iter()
        .map(|(i, value)| Contribution {
            term: Term::Item(i),
            value,
        })
        .collect()
}

/// The positive entries of a history, prepared for a model trained on positive pairs only;
/// `None` when there are none (serving then falls back to popularity).
pub(crate) fn positive_prepared(history: &[(u32, f32)]) -> Option<Prepared> {
    let positive = positive(history);
    (!positive.is_empty()).then(|| Prepared::new(positive))
}

/// The positive entries of a history.
pub(crate) fn positive(history: &[(u32, f32)]) -> Vec<(u32, f32)> {
    history.iter().copied().filter(|h| h.1 > 0.0).collect()
}
