//! `GET /v1/device/bundle` and `GET /v1/device/key`: what on-device ranking needs (see
//! `engine::device` and docs/on-device.md). Both need only the `read` scope: a front-end ships
//! them to browsers and apps, as it ships recommendations.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bespoke_client::Encoding;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::Params;
use super::{AppState, blocking};
use crate::engine::Engine;
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

/// The encoding `?encoding=` names: `f32` when absent.
pub(crate) fn encoding(name: Option<&str>) -> Result<Encoding, ApiError> {
    match name {
        None | Some("f32") => Ok(Encoding::F32),
        Some("int8") => Ok(Encoding::Int8),
        Some(other) => Err(ApiError::invalid(
            "encoding",
            format!("encoding must be f32 or int8, got {other:?}"),
        )),
    }
}

/// The bundle as an answer, with its ETag (304 when `headers` send it back in `If-None-Match`).
/// Shared with the dashboard's on-device demo page, so that the page ranks with the very bytes
/// a device gets here.
pub(crate) async fn bundle_answer(
    engine: Arc<Engine>,
    encoding: Encoding,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let bundle = blocking(move || engine.device_bundle(encoding).map_err(ApiError::from))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_model",
                "no model has been trained yet: POST /v1/models/train",
            )
        })?;
    // The signature (the last 64 bytes) covers everything else: a fingerprint of the content.
    let tail = &bundle.bytes[bundle.bytes.len().saturating_sub(8)..];
    let etag = format!(
        "\"v{}-{}\"",
        bundle.model_version,
        tail.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::internal("etag", &e))?;
    let version = HeaderValue::from(bundle.model_version);
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::CACHE_CONTROL, no_cache()),
            ],
        )
            .into_response());
    }
    let bytes = Arc::unwrap_or_clone(bundle).bytes;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, no_cache()),
            (header::HeaderName::from_static("x-model-version"), version),
        ],
        bytes,
    )
        .into_response())
}

/// Devices may keep the bundle but must revalidate it (the model changes with each training).
fn no_cache() -> HeaderValue {
    HeaderValue::from_static("no-cache")
}

/// The public key bundles are signed with.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeviceKey)]
pub(crate) struct KeyOut {
    /// The Ed25519 public key, 32 bytes as 64 hexadecimal digits.
    public_key: String,
    /// `Ed25519`.
    algorithm: &'static str,
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

/// The public key as `GET /v1/device/key` gives it (the dashboard's demo page shows the same).
pub(crate) async fn public_key(engine: Arc<Engine>) -> Result<KeyOut, ApiError> {
    let key = blocking(move || engine.device_public_key().map_err(ApiError::from)).await?;
    Ok(KeyOut {
        public_key: key.iter().map(|b| format!("{b:02x}")).collect(),
        algorithm: "Ed25519",
    })
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(bundle, key))]
pub(crate) struct Api;
