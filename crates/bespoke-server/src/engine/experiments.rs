//! Online experiments between serving configurations (`docs/experiments.md`).
//!
//! An experiment names a route, variants with traffic weights and a configuration each (the
//! ranking request's own fields: model, diversity, rules, re-rankers), and the metrics to judge
//! them by. Once started, every request on its route for a user is assigned a variant by a
//! salted hash of the user's stored key ([`Variants::assign`]: the same on every node and after
//! restarts, with no table to share), served with the variant's configuration laid over the
//! request's, and the user's first exposure is recorded (buffered, then written in batches).
//! The report reads each exposed user's events after their first exposure (and, for CUPED,
//! before the start) and runs the statistics of [`bespoke_algo::experiment`].
//!
//! A variant whose configuration no longer applies (a filter over an attribute the catalog lost)
//! falls back to the request as sent, so a running experiment never breaks serving; fallbacks
//! are counted per variant and shown in the report.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bespoke_algo::experiment::{
    self as exp, Credit, Moments, Preference, SRM_ALPHA, SignTest, Srm, Team, TestResult, Variants,
    cuped, holm, means, ratio, srm, team_draft,
};
use bespoke_store::{NewExposure, RuleRecord};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::pipeline::RankRequest;
use crate::pipeline::request::{RulesIn, diversity_param, model_param};
use crate::rules::spec::{BoostSpec, PromoteSpec};
use crate::time::{format_rfc3339, now_ms, parse_duration};

/// Most experiments kept (running or not).
pub(crate) const MAX_EXPERIMENTS: usize = 100;
/// Most metrics of one experiment.
pub(crate) const MAX_METRICS: usize = 20;
/// Exposures are written when this many wait, or [`FLUSH_EVERY_MS`] after the last write.
const FLUSH_AT: usize = 1_000;
/// See [`FLUSH_AT`].
const FLUSH_EVERY_MS: u128 = 1_000;
/// Events read per user for a report (newest first, down to the pre-period).
const REPORT_EVENTS_PER_USER: usize = 100_000;

/// The ranking route an experiment runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentRoute {
    /// `GET /v1/users/{key}/recommendations`.
    #[default]
    Recommendations,
    /// `GET /v1/items/{key}/similar` with `user`.
    Similar,
    /// `GET /v1/popular` with `user`.
    Popular,
    /// `POST /v1/users/{key}/rank`.
    Rank,
}

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ExperimentStatus)]
pub enum Status {
    /// Created, not serving yet; its definition may still change.
    #[default]
    Draft,
    /// Serving its variants.
    Running,
    /// Stopped: serving the request as sent again; the report covers the running period.
    Stopped,
}

/// One variant: a name, a traffic weight and the request fields it sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Variant)]
pub struct VariantSpec {
    /// Name, unique within the experiment.
    pub name: String,
    /// Relative share of traffic (default 1).
    #[serde(default = "one")]
    #[schema(minimum = 0, default = 1)]
    pub weight: f64,
    /// The request fields this variant sets (the first variant, the control, usually none).
    #[serde(default)]
    pub config: VariantConfig,
}

fn one() -> f64 {
    1.0
}

/// The ranking-request fields a variant sets, named and checked as on the ranking routes. A
/// `filter` is combined with the request's own (both must hold); `boost`, `promote` and
/// `skip_rules` add to the request's; the rest replace the request's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// The model (`als`, `ease`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The diversity re-ranker's λ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diversity: Option<f64>,
    /// A filter expression, combined with the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Boosts, after the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boost: Option<Vec<BoostSpec>>,
    /// Promotions, after the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<Vec<PromoteSpec>>,
    /// At most this many items of one category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_category: Option<i64>,
    /// Saved rules not to apply, besides the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_rules: Option<Vec<String>>,
    /// Calibration's λ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<f64>,
    /// Popularity debiasing's weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity: Option<f64>,
    /// Its method (`xquad`, `inverse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_method: Option<String>,
    /// The protected item group, an expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
    /// FA*IR's minimum share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_share: Option<f64>,
    /// FA*IR's significance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_alpha: Option<f64>,
}

/// A user-level metric computed from events (`docs/experiments.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[schema(as = Metric)]
pub enum MetricSpec {
    /// Share of users with at least one event of the type.
    Conversion {
        /// Metric name.
        name: String,
        /// Event type.
        event: String,
    },
    /// Events of the type per user.
    Count {
        /// Metric name.
        name: String,
        /// Event type.
        event: String,
    },
    /// Sum of the event values of the type per user (revenue from purchase values).
    Revenue {
        /// Metric name.
        name: String,
        /// Event type.
        event: String,
    },
    /// Events of one type per event of another, over all users of an arm (click-through:
    /// clicks per impression), with the delta method's variance.
    Ratio {
        /// Metric name.
        name: String,
        /// The numerator's event type.
        numerator: String,
        /// The denominator's event type.
        denominator: String,
    },
}

impl MetricSpec {
    fn name(&self) -> &str {
        match self {
            MetricSpec::Conversion { name, .. }
            | MetricSpec::Count { name, .. }
            | MetricSpec::Revenue { name, .. }
            | MetricSpec::Ratio { name, .. } => name,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            MetricSpec::Conversion { .. } => "conversion",
            MetricSpec::Count { .. } => "count",
            MetricSpec::Revenue { .. } => "revenue",
            MetricSpec::Ratio { .. } => "ratio",
        }
    }

    /// The event types it reads, with the field that names each.
    fn events(&self) -> Vec<(&'static str, &str)> {
        match self {
            MetricSpec::Conversion { event, .. }
            | MetricSpec::Count { event, .. }
            | MetricSpec::Revenue { event, .. } => vec![("event", event)],
            MetricSpec::Ratio {
                numerator,
                denominator,
                ..
            } => vec![("numerator", numerator), ("denominator", denominator)],
        }
    }
}

