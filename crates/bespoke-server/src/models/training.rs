//! Training: a consistent snapshot of the store becomes a user × item weight matrix, on which
//! iALS and item-kNN are fitted (and, optionally, first evaluated on a held-out tail).
//!
//! The matrix is a pure function of the data: users and items are ordered by external key, not
//! by store id, and each factor row starts from a seed derived from its key. So the model trained
//! after an erasure is bit-identical to one trained on a store that never held the user.
//!
//! Weights: each event's type weight (see `[events.weights]`), times `2^(-age / half-life)` when
//! `training.half_life_days` is set (age measured from the newest event), summed per user and
//! item. A positive sum is a positive preference with confidence `1 + alpha · w`; a negative sum
//! (dislikes outweigh the rest) is a confident "no" (preference 0, confidence `1 + alpha · |w|`)
//! for iALS, and is left out of item-kNN, whose similarities count co-likes only.

use std::collections::BTreeMap;
use std::time::Instant;

use bespoke_algo::eval::MetricSums;
use bespoke_algo::{
    Als, Bag, Bpr, BprParams, Csr, ItemKnn, ItemScorer, IterationReport, ModelKind, Recency,
    ScoreScratch, TopK,
};
use bespoke_store::Store;
use rayon::prelude::*;
use serde_json::{Value, json};

use super::content::{ContentModel, attribute_bag, item_bag};
use super::ease::EaseArtifact;
use super::meta::{self, DataMeta, ModelMeta, ParamsMeta};
use super::model::{Artifact, FitContext, ModelFamily, REGISTRY};
use super::tuning::{Recencies, Serve, Tuned};
use crate::settings::{Settings, TrainingSettings};
use crate::weights::Weights;
use bespoke_algo::tune::Blend;

/// Interactions read per store round trip.
const CHUNK: usize = 100_000;
/// Share of each eligible user's latest positive pairs held out when evaluating.
const HOLDOUT: f64 = 0.2;
/// Users with fewer positive pairs are not evaluated.
const MIN_PAIRS: usize = 5;

/// One user–item pair of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Dense user index (key order).
    pub user: u32,
    /// Dense item index (key order).
    pub item: u32,
    /// Summed (and decayed) weight.
    pub weight: f32,
    /// Time of the latest event of the pair.
    pub last_ts: i64,
}

/// The training data: every pair with events, in dense key-ordered indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// External user keys, in index order (sorted).
    pub user_keys: Vec<String>,
    /// External item keys, in index order (sorted).
    pub item_keys: Vec<String>,
    /// Pairs sorted by `(user, item)`, with non-zero weight.
    pub pairs: Vec<Pair>,
    /// Sequence number of the newest event included.
    pub watermark: u64,
    /// Number of events read.
    pub events: u64,
    /// When reading began (Unix ms): everything erased before this is not in the snapshot.
    pub read_at: i64,
    /// Content of every stored item that has some, by key (sorted): the hybrid model's input.
    pub catalog: Vec<(String, Bag)>,
    /// Attributes of each user of `user_keys`, in index order (empty when none).
    pub user_content: Vec<Bag>,
}

