//! Content features and a ridge map from content into a collaborative factor space: the hybrid
//! model that makes an item without events (or a user without history) recommendable at once.
//!
//! An item (or user) is described by a [`Bag`]: named sparse features (categories, tags,
//! attribute values, words of its text) and named dense embeddings of any modality. A
//! [`ContentVocab`] fitted on all known bags keeps the sparse features seen at least `min_df`
//! times (the `max_features` most frequent), weights them by inverse document frequency
//! (words by `(1 + ln tf)·idf`) and scales the sparse part and every embedding to unit length,
//! so that no block dominates by its size; a constant bias feature comes last.
//!
//! [`Ridge`] then learns `W = (XᵀX + λI)⁻¹ XᵀY` from the encoded warm rows `X` to their
//! learned factors `Y` (iALS item or user factors). A cold row's factors are `xW`, and its score
//! against a vector `v` splits exactly into per-feature parts `x_j (W_j · v)`: the explanation.

use faer::Mat;
use faer::linalg::solvers::Solve;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

/// The content of one item or user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bag {
    /// Named sparse features and their raw values (a word's count, `1` for a category).
    pub sparse: Vec<(String, f32)>,
    /// Named dense embeddings.
    pub dense: Vec<(String, Vec<f32>)>,
}

/// Words shorter than this are dropped.
const MIN_WORD: usize = 2;

/// Common English words that carry no taste.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "in", "is", "it", "its",
    "of", "on", "or", "that", "the", "this", "to", "was", "were", "will", "with",
];

/// Appends the words of `text` to `out` as `word:<lowercase token>`: runs of alphanumeric
/// characters, at least two long, common English stop words dropped.
pub fn tokenize(text: &str, out: &mut Vec<(String, f32)>) {
    for token in text.split(|c: char| !c.is_alphanumeric()) {
        if token.chars().count() < MIN_WORD {
            continue;
        }
        let token = token.to_lowercase();
        if STOP_WORDS.binary_search(&token.as_str()).is_ok() {
            continue;
        }
        out.push((format!("word:{token}"), 1.0));
    }
}

/// How a vocabulary is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VocabParams {
    /// Most sparse features kept (the most frequent).
    pub max_features: usize,
    /// Fewest bags a sparse feature must appear in.
    pub min_df: u32,
}

impl Default for VocabParams {
    fn default() -> Self {
        Self {
            max_features: 5_000,
            min_df: 2,
        }
    }
}

/// Encodes bags as sparse vectors (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ContentVocab {
    names: Vec<String>,
    index: FxHashMap<String, u32>,
    idf: Vec<f32>,
    /// Embedding blocks after the sparse features: `(name, dimension)`.
    dense: Vec<(String, u32)>,
}

