//! Item-based nearest neighbours: item–item similarities from the columns of the user × item
//! matrix, the `K` largest kept per item, stored sparse (`implicit`'s `ItemItemRecommender`).
//!
//! - Cosine: columns scaled to unit L2 norm, similarity = dot product.
//! - BM25: `implicit.nearest_neighbours.bm25_weight` applied to the item × user matrix
//!   (`N` = number of items; `idf(u) = ln N − ln(1 + items of u)`; per item length
//!   normalisation `(1 − B) + B · row_sum / mean_row_sum`; `w' = w (K1 + 1) / (K1 · norm + w) ·
//!   idf(u)`), then dot products.
//!
//! An item's own similarity counts among its `K` (as in `implicit`); it never matters for
//! recommendations because a user's own items are filtered out.
//!
//! Score of item `j` for a user: `Σ_{i ∈ history} w_ui · sim(i, j)`, with the raw weights `w_ui`;
//! each term is that history item's contribution, which is the explanation.

use rayon::prelude::*;

use crate::{Csr, Scored, TopK};

/// How columns are weighted before their dot products.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Similarity {
    /// Cosine similarity.
    Cosine,
    /// BM25-weighted dot products.
    Bm25 {
        /// Term-frequency saturation (`implicit`'s default 1.2).
        k1: f32,
        /// Length normalisation (`implicit`'s default 0.75).
        b: f32,
    },
    /// RP3beta (Paudel et al., "Updatable, accurate, diverse, and scalable recommendations
    /// for interactive applications", 2016): the three-step random walk item → user → item,
    /// transition probabilities raised to `alpha`, the arrival item's probability divided by
    /// its popularity to the power `beta`.
    Rp3Beta {
        /// Exponent of the transition probabilities.
        alpha: f32,
        /// Popularity penalty.
        beta: f32,
    },
}

/// Items per parallel work unit.
const ITEM_CHUNK: usize = 64;

/// A fitted item–item neighbourhood.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemKnn {
    similarity: Similarity,
    k: usize,
    /// Row `i`: the neighbours of item `i` and their similarities.
    neighbours: Csr,
}

/// The item × user matrix `L` and the user × item matrix `R` with `sim(i, j) = (L R)_ij`.
fn factors_of_similarity(weights: &Csr, similarity: Similarity) -> (Csr, Csr) {
    if let Similarity::Rp3Beta { alpha, beta } = similarity {
        let iu = weights.transpose();
        let row_sums = |m: &Csr| -> Vec<f32> {
            (0..m.n_rows())
                .map(|r| m.row(r).1.iter().map(|v| v.abs()).sum())
                .collect()
        };
        let (item_deg, user_deg) = (row_sums(&iu), row_sums(weights));
        // Item → user and user → item transition probabilities, to the power alpha.
        let left = iu.map_entries(|i, _, v| {
            if item_deg[i] > 0.0 {
                (v.abs() / item_deg[i]).powf(alpha)
            } else {
                0.0
            }
        });
        let popularity: Vec<f32> = (0..iu.n_rows()).map(|i| iu.row(i).0.len() as f32).collect();
        let right = weights.map_entries(|u, j, v| {
            let p = if user_deg[u] > 0.0 {
                (v.abs() / user_deg[u]).powf(alpha)
            } else {
                0.0
            };
            let pop = popularity[j as usize];
            if pop > 0.0 { p / pop.powf(beta) } else { 0.0 }
        });
        return (left, right);
    }
    let iu = weighted_item_user(weights, similarity);
    let ui = iu.transpose();
    (iu, ui)
}

