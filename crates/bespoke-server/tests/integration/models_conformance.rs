//! Model conformance: every family of `models::REGISTRY` is trained on a small
//! synthetic data set and must round-trip through the store with identical scores, erase a
//! user's row from its files, and explain each score with contributions that sum to it.
//! A new model gets all of this by its registry line.

use bespoke_algo::ModelKind;
use bespoke_server::Settings;
use bespoke_server::models::REGISTRY;
use bespoke_server::models::artifact;
use bespoke_server::models::model::Scorer;
use bespoke_server::models::snapshot::{Pair, Snapshot};
use bespoke_server::models::training::train;
use bespoke_server::models::{self, ServingModel};
use bespoke_store::prelude::*;
use bespoke_store::{SqliteStore, StoreOptions};

const USERS: u32 = 48;
const ITEMS: u32 = 30;

/// Two taste clusters (even users like items 0..15, odd users 15..30), a few dislikes, weights
/// 1 to 3, increasing times: a seeded LCG, so every run is the same.
fn snapshot() -> Snapshot {
    let mut x: u64 = 11;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % n
    };
    let mut pairs = Vec::new();
    for user in 0..USERS {
        let base = if user % 2 == 0 { 0 } else { ITEMS / 2 };
        let mut items: Vec<u32> = (0..8).map(|_| base + next(15) as u32).collect();
        // One item of the other cluster, disliked.
        let other = (base + ITEMS / 2 + next(15) as u32) % ITEMS;
        items.sort_unstable();
        items.dedup();
        items.retain(|&i| i != other);
        for (k, &item) in items.iter().enumerate() {
            pairs.push(Pair {
                user,
                item,
                weight: 1.0 + next(3) as f32,
                last_ts: 1_000 * (user as i64 * 16 + k as i64),
            });
        }
        pairs.push(Pair {
            user,
            item: other,
            weight: -1.0,
            last_ts: 1_000 * (user as i64 * 16 + 15),
        });
    }
    pairs.sort_by_key(|p| (p.user, p.item));
    Snapshot {
        // Zero-padded so that key order is index order.
        user_keys: (0..USERS).map(|u| format!("u{u:03}")).collect(),
        item_keys: (0..ITEMS).map(|i| format!("i{i:03}")).collect(),
        events: pairs.len() as u64,
        watermark: pairs.len() as u64,
        pairs,
        read_at: 1_700_000_000_000,
        catalog: Vec::new(),
        user_content: Vec::new(),
        impressions: vec![0.0; ITEMS as usize],
        users_all: USERS as usize,
    }
}

/// Small, fast settings with every registered family on.
fn settings() -> Settings {
    let mut s = Settings::default();
    let t = &mut s.training;
    (t.factors, t.iterations, t.knn_k) = (8, 4, 10);
    (t.bpr, t.bpr_factors, t.bpr_iterations) = (true, 8, 20);
    (t.evaluate, t.content) = (false, false);
    s
}

/// Each user's history as serving reads it: `(model item, weight)` sorted by item.
fn histories(s: &Snapshot) -> Vec<Vec<(u32, f32)>> {
    let mut out = vec![Vec::new(); s.user_keys.len()];
    for p in &s.pairs {
        out[p.user as usize].push((p.item, p.weight));
    }
    out
}

fn open_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
    (dir, store)
}

fn load(store: &SqliteStore, version: u64, s: &Snapshot) -> ServingModel {
    ServingModel::load(
        store,
        version,
        0,
        |key| s.item_keys.iter().position(|k| k == key).map(|i| i as u32),
        |key| s.user_keys.iter().position(|k| k == key).map(|u| u as u32),
    )
    .unwrap()
}

/// Every candidate's score for a few users, and for an empty history.
fn score_table(scorer: &dyn Scorer, histories: &[Vec<(u32, f32)>]) -> Vec<Vec<f32>> {
    let candidates: Vec<u32> = (0..ITEMS).collect();
    (histories.iter().step_by(7))
        .chain([&Vec::new()])
        .map(|h| scorer.score(h, &candidates))
        .collect()
}