/// What a client sends to create an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ExperimentIn)]
pub struct ExperimentSpec {
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The route it runs on (default `recommendations`); similar and popular take part only
    /// with the `user` parameter.
    #[serde(default)]
    #[schema(default = "recommendations")]
    pub route: ExperimentRoute,
    /// Experiments on the same route run at once only in different layers, where their
    /// assignments are independent (each hashes with its own salt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The variants (2 to 20); the first is the control that the others are compared with.
    #[schema(min_items = 2, max_items = 20)]
    pub variants: Vec<VariantSpec>,
    /// Share of users kept out of the experiment altogether, in `[0, 1)`: served the request
    /// as sent and reported as their own group.
    #[serde(default)]
    #[schema(minimum = 0, exclusive_maximum = 1, default = 0)]
    pub holdout: f64,
    /// The assignment hash's salt; the experiment's name when absent. Reusing a salt reuses
    /// the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The metrics (at most 20); one conversion metric per configured event type when empty.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub metrics: Vec<MetricSpec>,
    /// Significance level of the tests (default 0.05).
    #[serde(default = "default_alpha")]
    #[schema(default = 0.05)]
    pub alpha: f64,
    /// The pre-period CUPED reads each user's metric from, before the start (default `14d`).
    #[serde(default = "default_pre_period")]
    #[schema(default = "14d")]
    pub pre_period: String,
    /// The relative effect the sequential test is tuned to find fastest (default 0.05): its
    /// mixing variance is `(mde · control mean)²`.
    #[serde(default = "default_mde")]
    #[schema(default = 0.05)]
    pub mde: f64,
    /// `ab` (default): each user sees one variant. `interleave`: every request shows one list
    /// drafted from both variants' rankings (exactly two variants), and each click credits
    /// the variant whose item it was (team-draft interleaving).
    #[serde(default)]
    #[schema(default = "ab")]
    pub mode: Mode,
    /// The event type that credits an interleaved list's variant (default `click`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_event: Option<String>,
}

/// How an experiment compares its variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ExperimentMode)]
pub enum Mode {
    /// Users split between the variants.
    #[default]
    Ab,
    /// Both variants in every list (team draft), credited per click.
    Interleave,
}

fn default_alpha() -> f64 {
    0.05
}

fn default_pre_period() -> String {
    "14d".into()
}

fn default_mde() -> f64 {
    0.05
}

/// An experiment as stored: its definition and where it is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Name (unique).
    pub name: String,
    /// What was asked for.
    pub spec: ExperimentSpec,
    /// Draft, running or stopped.
    pub status: Status,
    /// When it started (milliseconds), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// When it stopped, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
}

/// Why an experiment could not be saved, started or reported.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A field is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as in the request body (`variants[1].config.filter`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No experiment with this name.
    #[error("no experiment {0:?}")]
    NotFound(String),
    /// The operation does not fit the experiment's status, or another running experiment.
    #[error("{field}: {message}")]
    Conflict {
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ExperimentError {
    ExperimentError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn conflict(field: impl Into<String>, message: impl Into<String>) -> ExperimentError {
    ExperimentError::Conflict {
        field: field.into(),
        message: message.into(),
    }
}

/// A variant's configuration, checked: which fields it sets and their values.
#[derive(Debug, Clone)]
struct Patch {
    set: VariantConfig,
    values: RankRequest,
}

impl Patch {
    /// Lays the variant's fields over `req`.
    fn apply(&self, req: &mut RankRequest) {
        let (set, v) = (&self.set, &self.values);
        if set.model.is_some() {
            req.model = v.model;
        }
        if set.diversity.is_some() {
            req.diversity = v.diversity;
        }
        if let Some(f) = &v.filter {
            req.filter = Some(match req.filter.take() {
                Some(own) => format!("({own}) and ({f})"),
                None => f.clone(),
            });
        }
        req.boost.extend(v.boost.iter().cloned());
        req.promote.extend(v.promote.iter().cloned());
        if set.max_per_category.is_some() {
            req.max_per_category = v.max_per_category;
        }
        req.skip_rules.extend(v.skip_rules.iter().cloned());
        let (f, vf) = (&mut req.fairness, &v.fairness);
        if set.calibration.is_some() {
            f.calibration = vf.calibration;
        }
        if set.popularity.is_some() {
            f.popularity = vf.popularity;
        }
        if set.popularity_method.is_some() {
            f.popularity_method = vf.popularity_method;
        }
        if set.protected.is_some() {
            f.protected = vf.protected.clone();
        }
        if set.protected_share.is_some() {
            f.protected_share = vf.protected_share;
        }
        if set.protected_alpha.is_some() {
            f.protected_alpha = vf.protected_alpha;
        }
    }
}

/// A running experiment, compiled for serving.
#[derive(Debug)]
struct Live {
    name: Arc<str>,
    /// Its start: a deleted experiment recreated under the same name is another one.
    started_at: Option<i64>,
    route: ExperimentRoute,
    salt: String,
    variants: Variants,
    patches: Vec<Patch>,
    /// Users whose exposure was already buffered or written (by this node since it started).
    seen: Mutex<FxHashSet<String>>,
    /// Requests served per variant (the holdout last), by this node since start.
    served: Vec<AtomicU64>,
    /// Requests whose variant configuration failed and fell back to the request as sent.
    fallbacks: Vec<AtomicU64>,
    /// Interleaving: the event type that credits, and each user's recent lists with the
    /// variant (team) of every item.
    interleave: Option<Interleaved>,
}

/// The state of a running interleaving experiment.
#[derive(Debug)]
struct Interleaved {
    click_event: String,
    /// Per stored user key, their latest lists: (served at, item → team).
    lists: Mutex<FxHashMap<String, VecDeque<ServedList>>>,
    /// Credit not yet written: per stored user key, (A, B).
    credits: Mutex<FxHashMap<String, (u32, u32)>>,
}

/// A list as served: when, and the variant (team) that gave each item.
type ServedList = (i64, FxHashMap<String, Team>);

/// Lists kept per user for crediting clicks; a click on an item of an older list is not
/// credited.
const LISTS_PER_USER: usize = 20;
/// A click credits a list served at most this long before it.
const CREDIT_WINDOW_MS: i64 = 24 * 3_600_000;

/// The experiments a serving node runs and the exposures waiting to be written.
#[derive(Debug)]
pub(crate) struct Experiments {
    running: ArcSwap<Vec<Arc<Live>>>,
    pending: Mutex<Vec<(Arc<str>, NewExposure)>>,
    last_flush: Mutex<Instant>,
    /// Running experiments already warned about (once each, not at every reload).
    warned: Mutex<FxHashSet<String>>,
}

impl Default for Experiments {
    fn default() -> Self {
        Self {
            running: ArcSwap::from_pointee(Vec::new()),
            pending: Mutex::new(Vec::new()),
            last_flush: Mutex::new(Instant::now()),
            warned: Mutex::new(FxHashSet::default()),
        }
    }
}

/// The variant a request was served, as the response reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assigned {
    /// The experiment.
    pub experiment: String,
    /// The variant served (`holdout` for a held-out user, `interleaved` for a drafted list).
    pub variant: String,
    /// The variant's configuration failed and the request was served as sent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// An interleaved list: the variant that contributed each item, in list order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
}

/// What [`Engine::assign_experiments`] decided for one request.
#[derive(Debug, Default)]
pub struct Served {
    /// The variants served, one per experiment on the route.
    pub assigned: Vec<Assigned>,
    /// An interleaving experiment's second request, to rank and draft with the first.
    pub interleave: Option<InterleavePlan>,
}

/// The second ranking an interleaving experiment needs.
#[derive(Debug)]
pub struct InterleavePlan {
    live: Arc<Live>,
    /// The second variant's request.
    pub second: RankRequest,
    user: String,
}

fn stored(record: RuleRecord) -> Option<Experiment> {
    match serde_json::from_value::<Experiment>(record.definition) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(experiment = %record.name, error = %e, "stored experiment does not read; ignored");
            None
        }
    }
}

