//! Prometheus metrics in the text exposition format, written by hand: a few counters and one
//! latency histogram do not justify a metrics framework.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::engine::EngineCounts;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: RwLock<HashMap<u16, AtomicU64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Request and ingestion metrics.
#[derive(Default)]
pub struct Metrics {
    routes: RwLock<HashMap<(String, String), RouteStats>>,
    events_stored: AtomicU64,
    events_duplicate: AtomicU64,
    /// Failed authentications by reason: missing key, invalid key, revoked key.
    auth_failed: [AtomicU64; 3],
    /// Requests refused because their source failed authentication too often.
    auth_throttled: AtomicU64,
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

impl Metrics {
    /// Records one request on a route template (`/v1/users/{key}`), never on a raw path, so
    /// that keys (personal data) do not become label values and cardinality stays bounded.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let key = (method.to_owned(), route.to_owned());
        {
            let routes = self.routes.read();
            if let Some(stats) = routes.get(&key) {
                Self::update(stats, status, elapsed);
                return;
            }
        }
        let mut routes = self.routes.write();
        let stats = routes.entry(key).or_default();
        Self::update(stats, status, elapsed);
    }

    fn update(stats: &RouteStats, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            stats.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        stats.count.fetch_add(1, Ordering::Relaxed);
        stats
            .sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        {
            let by_status = stats.by_status.read();
            if let Some(c) = by_status.get(&status) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        stats
            .by_status
            .write()
            .entry(status)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts events written: new ones and replays recognised as duplicates.
    pub fn record_events(&self, stored: u64, duplicates: u64) {
        self.events_stored.fetch_add(stored, Ordering::Relaxed);
        self.events_duplicate
            .fetch_add(duplicates, Ordering::Relaxed);
    }

    /// Counts a failed authentication (answered 401 or, past the source's budget, 429).
    pub fn record_auth_failure(&self, reason: AuthFailure) {
        self.auth_failed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused 429 because its source failed authentication too often.
    pub fn record_auth_throttled(&self) {
        self.auth_throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, counts: EngineCounts) -> String {
        let mut out = String::with_capacity(4096);
        let routes = self.routes.read();
        let mut keys: Vec<&(String, String)> = routes.keys().collect();
        keys.sort();
        out.push_str("# HELP bespoke_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE bespoke_http_requests_total counter\n");
        for key in &keys {
            let stats = &routes[*key];
            let by_status = stats.by_status.read();
            let mut statuses: Vec<&u16> = by_status.keys().collect();
            statuses.sort();
            for status in statuses {
                let _ = writeln!(
                    out,
                    "bespoke_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {}",
                    key.0,
                    key.1,
                    by_status[status].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP bespoke_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE bespoke_http_request_duration_seconds histogram\n");
        for key in &keys {
            let stats = &routes[*key];
            let labels = format!("method=\"{}\",route=\"{}\"", key.0, key.1);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += stats.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "bespoke_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = stats.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "bespoke_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "bespoke_http_request_duration_seconds_sum{{{labels}}} {}",
                stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "bespoke_http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        out.push_str(
            "# HELP bespoke_auth_failures_total Failed authentications (wrong, revoked or missing key) by reason.\n\
             # TYPE bespoke_auth_failures_total counter\n",
        );
        for reason in AuthFailure::ALL {
            let _ = writeln!(
                out,
                "bespoke_auth_failures_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.auth_failed[reason as usize].load(Ordering::Relaxed)
            );
        }
        let counters = [
            (
                "bespoke_events_stored_total",
                "Events stored since start.",
                self.events_stored.load(Ordering::Relaxed),
            ),
            (
                "bespoke_events_duplicate_total",
                "Replayed events recognised by event_id and not stored again.",
                self.events_duplicate.load(Ordering::Relaxed),
            ),
            (
                "bespoke_auth_throttled_total",
                "Requests refused (429) because their source address failed authentication too often.",
                self.auth_throttled.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let gauges = [
            ("bespoke_users", "Users known to serving.", counts.users),
            ("bespoke_items", "Items known to serving.", counts.items),
            (
                "bespoke_events",
                "Events applied to serving.",
                counts.events,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
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
            "bespoke_http_requests_total{method=\"GET\",route=\"/v1/popular\",status=\"200\"} 2"
        ));
        assert!(text.contains("status=\"400\"} 1"));
        assert!(text.contains("le=\"0.0005\"} 1\n"));
        assert!(text.contains("le=\"0.005\"} 2\n"));
        assert!(text.contains("le=\"5\"} 2\n"));
        assert!(text.contains("le=\"+Inf\"} 3\n"));
        assert!(text.contains("bespoke_events_stored_total 5\n"));
        assert!(text.contains("bespoke_events_duplicate_total 2\n"));
        assert!(text.contains("bespoke_items 2\n"));
        assert!(text.contains("bespoke_auth_failures_total{reason=\"invalid\"} 2\n"));
        assert!(text.contains("bespoke_auth_failures_total{reason=\"revoked\"} 0\n"));
        assert!(text.contains("bespoke_auth_throttled_total 1\n"));
    }
}
