//! # Brief overview
//!
//! `bespoke-algo` holds Bespoke's recommendation algorithms and the data structures they run on.
//! It is pure: no IO, no async, no clocks (callers pass timestamps in), so every function here is
//! deterministic and testable in isolation.
//!
//! - [`UserIdx`] and [`ItemIdx`] are the dense internal ids; external keys are mapped to them once,
//!   at the edge, by an [`IdMap`].
//! - [`LiveIndex`] keeps what serving needs from the interaction log in memory: each user's
//!   history, each item's users, item popularity (all-time, windowed and time-decayed) and the
//!   co-occurrence used for related items.
//! - [`TopK`] selects the `k` best [`Scored`] candidates with a bounded heap.
//!
//! ```
//! use bespoke_algo::{ItemIdx, LiveIndex, Popularity, UserIdx};
//!
//! let mut live = LiveIndex::new(Popularity::new(24.0 * 3600.0 * 1000.0));
//! live.apply(UserIdx(0), ItemIdx(1), 1.0, 1_000);
//! live.apply(UserIdx(1), ItemIdx(1), 2.0, 2_000);
//! live.apply(UserIdx(1), ItemIdx(2), 1.0, 3_000);
//! let best = live.popularity().top_all_time(10, |_| true);
//! assert_eq!(best[0].idx, 1);
//! ```
#![warn(missing_docs)]

pub mod als;
pub mod ann;
pub mod bandit;
mod bpr;
pub mod content;
mod csr;
pub mod debias;
pub mod dp;
mod ease;
pub mod eval;
pub mod experiment;
mod factors;
pub mod fairness;
mod id_map;
pub mod knn;
mod linalg;
mod live;
pub mod model;
mod popularity;
mod recency;
pub mod rerank;
mod rng;
pub mod score;
pub mod segment;
pub mod simd;
mod topk;
pub mod tune;

pub use als::{Als, AlsParams, IterationReport, UserSolver, UserVector};
pub use ann::{AnnParams, AnnScorer};
pub use bpr::{Bpr, BprParams};
pub use content::{Bag, ContentVocab, Ridge, RidgeError, VocabParams};
pub use csr::Csr;
pub use ease::{Ease, EaseError, Gram};
pub use factors::Factors;
pub use id_map::IdMap;
pub use knn::{ItemKnn, Similarity};
pub use linalg::Cholesky;
pub use live::{Interaction, LiveIndex, Related};
pub use model::{ContentParams, EaseParams, KnnParams, KnnSimilarity, ModelKind, UnknownModel};
pub use popularity::{Contribution, Popularity};
pub use recency::Recency;
pub use rng::Rng;
pub use score::{Identity, ItemScorer, Rescore, ScoreScratch};
pub use topk::{Scored, TopK};

/// Dense internal id of a user. Ids are assigned by the store and stay stable for the life of
/// the user; deleted users leave holes, which every structure here tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct UserIdx(pub u32);

/// Dense internal id of an item, with the same guarantees as [`UserIdx`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct ItemIdx(pub u32);

/// A relevance score: the larger the number, the more relevant.
pub type Score = f32;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;
