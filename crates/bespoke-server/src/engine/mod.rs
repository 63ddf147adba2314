//! The engine: the store joined to the parts that answer from it, each with one job.
//!
//! | part | where | job |
//! |---|---|---|
//! | ingestion | `ingest.rs` (on this type) | events, users and items: store first, then memory |
//! | serving | [`Serving`] ([`crate::state`], read path in [`crate::pipeline`]) | rank from memory |
//! | training and lifecycle | `lifecycle.rs` | train, tune, activate and roll back models |
//! | privacy | `erasure.rs`, `privacy.rs` | erasure down to the model, export, retention |
//! | access control | [`Access`] (`access.rs`) | API keys, rate limits, the audit log |
//! | decisions | [`crate::decisions::Loops`] | contextual bandits |
//! | audiences and segments | `audience.rs`, `segments.rs` | users for items; rule and learned segments, their members, scheduled exports |
//! | experiments | `experiments.rs` | variants laid over ranking requests, exposures, interleaving, the report |
//!
//! `Engine` owns one of each and coordinates what spans them (a deletion reaches the store,
//! memory and the served model; an erasure waits for a retraining). The parts do not know the
//! engine: the pipeline reads [`Serving`], decisions their own store, so the module graph has
//! no circle (ARCHITECTURE.md draws it).
//!
//! Every write goes to the store first and is applied to memory only after it committed, so
//! memory never shows what the store does not hold. Memory is rebuilt from the store at start-up.
//!
//! Ordering: concurrent requests may apply to memory in a different order than they committed.
//! Two rules keep memory exact anyway. (1) Ids are never reused, so an event whose user or item
//! has been deleted (a tombstoned id) is known to be gone from the store and is never applied.
//! (2) Profile and catalog changes (`put_*`, `delete_*`) are serialised by the `admin` lock; an
//! event that created a user or item registers it only if no profile change got there first, and
//! only if no newer incarnation of the key (a larger id) is already registered.
//!
//! All methods block (store IO, CPU-bound scoring); async callers use `spawn_blocking`.

use std::sync::Arc;

use bespoke_algo::UserIdx;
use bespoke_store::Store;
use parking_lot::Mutex;
use serde::Serialize;

use crate::decisions::{DecisionError, Loops};
use crate::settings::Settings;
pub use crate::state::Serving;
pub use crate::time::now_ms;
pub use crate::weights::Weights;

mod access;
mod audience;
mod cluster;
mod device;
mod erasure;
mod experiments;
mod fairness;
pub mod federated;
mod ingest;
mod lifecycle;
mod privacy;
mod rules;
mod segments;
mod serve;

pub use access::Access;
pub use audience::{
    Audience, AudienceError, AudienceQuery, AudienceUser, Excluded, MAX_AUDIENCE_ITEMS, Size,
};
pub use cluster::ClusterStatus;
pub use device::DeviceBundle;
pub use erasure::{CleanModel, ErasureReceipt, Removed};
pub use experiments::{
    Assigned, Comparison, Experiment, ExperimentError, ExperimentReport, ExperimentRoute,
    ExperimentSpec, InterleavePlan, InterleavingOut, MetricResult, MetricSpec,
    Mode as ExperimentMode, Served, Status as ExperimentStatus, VariantConfig, VariantSpec,
};
pub use fairness::{LiveReport, ReportError, ReportOptions};
pub use lifecycle::{TrainError, TrainOutcome, TrainingStatus};
pub use rules::{HiddenItem, RuleError};
pub use segments::{
    AttributeLift, CategoryLift, ClusterSummary, ExportIn, ExportRecord, ExportSpec,
    MAX_MEMBERS_PAGE, MemberFormat, MemberPage, PutSegment, RefreshFailure, ScheduledRun, Segment,
    SegmentError, SegmentExcluded, SegmentIn, SegmentKind, SegmentMember, SegmentRefresh,
    SegmentSpec, SizePoint, UserSegment,
};

/// Chunk size when loading the event log at start-up.
const LOAD_CHUNK: usize = 100_000;

pub use crate::pipeline::{
    Contribution, PopularQuery, PopularSort, Reason, RecommendQuery, Recommendation,
    Recommendations,
};

/// Counts for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineCounts {
    /// Users known to serving.
    pub users: u64,
    /// Items known to serving.
    pub items: u64,
    /// Events applied to serving.
    pub events: u64,
}

/// Why the engine could not open a store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store failed or refused (wrong pseudonymization key, corrupt data).
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
    /// The decision loops could not be restored (an invalid stored configuration or
    /// checkpoint).
    #[error("restoring the decision loops: {0}")]
    Decisions(DecisionError),
}

impl From<DecisionError> for OpenError {
    fn from(e: DecisionError) -> Self {
        match e {
            DecisionError::Store(e) => Self::Store(e),
            other => Self::Decisions(other),
        }
    }
}