/// The weights and names of a spec's variants, checked.
fn variants_of(spec: &ExperimentSpec) -> Result<Variants, ExperimentError> {
    if spec.variants.len() < 2 {
        return Err(invalid(
            "variants",
            "an experiment needs at least two variants: the control first, then the treatments",
        ));
    }
    for (i, v) in spec.variants.iter().enumerate() {
        if !(v.weight.is_finite() && v.weight >= 0.0) {
            return Err(invalid(
                format!("variants[{i}].weight"),
                format!("weight must be a finite number >= 0, got {}", v.weight),
            ));
        }
        if v.name.is_empty() || v.name == "holdout" || v.name.len() > 64 {
            return Err(invalid(
                format!("variants[{i}].name"),
                "a variant name must be 1 to 64 bytes and not \"holdout\"",
            ));
        }
    }
    if spec.variants.iter().map(|v| v.weight).sum::<f64>() <= 0.0 {
        return Err(invalid(
            "variants",
            "the variants' weights must sum to a positive number",
        ));
    }
    let names = spec.variants.iter().map(|v| v.name.clone()).collect();
    let weights = spec.variants.iter().map(|v| v.weight).collect();
    Variants::new(names, weights, spec.holdout).map_err(|e| match e {
        exp::Error::InvalidHoldout { .. } => invalid("holdout", e.to_string()),
        exp::Error::BadVariantName { .. } => invalid("variants", e.to_string()),
        other => invalid("variants", other.to_string()),
    })
}

impl Engine {
    /// Loads the running experiments into serving (at start, after every change, and every
    /// second for changes made by other processes).
    pub fn reload_experiments(&self) -> bespoke_store::Result<()> {
        let old = self.experiments.running.load();
        let mut live = Vec::new();
        for e in self
            .store
            .experiments()?
            .into_iter()
            .filter_map(stored)
            .filter(|e| e.status == Status::Running)
        {
            // One that stays running keeps its compiled form and counters (a running
            // experiment's definition never changes).
            if let Some(o) = old
                .iter()
                .find(|o| *o.name == *e.name && o.started_at == e.started_at)
            {
                live.push(o.clone());
                continue;
            }
            match self.compile_experiment(&e) {
                Ok(l) => live.push(Arc::new(l)),
                // The catalog changed under a running experiment since it started: it stays
                // stored and reported, but serves nothing until fixed.
                Err(err) => {
                    if self.experiments.warned.lock().insert(e.name.clone()) {
                        tracing::warn!(experiment = %e.name, error = %err, "running experiment no longer compiles; not served");
                    }
                }
            }
        }
        self.experiments.running.store(Arc::new(live));
        Ok(())
    }

