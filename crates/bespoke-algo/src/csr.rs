//! Compressed sparse row matrices, the layout of every interaction matrix.
//!
//! Row `r` holds its entries in `indices[indptr[r]..indptr[r + 1]]` (column ids, strictly
//! increasing) with the values at the same positions of `data`: sbr's `CompressedInteractions`,
//! with `u32` columns and `f32` values to halve the memory of the usual 64-bit layout.

/// A sparse matrix in CSR form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Csr {
    n_rows: usize,
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    data: Vec<f32>,
}

impl Csr {
    /// Builds a matrix from `(row, col, value)` triples in any order. Values of repeated
    /// `(row, col)` pairs are summed; pairs whose sum is exactly 0 are kept only if `keep_zeros`.
    ///
    /// Panics if a row or column is out of range (a caller bug).
    pub fn from_triples(
        n_rows: usize,
        n_cols: usize,
        triples: &[(u32, u32, f32)],
        keep_zeros: bool,
    ) -> Self {
        // Counting sort by row, then sort and merge within each (short) row.
        let mut indptr = vec![0usize; n_rows + 1];
        for &(r, c, _) in triples {
            assert!(
                (r as usize) < n_rows && (c as usize) < n_cols,
                "entry out of range"
            );
            indptr[r as usize + 1] += 1;
        }
        for r in 0..n_rows {
            indptr[r + 1] += indptr[r];
        }
        let mut next = indptr.clone();
        let mut entries = vec![(0u32, 0f32); triples.len()];
        for &(r, c, v) in triples {
            let slot = &mut next[r as usize];
            entries[*slot] = (c, v);
            *slot += 1;
        }
        let mut out = Csr {
            n_rows,
            n_cols,
            indptr: Vec::with_capacity(n_rows + 1),
            indices: Vec::with_capacity(triples.len()),
            data: Vec::with_capacity(triples.len()),
        };
        out.indptr.push(0);
        for r in 0..n_rows {
            let row = &mut entries[indptr[r]..indptr[r + 1]];
            row.sort_by_key(|e| e.0);
            let mut i = 0;
            while i < row.len() {
                let (c, mut v) = row[i];
                i += 1;
                while i < row.len() && row[i].0 == c {
                    v += row[i].1;
                    i += 1;
                }
                if keep_zeros || v != 0.0 {
                    out.indices.push(c);
                    out.data.push(v);
                }
            }
            out.indptr.push(out.indices.len());
        }
        out
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns.
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Row `r`: its column ids (increasing) and values. Empty for `r >= n_rows`.
    #[inline]
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        if r >= self.n_rows {
            return (&[], &[]);
        }
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// Number of entries in row `r`.
    pub fn row_len(&self, r: usize) -> usize {
        self.row(r).0.len()
    }

    /// The transpose (columns become rows), in `O(nnz)`.
    pub fn transpose(&self) -> Csr {
        let mut indptr = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            indptr[c as usize + 1] += 1;
        }
        for c in 0..self.n_cols {
            indptr[c + 1] += indptr[c];
        }
        let mut next = indptr.clone();
        let mut indices = vec![0u32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let slot = &mut next[c as usize];
                indices[*slot] = r as u32;
                data[*slot] = v;
                *slot += 1;
            }
        }
        Csr {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr,
            indices,
            data,
        }
    }

    /// The same pattern with every value replaced by `f(value)`.
    pub fn map_values(&self, f: impl Fn(f32) -> f32) -> Csr {
        Csr {
            data: self.data.iter().map(|&v| f(v)).collect(),
            ..self.clone()
        }
    }

    /// The same pattern with every value replaced by `f(row, col, value)`.
    pub fn map_entries(&self, mut f: impl FnMut(usize, u32, f32) -> f32) -> Csr {
        let mut data = Vec::with_capacity(self.nnz());
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            data.extend(cols.iter().zip(vals).map(|(&c, &v)| f(r, c, v)));
        }
        Csr {
            data,
            ..self.clone()
        }
    }

    /// Bytes held by the three arrays.
    pub fn heap_bytes(&self) -> usize {
        self.indptr.len() * std::mem::size_of::<usize>()
            + self.indices.len() * 4
            + self.data.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn matches_a_dense_sum_and_transposes(
            triples in proptest::collection::vec((0u32..6, 0u32..9, -3i32..4), 0..80),
        ) {
            let t: Vec<(u32, u32, f32)> = triples.iter().map(|&(r, c, v)| (r, c, v as f32)).collect();
            let m = Csr::from_triples(6, 9, &t, false);
            let mut dense: BTreeMap<(u32, u32), f32> = BTreeMap::new();
            for &(r, c, v) in &t {
                *dense.entry((r, c)).or_default() += v;
            }
            dense.retain(|_, v| *v != 0.0);
            prop_assert_eq!(m.nnz(), dense.len());
            for r in 0..6 {
                let (cols, vals) = m.row(r);
                prop_assert!(cols.windows(2).all(|w| w[0] < w[1]));
                for (&c, &v) in cols.iter().zip(vals) {
                    prop_assert_eq!(dense[&(r as u32, c)], v);
                }
            }
            let tt = m.transpose();
            prop_assert_eq!((tt.n_rows(), tt.n_cols()), (9, 6));
            prop_assert_eq!(tt.transpose(), m);
        }
    }

    #[test]
    fn zeros_are_dropped_unless_asked() {
        let t = [(0, 0, 1.0), (0, 0, -1.0), (1, 2, 3.0)];
        assert_eq!(Csr::from_triples(2, 3, &t, false).nnz(), 1);
        assert_eq!(Csr::from_triples(2, 3, &t, true).nnz(), 2);
        assert_eq!(
            Csr::from_triples(2, 3, &t, false).row(5),
            (&[][..], &[][..])
        );
    }
}
