//! A trained model loaded for serving: iALS with exact per-user fold-in and explanations,
//! item-kNN, and the mapping between model rows and the store's item ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use bespoke_algo::{
    Als, Factors, ItemKnn, ItemScorer, ScoreScratch, Scored, TopK, UserSolver, UserVector,
};
use bespoke_store::Store;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::artifact::{self, ITEMS_FILE};
use super::content::{CONTENT_FILE, ContentModel, ContentServing, item_bag};
use super::meta::{MetaError, ModelMeta};
use super::model::{REGISTRY, Scorer};
use super::tuning::{Recencies, Serve};
use bespoke_algo::{BprParams, ModelKind, Recency};

/// Marks a store item that the model does not know.
const NONE: u32 = u32::MAX;

/// Why a model version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading from the store failed.
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
    /// A file is malformed.
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    /// `meta.json` is malformed or newer than this build.
    #[error("model version {version}: {source}")]
    Meta {
        /// The version.
        version: u64,
        /// What is wrong.
        source: MetaError,
    },
    /// The files disagree with each other.
    #[error("model version {version}: {message}")]
    Inconsistent {
        /// The version.
        version: u64,
        /// What disagrees.
        message: String,
    },
}

/// Exact user vectors, keyed by store user id and valid for one history revision.
#[derive(Debug, Default)]
struct UserCache {
    entries: FxHashMap<u32, (u64, Arc<UserVector>)>,
}

/// iALS, ready to serve.
#[derive(Debug)]
pub struct AlsServing {
    solver: UserSolver,
    scorer: ItemScorer,
    /// Item factors scaled to unit length, for item-to-item similarity.
    normalized: ItemScorer,
    cache: Mutex<UserCache>,
    cache_capacity: usize,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<(ScoreScratch, TopK, Vec<f32>, Vec<u32>)> =
        std::cell::RefCell::new((ScoreScratch::default(), TopK::new(10), Vec::new(), Vec::new()));
}

impl AlsServing {
    pub(crate) fn new(model: &Als, cache_capacity: usize) -> Self {
        let items = model.item_factors().clone();
        let d = items.dim();
        let mut unit = Vec::with_capacity(items.as_slice().len());
        for i in 0..items.rows() {
            let y = items.row(i);
            let norm = y.iter().map(|v| v * v).sum::<f32>().sqrt();
            unit.extend(y.iter().map(|v| if norm > 0.0 { v / norm } else { 0.0 }));
        }
        Self {
            solver: model.user_solver(),
            scorer: ItemScorer::new(items.clone()),
            normalized: ItemScorer::new(
                Factors::from_vec(items.rows(), d, unit).expect("same shape"),
            ),
            cache: Mutex::new(UserCache::default()),
            cache_capacity,
        }
    }

    /// The exact vector of a user with this history (model item ids and summed weights), from
    /// the cache when `revision` matches. `None` when the history holds nothing the model knows.
    pub fn user_vector(
        &self,
        user: u32,
        revision: u64,
        history: &[(u32, f32)],
    ) -> Option<Arc<UserVector>> {
        if let Some((rev, v)) = self.cache.lock().entries.get(&user)
            && *rev == revision
        {
            return Some(v.clone());
        }
        if history.is_empty() {
            return None;
        }
        let v = Arc::new(self.solver.solve(history)?);
        let mut cache = self.cache.lock();
        if cache.entries.len() >= self.cache_capacity {
            // Any entry will do: the cache is a shortcut, not a record.
            if let Some(&k) = cache.entries.keys().next() {
                cache.entries.remove(&k);
            }
        }
        if self.cache_capacity > 0 {
            cache.entries.insert(user, (revision, v.clone()));
        }
        Some(v)
    }

    /// The exact vector of an anonymous history (a session), not cached; `extra` are session
    /// items the model has no rows for, by their content-predicted factors. `None` when the
    /// history holds nothing the model can use.
    pub fn session_vector(
        &self,
        history: &[(u32, f32)],
        extra: &[(Vec<f32>, f32)],
    ) -> Option<UserVector> {
        if history.is_empty() && extra.is_empty() {
            return None;
        }
        self.solver.solve_with(history, extra)
    }

    /// Drops a user's cached vector (erasure).
    pub fn forget(&self, user: u32) {
        self.cache.lock().entries.remove(&user);
    }

    /// Number of cached user vectors.
    pub fn cached_users(&self) -> usize {
        self.cache.lock().entries.len()
    }

