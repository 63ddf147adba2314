//! Decision loops: `/v1/loops/...` and `/v1/decisions/...`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use bespoke_algo::bandit::ope;
use serde::Deserialize;
use serde_json::{Value, json};

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

pub(crate) fn check_loop(name: &str) -> Result<(), ApiError> {
    crate::validate::check_key("loop", name, MAX_LOOP_BYTES)
        .map_err(|k| ApiError::invalid("loop", k.to_string()))
}

/// An action of `POST /v1/loops/{loop}/decisions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionIn {
    id: String,
    #[serde(default)]
    features: Option<StrictValue>,
}

/// A named slot of `POST /v1/loops/{loop}/decisions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlotIn {
    id: String,
    #[serde(default)]
    features: Option<StrictValue>,
    #[serde(default)]
    exclude: Vec<String>,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionIn {
    #[serde(default)]
    decision_id: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    context: Option<StrictValue>,
    actions: Vec<ActionIn>,
    #[serde(default)]
    slots: Option<usize>,
    #[serde(default)]
    baseline: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    defer_activation: bool,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RewardIn {
    value: f64,
    #[serde(default)]
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

pub(crate) async fn activate(
    State(state): State<AppState>,
    KeyPath(id): KeyPath,
) -> Result<Json<Value>, ApiError> {
    let changed = run_activate(&state, id.clone()).await?;
    Ok(Json(
        json!({ "decision_id": id, "activated": true, "changed": changed }),
    ))
}

pub(crate) async fn list_loops(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let engine = state.engine.clone();
    let loops = blocking(move || {
        let d = engine.decisions();
        d.names()
            .iter()
            .map(|n| d.view(n).map_err(ApiError::from))
            .collect::<Result<Vec<LoopView>, _>>()
    })
    .await?;
    Ok(Json(json!({ "loops": loops })))
}

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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyIn {
    candidate: String,
}

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
#[openapi()]
pub(crate) struct Api;
