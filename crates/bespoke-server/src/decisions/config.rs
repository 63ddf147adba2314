//! A loop's configuration (`GET/PUT /v1/loops/{loop}`). The doc comments of these types and
//! their fields are their description in `/openapi.json`.

use bespoke_algo::bandit::{InvalidParam, LearnerConfig};
use serde::{Deserialize, Serialize};

/// Largest magnitude of either end of a loop's `reward_range`: far above any useful reward, and
/// small enough that the learner's squared errors stay well inside `f32`.
pub const MAX_REWARD: f64 = 1e6;

/// A reward outside its loop's [`LoopConfig::reward_range`] (or not finite). The message
/// continues the field's name (`value must be ...`).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("must be a finite number within the loop's reward_range [{}, {}], got {value:?}", .range[0], .range[1])]
pub struct RewardOutOfRange {
    /// The refused reward.
    pub value: f64,
    /// The loop's `reward_range` when it was refused.
    pub range: [f64; 2],
}

/// Whether a loop serves its learned policy or the caller's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoopMode {
    /// Serve the learned policy, exploring.
    #[default]
    Online,
    /// Serve the caller's baseline while learning; report how often the learned policy agrees.
    Apprentice,
}

/// How a loop decides and learns; every field is optional (its default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(default)]
pub struct LoopConfig {
    /// The learner: hash bits, learning rate, interactions, exploration. A change of bits,
    /// learning_rate or interactions rebuilds the learner from the whole log.
    pub learner: LearnerConfig,
    /// `online` or `apprentice`.
    pub mode: LoopMode,
    /// Seconds a decision waits for its reward (0.001 to 2592000, 30 days); then it gets
    /// `default_reward`.
    #[schema(minimum = 0.001, maximum = 2_592_000)]
    pub reward_wait_seconds: f64,
    /// Reward of a decision whose window closed without one; within `reward_range`.
    pub default_reward: f64,
    /// Lowest and highest reward accepted, `[-1, 1]` by default as in Azure Personalizer
    /// (typically 0 to 1, -1 for a bad outcome). A reward outside is refused (400); the
    /// learner also clips what it learns to this range, so rewards logged under a wider range
    /// cannot dominate it. Each end is within ±1e6.
    #[schema(min_items = 2, max_items = 2)]
    pub reward_range: [f64; 2],
    /// Most actions one decision may offer (1 to 10000).
    #[schema(minimum = 1, maximum = 10_000)]
    pub max_actions: usize,
    /// Feature contributions listed per action in an explanation (at most 100).
    #[schema(maximum = 100)]
    pub explanation_terms: usize,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            learner: LearnerConfig::default(),
            mode: LoopMode::Online,
            reward_wait_seconds: 600.0,
            default_reward: 0.0,
            reward_range: [-1.0, 1.0],
            max_actions: 1000,
            explanation_terms: 5,
        }
    }
}

impl LoopConfig {
    /// Checks a reward against [`LoopConfig::reward_range`]; the message says the range.
    pub fn check_reward(&self, value: f64) -> Result<(), RewardOutOfRange> {
        let [lo, hi] = self.reward_range;
        if value.is_finite() && (lo..=hi).contains(&value) {
            Ok(())
        } else {
            Err(RewardOutOfRange {
                value,
                range: self.reward_range,
            })
        }
    }

    /// `value` clipped to [`LoopConfig::reward_range`]: what the learner learns. Rewards are
    /// checked before they are logged, so this only matters for logs written under a wider
    /// range (or before ranges existed).
    pub fn clip_reward(&self, value: f64) -> f64 {
        let [lo, hi] = self.reward_range;
        if value.is_nan() {
            self.default_reward
        } else {
            value.clamp(lo, hi)
        }
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        self.learner.validate().map_err(|e| e.within("learner"))?;
        if !(self.reward_wait_seconds.is_finite()
            && (0.001..=30.0 * 86_400.0).contains(&self.reward_wait_seconds))
        {
            return Err(InvalidParam::new(
                "reward_wait_seconds",
                "must be between 0.001 and 2592000 (30 days)",
            ));
        }
        let [lo, hi] = self.reward_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi && lo >= -MAX_REWARD && hi <= MAX_REWARD) {
            return Err(InvalidParam::new(
                "reward_range",
                "must be [low, high] with low < high, both finite and within ±1e6",
            ));
        }
        if !(self.default_reward.is_finite() && (lo..=hi).contains(&self.default_reward)) {
            return Err(InvalidParam::new(
                "default_reward",
                format!("must be a finite number within reward_range [{lo}, {hi}]"),
            ));
        }
        if !(1..=10_000).contains(&self.max_actions) {
            return Err(InvalidParam::new(
                "max_actions",
                "must be between 1 and 10000",
            ));
        }
        if self.explanation_terms > 100 {
            return Err(InvalidParam::new(
                "explanation_terms",
                "must be at most 100",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_are_checked_and_clipped_to_the_range() {
        let c = LoopConfig::default();
        assert_eq!(c.reward_range, [-1.0, 1.0]);
        for ok in [-1.0, 0.0, 0.5, 1.0] {
            assert!(c.check_reward(ok).is_ok(), "{ok}");
        }
        for bad in [1e308, -1e308, 1e300, 1.0000001, f64::INFINITY] {
            assert_eq!(
                c.check_reward(bad),
                Err(RewardOutOfRange {
                    value: bad,
                    range: [-1.0, 1.0]
                }),
                "{bad}"
            );
        }
        let nan = c.check_reward(f64::NAN).unwrap_err();
        assert_eq!(
            nan.to_string(),
            "must be a finite number within the loop's reward_range [-1, 1], got NaN"
        );
        assert_eq!(c.clip_reward(1e308), 1.0);
        assert_eq!(c.clip_reward(-1e308), -1.0);
        assert_eq!(c.clip_reward(f64::NAN), 0.0);
    }

    #[test]
    fn ranges_are_validated_by_field() {
        let field = |c: LoopConfig| c.validate().unwrap_err().field;
        for range in [[1.0, 1.0], [2.0, 1.0], [f64::NEG_INFINITY, 1.0], [0.0, 1e7]] {
            let c = LoopConfig {
                reward_range: range,
                ..LoopConfig::default()
            };
            assert_eq!(field(c), "reward_range", "{range:?}");
        }
        let c = LoopConfig {
            default_reward: 2.0,
            ..LoopConfig::default()
        };
        assert_eq!(field(c), "default_reward");
        let c = LoopConfig {
            reward_range: [0.0, 100.0],
            default_reward: 2.0,
            ..LoopConfig::default()
        };
        assert!(c.validate().is_ok());
    }
}
