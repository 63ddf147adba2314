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
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::extract::{JsonBody, KeyParam, KeyPath, Params};
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

/// The `{key}` path parameter of the segment routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct SegmentName {
    /// The segment's name: 1 to 64 ASCII letters, digits, '-', '_' or '.'
    #[param(max_length = 64)]
    key: String,
}

/// Answer of a deletion by name (segments, experiments).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeletedByName)]
pub(crate) struct DeletedOut {
    /// The name deleted.
    pub(super) deleted: String,
}

/// Answer of `GET /v1/segments`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Segments)]
pub(crate) struct SegmentsOut {
    /// By name.
    segments: Vec<Segment>,
}

/// Every segment, by name, with its last refresh and export
#[utoipa::path(get, path = "/v1/segments", operation_id = "listSegments",
    responses((status = 200, description = "The segments", body = SegmentsOut)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<SegmentsOut>, ApiError> {
    let engine = state.engine.clone();
    let segments = blocking(move || engine.segments().map_err(ApiError::from)).await?;
    Ok(Json(SegmentsOut { segments }))
}

/// One segment: its definition, last refresh (with cluster descriptions), last export, next scheduled refresh
#[utoipa::path(get, path = "/v1/segments/{key}", operation_id = "getSegment", params(SegmentName),
    responses((status = 200, description = "The segment", body = Segment), (status = 404)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    KeyPath(name): KeyPath,
) -> Result<Json<Segment>, ApiError> {
    let engine = state.engine.clone();
    let s = blocking(move || engine.segment(&name).map_err(ApiError::from)).await?;
    Ok(Json(s))
}

/// Answer of `PUT /v1/segments/{key}`: the segment, and on creation its webhook secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SegmentPut)]
pub(crate) struct PutOut {
    #[serde(flatten)]
    segment: Segment,
    /// Only in the response that created the segment: whsec_ and 64 hex digits, the HMAC key
    /// (as ASCII bytes) of its webhook deliveries
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

/// Create a segment or replace its definition (audited)
///
/// A rule segment's expression is checked (a 400 names `expression` and the position); a
/// learned segment's k is 2 to 64. `refresh` (at least 5m) schedules recomputation; `export`
/// (needs `refresh`) sends the members to a plain http:// webhook after each scheduled refresh,
/// signed with the segment's secret, which the response that creates the segment returns once
/// as `webhook_secret`. The kind cannot change (409). A replaced definition keeps the members
/// until the next refresh.
#[utoipa::path(put, path = "/v1/segments/{key}", operation_id = "putSegment", params(SegmentName),
    request_body = SegmentIn,
    responses((status = 200, description = "Replaced", body = PutOut),
        (status = 201, description = "Created; webhook_secret is shown this once", body = PutOut),
        (status = 400), (status = 409), (status = 413), (status = 415)))]
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

/// Delete a segment, its members, size history and webhook secret (audited)
#[utoipa::path(delete, path = "/v1/segments/{key}", operation_id = "deleteSegment",
    params(SegmentName),
    responses((status = 200, description = "Deleted", body = DeletedOut), (status = 404)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    KeyPath(name): KeyPath,
) -> Result<Json<DeletedOut>, ApiError> {
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
    Ok(Json(DeletedOut { deleted: name }))
}

/// Compute the members now and store them (a new point of the size history; audited)
///
/// Rule: every user's attributes and their events within the expression's window. Learned:
/// k-means on the served model's user vectors, each cluster described by the categories of its
/// members' items and their attribute values. Users who objected to marketing are left out and
/// counted (and, as the docs say, users without personalization or training consent where the
/// segment reads behaviour or vectors). 409 no_model for a learned segment without a trained
/// model, segment_conflict when k exceeds the users, segment_busy while another refresh of it
/// runs.
#[utoipa::path(post, path = "/v1/segments/{key}/refresh", operation_id = "refreshSegment",
    params(SegmentName),
    responses((status = 200, description = "What was computed", body = SegmentRefresh),
        (status = 400), (status = 404), (status = 409)))]
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
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SegmentMembers)]
pub(crate) struct MembersOut {
    /// The segment's name.
    segment: String,
    /// In user order.
    members: Vec<SegmentMember>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// The query parameters of `GET /v1/segments/{key}/members` (read with `Params`, described here).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct MembersQuery {
    /// Learned segments: only this cluster (from 0)
    #[param(minimum = 0)]
    cluster: Option<u32>,
    /// The next_cursor of the previous page
    cursor: Option<String>,
    /// Members per page (JSON only)
    #[param(minimum = 1, maximum = 10000, default = 100)]
    limit: Option<u32>,
    /// `json` (a page), `csv` or `jsonl` (every member, streamed)
    #[param(inline, default = "json")]
    format: Option<ListFormat>,
}

/// How a list of users is answered (the OpenAPI description's enum).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
pub(crate) enum ListFormat {
    Json,
    Csv,
    Jsonl,
}

/// The members: a JSON page in user order, or every member streamed as CSV or JSONL
///
/// Keys are the stored ones (pseudonymous with privacy.pseudonymize). Without format, a page of
/// at most `limit` members after `cursor` (the previous page's next_cursor, opaque; null on the
/// last page). With format=csv (`user,score`, `user,cluster,score` for a learned segment, with
/// a header) or format=jsonl, every member, streamed; cursor and limit are refused then.
#[utoipa::path(get, path = "/v1/segments/{key}/members", operation_id = "segmentMembers",
    params(SegmentName, MembersQuery),
    responses((status = 200, description = "A page, or the stream", content(
            (MembersOut = "application/json"),
            (String = "text/csv"),
            (String = "application/x-ndjson"))),
        (status = 400), (status = 404)))]
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
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SegmentSizes)]
pub(crate) struct SizesOut {
    /// The segment's name.
    segment: String,
    /// Oldest first.
    sizes: Vec<SizePoint>,
}

/// The size after each refresh, oldest first (per cluster too for a learned segment)
#[utoipa::path(get, path = "/v1/segments/{key}/sizes", operation_id = "segmentSizes",
    params(SegmentName),
    responses((status = 200, description = "The size history", body = SizesOut), (status = 404)))]
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
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = UserSegments)]
pub(crate) struct UserSegmentsOut {
    /// The user's key.
    user: String,
    segments: Vec<UserSegment>,
}

/// The segments a user belongs to (stored memberships, as of each segment's last refresh)
#[utoipa::path(get, path = "/v1/users/{key}/segments", operation_id = "userSegments",
    params(KeyParam),
    responses((status = 200, description = "The user's segments", body = UserSegmentsOut),
        (status = 400), (status = 404)))]
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
#[openapi(paths(list, get, put, delete, refresh, members, sizes, of_user))]
pub(crate) struct Api;

#[cfg(test)]
mod tests {
    use crate::openapi::tests::assert_request_schema;

    #[test]
    fn the_request_schemas_say_what_the_types_read() {
        assert_request_schema::<crate::engine::SegmentIn>("SegmentIn");
        assert_request_schema::<crate::engine::ExportIn>("SegmentExportIn");
    }
}
