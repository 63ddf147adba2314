//! Erasure that reaches the model, with a receipt.
//!
//! Deleting a user removes their profile, events and everything serving derived from them at
//! once (see [`Engine::delete_user`]). What trained models learned from them goes in three steps:
//! 1. at once, every stored model version that has a row for the user gets its key blanked
//!    (`users.json`) and that row zeroed in every tensor that a file of the version declares as
//!    user rows (see [`crate::models::artifact`]), so no file names them or holds their vector;
//! 2. the next model trained from a snapshot read after the erasure cannot contain them (the
//!    snapshot reads the store, which no longer holds them); when such a model becomes active,
//!    the receipt records it, and the older versions that were trained with the user are deleted;
//! 3. a training run already in progress when the erasure arrived read its snapshot earlier, so
//!    the version it saves is scrubbed as in step 1 before it can be activated.
//!
//! The receipt is stored (`GET /v1/erasures/{id}`) and names the user only by
//! [`super::Access::user_ref`].
//!
//! On disk, the store overwrites deleted rows as it deletes them and the erasure then empties
//! the WAL ([`bespoke_store::PrivacyStore::purge_deleted`]); the model files are rewritten whole (by
//! rename), so no file in the data directory keeps the user's key or attributes.
//!
//! With `retrain=true`, erasures share training runs: see [`Engine::retrain_after`].

use bespoke_store::Millis;
use serde::{Deserialize, Serialize};

use super::{Engine, TrainError};
use crate::models::artifact::{self, ITEMS_FILE, USERS_FILE};

/// An erasure receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasureReceipt {
    /// Id of the receipt (`era_` and 24 hex digits).
    pub erasure_id: String,
    /// The user, as the audit log names them (a keyed hash of the key).
    pub user_ref: String,
    /// Key prefix of whoever asked.
    pub requested_by: String,
    /// When the user was removed from the store and from serving (RFC 3339).
    #[schema(format = DateTime)]
    pub requested_at: String,
    /// `requested_at` in Unix milliseconds.
    #[schema(value_type = i64)]
    pub requested_at_ms: Millis,
    /// What was removed at once.
    pub removed: Removed,
    /// Stored model versions that had been trained with the user's data.
    pub models_containing_user: Vec<u64>,
    /// Versions whose user row was zeroed and key blanked.
    pub model_rows_scrubbed: Vec<u64>,
    /// Versions deleted once a model without the user was active.
    pub model_versions_deleted: Vec<u64>,
    /// Whether a retraining was requested with the erasure.
    pub retrain_requested: bool,
    /// The first model trained without the user that became active.
    pub first_model_without_user: Option<CleanModel>,
    /// `complete` once no stored or served model was trained with the user's data;
    /// `awaiting_retrain` before.
    #[schema(inline, value_type = ErasureStatus)]
    pub status: String,
}

/// The state of an erasure.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum ErasureStatus {
    Complete,
    AwaitingRetrain,
}

/// What an erasure removed at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Removed {
    /// The profile (attributes, consent).
    pub profile: bool,
    /// Number of events.
    pub events: u64,
    /// Derived serving state that was cleared.
    pub serving_state: Vec<String>,
    /// Logged decisions of decision loops (with their rewards).
    #[serde(default)]
    pub decisions: u64,
    /// Decision loops whose learner was rebuilt from its log without the user.
    #[serde(default)]
    pub decision_loops_rebuilt: Vec<String>,
}

/// A model version trained without the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CleanModel {
    /// The version.
    pub version: u64,
    /// When it became active (RFC 3339).
    #[schema(format = DateTime)]
    pub activated_at: String,
}

const COMPLETE: &str = "complete";
const AWAITING: &str = "awaiting_retrain";

/// An erasure whose receipt is not complete yet.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    id: String,
    requested_at: Millis,
    /// The user's store key, kept only while a training run that may hold them is in progress.
    key: Option<String>,
}

/// Erasures awaiting a clean model.
#[derive(Debug, Default)]
pub(crate) struct Erasures {
    pending: Vec<Pending>,
    /// Receipts already known here (on a shared store, those another node writes are news).
    seen: std::collections::HashSet<String>,
}

/// Why an erasure failed.
pub(super) type EraseError = TrainError;

