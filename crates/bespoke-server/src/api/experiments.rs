//! Experiments (`/v1/experiments`, admin, every change audited): create or replace a draft,
//! start, stop, delete, and the report.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{Value, json};

use super::extract::{JsonBody, KeyPath};
use super::{AppState, blocking, validate_key};
use crate::auth::Caller;
use crate::engine::{Engine, Experiment, ExperimentError, ExperimentReport, ExperimentSpec};
use crate::error::ApiError;

impl From<ExperimentError> for ApiError {
    fn from(e: ExperimentError) -> Self {
        match e {
            ExperimentError::Invalid { field, message } => ApiError::invalid(field, message),
            ExperimentError::NotFound(name) => ApiError::not_found("experiment", &name),
            ExperimentError::Conflict { field, message } => {
                ApiError::new(StatusCode::CONFLICT, "experiment_conflict", message).at(field)
            }
            ExperimentError::Store(e) => e.into(),
        }
    }
}

/// An experiment as the API shows it (times in RFC 3339).
#[derive(Debug, Serialize)]
pub(crate) struct ExperimentOut {
    name: String,
    status: crate::engine::ExperimentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at: Option<String>,
    #[serde(flatten)]
    spec: ExperimentSpec,
}

impl From<Experiment> for ExperimentOut {
    fn from(e: Experiment) -> Self {
        Self {
            name: e.name,
            status: e.status,
            started_at: e.started_at.map(crate::time::format_rfc3339),
            stopped_at: e.stopped_at.map(crate::time::format_rfc3339),
            spec: e.spec,
        }
    }
}

/// Answer of `GET /v1/experiments`.
#[derive(Debug, Serialize)]
pub(crate) struct ExperimentsOut {
    experiments: Vec<ExperimentOut>,
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<ExperimentsOut>, ApiError> {
    let engine = state.engine.clone();
    let all = blocking(move || engine.experiments().map_err(ApiError::from)).await?;
    Ok(Json(ExperimentsOut {
        experiments: all.into_iter().map(ExperimentOut::from).collect(),
    }))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
) -> Result<Json<ExperimentOut>, ApiError> {
    let engine = state.engine.clone();
    let e = blocking(move || engine.experiment(&name).map_err(ApiError::from)).await?;
    Ok(Json(e.into()))
}

/// `PUT /v1/experiments/{name}`: creates a draft, or replaces a draft's definition.
pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
    JsonBody(spec): JsonBody<ExperimentSpec>,
) -> Result<(StatusCode, Json<ExperimentOut>), ApiError> {
    validate_key("name", &name, 64)?;
    let engine = state.engine.clone();
    let (e, created) = blocking(move || {
        let (e, created) = engine.put_experiment(&name, spec)?;
        let detail = serde_json::to_value(&e.spec).ok();
        engine
            .access()
            .audit(&caller.prefix, "experiment.put", Some(&name), detail);
        Ok::<_, ApiError>((e, created))
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(e.into())))
}

/// `POST /v1/experiments/{name}/start`.
pub(crate) async fn start(
    state: State<AppState>,
    caller: Extension<Caller>,
    name: KeyPath,
) -> Result<Json<ExperimentOut>, ApiError> {
    transition(
        state,
        caller,
        name,
        "experiment.start",
        Engine::start_experiment,
    )
    .await
}

/// `POST /v1/experiments/{name}/stop`.
pub(crate) async fn stop(
    state: State<AppState>,
    caller: Extension<Caller>,
    name: KeyPath,
) -> Result<Json<ExperimentOut>, ApiError> {
    transition(
        state,
        caller,
        name,
        "experiment.stop",
        Engine::stop_experiment,
    )
    .await
}

/// Starts or stops an experiment and audits it as `action`.
async fn transition(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
    action: &'static str,
    change: fn(&Engine, &str) -> Result<Experiment, ExperimentError>,
) -> Result<Json<ExperimentOut>, ApiError> {
    let engine = state.engine.clone();
    let e = blocking(move || {
        let e = change(&engine, &name)?;
        engine
            .access()
            .audit(&caller.prefix, action, Some(&name), None);
        Ok::<_, ApiError>(e)
    })
    .await?;
    Ok(Json(e.into()))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
) -> Result<Json<Value>, ApiError> {
    let engine = state.engine.clone();
    let n = name.clone();
    let deleted = blocking(move || {
        let deleted = engine.delete_experiment(&n).map_err(ApiError::from)?;
        if deleted {
            engine
                .access()
                .audit(&caller.prefix, "experiment.delete", Some(&n), None);
        }
        Ok(deleted)
    })
    .await?;
    if !deleted {
        return Err(ApiError::not_found("experiment", &name));
    }
    Ok(Json(json!({ "deleted": name })))
}

/// `GET /v1/experiments/{name}/report`.
pub(crate) async fn report(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
) -> Result<Json<ExperimentReport>, ApiError> {
    let engine = state.engine.clone();
    let r = blocking(move || engine.experiment_report(&name).map_err(ApiError::from)).await?;
    Ok(Json(r))
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(crate) struct Api;
