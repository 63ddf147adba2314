//! The device bundle and its public key as HTTP answers, shared by `GET /v1/device/*` (`api`)
//! and the dashboard's on-device demo page, so that the page ranks with the very bytes a
//! device gets. Its own module so that neither of those two imports the other.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bespoke_client::Encoding;
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::Engine;
use crate::error::ApiError;

/// Runs blocking engine work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| ApiError::internal("blocking task", &e))?
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

/// The public key as `GET /v1/device/key` gives it (the dashboard's demo page shows the same).
pub(crate) async fn public_key(engine: Arc<Engine>) -> Result<KeyOut, ApiError> {
    let key = blocking(move || engine.device_public_key().map_err(ApiError::from)).await?;
    Ok(KeyOut {
        public_key: key.iter().map(|b| format!("{b:02x}")).collect(),
        algorithm: "Ed25519",
    })
}
