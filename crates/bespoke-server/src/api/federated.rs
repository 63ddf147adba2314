//! `/v1/federated/...`: federated training rounds over HTTP (`engine::federated`,
//! docs/federated-http.md). Devices need only the `read` scope (they carry a front-end's
//! key); starting a run, closing phases and the status need `admin`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, extract::FromRequest};
use bespoke_client::secagg::RevealedSeed;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::{JsonBody, KeyPath, parse_json};
use super::{AppState, blocking};
use crate::auth::Caller;
use crate::engine::federated::{
    FedError, FedErrorKind, RoundView, StartParams, StatusView, Update, parse_key,
};
use crate::error::ApiError;

/// The hard ceiling of an update body, whatever the layout: the route's `DefaultBodyLimit`.
/// The layout's own limit (`Engine::federated_body_limit`) is checked below it.
pub(crate) const UPDATE_BODY_CEILING: usize = 256 << 20;

impl From<FedError> for ApiError {
    fn from(e: FedError) -> Self {
        let status = match e.kind {
            FedErrorKind::Invalid => StatusCode::BAD_REQUEST,
            FedErrorKind::Conflict => StatusCode::CONFLICT,
            FedErrorKind::NotParticipant => StatusCode::FORBIDDEN,
            FedErrorKind::NoRun => StatusCode::NOT_FOUND,
            FedErrorKind::Internal => {
                return ApiError::internal("federated", &e.message);
            }
        };
        let err = ApiError::new(status, e.code, e.message);
        if e.field.is_empty() {
            err
        } else {
            err.at(e.field)
        }
    }
}

/// `POST /v1/federated/start`: every field optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FederatedStart)]
pub(crate) struct StartBody {
    /// Factor dimension (default 32, at most 256)
    factors: Option<usize>,
    /// `λ` (default 10)
    regularization: Option<f64>,
    /// Confidence slope `α` (default 1)
    alpha: Option<f64>,
    /// L2 clip norm of each update (default 5)
    clip: Option<f64>,
    /// Privacy budget ε at δ = 1/population; picks the noise multiplier for `rounds`
    /// (none: no central noise unless `noise_multiplier` is given)
    epsilon: Option<f64>,
    /// Central noise multiplier σ (overrides the one `epsilon` would pick)
    noise_multiplier: Option<f64>,
    /// Planned rounds (default 10)
    rounds: Option<u64>,
    /// Users the model is for (default: the users in the store)
    population: Option<usize>,
    /// Fewest clients a round needs (default 3, at least 2)
    min_clients: Option<usize>,
    /// Expected clients per round, to pick σ from the budget (default `min_clients`)
    expected_clients: Option<usize>,
    /// Neighbours per client in the masking graph (default `secagg::default_degree`)
    neighbours: Option<usize>,
    /// Masked updates (default true); false takes plain `f32` updates
    secure_aggregation: Option<bool>,
    /// Damping in units of the noise's std (default 10)
    damping: Option<f64>,
    /// Seed of the initial factors (default 0)
    seed: Option<u64>,
}

/// Start a federated training run
///
/// Over the catalog's servable items, with small random factors. Replaces any run in
/// progress. The run lives in memory: a restart ends it.
#[utoipa::path(post, path = "/v1/federated/start", operation_id = "federatedStart",
    request_body = StartBody,
    responses((status = 200, description = "Started", body = StatusView),
        (status = 400), (status = 409), (status = 415)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<StartBody>,
) -> Result<Json<StatusView>, ApiError> {
    let engine = state.engine.clone();
    blocking(move || {
        let status = engine.federated_start(StartParams {
            factors: b.factors,
            regularization: b.regularization,
            alpha: b.alpha,
            clip: b.clip,
            epsilon: b.epsilon,
            noise_multiplier: b.noise_multiplier,
            rounds: b.rounds,
            population: b.population,
            min_clients: b.min_clients,
            expected_clients: b.expected_clients,
            neighbours: b.neighbours,
            secure_aggregation: b.secure_aggregation,
            damping: b.damping,
            seed: b.seed,
        })?;
        engine
            .access()
            .audit(&caller.prefix, "federated.start", None, None);
        Ok(status)
    })
    .await
    .map(Json)
}

/// A bundle's bytes (docs/on-device.md has the format).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Named by the OpenAPI description only.
struct FederatedBundleBytes(Vec<u8>);

/// The run's current item factors as a signed bundle
///
/// `f32` factors signed with the key of `GET /v1/device/key`; map a history to rows with
/// `History::weights` (no recency or recent boost: training folds in summed weights).
#[utoipa::path(get, path = "/v1/federated/model", operation_id = "federatedModel",
    responses((status = 200, description = "The bundle", body = FederatedBundleBytes,
            content_type = "application/octet-stream",
            headers(("X-Federated-Round" = u64, description = "The round these factors are for"))),
        (status = 404)))]
