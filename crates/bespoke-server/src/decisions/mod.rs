//! Decision loops: contextual bandits that choose among actions under a context, learn from
//! the rewards that follow, and keep a log complete enough to evaluate other policies offline.
//!
//! A *loop* is one decision surface (a home-page slot, a message tone) with its own
//! configuration and learner. Each decision is logged with its context, its actions, the
//! probabilities of the policy and the chosen slate before it is answered; each reward is
//! logged before the learner learns from it. The learner is therefore a function of the log:
//! a restart loads the last checkpoint and replays the rewards logged after it, a change of the
//! learning parameters replays the whole log, and erasing a user replays the log without them.
//!
//! Learning order: rewards are learned in the order they are applied, which under concurrent
//! requests may differ slightly from the order they were logged; a replay uses the logged order.
//! Both learn from exactly the same rewards.
//!
//! The doc comments of the types the API answers with (a decision, a reward, a loop) are
//! their description in `/openapi.json`.

mod config;
mod payload;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bespoke_algo::Rng;
use bespoke_algo::bandit::ope::{self, Logged};
use bespoke_algo::bandit::{
    Contribution, Learner, LearnerConfig, LinearModel, PreparedAction, PreparedContext, RawFeature,
};
use bespoke_store::{DecisionRecord, Millis, NewDecision, NewReward, RewardOutcome, Store};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::Value;

pub use config::{LoopConfig, LoopMode, MAX_REWARD};
pub use payload::{StoredAction, StoredDecision, StoredSlot, StoredSlotSpec};

use crate::features::flatten;

/// Rewards replayed per store read.
const REPLAY_CHUNK: usize = 10_000;
/// Expired decisions settled per store read.
const SETTLE_CHUNK: usize = 5_000;

/// Why a decision-loop request failed.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The request is malformed; `field` names the offending part.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the offending value.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// No such decision.
    #[error("no decision {0:?}")]
    UnknownDecision(String),
    /// No such loop.
    #[error("no loop {0:?}")]
    UnknownLoop(String),
    /// No such loop, and decisions do not create loops (`decisions.auto_create_loops`).
    #[error(
        "no loop {0:?}; an admin key creates it with PUT /v1/loops/{0} (decisions.auto_create_loops is off)"
    )]
    NoImplicitLoop(String),
    /// Creating the loop would pass `decisions.max_loops`.
    #[error("loop {name:?} would be one loop too many: the limit (decisions.max_loops) is {max}")]
    TooManyLoops {
        /// The loop that was to be created.
        name: String,
        /// The limit.
        max: usize,
    },
    /// The decision id is taken.
    #[error("decision id {0:?} is already used")]
    DuplicateId(String),
    /// The reward window has closed.
    #[error("the reward window of decision {0:?} has closed")]
    Expired(String),
    /// The slot already has a reward.
    #[error("slot {slot} of decision {id:?} already has a reward")]
    AlreadyRewarded {
        /// Decision id.
        id: String,
        /// Slot.
        slot: u32,
    },
    /// The decision was deferred and has not been activated.
    #[error("decision {0:?} has not been activated (it was made with defer_activation)")]
    NotActivated(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DecisionError {
    DecisionError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// An action offered to a decision.
#[derive(Debug, Clone)]
pub struct ActionInput {
    /// Action id, unique within the request.
    pub id: String,
    /// Its features (an object, or a list of objects).
    pub features: Value,
}

/// A named slot with its own features, exclusions and baseline.
#[derive(Debug, Clone, Default)]
pub struct SlotInput {
    /// Slot id, unique within the request.
    pub id: String,
    /// Slot features (an object, or a list of objects): they join the context for this slot.
    pub features: Value,
    /// Actions this slot may not take.
    pub exclude: Vec<String>,
    /// The caller's choice for this slot.
    pub baseline: Option<String>,
}

/// A decision request.
#[derive(Debug, Clone, Default)]
pub struct DecisionInput {
    /// Decision id chosen by the caller (Personalizer's `eventId`); issued when `None`.
    pub id: Option<String>,
    /// The user, as the application names them (stored pseudonymised when configured).
    pub user: Option<String>,
    /// Context features.
    pub context: Value,
    /// The actions to choose among.
    pub actions: Vec<ActionInput>,
    /// Slate length; 1 when `None`.
    pub slots: Option<usize>,
    /// The caller's own choice (apprentice mode serves it; evaluation compares with it).
    pub baseline: Option<String>,
    /// Action ids not to choose.
    pub exclude: Vec<String>,
    /// Log now, learn only after `activate`.
    pub defer_activation: bool,
    /// Named slots with their own features and exclusions; when given, they define the slate
    /// (`slots` must then be their number or absent).
    pub slot_specs: Vec<SlotInput>,
}

/// The user's consent, as it bears on a decision.
#[derive(Debug, Clone, Copy)]
pub struct DecisionConsent {
    /// Whether the context may shape the decision (false: only action features are used).
    pub personalization: bool,
    /// Whether the decision's rewards may be learned from.
    pub training: bool,
}

/// One entry of a ranking.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = RankedAction)]
pub struct Ranked {
    /// Action id.
    pub action: String,
    /// Probability with which it was chosen for its slot (for entries after the slate, and
    /// excluded actions: its probability for the first slot).
    pub probability: f64,
    /// Served score: predicted reward plus exploration term.
    pub score: f32,
}

/// Why an action got its score.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActionExplanation {
    /// Action id.
    pub action: String,
    /// Predicted reward.
    pub predicted: f32,
    /// Exploration term (Thompson sampling's draw; 0 for the other policies, whose exploration
    /// is in the probabilities).
    pub exploration: f32,
    /// The largest feature contributions, and the rest summed; with `exploration` they add up
    /// to the served score.
    pub contributions: Vec<Contribution>,
    /// The same in the reason schema of every ranking route: the context features that
    /// raised the score most (`context`), and `exploration` when it moved the score.
    pub reasons: Vec<crate::pipeline::Reason>,
}

/// Reasons of one action: its three largest positive feature contributions (not the summed
/// remainder), then exploration when it changed the score.
fn action_reasons(
    contributions: &[Contribution],
    exploration: f32,
) -> Vec<crate::pipeline::Reason> {
    use crate::pipeline::Reason;
    let mut out: Vec<Reason> = contributions
        .iter()
        .filter(|c| c.contribution > 0.0 && c.feature != "(other terms)")
        .take(3)
        .map(|c| Reason::Context {
            message: format!("{} raised its predicted reward", c.feature),
            feature: c.feature.clone(),
            weight: c.contribution,
        })
        .collect();
    if exploration != 0.0 {
        out.push(Reason::Exploration {
            message: "the exploration policy's draw moved its score".into(),
            weight: exploration,
        });
    }
    if out.is_empty() {
        out.push(Reason::Context {
            message: "no feature raised its predicted reward".into(),
            feature: "(none)".into(),
            weight: 0.0,
        });
    }
    out
}

/// What explains a decision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = DecisionExplanation)]
pub struct Explanation {
    /// `online` or `apprentice`.
    pub mode: LoopMode,
    /// The exploration policy.
    #[schema(value_type = String)]
    pub policy: &'static str,
    /// Rewards the learner has learned from.
    pub model_updates: u64,
    /// Whether the context was used (false without the user's personalization consent).
    pub personalized: bool,
    /// In apprentice mode: the action the learned policy would have chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_choice: Option<String>,
    /// Per action, in ranking order (at most the slate and the next ten).
    pub actions: Vec<ActionExplanation>,
}

/// A decision made.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Decision)]
pub struct DecisionOutput {
    /// The id to reward.
    pub decision_id: String,
    /// The loop.
    #[serde(rename = "loop")]
    pub loop_name: String,
    /// Every action, the slate first; excluded actions last, with probability 0.
    pub ranking: Vec<Ranked>,
    /// Number of slots in the slate (the first entries of `ranking`).
    pub slots: usize,
    /// Whether rewards count already (false until activated when deferred).
    pub activated: bool,
    /// When the reward window closes (RFC 3339).
    #[schema(format = DateTime)]
    pub reward_deadline: String,
    /// Why.
    pub explanation: Explanation,
}

/// A reward recorded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RewardAck {
    /// Decision id.
    pub decision_id: String,
    /// Slot rewarded.
    pub slot: u32,
    /// The action of that slot.
    pub action: String,
    /// The reward.
    pub value: f64,
    /// Whether the learner learned from it (false without the user's training consent).
    pub learned: bool,
}

