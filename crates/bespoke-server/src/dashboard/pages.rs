//! The dashboard's pages. Each handler reads what it shows from the engine (the same calls the
//! `/v1` handlers make) on the blocking pool and renders one template; charts are drawn in the
//! browser from [`super::charts`].

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Dash, PageSession, blocking, value};
use crate::engine::{AudienceQuery, MAX_AUDIENCE_ITEMS, PopularQuery, PopularSort, RecommendQuery};

/// How many history events, recommendations and similar items a page lists.
const LIST: usize = 20;

/// The `key` a search form sends (a user or item key, or a loop name).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyQuery {
    key: Option<String>,
}

impl Dash {
    /// A search key, trimmed; empty means none; too long or otherwise bad is a 400 page.
    fn search_key(
        &self,
        session: &super::Session,
        key: Option<String>,
    ) -> Result<Option<String>, Response> {
        let Some(key) = key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()) else {
            return Ok(None);
        };
        let max = self.engine.settings().limits.max_key_bytes;
        crate::validate::validate_key("key", &key, max)
            .map_err(|e| self.error(Some(session), StatusCode::BAD_REQUEST, &e.message))?;
        Ok(Some(key))
    }
}

/// `GET /dashboard`: counts, the served model, ingestion, events over time.
pub(crate) async fn overview(State(dash): State<Dash>, PageSession(s): PageSession) -> Response {
    let engine = dash.engine.clone();
    let tally = dash.tally.clone();
    let rate = dash.rate.clone();
    let data = blocking(&dash, &s, move || {
        let activity = {
            let mut t = tally.lock();
            t.update(&engine).map_err(|e| e.to_string())?;
            t.activity(crate::time::now_ms())
        };
        let counts = engine.counts();
        let models = engine.models().map_err(|e| e.to_string())?;
        let active = models.iter().find(|m| m.active).map(|m| {
            json!({ "version": m.version, "created_at": m.meta["created_at"],
                    "kinds": m.meta["models"], "serve": m.meta["serve"] })
        });
        let rate = rate.lock().sample(std::time::Instant::now(), counts.events);
        Ok(json!({
            "counts": counts,
            "activity": activity,
            "model": active,
            "versions": models.len(),
            "training": engine.training_status(),
            "rate_per_minute": format!("{:.1}", rate.per_minute),
            "rate_minutes": rate.over_minutes.round().max(1.0),
        }))
    })
    .await;
    match data {
        Ok(d) => dash.render("overview.html", Some(&s), value(&d)),
        Err(resp) => resp,
    }
}

