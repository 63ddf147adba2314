//! Segments (`docs/segments.md`): named sets of users, defined by a rule over their attributes
//! and behaviour or learned by k-means on the served model's user vectors, computed on demand or
//! on a schedule, stored with their members and size history, and exported to a signed webhook.
//!
//! # Data layout
//!
//! A segment's definition is one row of the store's segments table ([`CampaignStore`]): a JSON
//! [`Stored`] value holding the [`SegmentSpec`] and the status of its last refresh and export.
//! Members live in the store's member table under a *member set* name:
//!
//! - a rule segment `garden` has one member set, `garden`, every score 1;
//! - a learned segment `tastes` with `k = 8` has eight, `tastes/0` .. `tastes/7`, one per
//!   cluster, each member's score the cosine between their vector and the cluster's centre.
//!
//! Segment names cannot hold `/`, so a cluster's member set never collides with another
//! segment. Each member set has its own size history (the store appends one point per
//! computation), and a user's memberships name the cluster they are in (`tastes/3`), which is
//! why a cluster is a member set of its own rather than a column of one set.
//!
//! # Consent
//!
//! Users who objected to marketing (`consent.marketing = false`) are in no segment. A rule
//! segment that reads behaviour (events) also leaves out users who turned personalization off
//! (their behaviour is not used to target them); one on attributes alone, which the
//! application itself states, does not. A learned segment clusters the model's vectors, so it
//! leaves out everyone an audience leaves out: also users who withheld their data from
//! training. Each refresh counts who was left out, by why.
//!
//! [`CampaignStore`]: bespoke_store::CampaignStore

use std::sync::Arc;

use bespoke_algo::segment::{
    Clustering, DescribeParams, FeatureLift, KMeansParams, SegmentError as KMeansError, describe,
    kmeans,
};
use bespoke_algo::{ItemIdx, Millis, UserIdx};
use bespoke_store::{Item, RuleRecord};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Engine;
use crate::segments::{FactEvent, UserExpr, UserFacts};
use crate::time::{format_rfc3339, now_ms, parse_duration};

/// Most segments kept.
pub(crate) const MAX_SEGMENTS: usize = 100;
/// Fewest clusters of a learned segment.
pub(crate) const MIN_CLUSTERS: usize = 2;
/// Most clusters of a learned segment.
pub(crate) const MAX_CLUSTERS: usize = 64;
/// The shortest `refresh` interval: a refresh reads every user (and, for rules, the events).
pub(crate) const MIN_REFRESH_MS: Millis = 5 * 60_000;
/// Longest segment name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 64;
/// Most members one page of `segment_members` returns.
pub const MAX_MEMBERS_PAGE: usize = 10_000;
/// Longest description, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Members read from the store at a time when streaming or exporting.
const STREAM_PAGE: usize = 1_000;
/// Events read from the store at a time by a rule refresh.
const EVENT_CHUNK: usize = 100_000;
/// Users read from the store at a time by a refresh.
const USER_CHUNK: usize = 10_000;
/// Features shown per cluster, for categories and for attributes each.
const TOP_FEATURES: usize = 5;
/// Distinct attribute values a learned refresh describes clusters by; values first seen after
/// that many are not counted (a free-text attribute would otherwise take the memory).
const MAX_ATTRIBUTE_VALUES: usize = 100_000;
/// Attribute values read per user for descriptions.
const MAX_VALUES_PER_USER: usize = 64;
/// Longest attribute value (string) that describes a cluster, in bytes.
const MAX_VALUE_BYTES: usize = 128;
/// How long one webhook attempt may take (connecting, sending, the response head).
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a segment's members are written: CSV or JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberFormat {
    /// `user,score` (`user,cluster,score` for a learned segment) with a header line.
    Csv,
    /// One `{"user", "score"}` object per line (with `"cluster"` for a learned segment).
    Jsonl,
}

impl MemberFormat {
    /// The format named `s` (`csv`, `jsonl`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "jsonl" => Some(Self::Jsonl),
            _ => None,
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Jsonl => "application/x-ndjson",
        }
    }

    /// The file extension (`csv`, `jsonl`).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }

    /// Appends the header line (CSV only).
    fn header(self, learned: bool, out: &mut Vec<u8>) {
        if self == Self::Csv {
            out.extend_from_slice(if learned {
                b"user,cluster,score\n"
            } else {
                b"user,score\n"
            });
        }
    }

    /// Appends one member's line.
    fn row(self, m: &SegmentMember, out: &mut Vec<u8>) {
        use std::io::Write;
        match self {
            Self::Csv => {
                out.extend_from_slice(crate::wire::csv_field(&m.user).as_bytes());
                if let Some(c) = m.cluster {
                    let _ = write!(out, ",{c}");
                }
                let _ = writeln!(out, ",{}", m.score);
            }
            Self::Jsonl => {
                serde_json::to_writer(&mut *out, m).expect("a member serializes");
                out.push(b'\n');
            }
        }
    }
}

/// Where a segment's members are sent after each scheduled refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = SegmentExport)]
pub struct ExportSpec {
    /// The webhook: a plain `http://` URL (`docs/webhooks.md`).
    pub url: String,
    /// The body's format.
    pub format: MemberFormat,
}

/// What defines a segment's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SegmentKind {
    /// The users a user expression (`docs/segments.md`) is true for.
    Rule {
        /// The expression.
        expression: String,
    },
    /// `k` clusters of the served model's user vectors (k-means++ then Lloyd, on unit
    /// vectors), each a member set `<name>/<cluster>`.
    Learned {
        /// Number of clusters.
        k: usize,
        /// Seed of the k-means++ draws: the same seed on the same model gives the same clusters.
        seed: u64,
    },
}

impl SegmentKind {
    fn name(&self) -> &'static str {
        match self {
            Self::Rule { .. } => "rule",
            Self::Learned { .. } => "learned",
        }
    }
}

/// A checked segment definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentSpec {
    /// Rule or learned, with what defines it.
    #[serde(flatten)]
    pub kind: SegmentKind,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How often it is recomputed (`1d`, `6h`, at least `5m`); only on demand when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// Where its members are sent after each scheduled refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSpec>,
}

/// What a client sends to create or replace a segment; checked into a [`SegmentSpec`] with
/// errors that name the field.
///
/// Every field is optional to the parser so that a missing one is answered by the check, which
/// names it; `kind` is required all the same (a 400 without it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentIn {
    /// `rule` or `learned`; required.
    #[serde(default)]
    #[schema(inline, value_type = Option<SegmentKindName>)]
    pub kind: Option<String>,
    /// rule: a user expression (docs/segments.md).
    #[serde(default)]
    pub expression: Option<String>,
    /// learned: clusters, stored as member sets `<name>/0` .. `<name>/k-1` (default 8).
    #[serde(default)]
    #[schema(minimum = 2, maximum = 64, default = 8)]
    pub k: Option<i64>,
    /// learned: the k-means++ seed (default 0).
    #[serde(default)]
    #[schema(default = 0)]
    pub seed: Option<u64>,
    /// Free text for people.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// How often the scheduler recomputes it (5m at least: 30m, 6h, 1d); on demand only when
    /// absent.
    #[serde(default)]
    pub refresh: Option<String>,
    /// Where its members are sent after each scheduled refresh.
    #[serde(default)]
    pub export: Option<ExportIn>,
}

