//! A trained model loaded for serving: iALS with exact per-user fold-in and explanations,
//! item-kNN, and the mapping between model rows and the store's item ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use bespoke_store::Store;

use super::artifact::{self, ITEMS_FILE, USERS_FILE};
use super::content::{CONTENT_FILE, ContentModel, ContentServing, item_bag};
use super::meta::{MetaError, ModelMeta};
use super::meta::{Recencies, Serve};
use super::model::Scorer;
use super::registry::REGISTRY;
use super::views::{AlsServing, BprServing, KnnServing};
use bespoke_algo::{ModelKind, Recency};

/// Marks a store item that the model does not know.
const NONE: u32 = u32::MAX;

/// Why a model version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading from the store failed.
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
    /// A file is malformed.
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    /// `meta.json` is malformed or newer than this build.
    #[error("model version {version}: {source}")]
    Meta {
        /// The version.
        version: u64,
        /// What is wrong.
        source: MetaError,
    },
    /// The files disagree with each other.
    #[error("model version {version}: {message}")]
    Inconsistent {
        /// The version.
        version: u64,
        /// What disagrees.
        message: String,
    },
}

/// A model version loaded for serving.
#[derive(Debug)]
pub struct ServingModel {
    /// Its version.
    pub version: u64,
    /// Its metadata.
    pub meta: ModelMeta,
    /// Every model of the version, by kind, as [`REGISTRY`] loaded them.
    pub models: BTreeMap<ModelKind, Arc<dyn Scorer>>,
    /// iALS (a typed view of `models`, for the serving code written against it).
    pub als: Arc<AlsServing>,
    /// Item-kNN (a typed view of `models`).
    pub knn: Arc<KnnServing>,
    /// EASE, when it was trained (a typed view of `models`).
    pub ease: Option<Arc<bespoke_algo::Ease>>,
    /// The hybrid content model and the items without events it places.
    pub content: Option<ContentServing>,
    /// BPR, when it was trained (a typed view of `models`).
    pub bpr: Option<Arc<BprServing>>,
    /// What `model=auto` serves (from tuning; iALS otherwise).
    pub serve: Serve,
    /// The recency weighting each model was trained with, applied to a user's history when
    /// serving too.
    pub recency: Recencies,
    item_keys: Vec<String>,
    store_to_model: Vec<u32>,
    model_to_store: Vec<u32>,
    /// Per model user row: the store user id (`NONE` for users no longer stored).
    user_to_store: Vec<u32>,
}

impl ServingModel {
    /// Loads `version` from the store; `item_id` maps an item key to its store id (`None` for
    /// items that no longer exist).
    pub fn load(
        store: &dyn Store,
        version: u64,
        cache_capacity: usize,
        mut item_id: impl FnMut(&str) -> Option<u32>,
        mut user_id: impl FnMut(&str) -> Option<u32>,
    ) -> Result<Self, LoadError> {
        let meta = store
            .list_models()?
            .into_iter()
            .find(|m| m.version == version)
            .ok_or(bespoke_store::Error::UnknownModel(version))?
            .meta;
        let meta =
            ModelMeta::from_value(meta).map_err(|source| LoadError::Meta { version, source })?;
        let item_keys =
            artifact::decode_keys(&store.read_model_file(version, ITEMS_FILE)?, ITEMS_FILE)?;
        let user_to_store: Vec<u32> =
            artifact::decode_keys(&store.read_model_file(version, USERS_FILE)?, USERS_FILE)?
                .iter()
                .map(|k| user_id(k).unwrap_or(NONE))
                .collect();
        let inconsistent = |message: String| LoadError::Inconsistent { version, message };
        let mut models: BTreeMap<ModelKind, Arc<dyn Scorer>> = BTreeMap::new();
        for family in REGISTRY {
            let kind = family.kind();
            // The metadata says which models this version holds (EASE and BPR are optional).
            if !meta.models.contains(&kind) {
                continue;
            }
            let files = (family.files().iter())
                .map(|f| store.read_model_file(version, f))
                .collect::<Result<Vec<_>, _>>()?;
            let artifact = family.decode(&files)?;
            if artifact.n_items() != item_keys.len() {
                return Err(inconsistent(format!(
                    "{} item keys, {} {kind} items",
                    item_keys.len(),
                    artifact.n_items()
                )));
            }
            models.insert(kind, artifact.into_scorer(&meta, cache_capacity));
        }
        let view = |kind: ModelKind| models.get(&kind).map(|m| m.clone().into_any());
        let als = view(ModelKind::Als)
            .and_then(|m| m.downcast::<AlsServing>().ok())
            .ok_or_else(|| inconsistent("no iALS model".into()))?;
        let knn = view(ModelKind::Knn)
            .and_then(|m| m.downcast::<KnnServing>().ok())
            .ok_or_else(|| inconsistent("no item-kNN model".into()))?;
        let ease = view(ModelKind::Ease).and_then(|m| m.downcast::<bespoke_algo::Ease>().ok());
        let bpr = view(ModelKind::Bpr).and_then(|m| m.downcast::<BprServing>().ok());
        let content = if meta.models.contains(&ModelKind::Content) {
            Some(ContentServing::new(ContentModel::decode(
                &store.read_model_file(version, CONTENT_FILE)?,
            )?))
        } else {
            None
        };
        if let Some(side) = content.as_ref().and_then(|c| c.model.items.as_ref())
            && side.ridge.d_out() != als.dim()
        {
            return Err(inconsistent(
                "the content model's factors differ from iALS's".into(),
            ));
        }
        let serve: Serve = meta.serve.clone();
        let recency = meta.params.recencies();
        let mut model = Self {
            version,
            serve,
            recency,
            meta,
            models,
            als,
            knn,
            ease,
            content,
            bpr,
            item_keys,
            store_to_model: Vec::new(),
            model_to_store: Vec::new(),
            user_to_store,
        };
        model.remap(&mut item_id);
        model.place_cold_items(store)?;
        Ok(model)
    }

