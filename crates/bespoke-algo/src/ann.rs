//! Approximate top-k for large catalogs: an HNSW graph over the item factors for maximum
//! inner-product search, behind [`AnnScorer`], which keeps the exact [`ItemScorer`] beside it.
//!
//! # Why an index of our own
//!
//! `hnsw_rs` and `instant-distance` were evaluated. Neither builds the same graph on every run
//! with more than one thread (both insert in parallel under locks, so thread timing decides the
//! links), and a model version must serve the same answers wherever it is loaded. `hnsw_rs`
//! brings a dozen dependencies into a pure library (a logger, `mmap-rs`, `anyhow`, `rand` 0.10)
//! and its `DistDot` assumes unit vectors; `instant-distance` fixes `ef` when the index is built
//! and has no filtered search. The graph below is about 500 lines, reads the factors in place
//! (no copy of the 256 MB matrix of a million items) and runs its dot products through
//! [`crate::simd::dispatch`].
//!
//! # Inner product as the similarity
//!
//! The graph is built and searched with the inner product itself (ip-NSW, Morozov & Babenko,
//! 2018): an item's links are chosen among the items of largest dot product with it, pruned by
//! HNSW's heuristic (a candidate is dropped when its dot product with a link already kept
//! exceeds its dot product with the item). Long vectors, the popular items that win inner
//! products, gather links, and searches run towards them. The standard reduction to a metric
//! (lifting `y` to `(y, √(M² − ‖y‖²))`, Bachrach et al., 2014) was built and measured first: on
//! 20,000 trained-like items at `f = 64` it reached recall@10 0.60 at `ef = 128` where the
//! inner-product graph reached 0.995, and 0.53 against 0.94 on Gaussian factors. With norms
//! spread over a log-normal range the lift dominates the short vectors, which crowd together
//! near its axis, and the graph among them says little about the directions that matter.
//!
//! # Layout
//!
//! Layer 0 holds every item: `2m` links per item in one `Vec<u32>` (`n × 2m`, padded with
//! `u32::MAX`). Layer `l ≥ 1` holds the items drawn at level `l` or above (a fraction `m^-l`),
//! their ids sorted and `m` links each. The factors themselves are the scorer's.
//!
//! # A build that does not depend on threads
//!
//! Items are inserted in a seeded random order, in batches (ParlayANN's approach): every item of
//! a batch searches the graph as it stood before the batch, in parallel, and chooses its links;
//! then the reverse links are added, each receiving item pruned once by the same heuristic. A
//! batch is at most an eighth of the items already in the graph, so items of one batch, which
//! do not see each other, still find their neighbours among the earlier ones. The graph depends
//! on the factors and the seed only.
//!
//! # Search
//!
//! A query descends the upper layers greedily and runs a best-first search of `ef` on layer 0
//! with the item filter applied inside it: rejected items are walked through but never
//! returned (as hnswlib's filtered search). The scores are exact `f32` dot products, the same as
//! [`ItemScorer`]'s, so the `ef` best found are already re-ranked exactly. Filters that accept
//! under [`AnnParams::min_acceptance`] of a sample of items, and searches that find fewer than `k`
//! items, go to the exact scorer instead.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::score::{Identity, ItemScorer, Rescore, ScoreScratch};
use crate::simd::{self, Simd, WithSimd};
use crate::{Factors, Rng, Scored, TopK};

/// No link (padding of a link list).
const NONE: u32 = u32::MAX;

/// Items sampled to estimate how many items a filter accepts.
const SAMPLE: usize = 256;

/// A batch holds at most this share of the items already in the graph (as a divisor) ...
const BATCH_DIVISOR: usize = 8;
/// ... and at most this many items: the graph of a batch's items is frozen while they search.
const MAX_BATCH: usize = 4096;

/// The default of `serving.ann_min_items`: catalogs of at least this many items are served
/// through the graph. Below it the exact scan takes about a millisecond at `f = 64`
/// (`docs/benchmarks.md`, "Large catalogs").
pub const DEFAULT_MIN_ITEMS: usize = 100_000;

/// How an [`AnnScorer`] builds and searches its graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnParams {
    /// Links per item on the upper layers (`m`; layer 0 has `2m`). More links: better recall,
    /// slower build, more memory (`8m` bytes per item on layer 0).
    pub links: usize,
    /// Candidates kept while choosing an inserted item's links. More: a better graph, a slower
    /// build.
    pub ef_construction: usize,
    /// Candidates kept while searching (at least `k`): the recall/latency trade-off.
    pub ef_search: usize,
    /// Candidates re-ranked when a [`Rescore`] (business-rule boosts) applies: boosts reorder
    /// this pool of the best plain scores, so a boosted item outside it is missed.
    pub rescore_pool: usize,
    /// Filters accepting a smaller share of a sample of items are served by the exact scan:
    /// the graph search would walk most of the graph to find `k` accepted items.
    pub min_acceptance: f32,
    /// Seed of the insertion order and of the levels.
    pub seed: u64,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self {
            links: 16,
            ef_construction: 100,
            ef_search: 128,
            rescore_pool: 256,
            min_acceptance: 0.02,
            seed: 0x05ee_da11,
        }
    }
}