/// A stable 64-bit hash of a key (FNV-1a), mixed with the seed: the start of that row's factors.
pub fn key_seed(key: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Snapshot {
    /// Reads everything the store holds. Events of types no longer configured are skipped.
    pub fn read(store: &dyn Store, settings: &Settings) -> bespoke_store::Result<Self> {
        let read_at = crate::time::now_ms();
        let weights = Weights::new(settings);
        // Keys by store id, then dense indices in key order.
        let mut users: Vec<(u32, String)> = Vec::new();
        let mut user_bags: rustc_hash::FxHashMap<String, Bag> = Default::default();
        let mut after = None;
        loop {
            let chunk = store.scan_users(after, CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.idx);
            // Users who objected to training take no part: their events are skipped below.
            for u in chunk.into_iter().filter(|u| u.consent.training) {
                if !u.attributes.is_empty() {
                    user_bags.insert(u.key.clone(), attribute_bag(&u.attributes));
                }
                users.push((u.idx.0, u.key));
            }
        }
        let mut items: Vec<(u32, String)> = Vec::new();
        let mut catalog: Vec<(String, Bag)> = Vec::new();
        let mut after = None;
        loop {
            let chunk = store.scan_items(after, CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.idx);
            for i in chunk {
                let bag = item_bag(
                    &i.categories,
                    &i.text,
                    &i.numeric,
                    &i.attributes,
                    &i.embeddings,
                );
                if !(bag.sparse.is_empty() && bag.dense.is_empty()) {
                    catalog.push((i.key.clone(), bag));
                }
                items.push((i.idx.0, i.key));
            }
        }
        catalog.sort_by(|a, b| a.0.cmp(&b.0));
        let user_dense = dense(&mut users);
        let item_dense = dense(&mut items);
        let mut raw: Vec<(u32, u32, f32, i64)> = Vec::new();
        let (mut seq, mut events) = (0u64, 0u64);
        loop {
            let chunk = store.scan_interactions(seq, CHUNK)?;
            let Some(last) = chunk.last() else { break };
            seq = last.seq;
            for e in &chunk {
                let (Some(&u), Some(&i)) = (user_dense.get(&e.user.0), item_dense.get(&e.item.0))
                else {
                    continue;
                };
                let Some(w) = weights.weight(&e.kind, e.value).filter(|w| w.is_finite()) else {
                    continue;
                };
                raw.push((u, i, w, e.timestamp));
                events += 1;
            }
        }
        let half_life_ms = settings.training.half_life_days * 86_400_000.0;
        if half_life_ms > 0.0 {
            let newest = raw.iter().map(|r| r.3).max().unwrap_or(0);
            for r in &mut raw {
                r.2 *= (-((newest - r.3) as f64) / half_life_ms).exp2() as f32;
            }
        }
        // Sum per pair in event order (a stable sort keeps it), newest time per pair.
        raw.par_sort_by_key(|r| (r.0, r.1));
        let mut pairs: Vec<Pair> = Vec::new();
        for (u, i, w, ts) in raw {
            match pairs.last_mut() {
                Some(p) if p.user == u && p.item == i => {
                    p.weight += w;
                    p.last_ts = p.last_ts.max(ts);
                }
                _ => pairs.push(Pair {
                    user: u,
                    item: i,
                    weight: w,
                    last_ts: ts,
                }),
            }
        }
        pairs.retain(|p| p.weight != 0.0);
        // Only users and items with data take part: a row without data would still move every
        // other row through the Gram matrix, so the model would depend on catalog entries and
        // profiles that carry no behaviour (an erased user's leftovers, say).
        let (user_keys, item_keys) = compact(&mut pairs, users, items);
        let user_content = user_keys
            .iter()
            .map(|k| user_bags.remove(k).unwrap_or_default())
            .collect();
        Ok(Self {
            user_keys,
            item_keys,
            pairs,
            watermark: seq,
            events,
            read_at,
            catalog,
            user_content,
        })
    }

    /// The weight matrix (users × items) of `pairs` (sorted by user), each weight multiplied
    /// by its recency factor (a pair's position among its user's pairs by last event time);
    /// with `positive_only`, pairs of negative weight are left out.
    pub fn matrix_of(&self, pairs: &[Pair], recency: Recency, positive_only: bool) -> Csr {
        let mut triples: Vec<(u32, u32, f32)> = Vec::with_capacity(pairs.len());
        let mut start = 0;
        while start < pairs.len() {
            let user = pairs[start].user;
            let end = start + pairs[start..].iter().take_while(|p| p.user == user).count();
            let group = &pairs[start..end];
            let factors = if recency.is_on() {
                let times: Vec<i64> = group.iter().map(|p| p.last_ts).collect();
                recency.factors(&times)
            } else {
                vec![1.0; group.len()]
            };
            for (p, f) in group.iter().zip(factors) {
                if !positive_only || p.weight > 0.0 {
                    triples.push((p.user, p.item, p.weight * f));
                }
            }
            start = end;
        }
        Csr::from_triples(self.user_keys.len(), self.item_keys.len(), &triples, false)
    }

    /// The positive weight matrix of `pairs` under `recency` (what tuning trains on).
    pub fn positive_matrix(&self, pairs: &[Pair], recency: Recency) -> Csr {
        self.matrix_of(pairs, recency, true)
    }

    /// The signed weight matrix of all pairs.
    pub fn weights(&self) -> Csr {
        self.matrix_of(&self.pairs, Recency::OFF, false)
    }

    /// The split used for offline metrics and tuning: each user with at least five positive
    /// pairs holds out the latest 20 % of them (by last event time, ties by item), as long as
    /// their items remain in training; returns the training pairs (sorted by user and item)
    /// and `(user, sorted test items)`.
    pub fn split_pairs(&self) -> (Vec<Pair>, Vec<(u32, Vec<u32>)>) {
        let mut train = Vec::with_capacity(self.pairs.len());
        let mut test: Vec<(u32, Vec<u32>)> = Vec::new();
        let mut start = 0;
        while start < self.pairs.len() {
            let user = self.pairs[start].user;
            let end = start
                + self.pairs[start..]
                    .iter()
                    .take_while(|p| p.user == user)
                    .count();
            let mut positive: Vec<Pair> = self.pairs[start..end]
                .iter()
                .copied()
                .filter(|p| p.weight > 0.0)
                .collect();
            let n_test = if positive.len() >= MIN_PAIRS {
                ((positive.len() as f64 * HOLDOUT).floor() as usize).max(1)
            } else {
                0
            };
            positive.sort_by_key(|p| (p.last_ts, p.item));
            let held: Vec<u32> = positive[positive.len() - n_test..]
                .iter()
                .map(|p| p.item)
                .collect();
            for p in &self.pairs[start..end] {
                if !held.contains(&p.item) {
                    train.push(*p);
                }
            }
            if !held.is_empty() {
                test.push((user, held));
            }
            start = end;
        }
        let mut in_train = vec![false; self.item_keys.len()];
        for p in &train {
            in_train[p.item as usize] = true;
        }
        for (_, items) in &mut test {
            items.retain(|&i| in_train[i as usize]);
            items.sort_unstable();
        }
        test.retain(|(_, items)| !items.is_empty());
        (train, test)
    }
}

/// Renumbers users and items densely over those that appear in `pairs`, keeping key order;
/// returns their keys.
fn compact(
    pairs: &mut [Pair],
    users: Vec<(u32, String)>,
    items: Vec<(u32, String)>,
) -> (Vec<String>, Vec<String>) {
    let mut user_used = vec![false; users.len()];
    let mut item_used = vec![false; items.len()];
    for p in pairs.iter() {
        user_used[p.user as usize] = true;
        item_used[p.item as usize] = true;
    }
    let renumber = |used: &[bool]| -> Vec<u32> {
        let mut next = 0;
        used.iter()
            .map(|&u| {
                let id = next;
                next += u32::from(u);
                id
            })
            .collect()
    };
    let (user_new, item_new) = (renumber(&user_used), renumber(&item_used));
    for p in pairs.iter_mut() {
        p.user = user_new[p.user as usize];
        p.item = item_new[p.item as usize];
    }
    let keep = |rows: Vec<(u32, String)>, used: &[bool]| -> Vec<String> {
        rows.into_iter()
            .zip(used)
            .filter(|(_, u)| **u)
            .map(|((_, k), _)| k)
            .collect()
    };
    (keep(users, &user_used), keep(items, &item_used))
}

/// Sorts `(store id, key)` by key and returns store id → dense index.
fn dense(rows: &mut [(u32, String)]) -> rustc_hash::FxHashMap<u32, u32> {
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    rows.iter()
        .enumerate()
        .map(|(d, (id, _))| (*id, d as u32))
        .collect()
}

/// What a training run reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A new stage begins.
    Stage(&'a str),
    /// An iALS iteration finished.
    Iteration {
        /// Which fit (`evaluation` or `final`).
        fit: &'a str,
        /// The report.
        report: &'a IterationReport,
        /// Iterations in total.
        total: usize,
    },
}

/// The models of one training run and their metadata.
#[derive(Debug)]
pub struct Trained {
    /// Every model trained, by kind (see [`REGISTRY`]); iALS and item-kNN always are.
    pub models: BTreeMap<ModelKind, Box<dyn Artifact>>,
    /// The hybrid content model, when configured and the data has content.
    pub content: Option<ContentModel>,
    /// Metadata (`meta.json`).
    pub meta: ModelMeta,
}

impl Trained {
    /// The trained model of `kind` as its concrete type.
    pub fn model<T: 'static>(&self, kind: ModelKind) -> Option<&T> {
        downcast(&self.models, kind)
    }
}