/// A loop as reported by `GET /v1/loops/{loop}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Loop)]
pub struct LoopView {
    /// Name.
    pub name: String,
    /// Configuration.
    pub config: LoopConfig,
    /// Rewards learned from.
    pub model_updates: u64,
    /// Last reward sequence number learned from.
    pub learned_through: u64,
    /// Counts from the log.
    pub stats: LoopStats,
}

/// Counts from a loop's log.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LoopStats {
    /// Decisions logged.
    pub decisions: u64,
    /// Rewards logged (including defaults).
    pub rewards: u64,
    /// Default rewards applied at the end of a window.
    pub default_rewards: u64,
    /// Mean reward of the rewards logged.
    pub mean_reward: Option<f64>,
    /// Apprentice mode: decisions made in it, and how often the learned policy agreed with the
    /// baseline.
    pub apprentice: ApprenticeStats,
}

/// Agreement of the learned policy with the baseline in apprentice mode.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ApprenticeStats {
    /// Decisions made in apprentice mode.
    pub decisions: u64,
    /// Of those, how many the learned policy would have made the same way.
    pub agreements: u64,
    /// `agreements / decisions`.
    pub agreement_rate: Option<f64>,
}

struct LoopState {
    config: LoopConfig,
    learner: Learner,
    /// Largest reward sequence number learned from.
    applied_seq: u64,
    /// Rewards learned since the last checkpoint.
    dirty: u64,
    /// Last reward sequence number covered by the latest replay of the log: a reward that was
    /// committed before a rebuild but reaches `learn` after it is already in the learner.
    replayed_through: u64,
    /// On a shared store: rewards above `applied_seq` this node learned as it logged them,
    /// which following the log ([`Loops::follow`]) must not learn again. `applied_seq` is then
    /// the follower's cursor: every reward up to it is learned.
    own: std::collections::BTreeSet<u64>,
}

struct LoopHandle {
    name: String,
    state: RwLock<LoopState>,
    /// Rewards logged (or being logged) but not yet learned from: a checkpoint is taken only
    /// when none are, so that its sequence number covers exactly what it learned.
    inflight: AtomicUsize,
}

/// Who may create loops, and how many there may be (from `[decisions]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopLimits {
    /// Most loops, not counting `reserved`; creating one more is refused.
    pub max_loops: usize,
    /// Whether a decision naming an unknown loop creates it (otherwise only `PUT` does).
    pub auto_create: bool,
    /// The loop of the Personalizer-compatible routes: always created when first used, and not
    /// counted against `max_loops`, so that a flood of other loops cannot break those routes.
    pub reserved: String,
}

impl LoopLimits {
    /// The limits `[decisions]` configures.
    pub fn from_settings(d: &crate::settings::DecisionSettings) -> Self {
        Self {
            max_loops: d.max_loops,
            auto_create: d.auto_create_loops,
            reserved: d.personalizer_loop.clone(),
        }
    }
}

impl Default for LoopLimits {
    fn default() -> Self {
        Self::from_settings(&crate::settings::DecisionSettings::default())
    }
}

/// How a loop comes to be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Creation {
    /// By a decision naming it (`write` scope): only if `auto_create` allows.
    Implicit,
    /// By `PUT /v1/loops/{loop}` (`admin` scope).
    Explicit,
}

