//! Model kinds and their hyperparameters, declared once.
//!
//! [`ModelKind`] names every model family with the spelling the API, the CLI, the settings
//! files and `meta.json` have always used (`als`, `knn`, `cosine`, `bm25`, `rp3`, `ease`, `bpr`,
//! `popular`, `content`). Each model's hyperparameters are one struct with `#[serde(default)]`
//! whose `Default` is the only place its defaults are written: the server's settings, the CLI
//! flags, tuning and serving all start from it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Similarity;

/// A model family.
///
/// Item-kNN is one family (`knn`, what the server trains and serves) whose similarity variants
/// (`cosine`, `bm25`, `rp3`) are kinds of their own where a search or an evaluation compares
/// them; [`ModelKind::family`] maps a variant to its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Implicit ALS (Hu, Koren and Volinsky).
    Als,
    /// Item-kNN, with the similarity its parameters name.
    Knn,
    /// Item-kNN, cosine similarity.
    Cosine,
    /// Item-kNN, BM25-weighted similarity.
    Bm25,
    /// Item-kNN, RP3beta random-walk similarity.
    Rp3,
    /// EASE (Steck 2019).
    Ease,
    /// BPR-MF.
    Bpr,
    /// Item popularity: the same list for everyone.
    Popular,
    /// The hybrid content model: item content and user attributes mapped into iALS's factors.
    Content,
}

/// A name that is no [`ModelKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {name:?}: use one of {}", ModelKind::NAMES.join(", "))]
pub struct UnknownModel {
    /// The name given.
    pub name: String,
}

impl ModelKind {
    /// Every kind, in declaration order.
    pub const ALL: [ModelKind; 9] = [
        ModelKind::Als,
        ModelKind::Knn,
        ModelKind::Cosine,
        ModelKind::Bm25,
        ModelKind::Rp3,
        ModelKind::Ease,
        ModelKind::Bpr,
        ModelKind::Popular,
        ModelKind::Content,
    ];

    /// The names of [`Self::ALL`], in the same order.
    pub const NAMES: [&'static str; 9] = [
        "als", "knn", "cosine", "bm25", "rp3", "ease", "bpr", "popular", "content",
    ];

    /// The kind's name, as the API, CLI, settings and `meta.json` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            ModelKind::Als => "als",
            ModelKind::Knn => "knn",
            ModelKind::Cosine => "cosine",
            ModelKind::Bm25 => "bm25",
            ModelKind::Rp3 => "rp3",
            ModelKind::Ease => "ease",
            ModelKind::Bpr => "bpr",
            ModelKind::Popular => "popular",
            ModelKind::Content => "content",
        }
    }

    /// The same as [`Self::name`], for code written against names.
    pub const fn as_str(self) -> &'static str {
        self.name()
    }

    /// The family a kind belongs to: `knn` for the three similarity variants, itself otherwise.
    pub const fn family(self) -> ModelKind {
        match self {
            ModelKind::Cosine | ModelKind::Bm25 | ModelKind::Rp3 => ModelKind::Knn,
            k => k,
        }
    }

    /// The kNN similarity of a kNN variant (`None` for `knn` itself and other families).
    pub const fn knn_similarity(self) -> Option<KnnSimilarity> {
        match self {
            ModelKind::Cosine => Some(KnnSimilarity::Cosine),
            ModelKind::Bm25 => Some(KnnSimilarity::Bm25),
            ModelKind::Rp3 => Some(KnnSimilarity::Rp3),
            _ => None,
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// Comparisons with names keep code that matched on strings compiling while it moves over.
impl PartialEq<str> for ModelKind {
    fn eq(&self, other: &str) -> bool {
        self.name() == other
    }
}

impl PartialEq<&str> for ModelKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl FromStr for ModelKind {
    type Err = UnknownModel;

    /// Today's names; `pop` is accepted for `popular` (the CLI's short name).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "pop" {
            return Ok(ModelKind::Popular);
        }
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownModel { name: s.to_owned() })
    }
}