fn downcast<T: 'static>(
    models: &BTreeMap<ModelKind, Box<dyn Artifact>>,
    kind: ModelKind,
) -> Option<&T> {
    models.get(&kind)?.as_any().downcast_ref()
}

/// The training matrices of one set of pairs, each built once per recency weighting and
/// sign (iALS keeps negative pairs, the others train on positive ones).
struct Matrices<'a> {
    snapshot: &'a Snapshot,
    pairs: &'a [Pair],
    built: Vec<(Recency, bool, Csr)>,
}

impl<'a> Matrices<'a> {
    fn new(snapshot: &'a Snapshot, pairs: &'a [Pair]) -> Self {
        Self {
            snapshot,
            pairs,
            built: Vec::new(),
        }
    }

    /// Builds the matrix under `recency`, signed or positive only, unless built already.
    fn ensure(&mut self, recency: Recency, signed: bool) {
        if self.find(recency, signed).is_none() {
            let m = self.snapshot.matrix_of(self.pairs, recency, !signed);
            self.built.push((recency, signed, m));
        }
    }

    fn find(&self, recency: Recency, signed: bool) -> Option<&Csr> {
        (self.built.iter())
            .find(|b| b.0 == recency && b.1 == signed)
            .map(|b| &b.2)
    }

    /// The matrix `family` trains on.
    fn of(&mut self, family: &dyn ModelFamily, recency: &Recencies) -> &Csr {
        let (r, signed) = (recency.get(family.matrix_of()), family.signed());
        self.ensure(r, signed);
        self.find(r, signed).expect("built above")
    }
}

