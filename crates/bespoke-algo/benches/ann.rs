//! Approximate top-k for large catalogs (`bespoke_algo::ann`): the HNSW search against the
//! exact scan on the same items, and the graph build. Seeded synthetic factors (trained-like:
//! clustered, log-normal norms; and the same at unit length, what similar items score); sizes
//! are in the bench names. The million-item figures come from `bespoke bench ann`, which also
//! measures recall. Run with `cargo bench -p bespoke-algo --bench ann`.

use bespoke_algo::ann::Hnsw;
use bespoke_algo::ann::synthetic::{self, Shape};
use bespoke_algo::{AnnParams, AnnScorer, ScoreScratch};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const DIM: usize = 64;
const QUERIES: usize = 64;

fn shape(name: &str) -> Shape {
    if name == "unit" {
        Shape::Unit
    } else {
        Shape::Trained
    }
}

/// Top-10 through the graph at the default `ef`, rotating over 64 queries.
#[divan::bench(args = ["trained", "unit"])]
fn ann_top10_items100k_dim64(bencher: Bencher, name: &str) {
    let s = shape(name);
    let scorer = AnnScorer::new(
        synthetic::items(s, 100_000, DIM, 1),
        1,
        AnnParams::default(),
    );
    let queries = synthetic::queries(s, QUERIES, DIM, 1);
    let mut scratch = ScoreScratch::default();
    let mut q = 0;
    bencher.bench_local(|| {
        q = (q + 1) % QUERIES;
        black_box(scorer.top_k(queries.row(q), 10, |_| true, &mut scratch))
    });
}

/// Top-10 by the exact scan on the same items, rotating over the same queries.
#[divan::bench(args = ["trained", "unit"])]
fn exact_top10_items100k_dim64(bencher: Bencher, name: &str) {
    let s = shape(name);
    let scorer = AnnScorer::exact(synthetic::items(s, 100_000, DIM, 1));
    let queries = synthetic::queries(s, QUERIES, DIM, 1);
    let mut scratch = ScoreScratch::default();
    let mut q = 0;
    bencher.bench_local(|| {
        q = (q + 1) % QUERIES;
        black_box(scorer.top_k(queries.row(q), 10, |_| true, &mut scratch))
    });
}

/// Top-10 through the graph with a filter accepting a tenth of the items.
#[divan::bench]
fn ann_top10_filtered10pct_items100k_dim64(bencher: Bencher) {
    let scorer = AnnScorer::new(
        synthetic::items(Shape::Unit, 100_000, DIM, 1),
        1,
        AnnParams::default(),
    );
    let queries = synthetic::queries(Shape::Unit, QUERIES, DIM, 1);
    let mut scratch = ScoreScratch::default();
    let mut q = 0;
    bencher.bench_local(|| {
        q = (q + 1) % QUERIES;
        black_box(scorer.top_k(queries.row(q), 10, |i| i.is_multiple_of(10), &mut scratch))
    });
}

/// The graph build (on the rayon pool).
#[divan::bench(sample_count = 3)]
fn build_items50k_dim64(bencher: Bencher) {
    let items = synthetic::items(Shape::Trained, 50_000, DIM, 1);
    bencher.bench_local(|| black_box(Hnsw::build(&items, &AnnParams::default())));
}
