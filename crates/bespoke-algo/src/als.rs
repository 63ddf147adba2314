//! Implicit-feedback alternating least squares (Hu, Koren, Volinsky 2008) with a conjugate
//! gradient solver (Takács, Pilászy, Tikk 2011), as `implicit` computes it.
//!
//! Input is a user × item matrix of summed event weights `w`. Each entry becomes a confidence
//! `c = 1 + alpha·|w|` and a preference `p = 1` if `w > 0`, `p = 0` if `w < 0`: negative feedback
//! is a *confident zero*, pulling the score towards 0 harder than an unobserved pair (which has
//! `c = 1, p = 0`). Entries with `w = 0` are unobserved. Stored as one signed matrix (`+c` for
//! `p = 1`, `-c` for `p = 0`), `implicit`'s convention.
//!
//! Loss: `Σ_{u,i} c_ui (p_ui − x_uᵀy_i)² + λ (Σ‖x_u‖² + Σ‖y_i‖²)` over all pairs.
//!
//! Determinism: every row is solved independently from the other side's factors, and Gram
//! matrices are summed in fixed chunks, so a fit depends on the seed only, not on the number of
//! threads or their scheduling.

use rayon::prelude::*;

use crate::linalg::Cholesky;
use crate::simd::{self, Simd, WithSimd};
use crate::{Csr, Factors, Rng, Scored, TopK};

/// Rows per parallel work unit.
const ROW_CHUNK: usize = 128;
/// How many entries ahead a sparse loop prefetches the other side's factor rows: far enough to
/// hide a cache miss behind the work on the rows in between.
const PREFETCH: usize = 12;
/// Residual below which a row counts as solved (`implicit`'s threshold).
const CG_EPS: f32 = 1e-20;

/// Hyperparameters of [`Als::fit`]; `Default` is the one place their defaults are written.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AlsParams {
    /// Factor dimension `f`.
    pub factors: usize,
    /// Alternating iterations (each solves all users, then all items).
    pub iterations: usize,
    /// `λ`, added to the diagonal of every system.
    pub regularization: f32,
    /// Confidence slope: `c = 1 + alpha·|w|`.
    pub alpha: f32,
    /// Conjugate gradient steps per row and half-iteration.
    pub cg_steps: usize,
    /// Seed of the initial factors (uniform in `[0, 0.01)`).
    pub seed: u64,
    /// Compute the training loss after each iteration (about 25 % more time); a run-time
    /// choice, not a hyperparameter, so it is never saved.
    #[serde(skip)]
    pub compute_loss: bool,
}

impl Default for AlsParams {
    fn default() -> Self {
        Self {
            factors: 64,
            iterations: 15,
            regularization: 0.05,
            alpha: 1.0,
            cg_steps: 3,
            seed: 0,
            compute_loss: false,
        }
    }
}

/// Progress of a fit, reported after each iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterationReport {
    /// 1-based iteration number.
    pub iteration: usize,
    /// Seconds this iteration took.
    pub seconds: f64,
    /// Training loss divided by the number of user-item pairs, if requested.
    pub loss: Option<f64>,
}

/// The signed confidence of a weight (see the module docs): `+c` for `p = 1`, `-c` for `p = 0`.
#[inline(always)]
fn signed_confidence(w: f32, alpha: f32) -> f32 {
    let c = 1.0 + alpha * w.abs();
    if w > 0.0 { c } else { -c }
}

/// Signed confidences of a row of weights, into `out`.
#[inline(always)]
fn signed_confidences(w: &[f32], alpha: f32, out: &mut Vec<f32>) {
    out.clear();
    out.extend(w.iter().map(|&w| signed_confidence(w, alpha)));
}

/// The signed confidence matrix of a weight matrix (see the module docs).
pub fn confidence(weights: &Csr, alpha: f32) -> Csr {
    weights.map_values(|w| signed_confidence(w, alpha))
}

/// A trained iALS model.
#[derive(Debug, Clone, PartialEq)]
pub struct Als {
    params: AlsParams,
    users: Factors,
    items: Factors,
}

/// Reusable per-worker vectors for the CG solver.
struct Scratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

impl Scratch {
    fn new(d: usize) -> Self {
        Self {
            r: vec![0.0; d],
            p: vec![0.0; d],
            ap: vec![0.0; d],
        }
    }
}