#[test]
fn every_registered_model_round_trips_erases_and_explains() {
    let s = snapshot();
    let settings = settings();
    let trained = train(&s, &settings, None, &mut |_| {});
    let (_dir, store) = open_store();
    let version = models::save(&store, &s, &trained).unwrap();
    let served = load(&store, version, &s);
    let histories = histories(&s);
    let meta = &trained.meta;

    for family in REGISTRY {
        let kind = family.kind();
        assert!(
            trained.models.contains_key(&kind),
            "{kind} was not trained with every model on"
        );
        assert!(trained.meta.models.contains(&kind), "{kind} not in meta");

        // Save → load: the served scorer scores exactly as the one built from the files the
        // trained model encodes.
        let files = trained.models[&kind].encode();
        let names: Vec<&str> = files.iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            family.files(),
            "{kind} encodes the files it declares"
        );
        let bytes: Vec<Vec<u8>> = files.into_iter().map(|f| f.1).collect();
        let fresh = family.decode(&bytes).unwrap().into_scorer(meta, 0);
        let loaded = served.models[&kind].as_ref();
        let table = score_table(loaded, &histories);
        assert_eq!(table, score_table(fresh.as_ref(), &histories), "{kind}");
        // Scores are not all zero, or the comparison above would prove little.
        assert!(table[0].iter().any(|&x| x != 0.0), "{kind} scores nothing");
        // No history, no personal scores (serving falls back to popularity).
        assert!(table.last().unwrap().iter().all(|&x| x == 0.0), "{kind}");

        // Explanations: contributions sum to the score.
        for h in histories.iter().step_by(5) {
            for item in (0..ITEMS).step_by(3) {
                let score = loaded.score(h, &[item])[0];
                let sum: f32 = loaded.explain(h, item).iter().map(|c| c.value).sum();
                assert!(
                    (score - sum).abs() <= 1e-5 * score.abs().max(1.0),
                    "{kind}: item {item} scores {score}, its contributions sum to {sum}"
                );
            }
        }
        // A prepared history (what serving explains many items with) scores and explains as
        // the history itself does, and names the history items behind each score.
        let serving = bespoke_server::settings::ServingSettings::default();
        let all: Vec<u32> = (0..ITEMS).collect();
        // (retrieving models, items retrieved): a model that retrieves finds something.
        let mut retrieved = (0, 0);
        for h in histories.iter().step_by(5) {
            let Some(p) = loaded.prepare(h, &serving) else {
                assert!(
                    loaded.score(h, &all).iter().all(|&x| x == 0.0),
                    "{kind}: nothing prepared, yet scores"
                );
                continue;
            };
            let scores = loaded.score(h, &all);
            let prepared = loaded.score_prepared(&p, &all);
            let explained = loaded.explain_prepared(&p, &all, true);
            assert_eq!(explained.len(), all.len(), "{kind}");
            for ((item, (&a, &b)), e) in
                all.iter().zip(scores.iter().zip(&prepared)).zip(&explained)
            {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{kind}: item {item} scores {a}, prepared {b}"
                );
                let sum: f32 = e.terms.iter().map(|c| c.value).sum();
                assert!(
                    (b - sum).abs() <= 1e-5 * b.abs().max(1.0),
                    "{kind}: item {item} scores {b}, its prepared terms sum to {sum}"
                );
                assert!(
                    e.because.iter().all(|x| h.iter().any(|y| y.0 == x.0)),
                    "{kind}: item {item} is explained by items outside the history"
                );
            }
            // Retrieval, where the model retrieves: best first, among the items kept, scored as
            // score_prepared scores them.
            if let Some(top) = loaded.top_k(&p, 5, &mut |i| i % 2 == 0) {
                retrieved = (retrieved.0 + 1, retrieved.1 + top.len());
                assert!(top.len() <= 5, "{kind}");
                assert!(top.windows(2).all(|w| w[0].score >= w[1].score), "{kind}");
                for x in &top {
                    assert_eq!(x.idx % 2, 0, "{kind}: item {} was not kept", x.idx);
                    let want = prepared[x.idx as usize];
                    assert!(
                        (x.score - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{kind}: item {} retrieved at {}, scored {want}",
                        x.idx,
                        x.score
                    );
                }
            }
            let plain = loaded.explain_prepared(&p, &all, false);
            assert!(plain.iter().all(|e| e.terms.is_empty()), "{kind}");
            assert_eq!(
                plain.iter().map(|e| &e.because).collect::<Vec<_>>(),
                explained.iter().map(|e| &e.because).collect::<Vec<_>>(),
                "{kind}: asking for terms changes the reasons"
            );
        }
        assert!(
            retrieved.0 == 0 || retrieved.1 > 0,
            "{kind}: retrieves nothing"
        );

        // Similar items, where the model has them: best first, never the item itself.
        if let Some(similar) = loaded.similar(3, 5) {
            assert!(
                !similar.is_empty() && similar.iter().all(|x| x.idx != 3),
                "{kind}"
            );
            assert!(
                similar.windows(2).all(|w| w[0].score >= w[1].score),
                "{kind}"
            );
        }

        // Erasure: zeroing the declared user rows of its files zeroes exactly that user.
        let user = 5;
        let before = family.decode(&bytes).unwrap();
        let scrubbed: Vec<Vec<u8>> = (family.files().iter().zip(&bytes))
            .map(|(name, b)| {
                artifact::zero_user_rows(b, name, user)
                    .unwrap()
                    .unwrap_or_else(|| b.clone())
            })
            .collect();
        let after = family.decode(&scrubbed).unwrap();
        match after.user_row(user) {
            Some(row) => {
                assert!(!row.is_empty() && row.iter().all(|&x| x == 0.0), "{kind}");
                assert!(
                    before.user_row(user).unwrap().iter().any(|&x| x != 0.0),
                    "{kind}: the row had something to erase"
                );
                for other in [0, 4, 6, USERS as usize - 1] {
                    assert_eq!(after.user_row(other), before.user_row(other), "{kind}");
                }
            }
            // Nothing per user: the files are unchanged.
            None => assert_eq!(scrubbed, bytes, "{kind}"),
        }
        // Item-side data is untouched, so scores for histories stay the same.
        let rescored = after.into_scorer(meta, 0);
        assert_eq!(
            score_table(rescored.as_ref(), &histories),
            table,
            "{kind}: erasing a user row changed item-side data"
        );
    }

    // A version written the way builds before `meta_version` wrote it still loads, and
    // serves the same scores.
    let mut v1 = meta.to_value();
    let o = v1.as_object_mut().unwrap();
    o.remove("meta_version");
    o.remove("models");
    let names: Vec<String> = store.list_models().unwrap()[0].files.clone();
    let files: Vec<(String, Vec<u8>)> = (names.into_iter())
        .map(|n| {
            let b = store.read_model_file(version, &n).unwrap();
            (n, b)
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let old = store.save_model(&refs, &v1).unwrap();
    let old = load(&store, old, &s);
    // Version 1 listed its models by their params: the four of its time (content is off).
    let era = [
        ModelKind::Als,
        ModelKind::Knn,
        ModelKind::Ease,
        ModelKind::Bpr,
    ];
    assert_eq!(old.meta.models, era);
    for kind in &era {
        assert_eq!(
            score_table(old.models[kind].as_ref(), &histories),
            score_table(served.models[kind].as_ref(), &histories),
            "{kind}"
        );
    }
}
