//! The dashboard's JSON endpoints, one per chart, all in one shape that `dashboard.js` draws:
//! `{"x": [unix seconds or a count], "time": bool, "series": [{"label", "values": [number or null]}]}`.
//!
//! Events over time come from [`Tally`], a count of stored events by hour kept by the
//! dashboard itself and brought up to date on each request from the events appended since
//! (the store's sequence numbers only grow), so that a chart does not rescan the event log.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bespoke_algo::Millis;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiSession, Dash};
use crate::engine::Engine;
use crate::error::ApiError;

const HOUR_MS: Millis = 3_600_000;
const DAY_MS: Millis = 24 * HOUR_MS;

/// One chart's data.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Chart {
    /// Unix seconds, or a count when `time` is false.
    pub(crate) x: Vec<f64>,
    /// Whether `x` is time.
    pub(crate) time: bool,
    /// One line each.
    pub(crate) series: Vec<Series>,
}

/// A chart's line.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) values: Vec<Option<f64>>,
}

/// A full recount at least this often, so that deletions the serving count does not reveal
/// (hidden by ingestion between two requests) leave the charts for a bounded time only.
const RECOUNT_EVERY: Duration = Duration::from_secs(600);

/// Stored events counted by hour of their timestamp, each user's latest event, and each
/// item's impressions. Impressions (what was shown, not what users did) are counted apart:
/// they are exposure, not activity.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// When the count started over from the first event.
    since: Option<Instant>,
    /// Serving's event count at the last update: a drop means events were deleted.
    serving_events: u64,
    /// The last sequence number counted.
    after: u64,
    /// Events and impressions per hour (hours since the Unix epoch).
    hours: BTreeMap<Millis, (u64, u64)>,
    /// Each user's latest event time (impressions aside), by internal id: active users.
    last_seen: FxHashMap<u32, Millis>,
    /// Impressions per item, by internal id.
    impressions: FxHashMap<u32, u64>,
}

/// What the overview shows from the tally.
#[derive(Debug, Serialize)]
pub(crate) struct Activity {
    pub(crate) impressions: u64,
    pub(crate) active_day: usize,
    pub(crate) active_week: usize,
    pub(crate) latest_event: Option<String>,
}

impl Tally {
    /// Counts the events appended since the last call. Erasure, retention and item deletion
    /// delete events: when serving's count dropped since the last call, or the count is
    /// [`RECOUNT_EVERY`] old, the tally starts over. (Serving's count cannot be compared with
    /// the tally's: it leaves out impressions, which the log holds.)
    pub(crate) fn update(&mut self, engine: &Engine) -> bespoke_store::Result<()> {
        let serving = engine.counts().events;
        let stale = self.since.is_none_or(|t| t.elapsed() >= RECOUNT_EVERY);
        if serving < self.serving_events || stale {
            *self = Tally {
                since: Some(Instant::now()),
                ..Tally::default()
            };
        }
        self.serving_events = serving;
        loop {
            let batch = engine.store().scan_interactions(self.after, 10_000)?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            self.after = last.seq;
            for e in &batch {
                self.add(e.user.0, e.item.0, &e.kind, e.timestamp);
            }
        }
    }

    fn add(&mut self, user: u32, item: u32, kind: &str, at: Millis) {
        let hour = self.hours.entry(at.div_euclid(HOUR_MS)).or_default();
        if kind == crate::settings::IMPRESSION {
            hour.1 += 1;
            *self.impressions.entry(item).or_default() += 1;
        } else {
            hour.0 += 1;
            let seen = self.last_seen.entry(user).or_insert(at);
            *seen = (*seen).max(at);
        }
    }

    /// Times an item (by internal id) was shown, as recorded impressions.
    pub(crate) fn impressions_of(&self, item: u32) -> u64 {
        self.impressions.get(&item).copied().unwrap_or(0)
    }

    /// Users with an event in the `window` before `now`, and other overview figures.
    pub(crate) fn activity(&self, now: Millis) -> Activity {
        let active = |window: Millis| {
            self.last_seen
                .values()
                .filter(|&&t| t > now - window)
                .count()
        };
        Activity {
            impressions: self.impressions.values().sum(),
            active_day: active(DAY_MS),
            active_week: active(7 * DAY_MS),
            latest_event: self
                .last_seen
                .values()
                .max()
                .map(|&t| crate::time::format_rfc3339(t)),
        }
    }

