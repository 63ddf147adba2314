//! Decision loops: `/v1/loops/...` and `/v1/decisions/...`. The handlers' doc comments and
//! `#[utoipa::path]` attributes, and the doc comments of the types they read and answer, are
//! their description in `/openapi.json`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use bespoke_algo::bandit::ope;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::extract::{JsonBody, KeyPath, Params};
use super::{AppState, blocking};
use crate::auth::Caller;
use crate::decisions::{
    ActionInput, DecisionError, DecisionInput, DecisionOutput, LoopConfig, LoopView, RewardAck,
};
use crate::error::ApiError;
use crate::strict::StrictValue;
use crate::time::now_ms;

/// Longest loop name, in bytes.
const MAX_LOOP_BYTES: usize = 128;

impl From<DecisionError> for ApiError {
    fn from(e: DecisionError) -> Self {
        let message = e.to_string();
        match e {
            DecisionError::Invalid { field, message } => ApiError::invalid(field, message),
            DecisionError::UnknownDecision(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_decision", message).at("decision_id")
            }
            DecisionError::UnknownLoop(_) | DecisionError::NoImplicitLoop(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_loop", message).at("loop")
            }
            DecisionError::TooManyLoops { .. } => {
                ApiError::new(StatusCode::CONFLICT, "too_many_loops", message).at("loop")
            }
            DecisionError::DuplicateId(_) => {
                ApiError::new(StatusCode::CONFLICT, "duplicate_decision", message).at("decision_id")
            }
            DecisionError::Expired(_) => ApiError::new(
                StatusCode::GONE,
                "reward_window_closed",
                format!("{message}; the loop's reward_wait_seconds has passed"),
            ),
            DecisionError::AlreadyRewarded { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_rewarded", message).at("slot")
            }
            DecisionError::NotActivated(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_activated", message)
            }
            DecisionError::Store(e) => ApiError::from(e),
        }
    }
}

/// The `{key}` path parameter of the loop routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct LoopKey {
    /// Loop name, 1 to 128 bytes
    key: String,
}

/// The `{key}` path parameter of the decision routes, here and in Personalizer's.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct DecisionKey {
    /// Decision id (Personalizer's eventId), 1 to 256 bytes
    key: String,
}

/// Features of a context, an action or a slot, as `crate::features` reads them (the fields
/// holding them are [`StrictValue`]s, which would otherwise be described as any value).
pub(crate) struct Features;

impl utoipa::PartialSchema for Features {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let object = || ObjectBuilder::new().schema_type(Type::Object);
        OneOfBuilder::new()
            .item(object())
            .item(ArrayBuilder::new().items(object()))
            .description(Some(
                "Features: an object whose top-level keys are namespaces; strings are categorical, numbers numeric, true is 1 (false and null are absent), arrays of numbers dense vectors, arrays of strings sets of categoricals, nested objects extend the name. Personalizer's form, a list of such objects, is accepted too.",
            ))
            .into()
    }
}

impl ToSchema for Features {}

pub(crate) fn check_loop(name: &str) -> Result<(), ApiError> {
    crate::validate::check_key("loop", name, MAX_LOOP_BYTES)
        .map_err(|k| ApiError::invalid("loop", k.to_string()))
}

/// An action of `POST /v1/loops/{loop}/decisions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DecisionAction)]
pub(crate) struct ActionIn {
    /// Action id, unique within the request (1 to 256 bytes).
    id: String,
    /// The action's features.
    #[serde(default)]
    #[schema(value_type = Option<Features>)]
    features: Option<StrictValue>,
}

/// A named slot of `POST /v1/loops/{loop}/decisions`, with its own features, exclusions and
/// baseline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DecisionSlot)]
pub(crate) struct SlotIn {
    /// Slot id, unique within the request (1 to 256 bytes).
    id: String,
    /// Slot features: they join the context for this slot.
    #[serde(default)]
    #[schema(value_type = Option<Features>)]
    features: Option<StrictValue>,
    /// Action ids this slot may not take.
    #[serde(default)]
    exclude: Vec<String>,
    /// Your own choice for this slot.
    #[serde(default)]
    baseline: Option<String>,
}

impl SlotIn {
    fn into_input(self) -> crate::decisions::SlotInput {
        crate::decisions::SlotInput {
            id: self.id,
            features: self.features.map_or(Value::Null, |v| v.0),
            exclude: self.exclude,
            baseline: self.baseline,
        }
    }
}

