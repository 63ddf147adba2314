//! Online experiments between configurations: who sees what, and what the numbers say.
//!
//! - [`assign`]: deterministic assignment by a salted hash of the user key ([`bucket`],
//!   [`Variants`] with traffic weights and a holdout), stable across nodes and restarts.
//! - [`stats`]: per-arm [`Moments`] of a user-level metric; effect estimates on plain means,
//!   with CUPED variance reduction, or on ratio metrics by the delta method; Welch's t-test at a
//!   fixed horizon and an always-valid sequential test for daily looks; the sample-ratio-mismatch
//!   alarm; Holm's correction across metrics.
//! - [`interleave`]: team-draft interleaving of two rankers on the same request, per-user credit
//!   and a sign test.
//! - [`dist`]: the normal, Student-t, chi-square and binomial distribution functions behind them.
//! - [`sim`]: a synthetic population and click model that check all of the above by simulation
//!   (false positives under peeking, power with and without CUPED, interleaving against A/B, SRM
//!   detection).
//!
//! ```
//! use bespoke_algo::experiment::{Moments, Variants, means};
//!
//! let variants = Variants::new(vec!["control".into(), "new-blend".into()], vec![1.0, 1.0], 0.0)?;
//! let mut arms = [Moments::new(), Moments::new()];
//! for user in 0..1000 {
//!     let key = format!("user-{user}");
//!     let arm = variants.assign("blend-test-1", &key).expect("no holdout");
//!     let revenue = if arm == 1 { 10.5 } else { 10.0 } + (user % 7) as f64;
//!     arms[arm].push(revenue);
//! }
//! let result = means(&arms[0], &arms[1])?.welch(0.05)?;
//! assert!(result.ci_low < result.effect && result.effect < result.ci_high);
//! # Ok::<(), bespoke_algo::experiment::Error>(())
//! ```

pub mod assign;
pub mod dist;
pub mod interleave;
pub mod sim;
pub mod stats;

pub use assign::{MAX_VARIANTS, Variants, bucket};
pub use interleave::{Credit, Interleaving, Preference, SignTest, Team, team_draft};
pub use stats::{
    Cuped, Estimate, Moments, SRM_ALPHA, SequentialResult, Srm, TestResult, cuped, holm, means,
    ratio, srm,
};

/// What can be wrong with an experiment's configuration or data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An experiment needs at least one variant.
    #[error("no variants")]
    NoVariants,
    /// More variants than [`MAX_VARIANTS`].
    #[error("{got} variants, at most {max} allowed")]
    TooManyVariants {
        /// Variants given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// Names (or observed counts) and weights differ in number.
    #[error("{names} variants but {weights} weights")]
    LengthMismatch {
        /// Number of names or observed counts.
        names: usize,
        /// Number of weights.
        weights: usize,
    },
    /// A variant name is empty or used twice.
    #[error("variant name {name:?} is empty or repeated")]
    BadVariantName {
        /// The offending name.
        name: String,
    },
    /// A weight is negative, infinite or NaN.
    #[error("weight {index} is {weight}, must be finite and non-negative")]
    InvalidWeight {
        /// Index of the weight.
        index: usize,
        /// Its value.
        weight: f64,
    },
    /// The weights sum to zero, so no variant could receive users.
    #[error("weights sum to zero")]
    ZeroTotalWeight,
    /// The holdout share is outside `[0, 1)`.
    #[error("holdout {holdout} must be in [0, 1)")]
    InvalidHoldout {
        /// The value given.
        holdout: f64,
    },
    /// A comparison needs at least two users in each arm to estimate a variance.
    #[error("too few users: {control} in control, {treatment} in treatment, need 2 in each")]
    TooFewUsers {
        /// Users in the control arm.
        control: u64,
        /// Users in the treatment arm.
        treatment: u64,
    },
    /// A ratio metric's mean denominator is zero in an arm (no impressions at all).
    #[error("ratio metric has a zero denominator")]
    ZeroDenominator,
    /// The significance level is outside `(0, 1)`.
    #[error("alpha {alpha} must be in (0, 1)")]
    InvalidAlpha {
        /// The value given.
        alpha: f64,
    },
    /// The sequential test's mixing variance is not positive and finite.
    #[error("tau2 {tau2} must be positive and finite")]
    InvalidTau2 {
        /// The value given.
        tau2: f64,
    },
}
