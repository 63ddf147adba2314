//! The model lifecycle: training (on demand and in the background), saving, activating, and
//! swapping the served model without interrupting requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bespoke_store::ModelRecord;
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde_json::Value;

use super::Engine;
use crate::models::{self, LoadError, Progress, ServingModel, Snapshot};

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Another training run is in progress.
    #[error("a training run is already in progress")]
    Busy,
    /// There is nothing to train on.
    #[error("no events to train on yet")]
    NoData,
    /// Reading or saving failed.
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
    /// The saved model could not be loaded back.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The worker threads could not start.
    #[error("starting training threads: {0}")]
    Threads(String),
    /// Tuning failed.
    #[error("tuning: {0}")]
    Tune(#[from] bespoke_algo::tune::TuneError),
}

/// The result of a training run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrainOutcome {
    /// The new version.
    pub version: u64,
    /// Whether it is now served.
    pub activated: bool,
    /// Its metadata: training time, data counts, offline metrics, the tuning's choice.
    #[schema(value_type = Object)]
    pub meta: Value,
}

/// What the trainer is doing, for `GET /v1/models`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct TrainingStatus {
    /// A run is in progress.
    pub running: bool,
    /// Its current stage.
    pub stage: Option<String>,
    /// When the last run finished, and how.
    pub last_finished_at: Option<String>,
    /// The last run's error, if it failed.
    pub last_error: Option<String>,
    /// Events stored since the last successful run started.
    pub events_since_last_training: u64,
}

/// Trainer state shared by the API, the CLI and the background scheduler.
#[derive(Debug, Default)]
pub(crate) struct TrainingState {
    pub(super) lock: Mutex<()>,
    status: Mutex<TrainingStatus>,
    new_events: AtomicU64,
    /// Runs started and ended, so that a caller can wait for a run that started after a given
    /// point instead of starting one of its own (erasures with `retrain=true` coalesce).
    runs: Mutex<Runs>,
    run_ended: Condvar,
}

/// Training runs, numbered from 1 in the order they start.
#[derive(Debug, Default, Clone, Copy)]
struct Runs {
    /// Number of the last run started.
    started: u64,
    /// Whether a run is in progress.
    running: bool,
    /// Number of the last run that ended with a saved version (0: none).
    last_saved: u64,
}

impl TrainingState {
    pub(crate) fn count_events(&self, n: u64) {
        self.new_events.fetch_add(n, Ordering::Relaxed);
    }

    /// Number of the last run started: a run with a greater number starts later, so it reads a
    /// snapshot of the store taken after this call.
    pub(super) fn runs_started(&self) -> u64 {
        self.runs.lock().started
    }

    /// Waits until no run is in progress or a run numbered above `after` saved a version;
    /// whether one did.
    pub(super) fn wait_for_run_after(&self, after: u64) -> bool {
        let mut runs = self.runs.lock();
        while runs.running && runs.last_saved <= after {
            self.run_ended.wait(&mut runs);
        }
        runs.last_saved > after
    }
}