/// `out = (YᵀY + λI) v + Σ_i (|c_i| − 1)(y_i·v) y_i`: the system matrix of one row times `v`.
#[inline(always)]
fn apply<S: Simd>(
    s: S,
    yty: &[f32],
    y: &Factors,
    cols: &[u32],
    confs: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    s.symv(yty, v, out);
    for (k, (&i, &c)) in cols.iter().zip(confs).enumerate() {
        if let Some(&ahead) = cols.get(k + PREFETCH) {
            s.prefetch(y.row(ahead as usize));
        }
        let yi = y.row(i as usize);
        let w = (c.abs() - 1.0) * s.dot(yi, v);
        s.axpy(w, yi, out);
    }
}

/// A few CG steps on one row's system, warm-started at `x` (`implicit`'s `least_squares_cg`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cg_row<S: Simd>(
    s: S,
    yty: &[f32],
    y: &Factors,
    cols: &[u32],
    confs: &[f32],
    x: &mut [f32],
    steps: usize,
    v: &mut Scratch,
) {
    // r = b − A x, with b = Σ_{p_i = 1} c_i y_i.
    s.symv(yty, x, &mut v.r);
    v.r.iter_mut().for_each(|r| *r = -*r);
    for (k, (&i, &c)) in cols.iter().zip(confs).enumerate() {
        if let Some(&ahead) = cols.get(k + PREFETCH) {
            s.prefetch(y.row(ahead as usize));
        }
        let yi = y.row(i as usize);
        let yx = s.dot(yi, x);
        let w = if c > 0.0 {
            c - (c - 1.0) * yx
        } else {
            -(-c - 1.0) * yx
        };
        s.axpy(w, yi, &mut v.r);
    }
    v.p.copy_from_slice(&v.r);
    let mut rsold = s.dot(&v.r, &v.r);
    if rsold < CG_EPS {
        return;
    }
    for _ in 0..steps {
        apply(s, yty, y, cols, confs, &v.p, &mut v.ap);
        let alpha = rsold / s.dot(&v.p, &v.ap);
        s.axpy(alpha, &v.p, x);
        s.axpy(-alpha, &v.ap, &mut v.r);
        let rsnew = s.dot(&v.r, &v.r);
        if rsnew < CG_EPS {
            break;
        }
        let beta = rsnew / rsold;
        for (p, r) in v.p.iter_mut().zip(&v.r) {
            *p = r + beta * *p;
        }
        rsold = rsnew;
    }
}

/// CG on a contiguous block of rows, starting at row `first`. `w` holds raw weights; each row's
/// signed confidences are computed into a scratch buffer, so that no confidence copy of the
/// whole matrix is needed.
struct CgChunk<'a> {
    w: &'a Csr,
    alpha: f32,
    rows: &'a mut [f32],
    first: usize,
    yty: &'a [f32],
    y: &'a Factors,
    steps: usize,
}

impl WithSimd for CgChunk<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let d = self.y.dim();
        let mut v = Scratch::new(d);
        let mut confs = Vec::new();
        for (k, xu) in self.rows.chunks_exact_mut(d).enumerate() {
            let (cols, w) = self.w.row(self.first + k);
            signed_confidences(w, self.alpha, &mut confs);
            cg_row(s, self.yty, self.y, cols, &confs, xu, self.steps, &mut v);
        }
    }
}

/// One half-iteration: every row of `x` from the fixed other side `y`, with the weights `w`.
fn solve_side(w: &Csr, alpha: f32, x: &mut Factors, y: &Factors, reg: f32, steps: usize) {
    let d = x.dim();
    let mut yty = y.gram();
    for k in 0..d {
        yty[k * d + k] += reg;
    }
    x.as_mut_slice()
        .par_chunks_mut(d * ROW_CHUNK)
        .enumerate()
        .for_each(|(chunk, rows)| {
            simd::dispatch(CgChunk {
                w,
                alpha,
                rows,
                first: chunk * ROW_CHUNK,
                yty: &yty,
                y,
                steps,
            })
        });
}

