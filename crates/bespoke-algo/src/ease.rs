//! EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): an item–item
//! weight matrix in closed form.
//!
//! With `G = XᵀX + λI` (X the users × items weights) and `P = G⁻¹`, the weights are
//! `B_ij = −P_ij / P_jj` for `i ≠ j` and `B_jj = 0`; a user's score for item `j` is
//! `Σ_i x_i B_ij`. The matrix is dense, `n_items²` entries: EASE suits catalogs up to a few tens
//! of thousands of items (`max_items` guards memory). The inverse is a Cholesky factorisation
//! by `faer`, in parallel.

use faer::Mat;
use faer::linalg::solvers::DenseSolveCore;
use rayon::prelude::*;

use crate::{Csr, Scored, TopK};

/// Why EASE could not be fitted.
#[derive(Debug, Clone, PartialEq)]
pub enum EaseError {
    /// More items than `max_items`.
    TooManyItems {
        /// Items in the data.
        items: usize,
        /// The limit.
        max: usize,
    },
    /// `λ` must be positive (the Gram matrix is otherwise singular).
    BadLambda,
    /// The regularised Gram matrix was not positive definite (numerically).
    NotPositiveDefinite,
}

impl std::fmt::Display for EaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EaseError::TooManyItems { items, max } => write!(
                f,
                "EASE needs a dense {items} x {items} matrix; at most {max} items are allowed"
            ),
            EaseError::BadLambda => write!(f, "EASE's lambda must be a positive number"),
            EaseError::NotPositiveDefinite => {
                write!(f, "the regularised Gram matrix is not positive definite")
            }
        }
    }
}

impl std::error::Error for EaseError {}

/// A fitted EASE model: the dense item–item weights, row `i` = what item `i` in a history
/// gives every item.
#[derive(Debug, Clone)]
pub struct Ease {
    n: usize,
    b: Vec<f32>,
}

/// The Gram matrix `XᵀX` of a users × items matrix, kept sparse (column by column), so that
/// EASE can be fitted at several λ from one computation ([`Ease::from_gram`]): tuning tries a
/// handful of λ on the same data.
#[derive(Debug, Clone)]
pub struct Gram {
    n: usize,
    /// Column `i` is `idx[ptr[i]..ptr[i + 1]]` with values `val[..]` (rows increasing).
    ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f64>,
}

impl Gram {
    /// `XᵀX`, refused above `max_items` items (EASE's dense matrix would not fit).
    pub fn new(x: &Csr, max_items: usize) -> Result<Self, EaseError> {
        let n = x.n_cols();
        if n > max_items {
            return Err(EaseError::TooManyItems {
                items: n,
                max: max_items,
            });
        }
        // Each item's column from the users who have it (the transpose's rows), in parallel a
        // block at a time, compressed as it comes: only a block of dense columns is ever held.
        let xt = x.transpose();
        let mut g = Self {
            n,
            ptr: vec![0],
            idx: Vec::new(),
            val: Vec::new(),
        };
        const BLOCK: usize = 256;
        for start in (0..n).step_by(BLOCK) {
            let cols: Vec<Vec<(u32, f64)>> = (start..(start + BLOCK).min(n))
                .into_par_iter()
                .map(|i| {
                    let mut col = vec![0.0f64; n];
                    let (users, wu) = xt.row(i);
                    for (&u, &wi) in users.iter().zip(wu) {
                        let (items, w) = x.row(u as usize);
                        for (&j, &wj) in items.iter().zip(w) {
                            col[j as usize] += wi as f64 * wj as f64;
                        }
                    }
                    col.into_iter()
                        .enumerate()
                        .filter(|(_, v)| *v != 0.0)
                        .map(|(j, v)| (j as u32, v))
                        .collect()
                })
                .collect();
            for col in cols {
                g.idx.extend(col.iter().map(|c| c.0));
                g.val.extend(col.iter().map(|c| c.1));
                g.ptr.push(g.idx.len());
            }
        }
        Ok(g)
    }

