//! Bayesian Personalized Ranking (Rendle et al., UAI 2009): matrix factorisation trained by SGD
//! on triples (user, a positive item, a sampled item the user has not interacted with), to rank
//! positives above the rest.
//!
//! The update for a triple with `x = p_u·(q_i − q_j) + b_i − b_j` and `g = σ(−x)` is
//! `p_u += η(g(q_i − q_j) − λp_u)`, `q_i += η(g p_u − λq_i)`, `q_j += η(−g p_u − λq_j)`,
//! `b_i += η(g − λb_i)`, `b_j += η(−g − λb_j)`, as in `implicit`'s BPR. Training runs blocks of
//! users in parallel with item updates merged in a fixed order after each round (see
//! [`Bpr::fit_parallel`]), so a fit depends on the data and the seed only, not on the threads.

use crate::{Csr, Factors, Rng};

/// BPR hyperparameters; `Default` is the one place their defaults are written.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BprParams {
    /// Latent dimensions.
    pub factors: usize,
    /// SGD step η (default 0.05: the rate the benchmarks in docs/benchmarks.md measured and
    /// the server has always trained with; `implicit`'s 0.01 needs more epochs).
    pub learning_rate: f32,
    /// L2 weight λ.
    pub regularization: f32,
    /// Epochs: each samples as many triples as there are positive pairs.
    pub iterations: usize,
    /// Seed of the initial factors and of the sampling.
    pub seed: u64,
}

impl Default for BprParams {
    fn default() -> Self {
        Self {
            factors: 64,
            learning_rate: 0.05,
            regularization: 0.01,
            iterations: 100,
            seed: 0,
        }
    }
}

/// A fitted BPR model. Item scores are `p_u·q_i + b_i`; [`Bpr::item_factors_with_bias`] and
/// [`Bpr::user_vector_with_bias`] fold the bias into one dot product for exact top-k scoring.
#[derive(Debug, Clone)]
pub struct Bpr {
    users: Factors,
    items: Factors,
    bias: Vec<f32>,
}