/// A candidate in a search: its similarity and id. Ordered by similarity, then by the smaller id
/// (so that ties resolve the same way on every run).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cand {
    sim: f32,
    id: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim
            .total_cmp(&other.sim)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reusable buffers of a graph search (part of [`ScoreScratch`]).
#[derive(Debug, Clone, Default)]
pub struct SearchScratch {
    /// Per item, the search that last visited it (`epoch`); no clearing between searches.
    visited: Vec<u32>,
    epoch: u32,
    candidates: BinaryHeap<Cand>,
    found: BinaryHeap<Reverse<Cand>>,
    out: Vec<Cand>,
    fresh: Vec<u32>,
}

impl SearchScratch {
    fn begin(&mut self, n: usize) {
        if self.visited.len() != n {
            self.visited.clear();
            self.visited.resize(n, 0);
            self.epoch = 0;
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.fill(0);
            self.epoch = 1;
        }
        self.candidates.clear();
        self.found.clear();
        self.out.clear();
    }

    /// Marks `id` visited; whether it was not yet.
    #[inline(always)]
    fn visit(&mut self, id: u32) -> bool {
        let v = &mut self.visited[id as usize];
        let first = *v != self.epoch;
        *v = self.epoch;
        first
    }
}

/// An upper layer: the items drawn at its level or above (sorted) and their links.
#[derive(Debug, Clone, Default)]
struct Layer {
    nodes: Vec<u32>,
    links: Vec<u32>,
}

/// The HNSW graph over an item matrix (which it does not own).
#[derive(Debug, Clone)]
pub struct Hnsw {
    n: usize,
    m: usize,
    /// Layer 0: `2m` links per item.
    base: Vec<u32>,
    /// `upper[l - 1]` is layer `l`.
    upper: Vec<Layer>,
    entry: u32,
}