/// The `export` of a [`SegmentIn`]: needs `refresh`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SegmentExportIn)]
pub struct ExportIn {
    /// A plain http:// webhook (docs/webhooks.md); required (parsed as empty when absent, so
    /// that the check names it).
    #[serde(default)]
    pub url: String,
    /// `jsonl` (default) or `csv`.
    #[serde(default)]
    #[schema(inline, value_type = Option<MemberFormat>, default = "jsonl")]
    pub format: Option<String>,
}

/// An attribute value that describes a cluster (the OpenAPI description's type).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Named by the OpenAPI description only.
#[schema(as = AttributeValue)]
pub(crate) enum StringOrBool {
    String(String),
    Bool(bool),
}

/// A segment's kind, as [`SegmentIn`] names it (the OpenAPI description's enum).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
pub(crate) enum SegmentKindName {
    Rule,
    Learned,
}

/// Users left out of a segment, by why (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentExcluded {
    /// Objected to marketing.
    pub marketing: u64,
    /// Turned personalization off (behaviour rules and learned segments).
    pub personalization: u64,
    /// Withheld their data from training (learned segments).
    pub training: u64,
}

/// A category over-represented in a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CategoryLift {
    /// The category.
    pub category: String,
    /// Members who interacted with an item of it.
    pub members: usize,
    /// `members` over the cluster's size.
    pub share: f64,
    /// `share` over its share among every clustered user (above 1).
    pub lift: f64,
}

/// A user attribute value over-represented in a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttributeLift {
    /// The attribute's name.
    pub attribute: String,
    /// Its value: a string (also one element of a list of strings) or a boolean.
    #[schema(value_type = StringOrBool)]
    pub value: Value,
    /// Members with that value.
    pub members: usize,
    /// `members` over the cluster's size.
    pub share: f64,
    /// `share` over its share among every clustered user (above 1).
    pub lift: f64,
}

/// One cluster of a learned segment, as its last refresh found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterSummary {
    /// Its number, from 0.
    pub cluster: u32,
    /// Its member set: `<segment>/<cluster>`, as user memberships name it.
    pub name: String,
    /// Members stored.
    pub size: u64,
    /// The categories of the items its members interacted with, most over-represented first.
    pub categories: Vec<CategoryLift>,
    /// Its members' attribute values, most over-represented first.
    pub attributes: Vec<AttributeLift>,
}

/// What a refresh computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentRefresh {
    /// `rule` or `learned`.
    pub kind: String,
    /// The time the membership is as of (`now` of rule windows), and its size-history point.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub computed_at: Millis,
    /// Members stored (every cluster's for a learned segment).
    pub size: u64,
    /// Users evaluated (rule) or clustered (learned), after the exclusions.
    pub evaluated_users: u64,
    /// Users left out, by why.
    pub excluded: SegmentExcluded,
    /// How long the computation took.
    pub elapsed_ms: u64,
    /// The model whose user vectors were clustered (learned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u64>,
    /// Each cluster's size and description (learned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterSummary>,
}

/// A scheduled refresh that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = SegmentRefreshFailure)]
pub struct RefreshFailure {
    /// When.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Millis,
    /// Why.
    pub message: String,
}

/// The outcome of one export to the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = SegmentExportRecord)]
pub struct ExportRecord {
    /// When it was sent (the refresh's time).
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Millis,
    /// Whether the receiver accepted it (answered 2xx).
    pub ok: bool,
    /// The receiver's last status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
    /// The delivery id (`Bespoke-Webhook-Id`), when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// Members in the body.
    pub members: u64,
    /// Body size in bytes.
    pub bytes: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A segment: its definition and how its last refresh and export went.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Segment {
    /// Name (unique): letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// The definition.
    #[serde(flatten)]
    pub spec: SegmentSpec,
    /// When it was created.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    /// When its definition last changed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Millis,
    /// With `refresh`: when the scheduler recomputes it next (at its first check after that).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_rfc3339"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_refresh: Option<Millis>,
    /// The last successful refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<SegmentRefresh>,
    /// The last scheduled refresh that failed, if after the last success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<RefreshFailure>,
    /// The last export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_export: Option<ExportRecord>,
}

impl Segment {
    /// Number of clusters whose member sets may hold members: the spec's `k`, or more while a
    /// refresh with the new `k` is still to come. 0 for a rule segment.
    pub fn clusters(&self) -> usize {
        match self.spec.kind {
            SegmentKind::Rule { .. } => 0,
            SegmentKind::Learned { k, .. } => {
                k.max(self.last_refresh.as_ref().map_or(0, |r| r.clusters.len()))
            }
        }
    }

    fn learned(&self) -> bool {
        matches!(self.spec.kind, SegmentKind::Learned { .. })
    }
}

/// A segment created or replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct PutSegment {
    /// The segment as stored.
    pub segment: Segment,
    /// It did not exist before.
    pub created: bool,
    /// On creation only: the secret its webhook deliveries are signed with, shown this once.
    pub webhook_secret: Option<String>,
}

/// One member of a segment.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SegmentMember {
    /// The user's key as stored (pseudonymous when `privacy.pseudonymize` is on).
    pub user: String,
    /// The cluster (learned segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<u32>,
    /// 1 for a rule segment; for a learned one the cosine between the user's vector and the
    /// cluster's centre.
    pub score: f64,
    /// The user's internal id: the page cursor.
    #[serde(skip)]
    pub id: u32,
}

/// A page of members, in user id order.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPage {
    /// The members.
    pub members: Vec<SegmentMember>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<u32>,
}

/// One point of a segment's size history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = SegmentSize)]
pub struct SizePoint {
    /// When it was computed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Millis,
    /// Members then (every cluster's for a learned segment).
    pub size: u64,
    /// Per cluster (learned segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<u64>>,
}

/// A segment a user belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UserSegment {
    /// The segment.
    pub segment: String,
    /// The cluster (learned segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<u32>,
    /// As in [`SegmentMember::score`].
    pub score: f64,
    /// When the membership was computed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub computed_at: Millis,
}

/// What the scheduler did for one due segment.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledRun {
    /// The segment.
    pub segment: String,
    /// The refresh, or why it failed.
    pub refresh: Result<SegmentRefresh, String>,
    /// The export, when the segment has one and the refresh succeeded.
    pub export: Option<ExportRecord>,
}

