//! The serving part: the in-memory state every answer is ranked from, and the model serving
//! uses. Ingestion, privacy and the model lifecycle (in [`crate::engine`]) write it; the
//! ranking pipeline ([`crate::pipeline`], which implements the read path on [`Serving`]) only
//! reads it. It knows neither the store nor HTTP, so the pipeline depends on this module and
//! on the models, never on the engine.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use bespoke_algo::{IdMap, ItemIdx, LiveIndex, Popularity, UserIdx};
use bespoke_store::Item;
use parking_lot::RwLock;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::exposure::Exposure;
use crate::models::ServingModel;
use crate::privacy::UserKeys;
use crate::rules::Columns;
use crate::rules::spec::SavedRule;
use crate::settings::Settings;

/// What the ranking pipeline reads: the serving state and the served model, with the settings
/// and the user-key mapping (pseudonymization) it needs to answer.
pub struct Serving {
    /// The settings the engine runs with.
    pub(crate) settings: Arc<Settings>,
    /// Users, items, histories and popularity, as applied from the store.
    pub(crate) state: RwLock<State>,
    /// The model serving uses; swapped atomically, so a request sees one model throughout.
    pub(crate) model: ArcSwapOption<ServingModel>,
    /// Raw user keys to store keys.
    pub(crate) user_keys: UserKeys,
    /// The saved business rules, by name; swapped whole when one changes.
    pub(crate) saved_rules: ArcSwap<Vec<SavedRule>>,
    /// Compiled rule expressions, by source text.
    pub(crate) exprs: crate::rules::Cache,
    /// Which items are in the long tail, recomputed when popularity has moved.
    pub(crate) tail: parking_lot::Mutex<Option<Arc<TailCut>>>,
    /// FA*IR tables by `(n, p, α)`: computing one takes a bisection of dynamic programs.
    pub(crate) fair_tables:
        parking_lot::Mutex<FxHashMap<(usize, u64, u64), Arc<bespoke_algo::rerank::Fair>>>,
}

/// The long tail as of some number of events: computing it sorts the catalog by popularity,
/// too slow for every request, and it moves slowly.
#[derive(Debug, Clone)]
pub(crate) struct TailCut {
    /// `LiveIndex::events` when computed.
    pub(crate) events: u64,
    /// Per item: in the long tail. Items added since are tail.
    pub(crate) tail: Arc<Vec<bool>>,
    /// The fewest interactions of a head item.
    pub(crate) min_head: f64,
    /// The most users any item has (propensity weighting's `max n`).
    pub(crate) max_users: f64,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").finish_non_exhaustive()
    }
}

/// Distinct expressions kept compiled: saved rules plus the requests' own, which an
/// application sends from a handful of templates.
const EXPRESSION_CACHE: usize = 1024;

