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
