//! Configuration, built in one place and in layers: compiled-in defaults, then a TOML file, then
//! `BESPOKE__SECTION__KEY` environment variables; the CLI applies its flags last.
//!
//! Unknown keys are errors that name the key, so a typo never silently falls back to a default.
//! `config/bespoke.example.toml` documents every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bespoke_algo::{AlsParams, BprParams, ContentParams, EaseParams, KnnParams, ModelKind};
use serde::{Deserialize, Serialize};

/// The event type of impressions: items shown to a user. Reserved (not configurable): an
/// impression is not feedback, so it has no weight.
pub const IMPRESSION: &str = "impression";

/// All settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// API keys and rate limits.
    pub auth: AuthSettings,
    /// Storage.
    pub store: StoreSettings,
    /// Request limits.
    pub limits: Limits,
    /// Event ingestion.
    pub events: EventSettings,
    /// Streaming ingestion from NATS JetStream (feature `nats`, `docs/nats.md`).
    pub nats: NatsSettings,
    /// Consent defaults.
    pub consent: ConsentSettings,
    /// Retention and pseudonymization.
    pub privacy: PrivacySettings,
    /// Serving behaviour.
    pub serving: ServingSettings,
    /// Model training.
    pub training: TrainingSettings,
    /// Decision loops (contextual bandits).
    pub decisions: DecisionSettings,
    /// Business rules: impressions, hiding, expression limits.
    pub rules: RulesSettings,
    /// Fairness re-rankers' defaults and the fairness report (`docs/fairness.md`).
    pub fairness: FairnessSettings,
    /// Logging.
    pub log: LogSettings,
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Seconds to wait for in-flight requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds a connection has to send a complete request head (request line and headers),
    /// counted from when it opened or its previous response was sent; so this is also how long
    /// an idle keep-alive connection stays open. Past it the connection is closed.
    pub header_timeout_secs: u64,
    /// Longest pause, in seconds, while receiving a request body; past it the request is
    /// answered 408 and nothing of it is stored.
    pub body_timeout_secs: u64,
    /// Seconds a request may take from its head to its response (body included), answered 408
    /// past it. Training, tuning, erasure with retraining and decision-loop replays and
    /// evaluations are exempt (`api::UNBOUNDED_ROUTES`).
    pub request_timeout_secs: u64,
    /// Most connections served at once; further ones wait in the listen backlog until one
    /// closes. Keep it below the open-file limit (`ulimit -n`).
    pub max_connections: usize,
    /// Web origins (`https://shop.example.com`) whose pages may call the API from a browser
    /// (CORS). Empty: no CORS headers at all, so browsers refuse cross-origin calls. Exact
    /// origins only: a scheme, a host and an optional port; no `*`, no path.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_secs: 10,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            request_timeout_secs: 30,
            max_connections: 1024,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// API keys and rate limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Require an API key on every route but `/healthz`. May be off only when `server.bind` is
    /// a loopback address (development).
    pub enabled: bool,
    /// Requests per second a key may make when the key sets no rate of its own; 0 = unlimited.
    pub rate_per_second: f64,
    /// Seconds of its rate a key may spend at once (bucket size = rate × this, at least 1).
    pub burst_seconds: f64,
    /// Failed authentications (401s) a source address may have per minute on average; past
    /// them and `failed_burst`, its requests are answered 429 whatever key they carry, until
    /// its budget refills. 0 = off. Behind a reverse proxy the source is the proxy.
    pub failed_per_minute: f64,
    /// Failed authentications a source may have at once before `failed_per_minute` applies.
    pub failed_burst: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            rate_per_second: 0.0,
            burst_seconds: 2.0,
            failed_per_minute: 60.0,
            failed_burst: 30,
        }
    }
}

/// Why a CORS origin can never match; the message continues a subject (`..., which has ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum OriginError {
    /// Neither `https://` nor `http://`.
    #[error("must start with https:// or http://")]
    Scheme,
    /// `[` of an IPv6 address without `]`.
    #[error("has an unclosed [")]
    UnclosedBracket,
    /// A path, `*`, upper case or another character outside a host name.
    #[error("must be scheme://host[:port] in lowercase, without a path, `*` or other characters")]
    Host,
    /// The port is not a number from 0 to 65535.
    #[error("has a port that is not a number from 0 to 65535")]
    Port,
}

/// Checks a CORS origin: `scheme://host[:port]` in lowercase, as browsers send it in `Origin`
/// (matching is exact, so anything else would never match).
fn check_origin(origin: &str) -> Result<(), OriginError> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or(OriginError::Scheme)?;
    let (host_ok, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or(OriginError::UnclosedBracket)?;
        (
            addr.parse::<std::net::Ipv6Addr>().is_ok(),
            after
                .strip_prefix(':')
                .or((!after.is_empty()).then_some(after)),
        )
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
        (ok, port)
    };
    if !host_ok {
        return Err(OriginError::Host);
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(OriginError::Port);
    }
    Ok(())
}

/// How the popularity re-ranker trades relevance for the long tail.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PopularityMethod {
    /// Smooth xQuAD over head and tail (Abdollahpouri et al. 2019), λ its weight.
    #[default]
    Xquad,
    /// Relevance divided by popularity^β, β = λ.
    Inverse,
}

impl PopularityMethod {
    /// Parses `xquad` or `inverse`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "xquad" => Some(Self::Xquad),
            "inverse" => Some(Self::Inverse),
            _ => None,
        }
    }
}

/// Fairness re-rankers applied by default (a request's own fields override each), and the
/// fairness report (see `docs/fairness.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FairnessSettings {
    /// Calibration's λ (Steck 2018) from 0 (off) to 1: how far a list's categories are pulled
    /// toward those of the user's history.
    pub calibration: f32,
    /// Popularity debiasing's weight from 0 (off) to 1.
    pub popularity: f32,
    /// How popularity debiasing works: `xquad` or `inverse`.
    pub popularity_method: PopularityMethod,
    /// A rule expression (`docs/rules.md`) naming the protected item group; empty: none.
    pub protected: String,
    /// FA*IR's minimum share p of protected items at every prefix of a list, in (0, 1).
    pub protected_share: f64,
    /// FA*IR's significance level α, in (0, 1).
    pub protected_alpha: f64,
    /// The report's list length k.
    pub report_k: usize,
    /// Bootstrap resamples of the report's confidence intervals.
    pub bootstrap: usize,
}

impl Default for FairnessSettings {
    fn default() -> Self {
        Self {
            calibration: 0.0,
            popularity: 0.0,
            popularity_method: PopularityMethod::Xquad,
            protected: String::new(),
            protected_share: 0.3,
            protected_alpha: 0.1,
            report_k: 10,
            bootstrap: 1000,
        }
    }
}

/// Business rules (see `docs/rules.md`): the defaults of the no-repeat policy, hiding, and the
/// limits of rule expressions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RulesSettings {
    /// Drop an item a user was shown at least this many times within `impression_window`
    /// without interacting with it since; 0 turns it off. Has effect only for applications
    /// that send impressions. A request's `max_impressions` overrides it.
    pub max_impressions: u32,
    /// The window of `max_impressions`, as a duration (`90m`, `7d`).
    pub impression_window: String,
    /// Never show again what was in the user's last this many lists (impressions sharing a
    /// timestamp are one list); 0 turns it off. A request's `no_repeat_lists` overrides it.
    pub no_repeat_lists: u32,
    /// Impressions kept in memory per user (the newest); older ones stay in the store until
    /// retention removes them, but no longer count.
    pub impressions_per_user: usize,
    /// Event types that hide their item from the user who sent them (besides the per-user
    /// block list). Each must be a configured event type.
    pub hide_event_types: Vec<String>,
    /// How much an item resembling one the user hid moves down, from 0 (not at all) to 1
    /// (ranked by resemblance alone). A request's `hide_similar` overrides it.
    pub hide_similar: f32,
    /// Boosts, caps and promotions choose from the best `candidate_factor × n` candidates (at
    /// least `n + 20`); an item ranked below them is not lifted by a boost. (Boosts alone on
    /// the iALS model are folded into its scan and need no pool.) Each candidate
    /// costs retrieval time, so the default keeps rules cheap (`docs/benchmarks.md`).
    pub candidate_factor: usize,
    /// Longest rule expression, in bytes.
    pub max_expression_bytes: usize,
    /// Deepest nesting of parentheses and `not` in an expression.
    pub max_expression_depth: usize,
    /// Most values in one list literal (`in [...]`).
    pub max_list_values: usize,
    /// Most comparisons in one expression.
    pub max_clauses: usize,
    /// Most boosts or promotions in one request or saved rule.
    pub max_boosts: usize,
    /// Most saved rules.
    pub max_saved_rules: usize,
}

