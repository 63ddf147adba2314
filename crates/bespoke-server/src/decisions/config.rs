//! A loop's configuration (`GET/PUT /v1/loops/{loop}`).

use bespoke_algo::bandit::LearnerConfig;
use serde::{Deserialize, Serialize};

/// Whether a loop serves its learned policy or the caller's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopMode {
    /// Serve the learned policy, exploring.
    #[default]
    Online,
    /// Serve the caller's baseline while learning; report how often the learned policy agrees.
    Apprentice,
}

/// How a loop decides and learns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopConfig {
    /// The learner: hash bits, learning rate, interactions, exploration.
    pub learner: LearnerConfig,
    /// `online` or `apprentice`.
    pub mode: LoopMode,
    /// Seconds a decision waits for its reward; then it gets `default_reward`.
    pub reward_wait_seconds: f64,
    /// Reward of a decision whose window closed without one.
    pub default_reward: f64,
    /// Most actions one decision may offer.
    pub max_actions: usize,
    /// Feature contributions listed per action in an explanation.
    pub explanation_terms: usize,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            learner: LearnerConfig::default(),
            mode: LoopMode::Online,
            reward_wait_seconds: 600.0,
            default_reward: 0.0,
            max_actions: 1000,
            explanation_terms: 5,
        }
    }
}

impl LoopConfig {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.learner
            .validate()
            .map_err(|(f, m)| (format!("learner.{f}"), m))?;
        if !(self.reward_wait_seconds.is_finite()
            && (0.001..=30.0 * 86_400.0).contains(&self.reward_wait_seconds))
        {
            return Err((
                "reward_wait_seconds".into(),
                "must be between 0.001 and 2592000 (30 days)".into(),
            ));
        }
        if !self.default_reward.is_finite() {
            return Err(("default_reward".into(), "must be a finite number".into()));
        }
        if !(1..=10_000).contains(&self.max_actions) {
            return Err(("max_actions".into(), "must be between 1 and 10000".into()));
        }
        if self.explanation_terms > 100 {
            return Err(("explanation_terms".into(), "must be at most 100".into()));
        }
        Ok(())
    }
}