/// The weighted item × user matrix whose row dot products are the similarities.
fn weighted_item_user(weights: &Csr, similarity: Similarity) -> Csr {
    let iu = weights.transpose();
    match similarity {
        Similarity::Rp3Beta { .. } => {
            unreachable!("RP3beta is not symmetric: see factors_of_similarity")
        }
        Similarity::Cosine => {
            let norms: Vec<f32> = (0..iu.n_rows())
                .map(|i| iu.row(i).1.iter().map(|v| v * v).sum::<f32>().sqrt())
                .collect();
            iu.map_entries(|i, _, v| if norms[i] > 0.0 { v / norms[i] } else { 0.0 })
        }
        Similarity::Bm25 { k1, b } => {
            let n = iu.n_rows() as f64;
            let mut per_user = vec![0u32; iu.n_cols()];
            for i in 0..iu.n_rows() {
                for &u in iu.row(i).0 {
                    per_user[u as usize] += 1;
                }
            }
            let idf: Vec<f64> = per_user
                .iter()
                .map(|&c| n.ln() - (c as f64).ln_1p())
                .collect();
            let row_sums: Vec<f64> = (0..iu.n_rows())
                .map(|i| iu.row(i).1.iter().map(|&v| v as f64).sum())
                .collect();
            let mean = row_sums.iter().sum::<f64>() / n.max(1.0);
            let (k1, b) = (k1 as f64, b as f64);
            iu.map_entries(|i, u, v| {
                let norm = (1.0 - b) + b * row_sums[i] / mean;
                let v = v as f64;
                (v * (k1 + 1.0) / (k1 * norm + v) * idf[u as usize]) as f32
            })
        }
    }
}