/// The full loss, divided by the number of user-item pairs. Uses `Σ_i (x·y_i)² = xᵀ(YᵀY)x` so
/// that unobserved pairs cost nothing per pair.
fn loss(weights: &Csr, alpha: f32, users: &Factors, items: &Factors, reg: f32) -> f64 {
    let d = users.dim();
    let g = items.gram();
    let partials: Vec<f64> = users
        .as_slice()
        .par_chunks(d * ROW_CHUNK)
        .enumerate()
        .map(|(chunk, rows)| {
            let mut gx = vec![0f32; d];
            let mut total = 0f64;
            for (k, x) in rows.chunks_exact(d).enumerate() {
                simd::symv(&g, x, &mut gx);
                total += simd::dot(x, &gx) as f64 + reg as f64 * simd::dot(x, x) as f64;
                let (cols, w) = weights.row(chunk * ROW_CHUNK + k);
                for (&i, &w) in cols.iter().zip(w) {
                    let s = simd::dot(x, items.row(i as usize)) as f64;
                    let c = signed_confidence(w, alpha);
                    let (c, p) = if c > 0.0 {
                        (c as f64, 1.0)
                    } else {
                        (-c as f64, 0.0)
                    };
                    total += c * (p - s) * (p - s) - s * s;
                }
            }
            total
        })
        .collect();
    let item_reg: f64 = (0..items.rows())
        .map(|i| simd::dot(items.row(i), items.row(i)) as f64)
        .sum::<f64>()
        * reg as f64;
    let pairs = (users.rows() as f64 * items.rows() as f64).max(1.0);
    (partials.iter().sum::<f64>() + item_reg) / pairs
}

impl Als {
    /// Fits the model to a user × item weight matrix, calling `on_iteration` after each
    /// iteration. The initial factors come from one generator seeded with `params.seed`, users
    /// then items. Runs on the current rayon pool.
    pub fn fit(
        weights: &Csr,
        params: AlsParams,
        on_iteration: impl FnMut(&IterationReport),
    ) -> Self {
        let mut rng = Rng::seed_from_u64(params.seed);
        let users = Factors::random(weights.n_rows(), params.factors, &mut rng, 0.01);
        let items = Factors::random(weights.n_cols(), params.factors, &mut rng, 0.01);
        Self::fit_from(weights, params, users, items, on_iteration)
    }

    /// Like [`Als::fit`], but row `r` of each side starts from its own seed (`user_seeds[r]`,
    /// `item_seeds[r]`, e.g. a hash of the row's external key). A model trained this way does not
    /// depend on rows that are absent from the data, which is what makes an erased user's
    /// absence exact.
    pub fn fit_seeded(
        weights: &Csr,
        params: AlsParams,
        user_seeds: &[u64],
        item_seeds: &[u64],
        on_iteration: impl FnMut(&IterationReport),
    ) -> Self {
        assert_eq!(user_seeds.len(), weights.n_rows(), "one seed per user");
        assert_eq!(item_seeds.len(), weights.n_cols(), "one seed per item");
        let users = Factors::random_per_row(user_seeds, params.factors, 0.01);
        let items = Factors::random_per_row(item_seeds, params.factors, 0.01);
        Self::fit_from(weights, params, users, items, on_iteration)
    }

    fn fit_from(
        weights: &Csr,
        params: AlsParams,
        mut users: Factors,
        mut items: Factors,
        mut on_iteration: impl FnMut(&IterationReport),
    ) -> Self {
        // The weights and their transpose are the only copies of the data training keeps.
        let (a, reg, steps) = (params.alpha, params.regularization, params.cg_steps);
        let transposed = weights.transpose();
        for iteration in 1..=params.iterations {
            let started = std::time::Instant::now();
            solve_side(weights, a, &mut users, &items, reg, steps);
            solve_side(&transposed, a, &mut items, &users, reg, steps);
            let seconds = started.elapsed().as_secs_f64();
            let loss = params
                .compute_loss
                .then(|| loss(weights, a, &users, &items, reg));
            on_iteration(&IterationReport {
                iteration,
                seconds,
                loss,
            });
        }
        Self {
            params,
            users,
            items,
        }
    }

    /// A model from stored parts (e.g. read back from disk). `None` if the dimensions disagree.
    pub fn from_parts(params: AlsParams, users: Factors, items: Factors) -> Option<Self> {
        (users.dim() == params.factors && items.dim() == params.factors).then_some(Self {
            params,
            users,
            items,
        })
    }

