//! `bespoke bench`: throughput benchmarks that print one JSON object each.
//!
//! - `import`: CSV import rate on MovieLens-style rows (seeded synthetic `u.data`-format file,
//!   or a file you give), into a fresh store, median of `--runs`.
//! - `ingest`: durable HTTP ingest rate: an in-process server on a loopback port and
//!   `--connections` keep-alive clients posting `--batch`-event requests; every request is
//!   acknowledged only after its transaction committed with `synchronous=FULL`.
//!
//! Targets live here and in `docs/benchmarks.md`, never in timed unit tests.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bespoke_algo::Rng;
use bespoke_server::Settings;
use bespoke_server::auth::Scope;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::json;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// CSV import rate on MovieLens-style rows.
    Import {
        /// Rows in the synthetic file.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Distinct users in the synthetic file.
        #[arg(long, default_value_t = 6_040)]
        users: u64,
        /// Distinct items in the synthetic file.
        #[arg(long, default_value_t = 3_706)]
        items: u64,
        /// Import this MovieLens `u.data`-format file instead of a synthetic one.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Repetitions (each into a fresh store); the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Time from an event's acknowledgement to the changed recommendation, over HTTP, on a
    /// trained demo shop.
    Realtime {
        /// Trials (one user and one event each).
        #[arg(long, default_value_t = 300)]
        trials: usize,
        /// Users of the demo shop.
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// Items of the demo shop.
        #[arg(long, default_value_t = 5_000)]
        items: usize,
        /// Events of the demo shop.
        #[arg(long, default_value_t = 500_000)]
        events: usize,
    },
    /// Latency over HTTP on a trained demo shop, one keep-alive connection: ranking
    /// `--candidates` supplied items (`POST /v1/users/{key}/rank`) and, for comparison,
    /// recommendations (`GET /v1/users/{key}/recommendations?n=20`), for rotating users.
    Rank {
        /// Requests of each kind.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// Candidates per rank request.
        #[arg(long, default_value_t = 200)]
        candidates: usize,
        /// Users of the demo shop.
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// Items of the demo shop.
        #[arg(long, default_value_t = 5_000)]
        items: usize,
        /// Events of the demo shop.
        #[arg(long, default_value_t = 500_000)]
        events: usize,
    },
    /// Contextual-bandit learner on a `bench/bandit_env.py` environment: average reward,
    /// regret against the optimal policy, decisions per second (in process).
    Bandit {
        /// The environment file written by `bench/bandit_env.py`.
        #[arg(long)]
        env: PathBuf,
        /// Learner configuration as JSON (a loop's `learner` object); defaults otherwise.
        #[arg(long)]
        learner: Option<String>,
        /// Seed of the exploration draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Decisions per second over HTTP: an in-process server on a loopback port, `--connections`
    /// keep-alive clients asking for decisions among `--actions` actions, each (context, action)
    /// pair carrying `--features` features; every decision is logged durably before it is
    /// answered.
    Decisions {
        /// Decisions in total.
        #[arg(long, default_value_t = 50_000)]
        decisions: usize,
        /// Actions per decision.
        #[arg(long, default_value_t = 10)]
        actions: usize,
        /// Features per (context, action) pair: 40% context, 60% action.
        #[arg(long, default_value_t = 50)]
        features: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// Business rules on a trained demo shop: in-process top-20 with and without a filter
    /// matching 10% of the catalog plus a boost, the cost of compiling a 20-clause
    /// expression, and HTTP throughput with and without a saved default rule.
    Rules {
        /// In-process requests of each kind.
        #[arg(long, default_value_t = 5000)]
        requests: usize,
        /// HTTP requests of each kind.
        #[arg(long, default_value_t = 20_000)]
        http_requests: usize,
        /// Concurrent keep-alive connections for the HTTP part.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Users of the demo shop.
        #[arg(long, default_value_t = 5000)]
        users: usize,
        /// Items of the demo shop.
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        /// Events of the demo shop.
        #[arg(long, default_value_t = 300_000)]
        events: usize,
    },
    /// Fairness on a trained demo shop: in-process top-20 p99 without re-rankers and with
    /// calibration, popularity debiasing and a protected group's share (each choosing from
    /// 200 candidates), the re-rankers alone on 200 candidates, and the time of the fairness
    /// report over every user.
    Fairness {
        /// In-process requests of each kind.
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        /// Users of the demo shop.
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Items of the demo shop.
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        /// Events of the demo shop.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Audiences on a trained demo shop: `Engine::audience` for one random item (and for 500
    /// items), every user scored.
    Audience {
        /// Queries of each kind.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Users of the demo shop.
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Items of the demo shop.
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        /// Events of the demo shop.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Durable HTTP ingest rate over loopback.
    Ingest {
        /// Events to send in total.
        #[arg(long, default_value_t = 500_000)]
        events: usize,
        /// Events per request.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Approximate top-k for large catalogs (HNSW) against the exact scan, in process: build
    /// time, recall@k and per-request latency on synthetic factors.
    Ann(crate::bench_ann::AnnArgs),
    /// PostgreSQL, one node and two on this machine: HTTP ingestion (beside SQLite), an event
    /// on one node to a changed recommendation on the other, recommendation throughput, and
    /// an optional soak (`--soak-secs`).
    Cluster(crate::bench_cluster::ClusterArgs),
    /// Ranking on the device over a synthetic bundle (20k items by default): the Rust crate
    /// `bespoke-client` and, side by side, the JavaScript module under Node.
    Device(crate::bench_device::DeviceArgs),
}

pub(crate) fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<()> {
    let report = match &args.what {
        BenchWhat::Import {
            rows,
            users,
            items,
            file,
            runs,
        } => bench_import(settings, *rows, *users, *items, file.clone(), *runs)?,
        BenchWhat::Realtime {
            trials,
            users,
            items,
            events,
        } => bench_realtime(settings, *trials, *users, *items, *events)?,
        BenchWhat::Rank {
            requests,
            candidates,
            users,
            items,
            events,
        } => bench_rank(settings, *requests, *candidates, *users, *items, *events)?,
        BenchWhat::Ingest {
            events,
            batch,
            connections,
        } => bench_ingest(settings, *events, *batch, *connections)?,
        BenchWhat::Decisions {
            decisions,
            actions,
            features,
            connections,
        } => bench_decisions(settings, *decisions, *actions, *features, *connections)?,
        BenchWhat::Bandit { env, learner, seed } => bench_bandit(env, learner.as_deref(), *seed)?,
        BenchWhat::Fairness {
            requests,
            users,
            items,
            events,
        } => bench_fairness(settings, *requests, (*users, *items, *events))?,
        BenchWhat::Audience {
            requests,
            users,
            items,
            events,
        } => bench_audience(settings, *requests, (*users, *items, *events))?,
        BenchWhat::Rules {
            requests,
            http_requests,
            connections,
            users,
            items,
            events,
        } => bench_rules(
            settings,
            *requests,
            *http_requests,
            *connections,
            (*users, *items, *events),
        )?,
        BenchWhat::Ann(a) => crate::bench_ann::run(a)?,
        BenchWhat::Cluster(a) => crate::bench_cluster::run(settings, a)?,
        BenchWhat::Device(a) => crate::bench_device::run(a)?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Peak resident set size of this process, in MiB (Linux `VmHWM`).
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Writes a `u.data`-style file: user, item, rating, Unix seconds; skewed like real ratings.
fn synthetic_ratings(
    path: &std::path::Path,
    rows: usize,
    users: u64,
    items: u64,
) -> anyhow::Result<()> {
    let mut rng = Rng::seed_from_u64(1);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let start = 956_703_932u64; // the first MovieLens 1M rating
    for r in 0..rows {
        // Squaring a uniform draw skews towards low ids: some users and items are far busier.
        let u = 1 + (rng.f64().powi(2) * users as f64) as u64;
        let i = 1 + (rng.f64().powi(2) * items as f64) as u64;
        let rating = 1 + rng.below(5);
        let ts = start + r as u64 * 30 + rng.below(30);
        writeln!(out, "{u}\t{i}\t{rating}\t{ts}")?;
    }
    out.flush()?;
    Ok(())
}

fn bench_import(
    settings: &Settings,
    rows: usize,
    users: u64,
    items: u64,
    file: Option<PathBuf>,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let path = match file {
        Some(f) => f,
        None => {
            let p = work.path().join("u.data");
            synthetic_ratings(&p, rows, users, items)?;
            p
        }
    };
    let bytes = std::fs::metadata(&path)?.len();
    let mut rates = Vec::new();
    let mut seconds = Vec::new();
    let mut imported = 0;
    for run in 0..runs {
        let mut s = settings.clone();
        s.store.data_dir = work.path().join(format!("store-{run}"));
        let store = bespoke_server::open_store(&s)?;
        let args = crate::import::ImportArgs {
            file: path.clone(),
            format: Some(crate::import::Format::Movielens),
            kind: crate::import::Kind::Events,
            user_col: None,
            item_col: None,
            type_col: None,
            event_type: None,
            value_col: None,
            time_col: None,
            id_col: None,
            no_header: true,
            on_error: crate::import::OnError::Stop,
            batch: 100_000,
            quiet: true,
            json: true,
        };
        let summary = crate::import::import(&*store, &s, &args)?;
        imported = summary.imported;
        rates.push(summary.per_second);
        seconds.push(summary.seconds);
    }
    Ok(json!({
        "bench": "import",
        "file": path.display().to_string(),
        "bytes": bytes,
        "rows": imported,
        "runs": runs,
        "seconds_median": median(&mut seconds),
        "rows_per_sec_median": median(&mut rates.clone()),
        "rows_per_sec_all": rates,
        "target_rows_per_sec": 300_000,
        "peak_rss_mib": peak_rss_mib(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }))
}

fn bench_ingest(
    settings: &Settings,
    events: usize,
    batch: usize,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    if batch == 0 || connections == 0 || events == 0 {
        bail!("--events, --batch and --connections must be at least 1");
    }
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let mut s = settings.clone();
    // A subdirectory, so that the audit key file (beside the data directory) is removed too.
    s.store.data_dir = work.path().join("store");
    s.server.bind = "127.0.0.1:0".parse().expect("valid address");
    // Ingestion alone: no background training competing for the two cores.
    s.training.train_on_start = false;
    s.training.interval_minutes = 0;
    s.training.min_new_events = 0;
    let mut report = ingest_over_http(s, events, batch, connections)?;
    let extra = json!({
        "bench": "ingest",
        "events": events,
        "batch": batch,
        "connections": connections,
        "target_events_per_sec": 50_000,
        "durable": "WAL, synchronous=FULL, acknowledged after commit",
        "peak_rss_mib": peak_rss_mib(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    for (k, v) in extra.as_object().expect("an object") {
        report[k] = v.clone();
    }
    Ok(report)
}

/// Durable HTTP ingestion through a server started with `s` (its store and bind address
/// chosen by the caller): `events` random events in `batch`-event requests over
/// `connections` keep-alive connections, every one acknowledged after its commit. Reports
/// the seconds, events per second, requests per second and request latencies.
pub(crate) fn ingest_over_http(
    mut s: Settings,
    events: usize,
    batch: usize,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    s.limits.max_batch_events = s.limits.max_batch_events.max(batch);
    // Pre-built bodies, so that the client measures the server, not its own JSON encoding.
    let mut rng = Rng::seed_from_u64(2);
    let kinds = ["view", "view", "view", "click", "add_to_cart", "purchase"];
    let bodies: Vec<Bytes> = (0..events.div_ceil(batch))
        .map(|b| {
            let n = batch.min(events - b * batch);
            let evs: Vec<serde_json::Value> = (0..n)
                .map(|_| {
                    json!({
                        "user": format!("u{}", rng.below(50_000)),
                        "item": format!("i{}", rng.below(20_000)),
                        "type": kinds[rng.below(kinds.len() as u64) as usize],
                    })
                })
                .collect();
            Bytes::from(serde_json::to_vec(&json!({ "events": evs })).expect("serialisable"))
        })
        .collect();
    let runtime = crate::runtime()?;
    runtime.block_on(async move {
        let server = bespoke_server::start(s).await?;
        let addr = server.addr();
        // Requests carry a key, so the figures include authentication.
        let engine = server.engine().clone();
        let (key, _) = tokio::task::spawn_blocking(move || {
            engine
                .access()
                .create_key("bench", "bench", &[Scope::Write], None)
        })
        .await??;
        let (latencies, elapsed) =
            post_concurrently(addr, &key, "/v1/events", bodies, None, connections).await?;
        let stored = server.engine().counts().events;
        server.shutdown().await?;
        if stored != events as u64 {
            bail!("sent {events} events but {stored} were stored");
        }
        let pct =
            |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        Ok(json!({
            "seconds": elapsed,
            "events_per_sec": events as f64 / elapsed,
            "requests_per_sec": latencies.len() as f64 / elapsed,
            "request_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
        }))
    })
}

/// Decision throughput over HTTP (see [`BenchWhat::Decisions`]).
fn bench_decisions(
    settings: &Settings,
    decisions: usize,
    actions: usize,
    features: usize,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    if decisions == 0 || actions == 0 || connections == 0 || features < 2 {
        bail!("--decisions, --actions and --connections must be at least 1, --features at least 2");
    }
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let mut s = settings.clone();
    // A subdirectory, so that the audit key file (beside the data directory) is removed too.
    s.store.data_dir = work.path().join("store");
    s.server.bind = "127.0.0.1:0".parse().expect("valid address");
    s.training.train_on_start = false;
    s.training.interval_minutes = 0;
    s.training.min_new_events = 0;
    let context_features = features * 2 / 5;
    let action_features = features - context_features;
    // 1,000 distinct request bodies, reused in turn: the client measures the server.
    let mut rng = Rng::seed_from_u64(3);
    let bodies: Vec<Bytes> = (0..1000)
        .map(|_| {
            let mut context = serde_json::Map::new();
            for f in 0..context_features {
                let v = if f % 2 == 0 {
                    json!(format!("v{}", rng.below(20)))
                } else {
                    json!((rng.f64() * 100.0).round() / 100.0)
                };
                context.insert(format!("c{f}"), v);
            }
            let acts: Vec<serde_json::Value> = (0..actions)
                .map(|a| {
                    let mut f = serde_json::Map::new();
                    for k in 0..action_features {
                        let v = if k % 2 == 0 {
                            json!(format!("t{}", rng.below(10)))
                        } else {
                            json!((rng.f64() * 100.0).round() / 100.0)
                        };
                        f.insert(format!("a{k}"), v);
                    }
                    json!({ "id": format!("action-{a}"), "features": f })
                })
                .collect();
            Bytes::from(
                serde_json::to_vec(&json!({ "context": context, "actions": acts }))
                    .expect("serialisable"),
            )
        })
        .collect();
    let body_bytes = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len();
    let runtime = crate::runtime()?;
    runtime.block_on(async move {
        let server = bespoke_server::start(s).await?;
        let addr = server.addr();
        let engine = server.engine().clone();
        let (key, _) = tokio::task::spawn_blocking(move || {
            engine
                .access()
                .create_key("bench", "bench", &[Scope::Write], None)
        })
        .await??;
        let (latencies, elapsed) = post_concurrently(
            addr,
            &key,
            "/v1/loops/bench/decisions",
            bodies,
            Some(decisions),
            connections,
        )
        .await?;
        let engine = server.engine().clone();
        let logged = tokio::task::spawn_blocking(move || engine.decisions().view("bench"))
            .await??
            .stats
            .decisions;
        server.shutdown().await?;
        if logged != decisions as u64 {
            bail!("made {decisions} decisions but {logged} were logged");
        }
        let pct =
            |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        Ok(json!({
            "bench": "decisions",
            "decisions": decisions,
            "actions": actions,
            "features_per_pair": features,
            "request_body_bytes": body_bytes,
            "connections": connections,
            "seconds": elapsed,
            "decisions_per_sec": decisions as f64 / elapsed,
            "request_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
            "target_decisions_per_sec": 5_000,
            "durable": "each decision logged (WAL, synchronous=FULL) before it is answered",
            "peak_rss_mib": peak_rss_mib(),
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }))
    })
}

/// Posts `bodies` (in turn, `total` requests; each body once when `None`) over `connections`
/// keep-alive connections; every answer must be a success. Returns the sorted latencies and
/// the elapsed seconds.
async fn post_concurrently(
    addr: std::net::SocketAddr,
    key: &str,
    path: &'static str,
    bodies: Vec<Bytes>,
    total: Option<usize>,
    connections: usize,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let total = total.unwrap_or(bodies.len());
    let auth = Arc::new(format!("Bearer {key}"));
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let bodies = bodies.clone();
        let next = next.clone();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let req = hyper::Request::post(path)
                    .header("content-type", "application/json")
                    .header("authorization", auth.as_str())
                    .header("host", addr.to_string())
                    .body(Full::new(bodies[i % bodies.len()].clone()))?;
                let t = Instant::now();
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                latencies.push(t.elapsed());
                if !status.is_success() {
                    bail!(
                        "the server answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        latencies.extend(t.await.context("client task")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((latencies, elapsed))
}

/// One HTTP/1.1 keep-alive connection for the benchmarks.
pub(crate) struct Client {
    addr: std::net::SocketAddr,
    auth: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub(crate) async fn connect(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self {
            addr,
            auth: format!("Bearer {key}"),
            sender,
        })
    }

    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<serde_json::Value> {
        let bytes = self.call_bytes(method, path, body).await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// The response body of a successful call, unparsed: latency is measured to its last byte,
    /// as load generators (wrk) do, and the body is checked after the clock stops.
    pub(crate) async fn call_bytes(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Bytes> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }
}

pub(crate) fn item_keys(v: &serde_json::Value) -> Vec<String> {
    v["items"].as_array().map_or_else(Vec::new, |a| {
        a.iter()
            .filter_map(|r| r["item"].as_str().map(str::to_owned))
            .collect()
    })
}

/// The demo shop in a temporary store, trained, with an API key of `scopes`: what the HTTP
/// benchmarks serve. Background training and tuning are off, so nothing competes with the
/// measured requests. The directory lives as long as the returned guard.
fn trained_shop(
    settings: &Settings,
    users: usize,
    items: usize,
    events: usize,
    scopes: &[Scope],
) -> anyhow::Result<(
    tempfile::TempDir,
    std::sync::Arc<bespoke_server::Engine>,
    String,
)> {
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let mut s = settings.clone();
    // A subdirectory, so that the audit key file (beside the data directory) is removed too.
    s.store.data_dir = work.path().join("store");
    s.server.bind = "127.0.0.1:0".parse().expect("valid address");
    s.training.evaluate = false;
    s.training.train_on_start = false;
    s.training.interval_minutes = 0;
    s.training.min_new_events = 0;
    s.training.tune_interval_hours = 0.0;
    let store = bespoke_server::open_store(&s)?;
    let shop = crate::demo::generate(42, users, items, events, 1_767_225_600_000);
    crate::demo::load(&*store, shop)?;
    let engine = std::sync::Arc::new(bespoke_server::Engine::open(store, std::sync::Arc::new(s))?);
    engine.train(|_| {})?;
    let (key, _) = engine.access().create_key("bench", "bench", scopes, None)?;
    Ok((work, engine, key))
}

fn bench_realtime(
    settings: &Settings,
    trials: usize,
    users: usize,
    items: usize,
    events: usize,
) -> anyhow::Result<serde_json::Value> {
    if trials == 0 || users == 0 || items == 0 {
        bail!("--trials, --users and --items must be at least 1");
    }
    let (_work, engine, key) =
        trained_shop(settings, users, items, events, &[Scope::Read, Scope::Write])?;
    let runtime = crate::runtime()?;
    runtime.block_on(async move {
        let server = bespoke_server::start_with_engine(engine).await?;
        let mut client = Client::connect(server.addr(), &key).await?;
        let mut rng = Rng::seed_from_u64(9);
        let mut delays = Vec::with_capacity(trials);
        let mut first_read_changed = 0;
        let mut t = 0;
        while delays.len() < trials {
            t += 1;
            let user = format!("user-{:05}", rng.below(users as u64));
            let path = format!("/v1/users/{user}/recommendations?n=10");
            let first = client.call("GET", &path, None).await?;
            // Users without personalization consent get the same popular list whatever they do.
            if first["personalized"] != true {
                continue;
            }
            let before = item_keys(&first);
            // Buying the top recommendation changes the list: a bought item is never recommended
            // again, and the user's vector moves.
            let item = before.first().cloned().unwrap_or_else(|| format!("sku-{:05}", rng.below(items as u64)));
            let body = serde_json::to_vec(&json!({ "events": [
                { "event_id": format!("rt-{t}"), "user": user, "item": item, "type": "purchase" }
            ]}))?;
            client.call("POST", "/v1/events", Some(body)).await?;
            let acked = Instant::now();
            let mut reads = 0;
            loop {
                reads += 1;
                let after = item_keys(&client.call("GET", &path, None).await?);
                if after != before {
                    delays.push(acked.elapsed());
                    first_read_changed += usize::from(reads == 1);
                    break;
                }
                if acked.elapsed() > Duration::from_secs(5) {
                    bail!("the recommendations of {user} did not change within 5 s of the event");
                }
            }
        }
        server.shutdown().await?;
        delays.sort();
        let pct = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        Ok(json!({
            "bench": "realtime",
            "trials": trials,
            "changed_on_first_read": first_read_changed,
            "event_to_changed_recommendation_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
            "target_ms": 50,
            "shop": { "users": users, "items": items, "events": events },
        }))
    })
}

fn bench_rank(
    settings: &Settings,
    requests: usize,
    candidates: usize,
    users: usize,
    items: usize,
    events: usize,
) -> anyhow::Result<serde_json::Value> {
    if requests == 0 || users == 0 || items == 0 || !(1..=1000).contains(&candidates) {
        bail!("--requests, --users and --items must be at least 1, --candidates 1 to 1000");
    }
    let (_work, engine, key) = trained_shop(settings, users, items, events, &[Scope::Read])?;
    let runtime = crate::runtime()?;
    runtime.block_on(async move {
        let server = bespoke_server::start_with_engine(engine).await?;
        let mut client = Client::connect(server.addr(), &key).await?;
        let mut rng = Rng::seed_from_u64(11);
        let mut rank_ms = Vec::with_capacity(requests);
        let mut recs_ms = Vec::with_capacity(requests);
        // A warm-up pass, not measured: caches and connections settle.
        for round in 0..requests + requests / 10 {
            let user = format!("user-{:05}", rng.below(users as u64));
            let mut picked = std::collections::BTreeSet::new();
            while picked.len() < candidates.min(items) {
                picked.insert(format!("sku-{:05}", rng.below(items as u64)));
            }
            let body = serde_json::to_vec(&json!({ "items": picked }))?;
            let started = Instant::now();
            let out = client.call_bytes("POST", &format!("/v1/users/{user}/rank"), Some(body)).await?;
            let took = started.elapsed().as_secs_f64() * 1e3;
            if item_keys(&serde_json::from_slice(&out)?).len() != picked.len() {
                bail!("the rank route did not return every candidate");
            }
            let started = Instant::now();
            let recs = client
                .call_bytes("GET", &format!("/v1/users/{user}/recommendations?n=20"), None)
                .await?;
            let took_recs = started.elapsed().as_secs_f64() * 1e3;
            if item_keys(&serde_json::from_slice(&recs)?).is_empty() {
                bail!("recommendations came back empty");
            }
            if round >= requests / 10 {
                rank_ms.push(took);
                recs_ms.push(took_recs);
            }
        }
        server.shutdown().await?;
        let pct = |xs: &mut Vec<f64>, p: f64| {
            xs.sort_by(f64::total_cmp);
            xs[((xs.len() - 1) as f64 * p) as usize]
        };
        Ok(json!({
            "bench": "rank",
            "requests": requests,
            "candidates": candidates,
            "rank_ms": { "p50": pct(&mut rank_ms, 0.5), "p99": pct(&mut rank_ms, 0.99), "max": pct(&mut rank_ms, 1.0) },
            "recommendations_n20_ms": { "p50": pct(&mut recs_ms, 0.5), "p99": pct(&mut recs_ms, 0.99), "max": pct(&mut recs_ms, 1.0) },
            "target_rank_p99_ms": 2,
            "shop": { "users": users, "items": items, "events": events },
        }))
    })
}

/// Runs the learner on a synthetic environment, round by round: decide, observe the pre-drawn
/// reward of the chosen action, learn.
fn bench_bandit(
    env: &std::path::Path,
    config: Option<&str>,
    seed: u64,
) -> anyhow::Result<serde_json::Value> {
    use bespoke_algo::bandit::{Learner, LearnerConfig, PreparedAction, PreparedContext};
    use bespoke_server::features::flatten;
    use std::collections::HashMap;

    let config: LearnerConfig = match config {
        Some(c) => serde_json::from_str(c).context("--learner is not a learner configuration")?,
        None => LearnerConfig::default(),
    };
    if let Err(e) = config.validate() {
        bail!("--learner: {e}");
    }
    let text =
        std::fs::read_to_string(env).with_context(|| format!("reading {}", env.display()))?;
    let mut lines = text.lines();
    let head: serde_json::Value = serde_json::from_str(lines.next().context("empty file")?)?;
    let mut pool = HashMap::new();
    for a in head["pool"].as_array().context("line 1: no pool")? {
        let id = a["id"]
            .as_str()
            .context("line 1: action without id")?
            .to_owned();
        let f = flatten("features", &a["features"])
            .map_err(|e| anyhow::anyhow!("line 1: {}: {}", e.field, e.message))?;
        pool.insert(id.clone(), PreparedAction::new(&id, &f));
    }
    struct Round {
        context: PreparedContext,
        actions: Vec<String>,
        p: Vec<f64>,
        u: Vec<f64>,
    }
    let mut rounds = Vec::new();
    for (n, line) in lines.enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}", n + 2))?;
        let f = flatten("context", &v["context"])
            .map_err(|e| anyhow::anyhow!("line {}: {}: {}", n + 2, e.field, e.message))?;
        let nums = |k: &str| -> anyhow::Result<Vec<f64>> {
            v[k].as_array()
                .with_context(|| format!("line {}: no {k}", n + 2))?
                .iter()
                .map(|x| x.as_f64().with_context(|| format!("line {}: {k}", n + 2)))
                .collect()
        };
        rounds.push(Round {
            context: PreparedContext::new(&f),
            actions: serde_json::from_value(v["actions"].clone())?,
            p: nums("p")?,
            u: nums("u")?,
        });
    }
    let mut learner = Learner::new(config.clone());
    let mut rng = Rng::seed_from_u64(seed);
    let (mut reward, mut regret, mut optimal) = (0.0, 0.0, 0.0);
    let start = Instant::now();
    for r in &rounds {
        let actions: Vec<PreparedAction> = r
            .actions
            .iter()
            .map(|id| pool.get(id).cloned().context("unknown action id"))
            .collect::<anyhow::Result<_>>()?;
        let slate = learner.decide(
            &r.context,
            &actions,
            &vec![true; actions.len()],
            1,
            &mut rng,
        );
        let k = slate.slots[0].action;
        let got = if r.u[k] < r.p[k] { 1.0 } else { 0.0 };
        let best = r.p.iter().cloned().fold(f64::MIN, f64::max);
        reward += got;
        regret += best - r.p[k];
        optimal += best;
        let x = learner.vector(&r.context, &actions[k]);
        learner.learn(&x, got as f32);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = rounds.len().max(1) as f64;
    Ok(json!({
        "learner": "bespoke",
        "config": config,
        "rounds": rounds.len(),
        "average_reward": reward / n,
        "average_regret": regret / n,
        "optimal_reward": optimal / n,
        "decisions_per_second": n / secs,
    }))
}

/// Sorted percentiles of microsecond timings.
fn percentiles_us(xs: &mut [f64]) -> serde_json::Value {
    xs.sort_by(f64::total_cmp);
    let at = |p: f64| xs[((xs.len() - 1) as f64 * p) as usize];
    json!({ "p50": at(0.5), "p99": at(0.99), "max": at(1.0) })
}

/// Audiences (see [`BenchWhat::Audience`]).
fn bench_audience(
    settings: &Settings,
    requests: usize,
    (users, items, events): (usize, usize, usize),
) -> anyhow::Result<serde_json::Value> {
    use bespoke_server::engine::AudienceQuery;
    if requests == 0 || users == 0 || items < 500 {
        bail!("--requests and --users must be at least 1, --items 500");
    }
    let (_work, engine, _) = trained_shop(settings, users, items, events, &[Scope::Read])?;
    let mut rng = Rng::seed_from_u64(13);
    let mut run = |k: usize| -> anyhow::Result<(serde_json::Value, usize)> {
        let mut times = Vec::with_capacity(requests);
        let mut scored = 0;
        for _ in 0..requests {
            let q = AudienceQuery {
                items: (0..k)
                    .map(|_| format!("sku-{:05}", rng.below(items as u64)))
                    .collect(),
                n: 100,
                threshold: Some(0.1),
                ..AudienceQuery::default()
            };
            let t = Instant::now();
            let a = engine.audience(&q);
            times.push(t.elapsed().as_secs_f64() * 1e6);
            if let Ok(a) = a {
                scored = scored.max(a.scored_users);
            }
        }
        Ok((percentiles_us(&mut times), scored))
    };
    let (one, scored) = run(1)?;
    let (many, _) = run(500)?;
    Ok(json!({
        "bench": "audience",
        "shop": { "users": users, "items": items, "events": events },
        "scored_users": scored,
        "one_item_us": one,
        "items_500_us": many,
    }))
}

/// Fairness (see [`BenchWhat::Fairness`]).
fn bench_fairness(
    settings: &Settings,
    requests: usize,
    (users, items, events): (usize, usize, usize),
) -> anyhow::Result<serde_json::Value> {
    use bespoke_server::engine::{RecommendQuery, ReportOptions};
    use bespoke_server::pipeline::request::FairnessRequest;
    if requests == 0 || users == 0 || items < 200 {
        bail!("--requests and --users must be at least 1, --items 200");
    }
    let started = Instant::now();
    let (_work, engine, _) = trained_shop(settings, users, items, events, &[Scope::Read])?;
    let setup_s = started.elapsed().as_secs_f64();
    let plain = RecommendQuery {
        n: 20,
        ..RecommendQuery::default()
    };
    let with = |f: FairnessRequest| RecommendQuery {
        n: 20,
        fairness: f,
        ..RecommendQuery::default()
    };
    let calibration = with(FairnessRequest {
        calibration: Some(0.5),
        ..FairnessRequest::default()
    });
    let popularity = with(FairnessRequest {
        popularity: Some(0.5),
        ..FairnessRequest::default()
    });
    let protected = with(FairnessRequest {
        protected: Some("new_arrival = true".into()),
        protected_share: Some(0.2),
        ..FairnessRequest::default()
    });
    let all = with(FairnessRequest {
        calibration: Some(0.5),
        popularity: Some(0.5),
        protected: Some("new_arrival = true".into()),
        protected_share: Some(0.2),
        ..FairnessRequest::default()
    });
    // The candidates the re-rankers choose from, without them: the same retrieval cost.
    let pool = RecommendQuery {
        n: 200,
        ..RecommendQuery::default()
    };
    engine
        .check_rules(&protected)
        .map_err(|p| anyhow::anyhow!("{}: {}", p.field, p.message))?;
    let kinds = [&plain, &pool, &calibration, &popularity, &protected, &all];
    let names = [
        "plain_n20",
        "pool_n200",
        "calibration",
        "popularity",
        "protected_share",
        "all_three",
    ];
    let mut timings: Vec<Vec<f64>> = vec![Vec::with_capacity(requests); kinds.len()];
    let mut rng = Rng::seed_from_u64(7);
    for round in 0..requests + requests / 10 {
        let user = format!("user-{:05}", rng.below(users as u64));
        for (k, q) in kinds.iter().enumerate() {
            let t = Instant::now();
            std::hint::black_box(engine.recommend(&user, q));
            let took = t.elapsed().as_secs_f64() * 1e6;
            if round >= requests / 10 {
                timings[k].push(took);
            }
        }
    }
    let mut in_process = serde_json::Map::new();
    let p99: Vec<f64> = timings
        .iter_mut()
        .zip(names)
        .map(|(t, name)| {
            let p = percentiles_us(t);
            let v = p["p99"].as_f64().unwrap_or(0.0);
            in_process.insert(name.to_owned(), p);
            v
        })
        .collect();
    // The re-rankers alone on 200 candidates (n = 20), as the pipeline calls them.
    let alone = rerankers_alone(requests);
    let started = Instant::now();
    let report = engine.fairness_report(
        &RecommendQuery {
            n: 10,
            ..RecommendQuery::default()
        },
        &ReportOptions::default(),
    )?;
    let report_s = started.elapsed().as_secs_f64();
    Ok(json!({
        "bench": "fairness",
        "shop": { "users": users, "items": items, "events": events, "setup_s": setup_s },
        "in_process_us": in_process,
        "added_p99_us_over_pool": {
            "calibration": p99[2] - p99[1],
            "popularity": p99[3] - p99[1],
            "protected_share": p99[4] - p99[1],
            "all_three": p99[5] - p99[1],
        },
        "rerankers_alone_us": alone,
        "report": { "users": report.report.users, "k": 10, "seconds": report_s,
                    "coverage": report.report.coverage, "gini": report.report.gini,
                    "popularity_lift": report.report.popularity_lift.lift,
                    "miscalibration": report.report.miscalibration.mean },
    }))
}

/// The three algorithms on 200 random candidates (20 categories, a tenth protected, a fifth
/// in the tail), n = 20: percentiles of one call each.
fn rerankers_alone(calls: usize) -> serde_json::Value {
    use bespoke_algo::rerank::{Fair, calibrate, xquad};
    let mut rng = Rng::seed_from_u64(11);
    let fair = Fair::new(20, 0.2, 0.1).expect("valid FA*IR parameters");
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..calls {
        let mut rel: Vec<f64> = (0..200).map(|_| rng.f64()).collect();
        rel.sort_by(|a, b| b.total_cmp(a));
        let cats: Vec<Vec<u32>> = (0..200)
            .map(|_| vec![rng.below(20) as u32, rng.below(20) as u32])
            .collect();
        let cat_refs: Vec<&[u32]> = cats.iter().map(|c| &c[..]).collect();
        let mut target: Vec<f64> = (0..20).map(|_| rng.f64()).collect();
        let sum: f64 = target.iter().sum();
        target.iter_mut().for_each(|t| *t /= sum);
        let tail: Vec<bool> = (0..200).map(|_| rng.f64() < 0.2).collect();
        let protected: Vec<bool> = (0..200).map(|_| rng.f64() < 0.1).collect();
        let t = Instant::now();
        std::hint::black_box(calibrate(&rel, &cat_refs, &target, 0.5, 0.01, 20));
        times[0].push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        std::hint::black_box(xquad(&rel, &tail, 0.3, 0.5, 20));
        times[1].push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        std::hint::black_box(fair.rerank(&protected, 20));
        times[2].push(t.elapsed().as_secs_f64() * 1e6);
    }
    let [c, x, f] = &mut times;
    json!({ "calibration": percentiles_us(c), "xquad": percentiles_us(x), "fa_ir": percentiles_us(f) })
}

/// Business rules (see [`BenchWhat::Rules`]).
fn bench_rules(
    settings: &Settings,
    requests: usize,
    http_requests: usize,
    connections: usize,
    (users, items, events): (usize, usize, usize),
) -> anyhow::Result<serde_json::Value> {
    use bespoke_server::engine::RecommendQuery;
    use bespoke_server::rules::spec::{BoostSpec, RuleSpec, SavedRule};
    if requests == 0 || http_requests == 0 || connections == 0 || users == 0 || items < 10 {
        bail!(
            "--requests, --http-requests, --connections and --users must be at least 1, --items 10"
        );
    }
    let (_work, engine, key) =
        trained_shop(settings, users, items, events, &[Scope::Read, Scope::Admin])?;
    // The price below which 10% of the catalog lies: the filter matches a tenth of it.
    let mut prices: Vec<f64> = (0..items)
        .filter_map(|i| engine.get_item(&format!("sku-{i:05}")).ok().flatten())
        .filter_map(|it| it.numeric.get("price").copied())
        .collect();
    prices.sort_by(f64::total_cmp);
    let cut = prices[prices.len() / 10];
    let filter = format!("price < {cut}");
    let boost = BoostSpec {
        when: "new_arrival = true".into(),
        by: Some(1.5),
        add: None,
    };
    let plain = RecommendQuery {
        n: 20,
        ..RecommendQuery::default()
    };
    let ruled = RecommendQuery {
        n: 20,
        filter: Some(filter.clone()),
        boost: vec![boost.clone()],
        ..RecommendQuery::default()
    };
    engine
        .check_rules(&ruled)
        .map_err(|p| anyhow::anyhow!("{}: {}", p.field, p.message))?;
    let filtered = RecommendQuery {
        boost: Vec::new(),
        ..ruled.clone()
    };
    let boosted = RecommendQuery {
        filter: None,
        ..ruled.clone()
    };
    let mut rng = Rng::seed_from_u64(5);
    let kinds = [&plain, &ruled, &filtered, &boosted];
    let mut timings: Vec<Vec<f64>> = vec![Vec::with_capacity(requests); kinds.len()];
    // Alternating, after a warm-up tenth, so that all see the same machine state.
    for round in 0..requests + requests / 10 {
        let user = format!("user-{:05}", rng.below(users as u64));
        for (k, q) in kinds.iter().enumerate() {
            let t = Instant::now();
            let out = engine.recommend(&user, q);
            let took = t.elapsed().as_secs_f64() * 1e6;
            if out.items.len() != 20 {
                bail!("{user}: {} results, not 20", out.items.len());
            }
            if round >= requests / 10 {
                timings[k].push(took);
            }
        }
    }
    // The same filter and boost saved as a default rule, which serving keeps evaluated per
    // item and scans as the filter's own items. After the alternating runs, not among them:
    // saving a rule is a store write.
    let rule = SavedRule {
        name: "bench-default".into(),
        spec: RuleSpec {
            description: None,
            routes: Vec::new(),
            enabled: true,
            filter: Some(filter),
            boost: vec![boost],
            promote: Vec::new(),
            max_per_category: None,
        },
    };
    engine.put_rule(rule.clone())?;
    let mut saved_us = Vec::with_capacity(requests);
    for round in 0..requests + requests / 10 {
        let user = format!("user-{:05}", rng.below(users as u64));
        let t = Instant::now();
        let out = engine.recommend(&user, &plain);
        let took = t.elapsed().as_secs_f64() * 1e6;
        if out.items.len() != 20 || out.rules != ["bench-default"] {
            bail!("{user}: {} results under {:?}", out.items.len(), out.rules);
        }
        if round >= requests / 10 {
            saved_us.push(took);
        }
    }
    engine.delete_rule("bench-default")?;
    let saved_p = percentiles_us(&mut saved_us);
    let plain_p = percentiles_us(&mut timings[0]);
    let ruled_p = percentiles_us(&mut timings[1]);
    let filter_only = percentiles_us(&mut timings[2]);
    let boost_only = percentiles_us(&mut timings[3]);
    // Compiling: 20 clauses, each expression new (a literal changes), so the cache never hits.
    let mut compile_us = Vec::with_capacity(1000);
    for i in 0..1000 {
        let clauses: Vec<String> = (0..20)
            .map(|c| match c % 4 {
                0 => format!("price < {}", i * 20 + c),
                1 => format!("brand = \"brand-{c}\""),
                2 => "category in [\"Kitchen\", \"Garden\", \"Books\"]".to_owned(),
                _ => "created_at > now - 30d".to_owned(),
            })
            .collect();
        let q = RecommendQuery {
            n: 20,
            filter: Some(clauses.join(" or ")),
            ..RecommendQuery::default()
        };
        let t = Instant::now();
        engine
            .check_rules(&q)
            .map_err(|p| anyhow::anyhow!("{}: {}", p.field, p.message))?;
        compile_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let compile_p = percentiles_us(&mut compile_us);
    let paths: Vec<String> = (0..http_requests)
        .map(|_| {
            format!(
                "/v1/users/user-{:05}/recommendations?n=20",
                rng.below(users as u64)
            )
        })
        .collect();
    let runtime = crate::runtime()?;
    let (without, with) = runtime.block_on({
        let engine = engine.clone();
        async move {
            let server = bespoke_server::start_with_engine(engine.clone()).await?;
            let addr = server.addr();
            // A warm-up pass, then without and with a saved default rule, twice in turn, so
            // that drift of the machine falls on both alike.
            get_concurrently(addr, &key, paths[..paths.len() / 10].to_vec(), connections).await?;
            let (mut without, mut with) = ((0, 0.0), (0, 0.0));
            for _ in 0..2 {
                let (n, secs) = get_concurrently(addr, &key, paths.clone(), connections).await?;
                without = (without.0 + n, without.1 + secs);
                let (e, r) = (engine.clone(), rule.clone());
                tokio::task::spawn_blocking(move || e.put_rule(r)).await??;
                let (n, secs) = get_concurrently(addr, &key, paths.clone(), connections).await?;
                with = (with.0 + n, with.1 + secs);
                let e = engine.clone();
                tokio::task::spawn_blocking(move || e.delete_rule("bench-default")).await??;
            }
            server.shutdown().await?;
            anyhow::Ok((without, with))
        }
    })?;
    let per_sec = |(n, secs): (usize, f64)| n as f64 / secs;
    Ok(json!({
        "bench": "rules",
        "in_process_top20_us": {
            "unfiltered": plain_p,
            "filter_10pct_and_boost": ruled_p,
            "filter_10pct_only": filter_only,
            "boost_only": boost_only,
            "saved_default_rule": saved_p,
            "p99_ratio": ruled_p["p99"].as_f64().unwrap_or(0.0) / plain_p["p99"].as_f64().unwrap_or(1.0),
            "target_p99_ratio_max": 2.0,
        },
        "compile_20_clauses_us": { "latency": compile_p, "target_p50_us": 50 },
        "http_recommendations_n20": {
            "connections": connections,
            "requests": 2 * http_requests,
            "without_rules_per_sec": per_sec(without),
            "with_saved_default_rule_per_sec": per_sec(with),
            "ratio": per_sec(with) / per_sec(without),
            "target_ratio_min": 0.8,
        },
        "filter": format!("price < {cut} (10% of the catalog)"),
        "shop": { "users": users, "items": items, "events": events },
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }))
}

/// GETs `paths` over `connections` keep-alive connections; every answer must be a success.
/// Returns the requests made and the elapsed seconds.
pub(crate) async fn get_concurrently(
    addr: std::net::SocketAddr,
    key: &str,
    paths: Vec<String>,
    connections: usize,
) -> anyhow::Result<(usize, f64)> {
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (paths, next) = (paths.clone(), next.clone());
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &key).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                client.call_bytes("GET", path, None).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("client task")??;
    }
    Ok((paths.len(), started.elapsed().as_secs_f64()))
}
