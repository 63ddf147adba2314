//! Store throughput: durable appends (WAL, synchronous=FULL) and paginated reads.
//! Run with `cargo bench -p bespoke-store`. `bespoke bench import|ingest` measures the whole
//! pipelines; these isolate the store.

use bespoke_store::prelude::*;
use bespoke_store::{EventBatch, NewEvent, SqliteStore, StoreOptions};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

fn events(n: usize, offset: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|k| NewEvent {
            value: Some(4.0),
            timestamp: Some(1_700_000_000_000 + (offset + k) as i64),
            ..NewEvent::new(
                format!("u{}", (offset + k) * 7919 % 6000),
                format!("i{}", (offset + k) * 104_729 % 4000),
                "rating",
            )
        })
        .collect()
}

/// One durable transaction of `batch` events (the HTTP group-commit unit).
#[divan::bench(args = [1_000, 10_000], sample_count = 20)]
fn append_batch(bencher: Bencher, batch: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).expect("store opens");
    let mut offset = 0;
    bencher
        .counter(divan::counter::ItemsCount::new(batch))
        .with_inputs(|| {
            offset += batch;
            events(batch, offset)
        })
        .bench_local_values(|evs| store.append_events(EventBatch::new(evs)).expect("appended"));
}

#[divan::bench(sample_count = 50)]
fn user_events_page100_of_200k(bencher: Bencher) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).expect("store opens");
    for chunk in 0..20 {
        store
            .append_events(EventBatch::new(events(10_000, chunk * 10_000)))
            .expect("appended");
    }
    bencher.bench_local(|| black_box(store.user_events("u17", None, 100).expect("read")));
}

/// The PostgreSQL server the PostgreSQL benchmarks use (`BESPOKE_TEST_POSTGRES_URL`, by
/// default the local one CI machines run).
fn postgres_url() -> String {
    std::env::var("BESPOKE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// One transaction of `batch` events on PostgreSQL (server on this machine, `synchronous_commit`
/// on), on a fresh schema dropped after; skipped with a notice when the server is unreachable.
#[divan::bench(args = [1_000], sample_count = 30)]
fn append_batch_postgres(bencher: Bencher, batch: usize) {
    let url = postgres_url();
    let schema = format!("bench_store_{}", std::process::id());
    let store = match bespoke_store::PgStore::open(
        bespoke_store::PgOptions::new(url.clone()).schema(schema.clone()),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED append_batch_postgres: {e}");
            return;
        }
    };
    let mut offset = 0;
    bencher
        .counter(divan::counter::ItemsCount::new(batch))
        .with_inputs(|| {
            offset += batch;
            events(batch, offset)
        })
        .bench_local_values(|evs| store.append_events(EventBatch::new(evs)).expect("appended"));
    store.close();
    if let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}
