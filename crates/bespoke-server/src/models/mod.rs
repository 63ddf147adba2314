//! Trained models: their files ([`artifact`]), how they are trained from the store
//! ([`training`]) and how they serve ([`serving`]).

pub mod als;
pub mod artifact;
pub mod bpr;
pub mod content;
pub mod ease;
pub mod knn;
pub mod meta;
pub mod model;
pub mod registry;
pub mod serving;
pub mod snapshot;
pub mod training;
pub mod tuning;
pub mod views;

use bespoke_store::Store;

pub use meta::{META_VERSION, ModelMeta};
pub use registry::{REGISTRY, family};
pub use serving::{LoadError, ServingModel};
pub use snapshot::{Progress, Snapshot};
pub use training::Trained;

/// Saves a training run as a new model version; returns the version.
pub fn save(
    store: &dyn Store,
    snapshot: &Snapshot,
    trained: &Trained,
) -> bespoke_store::Result<u64> {
    let users = artifact::encode_keys(&snapshot.user_keys);
    let items = artifact::encode_keys(&snapshot.item_keys);
    let mut owned: Vec<(&str, Vec<u8>)> =
        vec![(artifact::USERS_FILE, users), (artifact::ITEMS_FILE, items)];
    for model in trained.models.values() {
        owned.extend(model.encode());
    }
    if let Some(c) = &trained.content {
        owned.push((content::CONTENT_FILE, c.encode()));
    }
    let files: Vec<(&str, &[u8])> = owned.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    // A file that does not say which of its rows are users could not be erased from.
    artifact::check_user_rows(&files, snapshot.user_keys.len())
        .map_err(|e| bespoke_store::Error::Corrupt(e.to_string()))?;
    store.save_model(&files, &trained.meta.to_value())
}