    /// Items (the matrix is `n × n`).
    pub fn n_items(&self) -> usize {
        self.n
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.ptr.len() * 8 + self.idx.len() * 4 + self.val.len() * 8
    }
}

impl Ease {
    /// Fits EASE on the users × items matrix `x` with L2 weight `lambda`.
    pub fn fit(x: &Csr, lambda: f64, max_items: usize) -> Result<Self, EaseError> {
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(EaseError::BadLambda);
        }
        Self::from_gram(&Gram::new(x, max_items)?, lambda)
    }

    /// Peak bytes [`Ease::from_gram`] allocates for `n_items` items (beyond the Gram matrix):
    /// the dense regularised Gram matrix and its Cholesky factor, or the factor and the
    /// inverse (8 bytes an entry each), whichever pair is alive.
    pub fn fit_bytes(n_items: usize) -> u64 {
        16 * (n_items as u64).pow(2)
    }

    /// Fits EASE with L2 weight `lambda` from a Gram matrix computed once.
    pub fn from_gram(gram: &Gram, lambda: f64) -> Result<Self, EaseError> {
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(EaseError::BadLambda);
        }
        let n = gram.n;
        let mut g = Mat::<f64>::zeros(n, n);
        for i in 0..n {
            let span = gram.ptr[i]..gram.ptr[i + 1];
            for (&j, &v) in gram.idx[span.clone()].iter().zip(&gram.val[span]) {
                g[(j as usize, i)] = v;
            }
            g[(i, i)] += lambda;
        }
        let llt = g
            .llt(faer::Side::Lower)
            .map_err(|_| EaseError::NotPositiveDefinite)?;
        // The factor holds what is needed: free the Gram matrix before the inverse is made.
        drop(g);
        let p = llt.inverse();
        drop(llt);
        let mut b = vec![0.0f32; n * n];
        b.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
            for (j, out) in row.iter_mut().enumerate() {
                if i != j {
                    *out = (-p[(i, j)] / p[(j, j)]) as f32;
                }
            }
        });
        Ok(Self { n, b })
    }

    /// A model from its weights (row-major, `n × n`); `None` if the length is not `n²`.
    pub fn from_parts(n: usize, weights: Vec<f32>) -> Option<Self> {
        (weights.len() == n * n).then_some(Self { n, b: weights })
    }

    /// The weights, row-major: row `i` is what item `i` in a history gives every item.
    pub fn weights(&self) -> &[f32] {
        &self.b
    }

    /// Number of items.
    pub fn n_items(&self) -> usize {
        self.n
    }

    /// The weight item `i` in a history gives item `j`.
    pub fn weight(&self, i: u32, j: u32) -> f32 {
        self.b[i as usize * self.n + j as usize]
    }

    /// Top `n` items for a history of `(item, weight)` among those `keep` accepts; `scores` is
    /// scratch of `n_items` zeros (left zeroed).
    pub fn recommend(
        &self,
        history: &[(u32, f32)],
        n: usize,
        mut keep: impl FnMut(u32) -> bool,
        scores: &mut [f32],
        top: &mut TopK,
    ) -> Vec<Scored> {
        for &(i, w) in history {
            let row = &self.b[i as usize * self.n..(i as usize + 1) * self.n];
            for (s, &bij) in scores.iter_mut().zip(row) {
                *s += w * bij;
            }
        }
        top.reset(n);
        for (j, s) in scores.iter_mut().enumerate() {
            if *s != 0.0 && keep(j as u32) {
                top.push(j as u32, *s);
            }
            *s = 0.0;
        }
        top.drain_sorted()
    }

    /// What each history item contributed to item `j`'s score, largest first.
    pub fn explain(&self, history: &[(u32, f32)], j: u32) -> Vec<(u32, f32)> {
        let mut parts: Vec<(u32, f32)> = history
            .iter()
            .map(|&(i, w)| (i, w * self.weight(i, j)))
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: &[&[u32]], n_items: usize) -> Csr {
        let triplets: Vec<(u32, u32, f32)> = rows
            .iter()
            .enumerate()
            .flat_map(|(u, items)| items.iter().map(move |&i| (u as u32, i, 1.0)))
            .collect();
        Csr::from_triples(rows.len(), n_items, &triplets, false)
    }

    /// Against a direct computation: B = I − P·diag(1/diag(P)) with P = (XᵀX + λI)⁻¹, solved
    /// here by Gauss–Jordan on a small case.
    #[test]
    fn matches_the_closed_form() {
        let x = matrix(&[&[0, 1], &[1, 2], &[0, 1, 2], &[2, 3], &[0, 3]], 4);
        let lambda = 0.5;
        let m = Ease::fit(&x, lambda, 100).unwrap();
        let n = 4;
        let mut g = vec![vec![0.0f64; 2 * n]; n];
        for u in 0..x.n_rows() {
            let (items, _) = x.row(u);
            for &i in items {
                for &j in items {
                    g[i as usize][j as usize] += 1.0;
                }
            }
        }
        for (i, row) in g.iter_mut().enumerate() {
            row[i] += lambda;
            row[n + i] = 1.0;
        }
        for c in 0..n {
            let piv = g[c][c];
            for v in g[c].iter_mut() {
                *v /= piv;
            }
            for r in 0..n {
                if r != c {
                    let f = g[r][c];
                    let pivot_row = g[c].clone();
                    for (v, pv) in g[r].iter_mut().zip(pivot_row) {
                        *v -= f * pv;
                    }
                }
            }
        }
        let p = |i: usize, j: usize| g[i][n + j];
        for i in 0..n {
            for j in 0..n {
                let want = if i == j { 0.0 } else { -p(i, j) / p(j, j) };
                assert!(
                    (m.weight(i as u32, j as u32) as f64 - want).abs() < 1e-5,
                    "{i},{j}"
                );
            }
        }
    }

    #[test]
    fn recommends_co_consumed_items_and_explains_them() {
        let x = matrix(
            &[&[0, 1], &[0, 1], &[0, 1, 2], &[2, 3], &[2, 3], &[2, 3]],
            4,
        );
        let m = Ease::fit(&x, 1.0, 100).unwrap();
        let mut scores = vec![0.0; 4];
        let mut top = TopK::new(4);
        let rec = m.recommend(&[(0, 1.0)], 2, |j| j != 0, &mut scores, &mut top);
        assert_eq!(rec[0].idx, 1);
        assert!(scores.iter().all(|&s| s == 0.0));
        let parts = m.explain(&[(0, 1.0), (3, 1.0)], 1);
        assert_eq!(parts[0].0, 0);
    }

    #[test]
    fn one_gram_serves_every_lambda() {
        let x = matrix(
            &[&[0, 1], &[1, 2], &[0, 1, 2], &[2, 3], &[0, 3], &[1, 3]],
            4,
        );
        let gram = Gram::new(&x, 100).unwrap();
        for lambda in [0.1, 1.0, 30.0] {
            let fresh = Ease::fit(&x, lambda, 100).unwrap();
            let reused = Ease::from_gram(&gram, lambda).unwrap();
            assert_eq!(fresh.weights(), reused.weights(), "lambda {lambda}");
        }
        assert_eq!(Ease::fit_bytes(1000), 16_000_000);
    }

    #[test]
    fn guards() {
        let x = matrix(&[&[0, 1]], 2);
        assert_eq!(Ease::fit(&x, 0.0, 10).unwrap_err(), EaseError::BadLambda);
        assert!(matches!(
            Ease::fit(&x, 1.0, 1).unwrap_err(),
            EaseError::TooManyItems { .. }
        ));
    }
}