impl Default for RulesSettings {
    fn default() -> Self {
        Self {
            max_impressions: 3,
            impression_window: "7d".into(),
            no_repeat_lists: 0,
            impressions_per_user: 500,
            hide_event_types: vec!["not_interested".into()],
            hide_similar: 0.0,
            candidate_factor: 3,
            max_expression_bytes: 4096,
            max_expression_depth: 32,
            max_list_values: 256,
            max_clauses: 64,
            max_boosts: 16,
            max_saved_rules: 100,
        }
    }
}

impl RulesSettings {
    /// `impression_window` in milliseconds (validated at start).
    pub fn impression_window_ms(&self) -> i64 {
        crate::time::parse_duration(&self.impression_window).unwrap_or(7 * 86_400_000)
    }
}

/// Decision loops (contextual bandits).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionSettings {
    /// A loop's learner is checkpointed to the store after this many rewards (and every
    /// `settle_interval_ms * 30`, and at shutdown); a restart replays the rewards after it.
    pub checkpoint_every: u64,
    /// How often closed reward windows get their default rewards, in milliseconds.
    pub settle_interval_ms: u64,
    /// Most logged decisions an evaluation reads (the most recent ones).
    pub evaluation_max_decisions: usize,
    /// Loop that `/personalizer/v1.0/...` (Azure Personalizer's API) decides in.
    pub personalizer_loop: String,
    /// Most decision loops, not counting `personalizer_loop`. Creating one more (by a decision
    /// or by `PUT /v1/loops/{loop}`) is refused with 409 `too_many_loops`. A loop holds its
    /// configuration and, once it has learned from a reward, a learner of `12 · 2^bits` bytes
    /// (3 MiB at the default 18 bits), so this bounds what loops can take.
    pub max_loops: usize,
    /// Whether a decision naming an unknown loop creates it with the default configuration
    /// (audited as `loop.create`). When false, only an admin's `PUT /v1/loops/{loop}` creates
    /// loops and such a decision gets 404 `unknown_loop`; `personalizer_loop` is always created
    /// on first use.
    pub auto_create_loops: bool,
}

impl Default for DecisionSettings {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            settle_interval_ms: 1000,
            evaluation_max_decisions: 50_000,
            personalizer_loop: "personalizer".into(),
            max_loops: 100,
            auto_create_loops: true,
        }
    }
}

/// Retention and pseudonymization.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySettings {
    /// Events older than this many days are deleted, with what serving derived from them;
    /// 0 keeps events forever.
    pub max_event_age_days: f64,
    /// How often the server enforces `max_event_age_days`, in minutes.
    pub retention_interval_minutes: u64,
    /// Store user keys only as HMAC-SHA256(`pseudonym_secret`, key): the store never holds a
    /// raw user key, and the API keeps working with raw keys. Choose it when creating a store.
    pub pseudonymize_user_keys: bool,
    /// The HMAC key, at least 32 bytes; best set through `BESPOKE__PRIVACY__PSEUDONYM_SECRET`.
    pub pseudonym_secret: Secret,
    /// Key of the user references in the audit log and erasure receipts (HMAC-SHA256), at least
    /// 32 bytes; best set through `BESPOKE__PRIVACY__AUDIT_SECRET`. Kept out of the database so
    /// that a copy of the database cannot confirm a guessed user key. Empty: the key file below.
    pub audit_secret: Secret,
    /// File holding that key (64 hex digits) when `audit_secret` is empty; created owner-only
    /// (0600) with a random key on first start. Empty: `<data_dir>.audit-key`, beside the data
    /// directory and outside it, so that a backup of the directory does not hold the key.
    pub audit_secret_file: PathBuf,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            max_event_age_days: 0.0,
            retention_interval_minutes: 60,
            pseudonymize_user_keys: false,
            pseudonym_secret: Secret::default(),
            audit_secret: Secret::default(),
            audit_secret_file: PathBuf::new(),
        }
    }
}

/// A string that `Debug` does not print.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

/// Storage settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Directory holding the database (`bespoke.db`) and, later, model files.
    pub data_dir: PathBuf,
    /// A PostgreSQL store (`postgres://user@host:port/db`) instead of the embedded SQLite one
    /// in `data_dir`; empty (the default) for SQLite (`docs/postgres.md`).
    pub url: String,
    /// With `url`: the PostgreSQL schema holding Bespoke's tables (created if missing); empty
    /// for the connection's default (`public`).
    pub schema: String,
    /// SQLite page cache of the writer connection, in MiB.
    pub cache_mib: u32,
    /// Most events committed in one group transaction.
    pub max_group_events: usize,
    /// Largest size of the database in MiB; 0 = no limit but the disk's. Writes past it are
    /// answered 507 and store nothing, as on a full disk.
    pub max_size_mib: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./bespoke-data"),
            url: String::new(),
            schema: String::new(),
            cache_mib: 64,
            max_group_events: 100_000,
            max_size_mib: 0,
        }
    }
}

/// Limits on requests. Every one is enforced with a 4xx that names the limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one `POST /v1/events`.
    pub max_batch_events: usize,
    /// Longest user, item or event key, in bytes of UTF-8.
    pub max_key_bytes: usize,
    /// Largest `n` (results per request).
    pub max_n: usize,
    /// Largest page of a paginated listing.
    pub max_page_size: usize,
    /// Earliest accepted event time (RFC 3339).
    pub min_event_time: String,
    /// How far in the future (seconds past the server clock) an event time may be.
    pub max_clock_skew_secs: u64,
    /// Most items in an `exclude` list.
    pub max_exclude: usize,
    /// Most distinct item categories the server keeps in memory. An item write that would add
    /// categories past it is refused with 409 `too_many_categories` (a restart forgets the
    /// categories no item has any more).
    pub max_categories: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_events: 10_000,
            max_key_bytes: 256,
            max_n: 1000,
            max_page_size: 1000,
            min_event_time: "1990-01-01T00:00:00Z".into(),
            max_clock_skew_secs: 24 * 3600,
            max_exclude: 1000,
            max_categories: 100_000,
        }
    }
}

/// How an event type turns into a weight.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum WeightSpec {
    /// A fixed weight; negative for negative feedback.
    Fixed(f64),
    /// The event's `value` is the weight (ratings); the event must carry a value.
    Value(ValueWeight),
}

/// The marker `"value"` in the weights table.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum ValueWeight {
    /// Use the event's value.
    Value,
}

