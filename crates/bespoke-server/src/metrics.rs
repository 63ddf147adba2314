//! Prometheus metrics, kept and encoded (OpenMetrics text) by the `prometheus-client` crate,
//! the Prometheus project's own Rust client. The names are the ones earlier releases wrote by
//! hand, so dashboards and alerts built on them keep working.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::EngineCounts;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request's labels: the route template, never a raw path, so that keys (personal data) do
/// not become label values and cardinality stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Request and ingestion metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    events_stored: Counter,
    events_duplicate: Counter,
    auth_failed: Family<ReasonLabels, Counter>,
    auth_throttled: Counter,
    users: Gauge<u64, AtomicU64>,
    items: Gauge<u64, AtomicU64>,
    events: Gauge<u64, AtomicU64>,
}

/// Why an authentication failed, as the `reason` label of `bespoke_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No key, or an `Authorization` header that is not `Bearer <key>`.
    Missing,
    /// Not a key this server issued.
    Invalid,
    /// A revoked key.
    Revoked,
}

impl AuthFailure {
    const ALL: [AuthFailure; 3] = [Self::Missing, Self::Invalid, Self::Revoked];

    fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Revoked => "revoked",
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            events_stored: Counter::default(),
            events_duplicate: Counter::default(),
            auth_failed: Family::default(),
            auth_throttled: Counter::default(),
            users: Gauge::default(),
            items: Gauge::default(),
            events: Gauge::default(),
        };
        // Every reason shows from the start, at zero, so that an alert on a rate has a series.
        for reason in AuthFailure::ALL {
            let _ = m.auth_failed.get_or_create(&ReasonLabels {
                reason: reason.label(),
            });
        }
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "bespoke_http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "bespoke_http_request_duration_seconds",
            "HTTP request latency",
            m.latency.clone(),
        );
        r.register(
            "bespoke_auth_failures",
            "Failed authentications (wrong, revoked or missing key) by reason",
            m.auth_failed.clone(),
        );
        r.register(
            "bespoke_events_stored",
            "Events stored since start",
            m.events_stored.clone(),
        );
        r.register(
            "bespoke_events_duplicate",
            "Replayed events recognised by event_id and not stored again",
            m.events_duplicate.clone(),
        );
        r.register(
            "bespoke_auth_throttled",
            "Requests refused (429) because their source address failed authentication too often",
            m.auth_throttled.clone(),
        );
        r.register("bespoke_users", "Users known to serving", m.users.clone());
        r.register("bespoke_items", "Items known to serving", m.items.clone());
        r.register(
            "bespoke_events",
            "Events applied to serving",
            m.events.clone(),
        );
        m
    }
}

impl Metrics {
    /// Records one request on a route template (`/v1/users/{key}`).
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let (method, route) = (method.to_owned(), route.to_owned());
        self.latency
            .get_or_create(&RouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&StatusLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// Counts events written: new ones and replays recognised as duplicates.
    pub fn record_events(&self, stored: u64, duplicates: u64) {
        self.events_stored.inc_by(stored);
        self.events_duplicate.inc_by(duplicates);
    }

    /// Counts a failed authentication (answered 401 or, past the source's budget, 429).
    pub fn record_auth_failure(&self, reason: AuthFailure) {
        let labels = ReasonLabels {
            reason: reason.label(),
        };
        self.auth_failed.get_or_create(&labels).inc();
    }

    /// Counts a request refused 429 because its source failed authentication too often.
    pub fn record_auth_throttled(&self) {
        self.auth_throttled.inc();
    }

    /// The exposition text (OpenMetrics, [`CONTENT_TYPE`]), with the serving state's sizes as of
    /// now.
    pub fn render(&self, counts: EngineCounts) -> String {
        self.users.set(counts.users);
        self.items.set(counts.items);
        self.events.set(counts.events);
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_histogram_and_counters() {
        let m = Metrics::default();
        m.record("GET", "/v1/popular", 200, Duration::from_micros(300));
        m.record("GET", "/v1/popular", 200, Duration::from_millis(3));
        m.record("GET", "/v1/popular", 400, Duration::from_secs(9));
        m.record_events(5, 2);
        m.record_auth_failure(AuthFailure::Invalid);
        m.record_auth_failure(AuthFailure::Invalid);
        m.record_auth_throttled();
        let text = m.render(EngineCounts {
            users: 1,
            items: 2,
            events: 3,
        });
        assert!(text.contains(
            "bespoke_http_requests_total{method=\"GET\",route=\"/v1/popular\",status=\"200\"} 2\n"
        ));
        assert!(text.contains("status=\"400\"} 1\n"));
        let bucket = |le: &str, n: u64| {
            format!(
                "bespoke_http_request_duration_seconds_bucket{{le=\"{le}\",method=\"GET\",route=\"/v1/popular\"}} {n}\n"
            )
        };
        for (le, n) in [("0.0005", 1), ("0.005", 2), ("5.0", 2), ("+Inf", 3)] {
            assert!(text.contains(&bucket(le, n)), "{le}: {text}");
        }
        assert!(text.contains(
            "bespoke_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/popular\"} 3\n"
        ));
        assert!(text.contains("bespoke_events_stored_total 5\n"));
        assert!(text.contains("bespoke_events_duplicate_total 2\n"));
        assert!(text.contains("bespoke_items 2\n"));
        assert!(text.contains("bespoke_auth_failures_total{reason=\"invalid\"} 2\n"));
        assert!(text.contains("bespoke_auth_failures_total{reason=\"revoked\"} 0\n"));
        assert!(text.contains("bespoke_auth_throttled_total 1\n"));
        assert!(text.contains("# TYPE bespoke_http_request_duration_seconds histogram\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