impl Serving {
    /// An empty serving state for `settings` (the engine fills it from the store).
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        Self {
            user_keys: UserKeys::new(&settings),
            state: RwLock::new(State::new(&settings)),
            settings,
            model: ArcSwapOption::empty(),
            saved_rules: ArcSwap::from_pointee(Vec::new()),
            exprs: crate::rules::Cache::new(EXPRESSION_CACHE),
            tail: parking_lot::Mutex::new(None),
            fair_tables: parking_lot::Mutex::new(FxHashMap::default()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ItemMeta {
    pub(crate) categories: Vec<u32>,
    pub(crate) available: bool,
}

/// Whether a user or item created with id `created` should take over a key currently mapped to
/// `current`. Ids only grow, so a larger id is a newer incarnation of the key (the older one was
/// deleted, perhaps with its deletion not yet applied here); an equal id was already registered by
/// a profile or catalog change, whose values win.
pub(crate) fn newer(current: Option<u32>, created: u32) -> bool {
    current.is_none_or(|c| c < created)
}

/// The in-memory serving state; the pipeline reads it under the engine's read lock.
pub(crate) struct State {
    /// Bumped whenever an item deletion changes histories, so that every cached user vector
    /// computed before it is stale.
    pub(crate) catalog_epoch: u64,
    /// Per user: bumped whenever the user's history changes.
    pub(crate) user_rev: Vec<u32>,
    pub(crate) users: IdMap,
    pub(crate) items: IdMap,
    pub(crate) deleted_users: FxHashSet<u32>,
    pub(crate) deleted_items: FxHashSet<u32>,
    pub(crate) personalization: Vec<bool>,
    /// Users who objected to marketing: never in an audience.
    pub(crate) no_marketing: FxHashSet<u32>,
    pub(crate) item_meta: Vec<ItemMeta>,
    pub(crate) categories: IdMap,
    pub(crate) live: LiveIndex,
    /// Impressions and hidden items.
    pub(crate) exposure: Exposure,
    /// Item attributes by column, for rule expressions.
    pub(crate) columns: Columns,
}

impl State {
    /// An empty state (the engine fills it from the store).
    pub(crate) fn new(settings: &Settings) -> Self {
        let half_life_ms = settings.serving.trending_half_life_hours * 3_600_000.0;
        State {
            catalog_epoch: 0,
            user_rev: Vec::new(),
            users: IdMap::new(),
            items: IdMap::new(),
            deleted_users: FxHashSet::default(),
            deleted_items: FxHashSet::default(),
            personalization: Vec::new(),
            no_marketing: FxHashSet::default(),
            item_meta: Vec::new(),
            categories: IdMap::new(),
            live: LiveIndex::new(Popularity::new(half_life_ms)),
            exposure: Exposure::default(),
            columns: Columns::new(),
        }
    }

    pub(crate) fn bump_user(&mut self, user: UserIdx) {
        let u = user.0 as usize;
        if self.user_rev.len() <= u {
            self.user_rev.resize(u + 1, 0);
        }
        self.user_rev[u] = self.user_rev[u].wrapping_add(1);
    }

    /// The revision of a user's history: equal revisions mean equal histories.
    pub(crate) fn revision(&self, user: UserIdx) -> u64 {
        (self.catalog_epoch << 32) | self.user_rev.get(user.0 as usize).copied().unwrap_or(0) as u64
    }

    pub(crate) fn set_personalization(&mut self, user: UserIdx, allowed: bool) {
        let u = user.0 as usize;
        if self.personalization.len() <= u {
            self.personalization.resize(u + 1, true);
        }
        self.personalization[u] = allowed;
    }

    pub(crate) fn set_item(&mut self, item: &Item) {
        let categories = item
            .categories
            .iter()
            .map(|c| self.categories.get_or_assign(c))
            .collect();
        let i = item.idx.0 as usize;
        if self.item_meta.len() <= i {
            self.item_meta.resize_with(i + 1, ItemMeta::default);
        }
        self.item_meta[i] = ItemMeta {
            categories,
            available: item.available,
        };
        self.columns.set_item(item.idx.0, item);
        self.items.insert(&item.key, item.idx.0);
    }

    pub(crate) fn register_new_item(&mut self, key: &str, idx: ItemIdx) {
        if self.deleted_items.contains(&idx.0) || !newer(self.items.get(key), idx.0) {
            return;
        }
        let i = idx.0 as usize;
        if self.item_meta.len() <= i {
            self.item_meta.resize_with(i + 1, ItemMeta::default);
        }
        self.item_meta[i] = ItemMeta {
            categories: Vec::new(),
            available: true,
        };
        // Created by an event: no attributes yet, created now.
        let now = crate::time::now_ms();
        self.columns.set_item(
            idx.0,
            &Item {
                idx,
                key: key.to_owned(),
                categories: Vec::new(),
                text: Default::default(),
                numeric: Default::default(),
                attributes: Default::default(),
                embeddings: Default::default(),
                available: true,
                created_at: now,
                updated_at: now,
            },
        );
        self.items.insert(key, idx.0);
    }

    pub(crate) fn meta(&self, item: ItemIdx) -> Option<&ItemMeta> {
        self.item_meta.get(item.0 as usize)
    }

    pub(crate) fn category_ids(&self, names: &[String]) -> Vec<u32> {
        // Unknown categories match nothing, so they are kept as an impossible id.
        names
            .iter()
            .map(|c| self.categories.get(c).unwrap_or(u32::MAX))
            .collect()
    }

    pub(crate) fn in_categories(&self, item: ItemIdx, wanted: &[u32]) -> bool {
        wanted.is_empty()
            || self
                .meta(item)
                .is_some_and(|m| m.categories.iter().any(|c| wanted.contains(c)))
    }

    pub(crate) fn servable(&self, item: ItemIdx) -> bool {
        self.items.key(item.0).is_some() && self.meta(item).is_some_and(|m| m.available)
    }

    pub(crate) fn first_category(&self, item: ItemIdx) -> Option<String> {
        let c = *self.meta(item)?.categories.first()?;
        self.categories.key(c).map(str::to_owned)
    }

    /// Applies an event that is not feedback: an impression (`kind` is
    /// [`crate::settings::IMPRESSION`]) or a hide (`hides`: its type is one of
    /// `rules.hide_event_types`). Feedback itself goes to [`LiveIndex`].
    pub(crate) fn apply_signal(
        &mut self,
        settings: &Settings,
        kind: &str,
        user: UserIdx,
        item: ItemIdx,
        at: bespoke_store::Millis,
    ) {
        if kind == crate::settings::IMPRESSION {
            let keep = settings.rules.impressions_per_user;
            self.exposure.record_impression(user.0, item.0, at, keep);
        } else if settings.rules.hide_event_types.iter().any(|t| t == kind) {
            self.exposure.set_hidden(user.0, item.0, true, at, true);
        }
    }

    pub(crate) fn item_key(&self, item: ItemIdx) -> String {
        self.items.key(item.0).unwrap_or_default().to_owned()
    }
}
