//! `bespoke bench cluster`: Bespoke on PostgreSQL, one node and two, on this machine.
//!
//! 1. **Ingest**: durable HTTP ingestion through one node, `--batch`-event requests over
//!    `--connections` keep-alive connections, on PostgreSQL and (side by side, same run) on the
//!    embedded SQLite store.
//! 2. **Two nodes** on one schema, the demo shop loaded and trained on node A (node B follows
//!    its model): the time from an event's acknowledgement by A to a changed recommendation read
//!    from B; recommendation throughput through A alone, then spread over A and B.
//! 3. **Soak** (`--soak-secs`): both nodes take events and serve recommendations for that long;
//!    the resident memory is sampled every 10 s and every failed request counted.
//!
//! Everything runs in this process, load generator included, so the nodes and the clients share
//! the machine's cores: on a small machine the two-node throughput measures the cores, not the
//! nodes (the report says how many there are). Each phase uses a fresh schema, dropped after.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bespoke_algo::Rng;
use bespoke_server::Settings;
use bespoke_server::auth::Scope;
use clap::Args;
use serde_json::json;

use crate::bench::{Client, get_concurrently, ingest_over_http, item_keys};

#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// The PostgreSQL server (a fresh schema is made in it per phase and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// Events sent in the ingestion phase.
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Events per ingestion request.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Concurrent connections of the ingestion phase.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Event-to-other-node trials.
    #[arg(long, default_value_t = 300)]
    trials: usize,
    /// Recommendation requests per throughput measurement.
    #[arg(long, default_value_t = 40_000)]
    requests: usize,
    /// Concurrent connections of the throughput measurements.
    #[arg(long, default_value_t = 32)]
    rec_connections: usize,
    /// Users of the demo shop.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Items of the demo shop.
    #[arg(long, default_value_t = 5_000)]
    items: usize,
    /// Events of the demo shop.
    #[arg(long, default_value_t = 200_000)]
    shop_events: usize,
    /// Seconds of the soak (0: no soak).
    #[arg(long, default_value_t = 0)]
    soak_secs: u64,
    /// Skip the ingestion phase.
    #[arg(long)]
    no_ingest: bool,
}

/// A schema of its own on the server, dropped when this goes.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str, tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            url: url.to_owned(),
            name: format!("bench_{tag}_{}_{nanos}", std::process::id()),
        }
    }

    fn settings(&self, base: &Settings) -> Settings {
        let mut s = base.clone();
        s.store.url = self.url.clone();
        s.store.schema = self.name.clone();
        s
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // The blocking client must not run on an async runtime's thread.
        let dropped = std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop schema {}", self.name);
        }
    }
}

/// Settings of a benchmark node: a loopback port, nothing in the background.
fn quiet(mut s: Settings, work: &std::path::Path, name: &str) -> Settings {
    // A data directory of its own even on PostgreSQL: key files and the like go there.
    s.store.data_dir = work.join(name);
    // Made here: on PostgreSQL nothing else creates it.
    let _ = std::fs::create_dir_all(&s.store.data_dir);
    s.server.bind = "127.0.0.1:0".parse().expect("valid address");
    s.training.evaluate = false;
    s.training.train_on_start = false;
    s.training.interval_minutes = 0;
    s.training.min_new_events = 0;
    s.training.tune_interval_hours = 0.0;
    s
}

