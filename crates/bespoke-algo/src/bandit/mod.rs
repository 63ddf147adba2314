//! Contextual bandits: choose among actions under a context, learn from the reward that
//! follows, and estimate offline what another policy would have earned.
//!
//! - [`features`]: namespaced features, hashed with their interactions into one sparse vector.
//! - [`LinearModel`]: online regression of the reward on that vector.
//! - [`Exploration`]: from predicted rewards to probabilities (ε-greedy, softmax, SquareCB,
//!   Thompson sampling) and the action drawn.
//! - [`Learner`]: the three together, choosing ranked slates and explaining each score.
//! - [`ope`]: IPS, SNIPS and doubly robust estimates with confidence intervals, and the replay
//!   of candidate configurations on logged decisions.

pub mod features;
mod learner;
pub mod ope;
mod policy;

use serde::{Deserialize, Serialize};

pub use features::{Featurizer, PreparedAction, PreparedContext, RawFeature};
pub use learner::LinearModel;
pub use policy::{Choice, Exploration, sample};

/// A configuration value out of its range: which field, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidParam {
    /// Path of the field, e.g. `exploration.epsilon`.
    pub field: String,
    /// What it must be.
    pub message: String,
}

impl InvalidParam {
    /// `field` is wrong: it `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, its field nested under `parent`.
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            ..self
        }
    }
}

use crate::Rng;

/// How a loop learns and explores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(default))]
#[serde(default, deny_unknown_fields)]
pub struct LearnerConfig {
    /// The weight vector has `2^bits` entries (8 to 24).
    #[cfg_attr(feature = "openapi", schema(minimum = 8, maximum = 24))]
    pub bits: u8,
    /// AdaGrad learning rate (0 to 10].
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 10))]
    pub learning_rate: f32,
    /// Interaction terms: pairs of `"context"`, `"action"` or a namespace name.
    #[cfg_attr(feature = "openapi", schema(schema_with = interactions_schema))]
    pub interactions: Vec<[String; 2]>,
    /// Exploration policy.
    pub exploration: Exploration,
}

/// `interactions`' schema: the derive would not say that each entry is a pair.
#[cfg(feature = "openapi")]
fn interactions_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    // At most 128 bytes, which JSON Schema's maxLength (characters) cannot say.
    let side = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1));
    let pair = ArrayBuilder::new()
        .items(side)
        .min_items(Some(2))
        .max_items(Some(2));
    ArrayBuilder::new()
        .items(pair)
        .max_items(Some(16))
        .description(Some(
            "Interaction terms, at most 16: pairs of \"context\", \"action\" or a namespace name \
             (1 to 128 bytes)",
        ))
        .default(Some(serde_json::json!([["context", "action"]])))
        .build()
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            bits: 18,
            learning_rate: 1.0,
            interactions: vec![["context".into(), "action".into()]],
            exploration: Exploration::default(),
        }
    }
}

impl LearnerConfig {
    /// Checks every parameter; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if !(8..=24).contains(&self.bits) {
            return Err(InvalidParam::new("bits", "must be between 8 and 24"));
        }
        if !(self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && self.learning_rate <= 10.0)
        {
            return Err(InvalidParam::new("learning_rate", "must be > 0 and <= 10"));
        }
        if self.interactions.len() > 16 {
            return Err(InvalidParam::new("interactions", "at most 16 pairs"));
        }
        for (i, pair) in self.interactions.iter().enumerate() {
            if pair.iter().any(|s| s.is_empty() || s.len() > 128) {
                return Err(InvalidParam::new(
                    format!("interactions[{i}]"),
                    "each side is \"context\", \"action\" or a namespace of 1 to 128 bytes",
                ));
            }
        }
        self.exploration
            .validate()
            .map_err(|e| e.within("exploration"))
    }

    /// Whether `other` learns the same model from the same data (only the exploration
    /// differs), so a model trained under one serves the other.
    pub fn same_model(&self, other: &LearnerConfig) -> bool {
        self.bits == other.bits
            && self.learning_rate == other.learning_rate
            && self.interactions == other.interactions
    }
}