/// One block's item updates of a round: `(item, bias delta)` and, `f` per entry, the factor
/// deltas.
type ItemUpdates = (Vec<(u32, f32)>, Vec<f32>);

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Bpr {
    /// Fits on the users × items matrix `x` (entries with a positive value are positives), in
    /// parallel with [`Self::fit_parallel`]'s fixed layout (16 user blocks, rounds of 1,024
    /// triples per block), so that the model does not depend on the thread count.
    pub fn fit(x: &Csr, p: BprParams) -> Self {
        Self::fit_parallel(x, p, 16, 1024)
    }

    /// Fits BPR in parallel and deterministically: users are cut into `blocks` contiguous
    /// ranges, each sampling its own triples (negatives from the whole catalog) with its own
    /// seeded generator. Blocks run at once in rounds of `batch` triples each: a block updates
    /// its users at once and collects its item updates, which are applied after the round in
    /// block order (so items are at most one round stale). The model depends on the data, the
    /// seed, `blocks` and `batch` only — not on the number of threads.
    pub fn fit_parallel(x: &Csr, p: BprParams, blocks: usize, batch: usize) -> Self {
        use rayon::prelude::*;
        let (nu, ni, f) = (x.n_rows(), x.n_cols(), p.factors.max(1));
        let blocks = blocks.clamp(1, nu.max(1));
        let batch = batch.max(1);
        let mut rng = Rng::seed_from_u64(p.seed);
        let scale = 1.0 / (f as f64).sqrt();
        let init = |rng: &mut Rng, n: usize| {
            let data = (0..n * f)
                .map(|_| ((rng.f64() - 0.5) * scale) as f32)
                .collect();
            Factors::from_vec(n, f, data).expect("n × f values")
        };
        let mut users = init(&mut rng, nu);
        let mut items = init(&mut rng, ni);
        let mut bias = vec![0.0f32; ni];
        if ni < 2 {
            return Self { users, items, bias };
        }
        let bound = |k: usize| k * nu / blocks;
        let pairs: Vec<Vec<(u32, u32)>> = (0..blocks)
            .map(|b| {
                (bound(b)..bound(b + 1))
                    .flat_map(|u| {
                        let (cols, vals) = x.row(u);
                        cols.iter()
                            .zip(vals)
                            .filter(|(_, v)| **v > 0.0)
                            .map(move |(&i, _)| (u as u32, i))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect();
        let longest = pairs.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return Self { users, items, bias };
        }
        let (lr, reg) = (p.learning_rate, p.regularization);
        let mut rngs: Vec<Rng> = (0..blocks)
            .map(|b| {
                Rng::seed_from_u64(p.seed ^ (b as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            })
            .collect();
        for _ in 0..p.iterations {
            // Each block samples as many triples per epoch as it has positives.
            for round in 0..longest.div_ceil(batch) {
                let mut user_parts: Vec<&mut [f32]> = Vec::with_capacity(blocks);
                let mut rest = users.as_mut_slice();
                for b in 0..blocks {
                    let (head, tail) = rest.split_at_mut((bound(b + 1) - bound(b)) * f);
                    user_parts.push(head);
                    rest = tail;
                }
                let (items_now, bias_now) = (&items, &bias);
                // Per block: (item, bias delta) and the factor deltas, f per entry.
                let updates: Vec<ItemUpdates> = user_parts
                    .into_par_iter()
                    .zip(rngs.par_iter_mut())
                    .enumerate()
                    .map(|(b, (up, rng))| {
                        let cell = &pairs[b];
                        let start = round * batch;
                        let n = cell.len().saturating_sub(start).min(batch);
                        let mut touched: Vec<(u32, f32)> = Vec::with_capacity(2 * n);
                        let mut deltas: Vec<f32> = Vec::with_capacity(2 * n * f);
                        let mut pu = vec![0.0f32; f];
                        for _ in 0..n {
                            let (u, i) = cell[rng.below(cell.len() as u64) as usize];
                            let seen = x.row(u as usize).0;
                            if seen.len() >= ni {
                                continue;
                            }
                            let j = loop {
                                let j = rng.below(ni as u64) as u32;
                                if seen.binary_search(&j).is_err() {
                                    break j;
                                }
                            };
                            let ul = u as usize - bound(b);
                            pu.copy_from_slice(&up[ul * f..(ul + 1) * f]);
                            let (qi, qj) = (items_now.row(i as usize), items_now.row(j as usize));
                            let (bi, bj) = (bias_now[i as usize], bias_now[j as usize]);
                            let mut xuij = bi - bj;
                            for k in 0..f {
                                xuij += pu[k] * (qi[k] - qj[k]);
                            }
                            let g = sigmoid(-xuij);
                            for k in 0..f {
                                up[ul * f + k] += lr * (g * (qi[k] - qj[k]) - reg * pu[k]);
                            }
                            touched.push((i, lr * (g - reg * bi)));
                            deltas.extend((0..f).map(|k| lr * (g * pu[k] - reg * qi[k])));
                            touched.push((j, lr * (-g - reg * bj)));
                            deltas.extend((0..f).map(|k| lr * (-g * pu[k] - reg * qj[k])));
                        }
                        (touched, deltas)
                    })
                    .collect();
                for (touched, deltas) in updates {
                    for (k, (item, db)) in touched.into_iter().enumerate() {
                        bias[item as usize] += db;
                        for (q, d) in items
                            .row_mut(item as usize)
                            .iter_mut()
                            .zip(&deltas[k * f..(k + 1) * f])
                        {
                            *q += d;
                        }
                    }
                }
            }
        }
        Self { users, items, bias }
    }

    /// A user vector for a history (sorted item ids) by BPR's own user step with the items
    /// fixed: `epochs` passes of SGD over triples (a history item, a sampled item outside it),
    /// from a zero vector, seeded. Returns the vector with a 1 appended, to score against
    /// [`Bpr::item_factors_with_bias`]; `None` for an empty history.
    pub fn fold_in(&self, history: &[u32], p: &BprParams) -> Option<Vec<f32>> {
        let (ni, f) = (self.items.rows(), self.items.dim());
        if history.is_empty() || history.len() >= ni {
            return None;
        }
        let mut seed = p.seed ^ 0x666f_6c64;
        for &i in history {
            seed = seed.rotate_left(5) ^ i as u64;
        }
        let mut rng = Rng::seed_from_u64(seed);
        let (lr, reg) = (p.learning_rate, p.regularization);
        let mut pu = vec![0.0f32; f];
        for _ in 0..p.iterations * history.len() {
            let i = history[rng.below(history.len() as u64) as usize] as usize;
            let j = loop {
                let j = rng.below(ni as u64) as u32;
                if history.binary_search(&j).is_err() {
                    break j as usize;
                }
            };
            let (qi, qj) = (self.items.row(i), self.items.row(j));
            let mut x = self.bias[i] - self.bias[j];
            for k in 0..f {
                x += pu[k] * (qi[k] - qj[k]);
            }
            let g = sigmoid(-x);
            for k in 0..f {
                pu[k] += lr * (g * (qi[k] - qj[k]) - reg * pu[k]);
            }
        }
        pu.push(1.0);
        Some(pu)
    }

    /// A model from its parts (user factors, item factors, item biases); `None` when the
    /// shapes disagree.
    pub fn from_parts(users: Factors, items: Factors, bias: Vec<f32>) -> Option<Self> {
        (users.dim() == items.dim() && bias.len() == items.rows()).then_some(Self {
            users,
            items,
            bias,
        })
    }

    /// Item factors (without the bias).
    pub fn item_factors(&self) -> &Factors {
        &self.items
    }

    /// Item biases.
    pub fn item_bias(&self) -> &[f32] {
        &self.bias
    }

    /// User factors.
    pub fn user_factors(&self) -> &Factors {
        &self.users
    }

    /// Item factors with the bias as one more column.
    pub fn item_factors_with_bias(&self) -> Factors {
        let (n, f) = (self.items.rows(), self.items.dim());
        let mut data = Vec::with_capacity(n * (f + 1));
        for i in 0..n {
            data.extend_from_slice(self.items.row(i));
            data.push(self.bias[i]);
        }
        Factors::from_vec(n, f + 1, data).expect("n × (f + 1) values")
    }

    /// A user's factors with a 1 appended, to score against [`Bpr::item_factors_with_bias`].
    pub fn user_vector_with_bias(&self, u: usize) -> Vec<f32> {
        let mut v = self.users.row(u).to_vec();
        v.push(1.0);
        v
    }

    /// Score of item `i` for user `u`.
    pub fn score(&self, u: usize, i: usize) -> f32 {
        self.users
            .row(u)
            .iter()
            .zip(self.items.row(i))
            .map(|(a, b)| a * b)
            .sum::<f32>()
            + self.bias[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_does_not_change_the_model() {
        let mut t = Vec::new();
        for u in 0..300u32 {
            for k in 0..5 {
                t.push((u, (u * 7 + k * 13) % 50, 1.0));
            }
        }
        let x = Csr::from_triples(300, 50, &t, false);
        let p = BprParams {
            factors: 8,
            iterations: 5,
            ..BprParams::default()
        };
        let fit = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| Bpr::fit_parallel(&x, p, 4, 64))
        };
        let (a, b) = (fit(1), fit(3));
        assert_eq!(a.item_factors().as_slice(), b.item_factors().as_slice());
        assert_eq!(a.user_factors().as_slice(), b.user_factors().as_slice());
        assert_eq!(a.item_bias(), b.item_bias());
    }

    #[test]
    fn fold_in_places_a_history_with_its_cluster() {
        // Users 0..40 like items 0..10 (even users) or 10..20 (odd users).
        let mut t = Vec::new();
        for u in 0..40u32 {
            let base = if u % 2 == 0 { 0 } else { 10 };
            for k in 0..6 {
                t.push((u, base + (u + k * 3) % 10, 1.0));
            }
        }
        let x = Csr::from_triples(40, 20, &t, false);
        let p = BprParams {
            factors: 8,
            learning_rate: 0.05,
            iterations: 50,
            ..BprParams::default()
        };
        let m = Bpr::fit(&x, p);
        let items = m.item_factors_with_bias();
        let v = m
            .fold_in(
                &[1, 4, 7],
                &BprParams {
                    iterations: 20,
                    ..p
                },
            )
            .unwrap();
        let score = |i: usize| -> f32 { items.row(i).iter().zip(&v).map(|(a, b)| a * b).sum() };
        let mean = |r: std::ops::Range<usize>| r.clone().map(score).sum::<f32>() / r.len() as f32;
        assert!(
            mean(0..10) > mean(10..20) + 0.5,
            "{} vs {}",
            mean(0..10),
            mean(10..20)
        );
        // Seeded by the history: the same history gives the same vector.
        assert_eq!(
            v,
            m.fold_in(
                &[1, 4, 7],
                &BprParams {
                    iterations: 20,
                    ..p
                }
            )
            .unwrap()
        );
        assert!(m.fold_in(&[], &p).is_none());
    }

    /// Two groups of users with disjoint tastes: BPR ranks a user's unseen group items above the
    /// other group's items.
    #[test]
    fn ranks_the_users_group_first() {
        let mut triples = Vec::new();
        for u in 0..40u32 {
            let base = if u % 2 == 0 { 0 } else { 10 };
            for k in 0..10u32 {
                if (u + k) % 4 != 0 {
                    triples.push((u, base + k, 1.0));
                }
            }
        }
        let x = Csr::from_triples(40, 20, &triples, false);
        let m = Bpr::fit(
            &x,
            BprParams {
                factors: 8,
                learning_rate: 0.05,
                iterations: 60,
                ..BprParams::default()
            },
        );
        // User 0 (even group) has not seen item 0 ((0 + 0) % 4 == 0).
        let own = m.score(0, 0);
        let other = (10..20).map(|i| m.score(0, i)).fold(f32::MIN, f32::max);
        assert!(own > other, "{own} vs {other}");
        let v = m.user_vector_with_bias(0);
        let q = m.item_factors_with_bias();
        let dot: f32 = v.iter().zip(q.row(0)).map(|(a, b)| a * b).sum();
        assert!((dot - own).abs() < 1e-5);
    }

    #[test]
    fn a_fit_depends_on_the_seed_only() {
        let x = Csr::from_triples(
            3,
            4,
            &[(0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0), (0, 3, 1.0)],
            false,
        );
        let p = BprParams {
            factors: 4,
            iterations: 5,
            ..BprParams::default()
        };
        let (a, b) = (Bpr::fit(&x, p), Bpr::fit(&x, p));
        assert_eq!(a.score(0, 1), b.score(0, 1));
    }
}
