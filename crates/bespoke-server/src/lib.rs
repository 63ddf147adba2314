//! # Brief overview
//!
//! `bespoke-server` is Bespoke's HTTP/JSON API (axum on tokio) and the only crate that knows
//! HTTP. [`Settings`] holds the layered configuration, [`Engine`] joins the store to the
//! in-memory serving state, and [`start`] binds a listener and serves [`api::router`] until
//! [`Server::shutdown`].
//!
//! ```no_run
//! # async fn run() -> Result<(), bespoke_server::ServerError> {
//! let settings = bespoke_server::Settings::default();
//! let server = bespoke_server::start(settings).await?;
//! println!("listening on {}", server.addr());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub(crate) mod dashboard;
pub mod decisions;
mod device_answer;
pub mod engine;
pub mod error;
pub(crate) mod exposure;
pub mod features;
pub mod metrics;
pub mod models;
#[cfg(feature = "nats")]
pub mod nats;
pub mod openapi;
pub mod pipeline;
pub mod privacy;
pub mod rules;
pub mod segments;
pub mod settings;
pub mod state;
pub mod strict;
pub mod time;
pub mod validate;
pub mod webhook;
pub mod weights;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use bespoke_store::{SqliteStore, Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use engine::Engine;
pub use settings::Settings;

/// Why the server could not start or stop cleanly. No variant declares a `source`: each
/// message holds its cause already, and the CLI prints the chain of sources too.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Opening the store failed.
    #[error("opening the store: {0}")]
    Store(bespoke_store::Error),
    /// The engine could not start on the store (e.g. its decision loops could not be restored).
    #[error("{0}")]
    Engine(engine::OpenError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
    /// The settings make no sense (e.g. auth off on a public address). Not a `source`: the
    /// message already holds it.
    #[error("invalid settings: {0}")]
    Config(settings::InvalidSetting),
    /// A background task panicked.
    #[error("server task failed: {0}")]
    Task(String),
}

impl From<bespoke_store::Error> for ServerError {
    fn from(e: bespoke_store::Error) -> Self {
        Self::Store(e)
    }
}

impl From<engine::OpenError> for ServerError {
    fn from(e: engine::OpenError) -> Self {
        Self::Engine(e)
    }
}

/// Opens the configured store.
pub fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, bespoke_store::Error> {
    if !settings.store.url.is_empty() {
        let mut options = bespoke_store::PgOptions::new(settings.store.url.clone());
        if !settings.store.schema.is_empty() {
            options.schema = Some(settings.store.schema.clone());
        }
        return Ok(Arc::new(bespoke_store::PgStore::open(options)?));
    }
    let options = StoreOptions {
        max_group_events: settings.store.max_group_events,
        cache_mib: settings.store.cache_mib,
        max_size_mib: settings.store.max_size_mib,
        ..StoreOptions::default()
    };
    Ok(Arc::new(SqliteStore::open(
        &settings.store.data_dir,
        options,
    )?))
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    engine: Arc<Engine>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Server {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine behind it.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting connections, lets in-flight requests finish and returns.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops (after [`Server::shutdown`] or a failure).
    pub async fn wait(self) -> Result<(), ServerError> {
        let served = self.task.await;
        for task in &self.background {
            task.abort();
        }
        // Another node takes over at once rather than when this process ends.
        self.engine.resign();
        // Learners are rebuilt from the log anyway; a checkpoint only shortens the next start.
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || engine.decisions().checkpoint_all()).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "checkpointing decision loops failed"),
            Err(e) => tracing::warn!(error = %e, "checkpointing decision loops panicked"),
            Ok(Ok(_)) => {}
        }
        served
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(ServerError::Serve)
    }
}