/// Why a segment could not be saved, computed or read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A field is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as in the request (`export.url`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No segment with this name.
    #[error("no segment {0:?}")]
    NotFound(String),
    /// The request does not fit the segment's state or the data (a kind change, too few users
    /// for `k`, too many segments).
    #[error("{field}: {message}")]
    Conflict {
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A refresh of the segment is already running.
    #[error("a refresh of segment {0:?} is already running")]
    Busy(String),
    /// A learned segment needs a trained model.
    #[error("no trained model yet: a learned segment clusters the trained user vectors")]
    NoModel,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
    /// Writing members out failed (the reader went away, a full disk).
    #[error("writing members: {0}")]
    Io(#[from] std::io::Error),
    /// Our fault: the clustering refused the model's vectors.
    #[error("{0}")]
    Internal(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SegmentError {
    SegmentError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn conflict(field: impl Into<String>, message: impl Into<String>) -> SegmentError {
    SegmentError::Conflict {
        field: field.into(),
        message: message.into(),
    }
}

/// A definition as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    spec: SegmentSpec,
    /// When the spec last changed (the store's `updated_at` moves with every status write).
    #[serde(with = "rfc3339")]
    defined_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_refresh: Option<SegmentRefresh>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_failure: Option<RefreshFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_export: Option<ExportRecord>,
}

impl Stored {
    /// The last time a scheduled or manual refresh ran, successful or not.
    fn last_run(&self) -> Option<Millis> {
        let ok = self.last_refresh.as_ref().map(|r| r.computed_at);
        let failed = self.last_failure.as_ref().map(|f| f.at);
        ok.max(failed)
    }

    fn next_refresh(&self) -> Option<Millis> {
        let every = parse_duration(self.spec.refresh.as_deref()?).ok()?;
        Some(
            self.last_run()
                .map_or(self.defined_at, |l| l.saturating_add(every)),
        )
    }

    fn into_segment(self, record: &RuleRecord) -> Segment {
        Segment {
            name: record.name.clone(),
            next_refresh: self.next_refresh(),
            created_at: record.created_at,
            updated_at: self.defined_at,
            spec: self.spec,
            last_refresh: self.last_refresh,
            last_failure: self.last_failure,
            last_export: self.last_export,
        }
    }
}

/// RFC 3339 with milliseconds, both ways: stored definitions and API answers alike.
mod rfc3339 {
    use bespoke_algo::Millis;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::format_rfc3339(*ms))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(d)?;
        crate::time::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

fn opt_rfc3339<S: serde::Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// The member-set name of cluster `c` of learned segment `name`.
fn cluster_set(name: &str, c: usize) -> String {
    format!("{name}/{c}")
}

/// The name of the store secret signing `name`'s webhook deliveries.
fn secret_name(name: &str) -> String {
    format!("segment-webhook:{name}")
}

/// The secret as shown to the client and used as the HMAC key (its ASCII bytes).
fn secret_text(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut out = String::from("whsec_");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Checks a segment name: 1 to 64 ASCII letters, digits, `-`, `_` or `.`. No `/`, so that a
/// cluster's member set (`name/3`) never names another segment.
fn check_segment_name(name: &str) -> Result<(), SegmentError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!(
                "a segment name is 1 to {MAX_NAME_BYTES} ASCII letters, digits, '-', '_' or '.', got {name:?}"
            ),
        ))
    }
}

/// Whether a behaviour predicate of `e` has conditions on the event's item (so that items must
/// be loaded).
fn needs_items(e: &UserExpr) -> bool {
    match e {
        UserExpr::Or(xs) | UserExpr::And(xs) => xs.iter().any(needs_items),
        UserExpr::Not(x) => needs_items(x),
        UserExpr::Events { filter, .. } | UserExpr::Value { filter, .. } => !filter.item.is_empty(),
        UserExpr::Attribute(_) | UserExpr::Seen { .. } => false,
    }
}

/// One event as a rule refresh keeps it: 40 bytes instead of a store record.
#[derive(Debug, Clone, Copy)]
struct Lean {
    user: u32,
    item: u32,
    kind: u32,
    timestamp: Millis,
    value: Option<f64>,
}

/// The events a rule refresh reads, grouped by user.
#[derive(Debug, Default)]
struct Events {
    /// By user id, then sequence number.
    events: Vec<Lean>,
    kinds: Vec<String>,
}

/// The members computed by a refresh, per member set, before they are stored.
struct Computed {
    /// `(member set, members)`: one for a rule segment, `k` for a learned one.
    sets: Vec<(String, Vec<(UserIdx, f64)>)>,
    summary: SegmentRefresh,
}

/// The in-memory part: refreshes in progress and the lock that serialises status writes.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    /// Held while a definition is read, changed and written back.
    defs: Mutex<()>,
    /// Segments being refreshed.
    running: Mutex<FxHashSet<String>>,
}

/// Removes a segment from [`Segments::running`] when its refresh ends, however it ends.
struct Running<'a> {
    set: &'a Mutex<FxHashSet<String>>,
    name: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.name);
    }
}

impl Engine {
    fn stored_segments(&self) -> Result<Vec<(RuleRecord, Stored)>, SegmentError> {
        Ok(self
            .store
            .segments()?
            .into_iter()
            .filter_map(
                |record| match serde_json::from_value::<Stored>(record.definition.clone()) {
                    Ok(s) => Some((record, s)),
                    Err(e) => {
                        tracing::warn!(segment = %record.name, error = %e, "stored segment does not read; ignored");
                        None
                    }
                },
            )
            .collect())
    }

    fn stored_segment(&self, name: &str) -> Result<(RuleRecord, Stored), SegmentError> {
        self.stored_segments()?
            .into_iter()
            .find(|(r, _)| r.name == name)
            .ok_or_else(|| SegmentError::NotFound(name.to_owned()))
    }

    fn save_segment(&self, name: &str, stored: &Stored) -> Result<RuleRecord, SegmentError> {
        let definition = serde_json::to_value(stored).expect("a segment serializes");
        Ok(self.store.put_segment(name, &definition, now_ms())?)
    }

    /// Every segment, by name.
    pub fn segments(&self) -> Result<Vec<Segment>, SegmentError> {
        Ok(self
            .stored_segments()?
            .into_iter()
            .map(|(r, s)| s.into_segment(&r))
            .collect())
    }

    /// One segment.
    pub fn segment(&self, name: &str) -> Result<Segment, SegmentError> {
        let (r, s) = self.stored_segment(name)?;
        Ok(s.into_segment(&r))
    }