/// Fits every family of [`REGISTRY`] this run trains; with the seconds each took.
fn fit(
    snapshot: &Snapshot,
    m: &mut Matrices<'_>,
    t: &TrainingSettings,
    recency: &Recencies,
    label: &str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> (
    BTreeMap<ModelKind, Box<dyn Artifact>>,
    BTreeMap<ModelKind, f64>,
) {
    let mut models = BTreeMap::new();
    let mut seconds = BTreeMap::new();
    for family in REGISTRY {
        let kind = family.kind();
        if !family.trains(t, snapshot.item_keys.len()) {
            continue;
        }
        let x = m.of(*family, recency);
        let started = Instant::now();
        let mut ctx = FitContext {
            snapshot,
            settings: t,
            label,
            progress: &mut *progress,
        };
        match family.fit(x, &mut ctx) {
            Ok(a) => {
                models.insert(kind, a);
            }
            // A model that cannot be fitted on this data (EASE's system not positive
            // definite, say) is left out of the version; serving falls back without it.
            Err(e) => tracing::warn!(target: "train::models", error = %e, "model not trained"),
        }
        seconds.insert(kind, started.elapsed().as_secs_f64());
    }
    (models, seconds)
}

/// The matrices evaluation reads histories from.
struct EvalMatrices<'a> {
    als: &'a Csr,
    knn: &'a Csr,
    ease: &'a Csr,
}

