//! Compressed sparse row matrices, the layout of every interaction matrix.
//!
//! Row `r` holds its entries in `indices[indptr[r]..indptr[r + 1]]` (column ids, strictly
//! increasing) with the values at the same positions of `data`: sbr's `CompressedInteractions`,
//! with `u32` columns and `f32` values to halve the memory of the usual 64-bit layout.
//!
//! When every value is the same (binary implicit feedback), the values are not stored at all:
//! rows borrow their values from one shared run of that constant, as long as the longest row.
//! That halves the memory again for the commonest kind of training data.

/// A sparse matrix in CSR form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Csr {
    n_rows: usize,
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    /// The values, unless they are all equal (then empty).
    data: Vec<f32>,
    /// When all values are equal: that value, repeated as often as the longest row is long.
    uniform: Option<Vec<f32>>,
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
        Self::build(n_rows, n_cols, triples.len(), |k| triples[k], keep_zeros)
    }

    /// Like [`Csr::from_triples`], from three parallel columns (no array of tuples needed).
    pub fn from_columns(
        n_rows: usize,
        n_cols: usize,
        rows: &[u32],
        cols: &[u32],
        vals: &[f32],
        keep_zeros: bool,
    ) -> Self {
        assert!(
            rows.len() == cols.len() && cols.len() == vals.len(),
            "columns of one length"
        );
        Self::build(
            n_rows,
            n_cols,
            rows.len(),
            |k| (rows[k], cols[k], vals[k]),
            keep_zeros,
        )
    }

    /// Like [`Csr::from_triples`], from a function giving entry `k` of `len` (called twice per
    /// entry): lets callers build without materialising the entries at all.
    pub fn from_fn(
        n_rows: usize,
        n_cols: usize,
        len: usize,
        entry: impl Fn(usize) -> (u32, u32, f32),
        keep_zeros: bool,
    ) -> Self {
        Self::build(n_rows, n_cols, len, entry, keep_zeros)
    }

    /// Counting sort by row straight into the output arrays, then sort and merge each (short)
    /// row in place: the only memory used is the result's. When all input values are equal the
    /// value array is only created if merging repeated pairs makes them differ.
    fn build(
        n_rows: usize,
        n_cols: usize,
        len: usize,
        entry: impl Fn(usize) -> (u32, u32, f32),
        keep_zeros: bool,
    ) -> Self {
        let mut indptr = vec![0usize; n_rows + 1];
        let first = if len > 0 { Some(entry(0).2) } else { None };
        let mut uniform = first;
        for k in 0..len {
            let (r, c, v) = entry(k);
            assert!(
                (r as usize) < n_rows && (c as usize) < n_cols,
                "entry out of range"
            );
            indptr[r as usize + 1] += 1;
            if uniform.is_some_and(|u| u.to_bits() != v.to_bits()) {
                uniform = None;
            }
        }
        for r in 0..n_rows {
            indptr[r + 1] += indptr[r];
        }
        let mut next = indptr.clone();
        let mut indices = vec![0u32; len];
        let mut data = if uniform.is_some() {
            Vec::new()
        } else {
            vec![0f32; len]
        };
        for k in 0..len {
            let (r, c, v) = entry(k);
            let slot = &mut next[r as usize];
            indices[*slot] = c;
            if uniform.is_none() {
                data[*slot] = v;
            }
            *slot += 1;
        }
        drop(next);
        let mut row: Vec<(u32, f32)> = Vec::new();
        let mut write = 0;
        for r in 0..n_rows {
            let (start, end) = (indptr[r], indptr[r + 1]);
            row.clear();
            match uniform {
                Some(u) => row.extend(indices[start..end].iter().map(|&c| (c, u))),
                None => row.extend(
                    indices[start..end]
                        .iter()
                        .copied()
                        .zip(data[start..end].iter().copied()),
                ),
            }
            // Stable, so that repeated pairs are summed in input order.
            row.sort_by_key(|e| e.0);
            indptr[r] = write;
            let mut i = 0;
            while i < row.len() {
                let (c, mut v) = row[i];
                i += 1;
                while i < row.len() && row[i].0 == c {
                    v += row[i].1;
                    i += 1;
                }
                if let Some(u) = uniform.filter(|u| u.to_bits() != v.to_bits()) {
                    // A merged value differs: the values must be stored after all.
                    data = vec![u; len];
                    uniform = None;
                }
                if keep_zeros || v != 0.0 {
                    // `write <= start`: merging never lengthens a row.
                    indices[write] = c;
                    if uniform.is_none() {
                        data[write] = v;
                    }
                    write += 1;
                }
            }
        }
        indptr[n_rows] = write;
        indices.truncate(write);
        indices.shrink_to_fit();
        if uniform.is_none() {
            data.truncate(write);
            data.shrink_to_fit();
        }
        let longest = (0..n_rows)
            .map(|r| indptr[r + 1] - indptr[r])
            .max()
            .unwrap_or(0);
        Csr {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
            uniform: uniform.map(|u| vec![u; longest.max(1)]),
        }
        .compacted()
    }

    /// Drops the value array when all values are equal.
    fn compacted(mut self) -> Self {
        if self.uniform.is_none()
            && !self.data.is_empty()
            && self
                .data
                .iter()
                .all(|&v| v.to_bits() == self.data[0].to_bits())
        {
            let longest = (0..self.n_rows)
                .map(|r| self.indptr[r + 1] - self.indptr[r])
                .max()
                .unwrap_or(0);
            self.uniform = Some(vec![self.data[0]; longest.max(1)]);
            self.data = Vec::new();
        }
        self
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
        match &self.uniform {
            Some(u) => (&self.indices[a..b], &u[..b - a]),
            None => (&self.indices[a..b], &self.data[a..b]),
        }
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
        let uniform = self.uniform.as_ref().map(|u| u[0]);
        let mut data = if uniform.is_some() {
            Vec::new()
        } else {
            vec![0f32; self.nnz()]
        };
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let slot = &mut next[c as usize];
                indices[*slot] = r as u32;
                if uniform.is_none() {
                    data[*slot] = v;
                }
                *slot += 1;
            }
        }
        let longest = (0..self.n_cols)
            .map(|c| indptr[c + 1] - indptr[c])
            .max()
            .unwrap_or(0);
        Csr {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr,
            indices,
            data,
            uniform: uniform.map(|v| vec![v; longest.max(1)]),
        }
    }

    /// The same pattern with every value replaced by `f(value)`.
    pub fn map_values(&self, f: impl Fn(f32) -> f32) -> Csr {
        match &self.uniform {
            Some(u) => Csr {
                uniform: Some(vec![f(u[0]); u.len()]),
                ..self.clone()
            },
            None => Csr {
                data: self.data.iter().map(|&v| f(v)).collect(),
                ..self.clone()
            },
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
            uniform: None,
            ..self.clone()
        }
        .compacted()
    }

    /// Bytes held by the arrays.
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
            let (r, c, v): (Vec<u32>, Vec<u32>, Vec<f32>) = (
                t.iter().map(|x| x.0).collect(),
                t.iter().map(|x| x.1).collect(),
                t.iter().map(|x| x.2).collect(),
            );
            prop_assert_eq!(&Csr::from_columns(6, 9, &r, &c, &v, false), &m);
            let tt = m.transpose();
            prop_assert_eq!((tt.n_rows(), tt.n_cols()), (9, 6));
            prop_assert_eq!(tt.transpose(), m);
        }
    }

    #[test]
    fn equal_values_are_stored_once() {
        let t = [
            (0, 1, 1.0),
            (0, 2, 1.0),
            (2, 0, 1.0),
            (2, 1, 1.0),
            (2, 2, 1.0),
        ];
        let m = Csr::from_triples(3, 3, &t, false);
        assert!(m.heap_bytes() < 4 * 8 + 5 * 4 + 5 * 4, "no value array");
        assert_eq!(m.row(2), (&[0, 1, 2][..], &[1.0, 1.0, 1.0][..]));
        assert_eq!(m.row(1), (&[][..], &[][..]));
        let t2 = m.transpose();
        assert_eq!(t2.row(1), (&[0, 2][..], &[1.0, 1.0][..]));
        assert_eq!(m.map_values(|v| v * 3.0).row(0).1, &[3.0, 3.0]);
        assert_eq!(
            m.map_entries(|r, _, v| v + r as f32).row(2).1,
            &[3.0, 3.0, 3.0]
        );
        assert_eq!(
            m.map_entries(|_, c, v| v + c as f32).row(2).1,
            &[1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn repeated_pairs_of_equal_values_still_sum() {
        let t = [(0, 1, 1.0), (0, 1, 1.0), (1, 0, 1.0)];
        let m = Csr::from_triples(2, 2, &t, false);
        assert_eq!(m.row(0), (&[1][..], &[2.0][..]));
        assert_eq!(m.row(1), (&[0][..], &[1.0][..]));
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