    /// Checks a definition: every error names its field.
    pub fn check_segment(&self, input: SegmentIn) -> Result<SegmentSpec, SegmentError> {
        let kind = match input.kind.as_deref() {
            Some("rule") => {
                if input.k.is_some() || input.seed.is_some() {
                    let field = if input.k.is_some() { "k" } else { "seed" };
                    return Err(invalid(
                        field,
                        format!(
                            "{field} is for learned segments; a rule segment has an expression"
                        ),
                    ));
                }
                let Some(expression) = input.expression else {
                    return Err(invalid(
                        "expression",
                        "a rule segment needs an expression (docs/segments.md)",
                    ));
                };
                let limits = crate::pipeline::rules::limits(&self.settings);
                crate::segments::parse(&expression, &limits)
                    .map_err(|e| invalid("expression", e.to_string()))?;
                SegmentKind::Rule { expression }
            }
            Some("learned") => {
                if input.expression.is_some() {
                    return Err(invalid(
                        "expression",
                        "a learned segment has no expression: it clusters the model's user vectors",
                    ));
                }
                let k = input.k.unwrap_or(8);
                if !(MIN_CLUSTERS as i64..=MAX_CLUSTERS as i64).contains(&k) {
                    return Err(invalid(
                        "k",
                        format!("k must be from {MIN_CLUSTERS} to {MAX_CLUSTERS}, got {k}"),
                    ));
                }
                SegmentKind::Learned {
                    k: k as usize,
                    seed: input.seed.unwrap_or(0),
                }
            }
            Some(other) => {
                return Err(invalid(
                    "kind",
                    format!("kind must be \"rule\" or \"learned\", got {other:?}"),
                ));
            }
            None => return Err(invalid("kind", "give a kind: \"rule\" or \"learned\"")),
        };
        if let Some(d) = &input.description
            && d.len() > MAX_DESCRIPTION_BYTES
        {
            return Err(invalid(
                "description",
                format!("at most {MAX_DESCRIPTION_BYTES} bytes"),
            ));
        }
        if let Some(r) = &input.refresh {
            let every =
                parse_duration(r).map_err(|why| invalid("refresh", format!("refresh {why}")))?;
            if every < MIN_REFRESH_MS {
                return Err(invalid(
                    "refresh",
                    format!("refresh must be at least 5m, got {r:?}"),
                ));
            }
        }
        let export = match input.export {
            None => None,
            Some(e) => {
                let url = crate::webhook::validate_url("export.url", &e.url).map_err(|err| {
                    invalid(
                        err.field.unwrap_or_else(|| "export.url".into()),
                        err.message,
                    )
                })?;
                if url.scheme() == crate::webhook::Scheme::Https {
                    return Err(invalid(
                        "export.url",
                        "export.url must be http://: deliveries are plain http (point it at a local TLS-terminating proxy for an https receiver, docs/webhooks.md)",
                    ));
                }
                let format = match e.format.as_deref() {
                    None => MemberFormat::Jsonl,
                    Some(f) => MemberFormat::parse(f).ok_or_else(|| {
                        invalid(
                            "export.format",
                            format!("export.format must be \"jsonl\" or \"csv\", got {f:?}"),
                        )
                    })?,
                };
                if input.refresh.is_none() {
                    return Err(invalid(
                        "export",
                        "an export is sent after each scheduled refresh: give refresh too (such as \"1d\")",
                    ));
                }
                Some(ExportSpec { url: e.url, format })
            }
        };
        Ok(SegmentSpec {
            kind,
            description: input.description,
            refresh: input.refresh,
            export,
        })
    }

    /// Creates a segment or replaces its definition. A new segment gets the secret its webhook
    /// deliveries are signed with, returned this once. A replaced one keeps its members until
    /// its next refresh; its kind cannot change (delete it and create it again).
    pub fn put_segment(&self, name: &str, input: SegmentIn) -> Result<PutSegment, SegmentError> {
        check_segment_name(name)?;
        let spec = self.check_segment(input)?;
        let _defs = self.segments.defs.lock();
        let all = self.stored_segments()?;
        let existing = all.iter().find(|(r, _)| r.name == name).map(|(_, s)| s);
        if let Some(old) = existing
            && old.spec.kind.name() != spec.kind.name()
        {
            return Err(conflict(
                "kind",
                format!(
                    "segment {name:?} is {}; a segment's kind cannot change (delete it and create it again)",
                    old.spec.kind.name()
                ),
            ));
        }
        if existing.is_none() && all.len() >= MAX_SEGMENTS {
            return Err(conflict(
                "name",
                format!("at most {MAX_SEGMENTS} segments; delete one first"),
            ));
        }
        let webhook_secret = match existing {
            Some(_) => None,
            None => {
                let fresh = crate::auth::random_bytes()?;
                Some(secret_text(&self.store.secret(&secret_name(name), fresh)?))
            }
        };
        let stored = Stored {
            spec,
            defined_at: now_ms(),
            last_refresh: existing.and_then(|s| s.last_refresh.clone()),
            last_failure: existing.and_then(|s| s.last_failure.clone()),
            last_export: existing.and_then(|s| s.last_export.clone()),
        };
        let record = self.save_segment(name, &stored)?;
        Ok(PutSegment {
            segment: stored.into_segment(&record),
            created: existing.is_none(),
            webhook_secret,
        })
    }

    /// Deletes a segment, its members, size history and webhook secret; `false` when there was
    /// none.
    pub fn delete_segment(&self, name: &str) -> Result<bool, SegmentError> {
        let _defs = self.segments.defs.lock();
        let Ok((record, stored)) = self.stored_segment(name) else {
            return Ok(false);
        };
        let segment = stored.into_segment(&record);
        for c in 0..segment.clusters() {
            self.store.delete_segment(&cluster_set(name, c))?;
        }
        let deleted = self.store.delete_segment(name)?;
        self.store.delete_secret(&secret_name(name))?;
        Ok(deleted)
    }

    /// Computes the segment's members as of `now` and stores them (a new point of its size
    /// history). [`SegmentError::Busy`] while another refresh of it runs.
    pub fn refresh_segment(&self, name: &str, now: Millis) -> Result<SegmentRefresh, SegmentError> {
        let _running = {
            let mut running = self.segments.running.lock();
            if !running.insert(name.to_owned()) {
                return Err(SegmentError::Busy(name.to_owned()));
            }
            Running {
                set: &self.segments.running,
                name: name.to_owned(),
            }
        };
        let started = std::time::Instant::now();
        let (_, stored) = self.stored_segment(name)?;
        // Never two points at one time, so that every refresh adds one to the size history.
        let at = match &stored.last_refresh {
            Some(last) => now.max(last.computed_at.saturating_add(1)),
            None => now,
        };
        let mut computed = match &stored.spec.kind {
            SegmentKind::Rule { expression } => self.compute_rule(name, expression, at)?,
            SegmentKind::Learned { k, seed } => self.compute_learned(name, *k, *seed)?,
        };
        let _defs = self.segments.defs.lock();
        let (_, mut current) = self.stored_segment(name)?;
        if current.spec != stored.spec {
            return Err(conflict(
                "segment",
                format!("segment {name:?} was redefined during the refresh; refresh it again"),
            ));
        }
        let mut sizes = Vec::with_capacity(computed.sets.len());
        for (set, members) in std::mem::take(&mut computed.sets) {
            sizes.push(self.store.replace_members(&set, members, at)?);
        }
        // Clusters a smaller `k` no longer has: their members and history go.
        let had = current
            .last_refresh
            .as_ref()
            .map_or(0, |r| r.clusters.len());
        if let SegmentKind::Learned { k, .. } = current.spec.kind {
            for c in k..had {
                self.store.delete_segment(&cluster_set(name, c))?;
            }
        }
        let mut summary = computed.summary;
        for (cluster, size) in summary.clusters.iter_mut().zip(&sizes) {
            cluster.size = *size;
        }
        summary.size = sizes.iter().sum();
        summary.computed_at = at;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        current.last_refresh = Some(summary.clone());
        current.last_failure = None;
        self.save_segment(name, &current)?;
        tracing::info!(
            segment = name,
            size = summary.size,
            elapsed_ms = summary.elapsed_ms,
            "segment refreshed"
        );
        Ok(summary)
    }