/// The name evaluation reports what `model=auto` serves under.
const AUTO: &str = "auto";

/// Candidates each model ranks per held-out user (a blend needs more than the 100 scored).
const EVAL_CANDIDATES: usize = bespoke_algo::tune::BLEND_CANDIDATES;

/// Metrics of every model, and of what `model=auto` serves, on a split.
fn evaluate(
    snapshot: &Snapshot,
    t: &TrainingSettings,
    recency: &Recencies,
    serve: Option<&Serve>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Value {
    let (train_pairs, test) = snapshot.split_pairs();
    if test.is_empty() {
        return json!({ "note": "no user has enough positive interactions to hold some out" });
    }
    let mut matrices = Matrices::new(snapshot, &train_pairs);
    let (models, _) = fit(snapshot, &mut matrices, t, recency, "evaluation", progress);
    let als: &Als = downcast(&models, ModelKind::Als).expect("iALS always trains");
    let knn: &ItemKnn = downcast(&models, ModelKind::Knn).expect("item-kNN always trains");
    let ease = downcast::<EaseArtifact>(&models, ModelKind::Ease).map(|e| &e.model);
    // BPR is scored with the user factors it learned (serving folds a history in with BPR's
    // own user step, which approximates them).
    let bpr = downcast::<Bpr>(&models, ModelKind::Bpr)
        .map(|model| (model, ItemScorer::new(model.item_factors_with_bias())));
    // The matrices each model was trained on, for the users' histories.
    let (ra, rk, re) = (
        recency.get(ModelKind::Als),
        recency.get(ModelKind::Knn),
        recency.get(ModelKind::Ease),
    );
    matrices.ensure(ra, true);
    matrices.ensure(rk, false);
    matrices.ensure(re, false);
    let m = EvalMatrices {
        als: matrices.find(ra, true).expect("built above"),
        knn: matrices.find(rk, false).expect("built above"),
        ease: matrices.find(re, false).expect("built above"),
    };
    progress(Progress::Stage("scoring held-out interactions"));
    let scorer = ItemScorer::new(als.item_factors().clone());
    let solver = als.user_solver();
    let n_items = m.knn.n_cols();
    let mut popularity = vec![0f32; n_items];
    for u in 0..m.knn.n_rows() {
        for &i in m.knn.row(u).0 {
            popularity[i as usize] += 1.0;
        }
    }
    // Metrics by the name each is reported under: the models evaluated and `auto`.
    let mut names = vec![
        ModelKind::Als.name(),
        ModelKind::Knn.name(),
        ModelKind::Popular.name(),
    ];
    names.extend(ease.map(|_| ModelKind::Ease.name()));
    names.extend(bpr.as_ref().map(|_| ModelKind::Bpr.name()));
    names.push(AUTO);
    let new_sums = || -> BTreeMap<&'static str, MetricSums> {
        names
            .iter()
            .map(|&n| (n, MetricSums::new(n_items)))
            .collect()
    };
    let sums = test
        .par_iter()
        .fold(
            || {
                (
                    new_sums(),
                    ScoreScratch::default(),
                    vec![0f32; n_items],
                    Vec::new(),
                    TopK::new(EVAL_CANDIDATES),
                )
            },
            |(mut sums, mut scratch, mut scores, mut touched, mut top), (u, items)| {
                let u = *u as usize;
                let (seen, _) = m.knn.row(u);
                let all_seen = m.als.row(u).0;
                let keep = |i: u32| all_seen.binary_search(&i).is_err();
                let row = |c: &Csr| -> Vec<(u32, f32)> {
                    let (is, ws) = c.row(u);
                    is.iter().copied().zip(ws.iter().copied()).collect()
                };
                // iALS serves exact fold-in vectors, so it is evaluated with them too.
                let als_list = match solver.solve(&row(m.als)) {
                    Some(v) => scorer.top_k(&v.x, EVAL_CANDIDATES, keep, &mut scratch),
                    None => Vec::new(),
                };
                let knn_list = knn.recommend(
                    &row(m.knn),
                    EVAL_CANDIDATES,
                    keep,
                    &mut scores,
                    &mut touched,
                    &mut top,
                );
                top.reset(100);
                for (i, &c) in popularity.iter().enumerate() {
                    if seen.binary_search(&(i as u32)).is_err() && keep(i as u32) {
                        top.push(i as u32, c);
                    }
                }
                let pop_list = top.drain_sorted();
                let ease_list = match ease {
                    Some(e) => {
                        e.recommend(&row(m.ease), EVAL_CANDIDATES, keep, &mut scores, &mut top)
                    }
                    None => Vec::new(),
                };
                let ids = |l: &[bespoke_algo::Scored]| -> Vec<u32> {
                    l.iter().take(100).map(|s| s.idx).collect()
                };
                let mut add = |name: &str, list: &[bespoke_algo::Scored]| {
                    if let Some(s) = sums.get_mut(name) {
                        s.add(&ids(list), items);
                    }
                };
                add(ModelKind::Als.name(), &als_list);
                add(ModelKind::Knn.name(), &knn_list);
                add(ModelKind::Popular.name(), &pop_list);
                add(ModelKind::Ease.name(), &ease_list);
                if let Some((model, scorer)) = &bpr {
                    let v = model.user_vector_with_bias(u);
                    add(
                        ModelKind::Bpr.name(),
                        &scorer.top_k(&v, 100, keep, &mut scratch),
                    );
                }
                let list = |kind: ModelKind| match kind {
                    ModelKind::Ease => &ease_list,
                    ModelKind::Knn => &knn_list,
                    _ => &als_list,
                };
                let auto = match serve {
                    Some(Serve::Blend { models, weight }) => {
                        Blend { weight: *weight }.combine(list(models[0]), list(models[1]), 100)
                    }
                    Some(Serve::Single(kind)) => list(*kind).clone(),
                    None => als_list.clone(),
                };
                add(AUTO, &auto);
                (sums, scratch, scores, touched, top)
            },
        )
        .map(|(sums, ..)| sums)
        .reduce(new_sums, |mut a, b| {
            for (x, y) in a.values_mut().zip(b.values()) {
                x.merge(y);
            }
            a
        });
    let round = |m: BTreeMap<&'static str, f64>| -> Value {
        m.into_iter()
            .map(|(k, v)| (k.to_owned(), json!((v * 1e5).round() / 1e5)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut out = json!({
        "protocol": "latest 20% of positive pairs held out per user with >= 5; implicit_bench metrics",
        "eval_users": test.len(),
    });
    for (name, s) in sums {
        out[name] = round(s.means());
    }
    out
}

/// Trains on a snapshot: evaluation first if configured, then the final models on everything.
/// `tuned` (from a tuning run, or the active version's metadata) overrides the configured
/// hyperparameters and sets each model's recency weighting.
pub fn train(
    snapshot: &Snapshot,
    settings: &Settings,
    tuned: Option<&Tuned>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Trained {
    let (effective, recency) = super::tuning::apply(settings, tuned);
    let t = &effective.training;
    let serve = tuned.map(|x| &x.serve);
    let started = Instant::now();
    let metrics = if t.evaluate {
        progress(Progress::Stage("evaluating on a held-out tail"));
        evaluate(snapshot, t, &recency, serve, progress)
    } else {
        Value::Null
    };
    progress(Progress::Stage("training on all data"));
    let mut matrices = Matrices::new(snapshot, &snapshot.pairs);
    let (models, seconds) = fit(snapshot, &mut matrices, t, &recency, "final", progress);
    let als: &Als = downcast(&models, ModelKind::Als).expect("iALS always trains");
    let started_content = Instant::now();
    let content = t
        .content
        .then(|| {
            progress(Progress::Stage("training the content model"));
            fit_content(snapshot, als, t)
        })
        .filter(|c| c.items.is_some() || c.users.is_some());
    let content_s = started_content.elapsed().as_secs_f64();
    let mut params = ParamsMeta {
        content: content
            .as_ref()
            .map(|c| c.describe(t.content_params().lambda)),
        half_life_days: t.half_life_days,
        event_weights: settings.events.weights.clone(),
        ..ParamsMeta::default()
    };
    let mut kinds: Vec<ModelKind> = models.keys().copied().collect();
    for family in REGISTRY.iter().filter(|f| models.contains_key(&f.kind())) {
        family.record(t, &recency, &mut params);
    }
    if content.is_some() {
        kinds.push(ModelKind::Content);
    }
    // Every family has a time, 0 when it was not trained, as versions always had.
    let mut training_seconds: BTreeMap<String, f64> = (REGISTRY.iter())
        .map(|f| {
            (
                f.kind().to_string(),
                seconds.get(&f.kind()).copied().unwrap_or(0.0),
            )
        })
        .collect();
    training_seconds.insert(ModelKind::Content.to_string(), content_s);
    training_seconds.insert("total".to_owned(), started.elapsed().as_secs_f64());
    let meta = ModelMeta {
        meta_version: meta::META_VERSION,
        format: meta::FORMAT.to_owned(),
        created_at: crate::time::format_rfc3339(crate::time::now_ms()),
        data: DataMeta {
            watermark_seq: snapshot.watermark,
            snapshot_at_ms: snapshot.read_at,
            events: snapshot.events,
            users: snapshot.user_keys.len(),
            items: snapshot.item_keys.len(),
            // iALS's matrix holds every pair.
            pairs: (matrices.find(recency.get(ModelKind::Als), true)).map_or(0, Csr::nnz),
        },
        models: kinds,
        params,
        serve: serve.cloned().unwrap_or_default(),
        tuning: tuned.cloned(),
        training_seconds,
        metrics,
    };
    Trained {
        models,
        content,
        meta,
    }
}

/// BPR's hyperparameters from the settings (trained on item-kNN's positive matrix).
pub fn bpr_params(t: &TrainingSettings) -> BprParams {
    t.bpr_params()
}

/// The hybrid model: the vocabulary of items from the whole catalog (items without events
/// included, so their words count), the maps learned on the rows iALS has factors for.
fn fit_content(snapshot: &Snapshot, als: &Als, t: &TrainingSettings) -> ContentModel {
    let empty = Bag::default();
    let catalog: Vec<&Bag> = snapshot.catalog.iter().map(|(_, b)| b).collect();
    let item_rows: Vec<&Bag> = snapshot
        .item_keys
        .iter()
        .map(|k| {
            snapshot
                .catalog
                .binary_search_by(|(c, _)| c.as_str().cmp(k))
                .map_or(&empty, |at| &snapshot.catalog[at].1)
        })
        .collect();
    let user_rows: Vec<&Bag> = snapshot.user_content.iter().collect();
    ContentModel::fit(
        &catalog,
        &item_rows,
        als.item_factors(),
        &user_rows,
        als.user_factors(),
        t.content_lambda,
        t.content_max_features,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_seeds_are_stable_and_distinct() {
        assert_eq!(key_seed("alice", 42), key_seed("alice", 42));
        assert_ne!(key_seed("alice", 42), key_seed("alicf", 42));
        assert_ne!(key_seed("alice", 42), key_seed("alice", 43));
        // Pinned: a change would silently change every model trained from the same data.
        assert_eq!(key_seed("", 0), 0xcbf2_9ce4_8422_2325);
    }
}
