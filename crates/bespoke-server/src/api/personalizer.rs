//! Azure AI Personalizer's REST surface (v1.0, and the multi-slot routes of v1.1-preview and
//! 2022-09-01-preview), mapped onto one decision loop
//! (`decisions.personalizer_loop`), so that an application moves to Bespoke by changing only
//! its endpoint and key. The key may come in `Ocp-Apim-Subscription-Key`, as Personalizer's
//! clients send it.
//!
//! The handlers' doc comments and `#[utoipa::path]` attributes, and the doc comments of the
//! types they read and answer, are their description in `/openapi.json`. The JSON shapes are
//! Azure's (camelCase); the schemas carry a `Personalizer` prefix to keep them apart from
//! Bespoke's own.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::decisions::{DecisionKey, Features, run_activate, run_decision, run_reward};
use super::extract::{JsonBody, KeyPath};
use crate::auth::Caller;
use crate::decisions::{ActionInput, DecisionInput};
use crate::error::ApiError;
use crate::strict::StrictValue;

/// An action to rank.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PersonalizerRankableAction)]
pub(crate) struct RankableAction {
    /// Action id, unique within the request.
    id: String,
    /// The action's features (Azure sends a list of objects).
    #[serde(default)]
    #[schema(value_type = Option<Features>)]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = PersonalizerRankRequest)]
pub(crate) struct RankRequest {
    /// The context's features (Azure sends a list of objects).
    #[serde(default)]
    #[schema(value_type = Option<Features>)]
    context_features: Option<StrictValue>,
    /// The actions to rank.
    #[schema(min_items = 1)]
    actions: Vec<RankableAction>,
    /// Action ids not to choose (ranked last, with probability 0).
    #[serde(default)]
    excluded_actions: Option<Vec<String>>,
    /// Your id for the event (the decision id); issued when absent.
    #[serde(default)]
    event_id: Option<String>,
    /// Count rewards only after the event is activated.
    #[serde(default)]
    #[schema(default = false)]
    defer_activation: Option<bool>,
}

/// One action of a ranking.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PersonalizerRankedAction)]
pub(crate) struct RankedAction {
    /// Action id.
    id: String,
    /// Probability with which it was chosen.
    probability: f64,
}

/// Answer of `POST /personalizer/v1.0/rank`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PersonalizerRankResponse)]
pub(crate) struct RankResponse {
    /// Every action, the chosen one first.
    ranking: Vec<RankedAction>,
    /// The event (decision) id to reward.
    event_id: String,
    /// The chosen action.
    reward_action_id: String,
}

/// Azure Personalizer v1.0 Rank, mapped onto the loop decisions.personalizer_loop (key also accepted in Ocp-Apim-Subscription-Key)
///
/// The loop is created if it does not exist, as for `POST /v1/loops/{key}/decisions` (404
/// unknown_loop when decisions.auto_create_loops is off).
#[utoipa::path(post, path = "/personalizer/v1.0/rank", operation_id = "personalizerRank",
    tag = "Personalizer compatibility", request_body = RankRequest,
    responses(
        (status = 201, description = "Ranking, eventId and rewardActionId", body = RankResponse),
        (status = 400), (status = 404), (status = 409), (status = 413), (status = 415),
        (status = 507)))]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PersonalizerRewardRequest)]
pub(crate) struct RewardRequest {
    /// The reward, within the loop's reward_range.
    value: f64,
}

/// Azure Personalizer v1.0 Reward
#[utoipa::path(post, path = "/personalizer/v1.0/events/{key}/reward",
    operation_id = "personalizerReward", tag = "Personalizer compatibility",
    params(DecisionKey), request_body = RewardRequest,
    responses((status = 204, description = "Recorded"),
        (status = 400), (status = 404), (status = 409), (status = 410), (status = 413),
        (status = 415), (status = 507)))]
pub(crate) async fn reward(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
    JsonBody(body): JsonBody<RewardRequest>,
) -> Result<StatusCode, ApiError> {
    run_reward(&state, id, None, body.value).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Azure Personalizer v1.0 Activate
#[utoipa::path(post, path = "/personalizer/v1.0/events/{key}/activate",
    operation_id = "personalizerActivate", tag = "Personalizer compatibility",
    params(DecisionKey),
    responses((status = 204, description = "Activated"),
        (status = 400), (status = 404), (status = 410), (status = 507)))]
pub(crate) async fn activate(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
) -> Result<StatusCode, ApiError> {
    run_activate(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A slot of a multi-slot Rank.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = PersonalizerSlotRequest)]
pub(crate) struct SlotRequest {
    /// Slot id, unique within the request.
    id: String,
    /// Slot features: they join the context for this slot.
    #[serde(default)]
    #[schema(value_type = Option<Features>)]
    features: Option<StrictValue>,
    /// Action ids this slot may not take.
    #[serde(default)]
    excluded_actions: Option<Vec<String>>,
    /// Your own choice for this slot.
    #[serde(default)]
    baseline_action: Option<String>,
}

/// Body of `POST /personalizer/multislot/rank`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = PersonalizerMultiSlotRankRequest)]
pub(crate) struct MultiSlotRankRequest {
    /// The context's features (Azure sends a list of objects).
    #[serde(default)]
    #[schema(value_type = Option<Features>)]
    context_features: Option<StrictValue>,
    /// The actions to place, at least as many as slots.
    #[schema(min_items = 1)]
    actions: Vec<RankableAction>,
    /// The slots, each filled with one action.
    #[schema(min_items = 1)]
    slots: Vec<SlotRequest>,
    /// Your id for the event (the decision id); issued when absent.
    #[serde(default)]
    event_id: Option<String>,
    /// Count rewards only after the event is activated.
    #[serde(default)]
    #[schema(default = false)]
    defer_activation: Option<bool>,
}

/// A slot's chosen action.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PersonalizerSlotResponse)]
pub(crate) struct SlotResponse {
    /// Slot id.
    id: String,
    /// The action chosen for it.
    reward_action_id: Option<String>,
}

/// Answer of `POST /personalizer/multislot/rank`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PersonalizerMultiSlotRankResponse)]
pub(crate) struct MultiSlotRankResponse {
    /// Each slot, in the request's order.
    slots: Vec<SlotResponse>,
    /// The event (decision) id to reward.
    event_id: String,
}

/// Azure Personalizer multi-slot Rank: one action per slot; slot features join the context for that slot, each slot has its own excludedActions and baselineAction
#[utoipa::path(post, path = "/personalizer/multislot/rank",
    operation_id = "personalizerMultiSlotRank", tag = "Personalizer compatibility",
    request_body = MultiSlotRankRequest,
    responses(
        (status = 201, description = "slots [{id, rewardActionId}] and eventId",
            body = MultiSlotRankResponse),
        (status = 400), (status = 404), (status = 409), (status = 413), (status = 415),
        (status = 507)))]
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

/// The reward of one slot.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = PersonalizerSlotReward)]
pub(crate) struct SlotReward {
    /// Slot id, as in the Rank request.
    slot_id: String,
    /// The reward, within the loop's reward_range.
    value: f64,
}

/// Body of `POST /personalizer/multislot/events/{eventId}/reward`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PersonalizerMultiSlotRewardRequest)]
pub(crate) struct MultiSlotRewardRequest {
    /// The slots' rewards.
    reward: Vec<SlotReward>,
}

/// Azure Personalizer multi-slot Reward: {reward: [{slotId, value}]}
#[utoipa::path(post, path = "/personalizer/multislot/events/{key}/reward",
    operation_id = "personalizerMultiSlotReward", tag = "Personalizer compatibility",
    params(DecisionKey), request_body = MultiSlotRewardRequest,
    responses((status = 204, description = "Recorded"),
        (status = 400), (status = 404), (status = 409), (status = 410), (status = 413),
        (status = 415), (status = 507)))]
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

/// Azure Personalizer multi-slot Activate
///
/// Served by the same handler as the v1.0 Activate: an event is one decision, whatever its
/// slots.
#[utoipa::path(post, path = "/personalizer/multislot/events/{key}/activate",
    operation_id = "personalizerMultiSlotActivate", tag = "Personalizer compatibility",
    params(DecisionKey),
    responses((status = 204, description = "Activated"),
        (status = 400), (status = 404), (status = 410), (status = 507)))]
#[allow(dead_code)] // Read by the OpenAPI derive only: the route is served by `activate`.
fn multislot_activate() {}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    rank,
    reward,
    activate,
    multislot_rank,
    multislot_reward,
    multislot_activate,
))]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::tests::assert_request_schema;

    /// The bodies' schemas say exactly what their types read, in Azure's field names.
    #[test]
    fn request_schemas_read_as_the_types_do() {
        assert_request_schema::<RankRequest>("PersonalizerRankRequest");
        assert_request_schema::<RankableAction>("PersonalizerRankableAction");
        assert_request_schema::<RewardRequest>("PersonalizerRewardRequest");
        assert_request_schema::<MultiSlotRankRequest>("PersonalizerMultiSlotRankRequest");
        assert_request_schema::<SlotRequest>("PersonalizerSlotRequest");
        assert_request_schema::<MultiSlotRewardRequest>("PersonalizerMultiSlotRewardRequest");
        assert_request_schema::<SlotReward>("PersonalizerSlotReward");
    }
}