/// The store and the parts that answer from it.
pub struct Engine {
    store: Arc<dyn Store>,
    pub(crate) settings: Arc<Settings>,
    weights: Weights,
    /// Serialises profile and catalog changes (see the module docs).
    admin: Mutex<()>,
    /// Serving: memory state and the served model.
    pub(crate) serving: Serving,
    /// Training and model lifecycle.
    training: lifecycle::TrainingState,
    /// Access control.
    access: Access,
    /// Privacy: erasures in progress.
    erasures: Mutex<erasure::Erasures>,
    /// Decision loops (contextual bandits).
    decisions: Loops,
    /// Running experiments and their buffered exposures.
    experiments: experiments::Experiments,
    /// Segment refreshes in progress and the lock on their stored status.
    segments: segments::Segments,
    /// Following other nodes' writes to a shared store, and leading them.
    cluster: cluster::Cluster,
    /// The key device bundles are signed with, read from the store on first use.
    device_key: std::sync::OnceLock<ed25519_dalek::SigningKey>,
    /// The federated training run, in memory only: a restart ends it.
    federated: federated::Federated,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the serving state from everything in `store`.
    pub fn open(store: Arc<dyn Store>, settings: Arc<Settings>) -> Result<Self, OpenError> {
        let started = std::time::Instant::now();
        let weights = Weights::new(&settings);
        let serving = Serving::new(settings.clone());
        // Before the state is read, so that no change another node commits meanwhile is missed
        // (one heard twice is applied twice to the same effect).
        let feed = store.changes()?.map(Arc::new);
        let mut state = serving.state.write();
        let loaded = load_state(&*store, &settings, &weights, &mut state)?;
        tracing::info!(
            users = state.users.len(),
            items = state.items.len(),
            events = state.live.events(),
            skipped_events = loaded.skipped,
            blocks = loaded.blocks,
            shared_store = feed.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded serving state"
        );
        drop(state);
        crate::privacy::check_store(&*store, &serving.user_keys)?;
        // After the checks that may refuse the store, so that a refused start creates no file.
        let audit_secret = crate::privacy::audit_key(&settings, &*store)?;
        let decisions = Loops::open(store.clone(), settings.decisions.checkpoint_every)?
            .with_limits(crate::decisions::LoopLimits::from_settings(
                &settings.decisions,
            ));
        let engine = Self {
            access: Access::new(store.clone(), settings.clone(), audit_secret),
            store,
            settings,
            weights,
            admin: Mutex::new(()),
            serving,
            training: lifecycle::TrainingState::default(),
            erasures: Mutex::default(),
            decisions,
            experiments: experiments::Experiments::default(),
            segments: segments::Segments::default(),
            cluster: cluster::Cluster::new(feed, loaded.last_seq),
            device_key: std::sync::OnceLock::new(),
            federated: federated::Federated::default(),
        };
        engine.access.refresh_keys()?;
        engine.reload_rules()?;
        engine.load_pending_erasures()?;
        engine.load_active_model();
        engine.reload_experiments()?;
        Ok(engine)
    }
}

/// What [`load_state`] read.
struct Loaded {
    /// The sequence number of the last event read (0: none).
    last_seq: u64,
    /// Events of types no longer configured.
    skipped: u64,
    /// Stored blocks.
    blocks: u64,
}

/// Fills an empty `state` with everything in `store`.
fn load_state(
    store: &dyn Store,
    settings: &Settings,
    weights: &Weights,
    state: &mut crate::state::State,
) -> bespoke_store::Result<Loaded> {
    let mut after = None;
    loop {
        let users = store.scan_users(after, LOAD_CHUNK)?;
        let Some(last) = users.last() else { break };
        after = Some(last.idx);
        for u in &users {
            state.users.insert(&u.key, u.idx.0);
            state.set_personalization(u.idx, u.consent.personalization);
            if !u.consent.marketing {
                state.no_marketing.insert(u.idx.0);
            }
            if !u.consent.training {
                state.live.set_private(u.idx, true);
            }
        }
    }
    let mut after = None;
    loop {
        let items = store.scan_items(after, LOAD_CHUNK)?;
        let Some(last) = items.last() else { break };
        after = Some(last.idx);
        for it in &items {
            state.set_item(it);
        }
    }
    let mut seq = 0;
    let mut skipped = 0u64;
    loop {
        let chunk = store.scan_interactions(seq, LOAD_CHUNK)?;
        let Some(last) = chunk.last() else { break };
        seq = last.seq;
        for e in &chunk {
            state.apply_signal(settings, &e.kind, e.user, e.item, e.timestamp);
            match weights.weight(&e.kind, e.value) {
                Some(w) if w.is_finite() => state.live.apply(e.user, e.item, w, e.timestamp),
                // Impressions are not feedback.
                _ if e.kind == crate::settings::IMPRESSION => {}
                // A type removed from the configuration since the event was stored.
                _ => skipped += 1,
            }
        }
    }
    let blocks = rules::load_blocks(store, state)?;
    Ok(Loaded {
        last_seq: seq,
        skipped,
        blocks,
    })
}