/// Body of `POST /v1/loops/{loop}/decisions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "user": "u1", "context": { "device": "mobile", "hour": 20 },
    "actions": [{ "id": "tone-friendly" },
        { "id": "tone-formal", "features": { "length": 120 } }] }))]
pub(crate) struct DecisionIn {
    /// Your id for the decision (1 to 256 bytes); issued when absent.
    #[serde(default)]
    decision_id: Option<String>,
    /// The user: their consent applies (no personalization: the context is not used; no
    /// training: rewards are not learned from).
    #[serde(default)]
    user: Option<String>,
    /// The context's features.
    #[serde(default)]
    #[schema(value_type = Option<Features>)]
    context: Option<StrictValue>,
    /// The actions to choose among: 1 to the loop's max_actions, ids unique.
    #[schema(min_items = 1)]
    actions: Vec<ActionIn>,
    /// Slate length, 1 to the number of actions; default 1 (or the number of slot_specs).
    #[serde(default)]
    #[schema(minimum = 1)]
    slots: Option<usize>,
    /// Your own choice: apprentice mode serves it; evaluation compares with it.
    #[serde(default)]
    baseline: Option<String>,
    /// Action ids not to choose.
    #[serde(default)]
    exclude: Vec<String>,
    /// Log now, count rewards only after `POST /v1/decisions/{key}/activate`.
    #[serde(default)]
    #[schema(default = false)]
    defer_activation: bool,
    /// Named slots with their own features, exclusions and baselines; when given, they define
    /// the slate (`slots` must then be their number or absent).
    #[serde(default)]
    slot_specs: Vec<SlotIn>,
}

impl DecisionIn {
    /// The engine's form of the request.
    pub(crate) fn into_input(self) -> DecisionInput {
        DecisionInput {
            id: self.decision_id,
            user: self.user,
            context: self.context.map_or(Value::Null, |v| v.0),
            actions: self
                .actions
                .into_iter()
                .map(|a| ActionInput {
                    id: a.id,
                    features: a.features.map_or(Value::Null, |v| v.0),
                })
                .collect(),
            slots: self.slots,
            baseline: self.baseline,
            exclude: self.exclude,
            defer_activation: self.defer_activation,
            slot_specs: self
                .slot_specs
                .into_iter()
                .map(SlotIn::into_input)
                .collect(),
        }
    }
}

/// Runs a decision on the blocking pool, with the user's consent applied. A loop the decision
/// creates is audited as `loop.create` by `caller`.
pub(crate) async fn run_decision(
    state: &AppState,
    caller: &Caller,
    loop_name: String,
    input: DecisionInput,
) -> Result<DecisionOutput, ApiError> {
    check_loop(&loop_name)?;
    if let Some(u) = &input.user {
        super::validate_key("user", u, state.engine.settings().limits.max_key_bytes)?;
    }
    let engine = state.engine.clone();
    let actor = caller.prefix.clone();
    blocking(move || {
        if engine.decisions().create_implicit(&loop_name)? {
            tracing::info!(loop_name, actor, "decision loop created by a decision");
            engine.access().audit(
                &actor,
                "loop.create",
                Some(&loop_name),
                Some(json!({ "implicit": true })),
            );
        }
        let (stored_user, consent) = match &input.user {
            Some(u) => {
                let (k, c) = engine.decision_user(u);
                (Some(k), c)
            }
            None => (
                None,
                crate::decisions::DecisionConsent {
                    personalization: true,
                    training: true,
                },
            ),
        };
        engine
            .decisions()
            .decide(&loop_name, input, stored_user, consent, now_ms())
            .map_err(ApiError::from)
    })
    .await
}

/// Choose a ranking (a slate of `slots` actions) under a context, with probabilities and an explanation
///
/// The loop is created with the default configuration if it does not exist (audited as
/// loop.create; 409 too_many_loops past decisions.max_loops; 404 unknown_loop when
/// decisions.auto_create_loops is off). The decision is logged before the answer; reward it
/// within the loop's reward_wait_seconds.
#[utoipa::path(post, path = "/v1/loops/{key}/decisions", operation_id = "decide",
    tag = "decisions", params(LoopKey), request_body = DecisionIn,
    responses((status = 201, description = "The decision", body = DecisionOutput),
        (status = 400), (status = 404), (status = 409), (status = 413), (status = 415),
        (status = 507)))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(loop_name): KeyPath,
    JsonBody(body): JsonBody<DecisionIn>,
) -> Result<(StatusCode, Json<DecisionOutput>), ApiError> {
    let input = body.into_input();
    let out = run_decision(&state, &caller, loop_name, input).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Body of `POST /v1/decisions/{id}/reward`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DecisionReward)]
