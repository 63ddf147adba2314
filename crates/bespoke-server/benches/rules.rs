//! Business rules: parse + compile of a 20-clause expression, and evaluation over 20k items
//! (the top-k scan's per-request cost). Seeded synthetic data; run with
//! `cargo bench -p bespoke-server --bench rules`.

use std::collections::BTreeMap;

use bespoke_algo::Rng;
use bespoke_server::rules::{Cache, Columns, Limits, compile, parse};
use bespoke_store::{Item, ItemIdx};
use divan::{Bencher, black_box};
use serde_json::json;

fn main() {
    divan::main();
}

/// 20 clauses over numbers, strings, lists, booleans and timestamps.
const RULE20: &str = r#"price < 50 and price >= 5 and brand != "Acme" and
    category in ["Kitchen", "Garden", "Tools"] and not (tags contains "clearance") and
    available = true and created_at > now - 365d and (rating >= 3.5 or exists(featured)) and
    (brand in ["B1", "B2", "B3", "B4"] or stock > 10) and release < now + 30d and
    not (color = "pink") and weight <= 20 and (size = "M" or size = "L" or size = "XL") and
    updated_at > date("2020-01-01") and item != "excluded" and stock >= 0"#;

fn pick(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// 20 clauses that every item passes, so none is skipped by short-circuiting: the worst case.
const RULE20_ALL_TRUE: &str = r#"price >= 0 and price < 1000 and brand != "zzz" and
    category in ["Kitchen", "Garden", "Tools", "Toys", "Books"] and
    not (tags contains "zzz") and exists(price) and created_at > date("2000-01-01") and
    rating >= 0 and stock >= 0 and weight >= 0 and color != "zzz" and
    size in ["S", "M", "L", "XL"] and release < now + 3650d and updated_at > now - 3650d and
    item != "zzz" and brand contains "B" and exists(tags) and rating < 10 and weight < 100 and
    stock < 100"#;

/// `n` items with random prices, brands, categories, tags and dates.
fn columns(n: u32) -> Columns {
    let mut rng = Rng::seed_from_u64(7);
    let cats = ["Kitchen", "Garden", "Tools", "Toys", "Books"];
    let sizes = ["S", "M", "L", "XL"];
    let mut cols = Columns::new();
    for i in 0..n {
        let mut numeric = BTreeMap::new();
        numeric.insert("price".to_string(), rng.f64() * 100.0);
        numeric.insert("rating".to_string(), rng.f64() * 5.0);
        numeric.insert("stock".to_string(), pick(&mut rng, 30) as f64);
        numeric.insert("weight".to_string(), rng.f64() * 40.0);
        let mut text = BTreeMap::new();
        text.insert("brand".to_string(), format!("B{}", pick(&mut rng, 20)));
        text.insert(
            "color".to_string(),
            ["pink", "blue", "red"][pick(&mut rng, 3)].to_string(),
        );
        text.insert("size".to_string(), sizes[pick(&mut rng, 4)].to_string());
        let mut attributes = serde_json::Map::new();
        let tags = if pick(&mut rng, 10) == 0 {
            json!(["clearance"])
        } else {
            json!(["new"])
        };
        attributes.insert("tags".into(), tags);
        attributes.insert(
            "release".into(),
            json!(format!("2025-{:02}-01", 1 + pick(&mut rng, 12))),
        );
        if pick(&mut rng, 5) == 0 {
            attributes.insert("featured".into(), json!(true));
        }
        let item = Item {
            idx: ItemIdx(i),
            key: format!("item{i}"),
            categories: vec![cats[pick(&mut rng, cats.len())].to_string()],
            text,
            numeric,
            attributes,
            embeddings: BTreeMap::new(),
            available: pick(&mut rng, 10) != 0,
            created_at: 1_750_000_000_000 + pick(&mut rng, 1_000_000_000) as i64,
            updated_at: 1_760_000_000_000,
        };
        cols.set_item(i, &item);
    }
    cols
}

#[divan::bench]
fn parse_compile_clauses20(bencher: Bencher) {
    let cols = columns(1000);
    let limits = Limits::default();
    bencher.bench_local(|| {
        let expr = parse(black_box(RULE20), &limits).expect("the rule parses");
        black_box(compile(&expr, &cols).expect("the rule compiles"))
    });
}

#[divan::bench]
fn cache_hit_clauses20(bencher: Bencher) {
    let cols = columns(1000);
    let limits = Limits::default();
    let cache = Cache::new(1024);
    bencher.bench_local(|| black_box(cache.get(black_box(RULE20), &cols, &limits)));
}

#[divan::bench(args = [20_000])]
fn eval_clauses20_items(bencher: Bencher, n: u32) {
    eval(bencher, n, RULE20);
}

#[divan::bench(args = [20_000])]
fn eval_clauses20_all_true_items(bencher: Bencher, n: u32) {
    eval(bencher, n, RULE20_ALL_TRUE);
}

fn eval(bencher: Bencher, n: u32, rule: &str) {
    let cols = columns(n);
    let expr = parse(rule, &Limits::default()).expect("the rule parses");
    let bound = compile(&expr, &cols)
        .expect("the rule compiles")
        .bind(1_767_225_600_000, None)
        .expect("no context to bind");
    bencher
        .counter(divan::counter::ItemsCount::new(n))
        .bench_local(|| (0..n).filter(|&i| bound.eval(&cols, i)).count());
}