impl Engine {
    /// Loads the active model version at start-up, if there is one. A model that cannot be
    /// loaded is logged and skipped: serving falls back to popularity rather than not starting.
    pub(super) fn load_active_model(&self) {
        match self.store.active_model() {
            Ok(Some(v)) => match self.load_model(v) {
                Ok(m) => {
                    tracing::info!(version = v, "serving model");
                    self.serving.model.store(Some(Arc::new(m)));
                }
                Err(e) => {
                    tracing::error!(version = v, error = %e, "could not load the active model")
                }
            },
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "could not read the active model version"),
        }
    }

    pub(super) fn load_model(&self, version: u64) -> Result<ServingModel, LoadError> {
        crate::models::views::set_ann_min_items(self.settings.serving.ann_min_items);
        // Reading the files happens outside the state lock; only the key mapping needs it.
        let store = self.store.clone();
        let s = self.serving.state.read();
        ServingModel::load(
            &*store,
            version,
            self.settings.serving.user_cache,
            |key| s.items.get(key),
            |key| s.users.get(key),
        )
    }

    /// The model being served.
    pub fn model(&self) -> Option<Arc<ServingModel>> {
        self.serving.model.load_full()
    }

    /// Every stored model version.
    pub fn models(&self) -> bespoke_store::Result<Vec<ModelRecord>> {
        self.store.list_models()
    }

    /// What the trainer is doing.
    pub fn training_status(&self) -> TrainingStatus {
        let mut s = self.training.status.lock().clone();
        s.events_since_last_training = self.training.new_events.load(Ordering::Relaxed);
        s
    }

    /// Serves `version` from now on (and records it as active). Requests in flight finish on
    /// the model they started with.
    pub fn activate(&self, version: u64) -> Result<(), LoadError> {
        let model = Arc::new(self.load_model(version)?);
        self.store.activate_model(version)?;
        self.serving.model.store(Some(model.clone()));
        // Items written while the model loaded were placed on the previous one: place the
        // catalog's new items again, now that writes reach this model.
        model.place_cold_items(&*self.store)?;
        tracing::info!(target: "train::lifecycle", version, "activated model");
        // Erasures from before this model's snapshot are now complete.
        let snapshot_at = self
            .store
            .list_models()?
            .into_iter()
            .find(|m| m.version == version)
            .and_then(|m| m.meta["data"]["snapshot_at_ms"].as_i64());
        if let Some(at) = snapshot_at {
            self.complete_erasures(version, at)?;
        }
        Ok(())
    }

    /// Whether the background scheduler should train now: no model yet (with
    /// `train_on_start`), enough new events, or the interval has passed since `last`; never
    /// within `min_gap_minutes` of `last`.
    pub fn training_due(&self, last: Option<Instant>) -> bool {
        let t = &self.settings.training;
        let events = self.training.new_events.load(Ordering::Relaxed);
        if self.serving.model.load().is_none() {
            return t.train_on_start && self.counts().events > 0 && last.is_none();
        }
        if last.is_some_and(|l| l.elapsed().as_secs() < t.min_gap_minutes * 60) {
            return false;
        }
        (t.min_new_events > 0 && events >= t.min_new_events)
            || (t.interval_minutes > 0
                && events > 0
                && last.is_none_or(|l| l.elapsed().as_secs() >= t.interval_minutes * 60))
    }

    /// Trains new models from everything stored, saves them as a new version, prunes old
    /// versions and (with `training.auto_activate`) serves the new one. One run at a time.
    pub fn train(
        &self,
        progress: impl FnMut(Progress<'_>) + Send,
    ) -> Result<TrainOutcome, TrainError> {
        self.train_by("trainer", progress)
    }

    /// [`Engine::train`] on behalf of `actor` (a key prefix, `cli`, `trainer`), who is named in
    /// the audit log.
    pub fn train_by(
        &self,
        actor: &str,
        progress: impl FnMut(Progress<'_>) + Send,
    ) -> Result<TrainOutcome, TrainError> {
        self.train_with(actor, None, None, progress)
            .map(|run| run.expect("an unconditional run always trains"))
    }

    /// Tunes model types and hyperparameters (`budget` configurations, see
    /// [`crate::models::tuning`]) on everything stored, then trains with the result, which the
    /// new version records and later trainings reuse.
    pub fn tune_by(
        &self,
        actor: &str,
        budget: usize,
        progress: impl FnMut(Progress<'_>) + Send,
    ) -> Result<TrainOutcome, TrainError> {
        self.train_with(actor, Some(budget), None, progress)
            .map(|run| run.expect("an unconditional run always trains"))
    }

    /// Whether the scheduler should tune now (`training.tune_interval_hours`): a model is
    /// served and it was never tuned, or its tuning (here, or recorded in the served version
    /// before a restart) is at least the interval old.
    pub fn tuning_due(&self, last: Option<Instant>) -> bool {
        let hours = self.settings.training.tune_interval_hours;
        let Some(model) = self.serving.model.load_full().filter(|_| hours > 0.0) else {
            return false;
        };
        let interval_ms = hours * 3_600_000.0;
        match last {
            Some(l) => l.elapsed().as_secs_f64() * 1000.0 >= interval_ms,
            None => match &model.meta.tuning {
                None => true,
                Some(t) => crate::time::parse_rfc3339(&t.tuned_at)
                    .ok()
                    .is_none_or(|at| (crate::time::now_ms() - at) as f64 >= interval_ms),
            },
        }
    }

    /// Trains for an erasure with `retrain=true` that came after run number `after` started:
    /// `None` when a later run has saved a version already, which covers it (see
    /// [`Engine::retrain_after`]).
    pub(super) fn train_after(
        &self,
        actor: &str,
        after: u64,
    ) -> Result<Option<TrainOutcome>, TrainError> {
        self.train_with(actor, None, Some(after), |_| {})
    }

    fn train_with(
        &self,
        actor: &str,
        tune: Option<usize>,
        unless_saved_after: Option<u64>,
        mut progress: impl FnMut(Progress<'_>) + Send,
    ) -> Result<Option<TrainOutcome>, TrainError> {
        let _running = self.training.lock.try_lock().ok_or(TrainError::Busy)?;
        // One run at a time across the nodes of a shared store too; released with the run.
        let _cluster_lease = if self.shared_store() {
            Some(self.training_lease()?.ok_or(TrainError::Busy)?)
        } else {
            None
        };
        let number = {
            let mut runs = self.training.runs.lock();
            // Checked under the training lock: a run records what it saved before it releases
            // the lock, so no run can end unseen between this check and our start.
            if unless_saved_after.is_some_and(|after| runs.last_saved > after) {
                return Ok(None);
            }
            runs.started += 1;
            runs.running = true;
            runs.started
        };
        let started = Instant::now();
        let new_before = self.training.new_events.load(Ordering::Relaxed);
        {
            let mut st = self.training.status.lock();
            st.running = true;
            st.stage = Some("reading data".into());
        }
        let result = self.train_inner(tune, &mut progress);
        self.release_erasure_keys();
        {
            let mut runs = self.training.runs.lock();
            runs.running = false;
            if result.is_ok() {
                runs.last_saved = number;
            }
        }
        self.training.run_ended.notify_all();
        let mut st = self.training.status.lock();
        st.running = false;
        st.stage = None;
        st.last_finished_at = Some(crate::time::format_rfc3339(super::now_ms()));
        match &result {
            Ok(out) => {
                st.last_error = None;
                // Events that arrived during training count towards the next run.
                self.training
                    .new_events
                    .fetch_sub(new_before, Ordering::Relaxed);
                self.access.audit(
                    actor,
                    if tune.is_some() { "model.tune" } else { "model.train" },
                    Some(&out.version.to_string()),
                    Some(serde_json::json!({ "activated": out.activated, "events": out.meta["data"]["events"],
                                             "serve": out.meta["serve"] })),
                );
                tracing::info!(
                    target: "train::lifecycle",
                    version = out.version,
                    activated = out.activated,
                    seconds = started.elapsed().as_secs_f64(),
                    "trained model"
                );
            }
            Err(e) => st.last_error = Some(e.to_string()),
        }
        result.map(Some)
    }

    fn train_inner(
        &self,
        tune: Option<usize>,
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> Result<TrainOutcome, TrainError> {
        let snapshot = Snapshot::read(&*self.store, &self.settings)?;
        if snapshot.pairs.is_empty() {
            return Err(TrainError::NoData);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.settings.training.threads)
            .thread_name(|i| format!("bespoke-train-{i}"))
            .build()
            .map_err(|e| TrainError::Threads(e.to_string()))?;
        let status = &self.training.status;
        let mut report = |p: Progress<'_>| {
            if let Progress::Stage(stage) = p {
                status.lock().stage = Some(stage.to_owned());
            }
            progress(p)
        };
        // A fresh tuning, else the one the served version recorded (it persists that way).
        let previous = self
            .serving
            .model
            .load_full()
            .and_then(|m| models::meta::Tuned::from_meta(&m.meta));
        let tuned = match tune {
            Some(budget) => pool
                .install(|| models::tuning::tune(&snapshot, &self.settings, budget, &mut report))
                .map_err(TrainError::Tune)?
                .or(previous),
            None => previous,
        };
        let trained = pool.install(|| {
            models::training::train(&snapshot, &self.settings, tuned.as_ref(), &mut report)
        });
        let version = models::save(&*self.store, &snapshot, &trained)?;
        self.scrub_new_version(version, snapshot.read_at)?;
        let activated = self.settings.training.auto_activate;
        if activated {
            self.activate(version)?;
        }
        let removed = self
            .store
            .prune_models(self.settings.training.keep_versions)?;
        if !removed.is_empty() {
            tracing::info!(target: "train::lifecycle", ?removed, "pruned old model versions");
        }
        Ok(TrainOutcome {
            version,
            activated,
            meta: trained.meta.to_value(),
        })
    }
}
