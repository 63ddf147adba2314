//! What a decision's log entry holds, how a request becomes one, and the checkpoint format.

use bespoke_algo::bandit::{LearnerConfig, LinearModel};
use bespoke_store::DecisionRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DecisionError, DecisionInput, LoopMode, invalid};

/// Longest action or decision id, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 256;

/// An action as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAction {
    /// Action id.
    pub id: String,
    /// Features as sent.
    #[serde(default)]
    pub features: Value,
}

/// One slot of the slate as logged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoredSlot {
    /// Index into `actions`.
    pub action: usize,
    /// Probability with which it was chosen for this slot.
    pub probability: f64,
}

/// A slot of a multi-slot decision with its own features and exclusions (Personalizer's
/// multi-slot API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSlotSpec {
    /// Slot id.
    pub id: String,
    /// Slot features as sent (they join the context when this slot is filled).
    #[serde(default)]
    pub features: Value,
    /// Indexes of actions this slot may not take.
    #[serde(default)]
    pub excluded: Vec<usize>,
    /// Index of the slot's baseline action.
    #[serde(default)]
    pub baseline: Option<usize>,
}

/// A decision's log entry: enough to learn from its rewards again and to evaluate any other
/// policy on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDecision {
    /// Context as sent.
    pub context: Value,
    /// Actions as sent.
    pub actions: Vec<StoredAction>,
    /// Indexes of excluded actions.
    #[serde(default)]
    pub excluded: Vec<usize>,
    /// The chosen slate.
    #[serde(default)]
    pub slots: Vec<StoredSlot>,
    /// Each action's probability for the first slot.
    #[serde(default)]
    pub probabilities: Vec<f64>,
    /// Each action's predicted reward.
    #[serde(default)]
    pub predicted: Vec<f32>,
    /// Index of the caller's baseline action.
    #[serde(default)]
    pub baseline: Option<usize>,
    /// Mode of the loop when the decision was made.
    #[serde(default)]
    pub mode: LoopMode,
    /// Apprentice mode: whether the learned policy agreed with the baseline.
    #[serde(default)]
    pub agree: Option<bool>,
    /// Whether the context was used (the user's personalization consent).
    pub personalized: bool,
    /// Whether rewards may be learned from (the user's training consent).
    pub learn: bool,
    /// Named slots with features and exclusions of their own (empty: plain slots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slot_specs: Vec<StoredSlotSpec>,
}

/// Reads a decision's log entry.
pub(crate) fn parse(d: &DecisionRecord) -> Result<StoredDecision, DecisionError> {
    serde_json::from_str(&d.payload).map_err(|source| {
        DecisionError::Store(
            bespoke_store::DecisionStoreError::Payload { seq: d.seq, source }.into(),
        )
    })
}

fn check_id(field: &str, id: &str) -> Result<(), DecisionError> {
    crate::validate::check_key(field, id, MAX_ID_BYTES).map_err(|k| invalid(field, k.to_string()))
}