impl Hnsw {
    /// Builds the graph of `items` (rows are items), in parallel on the rayon pool; the same
    /// graph for the same items and `params`, whatever the number of threads.
    pub fn build(items: &Factors, params: &AnnParams) -> Self {
        let n = items.rows();
        let m = params.links.clamp(2, 255);
        let mut graph = Self {
            n,
            m,
            base: vec![NONE; n * 2 * m],
            upper: Vec::new(),
            entry: 0,
        };
        if n == 0 {
            return graph;
        }
        let mut rng = Rng::seed_from_u64(params.seed);
        // Level l with probability m^-l (1 − 1/m), as in the paper (mL = 1 / ln m).
        let ml = 1.0 / (m as f64).ln();
        let levels: Vec<u8> = (0..n)
            .map(|_| ((-(1.0 - rng.f64()).ln() * ml) as usize).min(16) as u8)
            .collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        // The first item inserted is the highest, so the entry point never changes.
        let top_pos = (0..n)
            .max_by_key(|&p| (levels[order[p] as usize], Reverse(p)))
            .expect("n > 0");
        order.swap(0, top_pos);
        let top = levels[order[0] as usize] as usize;
        graph.entry = order[0];
        graph.upper = (1..=top)
            .map(|l| {
                let nodes: Vec<u32> = (0..n as u32)
                    .filter(|&i| levels[i as usize] as usize >= l)
                    .collect();
                let links = vec![NONE; nodes.len() * m];
                Layer { nodes, links }
            })
            .collect();
        let ef = params.ef_construction.max(m);
        let mut inserted = 1;
        while inserted < n {
            let b = (inserted / BATCH_DIVISOR)
                .clamp(1, MAX_BATCH)
                .min(n - inserted);
            let batch = &order[inserted..inserted + b];
            // Each item of the batch chooses its links per layer, the graph read-only.
            let chosen: Vec<Vec<Vec<u32>>> = batch
                .par_iter()
                .map(|&p| {
                    BUILD_SCRATCH.with(|s| {
                        simd::dispatch(Insert {
                            graph: &graph,
                            items,
                            p,
                            level: levels[p as usize] as usize,
                            ef,
                            scratch: &mut s.borrow_mut(),
                        })
                    })
                })
                .collect();
            // Reverse links, grouped by receiving item in a fixed order.
            let mut reverse: Vec<(u8, u32, u32)> = Vec::new();
            for (&p, layers) in batch.iter().zip(&chosen) {
                for (l, links) in layers.iter().enumerate() {
                    let slot = graph.links_mut(l, p);
                    slot[..links.len()].copy_from_slice(links);
                    reverse.extend(links.iter().map(|&q| (l as u8, q, p)));
                }
            }
            reverse.sort_unstable();
            let groups: Vec<&[(u8, u32, u32)]> =
                reverse.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1).collect();
            let updated: Vec<(usize, u32, Vec<u32>)> = groups
                .par_iter()
                .map(|g| {
                    let (l, q) = (g[0].0 as usize, g[0].1);
                    let sources: Vec<u32> = g.iter().map(|e| e.2).collect();
                    (
                        l,
                        q,
                        simd::dispatch(Relink {
                            graph: &graph,
                            items,
                            layer: l,
                            q,
                            sources: &sources,
                        }),
                    )
                })
                .collect();
            for (l, q, links) in updated {
                let slot = graph.links_mut(l, q);
                slot.fill(NONE);
                slot[..links.len()].copy_from_slice(&links);
            }
            inserted += b;
        }
        graph
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Number of layers (1 + the entry point's level).
    pub fn layers(&self) -> usize {
        1 + self.upper.len()
    }

    /// Bytes held by the links.
    pub fn heap_bytes(&self) -> usize {
        4 * self.base.len()
            + (self.upper.iter())
                .map(|l| 4 * (l.nodes.len() + l.links.len()))
                .sum::<usize>()
    }

    /// The link list of `id` on `layer`, padded with [`NONE`]; empty when it is not there.
    #[inline(always)]
    fn links(&self, layer: usize, id: u32) -> &[u32] {
        if layer == 0 {
            let w = 2 * self.m;
            return &self.base[id as usize * w..(id as usize + 1) * w];
        }
        let l = &self.upper[layer - 1];
        match l.nodes.binary_search(&id) {
            Ok(s) => &l.links[s * self.m..(s + 1) * self.m],
            Err(_) => &[],
        }
    }

    fn links_mut(&mut self, layer: usize, id: u32) -> &mut [u32] {
        if layer == 0 {
            let w = 2 * self.m;
            return &mut self.base[id as usize * w..(id as usize + 1) * w];
        }
        let m = self.m;
        let l = &mut self.upper[layer - 1];
        let s = l
            .nodes
            .binary_search(&id)
            .expect("an item linked on a layer is on it");
        &mut l.links[s * m..(s + 1) * m]
    }

    /// The capacity of a link list on `layer`.
    fn width(&self, layer: usize) -> usize {
        if layer == 0 { 2 * self.m } else { self.m }
    }

    /// The `ef` best items for `x` that `keep` accepts, best first (in `scratch.out`), visiting
    /// at most about `max_visits` items on layer 0.
    fn search<F: FnMut(u32) -> bool>(
        &self,
        items: &Factors,
        x: &[f32],
        ef: usize,
        max_visits: usize,
        keep: F,
        scratch: &mut SearchScratch,
    ) {
        simd::dispatch(Query {
            graph: self,
            items,
            x,
            ef,
            max_visits,
            keep,
            scratch,
        });
    }
}

thread_local! {
    /// Per-thread buffers of the build's searches (rayon's workers live for the process).
    static BUILD_SCRATCH: RefCell<SearchScratch> = RefCell::new(SearchScratch::default());
}

/// Similarities to one query (a user vector, or the item being inserted): `x·y_i`.
struct Sim<'a, S> {
    s: S,
    items: &'a Factors,
    x: &'a [f32],
}

impl<S: Simd> Sim<'_, S> {
    #[inline(always)]
    fn of(&self, id: u32) -> f32 {
        not_nan(self.s.dot(self.x, self.items.row(id as usize)))
    }

    #[inline(always)]
    fn prefetch(&self, id: u32) {
        self.s.prefetch(self.items.row(id as usize));
    }
}

/// A NaN (a broken factor) must not win every comparison.
#[inline(always)]
fn not_nan(v: f32) -> f32 {
    if v.is_nan() { f32::NEG_INFINITY } else { v }
}