/// A feature's share of an action's score.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = FeatureContribution))]
pub struct Contribution {
    /// `namespace:name`, or `a × b` for an interaction; `(other terms)` for the remainder.
    pub feature: String,
    /// Weight times value.
    pub contribution: f32,
}

/// The largest terms of one action's score, by magnitude, largest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopTerms {
    /// `(left, right, contribution)` of each kept term.
    terms: Vec<(u32, Option<u32>, f32)>,
    /// The whole prediction.
    total: f32,
}

impl TopTerms {
    /// Keeps `term` if it is among the `k` largest so far.
    #[inline]
    fn offer(&mut self, k: usize, term: (u32, Option<u32>, f32)) {
        let m = term.2.abs();
        if self.terms.len() == k && self.terms[k - 1].2.abs() >= m {
            return;
        }
        let at = self.terms.partition_point(|t| t.2.abs() >= m);
        if self.terms.len() == k {
            self.terms.pop();
        }
        self.terms.insert(at, term);
    }
}

/// One slot of a chosen slate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotChoice {
    /// Index of the action among the decision's actions.
    pub action: usize,
    /// Probability with which it was chosen for this slot, given the earlier slots.
    pub probability: f64,
}

/// A chosen slate and what it was chosen from.
#[derive(Clone, Debug, PartialEq)]
pub struct Slate {
    /// The chosen action of each slot, in slot order.
    pub slots: Vec<SlotChoice>,
    /// Each action's predicted reward.
    pub predicted: Vec<f32>,
    /// Each action's exploration term (served score = predicted + exploration).
    pub exploration: Vec<f32>,
    /// Each action's probability of being chosen for the first slot (0 if not eligible).
    pub probabilities: Vec<f64>,
}

/// A featurizer, a model and an exploration policy.
#[derive(Clone, Debug)]
pub struct Learner {
    config: LearnerConfig,
    featurizer: Featurizer,
    model: LinearModel,
}

impl Learner {
    /// A learner that knows nothing yet.
    pub fn new(config: LearnerConfig) -> Self {
        let model = LinearModel::new(config.bits, config.learning_rate);
        Self::with_model(config, model)
    }

    /// A learner around a saved model; `None` if the model does not fit the configuration.
    pub fn from_model(config: LearnerConfig, model: LinearModel) -> Option<Self> {
        (model.bits() == config.bits).then(|| Self::with_model(config, model))
    }

    /// Like [`Learner::new`] with features of the namespaces in `ignore` left out.
    pub fn ignoring(config: LearnerConfig, ignore: Vec<String>) -> Self {
        let mut l = Self::new(config);
        l.featurizer = Featurizer::new(l.config.bits, &l.config.interactions, ignore);
        l
    }

