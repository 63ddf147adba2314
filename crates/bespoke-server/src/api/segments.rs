//! Segments (`/v1/segments`, admin; changes audited): definitions, refresh, members as JSON
//! pages or a CSV/JSONL stream, size history; and a user's segments (`write`). See
//! `engine::segments` and `docs/segments.md`.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hyper::body::Frame;
use serde::Serialize;
use serde_json::{Value, json};

use super::extract::{JsonBody, KeyPath, Params};
use super::{AppState, blocking, validate_key};
use crate::auth::Caller;
use crate::engine::{
    MAX_MEMBERS_PAGE, MemberFormat, Segment, SegmentError, SegmentIn, SegmentMember,
    SegmentRefresh, SizePoint, UserSegment,
};
use crate::error::ApiError;

/// Members per JSON page when `limit` is absent.
const DEFAULT_PAGE: usize = 100;
/// Pages a stream keeps ready ahead of a slow reader.
const STREAM_AHEAD: usize = 4;

impl From<SegmentError> for ApiError {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::Invalid { field, message } => ApiError::invalid(field, message),
            SegmentError::NotFound(name) => ApiError::not_found("segment", &name),
            SegmentError::Conflict { field, message } => {
                ApiError::new(StatusCode::CONFLICT, "segment_conflict", message).at(field)
            }
            SegmentError::Busy(_) => {
                ApiError::new(StatusCode::CONFLICT, "segment_busy", e.to_string())
            }
            SegmentError::NoModel => ApiError::new(StatusCode::CONFLICT, "no_model", e.to_string()),
            SegmentError::Store(e) => e.into(),
            SegmentError::Io(e) => ApiError::internal("writing segment members", &e),
            SegmentError::Internal(m) => ApiError::internal("segment", &m),
        }
    }
}

/// Answer of `GET /v1/segments`.
#[derive(Debug, Serialize)]
pub(crate) struct SegmentsOut {
    segments: Vec<Segment>,
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<SegmentsOut>, ApiError> {
    let engine = state.engine.clone();
    let segments = blocking(move || engine.segments().map_err(ApiError::from)).await?;
    Ok(Json(SegmentsOut { segments }))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
) -> Result<Json<Segment>, ApiError> {
    let engine = state.engine.clone();
    let s = blocking(move || engine.segment(&name).map_err(ApiError::from)).await?;
    Ok(Json(s))
}

/// Answer of `PUT /v1/segments/{key}`: the segment, and on creation its webhook secret.
#[derive(Debug, Serialize)]
pub(crate) struct PutOut {
    #[serde(flatten)]
    segment: Segment,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

/// `PUT /v1/segments/{key}`: creates a segment or replaces its definition.
pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
    JsonBody(input): JsonBody<SegmentIn>,
) -> Result<(StatusCode, Json<PutOut>), ApiError> {
    let engine = state.engine.clone();
    let put = blocking(move || {
        let put = engine.put_segment(&name, input)?;
        let detail = serde_json::to_value(&put.segment.spec).ok();
        engine
            .access()
            .audit(&caller.prefix, "segment.put", Some(&name), detail);
        Ok::<_, ApiError>(put)
    })
    .await?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(PutOut {
            segment: put.segment,
            webhook_secret: put.webhook_secret,
        }),
    ))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
) -> Result<Json<Value>, ApiError> {
    let engine = state.engine.clone();
    let n = name.clone();
    let deleted = blocking(move || {
        let deleted = engine.delete_segment(&n)?;
        if deleted {
            engine
                .access()
                .audit(&caller.prefix, "segment.delete", Some(&n), None);
        }
        Ok::<_, ApiError>(deleted)
    })
    .await?;
    if !deleted {
        return Err(ApiError::not_found("segment", &name));
    }
    Ok(Json(json!({ "deleted": name })))
}

/// `POST /v1/segments/{key}/refresh`: computes the members now.
pub(crate) async fn refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
) -> Result<Json<SegmentRefresh>, ApiError> {
    let engine = state.engine.clone();
    let r = blocking(move || {
        let r = engine.refresh_segment(&name, crate::time::now_ms())?;
        engine.access().audit(
            &caller.prefix,
            "segment.refresh",
            Some(&name),
            Some(json!({ "size": r.size })),
        );
        Ok::<_, ApiError>(r)
    })
    .await?;
    Ok(Json(r))
}