/// Event ingestion settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// Events naming an unknown user create it; otherwise they are refused (404).
    pub create_missing_users: bool,
    /// Events naming an unknown item create it; otherwise they are refused (404).
    pub create_missing_items: bool,
    /// Accepted event types and their weights. Types not listed are refused.
    pub weights: BTreeMap<String, WeightSpec>,
    /// `[low, high]`: the values accepted for event types whose weight is their value
    /// (`"value"`, such as ratings). Put your rating scale here (`[1, 5]`, `[0.5, 5]`); a value
    /// outside is refused with 400. Both ends lie within `±max_weight`.
    pub value_range: [f64; 2],
    /// Largest magnitude of one event's weight in popularity, trending, histories and
    /// training. Fixed weights and `value_range` must lie within it; events stored before
    /// these limits (or imported under wider ones) are clipped to it, so that no single event
    /// can dominate.
    pub max_weight: f64,
}

impl Default for EventSettings {
    fn default() -> Self {
        let fixed = |w| WeightSpec::Fixed(w);
        Self {
            create_missing_users: true,
            create_missing_items: true,
            weights: BTreeMap::from([
                ("view".into(), fixed(1.0)),
                ("click".into(), fixed(2.0)),
                ("add_to_cart".into(), fixed(4.0)),
                ("purchase".into(), fixed(8.0)),
                ("like".into(), fixed(4.0)),
                ("rating".into(), WeightSpec::Value(ValueWeight::Value)),
                ("dislike".into(), fixed(-4.0)),
                // Also hides the item from the user (rules.hide_event_types).
                ("not_interested".into(), fixed(-4.0)),
                ("skip".into(), fixed(-1.0)),
            ]),
            value_range: [-10.0, 10.0],
            max_weight: 10.0,
        }
    }
}

/// Streaming ingestion from NATS JetStream (`docs/nats.md`): a durable pull consumer that
/// stores the events published on `subject`, at least once, idempotent by event id. Needs a
/// server built with the cargo feature `nats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// NATS server URL: `nats://host:4222`, with credentials `nats://user:password@host:4222`
    /// or `nats://token@host:4222`, `tls://host:4222` for TLS. Empty (the default): off.
    pub url: String,
    /// JetStream stream to read: created (file storage, `subject` its one subject, work-queue
    /// retention) when missing, used as it is when present. 1 to 64 letters, digits, `-` or `_`.
    pub stream: String,
    /// Subject the events are published on; the consumer reads only this subject of the
    /// stream. `*` and a final `>` are wildcards.
    pub subject: String,
    /// Name of the durable consumer: the stream remembers what it acknowledged, so a restart
    /// resumes after it; servers with the same name share the messages. Same rules as `stream`.
    pub durable: String,
    /// Most messages fetched at once (and so unacknowledged at once), from 1 to 10000.
    pub batch: usize,
    /// Seconds the stream waits for a message's acknowledgement before delivering it again.
    pub ack_wait_secs: u64,
    /// Seconds before a message that could not be stored (a store error such as a full disk)
    /// is delivered again.
    pub retry_delay_secs: u64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            stream: "BESPOKE_EVENTS".into(),
            subject: "bespoke.events".into(),
            durable: "bespoke".into(),
            batch: 100,
            ack_wait_secs: 30,
            retry_delay_secs: 5,
        }
    }
}

impl NatsSettings {
    /// Checks the section when `url` is set (it is not read otherwise), naming the key.
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.url.is_empty() {
            return Ok(());
        }
        if !cfg!(feature = "nats") {
            return Err(invalid(
                "nats.url",
                "is set, but this build has no NATS support (cargo feature nats)",
            ));
        }
        if !(self.url.starts_with("nats://") || self.url.starts_with("tls://")) {
            return Err(invalid(
                "nats.url",
                "must be empty (off) or a nats:// or tls:// URL",
            ));
        }
        let name_ok = |n: &str| {
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        for (key, name) in [
            ("nats.stream", &self.stream),
            ("nats.durable", &self.durable),
        ] {
            if !name_ok(name) {
                return Err(invalid(
                    key,
                    format!("must be 1 to 64 letters, digits, - or _, got {name:?}"),
                ));
            }
        }
        let tokens: Vec<&str> = self.subject.split('.').collect();
        let subject_ok = self.subject.len() <= 255
            && tokens.iter().enumerate().all(|(i, t)| {
                !t.is_empty()
                    && (*t == "*"
                        || (*t == ">" && i == tokens.len() - 1)
                        || t.chars()
                            .all(|c| !(c.is_whitespace() || c.is_control() || "*>".contains(c))))
            });
        if !subject_ok {
            return Err(invalid(
                "nats.subject",
                format!(
                    "must be a NATS subject (tokens separated by dots, * and a final > as wildcards, at most 255 bytes), got {:?}",
                    self.subject
                ),
            ));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(invalid("nats.batch", "must be from 1 to 10000"));
        }
        for (key, v) in [
            ("nats.ack_wait_secs", self.ack_wait_secs),
            ("nats.retry_delay_secs", self.retry_delay_secs),
        ] {
            if !(1..=MAX_TIMEOUT_SECS).contains(&v) {
                return Err(invalid(
                    key,
                    format!("must be from 1 to {MAX_TIMEOUT_SECS} (seconds, one day)"),
                ));
            }
        }
        Ok(())
    }
}

/// Consent defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsentSettings {
    /// Whether a new user may get personalized results until they say otherwise.
    pub default_personalization: bool,
    /// Whether a new user's events may train models until they say otherwise.
    pub default_training: bool,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        Self {
            default_personalization: true,
            default_training: true,
        }
    }
}

impl ConsentSettings {
    /// The consent a user gets when first seen.
    pub fn defaults(&self) -> bespoke_store::Consent {
        bespoke_store::Consent {
            personalization: self.default_personalization,
            training: self.default_training,
            // An objection model: audiences may include a user until they object.
            marketing: true,
        }
    }
}

/// Which popularity ranks recommendations for users without a model.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PopularityMode {
    /// Total weight over all time.
    AllTime,
    /// Time-decayed weight (see `trending_half_life_hours`).
    Trending,
}

/// Serving settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServingSettings {
    /// Default `n` when a request gives none.
    pub default_n: usize,
    /// Half-life of the trending score, in hours.
    pub trending_half_life_hours: f64,
    /// Popularity used to rank recommendations.
    pub recommend_popularity: PopularityMode,
    /// Most recent users of an item sampled to find related items.
    pub related_max_users: usize,
    /// Model used by `GET /v1/users/{key}/recommendations` without `?model=`: `auto` (what
    /// tuning chose; iALS until then), `als`, `knn`, `ease` or `popular`.
    pub default_model: ModelChoice,
    /// Model used by `GET /v1/items/{key}/similar` without `?model=`: `knn`, `als` or
    /// `cooccurrence`.
    pub default_similar_model: SimilarChoice,
    /// Users whose exact iALS vectors are kept between requests.
    pub user_cache: usize,
    /// Sessions (`POST /v1/recommendations`): an item `k` places before the most recent one
    /// counts `2^(-k / session_half_life_items)` as much; 0 weighs every item alike.
    pub session_half_life_items: f64,
    /// Most items one session request may carry.
    pub max_session_items: usize,
    /// Weight up a user's recent interactions for their recommendations: an item's weight is
    /// multiplied by `1 + recent_boost · 2^(−age / recent_half_life_hours)`; 0 turns it off.
    pub recent_boost: f64,
    /// Half-life of the recency boost, in hours.
    pub recent_half_life_hours: f64,
    /// BPR (`model=bpr`): SGD passes over a user's history when folding it in.
    pub bpr_fold_in_epochs: usize,
    /// Catalogs of at least this many items are served through an approximate
    /// nearest-neighbour index (HNSW, built when a model version is loaded; `docs/ann.md`),
    /// smaller ones by the exact scan; 0 never builds one.
    pub ann_min_items: usize,
}

/// A recommendation model to serve with: `auto`, `popular`, or a model kind served on its
/// own (a family of the model registry: `als`, `knn`, `ease`, `bpr`). Its JSON and TOML are
/// the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelChoice {
    /// What the last tuning chose (`POST /v1/models/tune`): a model or a blend of two; iALS
    /// when never tuned.
    Auto,
    /// Popularity.
    Popular,
    /// One trained model (EASE is trained only for catalogs of at most
    /// `training.ease_max_items` items, BPR only with `training.bpr`).
    Model(ModelKind),
}

