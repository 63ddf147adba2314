//! `/dashboard/device`: the on-device ranking demo (docs/on-device.md, "Demo page").
//!
//! The page is the dashboard's, under its session and headers; its script
//! (`assets/device-demo.mjs`) ranks with `clients/js/bespoke-device.mjs`, served from the same
//! bytes the JavaScript tests check. The visitor's events stay in the browser (localStorage):
//! no route here accepts one. The page reads three session endpoints, all `GET`, because the
//! session cookie is scoped to `/dashboard` and `/v1` takes keys only: the public key and the
//! bundle (the very answers of `GET /v1/device/key` and `GET /v1/device/bundle`) and the
//! catalog's titles, which the bundle does not carry.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{ApiSession, Dash, PageSession};
use crate::device_answer::{KeyOut, bundle_answer, encoding, public_key};
use crate::error::ApiError;

/// The page shows titles of at most this many items: past it, keys alone (the page lists 60
/// items at a time anyway, so this only bounds the scan).
const MAX_TITLES: usize = 50_000;

/// Items read from the store per page of the titles' scan.
const SCAN_PAGE: usize = 1_000;

/// `GET /dashboard/device`: the page; everything on it is drawn by its script.
pub(crate) async fn page(State(dash): State<Dash>, PageSession(s): PageSession) -> Response {
    dash.render("device.html", Some(&s), minijinja::context! {})
}

/// `GET /dashboard/api/device/key`: as `GET /v1/device/key`.
pub(crate) async fn key(State(dash): State<Dash>, _: ApiSession) -> Result<Json<KeyOut>, ApiError> {
    public_key(dash.engine.clone()).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BundleQuery {
    encoding: Option<String>,
}

/// `GET /dashboard/api/device/bundle[?encoding=f32|int8]`: as `GET /v1/device/bundle`, ETag
/// and 304 included.
pub(crate) async fn bundle(
    State(dash): State<Dash>,
    _: ApiSession,
    headers: HeaderMap,
    Query(q): Query<BundleQuery>,
) -> Result<Response, ApiError> {
    let encoding = encoding(q.encoding.as_deref())?;
    bundle_answer(dash.engine.clone(), encoding, &headers).await
}

/// Item titles by key.
#[derive(Debug, Serialize)]
pub(crate) struct Titles {
    /// The `title` text field of each item that has one.
    titles: std::collections::BTreeMap<String, String>,
    /// Whether the catalog had more items than were read ([`MAX_TITLES`]).
    truncated: bool,
}

/// `GET /dashboard/api/device/titles`: the catalog's titles, so that the page can name the
/// bundle's items (the bundle holds keys and categories only).
pub(crate) async fn titles(
    State(dash): State<Dash>,
    _: ApiSession,
) -> Result<Json<Titles>, ApiError> {
    let store = dash.engine.store().clone();
    super::json_blocking(move || {
        let mut titles = std::collections::BTreeMap::new();
        let mut after = None;
        let mut read = 0;
        loop {
            let page = store.scan_items(after, SCAN_PAGE)?;
            let Some(last) = page.last() else {
                return Ok(Json(Titles {
                    titles,
                    truncated: false,
                }));
            };
            after = Some(last.idx);
            read += page.len();
            for item in page {
                if let Some(t) = item.text.get("title") {
                    titles.insert(item.key, t.clone());
                }
            }
            if read >= MAX_TITLES {
                let more = !store.scan_items(after, 1)?.is_empty();
                return Ok(Json(Titles {
                    titles,
                    truncated: more,
                }));
            }
        }
    })
    .await
}