pub(crate) struct RewardIn {
    /// The reward, within the loop's reward_range.
    value: f64,
    /// The slot rewarded, from 0; default 0.
    #[serde(default)]
    #[schema(default = 0)]
    slot: Option<u32>,
}

pub(crate) async fn run_reward(
    state: &AppState,
    id: String,
    slot: Option<u32>,
    value: f64,
) -> Result<RewardAck, ApiError> {
    super::validate_key("decision_id", &id, 256)?;
    let engine = state.engine.clone();
    blocking(move || {
        engine
            .decisions()
            .reward(&id, slot, value, now_ms())
            .map_err(ApiError::from)
    })
    .await
}

/// Reward one slot of a decision; the learner learns from it at once
#[utoipa::path(post, path = "/v1/decisions/{key}/reward", operation_id = "rewardDecision",
    tag = "decisions", params(DecisionKey), request_body = RewardIn,
    responses((status = 200, description = "Recorded", body = RewardAck),
        (status = 400), (status = 404), (status = 409), (status = 410), (status = 413),
        (status = 415), (status = 507)))]
pub(crate) async fn reward(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
    JsonBody(body): JsonBody<RewardIn>,
) -> Result<Json<RewardAck>, ApiError> {
    Ok(Json(run_reward(&state, id, body.slot, body.value).await?))
}

pub(crate) async fn run_activate(state: &AppState, id: String) -> Result<bool, ApiError> {
    super::validate_key("decision_id", &id, 256)?;
    let engine = state.engine.clone();
    blocking(move || {
        engine
            .decisions()
            .activate(&id, now_ms())
            .map_err(ApiError::from)
    })
    .await
}

/// Answer of `POST /v1/decisions/{key}/activate`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DecisionActivated)]
pub(crate) struct Activated {
    /// The decision.
    decision_id: String,
    /// Always true: its rewards count from now on.
    activated: bool,
    /// False when it was already active.
    changed: bool,
}

/// Activate a decision made with defer_activation: its rewards count from now on
#[utoipa::path(post, path = "/v1/decisions/{key}/activate", operation_id = "activateDecision",
    tag = "decisions", params(DecisionKey),
    responses((status = 200, description = "Activated", body = Activated),
        (status = 400), (status = 404), (status = 410), (status = 507)))]
pub(crate) async fn activate(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
) -> Result<Json<Activated>, ApiError> {
    let changed = run_activate(&state, id.clone()).await?;
    Ok(Json(Activated {
        decision_id: id,
        activated: true,
        changed,
    }))
}

/// Answer of `GET /v1/loops`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LoopList)]
pub(crate) struct LoopsOut {
    /// By name.
    loops: Vec<LoopView>,
}

/// Every decision loop with its configuration and counts
#[utoipa::path(get, path = "/v1/loops", operation_id = "listLoops",
    tag = "decisions", responses((status = 200, description = "The loops", body = LoopsOut)))]
pub(crate) async fn list_loops(State(state): State<AppState>) -> Result<Json<LoopsOut>, ApiError> {
    let engine = state.engine.clone();
    let loops = blocking(move || {
        let d = engine.decisions();
        d.names()
            .iter()
            .map(|n| d.view(n).map_err(ApiError::from))
            .collect::<Result<Vec<LoopView>, _>>()
    })
    .await?;
    Ok(Json(LoopsOut { loops }))
}

/// A decision loop: configuration, learner state, log counts and apprentice agreement
#[utoipa::path(get, path = "/v1/loops/{key}", operation_id = "getLoop",
    tag = "decisions", params(LoopKey),
    responses((status = 200, description = "The loop", body = LoopView),
        (status = 400), (status = 404)))]
pub(crate) async fn get_loop(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
) -> Result<Json<LoopView>, ApiError> {
    check_loop(&name)?;
    let engine = state.engine.clone();
    Ok(Json(
        blocking(move || engine.decisions().view(&name).map_err(ApiError::from)).await?,
    ))
}

/// Create or reconfigure a loop; a change of bits, learning_rate or interactions rebuilds the learner from the whole log
///
/// Audited as loop.configure.
#[utoipa::path(put, path = "/v1/loops/{key}", operation_id = "putLoop",
    tag = "decisions", params(LoopKey), request_body = LoopConfig,
    responses((status = 200, description = "The loop", body = LoopView),
        (status = 400), (status = 409), (status = 413), (status = 415), (status = 507)))]