/// How often the background scheduler checks whether a retrain is due.
const TRAINER_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Retrains in the background when [`Engine::training_due`] says so.
async fn background_trainer(engine: Arc<Engine>) {
    let mut last: Option<std::time::Instant> = None;
    let mut last_tune: Option<std::time::Instant> = None;
    let mut ticker = tokio::time::interval(TRAINER_TICK);
    loop {
        ticker.tick().await;
        if engine.training_status().running || !leads(&engine).await {
            continue;
        }
        let tune = engine.tuning_due(last_tune);
        if !tune && !engine.training_due(last) {
            continue;
        }
        let e = engine.clone();
        let budget = engine.settings().training.tune_budget;
        let result = tokio::task::spawn_blocking(move || {
            if tune {
                e.tune_by("trainer", budget, |_| {})
            } else {
                e.train(|_| {})
            }
        })
        .await;
        last = Some(std::time::Instant::now());
        if tune {
            last_tune = last;
        }
        match result {
            Ok(Ok(out)) => {
                tracing::info!(target: "train::lifecycle", version = out.version, "background training finished")
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "train::lifecycle", error = %e, "background training failed")
            }
            Err(e) => {
                tracing::error!(target: "train::lifecycle", error = %e, "background training panicked")
            }
        }
    }
}

/// Whether this node leads the background work of a shared store (always, alone on one):
/// scheduled training, segment schedules and retention.
async fn leads(engine: &Arc<Engine>) -> bool {
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.lead("scheduler"))
        .await
        .unwrap_or(false)
}

/// How long [`follow_store`] waits for announcements before it reads the event log anyway.
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// On a shared store, applies what other nodes write to this node's memory
/// ([`Engine::follow`]).
async fn follow_store(engine: Arc<Engine>) {
    loop {
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.follow(FOLLOW_WAIT)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(target: "serve::cluster", error = %e, "following the shared store failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(target: "serve::cluster", error = %e, "following the shared store panicked");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Opens the store, loads the serving state and starts serving on `settings.server.bind`.
pub async fn start(settings: Settings) -> Result<Server, ServerError> {
    // Before the store is opened, so that bad settings create no file (data directory, key file).
    settings.validate().map_err(ServerError::Config)?;
    let settings = Arc::new(settings);
    let s = settings.clone();
    let engine = tokio::task::spawn_blocking(move || -> Result<Engine, ServerError> {
        let store = open_store(&s)?;
        Ok(Engine::open(store, s)?)
    })
    .await
    .map_err(|e| ServerError::Task(e.to_string()))??;
    start_with_engine(Arc::new(engine)).await
}

/// Starts serving an existing engine on its configured address.
pub async fn start_with_engine(engine: Arc<Engine>) -> Result<Server, ServerError> {
    // Checked here too, as flags may have changed the settings after they were loaded.
    engine.settings().validate().map_err(ServerError::Config)?;
    let addr = engine.settings().server.bind;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind { addr, error })?;
    let addr = listener
        .local_addr()
        .map_err(|error| ServerError::Bind { addr, error })?;
    let state = api::AppState::new(engine.clone());
    let throttle = state.throttle.clone();
    #[cfg(feature = "nats")]
    let nats_metrics = state.metrics.clone();
    let app = api::router(state);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        app,
        engine.settings().server.clone(),
        stopped,
    ));
    tracing::info!(%addr, "serving");
    let trainer = tokio::spawn(background_trainer(engine.clone()));
    let keys = tokio::spawn(refresh_keys(engine.clone()));
    let windows = tokio::spawn(decision_windows(engine.clone()));
    let prune = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(auth::THROTTLE_PRUNE_EVERY);
        loop {
            ticker.tick().await;
            throttle.prune();
        }
    });
    let segments = tokio::spawn(scheduled_segments(engine.clone()));
    let mut background = vec![trainer, keys, windows, prune, segments];
    if engine.shared_store() {
        background.push(tokio::spawn(follow_store(engine.clone())));
    }
    if engine.settings().privacy.max_event_age_days > 0.0 {
        background.push(tokio::spawn(retention(engine.clone())));
    }
    // Streaming ingestion, when configured (`docs/nats.md`); aborted with the others.
    #[cfg(feature = "nats")]
    if !engine.settings().nats.url.is_empty() {
        background.push(tokio::spawn(nats::run(engine.clone(), nats_metrics)));
    }
    Ok(Server {
        addr,
        engine,
        stop: Some(stop),
        task,
        background,
    })
}