pub(crate) async fn model(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine.clone();
    let (bytes, round) = blocking(move || Ok(engine.federated_model()?)).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static("x-federated-round"),
                HeaderValue::from(round),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The current round: phase, layout, participants, reveal requests
#[utoipa::path(get, path = "/v1/federated/round", operation_id = "federatedRound",
    responses((status = 200, description = "The round", body = RoundView), (status = 404)))]
pub(crate) async fn round(State(state): State<AppState>) -> Result<Json<RoundView>, ApiError> {
    let engine = state.engine.clone();
    blocking(move || Ok(engine.federated_round()?))
        .await
        .map(Json)
}

/// The run's settings and per-round history
#[utoipa::path(get, path = "/v1/federated/status", operation_id = "federatedStatus",
    responses((status = 200, description = "The run", body = StatusView), (status = 404)))]
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<StatusView>, ApiError> {
    let engine = state.engine.clone();
    blocking(move || Ok(engine.federated_status()?))
        .await
        .map(Json)
}

/// `POST /v1/federated/join`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FederatedJoin)]
pub(crate) struct JoinBody {
    /// The client's id for this round (the order of ids decides who adds each pair's mask)
    client_id: u64,
    /// Its X25519 public key, 64 hex digits
    public_key: String,
}

/// Join the current round (phase `join`)
#[utoipa::path(post, path = "/v1/federated/join", operation_id = "federatedJoin",
    request_body = JoinBody,
    responses((status = 200, description = "Joined", body = RoundView),
        (status = 400), (status = 404), (status = 409), (status = 415)))]
pub(crate) async fn join(
    State(state): State<AppState>,
    JsonBody(b): JsonBody<JoinBody>,
) -> Result<Json<RoundView>, ApiError> {
    let key = parse_key(&b.public_key).ok_or_else(|| {
        ApiError::invalid(
            "public_key",
            "public_key must be 64 hexadecimal digits (an X25519 public key)",
        )
    })?;
    // A low-order key makes every neighbour's mask fail (`SecAggError::WeakKey`): refused
    // here, with one key agreement against a throwaway key, rather than breaking the round.
    let probe = bespoke_client::secagg::ClientKeys::from_secret([7; 32]);
    if bespoke_client::secagg::mask(&[], 0, b.client_id ^ 1, &probe, &[(b.client_id, key)]).is_err()
    {
        return Err(ApiError::invalid(
            "public_key",
            "public_key is a low-order X25519 point: no shared secret can come from it",
        ));
    }
    let engine = state.engine.clone();
    blocking(move || Ok(engine.federated_join(b.client_id, key)?))
        .await
        .map(Json)
}

/// The `{round}` path parameter.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
struct RoundParam {
    /// The current round's number
    #[param(minimum = 1)]
    round: u64,
}

fn round_number(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid(
            "round",
            format!("round must be a round number, got {text:?}"),
        )
    })
}

/// Close the join phase: fix the participants and the neighbour graph (phase `submit`)
#[utoipa::path(post, path = "/v1/federated/rounds/{round}/close-join",
    operation_id = "federatedCloseJoin", params(RoundParam),
    responses((status = 200, description = "In submit", body = RoundView),
        (status = 400), (status = 404), (status = 409)))]
pub(crate) async fn close_join(
    State(state): State<AppState>,
    KeyPath(round): KeyPath,
) -> Result<Json<RoundView>, ApiError> {
    let round = round_number(&round)?;
    let engine = state.engine.clone();
    blocking(move || Ok(engine.federated_close_join(round)?))
        .await
        .map(Json)
}

/// Close the submit phase: drop the clients that did not submit and ask survivors for seeds
///
/// Aggregates at once when nobody dropped out; abandons the round (factors unchanged) when
/// the smallest group of survivors is below `min_clients`.
#[utoipa::path(post, path = "/v1/federated/rounds/{round}/close",
    operation_id = "federatedClose", params(RoundParam),
    responses((status = 200, description = "In unmask, or the next round", body = RoundView),
        (status = 400), (status = 404), (status = 409)))]
pub(crate) async fn close(
    State(state): State<AppState>,
    KeyPath(round): KeyPath,
) -> Result<Json<RoundView>, ApiError> {
    let round = round_number(&round)?;
    let engine = state.engine.clone();
    blocking(move || Ok(engine.federated_close(round)?))
        .await
        .map(Json)
}

/// `POST /v1/federated/rounds/{round}/update`: `masked` or `update`, as the run wants.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FederatedUpdate)]
pub(crate) struct UpdateBody {
    /// The client's id
    client_id: u64,
    /// The masked update: base64 (standard alphabet, padded) of little-endian `u64` words
    masked: Option<String>,
    /// The plain update (secure aggregation off): finite `f32` values
    update: Option<Vec<f64>>,
}