impl Hnsw {
    /// Greedy descent on one layer from `cur`: to the best link until none is better.
    #[inline(always)]
    fn greedy<S: Simd>(&self, sim: &Sim<'_, S>, layer: usize, mut cur: Cand) -> Cand {
        loop {
            let mut moved = false;
            for &nb in self.links(layer, cur.id) {
                if nb == NONE {
                    break;
                }
                let c = Cand {
                    sim: sim.of(nb),
                    id: nb,
                };
                if c > cur {
                    cur = c;
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Best-first search of one layer from `scratch.out` (the entry points): the `ef` best items
    /// `keep` accepts, best first, into `scratch.out`.
    #[inline(always)]
    fn search_layer<S: Simd>(
        &self,
        sim: &Sim<'_, S>,
        layer: usize,
        ef: usize,
        max_visits: usize,
        keep: &mut impl FnMut(u32) -> bool,
        sc: &mut SearchScratch,
    ) {
        let ef = ef.max(1);
        let entries = std::mem::take(&mut sc.out);
        sc.begin(self.n);
        for &e in &entries {
            if sc.visit(e.id) {
                sc.candidates.push(e);
                if keep(e.id) {
                    sc.found.push(Reverse(e));
                }
            }
        }
        while sc.found.len() > ef {
            sc.found.pop();
        }
        sc.out = entries;
        let mut visits = sc.out.len();
        while let Some(c) = sc.candidates.pop() {
            if sc.found.len() >= ef && sc.found.peek().is_some_and(|w| c < w.0) {
                break;
            }
            // Collect the unvisited links first and ask for their rows, so the memory loads
            // overlap instead of following one another.
            sc.fresh.clear();
            for &nb in self.links(layer, c.id) {
                if nb == NONE {
                    break;
                }
                if sc.visit(nb) {
                    sim.prefetch(nb);
                    sc.fresh.push(nb);
                }
            }
            visits += sc.fresh.len();
            for f in 0..sc.fresh.len() {
                let nb = sc.fresh[f];
                let cand = Cand {
                    sim: sim.of(nb),
                    id: nb,
                };
                if sc.found.len() < ef || sc.found.peek().is_some_and(|w| cand > w.0) {
                    sc.candidates.push(cand);
                    if keep(nb) {
                        sc.found.push(Reverse(cand));
                        if sc.found.len() > ef {
                            sc.found.pop();
                        }
                    }
                }
            }
            if visits >= max_visits {
                break;
            }
        }
        sc.out.clear();
        sc.out.extend(sc.found.drain().map(|r| r.0));
        sc.out.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// HNSW's neighbour heuristic: from `cands` (best first, similarities to the item being
    /// linked), keep a candidate only if it is closer to that item than to every one kept, so
    /// links spread in all directions; at most `width`.
    #[inline(always)]
    fn select<S: Simd>(&self, s: S, items: &Factors, cands: &[Cand], width: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(width);
        for c in cands {
            if kept.len() == width {
                break;
            }
            let yc = items.row(c.id as usize);
            let mut diverse = true;
            for &k in &kept {
                if not_nan(s.dot(yc, items.row(k as usize))) > c.sim {
                    diverse = false;
                    break;
                }
            }
            if diverse {
                kept.push(c.id);
            }
        }
        kept
    }
}

/// One item's insertion search: its links per layer (index = layer), chosen against the graph
/// as it stands.
struct Insert<'a> {
    graph: &'a Hnsw,
    items: &'a Factors,
    p: u32,
    level: usize,
    ef: usize,
    scratch: &'a mut SearchScratch,
}

impl WithSimd for Insert<'_> {
    type Output = Vec<Vec<u32>>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> Vec<Vec<u32>> {
        let g = self.graph;
        let sim = Sim {
            s,
            items: self.items,
            x: self.items.row(self.p as usize),
        };
        let top = g.upper.len();
        let mut cur = Cand {
            sim: sim.of(g.entry),
            id: g.entry,
        };
        let mut l = top;
        while l > self.level {
            cur = g.greedy(&sim, l, cur);
            l -= 1;
        }
        let sc = self.scratch;
        sc.out.clear();
        sc.out.push(cur);
        let mut links = vec![Vec::new(); self.level.min(top) + 1];
        for layer in (0..=self.level.min(top)).rev() {
            g.search_layer(&sim, layer, self.ef, usize::MAX, &mut |_| true, sc);
            // `m` links of its own on every layer, as hnswlib: layer 0's room for `2m` fills
            // with the links of items inserted later.
            links[layer] = g.select(s, self.items, &sc.out, g.m);
        }
        links
    }
}

/// A receiving item's new link list: its links plus the new sources, pruned by the heuristic
/// when over capacity.
struct Relink<'a> {
    graph: &'a Hnsw,
    items: &'a Factors,
    layer: usize,
    q: u32,
    sources: &'a [u32],
}

impl WithSimd for Relink<'_> {
    type Output = Vec<u32>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> Vec<u32> {
        let g = self.graph;
        let width = g.width(self.layer);
        let mut all: Vec<u32> = g
            .links(self.layer, self.q)
            .iter()
            .copied()
            .take_while(|&v| v != NONE)
            .collect();
        all.extend_from_slice(self.sources);
        if all.len() <= width {
            return all;
        }
        let yq = self.items.row(self.q as usize);
        let mut cands: Vec<Cand> = Vec::with_capacity(all.len());
        for &id in &all {
            let sim = not_nan(s.dot(yq, self.items.row(id as usize)));
            cands.push(Cand { sim, id });
        }
        cands.sort_unstable_by(|a, b| b.cmp(a));
        g.select(s, self.items, &cands, width)
    }
}

/// A query: greedy descent, then the filtered search of layer 0.
struct Query<'a, F> {
    graph: &'a Hnsw,
    items: &'a Factors,
    x: &'a [f32],
    ef: usize,
    max_visits: usize,
    keep: F,
    scratch: &'a mut SearchScratch,
}

