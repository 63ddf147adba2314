//! `bespoke federated-sim` on MovieLens 100K: federated iALS with secure aggregation and
//! drop-outs reaches central iALS's NDCG@10, and the differentially private run stays within
//! its budget.

use serde_json::Value;

use crate::{bespoke, ok, shared_data};

fn rows(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Without noise, 30 rounds of about 500 devices (5% of each round dropping out after
/// masking, their masks removed through revealed seeds) reach ≥ 95% of central iALS (the
/// issue's target; measured 99–100%, docs/federated.md). With ε ≤ 10 the accountant's ε grows
/// every round and ends within the budget.
#[test]
fn federated_sim_reaches_central_ials_and_respects_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = shared_data("ml-100k/u.data");
    let out = ok(&bespoke(
        dir.path(),
        &[
            "federated-sim",
            "--data",
            data.to_str().unwrap(),
            "--dp-rounds",
            "4",
        ],
    ));
    let rows = rows(&out);
    let central = rows[0]["central"]["ndcg@10"].as_f64().unwrap();
    assert!(central > 0.12, "central iALS NDCG@10 {central}");
    let run = |name: &str| -> Vec<&Value> {
        rows.iter()
            .filter(|r| r["run"].as_str().is_some_and(|n| n.starts_with(name)))
            .collect()
    };
    let plain = run("no noise");
    assert_eq!(plain.len(), 30);
    let last = plain.last().unwrap();
    assert!(last["of_central"].as_f64().unwrap() >= 0.95, "{last}");
    assert!(
        plain.iter().all(|r| r["clients"].as_u64().unwrap() > 400),
        "{plain:?}"
    );
    assert!(plain.iter().any(|r| r["dropped"].as_u64().unwrap() > 0));
    // The masked vector is 8 bytes a coordinate: items × (factors + 1) + the upper triangle + 1.
    let items = rows[0]["central"]["items"].as_u64().unwrap();
    let len = items * 33 + 32 * 33 / 2 + 1;
    assert!(last["bytes_up_per_client"].as_f64().unwrap() >= 8.0 * len as f64);

    let dp = run("central DP");
    assert_eq!(dp.len(), 4);
    let eps: Vec<f64> = dp.iter().map(|r| r["epsilon"].as_f64().unwrap()).collect();
    assert!(eps.windows(2).all(|w| w[0] < w[1]), "{eps:?}");
    assert!(eps[3] <= 10.0 && eps[3] > 5.0, "{eps:?}");
    // Noise costs accuracy, but training still learns far more than nothing.
    assert!(dp[3]["of_central"].as_f64().unwrap() > 0.4, "{:?}", dp[3]);
}

/// Bad arguments are refused with a message naming them.
#[test]
fn federated_sim_refuses_bad_shares() {
    let dir = tempfile::tempdir().unwrap();
    let out = bespoke(dir.path(), &["federated-sim", "--dropout", "1.5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dropout"));
}
