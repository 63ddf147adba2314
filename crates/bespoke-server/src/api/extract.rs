//! Request extractors that turn every malformed input into an [`ApiError`] naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body: requires `Content-Type: application/json`, respects the body-size limit and
/// reports parse errors with the JSON path of the offending value (`events[2].timestamp`).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected Content-Type: application/json, got {content_type:?}"),
            )
            .at("Content-Type"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body exceeds limits.max_body_bytes",
                )
            } else if is_body_timeout(&e) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the request body stalled for longer than server.body_timeout_secs; nothing of it was stored",
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Whether reading the body failed because it stalled: axum reports every body error as one
/// rejection (400), with tower-http's [`TimeoutError`](tower_http::timeout::TimeoutError) a few
/// boxes down its `source` chain.
fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Parses JSON, naming the path of the first offending value.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON body: {inner}"),
        );
        if path == "." { err } else { err.at(path) }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON body: {e}"),
        )
    })?;
    Ok(value)
}

/// The `{key}` path segment, percent-decoded and validated as a key.
#[derive(Debug)]
pub(crate) struct KeyPath(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(key) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::invalid("key", format!("invalid key in path: {}", e.body_text()))
                })?;
        Ok(KeyPath(key))
    }
}

/// The query string as ordered `(name, value)` pairs, checked against the names a route accepts.
#[derive(Debug)]
pub(crate) struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = percent_decode(name).map_err(|why| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("a query parameter name {why}"),
                )
            })?;
            let value = percent_decode(value).map_err(|why| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("the value of {name} {why}"),
                )
                .at(name.clone())
            })?;
            pairs.push((name, value));
        }
        Ok(Params(pairs))
    }
}

/// Decodes `application/x-www-form-urlencoded` text strictly: a malformed escape or invalid
/// UTF-8 is an error instead of a silent U+FFFD.
fn percent_decode(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) else {
                    return Err("has a malformed %-escape");
                };
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "is not valid UTF-8")
}

impl Params {
    /// Fails on any parameter not in `allowed`, so that a typo (`?categroy=`) is not ignored.
    pub(crate) fn allow(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for (name, _) in &self.0 {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::invalid(
                    name.clone(),
                    format!(
                        "unknown query parameter {name:?}; accepted: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The last value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of `name`, each split on commas, empty parts dropped (`?category=a,b&category=c`).
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// An integer in `min..=max`, or `default` when absent.
    pub(crate) fn int(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let n: i128 = raw.trim().parse().map_err(|_| {
            ApiError::invalid(
                name,
                format!("{name} must be an integer from {min} to {max}, got {raw:?}"),
            )
        })?;
        if n < min as i128 || n > max as i128 {
            return Err(ApiError::invalid(
                name,
                format!("{name} must be from {min} to {max}, got {n}"),
            ));
        }
        Ok(n as usize)
    }

    /// `true`/`false` (also `1`/`0`), or `default` when absent.
    pub(crate) fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(ApiError::invalid(
                name,
                format!("{name} must be true or false, got {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use hyper::body::Frame;
    use tower_http::timeout::TimeoutBody;

    use super::*;

    /// A body whose client sent nothing more.
    struct Stalled;

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_stalled_body_is_408_not_400() {
        let body = TimeoutBody::new(Duration::from_millis(10), Stalled);
        let req = Request::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(axum::body::Body::new(body))
            .unwrap();
        let err = JsonBody::<serde_json::Value>::from_request(req, &())
            .await
            .unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::REQUEST_TIMEOUT, "body_timeout")
        );
    }
}

/// The `{key}` path parameter, for the OpenAPI description of the routes that take one.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the derive only.
pub(crate) struct KeyParam {
    /// External key: 1 to limits.max_key_bytes bytes of UTF-8, no control or invisible characters
    key: String,
}
