//! Dense factor matrices: one contiguous row-major `Vec<f32>`, row `i` at
//! `[i * dim..(i + 1) * dim]` (qdrant's flattened vectors), never `Vec<Vec<f32>>`.

use rayon::prelude::*;

use crate::simd::{self, Simd, WithSimd};

/// Rows per parallel work unit when summing outer products.
const GRAM_CHUNK: usize = 1024;

/// A `rows × dim` matrix of `f32`, row-major and contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    rows: usize,
    dim: usize,
    data: Vec<f32>,
}

impl Factors {
    /// A matrix of zeros.
    pub fn zeros(rows: usize, dim: usize) -> Self {
        Self {
            rows,
            dim,
            data: vec![0.0; rows * dim],
        }
    }

    /// Wraps row-major data; `None` if its length is not `rows * dim`.
    pub fn from_vec(rows: usize, dim: usize, data: Vec<f32>) -> Option<Self> {
        (data.len() == rows * dim).then_some(Self { rows, dim, data })
    }

    /// Entries drawn uniformly from `[0, scale)` (row by row), as `implicit` initialises.
    pub fn random(rows: usize, dim: usize, rng: &mut crate::Rng, scale: f32) -> Self {
        let data = (0..rows * dim).map(|_| rng.f64() as f32 * scale).collect();
        Self { rows, dim, data }
    }

    /// Row `r` drawn uniformly from `[0, scale)` by a generator seeded with `seeds[r]`: each
    /// row's start depends on its own seed only, not on which other rows exist.
    pub fn random_per_row(seeds: &[u64], dim: usize, scale: f32) -> Self {
        let mut data = Vec::with_capacity(seeds.len() * dim);
        for &seed in seeds {
            let mut rng = crate::Rng::seed_from_u64(seed);
            data.extend((0..dim).map(|_| rng.f64() as f32 * scale));
        }
        Self {
            rows: seeds.len(),
            dim,
            data,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (the factor dimension).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Row `i`, mutable.
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All entries, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// All entries, row-major, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the matrix, returning its row-major data.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// `Σ_i y_i y_iᵀ` (`dim × dim`, row-major): `YᵀY`. Computed in parallel over fixed chunks
    /// whose partial sums are added in chunk order, so the result does not depend on the number
    /// of threads.
    pub fn gram(&self) -> Vec<f32> {
        let d = self.dim;
        if d == 0 {
            return Vec::new();
        }
        struct Partial<'a> {
            rows: &'a [f32],
            d: usize,
        }
        impl WithSimd for Partial<'_> {
            type Output = Vec<f32>;
            #[inline(always)]
            fn with_simd<S: Simd>(self, s: S) -> Vec<f32> {
                let mut g = vec![0f32; self.d * self.d];
                s.gram_add(self.rows, self.d, &mut g);
                g
            }
        }
        let partials: Vec<Vec<f32>> = self
            .data
            .par_chunks(d * GRAM_CHUNK)
            .map(|rows| simd::dispatch(Partial { rows, d }))
            .collect();
        let mut g = vec![0f32; d * d];
        for p in &partials {
            simd::axpy(1.0, p, &mut g);
        }
        g
    }

    /// Bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.data.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_matches_the_definition_and_ignores_thread_count() {
        let mut rng = crate::Rng::seed_from_u64(5);
        let f = Factors::random(3000, 7, &mut rng, 1.0);
        let g = f.gram();
        for a in 0..7 {
            for b in 0..7 {
                let want: f64 = (0..3000)
                    .map(|i| f.row(i)[a] as f64 * f.row(i)[b] as f64)
                    .sum();
                assert!((g[a * 7 + b] as f64 - want).abs() < 1e-2, "{a},{b}");
            }
        }
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| f.gram()), g);
        assert!(Factors::from_vec(2, 3, vec![0.0; 5]).is_none());
    }
}
