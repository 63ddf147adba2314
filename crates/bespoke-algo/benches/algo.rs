//! Hot paths of serving: top-k selection, popularity ranking, co-occurrence, id lookups.
//! Seeded synthetic data; sizes are in the bench names. Run with `cargo bench -p bespoke-algo`.

use bespoke_algo::{IdMap, ItemIdx, LiveIndex, Popularity, Rng, TopK, UserIdx};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

#[divan::bench(args = [10_000, 100_000])]
fn topk_k10(bencher: Bencher, items: usize) {
    let mut rng = Rng::seed_from_u64(1);
    let scores: Vec<f32> = (0..items).map(|_| rng.f64() as f32).collect();
    let mut top = TopK::new(10);
    bencher.bench_local(|| {
        top.reset(10);
        for (i, &s) in scores.iter().enumerate() {
            top.push(i as u32, s);
        }
        black_box(top.drain_sorted())
    });
}

/// A live index of `events` events over 20k items and 50k users, Zipf-ish item popularity.
fn live(events: usize) -> LiveIndex {
    let mut rng = Rng::seed_from_u64(2);
    let mut live = LiveIndex::new(Popularity::new(86_400_000.0));
    for e in 0..events {
        let u = rng.below(50_000) as u32;
        let i = (rng.f64().powi(3) * 20_000.0) as u32;
        live.apply(UserIdx(u), ItemIdx(i), 1.0, e as i64 * 1000);
    }
    live
}

#[divan::bench(args = [500_000])]
fn popular_top10_items20k(bencher: Bencher, events: usize) {
    let live = live(events);
    bencher.bench_local(|| black_box(live.popularity().top_all_time(10, |_| true)));
}

#[divan::bench(args = [500_000])]
fn seen_filtered_popular_items20k(bencher: Bencher, events: usize) {
    let live = live(events);
    let user = UserIdx(7);
    bencher.bench_local(|| {
        black_box(
            live.popularity()
                .top_all_time(10, |i| !live.has_seen(user, i)),
        )
    });
}

#[divan::bench(args = [500_000])]
fn related_top10_max_users2000(bencher: Bencher, events: usize) {
    let live = live(events);
    bencher.bench_local(|| black_box(live.related(ItemIdx(3), 10, 2000, |_| true)));
}

#[divan::bench(args = [100_000])]
fn id_map_lookup(bencher: Bencher, keys: usize) {
    let mut map = IdMap::new();
    let names: Vec<String> = (0..keys).map(|i| format!("user-{i:07}")).collect();
    for n in &names {
        map.get_or_assign(n);
    }
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 7919) % keys;
        black_box(map.get(&names[i]))
    });
}

fn factors(rows: usize, dim: usize, seed: u64) -> bespoke_algo::Factors {
    let mut rng = Rng::seed_from_u64(seed);
    bespoke_algo::Factors::from_vec(
        rows,
        dim,
        (0..rows * dim).map(|_| rng.normal() as f32 * 0.1).collect(),
    )
    .expect("sizes")
}

/// Single-user exact top-20 over 20k items, f = 64: a full f32 scan.
#[divan::bench]
fn als_top20_items20k_f64_full_scan(bencher: Bencher) {
    let items = factors(20_000, 64, 3);
    let x: Vec<f32> = factors(1, 64, 4).into_vec();
    let mut top = TopK::new(20);
    bencher.bench_local(|| {
        black_box(bespoke_algo::als::recommend(
            &x,
            &items,
            20,
            |_| true,
            &mut top,
        ))
    });
}

/// The same through the two-pass quantized scorer (exact as well).
#[divan::bench(args = [5_000, 20_000])]
fn als_top20_f64_scorer(bencher: Bencher, items: usize) {
    let scorer = bespoke_algo::ItemScorer::new(factors(items, 64, 3));
    let x: Vec<f32> = factors(1, 64, 4).into_vec();
    let mut scratch = bespoke_algo::ScoreScratch::default();
    bencher.bench_local(|| black_box(scorer.top_k(&x, 20, |_| true, &mut scratch)));
}

/// One iALS iteration (users then items) on 20k users × 5k items with 400k interactions,
/// f = 64, 3 CG steps, on the current rayon pool.
#[divan::bench(sample_count = 10)]
fn als_iteration_users20k_items5k_nnz400k(bencher: Bencher) {
    let mut rng = Rng::seed_from_u64(5);
    let triples: Vec<(u32, u32, f32)> = (0..400_000)
        .map(|_| {
            (
                rng.below(20_000) as u32,
                (rng.f64().powi(2) * 5_000.0) as u32,
                1.0 + rng.below(3) as f32,
            )
        })
        .collect();
    let weights = bespoke_algo::Csr::from_triples(20_000, 5_000, &triples, false);
    let params = bespoke_algo::AlsParams {
        iterations: 1,
        ..Default::default()
    };
    bencher.bench_local(|| black_box(bespoke_algo::Als::fit(&weights, params, |_| {})));
}
