//! The store conformance suite (`bespoke_store::conformance`) run against [`SqliteStore`]: one
//! test per behaviour, each on a new store in a temporary directory of its own.

use std::ops::Deref;

use bespoke_store::{SqliteStore, StoreOptions};

/// A store in a temporary directory that outlives it.
struct TempStore {
    // Declared first so that it is dropped (and closed) before its directory is removed.
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Deref for TempStore {
    type Target = SqliteStore;

    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

fn fresh() -> TempStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).expect("open the store");
    TempStore { store, _dir: dir }
}

bespoke_store::store_conformance_tests!(fresh());

/// The suite through a `dyn Store`, as the server holds its store: the behaviours must not
/// depend on the concrete type.
#[test]
fn behaviours_run_through_dyn_store() {
    let temp = fresh();
    let store: &dyn bespoke_store::Store = &*temp;
    bespoke_store::conformance::events_replay_is_idempotent_and_conflicts_are_refused(store);
    bespoke_store::conformance::decisions_per_user_export_and_delete(store);
    bespoke_store::conformance::rules_put_replace_list_delete(store);
}

/// `run_all`, the one-test form another backend may prefer, walks the same behaviours.
#[test]
fn run_all_passes_on_sqlite() {
    bespoke_store::conformance::run_all(fresh);
}