/// Send this client's update (phase `submit`)
///
/// The body limit follows the run's layout (413 above it). A replay into a later round, a
/// second update, a wrong length or non-finite values are refused; nothing accepted is lost.
#[utoipa::path(post, path = "/v1/federated/rounds/{round}/update",
    operation_id = "federatedUpdate", params(RoundParam), request_body = UpdateBody,
    responses((status = 200, description = "Taken", body = RoundView),
        (status = 400), (status = 403), (status = 404), (status = 409), (status = 413),
        (status = 415)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    KeyPath(round): KeyPath,
    req: Request,
) -> Result<Json<RoundView>, ApiError> {
    let round = round_number(&round)?;
    let limit = state
        .engine
        .federated_body_limit()
        .ok_or_else(|| ApiError::from(no_run()))?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("an update body of this run is at most {limit} bytes"),
        )
    };
    // Refused before reading when the client says how much it sends.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mime_ok = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !mime_ok {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        )
        .at("Content-Type"));
    }
    let bytes = Bytes::from_request(req, &state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
        }
    })?;
    if bytes.len() > limit {
        return Err(too_large());
    }
    let body: UpdateBody = parse_json(&bytes)?;
    let update = match (body.masked, body.update) {
        (Some(m), None) => Update::Masked(decode_words(&m)?),
        (None, Some(values)) => {
            let mut out = Vec::with_capacity(values.len());
            for (i, v) in values.into_iter().enumerate() {
                let f = v as f32;
                if !f.is_finite() {
                    return Err(ApiError::invalid(
                        format!("update[{i}]"),
                        format!("update[{i}] is not a finite f32: {v}"),
                    ));
                }
                out.push(f);
            }
            Update::Plain(out)
        }
        _ => {
            return Err(ApiError::invalid(
                "masked",
                "send exactly one of `masked` and `update`",
            ));
        }
    };
    let engine = state.engine.clone();
    blocking(move || Ok(engine.federated_update(round, body.client_id, update)?))
        .await
        .map(Json)
}

fn no_run() -> FedError {
    FedError {
        kind: FedErrorKind::NoRun,
        code: "no_run",
        field: "",
        message: "no federated run: POST /v1/federated/start".into(),
    }
}

/// Standard base64 (padded) of little-endian `u64` words.
fn decode_words(text: &str) -> Result<Vec<u64>, ApiError> {
    let bad = |why: &str| {
        ApiError::invalid(
            "masked",
            format!("masked must be base64 of u64 words: {why}"),
        )
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(bad("length not a multiple of 4"));
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (n, q) in bytes.chunks_exact(4).enumerate() {
        let pad = if n + 1 == quads {
            q.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return Err(bad("too much padding"));
        }
        let mut acc = 0u32;
        for &c in &q[..4 - pad] {
            acc = (acc << 6) | value(c).ok_or_else(|| bad("a character outside the alphabet"))?;
        }
        acc <<= 6 * pad as u32;
        let three = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    let (words, rest) = out.as_chunks::<8>();
    if !rest.is_empty() {
        return Err(bad("not a whole number of 8-byte words"));
    }
    Ok(words.iter().map(|w| u64::from_le_bytes(*w)).collect())
}

/// One revealed seed (`secagg::RevealedSeed`).
#[derive(ToSchema)]
#[allow(dead_code)] // Named by the OpenAPI description only.
struct RevealedSeedDoc {
    /// The smaller id of the pair
    a: u64,
    /// The larger id of the pair
    b: u64,
    /// The pair's seed, 64 hex digits
    seed: String,
}

/// `POST /v1/federated/rounds/{round}/reveal`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FederatedReveal)]
pub(crate) struct RevealBody {
    /// The survivor's id
    client_id: u64,
    /// One seed per dropped neighbour named in its reveal request
    #[schema(value_type = Vec<RevealedSeedDoc>)]
    seeds: Vec<RevealedSeed>,
}

/// Reveal the seeds shared with dropped neighbours (phase `unmask`)
///
/// When the last survivor asked has answered, the server aggregates, noises the sum (when
/// the run has noise), steps the factors and opens the next round.
#[utoipa::path(post, path = "/v1/federated/rounds/{round}/reveal",
    operation_id = "federatedReveal", params(RoundParam), request_body = RevealBody,
    responses((status = 200, description = "Taken", body = RoundView),
        (status = 400), (status = 403), (status = 404), (status = 409), (status = 415)))]
pub(crate) async fn reveal(
    State(state): State<AppState>,
    KeyPath(round): KeyPath,
    JsonBody(b): JsonBody<RevealBody>,
) -> Result<Json<RoundView>, ApiError> {
    let round = round_number(&round)?;
    let engine = state.engine.clone();
    blocking(move || Ok(engine.federated_reveal(round, b.client_id, b.seeds)?))
        .await
        .map(Json)
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(start, model, round, status, join, close_join, close, update, reveal),
    components(schemas(RevealedSeedDoc))
)]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    use super::decode_words;

    #[test]
    fn base64_words_decode() {
        // 1u64 and u64::MAX little-endian: 01 00*7 ff*8.
        let text = "AQAAAAAAAAD//////////w==";
        assert_eq!(decode_words(text).unwrap(), vec![1, u64::MAX]);
        assert!(decode_words("AQAAAAAAAA==").is_err());
        assert!(decode_words("A*AA").is_err());
    }
}
