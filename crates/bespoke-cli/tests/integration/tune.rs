//! `bespoke tune` with its defaults: every model family is searched, and on data where an
//! item-to-item model is right the search does not settle on iALS.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::{bespoke, json};

/// Short sessions along a hidden chain of items: each user views six consecutive items of a
/// random permutation of the catalog, one a minute. The next item of a session follows from
/// the last one alone, an item-to-item relation a few dozen factors cannot hold for a
/// 1,500-item band, which an item-kNN (or EASE) learns from co-occurrence.
fn chain_sessions(dir: &Path) -> std::path::PathBuf {
    const ITEMS: u64 = 1500;
    const USERS: u64 = 3000;
    const LENGTH: u64 = 6;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: deterministic, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut order: Vec<u64> = (0..ITEMS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let mut csv = String::from("user_id,item_id,weight,timestamp\n");
    for u in 0..USERS {
        let start = next() % ITEMS;
        let t0 = 1_700_000_000 + u * 1000;
        for k in 0..LENGTH {
            let item = order[((start + k) % ITEMS) as usize];
            writeln!(csv, "{u},{item},1,{}", t0 + 60 * k).unwrap();
        }
    }
    let path = dir.join("sessions.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn tune_without_models_searches_every_family_and_finds_the_item_to_item_model() {
    let dir = tempfile::tempdir().unwrap();
    let csv = chain_sessions(dir.path());
    let data = csv.to_str().unwrap();
    let out = bespoke(
        dir.path(),
        &["tune", "--data", data, "--latency-users", "20", "--json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let tuned = json(&out);
    let tuning = &tuned["tuning"];
    let families: Vec<&str> = tuning["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        families,
        ["als", "ease", "bm25", "cosine", "rp3", "bpr"],
        "{stderr}"
    );
    // Every family got trials, none more than a third of the budget.
    let trials = tuning["trials"].as_array().unwrap();
    let budget = tuning["budget"].as_u64().unwrap() as usize;
    for family in &families {
        let n = trials
            .iter()
            .filter(|t| t["rung"] == 0 && t["model"].as_str() == Some(family))
            .count();
        assert!(
            (1..=budget.div_ceil(3)).contains(&n),
            "{family}: {n} trials of {budget}"
        );
    }
    let chosen = tuned["model"].as_str().unwrap();
    assert_ne!(chosen, "als", "tuning chose iALS: {tuning}");
    // And by a wide margin over what `eval` gives iALS by default.
    let als = json(&bespoke(
        dir.path(),
        &["eval", "--data", data, "--latency-users", "20", "--json"],
    ));
    let (tuned_ndcg, als_ndcg) = (
        tuned["metrics"]["ndcg@10"].as_f64().unwrap(),
        als["metrics"]["ndcg@10"].as_f64().unwrap(),
    );
    assert!(
        tuned_ndcg > 1.5 * als_ndcg,
        "tuned {chosen} NDCG@10 {tuned_ndcg} against default iALS {als_ndcg}"
    );
}

#[test]
fn eval_says_which_models_it_evaluated_and_how_to_evaluate_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let csv = chain_sessions(dir.path());
    let out = bespoke(
        dir.path(),
        &[
            "eval",
            "--data",
            csv.to_str().unwrap(),
            "--latency-users",
            "5",
        ],
    );
    crate::ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("evaluated als (the default)") && stderr.contains("bespoke tune"),
        "{stderr}"
    );
}

#[test]
fn tune_leaves_ease_out_above_the_memory_budget_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let csv = chain_sessions(dir.path());
    // 1,500 items: EASE needs 16 × 1500² bytes = 0.036 GB.
    let out: Value = json(&bespoke(
        dir.path(),
        &[
            "tune",
            "--data",
            csv.to_str().unwrap(),
            "--memory-budget-gb",
            "0.03",
            "--budget",
            "6",
            "--latency-users",
            "5",
            "--json",
        ],
    ));
    let tuning = &out["tuning"];
    assert!(
        !tuning["families"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "ease"),
        "{tuning}"
    );
    assert_eq!(tuning["skipped"][0]["model"], "ease");
    let reason = tuning["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("--memory-budget-gb 0.03"), "{reason}");
    assert!(
        tuning["trials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["model"] != "ease")
    );
    // Named explicitly, EASE above the budget is refused before any training.
    let refused = bespoke(
        dir.path(),
        &[
            "tune",
            "--data",
            csv.to_str().unwrap(),
            "--models",
            "als,ease",
            "--memory-budget-gb",
            "0.03",
        ],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--memory-budget-gb 0.03"), "{err}");
}