impl ItemKnn {
    /// Fits neighbourhoods of size `k` from a user × item weight matrix. Runs on the current
    /// rayon pool; the result does not depend on the number of threads.
    pub fn fit(weights: &Csr, similarity: Similarity, k: usize) -> Self {
        let (iu, ui) = factors_of_similarity(weights, similarity);
        let n_items = iu.n_rows();
        let rows: Vec<Vec<Scored>> = (0..n_items)
            .into_par_iter()
            .with_min_len(ITEM_CHUNK)
            .map_init(
                || (vec![0f32; n_items], Vec::<u32>::new(), TopK::new(k)),
                |(acc, touched, top), i| {
                    let (users, wi) = iu.row(i);
                    for (&u, &w1) in users.iter().zip(wi) {
                        let (items, wu) = ui.row(u as usize);
                        for (&j, &w2) in items.iter().zip(wu) {
                            if acc[j as usize] == 0.0 {
                                touched.push(j);
                            }
                            acc[j as usize] += w1 * w2;
                        }
                    }
                    top.reset(k);
                    for &j in touched.iter() {
                        let s = acc[j as usize];
                        if s != 0.0 {
                            top.push(j, s);
                        }
                        acc[j as usize] = 0.0;
                    }
                    touched.clear();
                    top.drain_sorted()
                },
            )
            .collect();
        let triples: Vec<(u32, u32, f32)> = rows
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.iter().map(move |s| (i as u32, s.idx, s.score)))
            .collect();
        Self {
            similarity,
            k,
            neighbours: Csr::from_triples(n_items, n_items, &triples, false),
        }
    }

    /// A model from stored parts.
    pub fn from_parts(similarity: Similarity, k: usize, neighbours: Csr) -> Self {
        Self {
            similarity,
            k,
            neighbours,
        }
    }

    /// The similarity used.
    pub fn similarity(&self) -> Similarity {
        self.similarity
    }

    /// Neighbours kept per item.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The neighbour matrix (item × item).
    pub fn neighbours(&self) -> &Csr {
        &self.neighbours
    }

    /// Number of items.
    pub fn n_items(&self) -> usize {
        self.neighbours.n_rows()
    }

    /// Accumulates `Σ_i w_i · sim(i, j)` over a history of `(item, weight)` into `scores`
    /// (length `n_items`, zeroed by the caller), pushing every item it touches first onto
    /// `touched`.
    pub fn accumulate(&self, history: &[(u32, f32)], scores: &mut [f32], touched: &mut Vec<u32>) {
        for &(i, w) in history {
            let (js, sims) = self.neighbours.row(i as usize);
            for (&j, &s) in js.iter().zip(sims) {
                let slot = &mut scores[j as usize];
                if *slot == 0.0 {
                    touched.push(j);
                }
                *slot += w * s;
            }
        }
    }

    /// The `n` best items for a history among those `keep` accepts, considering only items that
    /// are neighbours of some history item (as `implicit` does). `scores` and `touched` are
    /// scratch: `scores` must be all zeros and `n_items` long, and is left so.
    pub fn recommend(
        &self,
        history: &[(u32, f32)],
        n: usize,
        mut keep: impl FnMut(u32) -> bool,
        scores: &mut [f32],
        touched: &mut Vec<u32>,
        top: &mut TopK,
    ) -> Vec<Scored> {
        touched.clear();
        self.accumulate(history, scores, touched);
        top.reset(n);
        for &j in touched.iter() {
            let s = scores[j as usize];
            scores[j as usize] = 0.0;
            if s != 0.0 && keep(j) {
                top.push(j, s);
            }
        }
        touched.clear();
        top.drain_sorted()
    }

    /// What each history item contributed to item `j`'s score: `(item, w_i · sim(i, j))` for the
    /// history items that have `j` among their neighbours, largest first.
    pub fn explain(&self, history: &[(u32, f32)], j: u32) -> Vec<(u32, f32)> {
        let mut parts: Vec<(u32, f32)> = history
            .iter()
            .filter_map(|&(i, w)| {
                let (js, sims) = self.neighbours.row(i as usize);
                js.binary_search(&j).ok().map(|p| (i, w * sims[p]))
            })
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix() -> Csr {
        // Users 0-2 like items 0 and 1; user 3 likes 1 and 2; user 4 likes 3 alone.
        let t = [
            (0, 0, 1.0),
            (0, 1, 1.0),
            (1, 0, 2.0),
            (1, 1, 1.0),
            (2, 0, 1.0),
            (2, 1, 1.0),
            (3, 1, 1.0),
            (3, 2, 1.0),
            (4, 3, 5.0),
        ];
        Csr::from_triples(5, 4, &t, false)
    }

    #[test]
    fn cosine_matches_a_direct_computation() {
        let w = matrix();
        let knn = ItemKnn::fit(&w, Similarity::Cosine, 10);
        let iu = w.transpose();
        let col = |i: usize| {
            let mut v = [0f32; 5];
            for (&u, &x) in iu.row(i).0.iter().zip(iu.row(i).1) {
                v[u as usize] = x;
            }
            v
        };
        let cos = |a: usize, b: usize| {
            let (x, y) = (col(a), col(b));
            let d: f32 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
            d / (x.iter().map(|p| p * p).sum::<f32>().sqrt()
                * y.iter().map(|p| p * p).sum::<f32>().sqrt())
        };
        let (js, sims) = knn.neighbours().row(0);
        assert_eq!(js, &[0, 1]);
        assert!((sims[1] - cos(0, 1)).abs() < 1e-6);
        assert!(
            (sims[0] - 1.0).abs() < 1e-6,
            "self-similarity is kept, as implicit does"
        );
        assert_eq!(
            knn.neighbours().row(3).0,
            &[3],
            "an item nobody else shares has only itself"
        );
    }

    #[test]
    fn recommendations_sum_contributions_and_explain_them() {
        let w = matrix();
        let knn = ItemKnn::fit(&w, Similarity::Bm25 { k1: 1.2, b: 0.75 }, 10);
        let history = [(0u32, 1.0f32)];
        let mut scores = vec![0f32; 4];
        let mut touched = Vec::new();
        let mut top = TopK::new(3);
        let recs = knn.recommend(&history, 3, |j| j != 0, &mut scores, &mut touched, &mut top);
        assert_eq!(recs.iter().map(|s| s.idx).collect::<Vec<_>>(), vec![1]);
        assert!(scores.iter().all(|&s| s == 0.0), "scratch is left zeroed");
        let parts = knn.explain(&history, 1);
        assert_eq!(parts.len(), 1);
        assert!((parts[0].1 - recs[0].score).abs() < 1e-6);
    }

    #[test]
    fn k_limits_neighbours_and_threads_do_not_matter() {
        let mut rng = crate::Rng::seed_from_u64(3);
        let t: Vec<(u32, u32, f32)> = (0..3000)
            .map(|_| (rng.below(300) as u32, rng.below(80) as u32, 1.0))
            .collect();
        let w = Csr::from_triples(300, 80, &t, false);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let a = one.install(|| ItemKnn::fit(&w, Similarity::Cosine, 5));
        let b = ItemKnn::fit(&w, Similarity::Cosine, 5);
        assert_eq!(a, b);
        assert!((0..80).all(|i| a.neighbours().row_len(i) <= 5));
    }
}