/// `GET /dashboard/models`: every stored version, its training and metrics; activation.
pub(crate) async fn models(State(dash): State<Dash>, PageSession(s): PageSession) -> Response {
    let engine = dash.engine.clone();
    let data = blocking(&dash, &s, move || {
        let models = engine.models().map_err(|e| e.to_string())?;
        let rows: Vec<Value> = models
            .iter()
            .rev()
            .map(|m| {
                json!({
                    "version": m.version,
                    "active": m.active,
                    "bytes": m.bytes,
                    "created_at": m.meta["created_at"],
                    "kinds": m.meta["models"],
                    "data": m.meta["data"],
                    "training_seconds": m.meta["training_seconds"]["total"],
                    "ndcg": m.meta["metrics"]["auto"]["ndcg@10"],
                })
            })
            .collect();
        let active = models.iter().find(|m| m.active).map(|m| m.version);
        Ok(json!({ "models": rows, "active": active, "training": engine.training_status() }))
    })
    .await;
    match data {
        Ok(d) => dash.render("models.html", Some(&s), value(&d)),
        Err(resp) => resp,
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

/// `POST /dashboard/models/{version}/activate`: serves another stored version (a roll back
/// when it is older), audited as the API's activation is.
pub(crate) async fn activate_model(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    Path(version): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(refused) = dash.check_csrf(&s, &form.csrf) {
        return refused;
    }
    let Ok(version) = version.parse::<u64>() else {
        return dash.error(
            Some(&s),
            StatusCode::BAD_REQUEST,
            "a model version is a whole number",
        );
    };
    let engine = dash.engine.clone();
    let prefix = s.prefix.clone();
    let done = tokio::task::spawn_blocking(move || {
        let r = engine.activate(version);
        if r.is_ok() {
            engine
                .access()
                .audit(&prefix, "model.activate", Some(&version.to_string()), None);
        }
        r
    })
    .await;
    match done {
        Ok(Ok(())) => Redirect::to("/dashboard/models").into_response(),
        Ok(Err(e)) => dash.error(
            Some(&s),
            StatusCode::CONFLICT,
            &format!("could not activate version {version}: {e}"),
        ),
        Err(_) => dash.error(
            Some(&s),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
        ),
    }
}

/// `GET /dashboard/users?key=`: a user's attributes, consent, history and recommendations
/// with their reasons, with links to export and erase.
pub(crate) async fn users(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    Query(q): Query<KeyQuery>,
) -> Response {
    let key = match dash.search_key(&s, q.key) {
        Ok(Some(k)) => k,
        Ok(None) => return dash.render("users.html", Some(&s), minijinja::context! {}),
        Err(resp) => return resp,
    };
    let engine = dash.engine.clone();
    let k = key.clone();
    let data = blocking(&dash, &s, move || {
        let Some(user) = engine.get_user(&k).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let events = engine
            .user_events(&k, None, LIST)
            .map_err(|e| e.to_string())?
            .map(|p| p.items)
            .unwrap_or_default();
        let history: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({ "item": e.item, "type": e.kind, "value": e.value,
                        "at": crate::time::format_rfc3339(e.timestamp) })
            })
            .collect();
        let recs = engine.recommend(
            &k,
            &RecommendQuery {
                n: 10,
                ..RecommendQuery::default()
            },
        );
        Ok(Some(json!({
            "user": {
                "key": k,
                "attributes": serde_json::to_string_pretty(&user.attributes).unwrap_or_default(),
                "consent": user.consent,
                "created_at": crate::time::format_rfc3339(user.created_at),
            },
            "history": history,
            "recs": recs,
        })))
    })
    .await;
    match data {
        Ok(Some(d)) => dash.render("users.html", Some(&s), value(&d)),
        Ok(None) => {
            let mut resp = dash.render(
                "users.html",
                Some(&s),
                minijinja::context! { missing => key },
            );
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
        Err(resp) => resp,
    }
}

/// `GET /dashboard/users/export?key=`: the user's data export (`GET /v1/users/{key}/export`)
/// as a file to save.
pub(crate) async fn export_user(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    Query(q): Query<KeyQuery>,
) -> Response {
    let key = match dash.search_key(&s, q.key) {
        Ok(Some(k)) => k,
        Ok(None) => return dash.error(Some(&s), StatusCode::BAD_REQUEST, "no user key given"),
        Err(resp) => return resp,
    };
    let engine = dash.engine.clone();
    let prefix = s.prefix.clone();
    let k = key.clone();
    let export = blocking(&dash, &s, move || {
        engine.export_user(&prefix, &k).map_err(|e| e.to_string())
    })
    .await;
    match export {
        Ok(Some(export)) => (
            [(
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"user-export.json\"",
            )],
            axum::Json(export),
        )
            .into_response(),
        Ok(None) => dash.error(Some(&s), StatusCode::NOT_FOUND, "no such user"),
        Err(resp) => resp,
    }
}

/// `GET /dashboard/users/erase?key=`: the confirmation step before an erasure.
pub(crate) async fn erase_confirm(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    Query(q): Query<KeyQuery>,
) -> Response {
    match dash.search_key(&s, q.key) {
        Ok(Some(key)) => dash.render("erase.html", Some(&s), minijinja::context! { key }),
        Ok(None) => dash.error(Some(&s), StatusCode::BAD_REQUEST, "no user key given"),
        Err(resp) => resp,
    }
}

#[derive(Deserialize)]
pub(crate) struct EraseForm {
    csrf: String,
    key: String,
    /// The checkbox: present (`on`) when ticked.
    retrain: Option<String>,
}

/// `POST /dashboard/users/erase`: erases the user (as `DELETE /v1/users/{key}`, with
/// `retrain=true` when the box is ticked) and shows the erasure receipt.
pub(crate) async fn erase(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    axum::Form(form): axum::Form<EraseForm>,
) -> Response {
    if let Err(refused) = dash.check_csrf(&s, &form.csrf) {
        return refused;
    }
    let key = match dash.search_key(&s, Some(form.key)) {
        Ok(Some(k)) => k,
        Ok(None) => return dash.error(Some(&s), StatusCode::BAD_REQUEST, "no user key given"),
        Err(resp) => return resp,
    };
    let retrain = form.retrain.is_some();
    let engine = dash.engine.clone();
    let prefix = s.prefix.clone();
    let k = key.clone();
    let receipt = blocking(&dash, &s, move || {
        engine
            .erase_user(&prefix, &k, retrain)
            .map_err(|e| e.to_string())
    })
    .await;
    match receipt {
        Ok(Some(receipt)) => {
            tracing::info!(target: "serve::privacy", events = receipt.removed.events, erasure = %receipt.erasure_id, "erased a user from the dashboard");
            let pretty = serde_json::to_string_pretty(&receipt).unwrap_or_default();
            dash.render(
                "erase.html",
                Some(&s),
                minijinja::context! { key, receipt => value(&receipt), pretty },
            )
        }
        Ok(None) => dash.error(Some(&s), StatusCode::NOT_FOUND, "no such user"),
        Err(resp) => resp,
    }
}

/// `GET /dashboard/items?key=`: an item's attributes, similar items and exposure; without a
/// key, the most popular items.
pub(crate) async fn items(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    Query(q): Query<KeyQuery>,
) -> Response {
    let key = match dash.search_key(&s, q.key) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let engine = dash.engine.clone();
    let tally = dash.tally.clone();
    let k = key.clone();
    let data = blocking(&dash, &s, move || {
        let popular = engine.popular(&PopularQuery {
            n: LIST,
            categories: Vec::new(),
            window: None,
            sort: PopularSort::Count,
        });
        let Some(k) = k else {
            return Ok(Some(json!({ "popular": popular })));
        };
        let Some(item) = engine.get_item(&k).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let shown = {
            let mut t = tally.lock();
            t.update(&engine).map_err(|e| e.to_string())?;
            t.impressions_of(item.idx.0)
        };
        let exposure = {
            let st = engine.serving().state.read();
            st.items.get(&k).map(|idx| {
                let idx = bespoke_algo::ItemIdx(idx);
                let pop = st.live.popularity();
                json!({
                    "impressions": shown,
                    "users": st.live.item_users(idx).len(),
                    "events": pop.count(idx),
                    "weight": format!("{:.1}", pop.total(idx)),
                    "trending": format!("{:.3}", pop.trending(idx, crate::time::now_ms())),
                })
            })
        };
        let similar = engine.similar(&k, 10, None).unwrap_or_default();
        Ok(Some(json!({
            "item": {
                "key": item.key,
                "categories": item.categories,
                "text": item.text,
                "numeric": item.numeric,
                "attributes": serde_json::to_string_pretty(&item.attributes).unwrap_or_default(),
                "available": item.available,
                "created_at": crate::time::format_rfc3339(item.created_at),
            },
            "exposure": exposure,
            "similar": similar,
            "popular": popular,
        })))
    })
    .await;
    match data {
        Ok(Some(d)) => dash.render("items.html", Some(&s), value(&d)),
        Ok(None) => {
            let mut resp = dash.render(
                "items.html",
                Some(&s),
                minijinja::context! { missing => key },
            );
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
        Err(resp) => resp,
    }
}

/// At most this many decisions go into the loops page's off-policy estimates, so that the
/// page answers quickly (the API's evaluation reads up to `decisions.evaluation_max_decisions`).
const OPE_DECISIONS: usize = 5000;

/// `GET /dashboard/loops?key=`: decision loops, and for one, its reward over time and the
/// off-policy estimates of its policy and candidates.
pub(crate) async fn loops(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    Query(q): Query<KeyQuery>,
) -> Response {
    let name = match dash.search_key(&s, q.key) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let engine = dash.engine.clone();
    let data = blocking(&dash, &s, move || {
        let d = engine.decisions();
        let views: Vec<Value> = d
            .names()
            .iter()
            .filter_map(|n| d.view(n).ok())
            .map(|v| serde_json::to_value(v).unwrap_or_default())
            .collect();
        let selected = match &name {
            Some(n) if d.names().contains(n) => {
                let limit = OPE_DECISIONS.min(engine.settings().decisions.evaluation_max_decisions);
                let report = d
                    .evaluate(n, limit, Vec::new())
                    .map(|r| serde_json::to_value(r).unwrap_or_default())
                    .map_err(|e| e.to_string());
                Some(match report {
                    Ok(r) => json!({ "name": n, "report": r }),
                    Err(e) => json!({ "name": n, "report_error": e }),
                })
            }
            Some(n) => Some(json!({ "name": n, "missing": true })),
            None => None,
        };
        Ok(json!({ "loops": views, "selected": selected, "limit": OPE_DECISIONS }))
    })
    .await;
    match data {
        Ok(d) => dash.render("loops.html", Some(&s), value(&d)),
        Err(resp) => resp,
    }
}

/// The fairness form of `/dashboard/more`: how many users to sample and which item attribute
/// to compare exposure by. Absent, the page does not compute the report (it ranks users).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoreQuery {
    experiment: Option<String>,
    /// Item keys, comma-separated.
    audience_items: Option<String>,
    audience_category: Option<String>,
    audience_filter: Option<String>,
    audience_n: Option<String>,
    fairness_users: Option<String>,
    item_attribute: Option<String>,
}

/// Users the dashboard's audience form lists at most (the API exports up to 10,000).
const MAX_AUDIENCE_LIST: usize = 1_000;

/// The audience form's query, or `None` when the form was not sent (every field empty).
fn audience_query(
    dash: &Dash,
    s: &super::Session,
    q: &MoreQuery,
) -> Result<Option<AudienceQuery>, Response> {
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let items: Vec<String> = q
        .audience_items
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    let (category, filter) = (text(&q.audience_category), text(&q.audience_filter));
    if items.is_empty() && category.is_none() && filter.is_none() {
        return Ok(None);
    }
    let bad = |msg: String| dash.error(Some(s), StatusCode::BAD_REQUEST, &msg);
    if items.len() > MAX_AUDIENCE_ITEMS {
        return Err(bad(format!(
            "at most {MAX_AUDIENCE_ITEMS} items, got {}",
            items.len()
        )));
    }
    let max_key = dash.engine.settings().limits.max_key_bytes;
    for (i, item) in items.iter().enumerate() {
        crate::validate::validate_key(&format!("items[{i}]"), item, max_key)
            .map_err(|e| bad(e.message))?;
    }
    if let Some(c) = &category {
        crate::validate::validate_key("category", c, max_key).map_err(|e| bad(e.message))?;
    }
    let n = count(
        text(&q.audience_n).as_deref(),
        MAX_AUDIENCE_LIST,
        "users to list",
    )
    .map_err(bad)?
    .unwrap_or(20);
    Ok(Some(AudienceQuery {
        items,
        category,
        filter,
        n,
        threshold: None,
    }))
}

/// A form's count field: a whole number from 1 to `max`, or what is wrong with it.
fn count(raw: Option<&str>, max: usize, what: &str) -> Result<Option<usize>, String> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "{what} must be a whole number from 1 to {max}, got {raw:?}"
        )),
    }
}

