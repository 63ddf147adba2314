//! Small dense linear algebra: Cholesky factorisation and solves of `f × f` systems, in `f64`
//! for accuracy (these run once per user request, not in training loops).

/// The lower Cholesky factor `L` of a symmetric positive definite matrix, so that `A = L Lᵀ`;
/// `None` if `A` is not positive definite. Packed: row `i` holds `L[i, ..=i]` from
/// `tri(i)`, half the memory of the square matrix (serving caches one per user).
#[derive(Debug, Clone)]
pub struct Cholesky {
    n: usize,
    l: Vec<f64>,
}

impl Cholesky {
    /// Factorises the row-major `n × n` matrix `a`.
    pub fn new(a: &[f64], n: usize) -> Option<Self> {
        assert_eq!(a.len(), n * n, "matrix size");
        crate::simd::dispatch(Factorise { a, n })
    }

    /// Solves `A x = b` in place (`b` becomes `x`). Both substitutions read rows of `L`
    /// contiguously (the backward one in column-oriented form), so they vectorise.
    pub fn solve(&self, b: &mut [f64]) {
        assert_eq!(b.len(), self.n, "right-hand side size");
        crate::simd::dispatch(Solve {
            l: &self.l,
            n: self.n,
            b,
        });
    }
}

impl Cholesky {
    /// Solves `A X = B` in place for `m` right-hand sides at once: `b` is the row-major
    /// `n × m` matrix `B` (one column per right-hand side) and becomes `X`. Same arithmetic as
    /// `m` calls of [`Self::solve`], but each step updates a whole row of `m` values, so the
    /// inner loop is a long contiguous `y −= a·x` that vectorises, and `L` is read once rather
    /// than `m` times.
    pub fn solve_many(&self, b: &mut [f64], m: usize) {
        assert_eq!(b.len(), self.n * m, "right-hand sides size");
        if m == 0 {
            return;
        }
        crate::simd::dispatch(SolveMany {
            l: &self.l,
            n: self.n,
            m,
            b,
        });
    }
}

struct SolveMany<'a> {
    l: &'a [f64],
    n: usize,
    m: usize,
    b: &'a mut [f64],
}

impl crate::simd::WithSimd for SolveMany<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: crate::simd::Simd>(self, _: S) {
        let (l, n, m, b) = (self.l, self.n, self.m, self.b);
        // Plain loops, not iterator closures: a closure would not be compiled with the AVX2
        // features of `dispatch`.
        // L Y = B: Y_i = (B_i − Σ_{k<i} L_ik Y_k) / L_ii, row by row.
        for i in 0..n {
            let (done, rest) = b.split_at_mut(i * m);
            let row = &mut rest[..m];
            for k in 0..i {
                let a = l[tri(i) + k];
                let src = &done[k * m..(k + 1) * m];
                for (r, &v) in row.iter_mut().zip(src) {
                    *r -= a * v;
                }
            }
            let inv = 1.0 / l[tri(i) + i];
            for r in row.iter_mut() {
                *r *= inv;
            }
        }
        // Lᵀ X = Y, from the last row up: X_i = Y_i / L_ii, then Y_k −= L_ik X_i for k < i.
        for i in (0..n).rev() {
            let (head, tail) = b.split_at_mut(i * m);
            let row = &mut tail[..m];
            let inv = 1.0 / l[tri(i) + i];
            for r in row.iter_mut() {
                *r *= inv;
            }
            for k in 0..i {
                let a = l[tri(i) + k];
                let dst = &mut head[k * m..(k + 1) * m];
                for (d, &v) in dst.iter_mut().zip(row.iter()) {
                    *d -= a * v;
                }
            }
        }
    }
}

struct Factorise<'a> {
    a: &'a [f64],
    n: usize,
}

