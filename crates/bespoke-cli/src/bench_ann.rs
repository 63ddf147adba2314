//! `bespoke bench ann`: the approximate top-k of large catalogs (HNSW, `bespoke_algo::ann`)
//! against the exact scorer, in process: index build time, recall@k against the exact answer
//! and per-request latency, on synthetic factors of two shapes (trained-like and Gaussian).

use std::time::Instant;

use anyhow::bail;
use bespoke_algo::ann::synthetic::{self, Shape};
use bespoke_algo::{AnnParams, AnnScorer, Factors, ScoreScratch, Scored};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

/// Arguments of `bespoke bench ann`.
#[derive(Debug, Args)]
pub(crate) struct AnnArgs {
    /// Items in the catalog.
    #[arg(long, default_value_t = 1_000_000)]
    items: usize,
    /// Factor dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Queries (user vectors), each answered by the graph and by the exact scan.
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Items per answer.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Factor shapes to run.
    #[arg(long, value_enum, default_value = "all")]
    shape: ShapeArg,
    /// Search widths (`ef`) to measure, comma-separated; the default `ef_search` when empty.
    #[arg(long, value_delimiter = ',')]
    ef: Vec<usize>,
    /// Links per item (`m`; layer 0 has `2m`).
    #[arg(long, default_value_t = AnnParams::default().links)]
    links: usize,
    /// Candidates kept while building.
    #[arg(long, default_value_t = AnnParams::default().ef_construction)]
    ef_construction: usize,
    /// Seed of the factors and of the graph.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Which synthetic factors to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ShapeArg {
    /// Clustered low-rank factors with log-normal norms, like trained ones.
    Trained,
    /// The same scaled to unit length: what similar items score.
    Unit,
    /// Independent standard normal values.
    Gaussian,
    /// All three, one after the other.
    All,
}

pub(crate) fn run(args: &AnnArgs) -> anyhow::Result<Value> {
    if args.items == 0 || args.dim == 0 || args.queries == 0 || args.k == 0 {
        bail!("--items, --dim, --queries and --k must be at least 1");
    }
    let shapes: &[Shape] = match args.shape {
        ShapeArg::Trained => &[Shape::Trained],
        ShapeArg::Unit => &[Shape::Unit],
        ShapeArg::Gaussian => &[Shape::Gaussian],
        ShapeArg::All => &[Shape::Trained, Shape::Unit, Shape::Gaussian],
    };
    let mut runs = Vec::new();
    for &shape in shapes {
        runs.push(run_shape(args, shape)?);
    }
    Ok(json!({
        "bench": "ann",
        "items": args.items,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "links": args.links,
        "ef_construction": args.ef_construction,
        "threads": rayon::current_num_threads(),
        "runs": runs,
    }))
}

fn run_shape(args: &AnnArgs, shape: Shape) -> anyhow::Result<Value> {
    let name = match shape {
        Shape::Trained => "trained",
        Shape::Unit => "unit",
        Shape::Gaussian => "gaussian",
    };
    let items = synthetic::items(shape, args.items, args.dim, args.seed);
    let queries = synthetic::queries(shape, args.queries, args.dim, args.seed);
    let params = AnnParams {
        links: args.links,
        ef_construction: args.ef_construction,
        ..AnnParams::default()
    };
    let start = Instant::now();
    let mut scorer = AnnScorer::new(items, 1, params);
    let build = start.elapsed().as_secs_f64();
    let graph_mib = scorer
        .graph()
        .map_or(0.0, |g| g.heap_bytes() as f64 / (1 << 20) as f64);
    let mut scratch = ScoreScratch::default();

    // The exact answers, and the exact scan's latency.
    let mut exact_us = Vec::with_capacity(args.queries);
    let mut truth: Vec<Vec<Scored>> = Vec::with_capacity(args.queries);
    for q in 0..queries.rows() {
        let t = Instant::now();
        let top = scorer
            .exact_scorer()
            .top_k(queries.row(q), args.k, |_| true, &mut scratch);
        exact_us.push(t.elapsed().as_secs_f64() * 1e6);
        truth.push(top);
    }
    let exact = latency(&mut exact_us);

    let efs = if args.ef.is_empty() {
        vec![AnnParams::default().ef_search]
    } else {
        args.ef.clone()
    };
    let mut sweep = Vec::new();
    for &ef in &efs {
        scorer.set_ef_search(ef);
        let (recall, mut us) = measure(&scorer, &queries, &truth, args.k, |_| true);
        let ann = latency(&mut us);
        sweep.push(json!({
            "ef": ef,
            "recall": recall,
            "latency_us": ann,
            "p99_speedup": exact["p99"].as_f64().unwrap_or(0.0) / ann["p99"].as_f64().unwrap_or(1.0).max(1e-9),
        }));
    }

    // A filter accepting a tenth of the catalog, searched through the graph, and one
    // accepting a two-hundredth, which the exact scan serves; at the default width.
    let ef = AnnParams::default().ef_search;
    scorer.set_ef_search(ef);
    let mut filtered = Vec::new();
    for modulus in [10u32, 200] {
        let keep = move |i: u32| i.is_multiple_of(modulus);
        let mut want = Vec::with_capacity(args.queries);
        let mut exact_us = Vec::with_capacity(args.queries);
        for q in 0..queries.rows() {
            let t = Instant::now();
            want.push(
                scorer
                    .exact_scorer()
                    .top_k(queries.row(q), args.k, keep, &mut scratch),
            );
            exact_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let (recall, mut us) = measure(&scorer, &queries, &want, args.k, keep);
        filtered.push(json!({
            "accepts": 1.0 / modulus as f64,
            "ef": ef,
            "recall": recall,
            "latency_us": latency(&mut us),
            "exact_latency_us": latency(&mut exact_us),
        }));
    }

    Ok(json!({
        "shape": name,
        "build_seconds": build,
        "graph_mib": graph_mib,
        "layers": scorer.graph().map_or(0, |g| g.layers()),
        "exact_latency_us": exact,
        "ann": sweep,
        "filtered": filtered,
    }))
}

/// Recall@k of `scorer` against `truth` (answers of the exact scan) and the latency of each
/// request, in microseconds.
fn measure(
    scorer: &AnnScorer,
    queries: &Factors,
    truth: &[Vec<Scored>],
    k: usize,
    keep: impl Fn(u32) -> bool + Copy,
) -> (f64, Vec<f64>) {
    let mut scratch = ScoreScratch::default();
    let mut us = Vec::with_capacity(queries.rows());
    let (mut hits, mut wanted) = (0usize, 0usize);
    for (q, want) in truth.iter().enumerate() {
        let t = Instant::now();
        let got = scorer.top_k(queries.row(q), k, keep, &mut scratch);
        us.push(t.elapsed().as_secs_f64() * 1e6);
        wanted += want.len();
        hits += got
            .iter()
            .filter(|g| want.iter().any(|w| w.idx == g.idx))
            .count();
    }
    (hits as f64 / wanted.max(1) as f64, us)
}

/// p50, p99 and mean of `us` (sorted in place); also for `bench device`.
pub(crate) fn latency(us: &mut [f64]) -> Value {
    us.sort_by(f64::total_cmp);
    let at = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize];
    json!({
        "p50": at(0.5),
        "p99": at(0.99),
        "mean": us.iter().sum::<f64>() / us.len() as f64,
    })
}