/// Users the dashboard's fairness form ranks at most (the API and the CLI rank everyone).
const MAX_FAIRNESS_USERS: usize = 20_000;

/// `GET /dashboard/more`: experiments and segments (audiences) as summaries, one experiment's
/// report (`?experiment=`), an audience query (`?audience_…=`), and, on request, the
/// fairness report of the served model on a seeded sample of users.
pub(crate) async fn more(
    State(dash): State<Dash>,
    PageSession(s): PageSession,
    Query(q): Query<MoreQuery>,
) -> Response {
    let sample = match count(
        q.fairness_users.as_deref().map(str::trim),
        MAX_FAIRNESS_USERS,
        "users to sample",
    ) {
        Ok(n) => n,
        Err(msg) => return dash.error(Some(&s), StatusCode::BAD_REQUEST, &msg),
    };
    let attribute = match dash.search_key(&s, q.item_attribute.clone()) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let audience = match audience_query(&dash, &s, &q) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let form = json!({ "items": q.audience_items, "category": q.audience_category,
                       "filter": q.audience_filter, "n": q.audience_n });
    let experiment = match dash.search_key(&s, q.experiment) {
        Ok(e) => e,
        Err(resp) => return resp,
    };
    let engine = dash.engine.clone();
    let data = blocking(&dash, &s, move || {
        let experiments: Vec<Value> = engine
            .experiments()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| json!({ "name": e.name, "status": e.status, "started_at": e.started_at.map(crate::time::format_rfc3339) }))
            .collect();
        let segments: Vec<Value> = engine
            .segments()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|g| json!({ "name": g.name, "last_refresh": g.last_refresh }))
            .collect();
        let report = match experiment {
            None => Value::Null,
            Some(name) => match engine.experiment_report(&name) {
                Ok(r) => serde_json::to_value(&r).map_err(|e| e.to_string())?,
                Err(crate::engine::ExperimentError::NotFound(_)) => {
                    json!({ "missing": name })
                }
                Err(e) => return Err(e.to_string()),
            },
        };
        let audience = match audience {
            None => Value::Null,
            Some(q) => match engine.audience(&q) {
                Ok(a) => serde_json::to_value(&a).map_err(|e| e.to_string())?,
                // What was wrong with the query (or that no model is trained) goes on the page.
                Err(e) => json!({ "error": e.to_string() }),
            },
        };
        let fairness = match sample {
            None => Value::Null,
            Some(users) => fairness_on_sample(&engine, users, attribute.as_deref())?,
        };
        Ok(json!({ "experiments": experiments, "segments": segments, "report": report,
                   "audience": audience, "audience_form": form, "fairness": fairness, "fairness_users": sample.unwrap_or(500),
                   "item_attribute": attribute.unwrap_or_else(|| "category".into()) }))
    })
    .await;
    match data {
        Ok(d) => dash.render("more.html", Some(&s), value(&d)),
        Err(resp) => resp,
    }
}