impl Engine {
    /// Adds incomplete receipts written by other nodes to the pending ones (without their
    /// keys), so that an activation here completes them too; rebuilds the decision loops
    /// whose learners the erased users' decisions reached (their logs no longer hold them).
    pub(super) fn merge_pending_erasures(&self) -> bespoke_store::Result<()> {
        let stored = self.store.erasures()?;
        let mut rebuild = Vec::new();
        {
            let mut erasures = self.erasures.lock();
            for (id, receipt) in stored {
                let r: ErasureReceipt = serde_json::from_value(receipt)
                    .map_err(|e| bespoke_store::Error::Corrupt(format!("erasure {id}: {e}")))?;
                if r.status != COMPLETE && erasures.pending.iter().all(|p| p.id != id) {
                    erasures.pending.push(Pending {
                        id: id.clone(),
                        requested_at: r.requested_at_ms,
                        key: None,
                    });
                }
                if erasures.seen.insert(id) {
                    rebuild.extend(r.removed.decision_loops_rebuilt);
                }
            }
        }
        rebuild.sort();
        rebuild.dedup();
        for name in rebuild {
            self.decisions.rebuild(&name).map_err(|e| match e {
                crate::decisions::DecisionError::Store(e) => e,
                other => bespoke_store::Error::Corrupt(other.to_string()),
            })?;
        }
        Ok(())
    }

    /// After another node activated `version`: scrubs it of the users this node erased while
    /// a run may have held them, and completes the erasures its snapshot postdates.
    pub(super) fn after_foreign_activation(&self, version: u64) -> bespoke_store::Result<()> {
        let Some(record) = self
            .store
            .list_models()?
            .into_iter()
            .find(|m| m.version == version)
        else {
            return Ok(());
        };
        {
            let erasures = self.erasures.lock();
            for p in &erasures.pending {
                let Some(key) = &p.key else { continue };
                if scrub(&*self.store, &record, key)?
                    && let Some(mut r) = self.erasure(&p.id)?
                    && !r.model_rows_scrubbed.contains(&version)
                {
                    r.models_containing_user.push(version);
                    r.model_rows_scrubbed.push(version);
                    self.save_receipt(&r)?;
                }
            }
        }
        if let Some(at) = record.meta["data"]["snapshot_at_ms"].as_i64() {
            self.complete_erasures(version, at)?;
        }
        Ok(())
    }

    /// Loads incomplete receipts at start-up (no training is running, so no key is needed).
    pub(super) fn load_pending_erasures(&self) -> bespoke_store::Result<()> {
        let mut pending = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (id, receipt) in self.store.erasures()? {
            let r: ErasureReceipt = serde_json::from_value(receipt)
                .map_err(|e| bespoke_store::Error::Corrupt(format!("erasure {id}: {e}")))?;
            if r.status != COMPLETE {
                pending.push(Pending {
                    id: id.clone(),
                    requested_at: r.requested_at_ms,
                    key: None,
                });
            }
            seen.insert(id);
        }
        let mut erasures = self.erasures.lock();
        erasures.pending = pending;
        erasures.seen = seen;
        Ok(())
    }