impl ModelChoice {
    /// The names requests and the CLI use, as in the configuration.
    pub const NAMES: [&str; 6] = [
        "auto",
        ModelKind::Als.name(),
        ModelKind::Knn.name(),
        ModelKind::Ease.name(),
        ModelKind::Bpr.name(),
        ModelKind::Popular.name(),
    ];

    /// iALS, what serving falls back to.
    pub const ALS: Self = Self::Model(ModelKind::Als);

    /// The model called `name` (one of [`Self::NAMES`]).
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "auto" {
            return Some(Self::Auto);
        }
        // `pop` is the CLI's short name for popularity, not a serving choice.
        Self::of_kind(name.parse().ok().filter(|_| name != "pop")?)
    }

    /// The choice that serves `kind` (`None` for kinds not served on their own: the kNN
    /// similarity variants and the content model). Exhaustive, so that a new kind is placed.
    pub fn of_kind(kind: ModelKind) -> Option<Self> {
        match kind {
            ModelKind::Popular => Some(Self::Popular),
            ModelKind::Als | ModelKind::Knn | ModelKind::Ease | ModelKind::Bpr => {
                Some(Self::Model(kind))
            }
            ModelKind::Cosine | ModelKind::Bm25 | ModelKind::Rp3 | ModelKind::Content => None,
        }
    }

    /// Its name (one of [`Self::NAMES`]).
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Popular => ModelKind::Popular.name(),
            Self::Model(k) => k.name(),
        }
    }

    /// The model kind this choice serves (`None` for `auto`, which tuning resolves).
    pub fn kind(self) -> Option<ModelKind> {
        match self {
            Self::Auto => None,
            Self::Popular => Some(ModelKind::Popular),
            Self::Model(k) => Some(k),
        }
    }
}

impl Serialize for ModelChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ModelChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name).ok_or_else(|| serde::de::Error::unknown_variant(&name, &Self::NAMES))
    }
}

/// A related-items model.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SimilarChoice {
    /// The item-kNN neighbours.
    Knn,
    /// Cosine of the iALS item factors.
    Als,
    /// Live co-occurrence counts.
    Cooccurrence,
}

impl Default for ServingSettings {
    fn default() -> Self {
        Self {
            default_n: 10,
            trending_half_life_hours: 24.0,
            recommend_popularity: PopularityMode::AllTime,
            related_max_users: 2000,
            default_model: ModelChoice::Auto,
            default_similar_model: SimilarChoice::Knn,
            user_cache: 10_000,
            session_half_life_items: 5.0,
            max_session_items: 500,
            recent_boost: 0.0,
            recent_half_life_hours: 24.0,
            bpr_fold_in_epochs: 20,
            ann_min_items: bespoke_algo::ann::DEFAULT_MIN_ITEMS,
        }
    }
}

/// Which similarity item-kNN uses (declared with its other hyperparameters in
/// `bespoke-algo`).
pub use bespoke_algo::KnnSimilarity;

/// Model training: hyperparameters, schedule, versions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSettings {
    /// iALS factor dimension.
    pub factors: usize,
    /// iALS iterations.
    pub iterations: usize,
    /// iALS regularisation.
    pub regularization: f32,
    /// iALS confidence slope: `c = 1 + alpha · |weight|`.
    pub alpha: f32,
    /// Conjugate gradient steps per iALS half-iteration.
    pub cg_steps: usize,
    /// Seed of the initial factors.
    pub seed: u64,
    /// Neighbours kept per item by item-kNN.
    pub knn_k: usize,
    /// Item-kNN similarity.
    pub knn_similarity: KnnSimilarity,
    /// Also train BPR (served as `model=bpr`). Off by default: its SGD costs about 20× iALS
    /// on the same data.
    pub bpr: bool,
    /// BPR factors.
    pub bpr_factors: usize,
    /// BPR's SGD step.
    pub bpr_learning_rate: f32,
    /// BPR's L2 weight.
    pub bpr_regularization: f32,
    /// BPR's epochs.
    pub bpr_iterations: usize,
    /// RP3beta (`knn_similarity = "rp3"`): exponent of the transition probabilities.
    pub rp3_alpha: f32,
    /// RP3beta: popularity penalty (the arrival item's probability divided by its
    /// popularity to this power).
    pub rp3_beta: f32,
    /// EASE is trained too when the catalog has at most this many items (its weights are a
    /// dense items² matrix); 0 never trains it.
    pub ease_max_items: usize,
    /// EASE's L2 weight λ.
    pub ease_lambda: f64,
    /// Train the hybrid content model (item content and user attributes mapped into the iALS
    /// factor space), which serves items without events and users without history.
    pub content: bool,
    /// The content model's ridge weight λ.
    pub content_lambda: f64,
    /// Most sparse content features (categories, words, attribute values) kept per side.
    pub content_max_features: usize,
    /// Halve an event's weight per this many days of age before the newest event (0: no decay).
    pub half_life_days: f64,
    /// Train iALS propensity-weighted: each interaction's weight
    /// multiplied by `min(1 / p_i, propensity_max_factor)`, `p_i = (n_i / max n)^η` its
    /// item's observation propensity from training popularity; serving folds histories in with
    /// the same weights (from current popularity). Counters the exposure bias of logged
    /// feedback (`docs/fairness.md`); off by default, as held-out metrics from the same biased
    /// logs cannot show its gain.
    pub propensity_weighting: bool,
    /// The exponent η of the propensity power law.
    pub propensity_eta: f64,
    /// The most an interaction's weight grows under `propensity_weighting` (at least 1).
    pub propensity_max_factor: f64,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Hold out each user's latest 20 % to report offline metrics with every model (costs a
    /// second training run on 80 % of the data).
    pub evaluate: bool,
    /// Tune model types and hyperparameters in the background this often, in hours, and once
    /// as soon as a model that was never tuned is served (0: only on request: `POST
    /// /v1/models/tune` or `bespoke train --tune`).
    pub tune_interval_hours: f64,
    /// Configurations one tuning run trains and validates.
    pub tune_budget: usize,
    /// Retrain in the background this often, in minutes (0: never on a timer).
    pub interval_minutes: u64,
    /// Retrain in the background after this many new events (0: never on a count).
    pub min_new_events: u64,
    /// Never retrain in the background sooner than this many minutes after the last run, so
    /// that a burst of events does not keep the machine training.
    pub min_gap_minutes: u64,
    /// Train at start-up when no model exists yet and there are events.
    pub train_on_start: bool,
    /// Model versions kept on disk (the active one is always kept).
    pub keep_versions: usize,
    /// Serve a newly trained model at once.
    pub auto_activate: bool,
}

impl Default for TrainingSettings {
    /// Every model's hyperparameters default to its parameter struct's `Default` in
    /// `bespoke-algo` (declared there once); the rest are the server's own.
    fn default() -> Self {
        let (als, knn, ease, bpr, content) = (
            AlsParams::default(),
            KnnParams::default(),
            EaseParams::default(),
            BprParams::default(),
            ContentParams::default(),
        );
        Self {
            factors: als.factors,
            iterations: als.iterations,
            regularization: als.regularization,
            alpha: als.alpha,
            cg_steps: als.cg_steps,
            seed: 42,
            knn_k: knn.k,
            bpr: false,
            bpr_factors: bpr.factors,
            bpr_learning_rate: bpr.learning_rate,
            bpr_regularization: bpr.regularization,
            bpr_iterations: bpr.iterations,
            rp3_alpha: knn.rp3_alpha,
            rp3_beta: knn.rp3_beta,
            ease_max_items: 3000,
            ease_lambda: ease.lambda,
            knn_similarity: knn.similarity,
            content: true,
            content_lambda: content.lambda,
            content_max_features: content.max_features,
            half_life_days: 0.0,
            propensity_weighting: false,
            propensity_eta: bespoke_algo::debias::DEFAULT_ETA,
            propensity_max_factor: bespoke_algo::debias::DEFAULT_MAX_FACTOR,
            threads: 0,
            evaluate: true,
            tune_interval_hours: 24.0,
            tune_budget: bespoke_algo::tune::DEFAULT_BUDGET,
            interval_minutes: 60,
            min_new_events: 100_000,
            min_gap_minutes: 5,
            train_on_start: true,
            keep_versions: 5,
            auto_activate: true,
        }
    }
}