pub(crate) async fn put_loop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
    JsonBody(config): JsonBody<LoopConfig>,
) -> Result<Json<LoopView>, ApiError> {
    check_loop(&name)?;
    let engine = state.engine.clone();
    Ok(Json(
        blocking(move || {
            let detail = serde_json::to_value(&config).ok();
            let view = engine
                .decisions()
                .configure(&name, config)
                .map_err(ApiError::from)?;
            engine
                .access()
                .audit(&caller.prefix, "loop.configure", Some(&name), detail);
            Ok(view)
        })
        .await?,
    ))
}

/// Off-policy evaluation of the loop's logs: IPS, SNIPS and DR with 95% intervals for the online policy, uniform random, the baseline and candidate configurations; drop-one feature importance
#[utoipa::path(get, path = "/v1/loops/{key}/evaluation", operation_id = "evaluateLoop",
    tag = "decisions", params(LoopKey,
        ("max_decisions" = Option<usize>, Query, minimum = 1,
            description = "Most recent settled decisions to use, 1 to \
                decisions.evaluation_max_decisions (the default)")),
    responses((status = 200, description = "The evaluation", body = ope::Report),
        (status = 400), (status = 404)))]
pub(crate) async fn evaluation(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
    params: Params,
) -> Result<Json<ope::Report>, ApiError> {
    check_loop(&name)?;
    let cap = state.engine.settings().decisions.evaluation_max_decisions;
    params.allow(&["max_decisions"])?;
    let limit = match params.get("max_decisions") {
        None => cap,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=cap).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "max_decisions",
                    format!(
                        "must be an integer from 1 to {cap} (decisions.evaluation_max_decisions)"
                    ),
                )
            })?,
    };
    let engine = state.engine.clone();
    Ok(Json(
        blocking(move || {
            engine
                .decisions()
                .evaluate(&name, limit, Vec::new())
                .map_err(ApiError::from)
        })
        .await?,
    ))
}

/// Body of `POST /v1/loops/{loop}/evaluation/apply`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CandidateIn)]
pub(crate) struct ApplyIn {
    /// A candidate's name, as the evaluation lists it (`policy`).
    candidate: String,
}

/// Apply a candidate configuration listed by the evaluation (by its name)
///
/// The loop's learner becomes the candidate's; audited as loop.apply_candidate.
#[utoipa::path(post, path = "/v1/loops/{key}/evaluation/apply", operation_id = "applyCandidate",
    tag = "decisions", params(LoopKey), request_body = ApplyIn,
    responses((status = 200, description = "The loop", body = LoopView),
        (status = 400), (status = 404), (status = 413), (status = 415), (status = 507)))]
pub(crate) async fn apply_candidate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
    JsonBody(body): JsonBody<ApplyIn>,
) -> Result<Json<LoopView>, ApiError> {
    check_loop(&name)?;
    let engine = state.engine.clone();
    Ok(Json(
        blocking(move || {
            let d = engine.decisions();
            let mut config = d.view(&name).map_err(ApiError::from)?.config;
            let candidates = ope::candidates(&config.learner);
            let Some((_, learner)) = candidates.iter().find(|(n, _)| *n == body.candidate) else {
                return Err(ApiError::invalid(
                    "candidate",
                    format!(
                        "no candidate {:?}; the evaluation lists them: {}",
                        body.candidate,
                        candidates
                            .iter()
                            .map(|c| c.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            config.learner = learner.clone();
            let detail = json!({ "candidate": body.candidate, "learner": learner });
            let view = d.configure(&name, config).map_err(ApiError::from)?;
            engine.access().audit(
                &caller.prefix,
                "loop.apply_candidate",
                Some(&name),
                Some(detail),
            );
            Ok(view)
        })
        .await?,
    ))
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_loops,
    get_loop,
    put_loop,
    decide,
    evaluation,
    apply_candidate,
    reward,
    activate,
))]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::tests::assert_request_schema;

    /// The bodies' schemas say exactly what their types read.
    #[test]
    fn request_schemas_read_as_the_types_do() {
        assert_request_schema::<DecisionIn>("DecisionIn");
        assert_request_schema::<ActionIn>("DecisionAction");
        assert_request_schema::<SlotIn>("DecisionSlot");
        assert_request_schema::<RewardIn>("DecisionReward");
        assert_request_schema::<ApplyIn>("CandidateIn");
        assert_request_schema::<LoopConfig>("LoopConfig");
        assert_request_schema::<bespoke_algo::bandit::LearnerConfig>("LearnerConfig");
    }
}
