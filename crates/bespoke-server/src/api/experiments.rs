//! Experiments (`/v1/experiments`, admin, every change audited): create or replace a draft,
//! start, stop, delete, and the report.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::{JsonBody, KeyPath};
use super::segments::DeletedOut;
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

/// The `{key}` path parameter of the experiment routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct ExperimentName {
    /// The experiment's name
    #[param(max_length = 64)]
    key: String,
}

/// An experiment as the API shows it (times in RFC 3339).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Experiment)]
pub(crate) struct ExperimentOut {
    /// Name (unique).
    name: String,
    status: crate::engine::ExperimentStatus,
    /// When it started, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    started_at: Option<String>,
    /// When it stopped, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
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
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Experiments)]
pub(crate) struct ExperimentsOut {
    /// By name.
    experiments: Vec<ExperimentOut>,
}

/// Every experiment, by name
#[utoipa::path(get, path = "/v1/experiments", operation_id = "listExperiments",
    responses((status = 200, description = "The experiments", body = ExperimentsOut)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<ExperimentsOut>, ApiError> {
    let engine = state.engine.clone();
    let all = blocking(move || engine.experiments().map_err(ApiError::from)).await?;
    Ok(Json(ExperimentsOut {
        experiments: all.into_iter().map(ExperimentOut::from).collect(),
    }))
}

/// One experiment
#[utoipa::path(get, path = "/v1/experiments/{key}", operation_id = "getExperiment",
    params(ExperimentName),
    responses((status = 200, description = "The experiment", body = ExperimentOut),
        (status = 404)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
) -> Result<Json<ExperimentOut>, ApiError> {
    let engine = state.engine.clone();
    let e = blocking(move || engine.experiment(&name).map_err(ApiError::from)).await?;
    Ok(Json(e.into()))
}

/// Create a draft experiment, or replace a draft's definition (audited)
///
/// Variants are checked like ranking requests (a bad filter is a 400 naming
/// `variants[i].config.filter`); metrics must name configured event types (or impression).
/// Only a draft changes: 409 for a running or stopped one.
#[utoipa::path(put, path = "/v1/experiments/{key}", operation_id = "putExperiment",
    params(ExperimentName), request_body = ExperimentSpec,
    responses((status = 200, description = "Replaced", body = ExperimentOut),
        (status = 201, description = "Created", body = ExperimentOut),
        (status = 400), (status = 409), (status = 413), (status = 415)))]
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

/// Start a draft: its route serves the variants from now on (audited)
///
/// 409 (field layer) while another running experiment on the same route shares its layer or
/// either has none.
#[utoipa::path(post, path = "/v1/experiments/{key}/start", operation_id = "startExperiment",
    params(ExperimentName),
    responses((status = 200, description = "Started", body = ExperimentOut),
        (status = 400), (status = 404), (status = 409)))]
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

/// Stop a running experiment (audited)
#[utoipa::path(post, path = "/v1/experiments/{key}/stop", operation_id = "stopExperiment",
    params(ExperimentName),
    responses((status = 200, description = "Stopped", body = ExperimentOut),
        (status = 404), (status = 409)))]
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

/// Delete an experiment and its exposures (audited)
#[utoipa::path(delete, path = "/v1/experiments/{key}", operation_id = "deleteExperiment",
    params(ExperimentName),
    responses((status = 200, description = "Deleted", body = DeletedOut), (status = 404)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
) -> Result<Json<DeletedOut>, ApiError> {
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
    Ok(Json(DeletedOut { deleted: name }))
}

/// Results: per variant users and metric means; per treatment and metric the effect, Welch's interval and p-value, Holm-adjusted p-value, CUPED's variance reduction, the always-valid (mSPRT) p-value and confidence sequence; the sample-ratio-mismatch check
#[utoipa::path(get, path = "/v1/experiments/{key}/report", operation_id = "experimentReport",
    params(ExperimentName),
    responses((status = 200, description = "The report", body = ExperimentReport),
        (status = 404), (status = 409)))]
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
#[openapi(paths(list, get, put, delete, start, stop, report))]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    use crate::engine::{ExperimentSpec, VariantConfig, VariantSpec};
    use crate::openapi::tests::assert_request_schema;

    #[test]
    fn the_request_schemas_say_what_the_types_read() {
        assert_request_schema::<ExperimentSpec>("ExperimentIn");
        assert_request_schema::<VariantSpec>("Variant");
        assert_request_schema::<VariantConfig>("VariantConfig");
    }
}