    /// Places every stored item the model has no factors for by its content.
    pub(crate) fn place_cold_items(&self, store: &dyn Store) -> Result<(), LoadError> {
        let Some(content) = self.content.as_ref().filter(|c| c.model.items.is_some()) else {
            return Ok(());
        };
        let mut after = None;
        loop {
            let chunk = store.scan_items(after, 10_000)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.idx);
            for i in chunk {
                if self.model_item(i.idx.0).is_none() {
                    content.set_cold(
                        i.idx.0,
                        &item_bag(
                            &i.categories,
                            &i.text,
                            &i.numeric,
                            &i.attributes,
                            &i.embeddings,
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Rebuilds the mapping between model rows and store ids.
    fn remap(&mut self, item_id: &mut impl FnMut(&str) -> Option<u32>) {
        self.model_to_store = self
            .item_keys
            .iter()
            .map(|k| item_id(k).unwrap_or(NONE))
            .collect();
        let bound = self
            .model_to_store
            .iter()
            .filter(|&&s| s != NONE)
            .map(|&s| s as usize + 1)
            .max()
            .unwrap_or(0);
        self.store_to_model = vec![NONE; bound];
        for (m, &s) in self.model_to_store.iter().enumerate() {
            if s != NONE {
                self.store_to_model[s as usize] = m as u32;
            }
        }
    }

    /// Per model user row, the store user id (`None` when the user is gone).
    pub fn user_store_ids(&self) -> impl Iterator<Item = Option<u32>> + '_ {
        self.user_to_store.iter().map(|&s| (s != NONE).then_some(s))
    }

    /// The model row of a store item, if the model knows it.
    pub fn model_item(&self, store_item: u32) -> Option<u32> {
        self.store_to_model
            .get(store_item as usize)
            .copied()
            .filter(|&m| m != NONE)
    }

    /// The store id of a model row, if the item still exists.
    pub fn store_item(&self, model_item: u32) -> Option<u32> {
        self.model_to_store
            .get(model_item as usize)
            .copied()
            .filter(|&s| s != NONE)
    }

    /// The scorer of `kind` (of its family for the kNN variants), when this version has it:
    /// what new serving code should use instead of the typed fields.
    pub fn scorer(&self, kind: ModelKind) -> Option<&dyn Scorer> {
        self.models.get(&kind.family()).map(|s| s.as_ref())
    }

    /// The recency weighting `kind` was trained with, to apply to a history it scores.
    pub fn recency(&self, kind: ModelKind) -> Recency {
        self.recency.get(kind)
    }

    /// The recency weighting of model `name` (`als`, `knn` and its variants, `ease`; iALS's
    /// for any other name, as serving has always read it).
    pub fn recency_of(&self, name: &str) -> Recency {
        let kind = match name.parse::<ModelKind>().map(ModelKind::family) {
            Ok(k @ (ModelKind::Knn | ModelKind::Ease)) => k,
            _ => ModelKind::Als,
        };
        self.recency.get(kind)
    }

    /// Number of items the model knows.
    pub fn n_items(&self) -> usize {
        self.item_keys.len()
    }
}