    /// A rule segment's members: every user the expression is true for at `now`.
    fn compute_rule(
        &self,
        name: &str,
        expression: &str,
        now: Millis,
    ) -> Result<Computed, SegmentError> {
        let limits = crate::pipeline::rules::limits(&self.settings);
        // Checked when saved; the limits may have been lowered since.
        let expr = crate::segments::parse(expression, &limits)
            .map_err(|e| invalid("expression", e.to_string()))?;
        let reads_behaviour = expr.needs_events();
        let events = if reads_behaviour {
            self.load_events(expr.max_window().map(|w| now.saturating_sub(w)))?
        } else {
            Events::default()
        };
        let items = if needs_items(&expr) {
            self.load_items(&events)?
        } else {
            FxHashMap::default()
        };
        let mut members = Vec::new();
        let mut excluded = SegmentExcluded::default();
        let mut evaluated = 0u64;
        let mut facts: Vec<FactEvent<'_>> = Vec::new();
        let mut cursor = 0;
        let mut after = None;
        loop {
            let users = self.store.scan_users(after, USER_CHUNK)?;
            let Some(last) = users.last() else { break };
            after = Some(last.idx);
            for u in &users {
                let id = u.idx.0;
                while cursor < events.events.len() && events.events[cursor].user < id {
                    cursor += 1;
                }
                let start = cursor;
                while cursor < events.events.len() && events.events[cursor].user == id {
                    cursor += 1;
                }
                if !u.consent.marketing {
                    excluded.marketing += 1;
                    continue;
                }
                if reads_behaviour && !u.consent.personalization {
                    excluded.personalization += 1;
                    continue;
                }
                facts.clear();
                facts.extend(events.events[start..cursor].iter().map(|e| FactEvent {
                    kind: &events.kinds[e.kind as usize],
                    timestamp: e.timestamp,
                    value: e.value,
                    item: items.get(&e.item),
                }));
                evaluated += 1;
                let user = UserFacts {
                    attributes: &u.attributes,
                    events: &facts,
                };
                if expr.eval(&user, now) {
                    members.push((u.idx, 1.0));
                }
            }
        }
        Ok(Computed {
            sets: vec![(name.to_owned(), members)],
            summary: SegmentRefresh {
                kind: "rule".into(),
                computed_at: now,
                size: 0,
                evaluated_users: evaluated,
                excluded,
                elapsed_ms: 0,
                model_version: None,
                clusters: Vec::new(),
            },
        })
    }

    /// Every event at or after `since` (all of them when `None`), in one pass over the log,
    /// grouped by user. Timestamps are the client's and need not follow the log's order, so the
    /// whole log is read; only the events inside the window are kept.
    fn load_events(&self, since: Option<Millis>) -> Result<Events, SegmentError> {
        let mut out = Events::default();
        let mut kinds: FxHashMap<String, u32> = FxHashMap::default();
        let mut seq = 0;
        loop {
            let chunk = self.store.scan_interactions(seq, EVENT_CHUNK)?;
            let Some(last) = chunk.last() else { break };
            seq = last.seq;
            for e in chunk {
                if since.is_some_and(|s| e.timestamp < s) {
                    continue;
                }
                let next = kinds.len() as u32;
                let kind = *kinds.entry(e.kind).or_insert(next);
                out.events.push(Lean {
                    user: e.user.0,
                    item: e.item.0,
                    kind,
                    timestamp: e.timestamp,
                    value: e.value,
                });
            }
        }
        // Stable: each user's events stay in log order.
        out.events.sort_by_key(|e| e.user);
        out.kinds = vec![String::new(); kinds.len()];
        for (k, i) in kinds {
            out.kinds[i as usize] = k;
        }
        Ok(out)
    }

    /// The items the events are on, without their embeddings (no condition reads them).
    fn load_items(&self, events: &Events) -> Result<FxHashMap<u32, Item>, SegmentError> {
        let wanted: FxHashSet<u32> = events.events.iter().map(|e| e.item).collect();
        let mut items = FxHashMap::default();
        let mut after: Option<ItemIdx> = None;
        while items.len() < wanted.len() {
            let page = self.store.scan_items(after, USER_CHUNK)?;
            let Some(last) = page.last() else { break };
            after = Some(last.idx);
            for mut item in page {
                if wanted.contains(&item.idx.0) {
                    item.embeddings.clear();
                    items.insert(item.idx.0, item);
                }
            }
        }
        Ok(items)
    }