/// Accepts connections until `stop` fires (or its sender is dropped), then lets in-flight
/// requests finish for up to `shutdown_grace_secs`.
///
/// A loop of our own rather than `axum::serve`, which does not expose hyper's connection
/// settings: the request-head timeout needs `http1::Builder::header_read_timeout` with a timer.
/// At most `max_connections` are served at once: a permit is taken before `accept`, so further
/// clients wait in the kernel's listen backlog (and are served in turn) instead of being
/// accepted only to be refused.
async fn serve(
    mut listener: TcpListener,
    app: axum::Router,
    settings: settings::ServerSettings,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    use std::time::Duration;

    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper restarts this timer whenever it waits for a request head, so it also closes idle
    // keep-alive connections; it closes without an answer (hyper writes no 408 for it).
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(settings.header_timeout_secs));
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut stop => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        // axum's `Listener` retries failed accepts (e.g. out of file descriptors) after a pause.
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
        };
        // The peer address, for per-source throttling of failed authentications (behind a
        // reverse proxy, the proxy's address).
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Timeouts and clients that go away land here; nothing to act on.
                tracing::debug!(target: "serve::http", error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = open,
            grace_secs = settings.shutdown_grace_secs,
            "requests still running after the shutdown grace period; not waiting for them"
        );
    }
    Ok(())
}

/// Enforces `privacy.max_event_age_days` at start-up and every `retention_interval_minutes`.
async fn retention(engine: Arc<Engine>) {
    let every = engine.settings().privacy.retention_interval_minutes.max(1);
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(every * 60));
    loop {
        ticker.tick().await;
        if !leads(&engine).await {
            continue;
        }
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.apply_retention("retention")).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(target: "serve::privacy", events = n, "expired old events"),
            Ok(Err(e)) => tracing::warn!(target: "serve::privacy", error = %e, "retention failed"),
            Err(e) => tracing::error!(target: "serve::privacy", error = %e, "retention panicked"),
        }
    }
}

/// Closes expired reward windows (default rewards) and checkpoints learners periodically.
async fn decision_windows(engine: Arc<Engine>) {
    let every = engine.settings().decisions.settle_interval_ms.max(10);
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(every));
    let mut ticks = 0u64;
    loop {
        ticker.tick().await;
        ticks += 1;
        let e = engine.clone();
        let checkpoint = ticks.is_multiple_of(30);
        let result = tokio::task::spawn_blocking(move || {
            let d = e.decisions();
            let n = d.settle_expired(time::now_ms())?;
            if checkpoint {
                d.checkpoint_all()?;
            }
            Ok::<_, decisions::DecisionError>(n)
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::debug!(target: "serve::decisions", settled = n, "closed reward windows")
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "serve::decisions", error = %e, "closing reward windows failed")
            }
            Err(e) => {
                tracing::error!(target: "serve::decisions", error = %e, "closing reward windows panicked")
            }
        }
    }
}

/// How often the scheduler looks for segments whose `refresh` interval has passed.
const SEGMENT_TICK: std::time::Duration = std::time::Duration::from_secs(60);

/// Recomputes scheduled segments and sends their exports ([`Engine::run_due_segments`]),
/// checking every [`SEGMENT_TICK`], the first time one tick after the start.
async fn scheduled_segments(engine: Arc<Engine>) {
    let first = tokio::time::Instant::now() + SEGMENT_TICK;
    let mut ticker = tokio::time::interval_at(first, SEGMENT_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !leads(&engine).await {
            continue;
        }
        // Each refresh and export logs (and records in its segment) how it went.
        let runs = engine.run_due_segments(time::now_ms()).await;
        if !runs.is_empty() {
            tracing::debug!(segments = runs.len(), "ran scheduled segments");
        }
    }
}

/// How often the key mirror is reloaded from the store.
const KEY_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Reloads API keys and running experiments, so that keys created or revoked by `bespoke keys`
/// and experiments started or stopped by `bespoke experiment` (another process) take effect on
/// a running server within [`KEY_REFRESH`]; writes buffered experiment exposures.
async fn refresh_keys(engine: Arc<Engine>) {
    let mut ticker = tokio::time::interval(KEY_REFRESH);
    loop {
        ticker.tick().await;
        let e = engine.clone();
        // Experiments started or stopped by another process (`bespoke experiment`, another
        // node) take effect here too, and buffered exposures are written.
        let refresh = move || {
            e.access().refresh_keys()?;
            e.reload_experiments()?;
            e.flush_exposures().map(drop)
        };
        match tokio::task::spawn_blocking(refresh).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "reloading API keys or experiments failed"),
            Err(e) => tracing::error!(error = %e, "reloading API keys panicked"),
        }
    }
}