impl TrainingSettings {
    // The keys stay flat (`factors`, `bpr_factors`, `rp3_alpha`...) so that existing settings
    // files keep working; these views are what training, tuning and `meta.json` use.

    /// iALS's hyperparameters (`factors`, `iterations`, `regularization`, `alpha`,
    /// `cg_steps`, `seed`).
    pub fn als_params(&self) -> AlsParams {
        AlsParams {
            factors: self.factors,
            iterations: self.iterations,
            regularization: self.regularization,
            alpha: self.alpha,
            cg_steps: self.cg_steps,
            seed: self.seed,
            compute_loss: false,
        }
    }

    /// Sets iALS's hyperparameters (the seed is training-wide and stays).
    pub fn set_als_params(&mut self, p: &AlsParams) {
        (
            self.factors,
            self.iterations,
            self.regularization,
            self.alpha,
            self.cg_steps,
        ) = (
            p.factors,
            p.iterations,
            p.regularization,
            p.alpha,
            p.cg_steps,
        );
    }

    /// Item-kNN's hyperparameters (`knn_k`, `knn_similarity`, `rp3_alpha`, `rp3_beta`).
    pub fn knn_params(&self) -> KnnParams {
        KnnParams {
            k: self.knn_k,
            similarity: self.knn_similarity,
            rp3_alpha: self.rp3_alpha,
            rp3_beta: self.rp3_beta,
        }
    }

    /// Sets item-kNN's hyperparameters.
    pub fn set_knn_params(&mut self, p: &KnnParams) {
        (
            self.knn_k,
            self.knn_similarity,
            self.rp3_alpha,
            self.rp3_beta,
        ) = (p.k, p.similarity, p.rp3_alpha, p.rp3_beta);
    }

    /// EASE's hyperparameters (`ease_lambda`).
    pub fn ease_params(&self) -> EaseParams {
        EaseParams {
            lambda: self.ease_lambda,
        }
    }

    /// Sets EASE's hyperparameters.
    pub fn set_ease_params(&mut self, p: &EaseParams) {
        self.ease_lambda = p.lambda;
    }

    /// BPR's hyperparameters (`bpr_factors`, `bpr_learning_rate`, `bpr_regularization`,
    /// `bpr_iterations`, `seed`).
    pub fn bpr_params(&self) -> BprParams {
        BprParams {
            factors: self.bpr_factors,
            learning_rate: self.bpr_learning_rate,
            regularization: self.bpr_regularization,
            iterations: self.bpr_iterations,
            seed: self.seed,
        }
    }

    /// The content model's hyperparameters (`content_lambda`, `content_max_features`).
    pub fn content_params(&self) -> ContentParams {
        ContentParams {
            lambda: self.content_lambda,
            max_features: self.content_max_features,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `bespoke=debug,tower=warn`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
    /// Where to send traces over OTLP/HTTP (`http://collector:4318`; `/v1/traces` is added).
    /// Needs a binary built with the `otlp` feature. Off when absent.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported traces.
    pub service_name: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            otlp_endpoint: None,
            service_name: "bespoke".into(),
        }
    }
}

/// A configuration problem, naming where it came from.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why. Not a `source`: the message holds it, and the CLI prints sources too.
        error: std::io::Error,
    },
    /// The config file is not valid TOML or has a bad key or value.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file or the environment variable.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value parses but makes no sense ([`Settings::validate`]).
    #[error("{origin}: {error}")]
    Setting {
        /// The file, or `settings` when there is none.
        origin: String,
        /// The key and what is wrong with it. Not a `source`: the message already holds it,
        /// and the CLI prints sources too.
        error: InvalidSetting,
    },
}

/// A setting whose value parses but makes no sense ([`Settings::validate`]). The message is the
/// key followed by the reason (`limits.max_n must be at least 1`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {reason}")]
pub struct InvalidSetting {
    /// The key at fault, as written in the config file (`limits.max_n`, `events.weights.share`).
    pub key: String,
    /// What is wrong, continuing the key (`must be at least 1`).
    pub reason: String,
}

/// Longest timeout the `server.*_timeout_secs` settings accept: a day is already far past any
/// sensible value, and the bound keeps `Instant + Duration` from overflowing.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// Most connections `server.max_connections` accepts, far above any open-file limit.
const MAX_CONNECTIONS: usize = 1 << 20;

/// Prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "BESPOKE__";