    /// The hyperparameters.
    pub fn params(&self) -> &AlsParams {
        &self.params
    }

    /// User factors, one row per user id of the training matrix.
    pub fn user_factors(&self) -> &Factors {
        &self.users
    }

    /// Item factors, one row per item id of the training matrix.
    pub fn item_factors(&self) -> &Factors {
        &self.items
    }

    /// What serving needs: the item factors and the precomputed `YᵀY + λI`.
    pub fn user_solver(&self) -> UserSolver {
        UserSolver::new(
            self.items.clone(),
            self.params.regularization,
            self.params.alpha,
        )
    }
}

/// Solves users exactly against fixed item factors: the ALS user step, for a user whose
/// history changed since training or who did not exist then ("fold-in").
#[derive(Debug, Clone)]
pub struct UserSolver {
    items: Factors,
    /// `YᵀY + λI`, row-major.
    gram_reg: Vec<f32>,
    alpha: f32,
}

/// A user's exact solution, with what is needed to explain scores.
#[derive(Debug, Clone)]
pub struct UserVector {
    /// `x_u`.
    pub x: Vec<f32>,
    chol: Cholesky,
    /// `(item, c_ui, p_ui)` of the history it was solved from.
    history: Vec<(u32, f32, bool)>,
}

impl UserSolver {
    /// A solver over `items` with regularisation `λ` and confidence slope `alpha`.
    pub fn new(items: Factors, regularization: f32, alpha: f32) -> Self {
        let d = items.dim();
        let mut gram_reg = items.gram();
        for k in 0..d {
            gram_reg[k * d + k] += regularization;
        }
        Self {
            items,
            gram_reg,
            alpha,
        }
    }

    /// The item factors.
    pub fn items(&self) -> &Factors {
        &self.items
    }

    /// `YᵀY + λI`, row-major: what every fold-in starts from (shipped to devices, which fold
    /// in with the very same matrix).
    pub fn gram_reg(&self) -> &[f32] {
        &self.gram_reg
    }

    /// The confidence slope α.
    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// The exact minimiser `x = (YᵀC^uY + λI)⁻¹ YᵀC^u p(u)` for a history of
    /// `(item, summed weight)`; items outside the factor matrix and zero weights are ignored.
    /// `None` only if the system is numerically singular (it cannot be with `λ > 0`).
    pub fn solve(&self, history: &[(u32, f32)]) -> Option<UserVector> {
        self.solve_with(history, &[])
    }

    /// [`Self::solve`] with `extra` interactions on items outside the factor matrix, given by
    /// their factors (items placed by their content): they shape the vector like any history
    /// item but are not part of its explanations.
    pub fn solve_with(
        &self,
        history: &[(u32, f32)],
        extra: &[(Vec<f32>, f32)],
    ) -> Option<UserVector> {
        let d = self.items.dim();
        let mut a = self.gram_reg.clone();
        let mut b = vec![0f64; d];
        let mut kept = Vec::with_capacity(history.len());
        for &(i, w) in history {
            if w == 0.0 || !w.is_finite() || i as usize >= self.items.rows() {
                continue;
            }
            let c = 1.0 + self.alpha * w.abs();
            let p = w > 0.0;
            let y = self.items.row(i as usize);
            simd::dispatch(RankOne {
                a: &mut a,
                y,
                scale: c - 1.0,
            });
            if p {
                for (bk, &yk) in b.iter_mut().zip(y) {
                    *bk += c as f64 * yk as f64;
                }
            }
            kept.push((i, c, p));
        }
        for (y, w) in extra {
            if *w == 0.0 || !w.is_finite() || y.len() != d {
                continue;
            }
            let c = 1.0 + self.alpha * w.abs();
            simd::dispatch(RankOne {
                a: &mut a,
                y,
                scale: c - 1.0,
            });
            if *w > 0.0 {
                for (bk, &yk) in b.iter_mut().zip(y) {
                    *bk += c as f64 * yk as f64;
                }
            }
        }
        let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        let chol = Cholesky::new(&a64, d)?;
        chol.solve(&mut b);
        Some(UserVector {
            x: b.iter().map(|&v| v as f32).collect(),
            chol,
            history: kept,
        })
    }

