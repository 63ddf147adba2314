//! `GET /v1/device/bundle` and `GET /v1/device/key`: what on-device ranking needs (see
//! `engine::device` and docs/on-device.md). Both need only the `read` scope: a front-end ships
//! them to browsers and apps, as it ships recommendations.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::Params;
use crate::device_answer::{KeyOut, bundle_answer, encoding, public_key};
use crate::error::ApiError;

/// The query of `GET /v1/device/bundle` (doc only: read with `Params`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
struct BundleQuery {
    /// `f32` (default: the server's exact factors) or `int8` (a quarter of the size, one
    /// scale per item; scores move by the rounding)
    #[param(inline)]
    encoding: Option<EncodingName>,
}

/// A factor encoding.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum EncodingName {
    F32,
    Int8,
}

/// A bundle's bytes (docs/on-device.md has the format).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Named by the OpenAPI description only.
struct DeviceBundleBytes(Vec<u8>);

/// The served iALS model as a signed bundle, for ranking on the device
///
/// The format is described in docs/on-device.md; `bespoke-client` (Rust) and
/// `clients/js/bespoke-device.mjs` verify it with the key from `GET /v1/device/key` and fold a
/// history kept on the device in exactly as the server does. The ETag changes with the content;
/// send it back in If-None-Match to get a 304 while the model and catalog are unchanged. 409
/// no_model before the first training.
#[utoipa::path(get, path = "/v1/device/bundle", operation_id = "deviceBundle",
    params(BundleQuery),
    responses((status = 200, description = "The bundle", body = DeviceBundleBytes,
            content_type = "application/octet-stream",
            headers(("ETag" = String, description = "Identifies the content"),
                ("X-Model-Version" = u64, description = "The model version it holds"))),
        (status = 304, description = "Unchanged since the ETag sent in If-None-Match"),
        (status = 400), (status = 409)))]
pub(crate) async fn bundle(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    params.allow(&["encoding"])?;
    let encoding = encoding(params.get("encoding"))?;
    bundle_answer(state.engine.clone(), encoding, &headers).await
}

/// The Ed25519 public key device bundles are signed with
///
/// The same on every node and across restarts (kept in the store). Pin it in the app, or fetch
/// it once over TLS: a bundle that does not verify with it must not be used.
#[utoipa::path(get, path = "/v1/device/key", operation_id = "deviceKey",
    responses((status = 200, description = "The key", body = KeyOut)))]
pub(crate) async fn key(State(state): State<AppState>) -> Result<Json<KeyOut>, ApiError> {
    public_key(state.engine.clone()).await.map(Json)
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(bundle, key))]
pub(crate) struct Api;