impl Settings {
    /// Defaults, then `file` (if given), then `BESPOKE__SECTION__KEY` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut merged =
            toml::Table::try_from(Settings::default()).expect("defaults serialise to TOML");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|error| SettingsError::Read {
                path: path.to_owned(),
                error,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| SettingsError::Invalid {
                origin: path.display().to_string(),
                message: e.message().to_owned(),
            })?;
            merge(&mut merged, table);
            // Checked before the variables, which would otherwise be named for the file's
            // mistakes (a secret set in the environment is the usual case).
            Settings::deserialize(toml::Value::Table(merged.clone())).map_err(|e| {
                SettingsError::Invalid {
                    origin: path.display().to_string(),
                    message: e.message().to_owned(),
                }
            })?;
        }
        let mut env_vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env_vars.sort();
        for (name, raw) in env_vars {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(SettingsError::Invalid {
                    origin: name,
                    message: "expected BESPOKE__SECTION__KEY".into(),
                });
            }
            let mut table = toml::Table::new();
            let (last, parents) = path.split_last().expect("at least one component");
            let mut cursor = &mut table;
            for p in parents {
                cursor = cursor
                    .entry(p.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .expect("just inserted a table");
            }
            cursor.insert(last.clone(), parse_env_value(&raw));
            merge(&mut merged, table);
            // Validate each variable on its own so that an error names it.
            Settings::deserialize(toml::Value::Table(merged.clone())).map_err(|e| {
                SettingsError::Invalid {
                    origin: name.clone(),
                    message: e.message().to_owned(),
                }
            })?;
        }
        let origin = file.map_or("settings".to_owned(), |p| p.display().to_string());
        let settings = Settings::deserialize(toml::Value::Table(merged)).map_err(|e| {
            SettingsError::Invalid {
                origin: origin.clone(),
                message: e.message().to_owned(),
            }
        })?;
        settings
            .validate()
            .map_err(|error| SettingsError::Setting { origin, error })?;
        Ok(settings)
    }

    /// Checks values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let srv = &self.server;
        let positive_secs = [
            ("server.header_timeout_secs", srv.header_timeout_secs),
            ("server.body_timeout_secs", srv.body_timeout_secs),
            ("server.request_timeout_secs", srv.request_timeout_secs),
        ];
        for (key, v) in positive_secs {
            // A zero timeout would cut off every client; "no timeout" is not offered, as it is
            // what lets slow clients hold connections.
            if v == 0 {
                return Err(invalid(key, "must be at least 1 (seconds)"));
            }
            if v > MAX_TIMEOUT_SECS {
                return Err(invalid(
                    key,
                    format!("must be at most {MAX_TIMEOUT_SECS} (seconds, one day)"),
                ));
            }
        }
        if !(1..=MAX_CONNECTIONS).contains(&srv.max_connections) {
            return Err(invalid(
                "server.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        if let Some(e) = &self.log.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(invalid(
                "log.otlp_endpoint",
                "must be an http:// or https:// URL (OTLP over HTTP, e.g. http://127.0.0.1:4318)",
            ));
        }
        let url = &self.store.url;
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "store.url",
                "must be empty (the embedded SQLite store) or a postgres:// URL",
            ));
        }
        let positive = [
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            ("limits.max_batch_events", self.limits.max_batch_events),
            ("limits.max_key_bytes", self.limits.max_key_bytes),
            ("limits.max_n", self.limits.max_n),
            ("limits.max_page_size", self.limits.max_page_size),
            ("serving.default_n", self.serving.default_n),
            ("serving.related_max_users", self.serving.related_max_users),
            ("store.max_group_events", self.store.max_group_events),
            ("training.factors", self.training.factors),
            ("training.knn_k", self.training.knn_k),
            ("training.keep_versions", self.training.keep_versions),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !self.auth.enabled && !self.server.bind.ip().is_loopback() {
            return Err(invalid(
                "auth.enabled",
                format!(
                    "= false is allowed only with a loopback bind, not {}",
                    self.server.bind
                ),
            ));
        }
        let p = &self.privacy;
        if !(p.max_event_age_days.is_finite() && p.max_event_age_days >= 0.0) {
            return Err(invalid(
                "privacy.max_event_age_days",
                "must be 0 (keep forever) or positive",
            ));
        }
        if p.max_event_age_days > 0.0 && p.retention_interval_minutes == 0 {
            return Err(invalid(
                "privacy.retention_interval_minutes",
                "must be at least 1",
            ));
        }
        if p.pseudonymize_user_keys && p.pseudonym_secret.0.len() < 32 {
            return Err(invalid(
                "privacy.pseudonymize_user_keys",
                "needs privacy.pseudonym_secret of at least 32 bytes",
            ));
        }
        if !p.audit_secret.0.is_empty() && p.audit_secret.0.len() < 32 {
            return Err(invalid(
                "privacy.audit_secret",
                "must have at least 32 bytes (or be empty)",
            ));
        }
        if !p.audit_secret.0.is_empty() && !p.audit_secret_file.as_os_str().is_empty() {
            return Err(invalid(
                "privacy.audit_secret",
                "and privacy.audit_secret_file are both set: set one, not both",
            ));
        }
        if !(self.auth.rate_per_second.is_finite() && self.auth.rate_per_second >= 0.0) {
            return Err(invalid(
                "auth.rate_per_second",
                "must be 0 (unlimited) or positive",
            ));
        }
        if !(self.auth.burst_seconds.is_finite() && self.auth.burst_seconds > 0.0) {
            return Err(invalid("auth.burst_seconds", "must be positive"));
        }
        let failed = self.auth.failed_per_minute;
        if !(failed.is_finite() && (failed == 0.0 || (1e-6..=1e6).contains(&failed))) {
            return Err(invalid(
                "auth.failed_per_minute",
                "must be 0 (off) or from 0.000001 to 1000000",
            ));
        }
        if self.auth.failed_burst == 0 {
            return Err(invalid("auth.failed_burst", "must be at least 1"));
        }
        for origin in &self.server.cors_allowed_origins {
            check_origin(origin).map_err(|why| {
                invalid(
                    "server.cors_allowed_origins",
                    format!("has {origin:?}, which {why}"),
                )
            })?;
        }
        if self.serving.default_n > self.limits.max_n {
            return Err(invalid("serving.default_n", "must not exceed limits.max_n"));
        }
        if !self.serving.trending_half_life_hours.is_finite()
            || self.serving.trending_half_life_hours <= 0.0
        {
            return Err(invalid(
                "serving.trending_half_life_hours",
                "must be positive",
            ));
        }
        let sv = &self.serving;
        if !(sv.session_half_life_items.is_finite() && sv.session_half_life_items >= 0.0) {
            return Err(invalid(
                "serving.session_half_life_items",
                "must be 0 (no decay) or positive",
            ));
        }
        if !(sv.recent_boost.is_finite() && sv.recent_boost >= 0.0) {
            return Err(invalid(
                "serving.recent_boost",
                "must be 0 (off) or positive",
            ));
        }
        if !(sv.recent_half_life_hours.is_finite() && sv.recent_half_life_hours > 0.0) {
            return Err(invalid(
                "serving.recent_half_life_hours",
                "must be positive",
            ));
        }
        if sv.max_session_items == 0 {
            return Err(invalid("serving.max_session_items", "must be at least 1"));
        }
        if self.events.weights.contains_key(IMPRESSION) {
            return Err(invalid(
                "events.weights",
                "must not list impression: impressions are not feedback and have no weight",
            ));
        }
        let r = &self.rules;
        if crate::time::parse_duration(&r.impression_window).is_err() {
            return Err(invalid(
                "rules.impression_window",
                format!(
                    "must be a duration such as 90m, 24h or 7d, got {:?}",
                    r.impression_window
                ),
            ));
        }
        for t in &r.hide_event_types {
            if !self.events.weights.contains_key(t) {
                return Err(invalid(
                    "rules.hide_event_types",
                    format!("has {t:?}, which is not an event type of events.weights"),
                ));
            }
        }
        if !(r.hide_similar.is_finite() && (0.0..=1.0).contains(&r.hide_similar)) {
            return Err(invalid("rules.hide_similar", "must be from 0 to 1"));
        }
        let f = &self.fairness;
        for (name, v) in [
            ("fairness.calibration", f.calibration),
            ("fairness.popularity", f.popularity),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(invalid(name, "must be from 0 to 1"));
            }
        }
        for (name, v) in [
            ("fairness.protected_share", f.protected_share),
            ("fairness.protected_alpha", f.protected_alpha),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1.0) {
                return Err(invalid(name, "must be between 0 and 1 (exclusive)"));
            }
        }
        if !(1..=1000).contains(&f.report_k) {
            return Err(invalid("fairness.report_k", "must be from 1 to 1000"));
        }
        if !(10..=100_000).contains(&f.bootstrap) {
            return Err(invalid("fairness.bootstrap", "must be from 10 to 100000"));
        }
        let rule_positive = [
            ("rules.impressions_per_user", r.impressions_per_user),
            ("rules.candidate_factor", r.candidate_factor),
            ("rules.max_expression_bytes", r.max_expression_bytes),
            ("rules.max_expression_depth", r.max_expression_depth),
            ("rules.max_list_values", r.max_list_values),
            ("rules.max_clauses", r.max_clauses),
        ];
        for (key, v) in rule_positive {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let d = &self.decisions;
        if d.checkpoint_every == 0 {
            return Err(invalid("decisions.checkpoint_every", "must be at least 1"));
        }
        if d.evaluation_max_decisions == 0 {
            return Err(invalid(
                "decisions.evaluation_max_decisions",
                "must be at least 1",
            ));
        }
        let t = &self.training;
        if !(t.regularization.is_finite() && t.regularization > 0.0) {
            return Err(invalid("training.regularization", "must be positive"));
        }
        if !(t.alpha.is_finite() && t.alpha >= 0.0) {
            return Err(invalid("training.alpha", "must be zero or positive"));
        }
        if !(t.half_life_days.is_finite() && t.half_life_days >= 0.0) {
            return Err(invalid(
                "training.half_life_days",
                "must be zero or positive",
            ));
        }
        if !(t.propensity_eta.is_finite() && t.propensity_eta > 0.0 && t.propensity_eta <= 4.0) {
            return Err(invalid(
                "training.propensity_eta",
                "must be above 0 and at most 4",
            ));
        }
        if !(t.propensity_max_factor.is_finite() && t.propensity_max_factor >= 1.0) {
            return Err(invalid(
                "training.propensity_max_factor",
                "must be at least 1",
            ));
        }
        if !(t.tune_interval_hours.is_finite() && t.tune_interval_hours >= 0.0) {
            return Err(invalid("training.tune_interval_hours", "must be 0 or more"));
        }
        if !(1..=1000).contains(&t.tune_budget) {
            return Err(invalid(
                "training.tune_budget",
                "must be between 1 and 1000",
            ));
        }
        // The BPR settings matter only when BPR is trained, so they are checked only then.
        if t.bpr {
            if !(1..=1024).contains(&t.bpr_factors) {
                return Err(invalid(
                    "training.bpr_factors",
                    "must be between 1 and 1024",
                ));
            }
            if !(t.bpr_learning_rate.is_finite() && t.bpr_learning_rate > 0.0) {
                return Err(invalid("training.bpr_learning_rate", "must be positive"));
            }
            if !(t.bpr_regularization.is_finite() && t.bpr_regularization >= 0.0) {
                return Err(invalid("training.bpr_regularization", "must be 0 or more"));
            }
            if t.bpr_iterations == 0 {
                return Err(invalid("training.bpr_iterations", "must be at least 1"));
            }
        }
        if !(t.rp3_alpha.is_finite() && t.rp3_alpha > 0.0) {
            return Err(invalid("training.rp3_alpha", "must be positive"));
        }
        if !(t.rp3_beta.is_finite() && t.rp3_beta >= 0.0) {
            return Err(invalid("training.rp3_beta", "must be 0 or more"));
        }
        if !(t.content_lambda.is_finite() && t.content_lambda > 0.0) {
            return Err(invalid("training.content_lambda", "must be positive"));
        }
        if t.content_max_features > 50_000 {
            return Err(invalid(
                "training.content_max_features",
                "must be at most 50000 (the content model holds a dense features² matrix while fitting)",
            ));
        }
        if !(t.ease_lambda.is_finite() && t.ease_lambda > 0.0) {
            return Err(invalid("training.ease_lambda", "must be positive"));
        }
        if t.factors > 1024 {
            return Err(invalid("training.factors", "must be at most 1024"));
        }
        let min_time = &self.limits.min_event_time;
        if let Err(why) = crate::time::parse_rfc3339(min_time) {
            return Err(invalid(
                "limits.min_event_time",
                format!(
                    "must be an RFC 3339 time such as 1990-01-01T00:00:00Z; {min_time:?} {why}"
                ),
            ));
        }
        let ev = &self.events;
        if !(ev.max_weight.is_finite() && ev.max_weight > 0.0 && ev.max_weight <= 1e6) {
            return Err(invalid(
                "events.max_weight",
                "must be positive and at most 1e6",
            ));
        }
        let [lo, hi] = ev.value_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi && lo.abs().max(hi.abs()) <= ev.max_weight)
        {
            return Err(invalid(
                "events.value_range",
                format!(
                    "must be [low, high] with low < high, both within ±events.max_weight ({})",
                    ev.max_weight
                ),
            ));
        }
        if d.max_loops == 0 || d.max_loops > 100_000 {
            return Err(invalid(
                "decisions.max_loops",
                "must be between 1 and 100000",
            ));
        }
        if self.limits.max_categories == 0 {
            return Err(invalid("limits.max_categories", "must be at least 1"));
        }
        for (kind, w) in &self.events.weights {
            if kind.is_empty() || kind.len() > 64 {
                return Err(invalid(
                    "events.weights",
                    format!("has the type name {kind:?}; a type name has 1 to 64 bytes"),
                ));
            }
            if let WeightSpec::Fixed(w) = w
                && !(w.is_finite() && w.abs() <= ev.max_weight)
            {
                return Err(invalid(
                    format!("events.weights.{kind}"),
                    format!(
                        "must be a finite number within ±events.max_weight ({})",
                        ev.max_weight
                    ),
                ));
            }
        }
        self.nats.validate()?;
        Ok(())
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        key: key.into(),
        reason: reason.into(),
    }
}

