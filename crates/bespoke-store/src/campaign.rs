//! Records of experiments and segments (backend-neutral types; the SQLite SQL is in
//! `sqlite/campaigns.rs`).
//!
//! Like rules, the store keeps an experiment's or a segment's definition as opaque JSON that the
//! server validates and interprets. What the store does understand is who: exposures (which user
//! saw which variant of an experiment, first when) are keyed by the user's stored key, since a
//! brand-new user is served (and exposed) before their first event creates them; segment
//! memberships by the internal user id. Deleting a user deletes both in the same transaction.

use crate::{Millis, UserIdx};

/// An experiment's first exposure of one user: the variant they were served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExposure {
    /// The stored key of the user served.
    pub user: String,
    /// Index of the variant served (the experiment's definition names them).
    pub variant: u32,
    /// When they were first served it.
    pub at: Millis,
}

/// A stored exposure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The user's stored key.
    pub key: String,
    /// Index of the variant served.
    pub variant: u32,
    /// When the user was first served it.
    pub at: Millis,
    /// Interleaving credit: clicks on items the first and the second ranker contributed.
    pub credit: (u32, u32),
}

/// A member of a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The user's internal id.
    pub user: UserIdx,
    /// The user's stored key.
    pub key: String,
    /// How strongly the user belongs (1 for rule-based segments; for learned ones, the
    /// closeness to the cluster's centre).
    pub score: f64,
    /// When the membership was computed.
    pub at: Millis,
}