    /// A learned segment's members: k-means on the served model's user vectors of the users
    /// who allow it, each cluster described by categories and attribute values.
    fn compute_learned(&self, name: &str, k: usize, seed: u64) -> Result<Computed, SegmentError> {
        let model = self
            .serving
            .model
            .load_full()
            .ok_or(SegmentError::NoModel)?;
        let factors = model.als.user_factors();
        let mut rows = Vec::new();
        let mut users: Vec<u32> = Vec::new();
        let mut cat_offsets = vec![0usize];
        let mut cats: Vec<u32> = Vec::new();
        let mut excluded = SegmentExcluded::default();
        let n_categories;
        {
            // The same users as an audience: under the read lock, only copies are made.
            let s = self.serving.state.read();
            for (row, store) in model.user_store_ids().enumerate() {
                let Some(u) = store else { continue };
                if s.deleted_users.contains(&u) {
                    continue;
                }
                if s.no_marketing.contains(&u) {
                    excluded.marketing += 1;
                    continue;
                }
                if !s.personalization.get(u as usize).copied().unwrap_or(true) {
                    excluded.personalization += 1;
                    continue;
                }
                if s.live.is_private(UserIdx(u)) {
                    excluded.training += 1;
                    continue;
                }
                rows.push(row);
                users.push(u);
                for x in s.live.history(UserIdx(u)).iter().filter(|x| x.weight > 0.0) {
                    if let Some(m) = s.meta(x.item) {
                        cats.extend_from_slice(&m.categories);
                    }
                }
                cat_offsets.push(cats.len());
            }
            n_categories = s.categories.id_bound();
        }
        let too_few = |n: usize| {
            conflict(
                "k",
                format!(
                    "k = {k} needs at least {k} users with distinct trained vectors who allow segmenting; the served model (version {}) has {n}",
                    model.version
                ),
            )
        };
        if users.len() < k {
            return Err(too_few(users.len()));
        }
        let params = KMeansParams {
            k,
            seed,
            ..KMeansParams::default()
        };
        let clustering = kmeans(factors, &rows, &params).map_err(|e| match e {
            KMeansError::TooFewRows { .. } => too_few(users.len()),
            KMeansError::TooFewDistinct { distinct, .. } => too_few(distinct),
            other => SegmentError::Internal(format!("clustering the user vectors: {other}")),
        })?;
        let (attr_offsets, attr_ids, values) = self.attribute_features(&users)?;
        let p = DescribeParams {
            top: TOP_FEATURES,
            ..DescribeParams::default()
        };
        let describe_err =
            |e: KMeansError| SegmentError::Internal(format!("describing the clusters: {e}"));
        let by_category = describe(
            &clustering,
            n_categories,
            |e| cats[cat_offsets[e]..cat_offsets[e + 1]].iter().copied(),
            &p,
        )
        .map_err(describe_err)?;
        let by_attribute = describe(
            &clustering,
            values.len(),
            |e| {
                attr_ids[attr_offsets[e]..attr_offsets[e + 1]]
                    .iter()
                    .copied()
            },
            &p,
        )
        .map_err(describe_err)?;
        let category_names: Vec<Vec<String>> = {
            let s = self.serving.state.read();
            by_category
                .iter()
                .map(|lifts| {
                    lifts
                        .iter()
                        .map(|l| s.categories.key(l.feature).unwrap_or_default().to_owned())
                        .collect()
                })
                .collect()
        };
        let mut sets: Vec<(String, Vec<(UserIdx, f64)>)> =
            (0..k).map(|c| (cluster_set(name, c), Vec::new())).collect();
        for (e, (&row, &u)) in rows.iter().zip(&users).enumerate() {
            let c = clustering.assignment[e] as usize;
            let score = closeness(factors.row(row), &clustering, c);
            sets[c].1.push((UserIdx(u), score));
        }
        let clusters = (0..k)
            .map(|c| ClusterSummary {
                cluster: c as u32,
                name: cluster_set(name, c),
                size: clustering.sizes[c] as u64,
                categories: by_category[c]
                    .iter()
                    .zip(&category_names[c])
                    .map(|(l, category)| CategoryLift {
                        category: category.clone(),
                        members: l.members,
                        share: l.share,
                        lift: l.lift,
                    })
                    .collect(),
                attributes: by_attribute[c]
                    .iter()
                    .map(|l: &FeatureLift| {
                        let (attribute, value) = values[l.feature as usize].clone();
                        AttributeLift {
                            attribute,
                            value,
                            members: l.members,
                            share: l.share,
                            lift: l.lift,
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(Computed {
            sets,
            summary: SegmentRefresh {
                kind: "learned".into(),
                computed_at: 0,
                size: 0,
                evaluated_users: users.len() as u64,
                excluded,
                elapsed_ms: 0,
                model_version: Some(model.version),
                clusters,
            },
        })
    }

    /// For each of `users` (store ids), the ids of its attribute values that can describe a
    /// cluster (strings, elements of lists of strings, booleans), as offsets into one list;
    /// and each id's `(attribute, value)`.
    #[allow(clippy::type_complexity)]
    fn attribute_features(
        &self,
        users: &[u32],
    ) -> Result<(Vec<usize>, Vec<u32>, Vec<(String, Value)>), SegmentError> {
        let entry: FxHashMap<u32, usize> = users.iter().enumerate().map(|(e, &u)| (u, e)).collect();
        let mut per_user: Vec<Vec<u32>> = vec![Vec::new(); users.len()];
        let mut ids: FxHashMap<(String, String), u32> = FxHashMap::default();
        let mut values: Vec<(String, Value)> = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.scan_users(after, USER_CHUNK)?;
            let Some(last) = page.last() else { break };
            after = Some(last.idx);
            for u in page {
                let Some(&e) = entry.get(&u.idx.0) else {
                    continue;
                };
                let mut mine = Vec::new();
                for (attribute, v) in &u.attributes {
                    let candidates: Vec<Value> = match v {
                        Value::String(s) if s.len() <= MAX_VALUE_BYTES => vec![v.clone()],
                        Value::Bool(_) => vec![v.clone()],
                        Value::Array(xs) => xs
                            .iter()
                            .filter(|x| x.as_str().is_some_and(|s| s.len() <= MAX_VALUE_BYTES))
                            .cloned()
                            .collect(),
                        _ => Vec::new(),
                    };
                    for value in candidates {
                        if mine.len() >= MAX_VALUES_PER_USER {
                            break;
                        }
                        let key = (attribute.clone(), value.to_string());
                        let id = match ids.get(&key) {
                            Some(&id) => id,
                            None if values.len() < MAX_ATTRIBUTE_VALUES => {
                                let id = values.len() as u32;
                                ids.insert(key, id);
                                values.push((attribute.clone(), value));
                                id
                            }
                            None => continue,
                        };
                        mine.push(id);
                    }
                }
                per_user[e] = mine;
            }
        }
        let mut offsets = vec![0usize];
        let mut flat = Vec::new();
        for mine in per_user {
            flat.extend(mine);
            offsets.push(flat.len());
        }
        Ok((offsets, flat, values))
    }

    /// Store member-set names to read for `segment`, with the cluster of each.
    fn member_sets(
        &self,
        segment: &Segment,
        cluster: Option<u32>,
    ) -> Result<Vec<(String, Option<u32>)>, SegmentError> {
        let name = &segment.name;
        match (&segment.spec.kind, cluster) {
            (SegmentKind::Rule { .. }, None) => Ok(vec![(name.clone(), None)]),
            (SegmentKind::Rule { .. }, Some(_)) => Err(invalid(
                "cluster",
                format!("segment {name:?} is a rule segment: it has no clusters"),
            )),
            (SegmentKind::Learned { .. }, Some(c)) if (c as usize) < segment.clusters() => {
                Ok(vec![(cluster_set(name, c as usize), Some(c))])
            }
            (SegmentKind::Learned { .. }, Some(c)) => Err(invalid(
                "cluster",
                format!(
                    "segment {name:?} has clusters 0 to {}, not {c}",
                    segment.clusters() - 1
                ),
            )),
            (SegmentKind::Learned { .. }, None) => Ok((0..segment.clusters())
                .map(|c| (cluster_set(name, c), Some(c as u32)))
                .collect()),
        }
    }

    fn member_page(
        &self,
        sets: &[(String, Option<u32>)],
        after: Option<u32>,
        limit: usize,
    ) -> Result<MemberPage, SegmentError> {
        let limit = limit.clamp(1, MAX_MEMBERS_PAGE);
        let mut all = Vec::new();
        for (set, cluster) in sets {
            // One more than asked: whether a next page exists.
            for m in self.store.members(set, after.map(UserIdx), limit + 1)? {
                all.push(SegmentMember {
                    user: m.key,
                    cluster: *cluster,
                    score: m.score,
                    id: m.user.0,
                });
            }
        }
        all.sort_by_key(|m| m.id);
        // A refresh in progress may briefly show a user in their old and new cluster.
        all.dedup_by_key(|m| m.id);
        let more = all.len() > limit;
        all.truncate(limit);
        let next = if more { all.last().map(|m| m.id) } else { None };
        Ok(MemberPage { members: all, next })
    }

    /// A page of at most `limit` members of a segment (of one cluster, or of all of a learned
    /// segment's), in user id order, after the user id `after`.
    pub fn segment_members(
        &self,
        name: &str,
        cluster: Option<u32>,
        after: Option<u32>,
        limit: usize,
    ) -> Result<MemberPage, SegmentError> {
        let segment = self.segment(name)?;
        let sets = self.member_sets(&segment, cluster)?;
        self.member_page(&sets, after, limit)
    }

    /// Writes every member of a segment (or of one cluster) in `format`, a page at a time: each
    /// call of `sink` gets the next piece (the header with the first page). Returns how many
    /// members were written. Nothing is held but one page, so this streams any size.
    pub fn write_segment_members(
        &self,
        name: &str,
        cluster: Option<u32>,
        format: MemberFormat,
        mut sink: impl FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> Result<u64, SegmentError> {
        let segment = self.segment(name)?;
        let sets = self.member_sets(&segment, cluster)?;
        let mut buf = Vec::new();
        format.header(segment.learned(), &mut buf);
        let mut written = 0u64;
        let mut after = None;
        loop {
            let page = self.member_page(&sets, after, STREAM_PAGE)?;
            for m in &page.members {
                format.row(m, &mut buf);
            }
            written += page.members.len() as u64;
            if !buf.is_empty() {
                sink(std::mem::take(&mut buf))?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(written)
    }

    /// A segment's size after each refresh, oldest first (per cluster too for a learned one).
    pub fn segment_sizes(&self, name: &str) -> Result<Vec<SizePoint>, SegmentError> {
        let segment = self.segment(name)?;
        if !segment.learned() {
            return Ok(self
                .store
                .segment_sizes(name)?
                .into_iter()
                .map(|(at, size)| SizePoint {
                    at,
                    size,
                    clusters: None,
                })
                .collect());
        }
        // Every cluster of one refresh has the same time.
        let n = segment.clusters();
        let mut by_time: std::collections::BTreeMap<Millis, Vec<u64>> = Default::default();
        for c in 0..n {
            for (at, size) in self.store.segment_sizes(&cluster_set(name, c))? {
                by_time.entry(at).or_insert_with(|| vec![0; n])[c] = size;
            }
        }
        Ok(by_time
            .into_iter()
            .map(|(at, clusters)| SizePoint {
                at,
                size: clusters.iter().sum(),
                clusters: Some(clusters),
            })
            .collect())
    }

    /// The segments the user with this key belongs to, by name; `None` for an unknown user.
    pub fn user_segments(&self, key: &str) -> Result<Option<Vec<UserSegment>>, SegmentError> {
        let stored = self.serving.user_keys.to_store(key);
        let Some(user) = self.store.get_user(&stored)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for (set, score) in self.store.memberships(user.idx)? {
            let (segment, cluster) = match set.rsplit_once('/') {
                Some((s, c)) => (s.to_owned(), c.parse().ok()),
                None => (set.clone(), None),
            };
            let computed_at = self
                .store
                .members(&set, user.idx.0.checked_sub(1).map(UserIdx), 1)?
                .into_iter()
                .find(|m| m.user == user.idx)
                .map_or(0, |m| m.at);
            out.push(UserSegment {
                segment,
                cluster,
                score,
                computed_at,
            });
        }
        Ok(Some(out))
    }

    /// The segments whose `refresh` interval has passed at `now` (never refreshed counts as
    /// due), by name.
    pub fn due_segments(&self, now: Millis) -> Result<Vec<String>, SegmentError> {
        Ok(self
            .stored_segments()?
            .into_iter()
            .filter(|(_, s)| s.next_refresh().is_some_and(|at| at <= now))
            .map(|(r, _)| r.name)
            .collect())
    }

    /// Applies `change` to the stored status of `name` (under the definitions lock), unless
    /// the segment was deleted meanwhile.
    fn record_status(
        &self,
        name: &str,
        change: impl FnOnce(&mut Stored),
    ) -> Result<(), SegmentError> {
        let _defs = self.segments.defs.lock();
        match self.stored_segment(name) {
            Ok((_, mut stored)) => {
                change(&mut stored);
                self.save_segment(name, &stored)?;
                Ok(())
            }
            Err(SegmentError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The secret that signs `name`'s webhook deliveries (the ASCII bytes of the text the PUT
    /// that created it returned).
    fn webhook_secret(&self, name: &str) -> Result<Option<Vec<u8>>, SegmentError> {
        Ok(self
            .store
            .stored_secret(&secret_name(name))?
            .map(|b| secret_text(&b).into_bytes()))
    }

    /// The scheduler's step, run every minute by the server (and by tests with a `now` of
    /// their choosing): refreshes every segment whose `refresh` interval has passed at `now`
    /// (as of `now`), then sends the members of those with an `export` to their webhook,
    /// recording each outcome in the segment. A segment already being refreshed is skipped.
    /// Exports are audited (`segment.export`, actor `scheduler`).
    pub async fn run_due_segments(self: &Arc<Self>, now: Millis) -> Vec<ScheduledRun> {
        let e = self.clone();
        let due = match tokio::task::spawn_blocking(move || e.due_segments(now)).await {
            Ok(Ok(due)) => due,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "reading segments for their schedule failed");
                return Vec::new();
            }
            Err(err) => {
                tracing::error!(error = %err, "reading segments for their schedule panicked");
                return Vec::new();
            }
        };
        let mut runs = Vec::new();
        for name in due {
            let (e, n) = (self.clone(), name.clone());
            let refreshed = tokio::task::spawn_blocking(move || e.refresh_segment(&n, now))
                .await
                .unwrap_or_else(|join| Err(SegmentError::Internal(join.to_string())));
            let summary = match refreshed {
                Ok(summary) => summary,
                Err(SegmentError::Busy(_) | SegmentError::NotFound(_)) => continue,
                Err(err) => {
                    let message = err.to_string();
                    tracing::warn!(segment = %name, error = %message, "scheduled segment refresh failed");
                    let (e, n, m) = (self.clone(), name.clone(), message.clone());
                    let recorded = tokio::task::spawn_blocking(move || {
                        e.record_status(&n, |s| {
                            s.last_failure = Some(RefreshFailure {
                                at: now,
                                message: m,
                            })
                        })
                    })
                    .await;
                    if let Ok(Err(err)) = recorded {
                        tracing::warn!(segment = %name, error = %err, "recording a segment's failure failed");
                    }
                    runs.push(ScheduledRun {
                        segment: name,
                        refresh: Err(message),
                        export: None,
                    });
                    continue;
                }
            };
            let e = self.clone();
            let n = name.clone();
            let spec = tokio::task::spawn_blocking(move || e.segment(&n))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|s| s.spec.export);
            let export = match spec {
                Some(spec) => Some(self.export_segment(&name, &spec, now).await),
                None => None,
            };
            runs.push(ScheduledRun {
                segment: name,
                refresh: Ok(summary),
                export,
            });
        }
        runs
    }

    /// Sends every member of `name` to its webhook and records the outcome.
    async fn export_segment(
        self: &Arc<Self>,
        name: &str,
        spec: &ExportSpec,
        now: Millis,
    ) -> ExportRecord {
        let mut record = ExportRecord {
            at: now,
            ok: false,
            status: None,
            attempts: 0,
            delivery: None,
            members: 0,
            bytes: 0,
            error: None,
        };
        let url = match crate::webhook::validate_url("export.url", &spec.url) {
            Ok(url) => Some(url),
            Err(e) => {
                record.error = Some(e.message);
                None
            }
        };
        if let Some(url) = url {
            let (e, n, format) = (self.clone(), name.to_owned(), spec.format);
            let built = tokio::task::spawn_blocking(move || {
                let secret = e.webhook_secret(&n)?;
                let mut body = Vec::new();
                let members = e.write_segment_members(&n, None, format, |piece| {
                    body.extend_from_slice(&piece);
                    Ok(())
                })?;
                Ok::<_, SegmentError>((secret, body, members))
            })
            .await
            .unwrap_or_else(|join| Err(SegmentError::Internal(join.to_string())));
            match built {
                Ok((None, _, _)) => {
                    record.error =
                        Some("the segment's webhook secret is missing from the store".into());
                }
                Ok((Some(secret), body, members)) => {
                    record.members = members;
                    record.bytes = body.len() as u64;
                    let sent = crate::webhook::deliver(
                        &url,
                        &secret,
                        body,
                        spec.format.content_type(),
                        EXPORT_TIMEOUT,
                    )
                    .await;
                    use crate::webhook::{AttemptError, DeliveryError};
                    match sent {
                        Ok(report) => {
                            record.ok = true;
                            record.status = Some(report.status);
                            record.attempts = report.attempts;
                            record.delivery = Some(report.id);
                        }
                        Err(err) => {
                            match &err {
                                DeliveryError::Rejected {
                                    id,
                                    status,
                                    attempts,
                                } => {
                                    record.status = Some(*status);
                                    record.attempts = *attempts;
                                    record.delivery = Some(id.clone());
                                }
                                DeliveryError::GaveUp { id, attempts, last } => {
                                    if let AttemptError::Status(s) = last {
                                        record.status = Some(*s);
                                    }
                                    record.attempts = *attempts;
                                    record.delivery = Some(id.clone());
                                }
                                _ => {}
                            }
                            record.error = Some(err.to_string());
                        }
                    }
                }
                Err(err) => record.error = Some(err.to_string()),
            }
        }
        if let Some(error) = &record.error {
            tracing::warn!(segment = name, error = %error, "segment export failed");
        }
        let (e, n, r) = (self.clone(), name.to_owned(), record.clone());
        let recorded = tokio::task::spawn_blocking(move || {
            e.access.audit(
                "scheduler",
                "segment.export",
                Some(&n),
                Some(json!({
                    "ok": r.ok, "status": r.status, "members": r.members, "attempts": r.attempts,
                    "delivery": r.delivery,
                })),
            );
            e.record_status(&n, |s| s.last_export = Some(r))
        })
        .await;
        if let Ok(Err(err)) = recorded {
            tracing::warn!(segment = name, error = %err, "recording a segment's export failed");
        }
        record
    }
}

/// The cosine between a user's vector and the centre of their cluster `c`: how typical of the
/// cluster they are (0 for a zero vector).
fn closeness(x: &[f32], clustering: &Clustering, c: usize) -> f64 {
    let centre = clustering.centroids.row(c);
    let (mut dot, mut xx, mut cc) = (0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(centre) {
        dot += a as f64 * b as f64;
        xx += a as f64 * a as f64;
        cc += b as f64 * b as f64;
    }
    let norm = (xx * cc).sqrt();
    if norm > 0.0 { dot / norm } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_quote_what_needs_quoting() {
        let mut out = Vec::new();
        MemberFormat::Csv.header(true, &mut out);
        for (user, cluster) in [("plain", Some(1)), ("a,b \"c\"", Some(0))] {
            let m = SegmentMember {
                user: user.into(),
                cluster,
                score: 0.5,
                id: 0,
            };
            MemberFormat::Csv.row(&m, &mut out);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "user,cluster,score\nplain,1,0.5\n\"a,b \"\"c\"\"\",0,0.5\n"
        );
        let mut out = Vec::new();
        MemberFormat::Jsonl.header(false, &mut out);
        let m = SegmentMember {
            user: "u\"1".into(),
            cluster: None,
            score: 1.0,
            id: 7,
        };
        MemberFormat::Jsonl.row(&m, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"user\":\"u\\\"1\",\"score\":1.0}\n"
        );
    }

    #[test]
    fn names_cannot_reach_a_cluster_set() {
        assert!(check_segment_name("garden-de_2026.q1").is_ok());
        for bad in ["", "a/0", "spa ce", "é", &"x".repeat(65)] {
            assert!(check_segment_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stored_definitions_round_trip() {
        let stored = Stored {
            spec: SegmentSpec {
                kind: SegmentKind::Learned { k: 3, seed: 9 },
                description: None,
                refresh: Some("1d".into()),
                export: Some(ExportSpec {
                    url: "http://127.0.0.1:9/hook".into(),
                    format: MemberFormat::Csv,
                }),
            },
            defined_at: 1_700_000_000_123,
            last_refresh: Some(SegmentRefresh {
                kind: "learned".into(),
                computed_at: 1_700_000_000_456,
                size: 3,
                evaluated_users: 3,
                excluded: SegmentExcluded::default(),
                elapsed_ms: 1,
                model_version: Some(2),
                clusters: Vec::new(),
            }),
            last_failure: None,
            last_export: None,
        };
        let json = serde_json::to_value(&stored).unwrap();
        assert_eq!(json["spec"]["kind"], "learned");
        assert_eq!(json["defined_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(serde_json::from_value::<Stored>(json).unwrap(), stored);
        assert_eq!(stored.next_refresh(), Some(1_700_000_000_456 + 86_400_000));
    }

    #[test]
    fn a_kept_event_is_40_bytes() {
        // What docs/segments.md says a rule refresh holds per event in its window.
        assert_eq!(std::mem::size_of::<Lean>(), 40);
    }

    #[test]
    fn secrets_are_whsec_and_hex() {
        let s = secret_text(&[0xab; 32]);
        assert_eq!(s.len(), 6 + 64);
        assert!(s.starts_with("whsec_abab"));
    }
}