    /// Top `n` model items for a user vector among those `keep` accepts.
    pub fn top_k(&self, x: &[f32], n: usize, keep: impl FnMut(u32) -> bool) -> Vec<Scored> {
        SCRATCH.with(|s| self.scorer.top_k(x, n, keep, &mut s.borrow_mut().0))
    }

    /// Top `n` items by cosine of item factors with model item `item` (itself excluded).
    pub fn similar(&self, item: u32, n: usize, mut keep: impl FnMut(u32) -> bool) -> Vec<Scored> {
        let Some(q) = (item as usize)
            .lt(&self.normalized.len())
            .then(|| self.normalized.items().row(item as usize).to_vec())
        else {
            return Vec::new();
        };
        SCRATCH.with(|s| {
            self.normalized
                .top_k(&q, n, |j| j != item && keep(j), &mut s.borrow_mut().0)
        })
    }

    /// The factor dimension.
    pub fn dim(&self) -> usize {
        self.scorer.items().dim()
    }

    /// The factors of model item `item`.
    pub fn item_vector(&self, item: u32) -> &[f32] {
        self.scorer.items().row(item as usize)
    }

    /// Top `n` items by cosine of their factors with the vector `y` (a cold item's predicted
    /// factors).
    pub fn similar_to(&self, y: &[f32], n: usize, keep: impl FnMut(u32) -> bool) -> Vec<Scored> {
        let norm = y.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Vec::new();
        }
        let q: Vec<f32> = y.iter().map(|v| v / norm).collect();
        SCRATCH.with(|s| self.normalized.top_k(&q, n, keep, &mut s.borrow_mut().0))
    }

    /// History items' contributions to the score of `item` (Hu–Koren–Volinsky).
    pub fn explain(&self, user: &UserVector, item: u32) -> Vec<(u32, f32)> {
        self.solver.explain(user, item)
    }

    /// [`Self::explain`] for many items, in one blocked solve (one entry per item, in order).
    pub fn explain_many(&self, user: &UserVector, items: &[u32]) -> Vec<Vec<(u32, f32)>> {
        self.solver.explain_many(user, items)
    }
}

/// BPR, ready to serve: a user's vector is folded in from their current history by BPR's own
/// user step (items fixed), so it follows every event without retraining.
#[derive(Debug)]
pub struct BprServing {
    pub(crate) model: bespoke_algo::Bpr,
    /// Item factors with the bias as a last column.
    pub(crate) scorer: ItemScorer,
    pub(crate) params: BprParams,
}

impl BprServing {
    /// Top `n` model items for a history (sorted model item ids) among those `keep` accepts,
    /// with the folded-in vector; empty for an empty history.
    pub fn recommend(
        &self,
        history: &[u32],
        epochs: usize,
        n: usize,
        keep: impl FnMut(u32) -> bool,
    ) -> Vec<Scored> {
        let p = BprParams {
            iterations: epochs.max(1),
            ..self.params
        };
        let Some(v) = self.model.fold_in(history, &p) else {
            return Vec::new();
        };
        SCRATCH.with(|s| self.scorer.top_k(&v, n, keep, &mut s.borrow_mut().0))
    }

    /// The folded-in vector of a history (sorted model item ids), with the 1 for the item bias
    /// appended: what [`Self::recommend`] scores with, for per-factor explanations.
    pub fn fold_in(&self, history: &[u32], epochs: usize) -> Option<Vec<f32>> {
        let p = BprParams {
            iterations: epochs.max(1),
            ..self.params
        };
        self.model.fold_in(history, &p)
    }

    /// Top `n` model items for a folded-in vector (see [`Self::fold_in`]) among those `keep`
    /// accepts.
    pub fn top_k(&self, v: &[f32], n: usize, keep: impl FnMut(u32) -> bool) -> Vec<Scored> {
        SCRATCH.with(|s| self.scorer.top_k(v, n, keep, &mut s.borrow_mut().0))
    }

    /// Model item `j`'s factors with its bias as the last value.
    pub fn item_row(&self, j: u32) -> &[f32] {
        self.scorer.items().row(j as usize)
    }

