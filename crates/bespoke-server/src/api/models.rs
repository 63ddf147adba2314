//! `GET /v1/models`, `POST /v1/models/train`, `POST /v1/models/{version}/activate`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::extract::{KeyPath, Params};
use super::{AppState, blocking};
use crate::auth::Caller;
use crate::engine::{ClusterStatus, TrainError, TrainOutcome, TrainingStatus};
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

/// Model versions, the active one, and what the trainer and this node are doing.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Models)]
pub(crate) struct ModelsOut {
    /// The version being served.
    active: Option<u64>,
    /// The trainer's status.
    training: TrainingStatus,
    /// This node on a shared store: shared_store, leader (holds the scheduler leadership),
    /// applied_seq (the last event applied to its memory).
    cluster: ClusterStatus,
    /// Stored versions, newest first.
    models: Vec<ModelOut>,
}

/// A stored model version.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Model)]
pub(crate) struct ModelOut {
    /// Its number.
    version: u64,
    /// Whether it is served.
    active: bool,
    /// Its stored size.
    bytes: u64,
    /// Training time, data counts, offline metrics, the tuning's choice.
    #[schema(value_type = Object)]
    meta: Value,
}

/// A training run started in the background.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TrainStarted {
    /// `started`.
    status: &'static str,
    /// Configurations the tuning will try (tuning only).
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<usize>,
}

/// The version now served.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Activated {
    /// Its number.
    active: u64,
}

/// The query of `POST /v1/models/train` (doc only: read with `Params`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct TrainQuery {
    /// Answer when the new version is saved (and activated, with training.auto_activate)
    #[param(default = false)]
    wait: Option<bool>,
}

/// The query of `POST /v1/models/tune` (doc only: read with `Params`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct TuneQuery {
    /// Answer when the tuned version is saved
    #[param(default = false)]
    wait: Option<bool>,
    /// Configurations to train and validate; default training.tune_budget
    #[param(minimum = 1, maximum = 1000)]
    budget: Option<usize>,
}

/// The `{version}` path parameter.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
struct VersionParam {
    /// A stored model version
    #[param(minimum = 1)]
    version: u64,
}

/// Model versions, the active one, their metrics, and the trainer's status
#[utoipa::path(get, path = "/v1/models", operation_id = "listModels",
    responses((status = 200, description = "Models", body = ModelsOut)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<ModelsOut>, ApiError> {
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
    let models = models
        .into_iter()
        .rev()
        .map(|m| ModelOut {
            version: m.version,
            active: m.active,
            bytes: m.bytes,
            meta: m.meta,
        })
        .collect();
    Ok(Json(ModelsOut {
        active,
        training: status,
        cluster,
        models,
    }))
}

/// Train new models from everything stored
///
/// Without wait, starts training in the background and answers 202; with wait=true, answers
/// when the new version is saved (and activated, with training.auto_activate).
#[utoipa::path(post, path = "/v1/models/train", operation_id = "trainModels", params(TrainQuery),
    responses((status = 200, description = "Trained", body = TrainOutcome),
        (status = 202, description = "Started", body = TrainStarted),
        (status = 400), (status = 409)))]
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
        return Ok((StatusCode::OK, Json(to_json(&outcome))));
    }
    if engine.training_status().running {
        return Err(TrainError::Busy.into());
    }
    tokio::task::spawn_blocking(move || {
        if let Err(e) = job(&engine) {
            tracing::warn!(target: "train::lifecycle", error = %e, tune = budget.is_some(), "training requested over the API failed");
        }
    });
    let started = TrainStarted {
        status: "started",
        budget,
    };
    Ok((StatusCode::ACCEPTED, Json(to_json(&started))))
}

/// The two answers of a training request share one response type.
fn to_json(answer: &impl Serialize) -> Value {
    serde_json::to_value(answer).unwrap_or(Value::Null)
}

/// Serve a stored model version
#[utoipa::path(post, path = "/v1/models/{version}/activate", operation_id = "activateModel",
    params(VersionParam),
    responses((status = 200, description = "Active", body = Activated),
        (status = 400), (status = 404)))]
pub(crate) async fn activate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(version): KeyPath,
) -> Result<Json<Activated>, ApiError> {
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
    Ok(Json(Activated { active: version }))
}

/// Tune model types and hyperparameters on the stored data, then train with the result
///
/// Random search with successive halving over iALS, EASE (catalogs up to
/// training.ease_max_items), cosine and BM25 item-kNN and the recency weighting of the data,
/// validated on the latest 20% of each user's positive interactions; blends of two model types
/// are kept when they validate better. The new version's meta.tuning records the result; later
/// trainings reuse it, and model=auto serves what it chose. Without wait, answers 202 and runs
/// in the background.
#[utoipa::path(post, path = "/v1/models/tune", operation_id = "tuneModels", params(TuneQuery),
    responses((status = 200, description = "Tuned and trained", body = TrainOutcome),
        (status = 202, description = "Started", body = TrainStarted),
        (status = 400), (status = 409)))]
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
#[openapi(paths(list, train, tune, activate))]
pub(crate) struct Api;