impl<F: FnMut(u32) -> bool> WithSimd for Query<'_, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(mut self, s: S) {
        let g = self.graph;
        let sim = Sim {
            s,
            items: self.items,
            x: self.x,
        };
        let mut cur = Cand {
            sim: sim.of(g.entry),
            id: g.entry,
        };
        for l in (1..=g.upper.len()).rev() {
            cur = g.greedy(&sim, l, cur);
        }
        self.scratch.out.clear();
        self.scratch.out.push(cur);
        g.search_layer(
            &sim,
            0,
            self.ef,
            self.max_visits,
            &mut self.keep,
            self.scratch,
        );
    }
}

/// Below this [`norm_spread`], [`AnnScorer::auto`] builds a graph: the exact scan's early stop
/// saves little. Unit vectors have 1, i.i.d. Gaussian factors about 1.2 (both scanned whole),
/// log-normal norms of σ = 0.6 about 4 (most of the catalog never read).
pub const FLAT_SPREAD: f32 = 2.0;

/// The 99th percentile of the item norms over their median (1 for unit vectors); 1 for
/// fewer than two items or a zero median.
pub fn norm_spread(items: &Factors) -> f32 {
    let mut norms: Vec<f32> = (0..items.rows())
        .map(|i| items.row(i).iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    if norms.len() < 2 {
        return 1.0;
    }
    norms.sort_by(f32::total_cmp);
    let median = norms[norms.len() / 2];
    let p99 = norms[(norms.len() - 1) * 99 / 100];
    if median > 0.0 { p99 / median } else { 1.0 }
}

/// Top-k over item factors: through an HNSW graph for catalogs of at least a configured size,
/// by the exact [`ItemScorer`] otherwise and for very selective filters.
#[derive(Debug, Clone)]
pub struct AnnScorer {
    exact: ItemScorer,
    graph: Option<Hnsw>,
    params: AnnParams,
    /// Items whose acceptance estimates a filter's (a seeded sample).
    sample: Vec<u32>,
}

impl AnnScorer {
    /// Prepares `items`; builds the graph when `min_items > 0` and there are at least
    /// `min_items` items (seconds to minutes for a million: call it off the request path).
    pub fn new(items: Factors, min_items: usize, params: AnnParams) -> Self {
        let n = items.rows();
        let graph = (min_items > 0 && n >= min_items).then(|| Hnsw::build(&items, &params));
        let mut rng = Rng::seed_from_u64(params.seed ^ 0x5a3b_1e00);
        let sample = if graph.is_some() {
            (0..SAMPLE).map(|_| rng.below(n as u64) as u32).collect()
        } else {
            Vec::new()
        };
        Self {
            exact: ItemScorer::new(items),
            graph,
            params,
            sample,
        }
    }

    /// Like [`AnnScorer::new`], but builds the graph only where it pays: when the item norms
    /// are flat ([`norm_spread`] below [`FLAT_SPREAD`]). Norms that spread, as training spreads
    /// them with popularity, let the exact scan stop early (it reads items by decreasing norm),
    /// which then beats the graph by 4–10× (`docs/benchmarks.md`, large catalogs); flat norms
    /// (unit vectors for similar items, factors without a popularity spread) make it read the
    /// whole catalog. Deterministic: every node serving a version chooses the same way.
    pub fn auto(items: Factors, min_items: usize, params: AnnParams) -> Self {
        let flat = min_items > 0 && items.rows() >= min_items && norm_spread(&items) < FLAT_SPREAD;
        Self::new(items, if flat { min_items } else { 0 }, params)
    }

    /// Exact only (no graph, whatever the size).
    pub fn exact(items: Factors) -> Self {
        Self::new(items, 0, AnnParams::default())
    }

    /// The exact scorer (what small catalogs and selective filters use).
    pub fn exact_scorer(&self) -> &ItemScorer {
        &self.exact
    }

    /// Whether a filter that accepts this `share` of the items is better scanned as an exact
    /// [`ItemScorer::subset`] than searched here: without a graph when it keeps at most half
    /// of them; with one only where the search would fall back to the exact scan anyway.
    pub fn prefers_subset(&self, share: f32) -> bool {
        match self.graph {
            None => share <= 0.5,
            Some(_) => share < self.params.min_acceptance,
        }
    }

    /// The graph, when this catalog is searched through one.
    pub fn graph(&self) -> Option<&Hnsw> {
        self.graph.as_ref()
    }

    /// The parameters.
    pub fn params(&self) -> &AnnParams {
        &self.params
    }

    /// Sets the search width [`AnnParams::ef_search`] (the graph stays as built).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef;
    }

    /// The exact item factors.
    pub fn items(&self) -> &Factors {
        self.exact.items()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }

    /// The `k` best items for `x` among those `keep` accepts, best first, ties to the smaller
    /// id, with their exact scores. Exact ([`ItemScorer::top_k`]) without a graph, for a
    /// filter accepting under [`AnnParams::min_acceptance`] of a sample, or when the graph
    /// search finds fewer than `k` accepted items; approximate otherwise (a true top-k item may
    /// be missing, never a rejected one present). `keep` must answer the same for an item
    /// every time it is asked (it is asked about a sample of items too).
    pub fn top_k(
        &self,
        x: &[f32],
        k: usize,
        keep: impl FnMut(u32) -> bool,
        scratch: &mut ScoreScratch,
    ) -> Vec<Scored> {
        self.top_k_rescored(x, k, keep, &mut Identity, scratch)
    }

    /// [`Self::top_k`] ranked by `rescore` of the scores (plain scores returned). Through the
    /// graph the boosts reorder a pool of the [`AnnParams::rescore_pool`] best plain scores:
    /// an item that only its boost would bring into the top `k` is found only if it is in the
    /// pool.
    pub fn top_k_rescored<R: Rescore>(
        &self,
        x: &[f32],
        k: usize,
        mut keep: impl FnMut(u32) -> bool,
        rescore: &mut R,
        scratch: &mut ScoreScratch,
    ) -> Vec<Scored> {
        let Some(graph) = &self.graph else {
            return self.exact.top_k_rescored(x, k, keep, rescore, scratch);
        };
        if k == 0 || self.is_empty() {
            return Vec::new();
        }
        assert_eq!(x.len(), self.items().dim(), "query dimension");
        let accepted = self.sample.iter().filter(|&&i| keep(i)).count();
        if !x.iter().all(|v| v.is_finite())
            || (accepted as f32) < self.params.min_acceptance * self.sample.len() as f32
        {
            return self.exact.top_k_rescored(x, k, keep, rescore, scratch);
        }
        let ef = if R::IDENTITY {
            self.params.ef_search.max(k)
        } else {
            self.params.ef_search.max(self.params.rescore_pool).max(k)
        };
        // A filter that rejects much makes the search walk further for as many results;
        // past this, the exact scan is the cheaper way.
        let max_visits = ef.saturating_mul(2 * graph.m).saturating_mul(8);
        let sc = &mut scratch.ann;
        graph.search(self.items(), x, ef, max_visits, &mut keep, sc);
        if sc.out.len() < k {
            return self.exact.top_k_rescored(x, k, keep, rescore, scratch);
        }
        let top = scratch.top.get_or_insert_with(|| TopK::new(k));
        top.reset(k);
        for c in &scratch.ann.out {
            let score = if R::IDENTITY {
                c.sim
            } else {
                let class = rescore.class(c.id);
                rescore.apply(class, c.sim)
            };
            top.push(c.id, score);
        }
        let mut out = top.drain_sorted();
        if !R::IDENTITY {
            for s in &mut out {
                s.score = simd::dot(x, self.items().row(s.idx as usize));
            }
        }
        out
    }
}