    /// How much each history item contributes to the score of `item` (Hu, Koren, Volinsky §5):
    /// `c_ui · p_ui · y_itemᵀ W y_i` with `W = (YᵀC^uY + λI)⁻¹`. The contributions sum to
    /// `x_u · y_item` up to rounding. Returned for every positive history item, in history order.
    pub fn explain(&self, user: &UserVector, item: u32) -> Vec<(u32, f32)> {
        let Some(yj) = (item as usize)
            .lt(&self.items.rows())
            .then(|| self.items.row(item as usize))
        else {
            return Vec::new();
        };
        let mut z: Vec<f64> = yj.iter().map(|&v| v as f64).collect();
        user.chol.solve(&mut z);
        let z: Vec<f32> = z.iter().map(|&v| v as f32).collect();
        struct Parts<'a> {
            z: &'a [f32],
            items: &'a Factors,
            history: &'a [(u32, f32, bool)],
        }
        impl WithSimd for Parts<'_> {
            type Output = Vec<(u32, f32)>;
            #[inline(always)]
            fn with_simd<S: Simd>(self, s: S) -> Vec<(u32, f32)> {
                // Plain loops, not iterator closures: a closure would not be compiled with
                // the AVX2 features of `dispatch`, and the kernels would not inline into it.
                let mut out = Vec::with_capacity(self.history.len());
                for &(i, c, positive) in self.history {
                    if positive {
                        out.push((i, c * s.dot(self.z, self.items.row(i as usize))));
                    }
                }
                out
            }
        }
        simd::dispatch(Parts {
            z: &z,
            items: &self.items,
            history: &user.history,
        })
    }
}

impl UserSolver {
    /// [`Self::explain`] for many items at once (one entry per item, in order; empty for an
    /// item outside the factor matrix): one blocked solve of the user's factor against the
    /// `d × items` matrix of their factors instead of one triangular solve per item, which is
    /// what ranking hundreds of supplied candidates costs most.
    pub fn explain_many(&self, user: &UserVector, items: &[u32]) -> Vec<Vec<(u32, f32)>> {
        let d = self.items.dim();
        let rows = self.items.rows();
        let known: Vec<u32> = items
            .iter()
            .copied()
            .filter(|&i| (i as usize) < rows)
            .collect();
        let m = known.len();
        // B = [y_j ...], row-major d × m: row k holds factor k of every item.
        let mut b = vec![0f64; d * m];
        for (j, &i) in known.iter().enumerate() {
            for (k, &v) in self.items.row(i as usize).iter().enumerate() {
                b[k * m + j] = v as f64;
            }
        }
        user.chol.solve_many(&mut b, m);
        // Z = W Y, transposed back to one contiguous f32 row per item for the dot products.
        let mut z = vec![0f32; m * d];
        for k in 0..d {
            for j in 0..m {
                z[j * d + k] = b[k * m + j] as f32;
            }
        }
        struct Parts<'a> {
            z: &'a [f32],
            d: usize,
            items: &'a Factors,
            history: &'a [(u32, f32, bool)],
        }
        impl WithSimd for Parts<'_> {
            type Output = Vec<Vec<(u32, f32)>>;
            #[inline(always)]
            fn with_simd<S: Simd>(self, s: S) -> Vec<Vec<(u32, f32)>> {
                let positives = self.history.iter().filter(|h| h.2).count();
                let mut out = Vec::with_capacity(self.z.len() / self.d.max(1));
                for zj in self.z.chunks_exact(self.d.max(1)) {
                    let mut parts = Vec::with_capacity(positives);
                    for &(i, c, positive) in self.history {
                        if positive {
                            parts.push((i, c * s.dot(zj, self.items.row(i as usize))));
                        }
                    }
                    out.push(parts);
                }
                out
            }
        }
        let mut solved = simd::dispatch(Parts {
            z: &z,
            d,
            items: &self.items,
            history: &user.history,
        })
        .into_iter();
        items
            .iter()
            .map(|&i| {
                if (i as usize) < rows {
                    solved.next().unwrap_or_default()
                } else {
                    Vec::new()
                }
            })
            .collect()
    }
}

/// `a += scale · y yᵀ` for a row-major `d × d` matrix `a`.
struct RankOne<'a> {
    a: &'a mut [f32],
    y: &'a [f32],
    scale: f32,
}