/// An environment value is read as a TOML value when it parses as one (`8`, `true`, `"x"`,
/// `[1, 2]`), and as a plain string otherwise (`0.0.0.0:8080`).
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_defaults_come_from_the_params_structs() {
        let t = TrainingSettings::default();
        assert_eq!(
            t.als_params(),
            AlsParams {
                seed: t.seed,
                ..AlsParams::default()
            }
        );
        assert_eq!(t.knn_params(), KnnParams::default());
        assert_eq!(t.ease_params(), EaseParams::default());
        assert_eq!(
            t.bpr_params(),
            BprParams {
                seed: t.seed,
                ..BprParams::default()
            }
        );
        assert_eq!(t.content_params(), ContentParams::default());
        // The rate the benchmarks measured (issue 14: it had drifted to 0.01 in places).
        assert_eq!(t.bpr_learning_rate, 0.05);
    }

    #[test]
    fn model_choices_keep_their_names() {
        for name in ModelChoice::NAMES {
            let c = ModelChoice::from_name(name).unwrap();
            assert_eq!(c.kind().map_or("auto", ModelKind::name), name);
        }
        // Kinds that are not served on their own are no choice.
        for name in ["cosine", "content", "pop", "svd"] {
            assert_eq!(ModelChoice::from_name(name), None, "{name}");
        }
        // The configuration and JSON spell them by name.
        for name in ModelChoice::NAMES {
            let c = ModelChoice::from_name(name).unwrap();
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(name));
            assert_eq!(
                serde_json::from_value::<ModelChoice>(name.into()).unwrap(),
                c
            );
        }
        assert!(serde_json::from_value::<ModelChoice>("cosine".into()).is_err());
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bespoke.toml");
        std::fs::write(
            &file,
            "[server]\nbind = \"0.0.0.0:9000\"\n[limits]\nmax_n = 50\n[events.weights]\nshare = 3.0\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("BESPOKE__LIMITS__MAX_N", "70"),
                ("OTHER", "x"),
                ("BESPOKE__STORE__DATA_DIR", "/tmp/x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.bind.port(), 9000);
        assert_eq!(s.limits.max_n, 70);
        assert_eq!(s.store.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.events.weights["share"], WeightSpec::Fixed(3.0));
        // Defaults not overridden stay.
        assert_eq!(s.events.weights["purchase"], WeightSpec::Fixed(8.0));
        assert_eq!(s.limits.max_batch_events, 10_000);
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let err = Settings::load(None, env(&[("BESPOKE__LIMITS__MAX_NN", "5")])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("BESPOKE__LIMITS__MAX_NN") && msg.contains("max_nn"),
            "{msg}"
        );
        let err = Settings::load(None, env(&[("BESPOKE__LIMITS__MAX_N", "0")])).unwrap_err();
        assert!(err.to_string().contains("limits.max_n"), "{err}");
        let err = Settings::load(None, env(&[("BESPOKE__SERVER__BIND", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("BESPOKE__SERVER__BIND"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[serving]\nrecommend_popularity = \"sideways\"\n").unwrap();
        let err = Settings::load(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
        // Also with a variable set (the audit secret, say): the file is named, not the variable.
        let secret = [(
            "BESPOKE__PRIVACY__AUDIT_SECRET",
            "0123456789abcdef0123456789abcdef",
        )];
        let err = Settings::load(Some(&file), env(&secret)).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }

    #[test]
    fn zero_timeouts_and_connection_limits_are_refused_by_name() {
        for key in [
            "HEADER_TIMEOUT_SECS",
            "BODY_TIMEOUT_SECS",
            "REQUEST_TIMEOUT_SECS",
            "MAX_CONNECTIONS",
        ] {
            let var = format!("BESPOKE__SERVER__{key}");
            let err = Settings::load(None, env(&[(&var, "0")])).unwrap_err();
            let named = format!("server.{}", key.to_ascii_lowercase());
            assert!(err.to_string().contains(&named), "{err}");
        }
        let err = Settings::load(
            None,
            env(&[("BESPOKE__SERVER__BODY_TIMEOUT_SECS", "86401")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("server.body_timeout_secs"),
            "{err}"
        );
        // Negative values are refused by the type, naming the variable.
        let err = Settings::load(None, env(&[("BESPOKE__SERVER__HEADER_TIMEOUT_SECS", "-1")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("BESPOKE__SERVER__HEADER_TIMEOUT_SECS"),
            "{err}"
        );
        let s = Settings::load(
            None,
            env(&[
                ("BESPOKE__SERVER__HEADER_TIMEOUT_SECS", "3"),
                ("BESPOKE__SERVER__MAX_CONNECTIONS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (s.server.header_timeout_secs, s.server.max_connections),
            (3, 7)
        );
    }

    #[test]
    fn cors_origins_and_failed_auth_limits_are_checked_by_name() {
        for good in [
            "https://shop.example.com",
            "http://localhost:3000",
            "https://[::1]:8443",
            "http://[::1]",
        ] {
            let mut s = Settings::default();
            s.server.cors_allowed_origins = vec![good.into()];
            assert_eq!(s.validate(), Ok(()), "{good}");
        }
        for bad in [
            "*",
            "shop.example.com",
            "https://shop.example.com/",
            "https://shop.example.com/path",
            "https://",
            "https://shop.example.com:99999",
            "https://a b",
            "https://Shop.example.com",
            "https://[::1",
            "https://[::1]x",
        ] {
            let mut s = Settings::default();
            s.server.cors_allowed_origins = vec![bad.into()];
            let err = s.validate().unwrap_err();
            assert_eq!(err.key, "server.cors_allowed_origins", "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
        for (rate, burst) in [(-1.0, 5), (f64::NAN, 5), (1e7, 5), (60.0, 0)] {
            let mut s = Settings::default();
            s.auth.failed_per_minute = rate;
            s.auth.failed_burst = burst;
            let err = s.validate().unwrap_err();
            assert!(err.key.starts_with("auth.failed_"), "{rate} {burst}: {err}");
        }
        let s = Settings::load(
            None,
            env(&[
                ("BESPOKE__AUTH__FAILED_PER_MINUTE", "0"),
                (
                    "BESPOKE__SERVER__CORS_ALLOWED_ORIGINS",
                    r#"["https://a.example"]"#,
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.auth.failed_per_minute, 0.0);
        assert_eq!(s.server.cors_allowed_origins, ["https://a.example"]);
    }

    /// Issue 14: checks that used to name two keys in one message name the one at fault.
    #[test]
    fn each_refused_value_names_its_own_key() {
        let refused = |change: Change| {
            let mut s = Settings::default();
            change(&mut s);
            s.validate().unwrap_err()
        };
        type Change = fn(&mut Settings);
        let cases: [(Change, &str); 6] = [
            (
                |s| {
                    s.training.bpr = true;
                    s.training.bpr_iterations = 0;
                },
                "training.bpr_iterations",
            ),
            (
                |s| {
                    s.training.bpr = true;
                    s.training.bpr_learning_rate = f32::NAN;
                },
                "training.bpr_learning_rate",
            ),
            (|s| s.training.rp3_beta = -1.0, "training.rp3_beta"),
            (
                |s| s.decisions.evaluation_max_decisions = 0,
                "decisions.evaluation_max_decisions",
            ),
            (
                |s| s.decisions.checkpoint_every = 0,
                "decisions.checkpoint_every",
            ),
            (
                |s| s.limits.min_event_time = "1990-01-01".into(),
                "limits.min_event_time",
            ),
        ];
        for (change, key) in cases {
            let err = refused(change);
            assert_eq!(err.key, key, "{err}");
            assert_eq!(err.to_string(), format!("{key} {}", err.reason));
        }
        // The time's own problem is said too.
        let err = refused(|s| s.limits.min_event_time = "1990-01-01".into());
        assert!(err.reason.contains("position 11"), "{err}");
    }

    #[test]
    fn abuse_limits_are_validated_by_name() {
        for (var, value, named) in [
            ("BESPOKE__DECISIONS__MAX_LOOPS", "0", "decisions.max_loops"),
            ("BESPOKE__EVENTS__MAX_WEIGHT", "0", "events.max_weight"),
            ("BESPOKE__EVENTS__MAX_WEIGHT", "1e300", "events.max_weight"),
            (
                "BESPOKE__EVENTS__VALUE_RANGE",
                "[5, 1]",
                "events.value_range",
            ),
            (
                "BESPOKE__EVENTS__VALUE_RANGE",
                "[0, 1e12]",
                "events.value_range",
            ),
            (
                "BESPOKE__EVENTS__WEIGHTS__SHARE",
                "50.0",
                "events.weights.share",
            ),
            (
                "BESPOKE__LIMITS__MAX_CATEGORIES",
                "0",
                "limits.max_categories",
            ),
        ] {
            let err = Settings::load(None, env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().contains(named), "{var}={value}: {err}");
        }
        let s = Settings::load(None, env(&[("BESPOKE__EVENTS__VALUE_RANGE", "[1, 5]")])).unwrap();
        assert_eq!(s.events.value_range, [1.0, 5.0]);
    }

    #[test]
    fn nats_settings_are_validated_by_name_when_on() {
        // Off by default, and the other keys are not read then.
        let mut s = Settings::default();
        assert!(s.nats.url.is_empty());
        s.nats.batch = 0;
        assert_eq!(s.validate(), Ok(()));
        let on = |change: fn(&mut NatsSettings)| {
            let mut s = Settings::default();
            s.nats.url = "nats://127.0.0.1:4222".into();
            change(&mut s.nats);
            s.validate()
        };
        if !cfg!(feature = "nats") {
            assert_eq!(on(|_| {}).unwrap_err().key, "nats.url");
            return;
        }
        assert_eq!(on(|_| {}), Ok(()));
        assert_eq!(on(|n| n.subject = "shop.*.events.>".into()), Ok(()));
        type Change = fn(&mut NatsSettings);
        let cases: [(Change, &str); 10] = [
            (|n| n.url = "http://127.0.0.1:4222".into(), "nats.url"),
            (|n| n.stream = String::new(), "nats.stream"),
            (|n| n.stream = "a.b".into(), "nats.stream"),
            (|n| n.durable = "x".repeat(65), "nats.durable"),
            (|n| n.subject = "a..b".into(), "nats.subject"),
            (|n| n.subject = "a.>.b".into(), "nats.subject"),
            (|n| n.subject = "a b".into(), "nats.subject"),
            (|n| n.batch = 0, "nats.batch"),
            (|n| n.ack_wait_secs = 0, "nats.ack_wait_secs"),
            (|n| n.retry_delay_secs = 86_401, "nats.retry_delay_secs"),
        ];
        for (change, key) in cases {
            let err = on(change).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
        // Through the environment, as an operator would set it.
        let err = Settings::load(
            None,
            env(&[
                ("BESPOKE__NATS__URL", "nats://127.0.0.1:4222"),
                ("BESPOKE__NATS__BATCH", "0"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nats.batch"), "{err}");
        let err = Settings::load(None, env(&[("BESPOKE__NATS__BATCHES", "5")])).unwrap_err();
        assert!(err.to_string().contains("BESPOKE__NATS__BATCHES"), "{err}");
    }

    #[test]
    fn example_config_is_valid_and_matches_defaults() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/bespoke.example.toml");
        let loaded = Settings::load(Some(&example), env(&[])).unwrap();
        assert_eq!(
            loaded,
            Settings::default(),
            "the example config drifted from the defaults"
        );
    }
}