impl ContentVocab {
    /// Fits a vocabulary on `bags`. Embeddings are kept by name with the dimension they first
    /// appear with; vectors of another dimension are ignored when encoding.
    pub fn fit<'a>(bags: impl IntoIterator<Item = &'a Bag>, params: VocabParams) -> Self {
        let mut df: FxHashMap<&str, u32> = FxHashMap::default();
        let mut dense: Vec<(String, u32)> = Vec::new();
        let mut count = 0usize;
        for bag in bags {
            count += 1;
            let mut names: Vec<&str> = bag.sparse.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for n in names {
                *df.entry(n).or_default() += 1;
            }
            for (name, v) in &bag.dense {
                if !v.is_empty() && !dense.iter().any(|d| &d.0 == name) {
                    dense.push((name.clone(), v.len() as u32));
                }
            }
        }
        dense.sort();
        let mut kept: Vec<(&str, u32)> = df
            .into_iter()
            .filter(|&(_, c)| c >= params.min_df.max(1))
            .collect();
        // Most frequent first, ties by name: the vocabulary depends on the data only.
        kept.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        kept.truncate(params.max_features);
        kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let n = count.max(1) as f32;
        let idf = kept
            .iter()
            .map(|&(_, c)| (1.0 + n / c as f32).ln())
            .collect();
        let names: Vec<String> = kept.into_iter().map(|(s, _)| s.to_owned()).collect();
        Self::from_parts(names, idf, dense).expect("consistent by construction")
    }

    /// A vocabulary from its parts (as [`Self::names`], [`Self::idf`], [`Self::dense`] return
    /// them); `None` when the lengths differ.
    pub fn from_parts(
        names: Vec<String>,
        idf: Vec<f32>,
        dense: Vec<(String, u32)>,
    ) -> Option<Self> {
        if names.len() != idf.len() {
            return None;
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Some(Self {
            names,
            index,
            idf,
            dense,
        })
    }

    /// Sparse feature names, in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Inverse document frequencies of the sparse features.
    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    /// Embedding blocks `(name, dimension)`, in index order after the sparse features.
    pub fn dense(&self) -> &[(String, u32)] {
        &self.dense
    }

    /// Width of an encoded vector: sparse features, embedding dimensions and the bias.
    pub fn dim(&self) -> usize {
        self.names.len() + self.dense.iter().map(|d| d.1 as usize).sum::<usize>() + 1
    }

    /// A readable name of encoded feature `j`: the sparse name, `embedding:<name>` or `bias`.
    pub fn feature_name(&self, j: u32) -> String {
        let mut j = j as usize;
        if let Some(n) = self.names.get(j) {
            return n.clone();
        }
        j -= self.names.len();
        for (name, d) in &self.dense {
            if j < *d as usize {
                return format!("embedding:{name}");
            }
            j -= *d as usize;
        }
        "bias".to_owned()
    }

    /// Encodes a bag, sorted by feature index; the bias (value 1) is always last.
    pub fn encode(&self, bag: &Bag) -> Vec<(u32, f32)> {
        let mut sparse: Vec<(u32, f32)> = Vec::with_capacity(bag.sparse.len() + 1);
        for (name, v) in &bag.sparse {
            if let Some(&j) = self.index.get(name)
                && v.is_finite()
            {
                sparse.push((j, *v));
            }
        }
        sparse.sort_unstable_by_key(|s| s.0);
        // Sum repeats (a word's count), then weight.
        let mut out: Vec<(u32, f32)> = Vec::with_capacity(sparse.len() + 1);
        for (j, v) in sparse {
            match out.last_mut() {
                Some(last) if last.0 == j => last.1 += v,
                _ => out.push((j, v)),
            }
        }
        for (j, v) in &mut out {
            let tf = if self.names[*j as usize].starts_with("word:") && *v > 0.0 {
                1.0 + v.ln()
            } else {
                *v
            };
            *v = tf * self.idf[*j as usize];
        }
        normalize(&mut out);
        let mut offset = self.names.len() as u32;
        for (name, d) in &self.dense {
            if let Some((_, v)) = bag
                .dense
                .iter()
                .find(|(n, v)| n == name && v.len() == *d as usize)
                && v.iter().all(|x| x.is_finite())
            {
                let start = out.len();
                out.extend(v.iter().enumerate().map(|(k, &x)| (offset + k as u32, x)));
                normalize(&mut out[start..]);
            }
            offset += d;
        }
        out.push((offset, 1.0));
        out
    }
}

fn normalize(v: &mut [(u32, f32)]) {
    let norm = v.iter().map(|x| x.1 * x.1).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            x.1 /= norm;
        }
    }
}

/// Why a ridge map could not be fitted.
#[derive(Debug, Clone, PartialEq)]
pub enum RidgeError {
    /// Rows and targets differ in number, or a row indexes past the input width.
    Shape(String),
    /// `λ` must be positive.
    BadLambda,
    /// The regularised system was not positive definite (numerically).
    NotPositiveDefinite,
}

impl std::fmt::Display for RidgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RidgeError::Shape(m) => write!(f, "ridge regression: {m}"),
            RidgeError::BadLambda => write!(f, "ridge regression: lambda must be positive"),
            RidgeError::NotPositiveDefinite => {
                write!(f, "ridge regression: the system is not positive definite")
            }
        }
    }
}

impl std::error::Error for RidgeError {}

/// A linear map from encoded content to factors: `d_in × d_out` weights, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Ridge {
    d_in: usize,
    d_out: usize,
    w: Vec<f32>,
}