/// All decision loops of a store.
pub struct Loops {
    store: Arc<dyn Store>,
    loops: RwLock<HashMap<String, Arc<LoopHandle>>>,
    create: Mutex<()>,
    limits: LoopLimits,
    checkpoint_every: u64,
    rng: Mutex<Rng>,
    /// Other nodes log rewards to the same store (see [`Loops::follow`]).
    shared: bool,
}

impl std::fmt::Debug for Loops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loops")
            .field("loops", &self.loops.read().len())
            .finish_non_exhaustive()
    }
}

/// A random (version 4) UUID for a decision.
fn issue_id() -> Result<String, DecisionError> {
    let mut b = crate::auth::random_bytes()
        .map_err(|e| DecisionError::Store(bespoke_store::Error::Backend(Box::new(e))))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn policy_name(l: &LearnerConfig) -> &'static str {
    use bespoke_algo::bandit::Exploration as E;
    match l.exploration {
        E::Greedy => "greedy",
        E::EpsilonGreedy { .. } => "epsilon_greedy",
        E::Softmax { .. } => "softmax",
        E::SquareCb { .. } => "square_cb",
        E::Thompson { .. } => "thompson",
    }
}

/// Features of a stored decision, ready to learn from or evaluate.
struct Featurized {
    context_raw: Vec<RawFeature>,
    context: PreparedContext,
    actions_raw: Vec<Vec<RawFeature>>,
    actions: Vec<PreparedAction>,
    /// Per named slot: the context plus the slot's features.
    slot_contexts: Vec<(Vec<RawFeature>, PreparedContext)>,
}

impl Featurized {
    /// The context slot `k` is filled under.
    fn slot_context(&self, k: usize) -> (&[RawFeature], &PreparedContext) {
        match self.slot_contexts.get(k) {
            Some((raw, prepared)) => (raw, prepared),
            None => (&self.context_raw, &self.context),
        }
    }
}

fn featurize(d: &StoredDecision) -> Result<Featurized, DecisionError> {
    let context_raw = if d.personalized {
        flatten("context", &d.context).map_err(|e| invalid(e.field, e.message))?
    } else {
        Vec::new()
    };
    let mut actions_raw = Vec::with_capacity(d.actions.len());
    for (i, a) in d.actions.iter().enumerate() {
        actions_raw.push(
            flatten(&format!("actions[{i}].features"), &a.features)
                .map_err(|e| invalid(e.field, e.message))?,
        );
    }
    let context = PreparedContext::new(&context_raw);
    let actions = d
        .actions
        .iter()
        .zip(&actions_raw)
        .map(|(a, f)| PreparedAction::new(&a.id, f))
        .collect();
    let mut slot_contexts = Vec::with_capacity(d.slot_specs.len());
    for (k, spec) in d.slot_specs.iter().enumerate() {
        let mut raw = context_raw.clone();
        raw.extend(
            flatten(&format!("slot_specs[{k}].features"), &spec.features)
                .map_err(|e| invalid(e.field, e.message))?,
        );
        let prepared = PreparedContext::new(&raw);
        slot_contexts.push((raw, prepared));
    }
    Ok(Featurized {
        context_raw,
        context,
        actions_raw,
        actions,
        slot_contexts,
    })
}

impl Loops {
    /// Loads every loop: its configuration, its last checkpoint, and the rewards logged since.
    pub fn open(store: Arc<dyn Store>, checkpoint_every: u64) -> Result<Self, DecisionError> {
        let seed = u64::from_le_bytes(
            crate::auth::random_bytes()
                .map_err(|e| DecisionError::Store(bespoke_store::Error::Backend(Box::new(e))))?
                [..8]
                .try_into()
                .expect("8 bytes"),
        );
        let loops = Self {
            store,
            loops: RwLock::new(HashMap::new()),
            create: Mutex::new(()),
            limits: LoopLimits::default(),
            checkpoint_every: checkpoint_every.max(1),
            rng: Mutex::new(Rng::seed_from_u64(seed)),
            shared: false,
        };
        let loops = Self {
            shared: loops.store.shared(),
            ..loops
        };
        for record in loops.store.loops()? {
            let config: LoopConfig =
                serde_json::from_value(record.config.clone()).map_err(|source| {
                    bespoke_store::Error::from(bespoke_store::DecisionStoreError::LoopConfig {
                        name: record.name.clone(),
                        source,
                    })
                })?;
            let handle = loops.restore(&record.name, config)?;
            loops.loops.write().insert(record.name, handle);
        }
        Ok(loops)
    }