/// A page of `GET /v1/segments/{key}/members`.
#[derive(Debug, Serialize)]
pub(crate) struct MembersOut {
    segment: String,
    members: Vec<SegmentMember>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// `GET /v1/segments/{key}/members`: a JSON page (`cursor`, `limit`), or with `format=csv` or
/// `format=jsonl` every member as a stream; `cluster` picks one cluster of a learned segment.
pub(crate) async fn members(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
    params: Params,
) -> Result<Response, ApiError> {
    params.allow(&["cursor", "limit", "format", "cluster"])?;
    let format = match params.get("format") {
        None | Some("json") => None,
        Some(f) => Some(MemberFormat::parse(f).ok_or_else(|| {
            ApiError::invalid(
                "format",
                format!("format must be json, csv or jsonl, got {f:?}"),
            )
        })?),
    };
    let cluster = params
        .get("cluster")
        .map(|c| {
            c.parse::<u32>().map_err(|_| {
                ApiError::invalid("cluster", format!("cluster must be a number, got {c:?}"))
            })
        })
        .transpose()?;
    let engine = state.engine.clone();
    let Some(format) = format else {
        let limit = params.int("limit", DEFAULT_PAGE, 1, MAX_MEMBERS_PAGE)?;
        let after = params
            .get("cursor")
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse::<u32>().map_err(|_| {
                    ApiError::invalid(
                        "cursor",
                        "cursor must be the next_cursor of a previous page",
                    )
                })
            })
            .transpose()?;
        let n = name.clone();
        let page = blocking(move || {
            engine
                .segment_members(&n, cluster, after, limit)
                .map_err(ApiError::from)
        })
        .await?;
        return Ok(Json(MembersOut {
            segment: name,
            members: page.members,
            next_cursor: page.next.map(|id| id.to_string()),
        })
        .into_response());
    };
    for paged in ["cursor", "limit"] {
        if params.get(paged).is_some() {
            return Err(ApiError::invalid(
                paged,
                format!(
                    "{paged} pages the JSON listing; format={} streams every member",
                    format.extension()
                ),
            ));
        }
    }
    // Errors that can be answered (no segment, a bad cluster) before the stream starts.
    let (e, n) = (engine.clone(), name.clone());
    blocking(move || {
        e.segment_members(&n, cluster, None, 1)
            .map(drop)
            .map_err(ApiError::from)
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_AHEAD);
    let n = name.clone();
    tokio::task::spawn_blocking(move || {
        let written = engine.write_segment_members(&n, cluster, format, |piece| {
            tx.blocking_send(Ok(Bytes::from(piece)))
                .map_err(|_| std::io::Error::other("the client went away"))
        });
        match written {
            Ok(_) | Err(SegmentError::Io(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "streaming segment members failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let mut response = Body::new(Stream { rx }).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    // The name is ASCII letters, digits, `-`, `_` and `.` (checked when it was created).
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{name}.{}\"",
        format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// A response body fed page by page from the blocking pool; a full channel holds the producer
/// back, and a client that goes away drops the receiver, which stops it.
struct Stream {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|piece| piece.map(Frame::data)))
    }
}

/// Answer of `GET /v1/segments/{key}/sizes`.
#[derive(Debug, Serialize)]
pub(crate) struct SizesOut {
    segment: String,
    sizes: Vec<SizePoint>,
}

pub(crate) async fn sizes(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
) -> Result<Json<SizesOut>, ApiError> {
    let engine = state.engine.clone();
    let n = name.clone();
    let sizes = blocking(move || engine.segment_sizes(&n).map_err(ApiError::from)).await?;
    Ok(Json(SizesOut {
        segment: name,
        sizes,
    }))
}

/// Answer of `GET /v1/users/{key}/segments`.
#[derive(Debug, Serialize)]
pub(crate) struct UserSegmentsOut {
    user: String,
    segments: Vec<UserSegment>,
}

/// `GET /v1/users/{key}/segments`: the segments the user belongs to, from stored memberships.
pub(crate) async fn of_user(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
) -> Result<Json<UserSegmentsOut>, ApiError> {
    validate_key("key", &key, state.engine.settings().limits.max_key_bytes)?;
    let engine = state.engine.clone();
    let k = key.clone();
    let segments = blocking(move || engine.user_segments(&k).map_err(ApiError::from)).await?;
    let segments = segments.ok_or_else(|| ApiError::not_found("user", &key))?;
    Ok(Json(UserSegmentsOut {
        user: key,
        segments,
    }))
}

/// This module's operations in the OpenAPI document (merged by `api::derived_openapi`).
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(crate) struct Api;