/// Synthetic item factors and queries for tests and benchmarks.
pub mod synthetic {
    use crate::{Factors, Rng};

    /// The shape of synthetic factors.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Shape {
        /// What training produces: items in clusters of a low-rank space plus noise, norms
        /// log-normal (popular items long); queries from the same clusters.
        Trained,
        /// [`Self::Trained`]'s items scaled to unit length (queries too): what similar items
        /// are scored on, and where norms give the exact scan no early stop.
        Unit,
        /// Independent standard normal values, items and queries alike: no structure at all,
        /// the hardest case for a graph index.
        Gaussian,
    }

    /// Rank of the latent space of [`Shape::Trained`].
    const RANK: usize = 16;
    /// Clusters of [`Shape::Trained`].
    const CLUSTERS: usize = 256;

    /// The latent structure shared by items and queries of one seed.
    struct Latent {
        basis: Vec<f32>,
        centres: Vec<f32>,
    }

    impl Latent {
        fn new(dim: usize, seed: u64) -> Self {
            let mut rng = Rng::seed_from_u64(seed);
            let basis = (0..RANK * dim).map(|_| rng.normal() as f32).collect();
            let centres = (0..CLUSTERS * RANK).map(|_| rng.normal() as f32).collect();
            Self { basis, centres }
        }

        /// A unit vector near a random cluster, into `out`.
        fn draw(&self, rng: &mut Rng, out: &mut [f32]) {
            let dim = out.len();
            let c = rng.below(CLUSTERS as u64) as usize;
            let z: Vec<f32> = (0..RANK)
                .map(|r| self.centres[c * RANK + r] + 0.5 * rng.normal() as f32)
                .collect();
            for (k, o) in out.iter_mut().enumerate() {
                let mut v = 0.0;
                for (r, zr) in z.iter().enumerate() {
                    v += zr * self.basis[r * dim + k];
                }
                *o = v / (RANK as f32).sqrt() + 0.3 * rng.normal() as f32;
            }
            let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            out.iter_mut().for_each(|v| *v /= norm);
        }
    }

    /// `n` items of dimension `dim`.
    pub fn items(shape: Shape, n: usize, dim: usize, seed: u64) -> Factors {
        let mut data = vec![0f32; n * dim];
        let mut rng = Rng::seed_from_u64(seed.wrapping_add(1));
        match shape {
            Shape::Gaussian => data.iter_mut().for_each(|v| *v = rng.normal() as f32),
            Shape::Trained | Shape::Unit => {
                let latent = Latent::new(dim, seed);
                for row in data.chunks_exact_mut(dim.max(1)) {
                    latent.draw(&mut rng, row);
                    // Log-normal norms: a long tail of popular, long vectors.
                    let norm = (0.6 * rng.normal()).exp() as f32;
                    if shape == Shape::Trained {
                        row.iter_mut().for_each(|v| *v *= norm);
                    }
                }
            }
        }
        Factors::from_vec(n, dim, data).expect("n × dim values")
    }

    /// `n` queries (user vectors) for items of the same `shape`, `dim` and `seed`.
    pub fn queries(shape: Shape, n: usize, dim: usize, seed: u64) -> Factors {
        let mut data = vec![0f32; n * dim];
        let mut rng = Rng::seed_from_u64(seed.wrapping_add(2));
        match shape {
            Shape::Gaussian => data.iter_mut().for_each(|v| *v = rng.normal() as f32),
            Shape::Trained | Shape::Unit => {
                let latent = Latent::new(dim, seed);
                for row in data.chunks_exact_mut(dim.max(1)) {
                    latent.draw(&mut rng, row);
                }
            }
        }
        Factors::from_vec(n, dim, data).expect("n × dim values")
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{Shape, items, queries};
    use super::*;

    #[test]
    fn auto_builds_a_graph_only_for_flat_norms() {
        let params = AnnParams::default();
        let trained = items(Shape::Trained, 3_000, 16, 7);
        assert!(
            norm_spread(&trained) > FLAT_SPREAD,
            "{}",
            norm_spread(&trained)
        );
        assert!(AnnScorer::auto(trained, 1_000, params).graph().is_none());
        for shape in [Shape::Unit, Shape::Gaussian] {
            let f = items(shape, 3_000, 16, 7);
            assert!(
                norm_spread(&f) < FLAT_SPREAD,
                "{shape:?}: {}",
                norm_spread(&f)
            );
            assert!(AnnScorer::auto(f.clone(), 1_000, params).graph().is_some());
            assert!(
                AnnScorer::auto(f, 5_000, params).graph().is_none(),
                "below the size"
            );
        }
    }

    fn params() -> AnnParams {
        AnnParams::default()
    }

    /// Mean recall@k of `ann` against the exact scorer over `queries`.
    fn recall(ann: &AnnScorer, qs: &Factors, k: usize) -> f64 {
        let mut scratch = ScoreScratch::default();
        let mut hit = 0;
        for q in 0..qs.rows() {
            let x = qs.row(q);
            let want = ann.exact_scorer().top_k(x, k, |_| true, &mut scratch);
            let got = ann.top_k(x, k, |_| true, &mut scratch);
            hit += got
                .iter()
                .filter(|g| want.iter().any(|w| w.idx == g.idx))
                .count();
        }
        hit as f64 / (qs.rows() * k) as f64
    }

    #[test]
    fn recall_is_high_on_trained_like_factors() {
        let ann = AnnScorer::new(items(Shape::Trained, 10_000, 32, 1), 1, params());
        assert!(ann.graph().is_some());
        let r = recall(&ann, &queries(Shape::Trained, 200, 32, 1), 10);
        assert!(r >= 0.95, "recall@10 {r}");
    }

    #[test]
    fn recall_is_high_on_unit_factors() {
        let ann = AnnScorer::new(items(Shape::Unit, 10_000, 32, 3), 1, params());
        let r = recall(&ann, &queries(Shape::Unit, 200, 32, 3), 10);
        assert!(r >= 0.95, "recall@10 {r}");
    }

    #[test]
    fn recall_is_high_on_gaussian_factors() {
        let ann = AnnScorer::new(items(Shape::Gaussian, 5_000, 16, 2), 1, params());
        let r = recall(&ann, &queries(Shape::Gaussian, 200, 16, 2), 10);
        assert!(r >= 0.9, "recall@10 {r}");
    }

    #[test]
    fn scores_are_exact_and_sorted() {
        let ann = AnnScorer::new(items(Shape::Trained, 3_000, 16, 3), 1, params());
        let qs = queries(Shape::Trained, 20, 16, 3);
        let mut scratch = ScoreScratch::default();
        for q in 0..qs.rows() {
            let x = qs.row(q);
            let got = ann.top_k(x, 10, |_| true, &mut scratch);
            assert_eq!(got.len(), 10);
            for w in got.windows(2) {
                assert!(
                    w[0].score > w[1].score || (w[0].score == w[1].score && w[0].idx < w[1].idx)
                );
            }
            for s in &got {
                assert_eq!(s.score, simd::dot(x, ann.items().row(s.idx as usize)));
            }
        }
    }

    #[test]
    fn the_build_is_deterministic_whatever_the_threads() {
        let f = items(Shape::Trained, 4_000, 16, 4);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| Hnsw::build(&f, &params()));
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| Hnsw::build(&f, &params()));
        assert_eq!(one.base, three.base);
        assert_eq!(one.entry, three.entry);
        assert_eq!(one.upper.len(), three.upper.len());
        for (a, b) in one.upper.iter().zip(&three.upper) {
            assert_eq!((&a.nodes, &a.links), (&b.nodes, &b.links));
        }
        let other = Hnsw::build(
            &f,
            &AnnParams {
                seed: 9,
                ..params()
            },
        );
        assert_ne!(one.base, other.base);
    }

    #[test]
    fn filters_are_honoured() {
        let ann = AnnScorer::new(items(Shape::Trained, 5_000, 16, 5), 1, params());
        let qs = queries(Shape::Trained, 50, 16, 5);
        let mut scratch = ScoreScratch::default();
        for (q, modulus) in (0..qs.rows()).zip([2u32, 3, 5, 7, 11].into_iter().cycle()) {
            let keep = |i: u32| i % modulus == 1;
            let got = ann.top_k(qs.row(q), 10, keep, &mut scratch);
            assert_eq!(got.len(), 10);
            assert!(got.iter().all(|s| keep(s.idx)));
        }
    }

    #[test]
    fn selective_filters_fall_back_to_the_exact_answer() {
        let ann = AnnScorer::new(items(Shape::Trained, 5_000, 16, 6), 1, params());
        let qs = queries(Shape::Trained, 30, 16, 6);
        let mut scratch = ScoreScratch::default();
        for q in 0..qs.rows() {
            // One item in 200: under the 2 % the graph serves.
            let keep = |i: u32| i % 200 == 7;
            let got = ann.top_k(qs.row(q), 10, keep, &mut scratch);
            let want = ann.exact_scorer().top_k(qs.row(q), 10, keep, &mut scratch);
            assert_eq!(got, want);
            // Fewer accepted items than k: all of them, exactly.
            let few = |i: u32| i == 3 || i == 4_000;
            let got = ann.top_k(qs.row(q), 10, few, &mut scratch);
            assert_eq!(
                got,
                ann.exact_scorer().top_k(qs.row(q), 10, few, &mut scratch)
            );
            assert_eq!(got.len(), 2);
        }
    }

    /// Boosts items divisible by 10 by 1.5×.
    struct Tens;

    impl Rescore for Tens {
        fn class(&mut self, item: u32) -> u32 {
            u32::from(item.is_multiple_of(10))
        }
        fn apply(&self, class: u32, s: f32) -> f32 {
            if class == 1 && s > 0.0 { s * 1.5 } else { s }
        }
        fn floor(&self, t: f32) -> f32 {
            if t > 0.0 { t / 1.5 - 1e-4 * t } else { t }
        }
    }

    #[test]
    fn boosts_rerank_the_pool() {
        let ann = AnnScorer::new(items(Shape::Trained, 5_000, 16, 7), 1, params());
        let qs = queries(Shape::Trained, 50, 16, 7);
        let mut scratch = ScoreScratch::default();
        let mut hit = 0;
        for q in 0..qs.rows() {
            let x = qs.row(q);
            let got = ann.top_k_rescored(x, 10, |_| true, &mut Tens, &mut scratch);
            let want = ann
                .exact_scorer()
                .top_k_rescored(x, 10, |_| true, &mut Tens, &mut scratch);
            for s in &got {
                assert_eq!(s.score, simd::dot(x, ann.items().row(s.idx as usize)));
            }
            hit += got
                .iter()
                .filter(|g| want.iter().any(|w| w.idx == g.idx))
                .count();
        }
        let r = hit as f64 / 500.0;
        assert!(r >= 0.95, "boosted recall@10 {r}");
    }

    #[test]
    fn small_catalogs_and_bad_queries_stay_exact() {
        let f = items(Shape::Gaussian, 500, 8, 8);
        let exact = AnnScorer::new(f.clone(), 1_000, params());
        assert!(exact.graph().is_none());
        assert!(AnnScorer::new(f.clone(), 0, params()).graph().is_none());
        let ann = AnnScorer::new(f, 100, params());
        let mut scratch = ScoreScratch::default();
        let nan = [f32::NAN; 8];
        assert_eq!(
            ann.top_k(&nan, 5, |_| true, &mut scratch),
            ann.exact_scorer().top_k(&nan, 5, |_| true, &mut scratch)
        );
        assert!(ann.top_k(&[1.0; 8], 0, |_| true, &mut scratch).is_empty());
        let empty = AnnScorer::new(Factors::zeros(0, 8), 1, params());
        assert!(empty.top_k(&[1.0; 8], 3, |_| true, &mut scratch).is_empty());
        let one = AnnScorer::new(
            Factors::from_vec(1, 2, vec![1.0, 0.0]).unwrap(),
            1,
            params(),
        );
        assert_eq!(one.top_k(&[1.0, 1.0], 3, |_| true, &mut scratch).len(), 1);
    }
}