    /// The history items whose BPR factors are closest (dot product) to item `j`'s: why it
    /// was ranked (BPR has no exact per-item decomposition of a score).
    pub fn explain(&self, history: &[u32], j: u32) -> Vec<(u32, f32)> {
        let items = self.model.item_factors();
        let qj = items.row(j as usize);
        history
            .iter()
            .map(|&h| (h, bespoke_algo::simd::dot(items.row(h as usize), qj)))
            .collect()
    }
}

/// Item-kNN, ready to serve.
#[derive(Debug)]
pub struct KnnServing {
    pub(crate) model: ItemKnn,
}

impl KnnServing {
    /// Top `n` items for a history of `(model item, weight)` among those `keep` accepts.
    pub fn recommend(
        &self,
        history: &[(u32, f32)],
        n: usize,
        keep: impl FnMut(u32) -> bool,
    ) -> Vec<Scored> {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            s.2.resize(self.model.n_items(), 0.0);
            self.model
                .recommend(history, n, keep, &mut s.2, &mut s.3, &mut s.1)
        })
    }

    /// The contributions of history items to item `j`.
    pub fn explain(&self, history: &[(u32, f32)], j: u32) -> Vec<(u32, f32)> {
        self.model.explain(history, j)
    }

    /// The stored neighbours of item `i`, best first, among those `keep` accepts.
    pub fn neighbours(&self, i: u32, n: usize, mut keep: impl FnMut(u32) -> bool) -> Vec<Scored> {
        let (js, sims) = self.model.neighbours().row(i as usize);
        let mut top = TopK::new(n);
        for (&j, &s) in js.iter().zip(sims) {
            if j != i && keep(j) {
                top.push(j, s);
            }
        }
        top.into_sorted()
    }
}

/// A model version loaded for serving.
#[derive(Debug)]
pub struct ServingModel {
    /// Its version.
    pub version: u64,
    /// Its metadata.
    pub meta: ModelMeta,
    /// Every model of the version, by kind, as [`REGISTRY`] loaded them.
    pub models: BTreeMap<ModelKind, Arc<dyn Scorer>>,
    /// iALS (a typed view of `models`, for the serving code written against it).
    pub als: Arc<AlsServing>,
    /// Item-kNN (a typed view of `models`).
    pub knn: Arc<KnnServing>,
    /// EASE, when it was trained (a typed view of `models`).
    pub ease: Option<Arc<bespoke_algo::Ease>>,
    /// The hybrid content model and the items without events it places.
    pub content: Option<ContentServing>,
    /// BPR, when it was trained (a typed view of `models`).
    pub bpr: Option<Arc<BprServing>>,
    /// What `model=auto` serves (from tuning; iALS otherwise).
    pub serve: Serve,
    /// The recency weighting each model was trained with, applied to a user's history when
    /// serving too.
    pub recency: Recencies,
    item_keys: Vec<String>,
    store_to_model: Vec<u32>,
    model_to_store: Vec<u32>,
}

impl ServingModel {
    /// Loads `version` from the store; `item_id` maps an item key to its store id (`None` for
    /// items that no longer exist).
    pub fn load(
        store: &dyn Store,
        version: u64,
        cache_capacity: usize,
        mut item_id: impl FnMut(&str) -> Option<u32>,
    ) -> Result<Self, LoadError> {
        let meta = store
            .list_models()?
            .into_iter()
            .find(|m| m.version == version)
            .ok_or(bespoke_store::Error::UnknownModel(version))?
            .meta;
        let meta =
            ModelMeta::from_value(meta).map_err(|source| LoadError::Meta { version, source })?;
        let item_keys =
            artifact::decode_keys(&store.read_model_file(version, ITEMS_FILE)?, ITEMS_FILE)?;
        let inconsistent = |message: String| LoadError::Inconsistent { version, message };
        let mut models: BTreeMap<ModelKind, Arc<dyn Scorer>> = BTreeMap::new();
        for family in REGISTRY {
            let kind = family.kind();
            // The metadata says which models this version holds (EASE and BPR are optional).
            if !meta.models.contains(&kind) {
                continue;
            }
            let files = (family.files().iter())
                .map(|f| store.read_model_file(version, f))
                .collect::<Result<Vec<_>, _>>()?;
            let artifact = family.decode(&files)?;
            if artifact.n_items() != item_keys.len() {
                return Err(inconsistent(format!(
                    "{} item keys, {} {kind} items",
                    item_keys.len(),
                    artifact.n_items()
                )));
            }
            models.insert(kind, artifact.into_scorer(&meta, cache_capacity));
        }
        let view = |kind: ModelKind| models.get(&kind).map(|m| m.clone().into_any());
        let als = view(ModelKind::Als)
            .and_then(|m| m.downcast::<AlsServing>().ok())
            .ok_or_else(|| inconsistent("no iALS model".into()))?;
        let knn = view(ModelKind::Knn)
            .and_then(|m| m.downcast::<KnnServing>().ok())
            .ok_or_else(|| inconsistent("no item-kNN model".into()))?;
        let ease = view(ModelKind::Ease).and_then(|m| m.downcast::<bespoke_algo::Ease>().ok());
        let bpr = view(ModelKind::Bpr).and_then(|m| m.downcast::<BprServing>().ok());
        let content = if meta.models.contains(&ModelKind::Content) {
            Some(ContentServing::new(ContentModel::decode(
                &store.read_model_file(version, CONTENT_FILE)?,
            )?))
        } else {
            None
        };
        if let Some(side) = content.as_ref().and_then(|c| c.model.items.as_ref())
            && side.ridge.d_out() != als.dim()
        {
            return Err(inconsistent(
                "the content model's factors differ from iALS's".into(),
            ));
        }
        let serve: Serve = meta.serve.clone();
        let recency = meta.params.recencies();
        let mut model = Self {
            version,
            serve,
            recency,
            meta,
            models,
            als,
            knn,
            ease,
            content,
            bpr,
            item_keys,
            store_to_model: Vec::new(),
            model_to_store: Vec::new(),
        };
        model.remap(&mut item_id);
        model.place_cold_items(store)?;
        Ok(model)
    }

