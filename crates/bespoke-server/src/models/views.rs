//! What each model family serves from once loaded: iALS with its exact per-user fold-in and
//! user-vector cache, BPR with its own fold-in, item-kNN's neighbour lists. The family files
//! build them and [`super::ServingModel`] keeps them as typed views.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bespoke_algo::{
    Als, AnnParams, AnnScorer, BprParams, Factors, ItemKnn, ItemScorer, Rescore, ScoreScratch,
    Scored, TopK, UserSolver, UserVector,
};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// `serving.ann_min_items`: catalogs of at least this many items are served through an HNSW
/// graph built when a model version is loaded (0: never). Process-wide, so that the model
/// families' loaders need no new argument; set from the settings before a model is loaded.
static ANN_MIN_ITEMS: AtomicUsize = AtomicUsize::new(bespoke_algo::ann::DEFAULT_MIN_ITEMS);

/// Sets `serving.ann_min_items` for the model versions loaded from now on (those already loaded
/// keep how they were built).
pub fn set_ann_min_items(items: usize) {
    ANN_MIN_ITEMS.store(items, Ordering::Relaxed);
}

/// Item factors ready for top-k: exact below `serving.ann_min_items` items, and at or above it
/// through an HNSW graph where the norms are flat ([`AnnScorer::auto`]: trained user-facing
/// factors usually keep the exact scan, which stops early; the unit vectors of similar items
/// get the graph). Built here, on the loading thread (seconds to minutes for a million items),
/// never on a request.
pub(crate) fn item_scorer(items: Factors) -> AnnScorer {
    AnnScorer::auto(
        items,
        ANN_MIN_ITEMS.load(Ordering::Relaxed),
        AnnParams::default(),
    )
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
    scorer: AnnScorer,
    /// Item factors scaled to unit length, for item-to-item similarity.
    normalized: AnnScorer,
    cache: Mutex<UserCache>,
    cache_capacity: usize,
    /// The exact scorers restricted to saved filters' items, newest last, by scorer (the
    /// factors, or their unit vectors) and the id of the filter's evaluation
    /// ([`crate::rules::Evaluated::id`]).
    subsets: Mutex<Vec<(SubsetKey, Arc<ItemScorer>)>>,
    /// The trained user factors, by model user row: what audiences score (every user at
    /// once, which solving each history would make far too slow).
    users: Factors,
}

/// A kept subset's scorer and the id of the evaluation it was built from.
type SubsetKey = (Factorization, u64);

/// Which item vectors a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factorization {
    /// The item factors (recommendations: the user vector's inner product).
    Factors,
    /// The item factors scaled to unit length (similar items: cosine).
    Unit,
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
            scorer: item_scorer(items.clone()),
            normalized: item_scorer(Factors::from_vec(items.rows(), d, unit).expect("same shape")),
            cache: Mutex::new(UserCache::default()),
            subsets: Mutex::new(Vec::new()),
            users: model.user_factors().clone(),
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

    /// The trained user factors, one row per model user.
    pub fn user_factors(&self) -> &Factors {
        &self.users
    }

    /// Drops a user's cached vector (erasure).
    pub fn forget(&self, user: u32) {
        self.cache.lock().entries.remove(&user);
    }

    /// Number of cached user vectors.
    pub fn cached_users(&self) -> usize {
        self.cache.lock().entries.len()
    }

    /// Top `n` model items for a user vector among those `keep` accepts: exact below
    /// `serving.ann_min_items` items, approximate through the HNSW graph at or above it
    /// (`docs/ann.md`).
    pub fn top_k(&self, x: &[f32], n: usize, keep: impl FnMut(u32) -> bool) -> Vec<Scored> {
        SCRATCH.with(|s| self.scorer.top_k(x, n, keep, &mut s.borrow_mut().0))
    }

    /// [`Self::top_k`] ranked by `rescore` of the scores (business-rule boosts; the scores
    /// returned are the plain ones), scanning only `within` (a [subset](Self::subset) of the
    /// items) when given.
    pub fn top_k_rescored(
        &self,
        x: &[f32],
        n: usize,
        keep: impl FnMut(u32) -> bool,
        rescore: &mut impl Rescore,
        within: Option<&ItemScorer>,
    ) -> Vec<Scored> {
        SCRATCH.with(|s| {
            let scratch = &mut s.borrow_mut().0;
            match within {
                Some(sub) => sub.top_k_rescored(x, n, keep, rescore, scratch),
                None => self.scorer.top_k_rescored(x, n, keep, rescore, scratch),
            }
        })
    }

    /// The exact scorer restricted to the model items `inside` accepts, kept under `key`: the
    /// id of the evaluation `inside` reads, which names its answers, so that the subset is
    /// built once per change of them. `None` when a filter accepting `share` of the items is
    /// not worth a subset ([`AnnScorer::prefers_subset`]).
    pub fn subset(
        &self,
        of: Factorization,
        key: u64,
        share: f32,
        inside: impl FnMut(u32) -> bool,
    ) -> Option<Arc<ItemScorer>> {
        /// Subsets kept: a few saved filters, and room for the one replacing another.
        const KEPT: usize = 4;
        let scorer = match of {
            Factorization::Factors => &self.scorer,
            Factorization::Unit => &self.normalized,
        };
        if !scorer.prefers_subset(share) {
            return None;
        }
        let key = (of, key);
        if let Some((_, sub)) = self.subsets.lock().iter().find(|(k, _)| *k == key) {
            return Some(sub.clone());
        }
        // Built outside the lock: two requests may both build it, neither waits.
        let sub = Arc::new(scorer.exact_scorer().subset(inside));
        let mut kept = self.subsets.lock();
        if !kept.iter().any(|(k, _)| *k == key) {
            if kept.len() >= KEPT {
                kept.remove(0);
            }
            kept.push((key, sub.clone()));
        }
        Some(sub)
    }

    /// Top `n` items by cosine of item factors with model item `item` (itself excluded),
    /// scanning only `within` (a [subset](Self::subset) of the unit vectors) when given.
    pub fn similar(
        &self,
        item: u32,
        n: usize,
        mut keep: impl FnMut(u32) -> bool,
        within: Option<&ItemScorer>,
    ) -> Vec<Scored> {
        let Some(q) = (item as usize)
            .lt(&self.normalized.len())
            .then(|| self.normalized.items().row(item as usize).to_vec())
        else {
            return Vec::new();
        };
        let keep = |j| j != item && keep(j);
        SCRATCH.with(|s| match within {
            Some(sub) => sub.top_k(&q, n, keep, &mut s.borrow_mut().0),
            None => self.normalized.top_k(&q, n, keep, &mut s.borrow_mut().0),
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

    /// The fold-in solver: item factors, `YᵀY + λI` and α.
    pub fn solver(&self) -> &UserSolver {
        &self.solver
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
    pub(crate) scorer: AnnScorer,
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
