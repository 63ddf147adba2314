//! Trained models: their files ([`artifact`]), how they are trained from the store
//! ([`training`]) and how they serve ([`serving`]).

pub mod artifact;
pub mod content;
pub mod meta;
pub mod serving;
pub mod training;
pub mod tuning;

use bespoke_store::Store;

pub use meta::{META_VERSION, ModelMeta};
pub use serving::{LoadError, ServingModel};
pub use training::{Progress, Snapshot, Trained};

/// Saves a training run as a new model version; returns the version.
pub fn save(
    store: &dyn Store,
    snapshot: &Snapshot,
    trained: &Trained,
) -> bespoke_store::Result<u64> {
    let als = artifact::encode_als(&trained.als);
    let knn = artifact::encode_knn(&trained.knn);
    let users = artifact::encode_keys(&snapshot.user_keys);
    let items = artifact::encode_keys(&snapshot.item_keys);
    let lambda = trained
        .meta
        .params
        .ease
        .as_ref()
        .map_or(0.0, |e| e.params.lambda);
    let ease = trained
        .ease
        .as_ref()
        .map(|e| artifact::encode_ease(e, lambda));
    let mut files: Vec<(&str, &[u8])> = vec![
        (artifact::ALS_FILE, &als),
        (artifact::KNN_FILE, &knn),
        (artifact::USERS_FILE, &users),
        (artifact::ITEMS_FILE, &items),
    ];
    if let Some(e) = &ease {
        files.push((artifact::EASE_FILE, e));
    }
    let bpr = trained.bpr.as_ref().map(artifact::encode_bpr);
    if let Some(b) = &bpr {
        files.push((artifact::BPR_FILE, b));
    }
    let content = trained.content.as_ref().map(|c| c.encode());
    if let Some(c) = &content {
        files.push((content::CONTENT_FILE, c));
    }
    // A file that does not say which of its rows are users could not be erased from.
    artifact::check_user_rows(&files, snapshot.user_keys.len())
        .map_err(|e| bespoke_store::Error::Corrupt(e.to_string()))?;
    store.save_model(&files, &trained.meta.to_value())
}