impl WithSimd for RankOne<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let d = self.y.len();
        for (r, &yr) in self.y.iter().enumerate() {
            if yr != 0.0 {
                s.axpy(self.scale * yr, self.y, &mut self.a[r * d..(r + 1) * d]);
            }
        }
    }
}

/// Scores every item for user vector `x` into `scores` (`scores[i] = x · y_i`).
pub fn score_all(x: &[f32], items: &Factors, scores: &mut Vec<f32>) {
    struct Score<'a> {
        x: &'a [f32],
        items: &'a Factors,
        scores: &'a mut Vec<f32>,
    }
    impl WithSimd for Score<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            self.scores.clear();
            for i in 0..self.items.rows() {
                self.scores.push(s.dot(self.x, self.items.row(i)));
            }
        }
    }
    simd::dispatch(Score { x, items, scores })
}

/// The `k` best items for user vector `x` among those `keep` accepts, best first, exactly:
/// every item is scored. Ties go to the smaller item id.
pub fn recommend(
    x: &[f32],
    items: &Factors,
    k: usize,
    keep: impl FnMut(u32) -> bool,
    top: &mut TopK,
) -> Vec<Scored> {
    struct Rank<'a, F> {
        x: &'a [f32],
        items: &'a Factors,
        keep: F,
        top: &'a mut TopK,
    }
    impl<F: FnMut(u32) -> bool> WithSimd for Rank<'_, F> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(mut self, s: S) {
            for i in 0..self.items.rows() {
                let score = s.dot(self.x, self.items.row(i));
                if self.top.threshold().is_none_or(|t| score >= t) && (self.keep)(i as u32) {
                    self.top.push(i as u32, score);
                }
            }
        }
    }
    top.reset(k);
    simd::dispatch(Rank {
        x,
        items,
        keep,
        top: &mut *top,
    });
    top.drain_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    /// Two clusters of users with disjoint tastes.
    fn clustered(users: usize, items: usize, seed: u64) -> Csr {
        let mut rng = Rng::seed_from_u64(seed);
        let mut t = Vec::new();
        for u in 0..users {
            let half = (u % 2) as u64;
            for _ in 0..6 {
                let i = half * (items as u64 / 2) + rng.below(items as u64 / 2);
                t.push((u as u32, i as u32, 1.0 + rng.below(3) as f32));
            }
        }
        Csr::from_triples(users, items, &t, false)
    }

    fn params() -> AlsParams {
        AlsParams {
            factors: 8,
            iterations: 10,
            regularization: 0.1,
            alpha: 2.0,
            cg_steps: 3,
            seed: 7,
            compute_loss: true,
        }
    }

    #[test]
    fn learns_clusters_and_the_loss_decreases() {
        let m = clustered(200, 40, 1);
        let mut losses = Vec::new();
        let model = Als::fit(&m, params(), |r| losses.push(r.loss.unwrap()));
        assert_eq!(losses.len(), 10);
        assert!(losses.last().unwrap() < &losses[0], "{losses:?}");
        // A user of the first cluster scores its items above the other cluster's.
        let x = model.user_factors().row(0);
        let own: f32 = (0..20)
            .map(|i| simd::dot(x, model.item_factors().row(i)))
            .sum::<f32>()
            / 20.0;
        let other: f32 = (20..40)
            .map(|i| simd::dot(x, model.item_factors().row(i)))
            .sum::<f32>()
            / 20.0;
        assert!(own > other + 0.1, "own {own} other {other}");
    }

    #[test]
    fn deterministic_for_a_seed_whatever_the_threads() {
        let m = clustered(300, 50, 2);
        let p = AlsParams {
            compute_loss: false,
            ..params()
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let a = one.install(|| Als::fit(&m, p, |_| {}));
        let b = two.install(|| Als::fit(&m, p, |_| {}));
        assert_eq!(a, b);
        let c = Als::fit(&m, AlsParams { seed: 8, ..p }, |_| {});
        assert_ne!(a, c);
    }

    /// An item passed by its factors counts exactly as the same item in the history, but is
    /// left out of the explanations.
    #[test]
    fn extra_items_by_factors_count_like_history_items() {
        let m = clustered(60, 20, 4);
        let model = Als::fit(&m, params(), |_| {});
        let solver = model.user_solver();
        let full = solver.solve(&[(1, 2.0), (3, 1.0), (5, 3.0)]).unwrap();
        let y5 = model.item_factors().row(5).to_vec();
        let split = solver
            .solve_with(&[(1, 2.0), (3, 1.0)], &[(y5, 3.0)])
            .unwrap();
        for (a, b) in full.x.iter().zip(&split.x) {
            assert!((a - b).abs() < 1e-4, "{:?} vs {:?}", full.x, split.x);
        }
        let parts = solver.explain(&split, 7);
        assert!(parts.iter().all(|p| p.0 != 5));
        // The batched explanation agrees with one item at a time (and skips unknown items).
        let many = solver.explain_many(&split, &[7, 999, 2, 7]);
        assert_eq!(many.len(), 4);
        assert!(many[1].is_empty());
        for (batch, item) in [(&many[0], 7), (&many[2], 2), (&many[3], 7)] {
            let one = solver.explain(&split, item);
            assert_eq!(batch.len(), one.len());
            for (a, b) in batch.iter().zip(&one) {
                assert_eq!(a.0, b.0);
                assert!((a.1 - b.1).abs() < 1e-6, "{a:?} vs {b:?}");
            }
        }
        assert!(solver.solve_with(&[], &[]).is_some());
    }

    /// CG with many steps converges to the exact solution the fold-in computes.
    #[test]
    fn cg_converges_to_the_exact_user_step() {
        let m = clustered(50, 30, 3);
        let model = Als::fit(&m, params(), |_| {});
        let solver = model.user_solver();
        let cui = confidence(&m, params().alpha);
        let mut yty = model.item_factors().gram();
        for k in 0..8 {
            yty[k * 8 + k] += params().regularization;
        }
        for u in 0..10 {
            let (cols, confs) = cui.row(u);
            let mut x = vec![0f32; 8];
            cg_row(
                simd::Scalar,
                &yty,
                model.item_factors(),
                cols,
                confs,
                &mut x,
                50,
                &mut Scratch::new(8),
            );
            let (cols, w) = m.row(u);
            let history: Vec<(u32, f32)> = cols.iter().copied().zip(w.iter().copied()).collect();
            let exact = solver.solve(&history).unwrap();
            for (a, b) in x.iter().zip(&exact.x) {
                assert!((a - b).abs() < 1e-3, "user {u}: {x:?} vs {:?}", exact.x);
            }
        }
    }

    proptest! {
        /// Hu–Koren–Volinsky: the history contributions sum to the score.
        #[test]
        fn explanations_sum_to_the_score(
            history in proptest::collection::btree_map(0u32..30, -3i32..6, 1..12),
            item in 0u32..30,
            seed in 0u64..50,
        ) {
            let mut rng = Rng::seed_from_u64(seed);
            let items = Factors::from_vec(30, 6, (0..180).map(|_| rng.normal() as f32 * 0.5).collect()).unwrap();
            let solver = UserSolver::new(items, 0.05, 1.5);
            let history: Vec<(u32, f32)> = history.into_iter().map(|(i, w)| (i, w as f32)).collect();
            let user = solver.solve(&history).unwrap();
            let score = simd::dot(&user.x, solver.items().row(item as usize));
            let parts = solver.explain(&user, item);
            let total: f32 = parts.iter().map(|p| p.1).sum();
            prop_assert!((total - score).abs() < 1e-4, "sum {total} vs score {score}");
            // Only positive history items contribute.
            prop_assert!(parts.iter().all(|(i, _)| history.iter().any(|h| h.0 == *i && h.1 > 0.0)));
        }

        #[test]
        fn recommend_equals_sort_and_truncate(seed in 0u64..100, k in 0usize..12) {
            let mut rng = Rng::seed_from_u64(seed);
            let items = Factors::from_vec(60, 5, (0..300).map(|_| rng.normal() as f32).collect()).unwrap();
            let x: Vec<f32> = (0..5).map(|_| rng.normal() as f32).collect();
            let mut top = TopK::new(k);
            let got = recommend(&x, &items, k, |i| i % 3 != 0, &mut top);
            let mut all: Vec<Scored> = (0..60u32).filter(|i| i % 3 != 0)
                .map(|i| Scored { idx: i, score: simd::dot(&x, items.row(i as usize)) }).collect();
            all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.idx.cmp(&b.idx)));
            all.truncate(k);
            prop_assert_eq!(got, all);
        }
    }
}