impl Engine {
    /// The serving part: the pipeline's entry points.
    pub fn serving(&self) -> &Serving {
        &self.serving
    }

    /// The access-control part: keys, rate limits, the audit log.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The settings the engine runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The event-type weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The decision loops.
    pub fn decisions(&self) -> &crate::decisions::Loops {
        &self.decisions
    }

    /// A user's consent as it bears on a decision: the configured defaults for an unknown
    /// user; and the key under which the store holds the user.
    pub fn decision_user(&self, key: &str) -> (String, crate::decisions::DecisionConsent) {
        let stored = self.serving.user_keys.to_store(key).into_owned();
        let s = self.serving.state.read();
        let consent = match s.users.get(&stored) {
            Some(idx) => crate::decisions::DecisionConsent {
                personalization: s.personalization.get(idx as usize).copied().unwrap_or(true),
                training: !s.live.is_private(UserIdx(idx)),
            },
            None => {
                let d = self.settings.consent.defaults();
                crate::decisions::DecisionConsent {
                    personalization: d.personalization,
                    training: d.training,
                }
            }
        };
        (stored, consent)
    }

    /// Counts for monitoring.
    pub fn counts(&self) -> EngineCounts {
        let s = self.serving.state.read();
        EngineCounts {
            users: s.users.len() as u64,
            items: s.items.len() as u64,
            events: s.live.events(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bespoke_store::{NewEvent, UserUpsert};
    use bespoke_store::{SqliteStore, StoreOptions};

    fn engine(dir: &std::path::Path) -> Engine {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir, StoreOptions::default()).unwrap());
        let mut settings = Settings::default();
        settings.store.data_dir = dir.to_owned();
        settings.privacy.audit_secret =
            crate::settings::Secret("unit tests' audit key, 32 bytes or more".into());
        Engine::open(store, Arc::new(settings)).unwrap()
    }

    /// A user's key and history as `(item key, weight, count)`.
    type UserView = (String, Vec<(String, f32, u32)>);

    /// Everything serving knows, in a comparable form.
    fn snapshot(e: &Engine) -> (EngineCounts, Vec<UserView>, Vec<String>) {
        let s = e.serving.state.read();
        let mut users: Vec<UserView> = s
            .users
            .iter()
            .map(|(idx, key)| {
                let history = s
                    .live
                    .history(UserIdx(idx))
                    .iter()
                    .map(|x| (s.item_key(x.item), x.weight, x.count))
                    .collect();
                (key.to_owned(), history)
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        drop(s);
        let popular = e
            .popular(&PopularQuery {
                n: 1000,
                categories: Vec::new(),
                window: None,
                sort: PopularSort::Count,
            })
            .into_iter()
            .map(|r| format!("{}={}", r.item, r.score))
            .collect();
        (e.counts(), users, popular)
    }

    /// Ingests and erasures racing each other leave memory exactly as a rebuild from the store.
    #[test]
    fn concurrent_ingest_and_erasure_match_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(engine(dir.path()));
        std::thread::scope(|scope| {
            for t in 0..4 {
                let live = live.clone();
                scope.spawn(move || {
                    for round in 0..30 {
                        let events = (0..5)
                            .map(|i| {
                                NewEvent::new(
                                    format!("u{}", (t + round + i) % 6),
                                    format!("i{}", (round * i) % 7),
                                    "click",
                                )
                            })
                            .collect();
                        live.ingest(events).unwrap();
                    }
                });
            }
            let live = live.clone();
            scope.spawn(move || {
                for round in 0..30 {
                    live.delete_user(&format!("u{}", round % 6)).unwrap();
                    if round % 10 == 0 {
                        live.delete_item(&format!("i{}", round % 7)).unwrap();
                    }
                }
            });
        });
        let rebuilt = engine(dir.path());
        assert_eq!(snapshot(&live), snapshot(&rebuilt));
    }

    #[test]
    fn profile_changes_win_over_users_created_by_events() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        e.put_user(UserUpsert {
            key: "quiet".into(),
            attributes: Default::default(),
            consent: bespoke_store::ConsentUpdate {
                personalization: Some(false),
                training: None,
                marketing: None,
            },
            default_consent: bespoke_store::Consent::ALL,
            restore_times: None,
        })
        .unwrap();
        e.ingest(vec![NewEvent::new("quiet", "i", "view")]).unwrap();
        let q = RecommendQuery {
            n: 5,
            ..Default::default()
        };
        assert!(!e.recommend("quiet", &q).personalized);
        assert!(
            e.recommend("someone-else", &q)
                .items
                .iter()
                .all(|r| r.reasons.iter().any(|x| x.kind() == "fallback"))
        );
    }
}