    /// The same loops under `limits` (which only govern creating loops: loops already in the
    /// store are all loaded, even past `max_loops`).
    pub fn with_limits(mut self, limits: LoopLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A loop's learner from its checkpoint (when it was saved under the same model
    /// parameters) plus the rewards logged after it.
    fn restore(&self, name: &str, config: LoopConfig) -> Result<Arc<LoopHandle>, DecisionError> {
        let mut state = LoopState {
            learner: Learner::new(config.learner.clone()),
            config,
            applied_seq: 0,
            dirty: 0,
            replayed_through: 0,
            own: Default::default(),
        };
        if let Some((seq, bytes)) = self.store.checkpoint(name)?
            && let Some((saved, model)) = payload::read_checkpoint(&bytes)
            && saved.same_model(&state.config.learner)
            && let Some(l) = Learner::from_model(state.config.learner.clone(), model)
        {
            state.learner = l;
            state.applied_seq = seq;
        }
        let replayed = self.replay(name, &mut state)?;
        if replayed > 0 {
            tracing::info!(
                loop_name = name,
                replayed,
                "caught up from the decision log"
            );
        }
        Ok(Arc::new(LoopHandle {
            name: name.to_owned(),
            state: RwLock::new(state),
            inflight: AtomicUsize::new(0),
        }))
    }

    /// Learns every reward of the loop logged after `state.applied_seq`, in log order.
    fn replay(&self, name: &str, state: &mut LoopState) -> Result<u64, DecisionError> {
        let mut n = 0;
        loop {
            let chunk = self
                .store
                .loop_rewards(name, state.applied_seq, REPLAY_CHUNK)?;
            let Some(last) = chunk.last() else { break };
            let last_seq = last.0.seq;
            for (reward, decision) in &chunk {
                let value = state.config.clip_reward(reward.value);
                learn_one(&mut state.learner, decision, reward.slot, value);
                n += 1;
            }
            state.applied_seq = last_seq;
            state.dirty += chunk.len() as u64;
        }
        state.replayed_through = state.applied_seq;
        state.own.clear();
        Ok(n)
    }

    fn handle(&self, name: &str) -> Option<Arc<LoopHandle>> {
        self.loops.read().get(name).cloned()
    }

    /// The loop, created with the default configuration if it does not exist and `how` may
    /// create it; and whether it was created.
    fn handle_or_create(
        &self,
        name: &str,
        how: Creation,
    ) -> Result<(Arc<LoopHandle>, bool), DecisionError> {
        if let Some(h) = self.handle(name) {
            return Ok((h, false));
        }
        let _guard = self.create.lock();
        if let Some(h) = self.handle(name) {
            return Ok((h, false));
        }
        let reserved = name == self.limits.reserved;
        if how == Creation::Implicit && !self.limits.auto_create && !reserved {
            return Err(DecisionError::NoImplicitLoop(name.to_owned()));
        }
        let counted = {
            let loops = self.loops.read();
            loops.len() - usize::from(loops.contains_key(&self.limits.reserved))
        };
        if !reserved && counted >= self.limits.max_loops {
            return Err(DecisionError::TooManyLoops {
                name: name.to_owned(),
                max: self.limits.max_loops,
            });
        }
        let config = LoopConfig::default();
        self.store.put_loop(
            name,
            &serde_json::to_value(&config).expect("config serializes"),
        )?;
        let handle = Arc::new(LoopHandle {
            name: name.to_owned(),
            state: RwLock::new(LoopState {
                learner: Learner::new(config.learner.clone()),
                config,
                applied_seq: 0,
                dirty: 0,
                replayed_through: 0,
                own: Default::default(),
            }),
            inflight: AtomicUsize::new(0),
        });
        self.loops.write().insert(name.to_owned(), handle.clone());
        Ok((handle, true))
    }

    /// Creates loop `name` with the default configuration, as a decision naming it does, if
    /// it does not exist yet and `decisions.auto_create_loops` and `decisions.max_loops` allow;
    /// returns whether it was created (so that the caller can audit the creation).
    pub fn create_implicit(&self, name: &str) -> Result<bool, DecisionError> {
        Ok(self.handle_or_create(name, Creation::Implicit)?.1)
    }

    /// Names of every loop.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.loops.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// A loop's configuration, learner state and log counts.
    pub fn view(&self, name: &str) -> Result<LoopView, DecisionError> {
        let h = self
            .handle(name)
            .ok_or_else(|| DecisionError::UnknownLoop(name.to_owned()))?;
        let (config, model_updates, learned_through) = {
            let s = h.state.read();
            (s.config.clone(), s.learner.model().updates(), s.applied_seq)
        };
        let stats = self.stats(name)?;
        Ok(LoopView {
            name: name.to_owned(),
            config,
            model_updates,
            learned_through,
            stats,
        })
    }

    fn stats(&self, name: &str) -> Result<LoopStats, DecisionError> {
        let log = self.store.loop_stats(name)?;
        Ok(LoopStats {
            decisions: log.decisions,
            rewards: log.rewards,
            default_rewards: log.default_rewards,
            mean_reward: (log.rewards > 0).then(|| log.reward_sum / log.rewards as f64),
            apprentice: ApprenticeStats {
                decisions: log.apprentice_decisions,
                agreements: log.apprentice_agreements,
                agreement_rate: (log.apprentice_decisions > 0)
                    .then(|| log.apprentice_agreements as f64 / log.apprentice_decisions as f64),
            },
        })
    }

    /// Creates or reconfigures a loop. A change of the learning parameters (bits, learning
    /// rate, interactions) rebuilds the learner from the whole log under the new ones; a change
    /// of exploration or of anything else applies to the next decision.
    pub fn configure(&self, name: &str, config: LoopConfig) -> Result<LoopView, DecisionError> {
        config.validate().map_err(|e| invalid(e.field, e.message))?;
        let (handle, _) = self.handle_or_create(name, Creation::Explicit)?;
        {
            let mut s = handle.state.write();
            self.store.put_loop(
                name,
                &serde_json::to_value(&config).expect("config serializes"),
            )?;
            if s.config.learner.same_model(&config.learner) {
                s.learner
                    .set_exploration(config.learner.exploration.clone());
                s.config = config;
            } else {
                s.learner = Learner::new(config.learner.clone());
                s.config = config;
                s.applied_seq = 0;
                self.replay(name, &mut s)?;
                self.save_checkpoint(&handle, &mut s)?;
            }
        }
        self.view(name)
    }

    /// Chooses a ranking for `input` in loop `name` (created with defaults if new), logs it,
    /// and answers once the log entry is committed.
    pub fn decide(
        &self,
        name: &str,
        mut input: DecisionInput,
        stored_user: Option<String>,
        consent: DecisionConsent,
        now: Millis,
    ) -> Result<DecisionOutput, DecisionError> {
        let (handle, _) = self.handle_or_create(name, Creation::Implicit)?;
        let max_actions = handle.state.read().config.max_actions;
        let (stored, eligible, baseline) = payload::validate(&mut input, max_actions)?;
        let stored = StoredDecision {
            personalized: consent.personalization,
            learn: consent.training,
            ..stored
        };
        let f = featurize(&stored)?;
        let id = match input.id {
            Some(id) => id,
            None => issue_id()?,
        };
        let mut rng = Rng::seed_from_u64(self.rng.lock().next_u64());

        let s = handle.state.read();
        let config = s.config.clone();
        let (predicted, uncertainty, top_terms) =
            s.learner
                .score_with_terms(&f.context, &f.actions, config.explanation_terms);
        let slots = input
            .slots
            .unwrap_or(1)
            .min(eligible.iter().filter(|&&e| e).count());
        let greedy = (0..predicted.len())
            .filter(|&i| eligible[i])
            .max_by(|&a, &b| predicted[a].total_cmp(&predicted[b]).then(b.cmp(&a)));
        let (slate_slots, exploration, first_probs, agree) = match config.mode {
            LoopMode::Online => {
                let slate = s.learner.decide_scored(
                    predicted.clone(),
                    uncertainty,
                    &eligible,
                    slots,
                    &mut rng,
                );
                let slots: Vec<StoredSlot> = slate
                    .slots
                    .iter()
                    .map(|c| StoredSlot {
                        action: c.action,
                        probability: c.probability,
                    })
                    .collect();
                (slots, slate.exploration, slate.probabilities, None)
            }
            LoopMode::Apprentice => {
                // Serve the caller's choice (the first eligible action without a baseline),
                // then the rest in the caller's order, all deterministically.
                let first = baseline.or_else(|| eligible.iter().position(|&e| e));
                let mut order: Vec<usize> = first.into_iter().collect();
                order.extend((0..eligible.len()).filter(|&i| eligible[i] && Some(i) != first));
                order.truncate(slots);
                let mut probs = vec![0.0; eligible.len()];
                if let Some(b) = first {
                    probs[b] = 1.0;
                }
                let agree = first.map(|b| greedy == Some(b));
                (
                    order
                        .into_iter()
                        .map(|a| StoredSlot {
                            action: a,
                            probability: 1.0,
                        })
                        .collect(),
                    vec![0.0; eligible.len()],
                    probs,
                    agree,
                )
            }
        };
        // Named slots: each is filled under its own context (the slot's features join it) and
        // its own exclusions, among the actions not placed yet.
        let (mut predicted, mut top_terms) = (predicted, top_terms);
        let mut label_slot: Vec<Option<usize>> = vec![None; f.actions.len()];
        let (slate_slots, exploration, first_probs, agree) = if stored.slot_specs.is_empty() {
            (slate_slots, exploration, first_probs, agree)
        } else {
            let n = f.actions.len();
            let mut taken = vec![false; n];
            let mut out = Vec::new();
            let mut exploration = vec![0.0f32; n];
            let mut first_probs = vec![0.0; n];
            let mut agree_all = true;
            for (k, spec) in stored.slot_specs.iter().enumerate() {
                let (_, ctx) = f.slot_context(k);
                let (pred, unc, tops) =
                    s.learner
                        .score_with_terms(ctx, &f.actions, config.explanation_terms);
                let open: Vec<usize> = (0..n)
                    .filter(|&i| eligible[i] && !taken[i] && !spec.excluded.contains(&i))
                    .collect();
                let Some(&first_open) = open.first() else {
                    break;
                };
                let mut probs = vec![0.0; n];
                let (action, probability, explore) = match config.mode {
                    LoopMode::Online => {
                        let p: Vec<f32> = open.iter().map(|&i| pred[i]).collect();
                        let u: Vec<f32> = if unc.is_empty() {
                            Vec::new()
                        } else {
                            open.iter().map(|&i| unc[i]).collect()
                        };
                        let c = s.learner.config().exploration.choose(
                            &p,
                            &u,
                            s.learner.model().updates(),
                            &mut rng,
                        );
                        for (j, &i) in open.iter().enumerate() {
                            probs[i] = c.probabilities[j];
                        }
                        (
                            open[c.chosen],
                            c.probabilities[c.chosen],
                            c.exploration[c.chosen],
                        )
                    }
                    LoopMode::Apprentice => {
                        let b = spec
                            .baseline
                            .filter(|b| open.contains(b))
                            .unwrap_or(first_open);
                        let greedy_k = open
                            .iter()
                            .copied()
                            .max_by(|&a, &b| pred[a].total_cmp(&pred[b]).then(b.cmp(&a)));
                        agree_all &= greedy_k == Some(b);
                        probs[b] = 1.0;
                        (b, 1.0, 0.0)
                    }
                };
                if k == 0 {
                    first_probs = probs;
                }
                taken[action] = true;
                exploration[action] = explore;
                predicted[action] = pred[action];
                top_terms[action] = tops[action].clone();
                label_slot[action] = Some(k);
                out.push(StoredSlot {
                    action,
                    probability,
                });
            }
            let agree = (config.mode == LoopMode::Apprentice).then_some(agree_all);
            (out, exploration, first_probs, agree)
        };
        let model_updates = s.learner.model().updates();
        // Ranking: the slate, then the other eligible actions by served score, then the excluded.
        let served: Vec<f32> = predicted
            .iter()
            .zip(&exploration)
            .map(|(p, e)| p + e)
            .collect();
        let in_slate: Vec<usize> = slate_slots.iter().map(|s| s.action).collect();
        let mut rest: Vec<usize> = (0..eligible.len())
            .filter(|i| eligible[*i] && !in_slate.contains(i))
            .collect();
        rest.sort_by(|&a, &b| served[b].total_cmp(&served[a]).then(a.cmp(&b)));
        let excluded: Vec<usize> = (0..eligible.len()).filter(|&i| !eligible[i]).collect();
        let mut ranking = Vec::with_capacity(eligible.len());
        for slot in &slate_slots {
            ranking.push(Ranked {
                action: stored.actions[slot.action].id.clone(),
                probability: slot.probability,
                score: served[slot.action],
            });
        }
        for &i in rest.iter().chain(&excluded) {
            ranking.push(Ranked {
                action: stored.actions[i].id.clone(),
                probability: if eligible[i] { first_probs[i] } else { 0.0 },
                score: served[i],
            });
        }
        let explain_n = (slate_slots.len() + 10).min(ranking.len());
        let order: Vec<usize> = in_slate
            .iter()
            .chain(&rest)
            .chain(&excluded)
            .copied()
            .collect();
        let actions_explained = order[..explain_n]
            .iter()
            .map(|&i| {
                let contributions = s.learner.label_terms(
                    label_slot[i].map_or(&f.context_raw[..], |k| f.slot_context(k).0),
                    label_slot[i].map_or(&f.context, |k| f.slot_context(k).1),
                    &stored.actions[i].id,
                    &f.actions_raw[i],
                    &top_terms[i],
                );
                ActionExplanation {
                    action: stored.actions[i].id.clone(),
                    predicted: predicted[i],
                    exploration: exploration[i],
                    reasons: action_reasons(&contributions, exploration[i]),
                    contributions,
                }
            })
            .collect();
        drop(s);

        let record = StoredDecision {
            slots: slate_slots,
            probabilities: first_probs,
            predicted,
            baseline,
            mode: config.mode,
            agree,
            ..stored
        };
        let deadline = now + (config.reward_wait_seconds * 1000.0) as Millis;
        let logged = self.store.insert_decision(NewDecision {
            id: id.clone(),
            loop_name: name.to_owned(),
            user: stored_user,
            created_at: now,
            deadline,
            activated: !input.defer_activation,
            payload: serde_json::to_string(&record).expect("decision serializes"),
        })?;
        if logged.is_none() {
            return Err(DecisionError::DuplicateId(id));
        }
        Ok(DecisionOutput {
            decision_id: id,
            loop_name: name.to_owned(),
            slots: record.slots.len(),
            ranking,
            activated: !input.defer_activation,
            reward_deadline: crate::time::format_rfc3339(deadline),
            explanation: Explanation {
                mode: config.mode,
                policy: if config.mode == LoopMode::Apprentice {
                    "baseline"
                } else {
                    policy_name(&config.learner)
                },
                model_updates,
                personalized: record.personalized,
                learned_choice: match config.mode {
                    LoopMode::Apprentice => greedy.map(|g| record.actions[g].id.clone()),
                    LoopMode::Online => None,
                },
                actions: actions_explained,
            },
        })
    }

    /// The ids of a decision's named slots (Personalizer's multi-slot API), in slot order.
    pub fn slot_ids(&self, id: &str) -> Result<Vec<String>, DecisionError> {
        let d = self
            .store
            .decision(id)?
            .ok_or_else(|| DecisionError::UnknownDecision(id.to_owned()))?;
        Ok(payload::parse(&d)?
            .slot_specs
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    /// Activates a deferred decision: its rewards count from now on.
    pub fn activate(&self, id: &str, now: Millis) -> Result<bool, DecisionError> {
        let d = self
            .store
            .decision(id)?
            .ok_or_else(|| DecisionError::UnknownDecision(id.to_owned()))?;
        if d.activated {
            return Ok(false);
        }
        if d.settled || now > d.deadline {
            return Err(DecisionError::Expired(id.to_owned()));
        }
        Ok(self.store.activate_decision(id)?)
    }

    /// Records the reward of one slot of a decision and learns from it.
    pub fn reward(
        &self,
        id: &str,
        slot: Option<u32>,
        value: f64,
        now: Millis,
    ) -> Result<RewardAck, DecisionError> {
        if !value.is_finite() {
            return Err(invalid("value", "must be a finite number"));
        }
        let d = self
            .store
            .decision(id)?
            .ok_or_else(|| DecisionError::UnknownDecision(id.to_owned()))?;
        let stored: StoredDecision = payload::parse(&d)?;
        let slot = slot.unwrap_or(0);
        let Some(chosen) = stored.slots.get(slot as usize) else {
            return Err(invalid(
                "slot",
                format!(
                    "decision {id:?} has {} slot(s); slots are numbered from 0",
                    stored.slots.len()
                ),
            ));
        };
        if !d.activated {
            return Err(DecisionError::NotActivated(id.to_owned()));
        }
        if now > d.deadline {
            return Err(DecisionError::Expired(id.to_owned()));
        }
        match d.rewards.iter().find(|r| r.slot == slot) {
            // The window closed and the slot got the loop's default.
            Some(r) if r.is_default => return Err(DecisionError::Expired(id.to_owned())),
            Some(_) => {
                return Err(DecisionError::AlreadyRewarded {
                    id: id.to_owned(),
                    slot,
                });
            }
            None if d.settled => return Err(DecisionError::Expired(id.to_owned())),
            None => {}
        }
        let handle = self
            .handle(&d.loop_name)
            .ok_or_else(|| DecisionError::UnknownLoop(d.loop_name.clone()))?;
        handle
            .state
            .read()
            .config
            .check_reward(value)
            .map_err(|e| invalid("value", e.to_string()))?;
        handle.inflight.fetch_add(1, Ordering::SeqCst);
        let outcome = self.store.insert_reward(NewReward {
            decision_id: id.to_owned(),
            slot,
            value,
            at: now,
            is_default: false,
        });
        let learned = match outcome {
            Ok(RewardOutcome::Recorded(seq)) => {
                self.learn(&handle, &d, slot, value, seq);
                // Every slot rewarded: the window can close now, and the decision counts in
                // evaluations at once instead of at its deadline.
                if d.rewards.len() + 1 >= stored.slots.len()
                    && let Err(e) = self.store.insert_rewards(Vec::new(), vec![id.to_owned()])
                {
                    tracing::warn!(error = %e, "closing a fully rewarded decision failed");
                }
                stored.learn
            }
            other => {
                handle.inflight.fetch_sub(1, Ordering::SeqCst);
                return match other? {
                    // The settler closed the window since `d` was read: its default reward
                    // makes this an expired decision, not a second reward.
                    RewardOutcome::Duplicate { default: true } => {
                        Err(DecisionError::Expired(id.to_owned()))
                    }
                    RewardOutcome::Duplicate { default: false } => {
                        Err(DecisionError::AlreadyRewarded {
                            id: id.to_owned(),
                            slot,
                        })
                    }
                    _ => Err(DecisionError::UnknownDecision(id.to_owned())),
                };
            }
        };
        Ok(RewardAck {
            decision_id: id.to_owned(),
            slot,
            action: stored.actions[chosen.action].id.clone(),
            value,
            learned,
        })
    }

    /// Learns one logged reward (and releases its in-flight mark); checkpoints when due.
    fn learn(&self, handle: &LoopHandle, d: &DecisionRecord, slot: u32, value: f64, seq: u64) {
        let mut s = handle.state.write();
        // A rebuild (reconfiguration, erasure) that ran after this reward was committed has
        // learned it already; on a shared store, so has the follower once its cursor passed it.
        if seq > s.replayed_through && !(self.shared && seq <= s.applied_seq) {
            let value = s.config.clip_reward(value);
            learn_one(&mut s.learner, d, slot, value);
            if self.shared {
                s.own.insert(seq);
            } else {
                s.applied_seq = s.applied_seq.max(seq);
            }
            s.dirty += 1;
        }
        handle.inflight.fetch_sub(1, Ordering::SeqCst);
        if s.dirty >= self.checkpoint_every
            && let Err(e) = self.save_checkpoint(handle, &mut s)
        {
            tracing::warn!(loop_name = handle.name, error = %e, "checkpoint failed");
        }
    }

    /// Saves the learner if nothing is in flight (see [`LoopHandle::inflight`]).
    fn save_checkpoint(
        &self,
        handle: &LoopHandle,
        s: &mut LoopState,
    ) -> Result<bool, DecisionError> {
        // Rewards learned but not covered by `applied_seq` would be learned again after a
        // restore from this checkpoint.
        if handle.inflight.load(Ordering::SeqCst) != 0 || !s.own.is_empty() {
            return Ok(false);
        }
        let bytes = payload::write_checkpoint(&s.config.learner, s.learner.model());
        self.store
            .save_checkpoint(&handle.name, s.applied_seq, bytes)?;
        s.dirty = 0;
        Ok(true)
    }

    /// Checkpoints every loop that learned since its last checkpoint.
    pub fn checkpoint_all(&self) -> Result<usize, DecisionError> {
        let handles: Vec<Arc<LoopHandle>> = self.loops.read().values().cloned().collect();
        let mut n = 0;
        for h in handles {
            let mut s = h.state.write();
            if s.dirty > 0 && self.save_checkpoint(&h, &mut s)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Closes the reward windows that ended before `now`: each activated decision gets its
    /// loop's default reward for every slot without one, and is learned from. Returns the
    /// number of decisions settled.
    pub fn settle_expired(&self, now: Millis) -> Result<usize, DecisionError> {
        let mut total = 0;
        loop {
            let open = self.store.open_decisions(Some(now), SETTLE_CHUNK)?;
            if open.is_empty() {
                break;
            }
            let mut rewards = Vec::new();
            let mut owners = Vec::new();
            for d in &open {
                let Some(handle) = self.handle(&d.loop_name) else {
                    continue;
                };
                if !d.activated {
                    continue;
                }
                let Ok(stored) = payload::parse(d) else {
                    continue;
                };
                let default = handle.state.read().config.default_reward;
                for slot in 0..stored.slots.len() as u32 {
                    if !d.rewards.iter().any(|r| r.slot == slot) {
                        handle.inflight.fetch_add(1, Ordering::SeqCst);
                        rewards.push(NewReward {
                            decision_id: d.id.clone(),
                            slot,
                            value: default,
                            at: now,
                            is_default: true,
                        });
                        owners.push((handle.clone(), d, slot, default));
                    }
                }
            }
            let ids: Vec<String> = open.iter().map(|d| d.id.clone()).collect();
            let n = open.len();
            match self.store.insert_rewards(rewards, ids) {
                Ok(outcomes) => {
                    for ((handle, d, slot, value), outcome) in owners.into_iter().zip(outcomes) {
                        match outcome {
                            RewardOutcome::Recorded(seq) => {
                                self.learn(&handle, d, slot, value, seq)
                            }
                            _ => {
                                handle.inflight.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
                Err(e) => {
                    for (handle, ..) in owners {
                        handle.inflight.fetch_sub(1, Ordering::SeqCst);
                    }
                    return Err(e.into());
                }
            }
            total += n;
            if n < SETTLE_CHUNK {
                break;
            }
        }
        Ok(total)
    }

    /// Deletes every decision of the stored user key `user` and rebuilds the learners that
    /// learned from them, replaying their logs without the user. Returns the decisions removed
    /// and the loops rebuilt.
    pub fn erase_user(&self, user: &str) -> Result<(u64, Vec<String>), DecisionError> {
        let (loops, n) = self.store.delete_user_decisions(user)?;
        for name in &loops {
            if let Some(h) = self.handle(name) {
                let mut s = h.state.write();
                s.learner = Learner::new(s.config.learner.clone());
                s.applied_seq = 0;
                self.replay(name, &mut s)?;
                self.store.delete_checkpoint(name)?;
                self.save_checkpoint(&h, &mut s)?;
            }
        }
        Ok((n, loops))
    }

    /// On a shared store: learns the rewards other nodes logged since each loop's cursor,
    /// loads loops other nodes created, and follows their reconfigurations. Returns the
    /// rewards learned. A no-op on a store nobody else writes.
    pub fn follow(&self) -> Result<u64, DecisionError> {
        if !self.shared {
            return Ok(0);
        }
        self.follow_configs()?;
        let handles: Vec<Arc<LoopHandle>> = self.loops.read().values().cloned().collect();
        let mut learned = 0u64;
        for h in handles {
            loop {
                let cursor = h.state.read().applied_seq;
                let chunk = self.store.loop_rewards(&h.name, cursor, REPLAY_CHUNK)?;
                let Some(last) = chunk.last().map(|(r, _)| r.seq) else {
                    break;
                };
                let mut s = h.state.write();
                // A rebuild meanwhile moved the cursor: read again from there.
                if s.applied_seq != cursor {
                    continue;
                }
                for (reward, decision) in &chunk {
                    if s.own.remove(&reward.seq) {
                        continue;
                    }
                    let value = s.config.clip_reward(reward.value);
                    learn_one(&mut s.learner, decision, reward.slot, value);
                    s.dirty += 1;
                    learned += 1;
                }
                s.applied_seq = last;
                s.own.retain(|&seq| seq > last);
                if chunk.len() < REPLAY_CHUNK {
                    break;
                }
            }
        }
        Ok(learned)
    }

    /// Loads loops created elsewhere and applies configurations changed elsewhere (a change
    /// of the learning parameters rebuilds the learner from the log, as [`Loops::configure`]).
    fn follow_configs(&self) -> Result<(), DecisionError> {
        for record in self.store.loops()? {
            let Ok(config) = serde_json::from_value::<LoopConfig>(record.config.clone()) else {
                continue;
            };
            match self.handle(&record.name) {
                None => {
                    let _guard = self.create.lock();
                    if self.handle(&record.name).is_none() {
                        let handle = self.restore(&record.name, config)?;
                        self.loops.write().insert(record.name, handle);
                    }
                }
                Some(h) => {
                    let mut s = h.state.write();
                    if serde_json::to_value(&s.config).ok().as_ref() == Some(&record.config) {
                        continue;
                    }
                    if s.config.learner.same_model(&config.learner) {
                        s.learner
                            .set_exploration(config.learner.exploration.clone());
                        s.config = config;
                    } else {
                        s.learner = Learner::new(config.learner.clone());
                        s.config = config;
                        s.applied_seq = 0;
                        self.replay(&record.name, &mut s)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Rebuilds a loop's learner from its log (after another node erased a user's decisions
    /// from it).
    pub fn rebuild(&self, name: &str) -> Result<(), DecisionError> {
        if let Some(h) = self.handle(name) {
            let mut s = h.state.write();
            s.learner = Learner::new(s.config.learner.clone());
            s.applied_seq = 0;
            self.replay(name, &mut s)?;
        }
        Ok(())
    }

    /// The learner's saved bytes (for tests and exports of the model).
    pub fn model_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.handle(name)
            .map(|h| h.state.read().learner.model().to_bytes())
    }

    /// Off-policy evaluation of a loop's last `limit` settled decisions: the online policy,
    /// the baseline, uniform random and candidate configurations around the current one.
    pub fn evaluate(
        &self,
        name: &str,
        limit: usize,
        extra: Vec<(String, LearnerConfig)>,
    ) -> Result<ope::Report, DecisionError> {
        let h = self
            .handle(name)
            .ok_or_else(|| DecisionError::UnknownLoop(name.to_owned()))?;
        let current = h.state.read().config.learner.clone();
        let log = self.store.decision_log(name, limit)?;
        let logged = logged_decisions(&log);
        let mut candidates = ope::candidates(&current);
        for (n, c) in extra {
            c.validate()
                .map_err(|e| invalid(format!("candidates.{n}.{}", e.field), e.message))?;
            candidates.push((n, c));
        }
        Ok(ope::report(&logged, &current, &candidates, 0x5eed))
    }
}

/// Learns one reward of a logged decision (skipped if the user had withdrawn training consent
/// or the log entry cannot be read).
fn learn_one(learner: &mut Learner, d: &DecisionRecord, slot: u32, value: f64) {
    let Ok(stored) = payload::parse(d) else {
        tracing::warn!(decision = d.seq, "unreadable decision in the log; skipped");
        return;
    };
    if !stored.learn {
        return;
    }
    let Some(chosen) = stored.slots.get(slot as usize) else {
        return;
    };
    let Ok(f) = featurize(&stored) else { return };
    let x = learner.vector(f.slot_context(slot as usize).1, &f.actions[chosen.action]);
    learner.learn(&x, value as f32);
}

/// Each slot of each logged decision as one evaluation sample: the actions still open at that
/// slot, the one chosen, its probability and its reward.
pub fn logged_decisions(log: &[DecisionRecord]) -> Vec<Logged> {
    let mut out = Vec::new();
    for d in log {
        let Ok(stored) = payload::parse(d) else {
            continue;
        };
        if !stored.learn || stored.mode == LoopMode::Apprentice && stored.baseline.is_none() {
            continue;
        }
        let Ok(f) = featurize(&stored) else { continue };
        let mut open: Vec<usize> = (0..stored.actions.len())
            .filter(|i| !stored.excluded.contains(i))
            .collect();
        for (k, slot) in stored.slots.iter().enumerate() {
            let Some(reward) = d.rewards.iter().find(|r| r.slot == k as u32) else {
                break;
            };
            let Some(chosen) = open.iter().position(|&i| i == slot.action) else {
                break;
            };
            // A named slot has exclusions of its own: its choice was among the rest.
            let spec = stored.slot_specs.get(k);
            let here: Vec<usize> = open
                .iter()
                .copied()
                .filter(|i| spec.is_none_or(|s| !s.excluded.contains(i)))
                .collect();
            let Some(chosen_here) = here.iter().position(|&i| i == slot.action) else {
                break;
            };
            let baseline = match spec {
                Some(s) => s.baseline,
                None if k == 0 => stored.baseline,
                None => None,
            };
            out.push(Logged {
                context: f.slot_context(k).0.to_vec(),
                actions: here
                    .iter()
                    .map(|&i| (stored.actions[i].id.clone(), f.actions_raw[i].clone()))
                    .collect(),
                chosen: chosen_here,
                probability: slot.probability,
                reward: reward.value,
                baseline: baseline.and_then(|b| here.iter().position(|&i| i == b)),
            });
            open.remove(chosen);
        }
    }
    out
}

/// Re-exported for the CLI's `bespoke ope`.
pub use bespoke_algo::bandit::ope::Report as EvaluationReport;

/// The learner model type, for callers that inspect checkpoints.
pub type Model = LinearModel;

#[cfg(test)]
mod id_tests {
    #[test]
    fn issued_ids_are_version_4_uuids() {
        for _ in 0..100 {
            let id = super::issue_id().unwrap();
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(parts[2].starts_with('4'), "{id}");
            assert!("89ab".contains(&parts[3][..1]), "{id}");
        }
    }
}