/// Checks a request and turns it into a log entry (without the choice yet), the eligibility
/// of each action and the baseline's index.
pub(crate) fn validate(
    input: &mut DecisionInput,
    max_actions: usize,
) -> Result<(StoredDecision, Vec<bool>, Option<usize>), DecisionError> {
    if let Some(id) = &input.id {
        check_id("decision_id", id)?;
    }
    if input.actions.is_empty() {
        return Err(invalid("actions", "at least one action is needed"));
    }
    if input.actions.len() > max_actions {
        return Err(invalid(
            "actions",
            format!(
                "{} actions; this loop accepts at most {max_actions} (max_actions)",
                input.actions.len()
            ),
        ));
    }
    let mut index = std::collections::HashMap::with_capacity(input.actions.len());
    for (i, a) in input.actions.iter().enumerate() {
        check_id(&format!("actions[{i}].id"), &a.id)?;
        if index.insert(a.id.as_str(), i).is_some() {
            return Err(invalid(
                format!("actions[{i}].id"),
                format!("action id {:?} appears twice", a.id),
            ));
        }
    }
    let mut eligible = vec![true; input.actions.len()];
    let mut excluded = Vec::new();
    for (k, id) in input.exclude.iter().enumerate() {
        let Some(&i) = index.get(id.as_str()) else {
            return Err(invalid(
                format!("exclude[{k}]"),
                format!("{id:?} is not one of the actions"),
            ));
        };
        if eligible[i] {
            eligible[i] = false;
            excluded.push(i);
        }
    }
    if !eligible.iter().any(|&e| e) {
        return Err(invalid("exclude", "every action is excluded"));
    }
    let baseline = match &input.baseline {
        None => None,
        Some(b) => {
            let Some(&i) = index.get(b.as_str()) else {
                return Err(invalid(
                    "baseline",
                    format!("{b:?} is not one of the actions"),
                ));
            };
            if !eligible[i] {
                return Err(invalid("baseline", format!("{b:?} is excluded")));
            }
            Some(i)
        }
    };
    let mut slot_specs = Vec::with_capacity(input.slot_specs.len());
    let mut slot_ids = std::collections::HashSet::new();
    for (k, spec) in input.slot_specs.iter_mut().enumerate() {
        check_id(&format!("slot_specs[{k}].id"), &spec.id)?;
        if !slot_ids.insert(spec.id.clone()) {
            return Err(invalid(
                format!("slot_specs[{k}].id"),
                format!("slot id {:?} appears twice", spec.id),
            ));
        }
        let mut excluded = Vec::new();
        for (j, a) in spec.exclude.iter().enumerate() {
            let Some(&i) = index.get(a.as_str()) else {
                return Err(invalid(
                    format!("slot_specs[{k}].exclude[{j}]"),
                    format!("{a:?} is not one of the actions"),
                ));
            };
            excluded.push(i);
        }
        let baseline = match &spec.baseline {
            None => None,
            Some(b) => match index.get(b.as_str()) {
                Some(&i) if eligible[i] && !excluded.contains(&i) => Some(i),
                Some(_) => {
                    return Err(invalid(
                        format!("slot_specs[{k}].baseline"),
                        format!("{b:?} is excluded"),
                    ));
                }
                None => {
                    return Err(invalid(
                        format!("slot_specs[{k}].baseline"),
                        format!("{b:?} is not one of the actions"),
                    ));
                }
            },
        };
        slot_specs.push(StoredSlotSpec {
            id: spec.id.clone(),
            features: std::mem::take(&mut spec.features),
            excluded,
            baseline,
        });
    }
    if !slot_specs.is_empty() {
        if slot_specs.len() > input.actions.len() {
            return Err(invalid(
                "slot_specs",
                format!(
                    "more slots ({}) than actions ({})",
                    slot_specs.len(),
                    input.actions.len()
                ),
            ));
        }
        if input.slots.is_some_and(|n| n != slot_specs.len()) {
            return Err(invalid(
                "slots",
                "must equal the number of slot_specs, or be left out",
            ));
        }
        input.slots = Some(slot_specs.len());
    }
    if let Some(s) = input.slots
        && !(1..=input.actions.len()).contains(&s)
    {
        return Err(invalid(
            "slots",
            format!(
                "must be between 1 and the number of actions ({})",
                input.actions.len()
            ),
        ));
    }
    excluded.sort_unstable();
    Ok((
        StoredDecision {
            // Moved, not copied: feature values can be most of a request.
            context: std::mem::take(&mut input.context),
            actions: input
                .actions
                .iter_mut()
                .map(|a| StoredAction {
                    id: std::mem::take(&mut a.id),
                    features: std::mem::take(&mut a.features),
                })
                .collect(),
            excluded,
            slots: Vec::new(),
            probabilities: Vec::new(),
            predicted: Vec::new(),
            baseline,
            mode: LoopMode::Online,
            agree: None,
            personalized: true,
            learn: true,
            slot_specs,
        },
        eligible,
        baseline,
    ))
}

/// A checkpoint: the learner configuration it was trained under, then the model.
pub(crate) fn write_checkpoint(config: &LearnerConfig, model: &LinearModel) -> Vec<u8> {
    let c = serde_json::to_vec(config).expect("config serializes");
    let mut out = Vec::with_capacity(8 + c.len());
    out.extend_from_slice(b"BSKC");
    out.extend_from_slice(&(c.len() as u32).to_le_bytes());
    out.extend_from_slice(&c);
    out.extend_from_slice(&model.to_bytes());
    out
}

/// Reads [`write_checkpoint`] back; `None` if it is not one.
pub(crate) fn read_checkpoint(b: &[u8]) -> Option<(LearnerConfig, LinearModel)> {
    if b.len() < 8 || &b[..4] != b"BSKC" {
        return None;
    }
    let n = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    let config = serde_json::from_slice(b.get(8..8 + n)?).ok()?;
    let model = LinearModel::from_bytes(b.get(8 + n..)?)?;
    Some((config, model))
}