    /// Erases a user (see the module docs) and returns the receipt; `None` if there is no such
    /// user. With `retrain`, trains a model without them at once (waiting for a run in
    /// progress) and returns the receipt with that model recorded.
    pub fn erase_user(
        &self,
        actor: &str,
        key: &str,
        retrain: bool,
    ) -> Result<Option<ErasureReceipt>, EraseError> {
        let stored_key = self.serving.user_keys.to_store(key).into_owned();
        let (decisions, loops_rebuilt) =
            self.decisions
                .erase_user(&stored_key)
                .map_err(|e| match e {
                    crate::decisions::DecisionError::Store(e) => TrainError::Store(e),
                    other => TrainError::Store(bespoke_store::Error::Corrupt(other.to_string())),
                })?;
        let deleted = match self.delete_user(key)? {
            Some(d) => d,
            // Someone known only from decisions (decisions do not create users).
            None if decisions > 0 => bespoke_store::Deleted {
                idx: u32::MAX,
                events: 0,
            },
            None => return Ok(None),
        };
        // Runs numbered above this one start after the deletion, so their snapshots cannot
        // hold the user.
        let runs_before = self.training.runs_started();
        let profile = deleted.idx != u32::MAX;
        let requested_at = super::now_ms();
        let id = format!(
            "era_{}",
            crate::auth::random_bytes()?[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let user_ref = self.access.user_ref(key);
        let receipt = {
            // Held while scrubbing, so that a training run saving a version right now either
            // saved it before (and it is scrubbed here) or sees this erasure (and scrubs it).
            let mut erasures = self.erasures.lock();
            let mut containing = Vec::new();
            let stored = self.serving.user_keys.to_store(key).into_owned();
            for m in self.store.list_models()? {
                if scrub(&*self.store, &m, &stored)? {
                    containing.push(m.version);
                }
            }
            // A run in progress (here or on another node) may have read the user before the
            // deletion committed.
            let in_flight = self.training.lock.is_locked() || self.training_elsewhere();
            let receipt = ErasureReceipt {
                erasure_id: id.clone(),
                user_ref: user_ref.clone(),
                requested_by: actor.to_owned(),
                requested_at: crate::time::format_rfc3339(requested_at),
                requested_at_ms: requested_at,
                removed: Removed {
                    profile,
                    events: deleted.events,
                    decisions,
                    decision_loops_rebuilt: loops_rebuilt,
                    serving_state: [
                        "history",
                        "popularity and trending",
                        "co-occurrence",
                        "cached user vectors",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                },
                models_containing_user: containing.clone(),
                model_rows_scrubbed: containing.clone(),
                model_versions_deleted: Vec::new(),
                retrain_requested: retrain,
                first_model_without_user: None,
                status: if containing.is_empty() && !in_flight {
                    COMPLETE
                } else {
                    AWAITING
                }
                .to_owned(),
            };
            if receipt.status != COMPLETE {
                erasures.pending.push(Pending {
                    id: id.clone(),
                    requested_at,
                    key: in_flight.then_some(stored),
                });
            }
            self.save_receipt(&receipt)?;
            erasures.seen.insert(id.clone());
            receipt
        };
        self.access.audit(
            actor,
            "user.erase",
            Some(&user_ref),
            Some(serde_json::json!({ "erasure_id": id, "events": deleted.events, "retrain": retrain })),
        );
        // The deleted rows are overwritten already (`secure_delete`); this empties the WAL,
        // which still holds their older page images. The erasure itself is done: a purge that
        // stays busy is retried by the store in the background, and is not an error here.
        if let Err(e) = self.store.purge_deleted() {
            tracing::warn!(target: "serve::privacy", error = %e, erasure = %id, "could not purge deleted rows from the store's files yet");
        }
        if retrain && receipt.status != COMPLETE {
            self.retrain_after(actor, runs_before, &id)?;
            return Ok(self.erasure(&id)?);
        }
        Ok(Some(receipt))
    }

    /// `retrain=true`: makes sure a run that started after the erasure (numbered above
    /// `runs_before`) saves a version, starting one only if none is in progress or queued.
    ///
    /// Erasures coalesce: while a run is in progress, every erasure waits for it; when it ends,
    /// the erasures it covers are done, and of the others, the first to ask starts the one
    /// queued run, which covers them all, since each of them was erased before it started. So
    /// a burst of erasures costs at most one run after the one in progress, and a `write` key
    /// never runs two trainings at once. Whether the receipt is then `complete` is decided
    /// as for any run (the new model must be active, see [`Engine::activate`]).
    fn retrain_after(&self, actor: &str, runs_before: u64, id: &str) -> Result<(), EraseError> {
        loop {
            if self.erasure(id)?.is_some_and(|r| r.status == COMPLETE) {
                return Ok(());
            }
            match self.train_after(actor, runs_before) {
                Ok(_) | Err(TrainError::NoData) => return Ok(()),
                Err(TrainError::Busy) => {
                    if self.training.wait_for_run_after(runs_before) {
                        return Ok(());
                    }
                    // The run in progress started before the erasure (or is only starting):
                    // ask again once it ended. A run on another node is not waited for here:
                    // ask again after a pause.
                    if self.training.lock.is_locked() {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A stored receipt.
    pub fn erasure(&self, id: &str) -> bespoke_store::Result<Option<ErasureReceipt>> {
        self.store
            .erasure(id)?
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| bespoke_store::Error::Corrupt(format!("erasure {id}: {e}")))
            })
            .transpose()
    }

    fn save_receipt(&self, r: &ErasureReceipt) -> bespoke_store::Result<()> {
        let value = serde_json::to_value(r).expect("receipts serialise");
        self.store
            .save_erasure(&r.erasure_id, r.requested_at_ms, &value)
    }

    /// After a training run saved `version` from a snapshot read at `snapshot_at`: scrubs it of
    /// users erased while the run was reading or training.
    pub(super) fn scrub_new_version(
        &self,
        version: u64,
        snapshot_at: Millis,
    ) -> bespoke_store::Result<()> {
        let erasures = self.erasures.lock();
        if erasures.pending.iter().all(|p| p.key.is_none()) {
            return Ok(());
        }
        let Some(record) = self
            .store
            .list_models()?
            .into_iter()
            .find(|m| m.version == version)
        else {
            return Ok(());
        };
        for p in &erasures.pending {
            let Some(key) = &p.key else { continue };
            if p.requested_at >= snapshot_at
                && scrub(&*self.store, &record, key)?
                && let Some(mut r) = self.erasure(&p.id)?
            {
                r.models_containing_user.push(version);
                r.model_rows_scrubbed.push(version);
                r.status = AWAITING.to_owned();
                self.save_receipt(&r)?;
            }
        }
        Ok(())
    }

    /// After `version` (read at `snapshot_at`) became active: completes the receipts of users
    /// erased before its snapshot, deleting the versions trained with them.
    pub(super) fn complete_erasures(
        &self,
        version: u64,
        snapshot_at: Millis,
    ) -> bespoke_store::Result<()> {
        let mut erasures = self.erasures.lock();
        let now = crate::time::format_rfc3339(super::now_ms());
        let mut still = Vec::new();
        for p in std::mem::take(&mut erasures.pending) {
            if p.requested_at >= snapshot_at {
                still.push(p);
                continue;
            }
            let Some(mut r) = self.erasure(&p.id)? else {
                continue;
            };
            for &v in &r.models_containing_user {
                if v != version && !r.model_versions_deleted.contains(&v) {
                    match self.store.delete_model(v) {
                        Ok(()) | Err(bespoke_store::Error::UnknownModel(_)) => {
                            r.model_versions_deleted.push(v)
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            r.first_model_without_user = Some(CleanModel {
                version,
                activated_at: now.clone(),
            });
            r.status = COMPLETE.to_owned();
            self.save_receipt(&r)?;
        }
        erasures.pending = still;
        Ok(())
    }

    /// Forgets the keys of pending erasures when a training run ends: runs go one at a time,
    /// and every later run reads a snapshot without these users.
    pub(super) fn release_erasure_keys(&self) {
        // On a shared store another node may be training with them: the keys are kept until
        // the erasures complete ([`Engine::after_foreign_activation`]).
        if self.shared_store() {
            return;
        }
        for p in &mut self.erasures.lock().pending {
            p.key = None;
        }
    }
}

/// Blanks `key` in a stored version's `users.json` and zeroes its row in every tensor that
/// any file of the version declares as user rows; whether the version had the user.
fn scrub(
    store: &dyn bespoke_store::Store,
    record: &bespoke_store::ModelRecord,
    key: &str,
) -> bespoke_store::Result<bool> {
    let corrupt = |e: artifact::ArtifactError| bespoke_store::Error::Corrupt(e.to_string());
    let version = record.version;
    let mut users = match store.read_model_file(version, USERS_FILE) {
        Ok(b) => artifact::decode_keys(&b, USERS_FILE).map_err(corrupt)?,
        Err(bespoke_store::Error::UnknownModel(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let Some(row) = users.iter().position(|k| k == key) else {
        return Ok(false);
    };
    // Every rewrite is computed before any is written, so a malformed file leaves the version
    // as it was rather than half scrubbed.
    let mut rewrites = Vec::new();
    for name in &record.files {
        if name == USERS_FILE || name == ITEMS_FILE {
            continue;
        }
        if !name.ends_with(".safetensors") {
            return Err(bespoke_store::Error::Corrupt(format!(
                "model version {version}: {name} is neither a key list nor a safetensors file, so its user rows cannot be erased"
            )));
        }
        let bytes = store.read_model_file(version, name)?;
        if let Some(scrubbed) = artifact::zero_user_rows(&bytes, name, row).map_err(corrupt)? {
            rewrites.push((name, scrubbed));
        }
    }
    // The key first: if we stop between the writes, what is left are vectors that nothing
    // names, not a name.
    users[row] = String::new();
    store.rewrite_model_file(version, USERS_FILE, &artifact::encode_keys(&users))?;
    for (name, bytes) in rewrites {
        store.rewrite_model_file(version, name, &bytes)?;
    }
    Ok(true)
}