impl crate::simd::WithSimd for Factorise<'_> {
    type Output = Option<Cholesky>;

    #[inline(always)]
    fn with_simd<S: crate::simd::Simd>(self, _: S) -> Option<Cholesky> {
        let (a, n) = (self.a, self.n);
        let mut l = vec![0f64; tri(n)];
        for i in 0..n {
            for j in 0..=i {
                // L_ij = (A_ij − L[i, ..j] · L[j, ..j]) / L_jj: rows of L are contiguous.
                let s = a[i * n + j] - dot64(&l[tri(i)..tri(i) + j], &l[tri(j)..tri(j) + j]);
                if i == j {
                    if s <= 0.0 || !s.is_finite() {
                        return None;
                    }
                    l[tri(i) + i] = s.sqrt();
                } else {
                    l[tri(i) + j] = s / l[tri(j) + j];
                }
            }
        }
        Some(Cholesky { n, l })
    }
}

struct Solve<'a> {
    l: &'a [f64],
    n: usize,
    b: &'a mut [f64],
}

impl crate::simd::WithSimd for Solve<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: crate::simd::Simd>(self, _: S) {
        let (l, n, b) = (self.l, self.n, self.b);
        // L y = b: y_i = (b_i − L[i, ..i] · y[..i]) / L_ii.
        for i in 0..n {
            let row = &l[tri(i)..tri(i) + i];
            b[i] = (b[i] - dot64(row, &b[..i])) / l[tri(i) + i];
        }
        // Lᵀ x = y, column by column: x_i = y_i / L_ii, then y[..i] −= x_i · L[i, ..i].
        for i in (0..n).rev() {
            let x = b[i] / l[tri(i) + i];
            b[i] = x;
            let (head, _) = b.split_at_mut(i);
            for (h, &lv) in head.iter_mut().zip(&l[tri(i)..tri(i) + i]) {
                *h -= x * lv;
            }
        }
    }
}

/// Where row `i` of a packed lower triangle starts (and, for `i = n`, its length).
#[inline(always)]
fn tri(i: usize) -> usize {
    i * (i + 1) / 2
}

/// A dot product in four independent lanes, so that the compiler can vectorise it.
#[inline(always)]
fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let chunks = a.len() / 4 * 4;
    for (x, y) in a[..chunks].chunks_exact(4).zip(b[..chunks].chunks_exact(4)) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in a[chunks..].iter().zip(&b[chunks..]) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn solves_spd_systems(n in 1usize..12, seed in 0u64..500) {
            let mut rng = crate::Rng::seed_from_u64(seed);
            // A = B Bᵀ + n I is symmetric positive definite.
            let b: Vec<f64> = (0..n * n).map(|_| rng.f64() - 0.5).collect();
            let mut a = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>()
                        + if i == j { n as f64 } else { 0.0 };
                }
            }
            let x_true: Vec<f64> = (0..n).map(|_| rng.f64() * 4.0 - 2.0).collect();
            let mut rhs: Vec<f64> = (0..n).map(|i| (0..n).map(|j| a[i * n + j] * x_true[j]).sum()).collect();
            Cholesky::new(&a, n).unwrap().solve(&mut rhs);
            for (x, t) in rhs.iter().zip(&x_true) {
                prop_assert!((x - t).abs() < 1e-9);
            }
        }
    }

    /// Many right-hand sides at once give what one solve per column gives.
    #[test]
    fn solves_many_right_hand_sides_like_one_at_a_time() {
        let (n, m) = (7, 5);
        let mut rng = crate::Rng::seed_from_u64(3);
        let b: Vec<f64> = (0..n * n).map(|_| rng.f64() - 0.5).collect();
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let chol = Cholesky::new(&a, n).unwrap();
        let rhs: Vec<f64> = (0..n * m).map(|_| rng.f64() * 2.0 - 1.0).collect();
        let mut many = rhs.clone();
        chol.solve_many(&mut many, m);
        for c in 0..m {
            let mut one: Vec<f64> = (0..n).map(|r| rhs[r * m + c]).collect();
            chol.solve(&mut one);
            for r in 0..n {
                assert!((one[r] - many[r * m + c]).abs() < 1e-12, "{r},{c}");
            }
        }
        chol.solve_many(&mut [], 0);
    }

    #[test]
    fn rejects_indefinite_matrices() {
        assert!(Cholesky::new(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(Cholesky::new(&[0.0], 1).is_none());
    }
}
