//! Small dense linear algebra: Cholesky factorisation and solves of `f × f` systems, in `f64`
//! for accuracy (these run once per user request, not in training loops).

/// The lower Cholesky factor `L` (row-major, `n × n`) of a symmetric positive definite matrix,
/// so that `A = L Lᵀ`. `None` if `A` is not positive definite.
#[derive(Debug, Clone)]
pub struct Cholesky {
    n: usize,
    l: Vec<f64>,
}

impl Cholesky {
    /// Factorises the row-major `n × n` matrix `a`.
    pub fn new(a: &[f64], n: usize) -> Option<Self> {
        assert_eq!(a.len(), n * n, "matrix size");
        let mut l = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let mut s = a[i * n + j];
                for k in 0..j {
                    s -= l[i * n + k] * l[j * n + k];
                }
                if i == j {
                    if s <= 0.0 || !s.is_finite() {
                        return None;
                    }
                    l[i * n + i] = s.sqrt();
                } else {
                    l[i * n + j] = s / l[j * n + j];
                }
            }
        }
        Some(Self { n, l })
    }

    /// Solves `A x = b` in place (`b` becomes `x`).
    pub fn solve(&self, b: &mut [f64]) {
        let n = self.n;
        assert_eq!(b.len(), n, "right-hand side size");
        // L y = b
        for i in 0..n {
            let row = &self.l[i * n..i * n + i];
            let s = b[i] - row.iter().zip(&b[..i]).map(|(l, x)| l * x).sum::<f64>();
            b[i] = s / self.l[i * n + i];
        }
        // Lᵀ x = y
        for i in (0..n).rev() {
            let s = b[i]
                - (i + 1..n)
                    .zip(&b[i + 1..])
                    .map(|(k, x)| self.l[k * n + i] * x)
                    .sum::<f64>();
            b[i] = s / self.l[i * n + i];
        }
    }
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

    #[test]
    fn rejects_indefinite_matrices() {
        assert!(Cholesky::new(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(Cholesky::new(&[0.0], 1).is_none());
    }
}