    /// Events per bucket of `bucket_ms` (a whole number of hours; buckets aligned on the
    /// epoch, so days are UTC days), for the `buckets` buckets ending with the one holding
    /// `now`; impressions as a second line when any were recorded.
    pub(crate) fn chart(&self, now: Millis, bucket_ms: Millis, buckets: i64) -> Chart {
        let last = now.div_euclid(bucket_ms);
        let first = last - buckets + 1;
        let per = bucket_ms / HOUR_MS;
        let mut counts = vec![(0u64, 0u64); buckets as usize];
        for (&hour, &(events, shown)) in self.hours.range(first * per..(last + 1) * per) {
            let c = &mut counts[(hour.div_euclid(per) - first) as usize];
            c.0 += events;
            c.1 += shown;
        }
        let mut series = vec![Series {
            label: "events".into(),
            values: counts.iter().map(|c| Some(c.0 as f64)).collect(),
        }];
        if !self.impressions.is_empty() {
            series.push(Series {
                label: "impressions".into(),
                values: counts.iter().map(|c| Some(c.1 as f64)).collect(),
            });
        }
        Chart {
            x: (first..=last)
                .map(|b| (b * bucket_ms / 1000) as f64)
                .collect(),
            time: true,
            series,
        }
    }
}

/// The ingestion rate is measured over at least this long when the overview was seen that
/// long ago (else since the server started).
const RATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Serving's event count sampled at each overview (at most every ten seconds): the ingestion
/// rate is the change since the newest sample at least [`RATE_WINDOW`] old, so it follows
/// the present rather than averaging over the server's whole life. Measured by arrival, not
/// by the events' own timestamps, which clients set (imports carry old ones).
#[derive(Debug)]
pub(crate) struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

/// An ingestion rate and the span it was measured over.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Measured {
    pub(crate) per_minute: f64,
    pub(crate) over_minutes: f64,
}

impl Rate {
    /// Starts measuring from `events` at `now`.
    pub(crate) fn new(now: Instant, events: u64) -> Self {
        Self {
            samples: VecDeque::from([(now, events)]),
        }
    }

    /// Records `events` at `now` and answers the rate since the window's start.
    pub(crate) fn sample(&mut self, now: Instant, events: u64) -> Measured {
        if self
            .samples
            .back()
            .is_none_or(|&(t, _)| now.duration_since(t) >= Duration::from_secs(10))
        {
            self.samples.push_back((now, events));
        }
        // Keep the newest sample that is at least a window old as the window's start.
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| now.duration_since(t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (since, then) = self.samples.front().copied().unwrap_or((now, events));
        let minutes = now.duration_since(since).as_secs_f64() / 60.0;
        Measured {
            per_minute: events.saturating_sub(then) as f64 / minutes.max(1.0 / 60.0),
            over_minutes: minutes,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    by: Option<String>,
}

/// `GET /dashboard/api/events?by=hour|day`: events per hour over the last 48 hours, or per
/// day over the last 90 days.
pub(crate) async fn events(
    State(dash): State<Dash>,
    _: ApiSession,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Chart>, ApiError> {
    let (bucket, n) = match q.by.as_deref() {
        None | Some("hour") => (HOUR_MS, 48),
        Some("day") => (DAY_MS, 90),
        Some(other) => {
            return Err(ApiError::invalid(
                "by",
                format!("by must be hour or day, got {other:?}"),
            ));
        }
    };
    let tally = dash.tally.clone();
    let engine = dash.engine.clone();
    super::json_blocking(move || {
        let mut t = tally.lock();
        t.update(&engine)?;
        Ok(Json(t.chart(crate::time::now_ms(), bucket, n)))
    })
    .await
}

/// Numeric leaves of a JSON value, as dotted paths (`als.ndcg@10`).
fn numeric_leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(prefix.to_owned(), f);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                numeric_leaves(&path, v, out);
            }
        }
        _ => {}
    }
}

/// The offline metric charted per model: training records dozens (several cut-offs,
/// debiased variants, coverage), too many lines for one chart; NDCG@10 is the one the
/// anchors and tuning compare on.
const CHARTED_METRIC: &str = "ndcg@10";

