//! Records of decision loops (backend-neutral types; the SQLite SQL is in `sqlite/decisions.rs`): their configuration, every decision with what it was chosen
//! from, every reward, and the learner checkpoints that make a restart lose no learning.
//!
//! The decision log is the source of truth: a loop's model can always be rebuilt by replaying
//! its rewards in order, which is how a restart catches up after the last checkpoint and how an
//! erased user's influence is removed from the model.

use crate::Millis;

/// A decision loop as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopRecord {
    /// Name (unique).
    pub name: String,
    /// Configuration, as JSON.
    pub config: serde_json::Value,
    /// Creation time.
    pub created_at: Millis,
    /// Last configuration change.
    pub updated_at: Millis,
}

/// A decision to log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    /// The decision id (client-chosen or issued); unique across loops.
    pub id: String,
    /// Its loop.
    pub loop_name: String,
    /// The user it was made for, as stored (pseudonymised when configured).
    pub user: Option<String>,
    /// When it was made.
    pub created_at: Millis,
    /// End of its reward window.
    pub deadline: Millis,
    /// Whether it counts for learning already (false when activation was deferred).
    pub activated: bool,
    /// Context, actions, probabilities and the chosen slate, as JSON text.
    pub payload: String,
}

/// A logged decision with its rewards.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    /// Log sequence number.
    pub seq: u64,
    /// The decision id.
    pub id: String,
    /// Its loop.
    pub loop_name: String,
    /// The user, as stored.
    pub user: Option<String>,
    /// When it was made.
    pub created_at: Millis,
    /// End of its reward window.
    pub deadline: Millis,
    /// Whether it counts for learning.
    pub activated: bool,
    /// Whether its reward window is closed (every slot rewarded, or defaults applied).
    pub settled: bool,
    /// See [`NewDecision::payload`].
    pub payload: String,
    /// Its rewards, by slot.
    pub rewards: Vec<RewardRecord>,
}

/// A reward to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReward {
    /// The decision's id.
    pub decision_id: String,
    /// Slot rewarded (0 for the first).
    pub slot: u32,
    /// The reward.
    pub value: f64,
    /// When it arrived.
    pub at: Millis,
    /// Whether it is the loop's default, applied when the window closed without one.
    pub is_default: bool,
}

/// A recorded reward.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardRecord {
    /// Reward sequence number: the order in which the model learned them.
    pub seq: u64,
    /// Slot rewarded.
    pub slot: u32,
    /// The reward.
    pub value: f64,
    /// When it arrived.
    pub at: Millis,
    /// Whether it is the loop's default.
    pub is_default: bool,
}

/// Counts over a loop's log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopLogStats {
    /// Decisions logged.
    pub decisions: u64,
    /// Rewards logged, defaults included.
    pub rewards: u64,
    /// Default rewards.
    pub default_rewards: u64,
    /// Sum of the rewards.
    pub reward_sum: f64,
    /// Decisions made in apprentice mode.
    pub apprentice_decisions: u64,
    /// Of those, how many the learned policy agreed with.
    pub apprentice_agreements: u64,
}

/// What recording a reward did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardOutcome {
    /// Stored with this sequence number.
    Recorded(u64),
    /// The slot already had a reward (the loop's default when `default`, given when its
    /// window closed); nothing changed.
    Duplicate {
        /// Whether the reward already there is the default one.
        default: bool,
    },
    /// No decision with this id.
    UnknownDecision,
}
