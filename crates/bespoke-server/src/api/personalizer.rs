//! Azure AI Personalizer's REST surface (v1.0, and the multi-slot routes of v1.1-preview and
//! 2022-09-01-preview), mapped onto one decision loop
//! (`decisions.personalizer_loop`), so that an application moves to Bespoke by changing only
//! its endpoint and key. The key may come in `Ocp-Apim-Subscription-Key`, as Personalizer's
//! clients send it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::decisions::{run_activate, run_decision, run_reward};
use super::extract::{JsonBody, KeyPath};
use crate::auth::Caller;
use crate::decisions::{ActionInput, DecisionInput};
use crate::error::ApiError;
use crate::strict::StrictValue;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RankableAction {
    id: String,
    #[serde(default)]
    features: Option<StrictValue>,
}

fn actions_input(actions: Vec<RankableAction>) -> Vec<ActionInput> {
    actions
        .into_iter()
        .map(|a| ActionInput {
            id: a.id,
            features: a.features.map_or(Value::Null, |v| v.0),
        })
        .collect()
}

/// Body of `POST /personalizer/v1.0/rank`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RankRequest {
    #[serde(default)]
    context_features: Option<StrictValue>,
    actions: Vec<RankableAction>,
    #[serde(default)]
    excluded_actions: Option<Vec<String>>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    defer_activation: Option<bool>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RankedAction {
    id: String,
    probability: f64,
}

/// Answer of `POST /personalizer/v1.0/rank`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RankResponse {
    ranking: Vec<RankedAction>,
    event_id: String,
    reward_action_id: String,
}

pub(crate) async fn rank(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<RankRequest>,
) -> Result<(StatusCode, Json<RankResponse>), ApiError> {
    let loop_name = state.engine.settings().decisions.personalizer_loop.clone();
    let input = DecisionInput {
        id: body.event_id,
        user: None,
        context: body.context_features.map_or(Value::Null, |v| v.0),
        actions: actions_input(body.actions),
        slots: None,
        baseline: None,
        exclude: body.excluded_actions.unwrap_or_default(),
        defer_activation: body.defer_activation.unwrap_or(false),
        slot_specs: Vec::new(),
    };
    let out = run_decision(&state, &caller, loop_name, input).await?;
    let reward_action_id = out.ranking[0].action.clone();
    Ok((
        StatusCode::CREATED,
        Json(RankResponse {
            ranking: out
                .ranking
                .into_iter()
                .map(|r| RankedAction {
                    id: r.action,
                    probability: r.probability,
                })
                .collect(),
            event_id: out.decision_id,
            reward_action_id,
        }),
    ))
}

/// Body of `POST /personalizer/v1.0/events/{eventId}/reward`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RewardRequest {
    value: f64,
}

pub(crate) async fn reward(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
    JsonBody(body): JsonBody<RewardRequest>,
) -> Result<StatusCode, ApiError> {
    run_reward(&state, id, None, body.value).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn activate(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
) -> Result<StatusCode, ApiError> {
    run_activate(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SlotRequest {
    id: String,
    #[serde(default)]
    features: Option<StrictValue>,
    #[serde(default)]
    excluded_actions: Option<Vec<String>>,
    #[serde(default)]
    baseline_action: Option<String>,
}

/// Body of `POST /personalizer/multislot/rank`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MultiSlotRankRequest {
    #[serde(default)]
    context_features: Option<StrictValue>,
    actions: Vec<RankableAction>,
    slots: Vec<SlotRequest>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    defer_activation: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SlotResponse {
    id: String,
    reward_action_id: Option<String>,
}

/// Answer of `POST /personalizer/multislot/rank`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MultiSlotRankResponse {
    slots: Vec<SlotResponse>,
    event_id: String,
}

pub(crate) async fn multislot_rank(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<MultiSlotRankRequest>,
) -> Result<(StatusCode, Json<MultiSlotRankResponse>), ApiError> {
    if body.slots.is_empty() {
        return Err(ApiError::invalid("slots", "at least one slot is needed"));
    }
    let loop_name = state.engine.settings().decisions.personalizer_loop.clone();
    let slot_ids: Vec<String> = body.slots.iter().map(|s| s.id.clone()).collect();
    let input = DecisionInput {
        id: body.event_id,
        user: None,
        context: body.context_features.map_or(Value::Null, |v| v.0),
        actions: actions_input(body.actions),
        slots: None,
        baseline: None,
        exclude: Vec::new(),
        defer_activation: body.defer_activation.unwrap_or(false),
        slot_specs: body
            .slots
            .into_iter()
            .map(|s| crate::decisions::SlotInput {
                id: s.id,
                features: s.features.map_or(Value::Null, |v| v.0),
                exclude: s.excluded_actions.unwrap_or_default(),
                baseline: s.baseline_action,
            })
            .collect(),
    };
    let out = run_decision(&state, &caller, loop_name, input).await?;
    let slots = slot_ids
        .into_iter()
        .enumerate()
        .map(|(k, id)| SlotResponse {
            id,
            reward_action_id: (k < out.slots).then(|| out.ranking[k].action.clone()),
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(MultiSlotRankResponse {
            slots,
            event_id: out.decision_id,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SlotReward {
    slot_id: String,
    value: f64,
}

/// Body of `POST /personalizer/multislot/events/{eventId}/reward`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MultiSlotRewardRequest {
    reward: Vec<SlotReward>,
}

pub(crate) async fn multislot_reward(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
    JsonBody(body): JsonBody<MultiSlotRewardRequest>,
) -> Result<StatusCode, ApiError> {
    super::validate_key("eventId", &id, 256)?;
    let engine = state.engine.clone();
    let event = id.clone();
    let slot_ids =
        super::blocking(move || engine.decisions().slot_ids(&event).map_err(ApiError::from))
            .await?;
    for (i, r) in body.reward.iter().enumerate() {
        let Some(slot) = slot_ids.iter().position(|s| *s == r.slot_id) else {
            return Err(ApiError::invalid(
                format!("reward[{i}].slotId"),
                format!("event {id:?} has no slot {:?}", r.slot_id),
            ));
        };
        run_reward(&state, id.clone(), Some(slot as u32), r.value)
            .await
            .map_err(|mut e| {
                // A reward outside the loop's range: name it in this body's terms.
                if e.field.as_deref() == Some("value") {
                    e.field = Some(format!("reward[{i}].value"));
                }
                e
            })?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(crate) struct Api;