    fn compile_experiment(&self, e: &Experiment) -> Result<Live, ExperimentError> {
        let variants = variants_of(&e.spec)?;
        let patches = e
            .spec
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| self.patch(i, &v.config))
            .collect::<Result<Vec<_>, _>>()?;
        let n = e.spec.variants.len() + 1;
        Ok(Live {
            name: e.name.as_str().into(),
            started_at: e.started_at,
            route: e.spec.route,
            salt: e.spec.salt.clone().unwrap_or_else(|| e.name.clone()),
            variants,
            patches,
            seen: Mutex::new(FxHashSet::default()),
            served: (0..n).map(|_| AtomicU64::new(0)).collect(),
            fallbacks: (0..n).map(|_| AtomicU64::new(0)).collect(),
            interleave: (e.spec.mode == Mode::Interleave).then(|| Interleaved {
                click_event: e.spec.click_event.clone().unwrap_or_else(|| "click".into()),
                lists: Mutex::new(FxHashMap::default()),
                credits: Mutex::new(FxHashMap::default()),
            }),
        })
    }

    /// Checks variant `i`'s configuration as a ranking request would be checked.
    fn patch(&self, i: usize, c: &VariantConfig) -> Result<Patch, ExperimentError> {
        let field = |f: &str| format!("variants[{i}].config.{f}");
        let settings = &self.settings;
        let mut values = RankRequest {
            n: settings.serving.default_n,
            ..RankRequest::default()
        };
        values.model =
            model_param(c.model.as_deref()).map_err(|e| invalid(field("model"), e.message))?;
        values.diversity =
            diversity_param(c.diversity).map_err(|e| invalid(field("diversity"), e.message))?;
        RulesIn {
            filter: c.filter.clone(),
            boost: c.boost.clone(),
            promote: c.promote.clone(),
            max_per_category: c.max_per_category,
            skip_rules: c.skip_rules.clone(),
            calibration: c.calibration,
            popularity: c.popularity,
            popularity_method: c.popularity_method.clone(),
            protected: c.protected.clone(),
            protected_share: c.protected_share,
            protected_alpha: c.protected_alpha,
            ..RulesIn::default()
        }
        .apply(&mut values, settings)
        .map_err(|e| invalid(field(e.field.as_deref().unwrap_or("config")), e.message))?;
        self.serving
            .check_rules(&values, values.n)
            .map_err(|p| invalid(field(&p.field), p.message))?;
        Ok(Patch {
            set: c.clone(),
            values,
        })
    }

    /// Checks a spec: variants, configurations against the catalog, metrics against the
    /// configured event types. Fills in the default metrics.
    fn check_experiment(&self, spec: &mut ExperimentSpec) -> Result<(), ExperimentError> {
        variants_of(spec)?;
        for (i, v) in spec.variants.iter().enumerate() {
            if spec.variants[..i].iter().any(|w| w.name == v.name) {
                return Err(invalid(
                    format!("variants[{i}].name"),
                    format!("variant name {:?} is used twice", v.name),
                ));
            }
            self.patch(i, &v.config)?;
        }
        if let Some(layer) = &spec.layer
            && (layer.is_empty() || layer.len() > 64)
        {
            return Err(invalid("layer", "a layer name must be 1 to 64 bytes"));
        }
        if !(spec.alpha > 0.0 && spec.alpha < 0.5) {
            return Err(invalid(
                "alpha",
                format!("alpha must be between 0 and 0.5, got {}", spec.alpha),
            ));
        }
        if !(spec.mde > 0.0 && spec.mde.is_finite()) {
            return Err(invalid(
                "mde",
                format!("mde must be a positive number, got {}", spec.mde),
            ));
        }
        if spec.mode == Mode::Interleave {
            if spec.variants.len() != 2 {
                return Err(invalid(
                    "variants",
                    "interleaving compares exactly two variants",
                ));
            }
            if spec.route != ExperimentRoute::Recommendations {
                return Err(invalid(
                    "route",
                    "interleaving runs on the recommendations route",
                ));
            }
            let click = spec.click_event.as_deref().unwrap_or("click");
            if !self.weights.kinds().contains(&click) {
                return Err(invalid(
                    "click_event",
                    format!(
                        "unknown event type {click:?}; the configured types are {}",
                        self.weights.kinds().join(", ")
                    ),
                ));
            }
        } else if spec.click_event.is_some() {
            return Err(invalid(
                "click_event",
                "click_event applies to mode interleave only",
            ));
        }
        parse_duration(&spec.pre_period)
            .map_err(|why| invalid("pre_period", format!("pre_period {why} (7d, 14d, ...)")))?;
        let mut kinds: Vec<&str> = self.weights.kinds();
        kinds.push(crate::settings::IMPRESSION);
        if spec.metrics.is_empty() {
            spec.metrics = self
                .weights
                .kinds()
                .into_iter()
                .map(|k| MetricSpec::Conversion {
                    name: format!("{k}_conversion"),
                    event: k.to_owned(),
                })
                .collect();
        }
        if spec.metrics.len() > MAX_METRICS {
            return Err(invalid("metrics", format!("at most {MAX_METRICS} metrics")));
        }
        for (i, m) in spec.metrics.iter().enumerate() {
            if m.name().is_empty() || m.name().len() > 64 {
                return Err(invalid(
                    format!("metrics[{i}].name"),
                    "a metric name must be 1 to 64 bytes",
                ));
            }
            if spec.metrics[..i].iter().any(|o| o.name() == m.name()) {
                return Err(invalid(
                    format!("metrics[{i}].name"),
                    format!("metric name {:?} is used twice", m.name()),
                ));
            }
            for (f, event) in m.events() {
                if !kinds.contains(&event) {
                    return Err(invalid(
                        format!("metrics[{i}].{f}"),
                        format!(
                            "unknown event type {event:?}; the configured types are {}",
                            kinds.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every experiment, by name.
    pub fn experiments(&self) -> bespoke_store::Result<Vec<Experiment>> {
        Ok(self
            .store
            .experiments()?
            .into_iter()
            .filter_map(stored)
            .collect())
    }

    /// One experiment.
    pub fn experiment(&self, name: &str) -> Result<Experiment, ExperimentError> {
        self.experiments()?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ExperimentError::NotFound(name.to_owned()))
    }

    /// Creates a draft experiment, or replaces a draft's definition; `true` when it is new. A
    /// running or stopped experiment cannot change (its report would mix two definitions).
    pub fn put_experiment(
        &self,
        name: &str,
        mut spec: ExperimentSpec,
    ) -> Result<(Experiment, bool), ExperimentError> {
        let _admin = self.admin.lock();
        self.check_experiment(&mut spec)?;
        let all = self.experiments()?;
        let existing = all.iter().find(|e| e.name == name);
        if let Some(e) = existing
            && e.status != Status::Draft
        {
            return Err(conflict(
                "status",
                format!(
                    "experiment {name:?} is {:?}; only a draft can change (create a new one)",
                    e.status
                ),
            ));
        }
        if existing.is_none() && all.len() >= MAX_EXPERIMENTS {
            return Err(conflict(
                "name",
                format!("at most {MAX_EXPERIMENTS} experiments; delete one first"),
            ));
        }
        let e = Experiment {
            name: name.to_owned(),
            spec,
            status: Status::Draft,
            started_at: None,
            stopped_at: None,
        };
        self.save_experiment(&e)?;
        Ok((e, existing.is_none()))
    }

    fn save_experiment(&self, e: &Experiment) -> bespoke_store::Result<()> {
        let definition = serde_json::to_value(e).expect("an experiment serializes");
        self.store.put_experiment(&e.name, &definition, now_ms())?;
        Ok(())
    }

    /// Starts a draft: from now on its route serves its variants. Refused while another
    /// running experiment on the same route shares its layer (or either has none).
    pub fn start_experiment(&self, name: &str) -> Result<Experiment, ExperimentError> {
        let _admin = self.admin.lock();
        let all = self.experiments()?;
        let mut e = all
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .ok_or_else(|| ExperimentError::NotFound(name.to_owned()))?;
        if e.status != Status::Draft {
            return Err(conflict(
                "status",
                format!("experiment {name:?} is {:?}; only a draft starts", e.status),
            ));
        }
        for other in all
            .iter()
            .filter(|o| o.status == Status::Running && o.spec.route == e.spec.route)
        {
            // An interleaved list has room for one experiment only.
            let interleaving =
                other.spec.mode == Mode::Interleave || e.spec.mode == Mode::Interleave;
            let same_layer = interleaving
                || match (&other.spec.layer, &e.spec.layer) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
            if same_layer {
                return Err(conflict(
                    "layer",
                    format!(
                        "experiment {:?} already runs on route {:?} in the same layer; give the two different layers to run them at once (independent assignments), or stop it",
                        other.name,
                        serde_json::to_value(e.spec.route).unwrap_or_default()
                    ),
                ));
            }
        }
        // Checked again: the catalog may have changed since it was created.
        self.compile_experiment(&e)?;
        e.status = Status::Running;
        e.started_at = Some(now_ms());
        self.save_experiment(&e)?;
        self.reload_experiments()?;
        Ok(e)
    }

    /// Stops a running experiment: its route serves requests as sent again.
    pub fn stop_experiment(&self, name: &str) -> Result<Experiment, ExperimentError> {
        self.flush_exposures()?;
        let _admin = self.admin.lock();
        let mut e = self.experiment(name)?;
        if e.status != Status::Running {
            return Err(conflict(
                "status",
                format!(
                    "experiment {name:?} is {:?}; only a running one stops",
                    e.status
                ),
            ));
        }
        e.status = Status::Stopped;
        e.stopped_at = Some(now_ms());
        self.save_experiment(&e)?;
        self.reload_experiments()?;
        Ok(e)
    }

    /// Deletes an experiment and its exposures; `false` when there was none.
    pub fn delete_experiment(&self, name: &str) -> bespoke_store::Result<bool> {
        let _admin = self.admin.lock();
        let deleted = self.store.delete_experiment(name)?;
        self.reload_experiments()?;
        Ok(deleted)
    }

    /// Assigns the user a variant of every running experiment on `route`, lays the variants'
    /// configurations over `req` and buffers the user's first exposure. A configuration that
    /// fails its check falls back to the request as sent (counted). For an interleaving
    /// experiment `req` becomes the first variant's request and the plan holds the second's:
    /// the caller ranks both and drafts them with [`Engine::interleave`].
    pub fn assign_experiments(
        &self,
        route: ExperimentRoute,
        user_key: &str,
        req: &mut RankRequest,
    ) -> Served {
        let mut out = Served::default();
        let running = self.experiments.running.load();
        if running.is_empty() {
            return out;
        }
        let stored = self.serving.user_keys.to_store(user_key);
        for live in running.iter().filter(|l| l.route == route) {
            let arm = live.variants.assign(&live.salt, &stored);
            // Every user outside the holdout of an interleaving experiment sees both variants:
            // they count under the first.
            let arm = arm.map(|a| if live.interleave.is_some() { 0 } else { a });
            let index = arm.unwrap_or(live.patches.len());
            live.served[index].fetch_add(1, Ordering::Relaxed);
            let mut fallback = false;
            let mut variant = arm.map_or_else(
                || "holdout".to_owned(),
                |a| live.variants.names()[a].clone(),
            );
            match (arm, &live.interleave) {
                (None, _) => {}
                (Some(_), Some(_)) => {
                    let (mut a, mut b) = (req.clone(), req.clone());
                    live.patches[0].apply(&mut a);
                    live.patches[1].apply(&mut b);
                    let ok = |r: &RankRequest| self.serving.check_rules(r, r.n).is_ok();
                    if ok(&a) && ok(&b) {
                        *req = a;
                        variant = "interleaved".into();
                        out.interleave = Some(InterleavePlan {
                            live: live.clone(),
                            second: b,
                            user: stored.to_string(),
                        });
                    } else {
                        fallback = true;
                        live.fallbacks[index].fetch_add(1, Ordering::Relaxed);
                    }
                }
                (Some(arm), None) => {
                    let mut patched = req.clone();
                    live.patches[arm].apply(&mut patched);
                    if self.serving.check_rules(&patched, patched.n).is_ok() {
                        *req = patched;
                    } else {
                        fallback = true;
                        live.fallbacks[arm].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if live.seen.lock().insert(stored.to_string()) {
                self.experiments.pending.lock().push((
                    live.name.clone(),
                    NewExposure {
                        user: stored.to_string(),
                        variant: index as u32,
                        at: now_ms(),
                    },
                ));
            }
            out.assigned.push(Assigned {
                experiment: live.name.to_string(),
                variant,
                fallback,
                teams: Vec::new(),
            });
        }
        out
    }

    /// Drafts the two rankings of an interleaving plan into one list of at most `n` (team
    /// draft, a fresh coin per request), remembers which variant gave each item so that the
    /// user's clicks credit it, and sets the teams on the plan's assignment in `served`.
    pub fn interleave(
        &self,
        served: &mut Served,
        first: Vec<crate::pipeline::Recommendation>,
        second: Vec<crate::pipeline::Recommendation>,
        n: usize,
    ) -> Vec<crate::pipeline::Recommendation> {
        let Some(plan) = served.interleave.take() else {
            return first;
        };
        let a: Vec<&str> = first.iter().map(|r| r.item.as_str()).collect();
        let b: Vec<&str> = second.iter().map(|r| r.item.as_str()).collect();
        let seed = now_ms() as u64 ^ bespoke_algo::experiment::bucket(&plan.user, "coin").to_bits();
        let drafted = team_draft(&a, &b, n, &mut bespoke_algo::Rng::seed_from_u64(seed));
        let mut by_key: FxHashMap<&str, &crate::pipeline::Recommendation> = FxHashMap::default();
        for r in second.iter().chain(first.iter()) {
            by_key.insert(r.item.as_str(), r);
        }
        let items: Vec<crate::pipeline::Recommendation> =
            drafted.items.iter().map(|k| (*by_key[k]).clone()).collect();
        let names = plan.live.variants.names();
        if let Some(x) = served
            .assigned
            .iter_mut()
            .find(|x| x.experiment == *plan.live.name)
        {
            x.teams = drafted
                .teams
                .iter()
                .map(|t| match t {
                    Team::A => names[0].clone(),
                    Team::B => names[1].clone(),
                })
                .collect();
        }
        if let Some(il) = &plan.live.interleave {
            let list = drafted
                .items
                .iter()
                .zip(&drafted.teams)
                .map(|(k, t)| ((*k).to_owned(), *t))
                .collect();
            let mut lists = il.lists.lock();
            let mine = lists.entry(plan.user).or_default();
            mine.push_back((now_ms(), list));
            while mine.len() > LISTS_PER_USER {
                mine.pop_front();
            }
        }
        items
    }

    /// Whether an interleaving experiment runs (ingestion then credits clicks).
    pub(crate) fn interleaving_running(&self) -> bool {
        self.experiments
            .running
            .load()
            .iter()
            .any(|l| l.interleave.is_some())
    }

    /// Credits the clicks among `events` (stored user key, item key, type, time) to the
    /// interleaving variant that contributed the item, in the latest list the user was shown
    /// before the click (within a day).
    pub(crate) fn credit_clicks(&self, events: &[(&str, &str, &str, i64)]) {
        let running = self.experiments.running.load();
        for live in running.iter() {
            let Some(il) = &live.interleave else { continue };
            let lists = il.lists.lock();
            let mut credits = il.credits.lock();
            for &(user, item, kind, at) in events {
                if kind != il.click_event {
                    continue;
                }
                let Some(mine) = lists.get(user) else {
                    continue;
                };
                let team = mine
                    .iter()
                    .rev()
                    .filter(|(served, _)| *served <= at && at - *served <= CREDIT_WINDOW_MS)
                    .find_map(|(_, list)| list.get(item).copied());
                let entry = credits.entry(user.to_owned()).or_default();
                match team {
                    Some(Team::A) => entry.0 += 1,
                    Some(Team::B) => entry.1 += 1,
                    None => {}
                }
            }
        }
    }

    /// Whether buffered exposures should be written now.
    pub fn exposures_due(&self) -> bool {
        let n = self.experiments.pending.lock().len();
        n >= FLUSH_AT
            || (n > 0 && self.experiments.last_flush.lock().elapsed().as_millis() >= FLUSH_EVERY_MS)
    }

    /// Writes the buffered exposures; returns how many were new.
    pub fn flush_exposures(&self) -> bespoke_store::Result<u64> {
        let pending = std::mem::take(&mut *self.experiments.pending.lock());
        *self.experiments.last_flush.lock() = Instant::now();
        let mut by_experiment: FxHashMap<Arc<str>, Vec<NewExposure>> = FxHashMap::default();
        for (name, e) in pending {
            by_experiment.entry(name).or_default().push(e);
        }
        let mut added = 0;
        for (name, rows) in by_experiment {
            match self.store.record_exposures(&name, rows.clone()) {
                Ok(n) => added += n,
                Err(e) => {
                    // Put them back for the next try: an exposure lost biases the report.
                    self.experiments
                        .pending
                        .lock()
                        .extend(rows.into_iter().map(|r| (name.clone(), r)));
                    return Err(e);
                }
            }
        }
        // Credit after exposures: it adds to their rows.
        for live in self.experiments.running.load().iter() {
            let Some(il) = &live.interleave else { continue };
            let credits: Vec<(String, u32, u32)> = std::mem::take(&mut *il.credits.lock())
                .into_iter()
                .filter(|(_, (a, b))| a + b > 0)
                .map(|(u, (a, b))| (u, a, b))
                .collect();
            if !credits.is_empty()
                && let Err(e) = self.store.add_credits(&live.name, credits.clone())
            {
                let mut back = il.credits.lock();
                for (u, a, b) in credits {
                    let c = back.entry(u).or_default();
                    c.0 += a;
                    c.1 += b;
                }
                return Err(e);
            }
        }
        Ok(added)
    }

    /// Forgets a user's buffered exposures (erasure: the store deletes the written ones).
    pub(crate) fn forget_exposures(&self, stored_key: &str) {
        self.experiments
            .pending
            .lock()
            .retain(|(_, e)| e.user != stored_key);
        for live in self.experiments.running.load().iter() {
            live.seen.lock().remove(stored_key);
            if let Some(il) = &live.interleave {
                il.lists.lock().remove(stored_key);
                il.credits.lock().remove(stored_key);
            }
        }
    }

    /// The experiment's results so far (or over its running period, once stopped).
    pub fn experiment_report(&self, name: &str) -> Result<ExperimentReport, ExperimentError> {
        self.flush_exposures()?;
        let e = self.experiment(name)?;
        let Some(started) = e.started_at else {
            return Err(conflict(
                "status",
                format!("experiment {name:?} has not started: nothing to report"),
            ));
        };
        let end = e.stopped_at.unwrap_or_else(now_ms);
        let pre = parse_duration(&e.spec.pre_period).unwrap_or(14 * 86_400_000);
        let exposures = self.store.exposures(name)?;
        let k = e.spec.variants.len();
        let metrics = &e.spec.metrics;
        // arms[metric][variant (holdout last)]
        let mut arms = vec![vec![Moments::new(); k + 1]; metrics.len()];
        let mut users = vec![0u64; k + 1];
        for x in &exposures {
            let v = (x.variant as usize).min(k);
            users[v] += 1;
            let events = self.report_events(&x.key, started - pre)?;
            for (m, spec) in metrics.iter().enumerate() {
                let (y, pre_y) = metric_value(spec, &events, x.at, end, started - pre, started);
                arms[m][v].push_pair(y, pre_y);
            }
        }
        let weights: Vec<f64> = e.spec.variants.iter().map(|v| v.weight).collect();
        let interleaving = e.spec.mode == Mode::Interleave;
        // Interleaving splits no users between the variants: no ratio to check.
        let srm_check = if interleaving {
            None
        } else {
            srm(&users[..k], &weights).ok()
        };
        let interleaving = interleaving.then(|| {
            let mut pref = Preference::default();
            for x in exposures.iter().filter(|x| (x.variant as usize) < k) {
                pref.push(Credit {
                    a: x.credit.0,
                    b: x.credit.1,
                });
            }
            let SignTest { delta, p_value } = pref.sign_test();
            let names = &e.spec.variants;
            InterleavingOut {
                users: pref.a_wins + pref.b_wins + pref.ties,
                wins: [
                    (names[0].name.clone(), pref.a_wins),
                    (names[1].name.clone(), pref.b_wins),
                ]
                .into_iter()
                .collect(),
                ties: pref.ties,
                delta,
                p_value,
                preferred: (p_value < e.spec.alpha && delta != 0.0)
                    .then(|| names[usize::from(delta > 0.0)].name.clone()),
            }
        });
        let live = self
            .experiments
            .running
            .load()
            .iter()
            .find(|l| &*l.name == name)
            .cloned();
        let counter =
            |c: Option<&Vec<AtomicU64>>, i: usize| c.map_or(0, |c| c[i].load(Ordering::Relaxed));
        let variants = (0..=k)
            .filter(|&i| i < k || e.spec.holdout > 0.0)
            .map(|i| VariantReport {
                variant: e
                    .spec
                    .variants
                    .get(i)
                    .map_or_else(|| "holdout".into(), |v| v.name.clone()),
                users: users[i],
                served: counter(live.as_ref().map(|l| &l.served), i),
                fallbacks: counter(live.as_ref().map(|l| &l.fallbacks), i),
                means: metrics
                    .iter()
                    .zip(&arms)
                    .map(|(m, a)| MetricMean {
                        metric: m.name().to_owned(),
                        mean: if let MetricSpec::Ratio { .. } = m {
                            (a[i].mean_x() > 0.0).then(|| a[i].mean() / a[i].mean_x())
                        } else {
                            (a[i].n() > 0).then(|| a[i].mean())
                        },
                    })
                    .collect(),
            })
            .collect();
        let mut comparisons = Vec::new();
        for t in 1..k {
            let mut rows: Vec<MetricResult> = metrics
                .iter()
                .zip(&arms)
                .map(|(m, a)| compare(m, &a[0], &a[t], e.spec.alpha, e.spec.mde))
                .collect();
            let ps: Vec<f64> = rows.iter().map(|r| r.p_value.unwrap_or(1.0)).collect();
            for (r, p) in rows.iter_mut().zip(holm(&ps)) {
                if r.p_value.is_some() {
                    r.p_value_holm = Some(p);
                    r.significant = p < e.spec.alpha;
                }
            }
            comparisons.push(Comparison {
                control: e.spec.variants[0].name.clone(),
                treatment: e.spec.variants[t].name.clone(),
                metrics: rows,
            });
        }
        let mut notes = Vec::new();
        if let Some(s) = &srm_check
            && s.alarm
        {
            notes.push(format!(
                "sample ratio mismatch: the users per variant differ from the weights (p = {:.2e} < {SRM_ALPHA}); assignment or exposure logging is broken and the results should not be trusted",
                s.p_value
            ));
        }
        Ok(ExperimentReport {
            experiment: e.name.clone(),
            status: e.status,
            route: e.spec.route,
            started_at: format_rfc3339(started),
            stopped_at: e.stopped_at.map(format_rfc3339),
            analysed_until: format_rfc3339(end),
            alpha: e.spec.alpha,
            users: users.iter().sum(),
            srm: srm_check,
            variants,
            comparisons: if interleaving.is_some() {
                Vec::new()
            } else {
                comparisons
            },
            interleaving,
            notes,
        })
    }

    /// A user's events from `since` on, as (type, value, time).
    fn report_events(
        &self,
        stored_key: &str,
        since: i64,
    ) -> bespoke_store::Result<Vec<(String, Option<f64>, i64)>> {
        let mut out = Vec::new();
        let mut before = None;
        loop {
            let Some(page) = self.store.user_events(stored_key, before, 1_000)? else {
                break;
            };
            // Newest first: a page reaching back before `since` is the last one needed.
            let mut done = page.next.is_none();
            for ev in page.items {
                done |= ev.timestamp < since;
                out.push((ev.kind, ev.value, ev.timestamp));
            }
            if done || out.len() >= REPORT_EVENTS_PER_USER {
                break;
            }
            before = page.next;
        }
        Ok(out)
    }
}

/// A user's value of `metric` in the experiment (from first exposure to `end`) and in the
/// pre-period `[pre_from, pre_to)`; for a ratio, the numerator and the denominator instead.
fn metric_value(
    metric: &MetricSpec,
    events: &[(String, Option<f64>, i64)],
    exposed: i64,
    end: i64,
    pre_from: i64,
    pre_to: i64,
) -> (f64, f64) {
    let during = |t: i64| t >= exposed && t <= end;
    let before = |t: i64| t >= pre_from && t < pre_to;
    let count = |kind: &str, window: &dyn Fn(i64) -> bool| {
        events
            .iter()
            .filter(|(k, _, t)| k == kind && window(*t))
            .count() as f64
    };
    match metric {
        MetricSpec::Conversion { event, .. } => (
            f64::from(count(event, &during) > 0.0),
            f64::from(count(event, &before) > 0.0),
        ),
        MetricSpec::Count { event, .. } => (count(event, &during), count(event, &before)),
        MetricSpec::Revenue { event, .. } => {
            let sum = |window: &dyn Fn(i64) -> bool| {
                events
                    .iter()
                    .filter(|(k, _, t)| k == event && window(*t))
                    .map(|(_, v, _)| v.unwrap_or(0.0))
                    .sum::<f64>()
            };
            (sum(&during), sum(&before))
        }
        MetricSpec::Ratio {
            numerator,
            denominator,
            ..
        } => (count(numerator, &during), count(denominator, &during)),
    }
}

/// One metric of one treatment against the control.
fn compare(metric: &MetricSpec, c: &Moments, t: &Moments, alpha: f64, mde: f64) -> MetricResult {
    let mut r = MetricResult {
        metric: metric.name().to_owned(),
        kind: metric.kind(),
        ..MetricResult::default()
    };
    let (estimate, reduction) = if let MetricSpec::Ratio { .. } = metric {
        (ratio(c, t), None)
    } else {
        match cuped(c, t) {
            // CUPED only when the pre-period carries information; otherwise the plain means.
            Ok(cu) if cu.variance_reduction > 0.0 => (Ok(cu.estimate), Some(cu.variance_reduction)),
            _ => (means(c, t), None),
        }
    };
    let estimate = match estimate {
        Ok(e) => e,
        Err(e) => {
            r.note = Some(e.to_string());
            return r;
        }
    };
    r.cuped_variance_reduction = reduction;
    match estimate.welch(alpha) {
        Ok(TestResult {
            control,
            treatment,
            effect,
            relative,
            ci_low,
            ci_high,
            p_value,
            ..
        }) => {
            r.control = Some(control);
            r.treatment = Some(treatment);
            r.effect = Some(effect);
            r.relative = relative;
            r.ci_low = Some(ci_low);
            r.ci_high = Some(ci_high);
            r.p_value = Some(p_value);
        }
        Err(e) => r.note = Some(e.to_string()),
    }
    let tau2 = (mde * estimate.control).powi(2).max(1e-12);
    if let Ok(s) = estimate.sequential(alpha, tau2) {
        r.sequential = Some(SequentialOut {
            always_valid_p: s.always_valid_p,
            cs_low: s.cs_low,
            cs_high: s.cs_high,
            significant: s.always_valid_p <= alpha,
        });
    }
    r
}

/// `GET /v1/experiments/{name}/report`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExperimentReport {
    /// The experiment.
    pub experiment: String,
    /// Its status.
    pub status: Status,
    /// Its route.
    pub route: ExperimentRoute,
    /// When it started.
    #[schema(format = DateTime)]
    pub started_at: String,
    /// When it stopped, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub stopped_at: Option<String>,
    /// The end of the period analysed (now, or the stop).
    #[schema(format = DateTime)]
    pub analysed_until: String,
    /// The significance level.
    pub alpha: f64,
    /// Users exposed.
    pub users: u64,
    /// The sample-ratio-mismatch check over the variants (not the holdout).
    pub srm: Option<Srm>,
    /// Per variant: users, requests and fallbacks, metric means.
    pub variants: Vec<VariantReport>,
    /// Each treatment against the control (A/B mode).
    pub comparisons: Vec<Comparison>,
    /// Interleaving mode: which variant users preferred, with the sign test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interleaving: Option<InterleavingOut>,
    /// Warnings (an SRM alarm above all).
    pub notes: Vec<String>,
}

/// An interleaving experiment's outcome: each user is won by the variant whose items they
/// clicked more, or tied; the sign test asks whether one variant wins more users.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Interleaving)]
pub struct InterleavingOut {
    /// Users exposed (outside the holdout).
    pub users: u64,
    /// Users won by each variant.
    pub wins: std::collections::BTreeMap<String, u64>,
    /// Users with equal credit (no clicks included).
    pub ties: u64,
    /// `(second's wins − first's wins) / users`: positive when the second is preferred.
    pub delta: f64,
    /// The sign test's two-sided p-value.
    pub p_value: f64,
    /// The preferred variant when `p_value < α`.
    pub preferred: Option<String>,
}

/// One variant's numbers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VariantReport {
    /// Variant name (`holdout` for the held-out users).
    pub variant: String,
    /// Users first exposed to it.
    pub users: u64,
    /// Requests this node served it since it started.
    pub served: u64,
    /// Of those, how many fell back to the request as sent.
    pub fallbacks: u64,
    /// Each metric's mean (a ratio's pooled ratio); null with no users.
    pub means: Vec<MetricMean>,
}

/// One metric's mean in one variant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MetricMean {
    /// Metric name.
    pub metric: String,
    /// Its mean.
    pub mean: Option<f64>,
}

/// One treatment against the control on every metric.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ExperimentComparison)]
pub struct Comparison {
    /// The control's name.
    pub control: String,
    /// The treatment's name.
    pub treatment: String,
    /// One result per metric.
    pub metrics: Vec<MetricResult>,
}

/// The test of one metric: effect, interval and p-values (null with too few users; `note`
/// says why).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct MetricResult {
    /// Metric name.
    pub metric: String,
    /// Its kind.
    pub kind: &'static str,
    /// The control's value (CUPED-adjusted when CUPED applied).
    pub control: Option<f64>,
    /// The treatment's value.
    pub treatment: Option<f64>,
    /// `treatment − control`.
    pub effect: Option<f64>,
    /// `effect / control`.
    pub relative: Option<f64>,
    /// Welch's `1 − α` interval of the effect.
    pub ci_low: Option<f64>,
    /// Its upper end.
    pub ci_high: Option<f64>,
    /// Welch's two-sided p-value (fixed horizon: valid at one planned look).
    pub p_value: Option<f64>,
    /// Holm-adjusted across the metrics of this comparison.
    pub p_value_holm: Option<f64>,
    /// `p_value_holm < α`.
    pub significant: bool,
    /// Share of the effect's variance CUPED removed, when it applied.
    pub cuped_variance_reduction: Option<f64>,
    /// The always-valid test: safe to look at every day.
    pub sequential: Option<SequentialOut>,
    /// Why numbers are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The always-valid (mSPRT) test's result at this look.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = SequentialTest)]
pub struct SequentialOut {
    /// The always-valid p-value.
    pub always_valid_p: f64,
    /// The confidence sequence's lower end.
    pub cs_low: f64,
    /// Its upper end.
    pub cs_high: f64,
    /// `always_valid_p ≤ α`.
    pub significant: bool,
}