impl Ridge {
    /// Fits `W = (XᵀX + λI)⁻¹ XᵀY`: `rows[r]` is the encoded row `r` (sorted indices below
    /// `d_in`), `targets` its `d_out` factors, row-major.
    pub fn fit(
        rows: &[Vec<(u32, f32)>],
        targets: &[f32],
        d_in: usize,
        d_out: usize,
        lambda: f64,
    ) -> Result<Self, RidgeError> {
        if targets.len() != rows.len() * d_out {
            return Err(RidgeError::Shape(format!(
                "{} rows but {} target values for {d_out} factors",
                rows.len(),
                targets.len()
            )));
        }
        if rows.iter().flatten().any(|&(j, _)| j as usize >= d_in) {
            return Err(RidgeError::Shape(format!("a feature index is >= {d_in}")));
        }
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(RidgeError::BadLambda);
        }
        // Column i of XᵀX and row i of XᵀY from the rows holding feature i: each is summed in
        // row order, so the result does not depend on the thread count, and only one dense
        // d_in × d_in matrix is ever held.
        let mut holders: Vec<Vec<(u32, f32)>> = vec![Vec::new(); d_in];
        for (r, row) in rows.iter().enumerate() {
            for &(j, x) in row {
                holders[j as usize].push((r as u32, x));
            }
        }
        let column = |held: &Vec<(u32, f32)>| {
            let mut col = vec![0.0f64; d_in];
            let mut b = vec![0.0f64; d_out];
            for &(r, xi) in held {
                for &(j, xj) in &rows[r as usize] {
                    col[j as usize] += xi as f64 * xj as f64;
                }
                let y = &targets[r as usize * d_out..(r as usize + 1) * d_out];
                for (o, &yk) in b.iter_mut().zip(y) {
                    *o += xi as f64 * yk as f64;
                }
            }
            (col, b)
        };
        // A block of columns at a time, so only one d_in × d_in matrix is ever held.
        const BLOCK: usize = 256;
        let mut g = Mat::<f64>::zeros(d_in, d_in);
        let mut b = Mat::<f64>::zeros(d_in, d_out);
        for start in (0..d_in).step_by(BLOCK) {
            let columns: Vec<(Vec<f64>, Vec<f64>)> = holders[start..(start + BLOCK).min(d_in)]
                .par_iter()
                .map(column)
                .collect();
            for (k, (col, bi)) in columns.into_iter().enumerate() {
                let i = start + k;
                for (j, v) in col.into_iter().enumerate() {
                    g[(j, i)] = v;
                }
                for (o, v) in bi.into_iter().enumerate() {
                    b[(i, o)] = v;
                }
            }
        }
        drop(holders);
        for i in 0..d_in {
            g[(i, i)] += lambda;
        }
        let llt = g
            .llt(faer::Side::Lower)
            .map_err(|_| RidgeError::NotPositiveDefinite)?;
        let x = llt.solve(&b);
        let mut w = vec![0.0f32; d_in * d_out];
        for i in 0..d_in {
            for k in 0..d_out {
                w[i * d_out + k] = x[(i, k)] as f32;
            }
        }
        Ok(Self { d_in, d_out, w })
    }

    /// A map from its weights (row-major `d_in × d_out`); `None` if the length differs.
    pub fn from_parts(d_in: usize, d_out: usize, w: Vec<f32>) -> Option<Self> {
        (w.len() == d_in * d_out).then_some(Self { d_in, d_out, w })
    }

    /// The weights, row-major.
    pub fn weights(&self) -> &[f32] {
        &self.w
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// Output width (factors).
    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// `xW` for an encoded row; indices past the input width are ignored.
    pub fn predict(&self, x: &[(u32, f32)]) -> Vec<f32> {
        let mut out = vec![0.0f32; self.d_out];
        for &(j, v) in x {
            if let Some(row) = self.row(j) {
                for (o, &w) in out.iter_mut().zip(row) {
                    *o += v * w;
                }
            }
        }
        out
    }

    /// Each feature's share of `xW · target`: `(j, x_j (W_j · target))`; they sum to the score.
    pub fn contributions(&self, x: &[(u32, f32)], target: &[f32]) -> Vec<(u32, f32)> {
        x.iter()
            .filter_map(|&(j, v)| {
                let row = self.row(j)?;
                Some((j, v * crate::simd::dot(row, target)))
            })
            .collect()
    }

    fn row(&self, j: u32) -> Option<&[f32]> {
        let j = j as usize;
        (j < self.d_in).then(|| &self.w[j * self.d_out..(j + 1) * self.d_out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bag(features: &[&str]) -> Bag {
        Bag {
            sparse: features.iter().map(|f| ((*f).to_owned(), 1.0)).collect(),
            dense: Vec::new(),
        }
    }

    #[test]
    fn stop_words_are_sorted() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tokenize_lowercases_and_drops_short_and_stop_words() {
        let mut out = Vec::new();
        tokenize("The Star-Wars saga, a 1977 film!", &mut out);
        let words: Vec<&str> = out.iter().map(|w| w.0.as_str()).collect();
        assert_eq!(
            words,
            [
                "word:star",
                "word:wars",
                "word:saga",
                "word:1977",
                "word:film"
            ]
        );
    }

    #[test]
    fn vocabulary_keeps_frequent_features_and_normalizes_blocks() {
        let mut bags = vec![bag(&["category:a", "category:b"]), bag(&["category:a"])];
        bags.push(Bag {
            sparse: vec![("category:b".into(), 1.0), ("category:rare".into(), 1.0)],
            dense: vec![("clip".into(), vec![3.0, 4.0])],
        });
        let vocab = ContentVocab::fit(&bags, VocabParams::default());
        // "rare" appears once (< min_df 2).
        assert_eq!(vocab.names(), ["category:a", "category:b"]);
        assert_eq!(vocab.dim(), 2 + 2 + 1);
        let x = vocab.encode(&bags[2]);
        // category:b alone (unit length), the embedding scaled to unit length, then the bias.
        assert_eq!(x, vec![(1, 1.0), (2, 0.6), (3, 0.8), (4, 1.0)]);
        assert_eq!(vocab.feature_name(3), "embedding:clip");
        assert_eq!(vocab.feature_name(4), "bias");
        // A wrong-sized embedding is ignored rather than misread.
        let odd = Bag {
            sparse: vec![],
            dense: vec![("clip".into(), vec![1.0, 2.0, 3.0])],
        };
        assert_eq!(vocab.encode(&odd), vec![(4, 1.0)]);
    }

    #[test]
    fn ridge_recovers_a_linear_map() {
        // Targets are an exact linear function of one-hot features: with a small λ the
        // prediction of each feature combination is close to the truth.
        let truth = [[1.0f32, -1.0], [0.5, 2.0], [-2.0, 0.0]];
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for r in 0..300u32 {
            let a = r % 3;
            let b = (r / 3) % 3;
            let row: Vec<(u32, f32)> = if a == b {
                vec![(a, 1.0)]
            } else {
                let mut v = vec![(a, 1.0), (b, 1.0)];
                v.sort_unstable_by_key(|x| x.0);
                v
            };
            let mut y = [0.0f32; 2];
            for &(j, v) in &row {
                for k in 0..2 {
                    y[k] += v * truth[j as usize][k];
                }
            }
            rows.push(row);
            targets.extend_from_slice(&y);
        }
        let ridge = Ridge::fit(&rows, &targets, 3, 2, 1e-3).unwrap();
        for (j, t) in truth.iter().enumerate() {
            let p = ridge.predict(&[(j as u32, 1.0)]);
            assert!((p[0] - t[0]).abs() < 1e-3 && (p[1] - t[1]).abs() < 1e-3);
        }
    }

    #[test]
    fn ridge_rejects_bad_shapes_and_lambda() {
        assert!(matches!(
            Ridge::fit(&[vec![(0, 1.0)]], &[1.0], 1, 2, 1.0),
            Err(RidgeError::Shape(_))
        ));
        assert!(matches!(
            Ridge::fit(&[vec![(5, 1.0)]], &[1.0], 1, 1, 1.0),
            Err(RidgeError::Shape(_))
        ));
        assert_eq!(
            Ridge::fit(&[vec![(0, 1.0)]], &[1.0], 1, 1, 0.0),
            Err(RidgeError::BadLambda)
        );
    }

    proptest! {
        #[test]
        fn contributions_sum_to_the_score(
            w in proptest::collection::vec(-2.0f32..2.0, 12),
            x in proptest::collection::vec((0u32..4, -1.0f32..1.0), 0..6),
            v in proptest::collection::vec(-1.0f32..1.0, 3),
        ) {
            let ridge = Ridge::from_parts(4, 3, w).unwrap();
            let score: f32 = ridge.predict(&x).iter().zip(&v).map(|(a, b)| a * b).sum();
            let parts: f32 = ridge.contributions(&x, &v).iter().map(|p| p.1).sum();
            prop_assert!((score - parts).abs() <= 1e-4 * (1.0 + score.abs()));
        }

        #[test]
        fn encoded_rows_are_sorted_and_end_with_the_bias(
            words in proptest::collection::vec("[a-c]{1,2}", 0..12),
        ) {
            let bags: Vec<Bag> = words
                .chunks(3)
                .map(|c| Bag { sparse: c.iter().map(|w| (format!("word:{w}"), 1.0)).collect(), dense: vec![] })
                .collect();
            let vocab = ContentVocab::fit(&bags, VocabParams { max_features: 5, min_df: 1 });
            prop_assert!(vocab.names().len() <= 5);
            for b in &bags {
                let x = vocab.encode(b);
                prop_assert!(x.windows(2).all(|p| p[0].0 < p[1].0));
                prop_assert_eq!(x.last().copied(), Some((vocab.dim() as u32 - 1, 1.0)));
            }
        }
    }
}