pub(crate) fn run(settings: &Settings, a: &ClusterArgs) -> anyhow::Result<serde_json::Value> {
    if a.batch == 0 || a.connections == 0 || a.events == 0 || a.rec_connections < 2 {
        bail!("--events, --batch and --connections must be at least 1, --rec-connections 2");
    }
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let mut report = json!({
        "bench": "cluster",
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    if !a.no_ingest {
        let schema = Schema::new(&a.postgres, "ingest");
        let pg = ingest_over_http(
            quiet(schema.settings(settings), work.path(), "pg"),
            a.events,
            a.batch,
            a.connections,
        )?;
        drop(schema);
        let sqlite = ingest_over_http(
            quiet(settings.clone(), work.path(), "sqlite"),
            a.events,
            a.batch,
            a.connections,
        )?;
        report["ingest"] = json!({
            "events": a.events, "batch": a.batch, "connections": a.connections,
            "postgres": pg, "sqlite": sqlite,
            "postgres_over_sqlite": pg["events_per_sec"].as_f64().unwrap_or(0.0)
                / sqlite["events_per_sec"].as_f64().unwrap_or(f64::NAN),
            "target_postgres_events_per_sec": 30_000,
        });
    }
    let schema = Schema::new(&a.postgres, "nodes");
    report["two_nodes"] = two_nodes(settings, &schema, work.path(), a)?;
    drop(schema);
    Ok(report)
}

/// Current resident set size of this process, in MiB (Linux `VmRSS`).
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn two_nodes(
    settings: &Settings,
    schema: &Schema,
    work: &std::path::Path,
    a: &ClusterArgs,
) -> anyhow::Result<serde_json::Value> {
    let s_a = quiet(schema.settings(settings), work, "node-a");
    let s_b = quiet(schema.settings(settings), work, "node-b");
    // The shop goes in through the store (as `bespoke demo` loads it), then A trains.
    let loaded = Instant::now();
    let store = bespoke_server::open_store(&s_a)?;
    let shop = crate::demo::generate(42, a.users, a.items, a.shop_events, 1_767_225_600_000);
    crate::demo::load(&*store, shop)?;
    let engine_a = Arc::new(bespoke_server::Engine::open(store, Arc::new(s_a))?);
    engine_a.train(|_| {})?;
    let (key, _) =
        engine_a
            .access()
            .create_key("bench", "bench", &[Scope::Read, Scope::Write], None)?;
    let setup_secs = loaded.elapsed().as_secs_f64();
    let b_opened = Instant::now();
    let store_b = bespoke_server::open_store(&s_b)?;
    let engine_b = Arc::new(bespoke_server::Engine::open(store_b, Arc::new(s_b))?);
    let b_open_secs = b_opened.elapsed().as_secs_f64();
    let (users, trials, requests, conns, soak) = (
        a.users,
        a.trials,
        a.requests,
        a.rec_connections,
        a.soak_secs,
    );
    crate::runtime()?.block_on(async move {
        let node_a = bespoke_server::start_with_engine(engine_a).await?;
        let node_b = bespoke_server::start_with_engine(engine_b).await?;
        let (addr_a, addr_b) = (node_a.addr(), node_b.addr());

        // Event on A, changed recommendation on B.
        let mut on_a = Client::connect(addr_a, &key).await?;
        let mut on_b = Client::connect(addr_b, &key).await?;
        let mut rng = Rng::seed_from_u64(9);
        let mut delays = Vec::with_capacity(trials);
        let mut t = 0;
        while delays.len() < trials {
            t += 1;
            let user = format!("user-{:05}", rng.below(users as u64));
            let path = format!("/v1/users/{user}/recommendations?n=10");
            let first = on_b.call("GET", &path, None).await?;
            if first["personalized"] != true {
                continue;
            }
            let before = item_keys(&first);
            let Some(item) = before.first().cloned() else {
                continue;
            };
            let body = serde_json::to_vec(&json!({ "events": [
                { "event_id": format!("x-{t}"), "user": user, "item": item, "type": "purchase" }
            ]}))?;
            on_a.call("POST", "/v1/events", Some(body)).await?;
            let acked = Instant::now();
            loop {
                let after = item_keys(&on_b.call("GET", &path, None).await?);
                if after != before {
                    delays.push(acked.elapsed());
                    break;
                }
                if acked.elapsed() > Duration::from_secs(5) {
                    bail!("node B did not change {user}'s recommendations within 5 s of node A's acknowledgement");
                }
            }
        }
        delays.sort();
        let pct = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        let propagation = json!({
            "trials": trials,
            "ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
            "target_p99_ms": 1000,
        });

        // Throughput: one node, then both.
        let paths: Vec<String> = (0..requests)
            .map(|i| format!("/v1/users/user-{:05}/recommendations?n=10", (i * 7919) % users))
            .collect();
        let (n, secs) = get_concurrently(addr_a, &key, paths.clone(), conns).await?;
        let one = n as f64 / secs;
        let (half_a, half_b): (Vec<String>, Vec<String>) = {
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (i, p) in paths.into_iter().enumerate() {
                if i % 2 == 0 { a.push(p) } else { b.push(p) }
            }
            (a, b)
        };
        let started = Instant::now();
        let (ra, rb) = tokio::join!(
            get_concurrently(addr_a, &key, half_a, conns / 2),
            get_concurrently(addr_b, &key, half_b, conns - conns / 2),
        );
        let two = (ra?.0 + rb?.0) as f64 / started.elapsed().as_secs_f64();
        let throughput = json!({
            "requests": requests, "connections": conns,
            "one_node_req_per_sec": one, "two_nodes_req_per_sec": two, "ratio": two / one,
            "target_ratio": 1.6,
        });

        let soak_report = if soak > 0 {
            Some(soak_run(addr_a, addr_b, &key, users, soak).await?)
        } else {
            None
        };
        node_a.shutdown().await?;
        node_b.shutdown().await?;
        Ok(json!({
            "shop": { "users": users, "setup_secs": setup_secs },
            "node_b_start_secs": b_open_secs,
            "event_on_a_to_changed_recommendation_on_b": propagation,
            "recommendations": throughput,
            "soak": soak_report,
        }))
    })
}

/// Distinct (user, item) pairs each soak writer draws its events from.
const SOAK_PAIRS: usize = 20_000;

/// Events and recommendations on both nodes for `secs` seconds.
async fn soak_run(
    addr_a: std::net::SocketAddr,
    addr_b: std::net::SocketAddr,
    key: &str,
    users: usize,
    secs: u64,
) -> anyhow::Result<serde_json::Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (w, addr) in [addr_a, addr_b, addr_a, addr_b].into_iter().enumerate() {
        let (stop, errors, served, key) =
            (stop.clone(), errors.clone(), served.clone(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr, &key).await?;
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                i += 4;
                let path = format!(
                    "/v1/users/user-{:05}/recommendations?n=10",
                    (i * 7919) % users
                );
                match c.call_bytes("GET", &path, None).await {
                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        c = Client::connect(addr, &key).await?;
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            anyhow::Ok(())
        }));
    }
    for (w, addr) in [addr_a, addr_b].into_iter().enumerate() {
        let (stop, errors, sent, key) =
            (stop.clone(), errors.clone(), sent.clone(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr, &key).await?;
            let mut rng = Rng::seed_from_u64(100 + w as u64);
            // A fixed pool of (user, item) pairs, visited again and again: memory holds one
            // entry per pair, so once every pair was seen, a leak is the only thing that grows.
            let pairs: Vec<(u64, u64)> = (0..SOAK_PAIRS)
                .map(|_| (rng.below(users as u64), rng.below(5_000)))
                .collect();
            let mut batch = 0u64;
            while !stop.load(Ordering::Relaxed) {
                batch += 1;
                let evs: Vec<_> = (0..100)
                    .map(|j| {
                        let (u, i) = pairs[rng.below(SOAK_PAIRS as u64) as usize];
                        json!({
                            "event_id": format!("soak-{w}-{batch}-{j}"),
                            "user": format!("user-{u:05}"),
                            "item": format!("sku-{i:05}"),
                            "type": "view",
                        })
                    })
                    .collect();
                let body = serde_json::to_vec(&json!({ "events": evs }))?;
                match c.call_bytes("POST", "/v1/events", Some(body)).await {
                    Ok(_) => sent.fetch_add(100, Ordering::Relaxed),
                    Err(_) => {
                        c = Client::connect(addr, &key).await?;
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
                // About 1,000 events a second per node: a busy shop, not a flood.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed().as_secs() < secs {
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push(json!({
            "at_secs": started.elapsed().as_secs(),
            "rss_mib": rss_mib(),
            "served": served.load(Ordering::Relaxed),
            "events": sent.load(Ordering::Relaxed),
        }));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.context("soak task")??;
    }
    let rss: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["rss_mib"].as_f64())
        .collect();
    // Flat: the last fifth against the second fifth (the first holds the warm-up).
    let fifth = (rss.len() / 5).max(1);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let early = mean(&rss[fifth.min(rss.len())..(2 * fifth).min(rss.len())]);
    let late = mean(&rss[rss.len().saturating_sub(fifth)..]);
    Ok(json!({
        "seconds": secs,
        "requests_served": served.load(Ordering::Relaxed),
        "events_sent": sent.load(Ordering::Relaxed),
        "errors": errors.load(Ordering::Relaxed),
        "rss_mib": { "early": early, "late": late, "growth": late - early,
                     "max": rss.iter().copied().fold(0.0, f64::max) },
        "samples": samples,
    }))
}