    /// Places every stored item the model has no factors for by its content.
    pub(crate) fn place_cold_items(&self, store: &dyn Store) -> Result<(), LoadError> {
        let Some(content) = self.content.as_ref().filter(|c| c.model.items.is_some()) else {
            return Ok(());
        };
        let mut after = None;
        loop {
            let chunk = store.scan_items(after, 10_000)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.idx);
            for i in chunk {
                if self.model_item(i.idx.0).is_none() {
                    content.set_cold(
                        i.idx.0,
                        &item_bag(
                            &i.categories,
                            &i.text,
                            &i.numeric,
                            &i.attributes,
                            &i.embeddings,
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Rebuilds the mapping between model rows and store ids.
    fn remap(&mut self, item_id: &mut impl FnMut(&str) -> Option<u32>) {
        self.model_to_store = self
            .item_keys
            .iter()
            .map(|k| item_id(k).unwrap_or(NONE))
            .collect();
        let bound = self
            .model_to_store
            .iter()
            .filter(|&&s| s != NONE)
            .map(|&s| s as usize + 1)
            .max()
            .unwrap_or(0);
        self.store_to_model = vec![NONE; bound];
        for (m, &s) in self.model_to_store.iter().enumerate() {
            if s != NONE {
                self.store_to_model[s as usize] = m as u32;
            }
        }
    }

    /// The model row of a store item, if the model knows it.
    pub fn model_item(&self, store_item: u32) -> Option<u32> {
        self.store_to_model
            .get(store_item as usize)
            .copied()
            .filter(|&m| m != NONE)
    }

    /// The store id of a model row, if the item still exists.
    pub fn store_item(&self, model_item: u32) -> Option<u32> {
        self.model_to_store
            .get(model_item as usize)
            .copied()
            .filter(|&s| s != NONE)
    }

    /// The scorer of `kind` (of its family for the kNN variants), when this version has it:
    /// what new serving code should use instead of the typed fields.
    pub fn scorer(&self, kind: ModelKind) -> Option<&dyn Scorer> {
        self.models.get(&kind.family()).map(|s| s.as_ref())
    }

    /// The recency weighting `kind` was trained with, to apply to a history it scores.
    pub fn recency(&self, kind: ModelKind) -> Recency {
        self.recency.get(kind)
    }

    /// The recency weighting of model `name` (`als`, `knn` and its variants, `ease`; iALS's
    /// for any other name, as serving has always read it).
    pub fn recency_of(&self, name: &str) -> Recency {
        let kind = match name.parse::<ModelKind>().map(ModelKind::family) {
            Ok(k @ (ModelKind::Knn | ModelKind::Ease)) => k,
            _ => ModelKind::Als,
        };
        self.recency.get(kind)
    }

    /// Number of items the model knows.
    pub fn n_items(&self) -> usize {
        self.item_keys.len()
    }
}