/// Which similarity item-kNN uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KnnSimilarity {
    /// Cosine of the item columns.
    Cosine,
    /// BM25-weighted dot products (`K1 = 1.2`, `B = 0.75`, `implicit`'s defaults).
    #[default]
    Bm25,
    /// RP3beta random-walk similarity ([`KnnParams::rp3_alpha`], [`KnnParams::rp3_beta`]).
    Rp3,
}

impl KnnSimilarity {
    /// The kNN variant of [`ModelKind`] with this similarity.
    pub const fn kind(self) -> ModelKind {
        match self {
            KnnSimilarity::Cosine => ModelKind::Cosine,
            KnnSimilarity::Bm25 => ModelKind::Bm25,
            KnnSimilarity::Rp3 => ModelKind::Rp3,
        }
    }
}

/// Item-kNN's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KnnParams {
    /// Neighbours kept per item (default 100).
    pub k: usize,
    /// The similarity (default BM25, the best of the three on MovieLens in
    /// docs/benchmarks.md).
    pub similarity: KnnSimilarity,
    /// RP3beta's exponent of the transition probabilities (default 1.0).
    pub rp3_alpha: f32,
    /// RP3beta's popularity penalty (default 0.5).
    pub rp3_beta: f32,
}

impl Default for KnnParams {
    fn default() -> Self {
        Self {
            k: 100,
            similarity: KnnSimilarity::Bm25,
            rp3_alpha: 1.0,
            rp3_beta: 0.5,
        }
    }
}

impl KnnParams {
    /// BM25's term-frequency saturation and length normalisation (`implicit`'s defaults, not
    /// searched).
    pub const BM25_K1: f32 = 1.2;
    /// See [`Self::BM25_K1`].
    pub const BM25_B: f32 = 0.75;

    /// The similarity [`crate::ItemKnn::fit`] takes.
    pub fn similarity(&self) -> Similarity {
        match self.similarity {
            KnnSimilarity::Cosine => Similarity::Cosine,
            KnnSimilarity::Bm25 => Similarity::Bm25 {
                k1: Self::BM25_K1,
                b: Self::BM25_B,
            },
            KnnSimilarity::Rp3 => Similarity::Rp3Beta {
                alpha: self.rp3_alpha,
                beta: self.rp3_beta,
            },
        }
    }
}

/// EASE's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EaseParams {
    /// The L2 weight λ added to the Gram matrix's diagonal (default 100).
    pub lambda: f64,
}

impl Default for EaseParams {
    fn default() -> Self {
        Self { lambda: 100.0 }
    }
}

/// The hybrid content model's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContentParams {
    /// The ridge weight λ of the maps from content to factors (default 10).
    pub lambda: f64,
    /// Most sparse features (categories, words, attribute values) kept per side (default 5000).
    pub max_features: usize,
}

impl Default for ContentParams {
    fn default() -> Self {
        Self {
            lambda: 10.0,
            max_features: 5_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_display_from_str_and_serde() {
        for (k, name) in ModelKind::ALL.into_iter().zip(ModelKind::NAMES) {
            assert_eq!(k.to_string(), name);
            assert_eq!(name.parse::<ModelKind>(), Ok(k));
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::to_string(&k).unwrap(), json);
            assert_eq!(serde_json::from_str::<ModelKind>(&json).unwrap(), k);
        }
        assert_eq!("pop".parse::<ModelKind>(), Ok(ModelKind::Popular));
        let e = "svd".parse::<ModelKind>().unwrap_err();
        assert!(e.to_string().contains("svd") && e.to_string().contains("bm25"));
    }

    #[test]
    fn variants_belong_to_the_knn_family() {
        for s in [
            KnnSimilarity::Cosine,
            KnnSimilarity::Bm25,
            KnnSimilarity::Rp3,
        ] {
            assert_eq!(s.kind().family(), ModelKind::Knn);
            assert_eq!(s.kind().knn_similarity(), Some(s));
        }
        assert_eq!(ModelKind::Als.family(), ModelKind::Als);
        assert_eq!(ModelKind::Knn.knn_similarity(), None);
    }
}