    fn with_model(config: LearnerConfig, model: LinearModel) -> Self {
        Self {
            featurizer: Featurizer::new(config.bits, &config.interactions, Vec::new()),
            config,
            model,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LearnerConfig {
        &self.config
    }

    /// Replaces the exploration policy (the model is unaffected).
    pub fn set_exploration(&mut self, exploration: Exploration) {
        self.config.exploration = exploration;
    }

    /// The model.
    pub fn model(&self) -> &LinearModel {
        &self.model
    }

    /// The sparse vector of `(context, action)`, as learned from.
    pub fn vector(&self, context: &PreparedContext, action: &PreparedAction) -> Vec<(u32, f32)> {
        self.featurizer.vector(context, action)
    }

    /// Predicted reward of each action, and its variance factor when the policy needs it.
    pub fn score(
        &self,
        context: &PreparedContext,
        actions: &[PreparedAction],
    ) -> (Vec<f32>, Vec<f32>) {
        let unc = self.config.exploration.needs_uncertainty();
        let mut scratch = Vec::new();
        let mut predicted = Vec::with_capacity(actions.len());
        let mut uncertainty = Vec::with_capacity(if unc { actions.len() } else { 0 });
        for a in actions {
            self.featurizer.vector_into(context, a, &mut scratch);
            predicted.push(self.model.predict(&scratch));
            if unc {
                uncertainty.push(self.model.uncertainty(&scratch));
            }
        }
        (predicted, uncertainty)
    }

    /// Chooses a slate of up to `slots` distinct actions among the `eligible` ones: each slot
    /// is a draw from the policy over the actions not yet placed.
    pub fn decide(
        &self,
        context: &PreparedContext,
        actions: &[PreparedAction],
        eligible: &[bool],
        slots: usize,
        rng: &mut Rng,
    ) -> Slate {
        let (predicted, uncertainty) = self.score(context, actions);
        self.decide_scored(predicted, uncertainty, eligible, slots, rng)
    }

    /// [`Learner::decide`] from scores already computed.
    pub fn decide_scored(
        &self,
        predicted: Vec<f32>,
        uncertainty: Vec<f32>,
        eligible: &[bool],
        slots: usize,
        rng: &mut Rng,
    ) -> Slate {
        let n = predicted.len();
        let mut open: Vec<usize> = (0..n).filter(|&i| eligible[i]).collect();
        let mut exploration = vec![0.0; n];
        let mut probabilities = vec![0.0; n];
        let mut chosen = Vec::new();
        for slot in 0..slots {
            if open.is_empty() {
                break;
            }
            let p: Vec<f32> = open.iter().map(|&i| predicted[i]).collect();
            let u: Vec<f32> = if uncertainty.is_empty() {
                Vec::new()
            } else {
                open.iter().map(|&i| uncertainty[i]).collect()
            };
            let c = self
                .config
                .exploration
                .choose(&p, &u, self.model.updates(), rng);
            for (k, &i) in open.iter().enumerate() {
                if slot == 0 {
                    probabilities[i] = c.probabilities[k];
                    exploration[i] = c.exploration[k];
                }
            }
            let action = open[c.chosen];
            exploration[action] = c.exploration[c.chosen];
            chosen.push(SlotChoice {
                action,
                probability: c.probabilities[c.chosen],
            });
            open.remove(c.chosen);
        }
        Slate {
            slots: chosen,
            predicted,
            exploration,
            probabilities,
        }
    }

    /// The probability the policy gives each action (Thompson sampling estimates it with
    /// `rng`), without choosing.
    pub fn distribution(&self, predicted: &[f32], uncertainty: &[f32], rng: &mut Rng) -> Vec<f64> {
        match self.config.exploration {
            Exploration::Thompson { .. } => {
                self.config
                    .exploration
                    .choose(predicted, uncertainty, self.model.updates(), rng)
                    .probabilities
            }
            ref e => e.probabilities(predicted, self.model.updates()),
        }
    }

    /// Learns that the action with vector `x` earned `reward`.
    pub fn learn(&mut self, x: &[(u32, f32)], reward: f32) {
        self.model.learn(x, reward, 1.0);
    }

    /// Scores every action in one pass over its terms, keeping the `top` largest contributions
    /// of each (by magnitude) for its explanation: what [`Learner::score`] and
    /// [`Learner::explain`] give, at the cost of one.
    pub fn score_with_terms(
        &self,
        context: &PreparedContext,
        actions: &[PreparedAction],
        top: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<TopTerms>) {
        let unc = self.config.exploration.needs_uncertainty();
        let mut predicted = Vec::with_capacity(actions.len());
        let mut uncertainty = Vec::with_capacity(if unc { actions.len() } else { 0 });
        let mut tops = Vec::with_capacity(actions.len());
        for a in actions {
            let mut pred = 0.0f32;
            let mut u = 0.0f32;
            let mut t = TopTerms {
                terms: Vec::with_capacity(top),
                total: 0.0,
            };
            self.featurizer.for_each_term(context, a, |term| {
                let w = self.model.weight(term.index);
                let c = w * term.value;
                pred += c;
                if unc {
                    u += self.model.uncertainty(&[(term.index, term.value)]);
                }
                if top > 0 && c != 0.0 {
                    t.offer(top, (term.left, term.right, c));
                }
            });
            t.total = pred;
            predicted.push(pred);
            if unc {
                uncertainty.push(u);
            }
            tops.push(t);
        }
        (predicted, uncertainty, tops)
    }

    /// Names the terms kept by [`Learner::score_with_terms`] for one action, with the rest of
    /// its prediction as `(other terms)`.
    pub fn label_terms(
        &self,
        context_raw: &[RawFeature],
        context: &PreparedContext,
        action_id: &str,
        action_raw: &[RawFeature],
        terms: &TopTerms,
    ) -> Vec<Contribution> {
        let nc = context.features().len();
        let label = |pos: u32| -> String {
            let pos = pos as usize;
            if pos == 0 {
                "_bias".to_owned()
            } else if pos < nc {
                context_raw[pos - 1].label()
            } else if pos == nc {
                format!("{}:{}", features::ACTION_ID_NAMESPACE, action_id)
            } else {
                action_raw[pos - nc - 1].label()
            }
        };
        let mut out: Vec<Contribution> = terms
            .terms
            .iter()
            .map(|&(l, r, c)| Contribution {
                feature: match r {
                    Some(r) => format!("{} × {}", label(l), label(r)),
                    None => label(l),
                },
                contribution: c,
            })
            .collect();
        let kept: f32 = terms.terms.iter().map(|t| t.2).sum();
        let rest = terms.total - kept;
        if rest != 0.0 {
            out.push(Contribution {
                feature: "(other terms)".into(),
                contribution: rest,
            });
        }
        out
    }

    /// Splits an action's predicted reward into feature contributions: the `top` largest by
    /// magnitude, and the rest summed as `(other terms)`. They sum to the prediction (up to
    /// float rounding).
    pub fn explain(
        &self,
        context_raw: &[RawFeature],
        context: &PreparedContext,
        action_id: &str,
        action_raw: &[RawFeature],
        action: &PreparedAction,
        top: usize,
    ) -> Vec<Contribution> {
        let (_, _, terms) = self.score_with_terms(context, std::slice::from_ref(action), top);
        self.label_terms(context_raw, context, action_id, action_raw, &terms[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use proptest::prelude::*;

    fn raw(ns: &str, name: &str, v: f32) -> RawFeature {
        RawFeature::new(ns, name, v)
    }

    /// A context with one categorical; action `i` pays off only in its own context.
    fn learn_xor(exploration: Exploration) -> f64 {
        let config = LearnerConfig {
            exploration,
            ..LearnerConfig::default()
        };
        let mut l = Learner::new(config);
        let mut rng = Rng::seed_from_u64(11);
        let ids = ["a", "b", "c"];
        let actions: Vec<PreparedAction> =
            ids.iter().map(|i| PreparedAction::new(i, &[])).collect();
        let mut reward = 0.0f64;
        let rounds = 4000;
        for t in 0..rounds {
            let u = rng.below(3) as usize;
            let ctx = PreparedContext::new(&[raw("user", &format!("segment={u}"), 1.0)]);
            let slate = l.decide(&ctx, &actions, &[true; 3], 1, &mut rng);
            let a = slate.slots[0].action;
            let r: f32 = if a == u { 1.0 } else { 0.0 };
            if t >= rounds / 2 {
                reward += r as f64;
            }
            let x = l.vector(&ctx, &actions[a]);
            l.learn(&x, r);
        }
        reward / (rounds / 2) as f64
    }

    #[test]
    fn every_policy_learns_context_dependent_choices() {
        for e in [
            Exploration::EpsilonGreedy { epsilon: 0.1 },
            Exploration::Softmax { lambda: 20.0 },
            Exploration::default(),
            Exploration::Thompson {
                scale: 0.3,
                draws: 32,
            },
        ] {
            let r = learn_xor(e.clone());
            // Optimal is 1; uniform is 1/3. Each policy pays only for its exploration.
            assert!(r > 0.85, "{e:?}: {r}");
        }
    }

    #[test]
    fn slate_has_distinct_eligible_actions() {
        let l = Learner::new(LearnerConfig::default());
        let actions: Vec<PreparedAction> = (0..60)
            .map(|i| PreparedAction::new(&i.to_string(), &[]))
            .collect();
        let ctx = PreparedContext::new(&[]);
        let mut eligible = vec![true; 60];
        eligible[3] = false;
        let s = l.decide(&ctx, &actions, &eligible, 10, &mut Rng::seed_from_u64(1));
        assert_eq!(s.slots.len(), 10);
        let mut seen: Vec<usize> = s.slots.iter().map(|c| c.action).collect();
        assert!(!seen.contains(&3));
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 10);
        assert_eq!(s.probabilities[3], 0.0);
    }

    proptest! {
        /// An explanation's contributions plus the exploration term sum to the served score.
        #[test]
        fn contributions_sum_to_the_served_score(
            ctx in prop::collection::vec((0u8..4, 0u8..6, -2.0f32..2.0), 0..12),
            act in prop::collection::vec((0u8..3, 0u8..6, -2.0f32..2.0), 0..8),
            rewards in prop::collection::vec(0.0f32..1.0, 1..20),
            top in 0usize..6,
            thompson in any::<bool>(),
        ) {
            let mut config = LearnerConfig { bits: 12, ..LearnerConfig::default() };
            if thompson {
                config.exploration = Exploration::Thompson { scale: 0.5, draws: 16 };
            }
            let mut l = Learner::new(config);
            let craw: Vec<RawFeature> = ctx.iter().map(|&(n, f, v)| raw(&format!("c{n}"), &format!("f{f}"), v)).collect();
            let araw: Vec<RawFeature> = act.iter().map(|&(n, f, v)| raw(&format!("a{n}"), &format!("g{f}"), v)).collect();
            let c = PreparedContext::new(&craw);
            let a = PreparedAction::new("x", &araw);
            let b = PreparedAction::new("y", &[]);
            for r in &rewards {
                let v = l.vector(&c, &a);
                l.learn(&v, *r);
            }
            let slate = l.decide(&c, &[a.clone(), b], &[true, true], 1, &mut Rng::seed_from_u64(5));
            let served = slate.predicted[0] + slate.exploration[0];
            let parts = l.explain(&craw, &c, "x", &araw, &a, top);
            let sum: f32 = parts.iter().map(|p| p.contribution).sum::<f32>() + slate.exploration[0];
            prop_assert!((sum - served).abs() <= 1e-4 * (1.0 + served.abs()), "{sum} vs {served}");
            // The one-pass form agrees: same prediction, same largest terms, same sum.
            let (pred, _, tops) = l.score_with_terms(&c, std::slice::from_ref(&a), top);
            prop_assert!((pred[0] - slate.predicted[0]).abs() <= 1e-4 * (1.0 + pred[0].abs()));
            let fast = l.label_terms(&craw, &c, "x", &araw, &tops[0]);
            let fast_sum: f32 = fast.iter().map(|p| p.contribution).sum();
            prop_assert!((fast_sum - pred[0]).abs() <= 1e-4 * (1.0 + pred[0].abs()), "{fast_sum} vs {}", pred[0]);
            let named = |v: &[Contribution]| v.iter().filter(|p| p.feature != "(other terms)").map(|p| p.contribution.abs()).collect::<Vec<f32>>();
            prop_assert_eq!(named(&fast), named(&parts));
        }
    }
}
