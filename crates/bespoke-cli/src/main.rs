//! `bespoke`: the command-line entry point. Glue that brings the store, the engine and the HTTP
//! server together: `serve`, `import`, `export`, `stats`, `recommend`, `train`, `eval`, `demo`,
//! `keys`, `bench`.
#![forbid(unsafe_code)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audience;
mod bench;
mod bench_ann;
mod bench_cluster;
mod bench_device;
mod chart;
mod cold;
mod demo;
mod eval;
mod experiment;
mod export;
mod fairness;
mod federated_sim;
mod import;
mod inspect;
mod keys;
mod migrate;
mod obd;
mod ope;
mod segment;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bespoke_server::Settings;
use bespoke_server::settings::LogFormat;
use clap::{Parser, Subcommand};

/// Bespoke: a self-hosted personalization engine.
#[derive(Debug, Parser)]
#[command(name = "bespoke", version, about = "Bespoke: a self-hosted personalization engine", long_about = None)]
struct Cli {
    /// TOML configuration file (see config/bespoke.example.toml).
    #[arg(long, global = true, env = "BESPOKE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides store.data_dir).
    #[arg(long, global = true, env = "BESPOKE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Address to listen on (overrides server.bind).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
    /// Import events, users or items from CSV, TSV or JSONL.
    Import(import::ImportArgs),
    /// Export users, items or events as JSONL.
    Export(export::ExportArgs),
    /// Show counts and sizes of the store.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Recommend items for one user from the command line.
    Recommend(inspect::RecommendArgs),
    /// Train models from the store (iALS and item-kNN) and save a new version.
    Train(inspect::TrainArgs),
    /// Generate a synthetic shop, load it and serve it on 127.0.0.1:8080.
    Demo(demo::DemoArgs),
    /// Evaluate models offline (implicit_bench.py's metrics and JSON keys).
    Eval(eval::EvalArgs),
    /// Enforce retention: delete events older than privacy.max_event_age_days (or
    /// --max-event-age-days) and what was derived from them. For a stopped server; a running
    /// server does this itself every privacy.retention_interval_minutes.
    Gc {
        /// Override privacy.max_event_age_days.
        #[arg(long)]
        max_event_age_days: Option<f64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the store for corruption (PRAGMA integrity_check); exits non-zero on a problem.
    Check {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create, list and revoke API keys.
    Keys(keys::KeysArgs),
    /// Search model types, hyperparameters and recency on a time-cut of the training data
    /// (--budget configurations: spread over the space, then near the best so far; successive
    /// halving; blends of the best types), then report the choice on the test data.
    Tune(eval::EvalArgs),
    /// Audiences: `bespoke audience export` writes the users most drawn to items, a category
    /// or an item expression (CSV or JSONL), without those who objected to marketing.
    Audience(audience::AudienceArgs),
    /// Experiments between serving configurations: create (from JSON), list, start, stop,
    /// delete, report (docs/experiments.md).
    Experiment(experiment::ExperimentArgs),
    /// Segments: list, refresh (compute the members now), members (CSV or JSONL)
    /// (docs/segments.md).
    Segment(segment::SegmentArgs),
    /// Fairness and bias report (coverage, Gini, long tail, popularity lift, miscalibration,
    /// accuracy by user group, exposure by item group) on an evaluation split, or with --live
    /// on the served model; re-rankers and their trade-off sweep (docs/fairness.md).
    Fairness(fairness::FairnessArgs),
    /// Off-policy evaluation of a decision loop's logs (IPS, SNIPS, DR; candidates; feature
    /// importance), or the Open Bandit Dataset experiment with --obd.
    Ope(ope::OpeArgs),
    /// Benchmarks that print JSON.
    Bench(bench::BenchArgs),
    /// Federated training with simulated devices (secure aggregation, differential privacy,
    /// drop-outs, poisoning) against central iALS on MovieLens 100K (docs/federated.md).
    FederatedSim(federated_sim::FederatedSimArgs),
    /// Copy an SQLite store (a stopped server's data directory) into an empty PostgreSQL
    /// schema, ids and models included, and verify every table's count and checksum
    /// (docs/postgres.md).
    Migrate(migrate::MigrateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`bespoke export | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Settings from the config file and environment, then the global flags.
fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(dir) = &cli.data_dir {
        settings.store.data_dir = dir.clone();
    }
    Ok(settings)
}

/// What must outlive the command for its telemetry to be complete: dropping it sends the traces
/// still buffered.
struct Telemetry {
    #[cfg(feature = "otlp")]
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.traces.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: sending the last traces failed: {e}");
        }
    }
}

/// Logs on stderr filtered by `log.level`, and, with `log.otlp_endpoint`, spans exported over
/// OTLP. Each output has its own filter, so that the request and pipeline spans (debug level)
/// reach the collector without debug lines in the log.
fn init_logging(settings: &Settings) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log.level)
        .with_context(|| format!("log.level {:?} is not a valid filter", settings.log.level))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match settings.log.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    #[cfg(feature = "otlp")]
    {
        let (layer, traces) = match &settings.log.otlp_endpoint {
            Some(endpoint) => {
                let (layer, provider) = otlp::layer(endpoint, &settings.log.service_name)?;
                (Some(layer), Some(provider))
            }
            None => (None, None),
        };
        registry.with(layer).init();
        Ok(Telemetry { traces })
    }
    #[cfg(not(feature = "otlp"))]
    {
        if settings.log.otlp_endpoint.is_some() {
            anyhow::bail!(
                "log.otlp_endpoint is set, but this binary was built without the otlp feature (cargo build --release --features otlp)"
            );
        }
        registry.init();
        Ok(Telemetry {})
    }
}

/// Span export over OTLP/HTTP (protobuf), batched on the exporter's own thread.
#[cfg(feature = "otlp")]
mod otlp {
    use anyhow::Context as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    /// The tracing layer that exports to `endpoint`, and the provider that flushes it.
    pub(crate) fn layer<S>(
        endpoint: &str,
        service: &str,
    ) -> anyhow::Result<(
        Box<dyn tracing_subscriber::Layer<S> + Send + Sync>,
        SdkTracerProvider,
    )>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&url)
            .build()
            .with_context(|| format!("log.otlp_endpoint: the OTLP exporter for {url}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("bespoke");
        // Bespoke's own spans down to the pipeline stages and store calls (debug); the rest
        // (hyper, tower) at info.
        let targets = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("bespoke_server", LevelFilter::DEBUG)
            .with_target("bespoke_store", LevelFilter::DEBUG);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(targets)
            .boxed();
        Ok((layer, provider))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Waits for Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serves until a shutdown signal.
pub(crate) async fn serve_until_signal(server: bespoke_server::Server) -> anyhow::Result<()> {
    shutdown_signal().await;
    eprintln!("shutting down");
    server.shutdown().await?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = load_settings(&cli)?;
    // Commands other than the servers report on their own; info logs would only be noise.
    let quiet_default = !matches!(cli.command, Command::Serve { .. } | Command::Demo(_))
        && std::env::var_os("BESPOKE__LOG__LEVEL").is_none()
        && settings.log.level == bespoke_server::settings::LogSettings::default().level;
    if quiet_default {
        settings.log.level = "warn".into();
    }
    let _telemetry = init_logging(&settings)?;
    match cli.command {
        Command::Serve { bind } => {
            if let Some(bind) = bind {
                settings.server.bind = bind;
            }
            runtime()?.block_on(async {
                let server = bespoke_server::start(settings).await?;
                eprintln!("bespoke listening on http://{}", server.addr());
                eprintln!(
                    "dashboard: http://{}/dashboard (log in with an admin key)",
                    server.addr()
                );
                let auth = server.engine().settings().auth.enabled;
                // Off the runtime's threads: PostgreSQL's blocking client panics on them.
                let engine = server.engine().clone();
                let keys = tokio::task::spawn_blocking(move || engine.access().keys()).await??;
                let live_keys = keys.iter().filter(|k| k.revoked_at.is_none()).count();
                if auth && live_keys == 0 {
                    eprintln!(
                        "no API keys yet: every route but /healthz will answer 401. Create one with\n  bespoke keys create --name admin --scopes admin"
                    );
                }
                serve_until_signal(server).await
            })
        }
        Command::Import(args) => import::run(&settings, &args),
        Command::Export(args) => export::run(&settings, &args),
        Command::Stats { json } => inspect::stats(&settings, json),
        Command::Recommend(args) => inspect::recommend(&settings, &args),
        Command::Train(args) => inspect::train(&settings, &args),
        Command::Demo(args) => demo::run(settings, &args, cli.data_dir.is_some()),
        Command::Eval(args) => eval::run(&args),
        Command::Tune(args) => eval::tune(&args),
        Command::Bench(args) => bench::run(&settings, &args),
        Command::FederatedSim(args) => federated_sim::run(&args),
        Command::Ope(args) => ope::run(&settings, &args),
        Command::Fairness(args) => fairness::run(&settings, &args),
        Command::Audience(args) => audience::run(&settings, &args),
        Command::Experiment(args) => experiment::run(&settings, &args),
        Command::Segment(args) => segment::run(&settings, &args),
        Command::Keys(args) => keys::run(&settings, &args),
        Command::Migrate(args) => migrate::run(&args),
        Command::Check { json } => {
            let store = bespoke_server::open_store(&settings)?;
            let problems = store.integrity_check()?;
            let stats = store.stats()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": problems.is_empty(), "problems": problems, "events": stats.events,
                                        "users": stats.users, "items": stats.items })
                );
            } else if problems.is_empty() {
                eprintln!(
                    "ok: {} users, {} items, {} events",
                    stats.users, stats.items, stats.events
                );
            } else {
                for p in &problems {
                    eprintln!("{p}");
                }
            }
            if !problems.is_empty() {
                anyhow::bail!("the store has {} integrity problems", problems.len());
            }
            Ok(())
        }
        Command::Gc {
            max_event_age_days,
            json,
        } => {
            if let Some(days) = max_event_age_days {
                settings.privacy.max_event_age_days = days;
            }
            settings.validate()?;
            let days = settings.privacy.max_event_age_days;
            let store = bespoke_server::open_store(&settings)?;
            let engine = bespoke_server::Engine::open(store, std::sync::Arc::new(settings))?;
            let expired = engine.apply_retention("cli")?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "expired_events": expired, "max_event_age_days": days })
                );
            } else if days <= 0.0 {
                eprintln!("privacy.max_event_age_days is 0 (keep forever): nothing expired");
            } else {
                eprintln!("expired {expired} events older than {days} days");
            }
            Ok(())
        }
    }
}
