//! `GET /v1/models`, `POST /v1/models/train`, `POST /v1/models/{version}/activate`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::extract::{KeyPath, Params};
use super::{AppState, blocking};
use crate::auth::Caller;
use crate::engine::TrainError;
use crate::error::ApiError;
use crate::models::LoadError;

impl From<TrainError> for ApiError {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Busy => {
                ApiError::new(StatusCode::CONFLICT, "training_in_progress", e.to_string())
            }
            TrainError::NoData => ApiError::new(StatusCode::CONFLICT, "no_data", e.to_string()),
            TrainError::Store(e) => e.into(),
            TrainError::Load(e) => e.into(),
            TrainError::Threads(_) | TrainError::Tune(_) => ApiError::internal("training", &e),
        }
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Store(e) => e.into(),
            other => ApiError::internal("loading a model", &other),
        }
    }
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let engine = state.engine.clone();
    let (models, status, cluster) = blocking(move || {
        Ok((
            engine.models()?,
            engine.training_status(),
            engine.cluster_status(),
        ))
    })
    .await?;
    let active = models.iter().find(|m| m.active).map(|m| m.version);
    let models: Vec<Value> = models
        .into_iter()
        .rev()
        .map(|m| json!({ "version": m.version, "active": m.active, "bytes": m.bytes, "meta": m.meta }))
        .collect();
    Ok(Json(
        json!({ "active": active, "training": status, "cluster": cluster, "models": models }),
    ))
}

pub(crate) async fn train(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    params.allow(&["wait"])?;
    run(state, caller, params.bool("wait", false)?, None).await
}

/// Trains (with `budget`: tunes first) on behalf of `caller`: with `wait`, answers with the
/// outcome; otherwise 202 at once and the run goes on in the background.
async fn run(
    state: AppState,
    caller: Caller,
    wait: bool,
    budget: Option<usize>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let engine = state.engine.clone();
    let job = move |engine: &crate::Engine| match budget {
        Some(b) => engine.tune_by(&caller.prefix, b, |_| {}),
        None => engine.train_by(&caller.prefix, |_| {}),
    };
    if wait {
        let outcome = blocking(move || job(&engine).map_err(ApiError::from)).await?;
        return Ok((StatusCode::OK, Json(json!(outcome))));
    }
    if engine.training_status().running {
        return Err(TrainError::Busy.into());
    }
    tokio::task::spawn_blocking(move || {
        if let Err(e) = job(&engine) {
            tracing::warn!(target: "train::lifecycle", error = %e, tune = budget.is_some(), "training requested over the API failed");
        }
    });
    let mut started = json!({ "status": "started" });
    if let Some(b) = budget {
        started["budget"] = json!(b);
    }
    Ok((StatusCode::ACCEPTED, Json(started)))
}

pub(crate) async fn activate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(version): KeyPath,
) -> Result<Json<Value>, ApiError> {
    let version: u64 = version.parse().map_err(|_| {
        ApiError::invalid(
            "version",
            format!("version must be a model version number, got {version:?}"),
        )
    })?;
    let engine = state.engine.clone();
    blocking(move || {
        {
            engine.activate(version)?;
            engine.access().audit(
                &caller.prefix,
                "model.activate",
                Some(&version.to_string()),
                None,
            );
            Ok::<_, LoadError>(())
        }
        .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(json!({ "active": version })))
}

/// `POST /v1/models/tune?budget=N&wait=true`: tunes model types and hyperparameters on the
/// stored data, then trains with the result (see `models::tuning`).
pub(crate) async fn tune(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    params.allow(&["wait", "budget"])?;
    let wait = params.bool("wait", false)?;
    let default = state.engine.settings().training.tune_budget;
    let budget = params.int("budget", default, 1, 1000)?;
    run(state, caller, wait, Some(budget)).await
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(crate) struct Api;