/// NDCG@10 of each model (`als.ndcg@10`, `auto.ndcg@10`, ...) and the training time of each
/// stored model version, oldest first, against its training time: one series per model any
/// version has (null where one lacks it).
pub(crate) fn model_chart(models: &[bespoke_store::ModelRecord]) -> Chart {
    let mut rows: Vec<(f64, BTreeMap<String, f64>)> = Vec::new();
    for m in models {
        let at = m.meta["created_at"]
            .as_str()
            .and_then(|s| crate::time::parse_rfc3339(s).ok())
            .map_or(m.version as f64, |ms| ms as f64 / 1000.0);
        let mut leaves = BTreeMap::new();
        numeric_leaves("", &m.meta["metrics"], &mut leaves);
        leaves.retain(|path, _| {
            path.split_once('.')
                .is_some_and(|(_, metric)| metric == CHARTED_METRIC)
        });
        if let Some(total) = m.meta["training_seconds"]["total"].as_f64() {
            leaves.insert("training seconds".into(), total);
        }
        rows.push((at, leaves));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let names: std::collections::BTreeSet<&String> = rows.iter().flat_map(|r| r.1.keys()).collect();
    Chart {
        x: rows.iter().map(|r| r.0).collect(),
        time: true,
        series: names
            .into_iter()
            .map(|name| Series {
                label: name.clone(),
                values: rows.iter().map(|r| r.1.get(name).copied()).collect(),
            })
            .collect(),
    }
}

/// `GET /dashboard/api/models`: see [`model_chart`].
pub(crate) async fn models(
    State(dash): State<Dash>,
    _: ApiSession,
) -> Result<Json<Chart>, ApiError> {
    let engine = dash.engine.clone();
    super::json_blocking(move || Ok(Json(model_chart(&engine.models()?)))).await
}

/// At most this many decisions are averaged together in the reward chart's moving mean.
const REWARD_WINDOW: usize = 50;

/// A loop's reward as its log went on: for each rewarded decision (oldest first, numbered
/// from 1), the mean reward of all decisions so far and a moving mean over a fifth of them
/// (at most [`REWARD_WINDOW`]; a window as long as the log would repeat the first line). By
/// decision rather than by hour, so that a loop that made all its decisions within an hour
/// still has a curve.
pub(crate) fn reward_chart(log: &[bespoke_store::DecisionRecord]) -> Chart {
    let rewards: Vec<f64> = log
        .iter()
        .filter(|d| !d.rewards.is_empty())
        .map(|d| d.rewards.iter().map(|r| r.value).sum::<f64>() / d.rewards.len() as f64)
        .collect();
    let window = (rewards.len() / 5).clamp(1, REWARD_WINDOW);
    let mut total = 0.0;
    let mut cumulative = Vec::with_capacity(rewards.len());
    let mut recent = Vec::with_capacity(rewards.len());
    for (i, r) in rewards.iter().enumerate() {
        total += r;
        cumulative.push(Some(total / (i + 1) as f64));
        let last = &rewards[(i + 1).saturating_sub(window)..=i];
        recent.push(Some(last.iter().sum::<f64>() / last.len() as f64));
    }
    Chart {
        x: (1..=rewards.len()).map(|n| n as f64).collect(),
        time: false,
        series: vec![
            Series {
                label: "mean reward, all decisions so far".into(),
                values: cumulative,
            },
            Series {
                label: format!("mean reward, last {window}"),
                values: recent,
            },
        ],
    }
}

/// `GET /dashboard/api/loops/{name}/rewards`: see [`reward_chart`], over the decisions that
/// off-policy evaluation would read.
pub(crate) async fn rewards(
    State(dash): State<Dash>,
    _: ApiSession,
    Path(name): Path<String>,
) -> Result<Json<Chart>, ApiError> {
    let engine = dash.engine.clone();
    if !engine.decisions().names().contains(&name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no decision loop {name:?}"),
        ));
    }
    let limit = engine.settings().decisions.evaluation_max_decisions;
    super::json_blocking(move || {
        Ok(Json(reward_chart(
            &engine.store().decision_log(&name, limit)?,
        )))
    })
    .await
}

/// A segment's members after each refresh, oldest first, against the refresh's time: the
/// total, and for a learned segment one line per cluster.
pub(crate) fn size_chart(points: &[crate::engine::SizePoint]) -> Chart {
    let clusters = (points.iter())
        .filter_map(|p| p.clusters.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);
    let mut series = vec![Series {
        label: "members".into(),
        values: points.iter().map(|p| Some(p.size as f64)).collect(),
    }];
    series.extend((0..clusters).map(|c| {
        Series {
            label: format!("cluster {c}"),
            values: (points.iter())
                .map(|p| {
                    p.clusters
                        .as_ref()
                        .and_then(|v| v.get(c))
                        .map(|&n| n as f64)
                })
                .collect(),
        }
    }));
    Chart {
        x: points.iter().map(|p| p.at as f64 / 1000.0).collect(),
        time: true,
        series,
    }
}