/// The served model's fairness report on `users` sampled users (seed 0, the configured list
/// length), exposure compared by `attribute` (`category` when none is named, skipped when no
/// item has categories; a named attribute nobody has is an error shown on the page).
fn fairness_on_sample(
    engine: &crate::Engine,
    users: usize,
    attribute: Option<&str>,
) -> Result<Value, String> {
    use crate::engine::{ReportError, ReportOptions};
    let req = RecommendQuery {
        n: engine.settings().fairness.report_k,
        ..RecommendQuery::default()
    };
    let opts = |attrs: Vec<String>| ReportOptions {
        user_attributes: Vec::new(),
        item_attributes: attrs,
        max_users: Some(users),
        seed: 0,
    };
    let named = attribute.map(str::to_owned);
    let first = engine.fairness_report(
        &req,
        &opts(vec![named.clone().unwrap_or_else(|| "category".into())]),
    );
    let report = match (first, named) {
        (Ok(r), _) => r,
        (Err(ReportError::UnknownAttribute { .. }), None) => engine
            .fairness_report(&req, &opts(Vec::new()))
            .map_err(|e| e.to_string())?,
        (Err(e @ ReportError::UnknownAttribute { .. }), Some(_)) => {
            return Ok(json!({ "error": e.to_string() }));
        }
        (Err(e), _) => return Err(e.to_string()),
    };
    serde_json::to_value(&report).map_err(|e| e.to_string())
}