/// `GET /dashboard/api/segments/{name}/sizes`: see [`size_chart`].
pub(crate) async fn segment_sizes(
    State(dash): State<Dash>,
    _: ApiSession,
    Path(name): Path<String>,
) -> Result<Json<Chart>, ApiError> {
    let engine = dash.engine.clone();
    super::json_blocking(move || Ok(Json(size_chart(&engine.segment_sizes(&name)?)))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes_chart_the_total_and_each_cluster() {
        use crate::engine::SizePoint;
        let rule = [
            SizePoint {
                at: 1_000,
                size: 5,
                clusters: None,
            },
            SizePoint {
                at: 61_000,
                size: 7,
                clusters: None,
            },
        ];
        let c = size_chart(&rule);
        assert_eq!((c.x.clone(), c.time), (vec![1.0, 61.0], true));
        assert_eq!(c.series.len(), 1);
        assert_eq!(c.series[0].values, vec![Some(5.0), Some(7.0)]);
        let learned = [SizePoint {
            at: 2_000,
            size: 9,
            clusters: Some(vec![4, 5]),
        }];
        let c = size_chart(&learned);
        let labels: Vec<&str> = c.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["members", "cluster 0", "cluster 1"]);
        assert_eq!(c.series[2].values, vec![Some(5.0)]);
        assert!(size_chart(&[]).x.is_empty());
    }

    #[test]
    fn chart_buckets_hours_into_days() {
        let mut t = Tally::default();
        // Two events in hour 0 of day 1, one in hour 5 of day 1, one on day 0.
        t.add(1, 7, "view", 24 * HOUR_MS);
        t.add(2, 7, "view", 24 * HOUR_MS + 5);
        t.add(1, 8, "click", 29 * HOUR_MS);
        t.add(3, 7, "view", 3 * HOUR_MS);
        let now = DAY_MS + 10 * HOUR_MS;
        let days = t.chart(now, DAY_MS, 3);
        assert_eq!(days.x, vec![-86_400.0, 0.0, 86_400.0]);
        assert_eq!(days.series.len(), 1, "no impressions, no second line");
        assert_eq!(days.series[0].values, vec![Some(0.0), Some(1.0), Some(3.0)]);
        // Impressions: a line of their own, and not activity.
        t.add(9, 8, crate::settings::IMPRESSION, 29 * HOUR_MS);
        let days = t.chart(now, DAY_MS, 3);
        assert_eq!(days.series[0].values, vec![Some(0.0), Some(1.0), Some(3.0)]);
        assert_eq!(days.series[1].values, vec![Some(0.0), Some(0.0), Some(1.0)]);
        assert_eq!(t.impressions_of(8), 1);
        assert_eq!(t.impressions_of(7), 0);
        let a = t.activity(now);
        assert_eq!((a.active_day, a.impressions), (2, 1));
        let hours = t.chart(now, HOUR_MS, 6);
        assert_eq!(
            hours.series[0].values,
            vec![
                Some(1.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0)
            ]
        );
    }

    #[test]
    fn the_rate_follows_the_last_quarter_hour() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut r = Rate::new(t0, 0);
        // Since start while nothing older than the window exists.
        let m = r.sample(t0 + 2 * min, 200);
        assert_eq!(m.per_minute, 100.0);
        r.sample(t0 + 20 * min, 1200);
        // At 40 minutes the window starts at the 20-minute sample: 600 events in 20 minutes.
        let m = r.sample(t0 + 40 * min, 1800);
        assert_eq!(
            m,
            Measured {
                per_minute: 30.0,
                over_minutes: 20.0
            }
        );
        // Deletions make the count drop: no negative rate.
        assert_eq!(r.sample(t0 + 41 * min, 10).per_minute, 0.0);
    }

    #[test]
    fn reward_curve_averages_by_decision() {
        let d = |values: &[f64]| bespoke_store::DecisionRecord {
            seq: 0,
            id: String::new(),
            loop_name: String::new(),
            user: None,
            created_at: 0,
            deadline: 0,
            activated: true,
            settled: true,
            payload: String::new(),
            rewards: values
                .iter()
                .map(|&value| bespoke_store::RewardRecord {
                    seq: 0,
                    slot: 0,
                    value,
                    at: 0,
                    is_default: false,
                })
                .collect(),
        };
        let c = reward_chart(&[d(&[1.0]), d(&[]), d(&[0.0]), d(&[1.0, 0.0])]);
        assert_eq!(c.x, vec![1.0, 2.0, 3.0]);
        assert_eq!(c.series[0].values, vec![Some(1.0), Some(0.5), Some(0.5)]);
    }

    #[test]
    fn metrics_become_series_with_gaps() {
        let rec = |version, meta: Value| bespoke_store::ModelRecord {
            version,
            meta,
            active: false,
            bytes: 0,
            files: Vec::new(),
        };
        let models = vec![
            rec(
                2,
                serde_json::json!({ "created_at": "1970-01-01T00:00:20Z",
                                    "metrics": { "als": { "ndcg@10": 0.5, "recall@20": 0.7,
                                                          "debiased": { "ndcg@10": 0.1 } },
                                                 "eval_users": 10 },
                                    "training_seconds": { "total": 2.0 } }),
            ),
            rec(
                1,
                serde_json::json!({ "created_at": "1970-01-01T00:00:10Z", "metrics": null }),
            ),
        ];
        let c = model_chart(&models);
        assert_eq!(c.x, vec![10.0, 20.0]);
        assert_eq!(c.series.len(), 2, "{c:?}");
        assert_eq!(c.series[0].label, "als.ndcg@10");
        assert_eq!(c.series[0].values, vec![None, Some(0.5)]);
        assert_eq!(c.series[1].label, "training seconds");
    }
}
