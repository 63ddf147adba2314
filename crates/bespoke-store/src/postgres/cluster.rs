//! [`crate::ClusterStore`] on PostgreSQL: changes announced with `NOTIFY` in the transaction that
//! makes them (so a listener hears of a change only once it has committed, in commit order),
//! heard on a connection of its own that `LISTEN`s; leadership as a session advisory lock,
//! which the server releases when the holder's connection ends (the process died, the network
//! failed), so another node can take over.
//!
//! A notification's payload is `<origin>|<change>,<change>,...` ([`crate::cluster::encode`]);
//! the origin names the [`PgStore`] handle that wrote, so a handle skips its own changes (its
//! process applied them already). The channel is per schema: several stores in one database
//! (tests, tenants) do not hear each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use postgres::fallible_iterator::FallibleIterator;

use super::*;
use crate::cluster::{self, Change, ChangeFeed, Leadership};

/// PostgreSQL refuses payloads of 8,000 bytes or more; changes are split below this.
const MAX_PAYLOAD: usize = 7_000;

/// How long the listener waits for a notification before it checks whether anyone still
/// listens to it.
const POLL: Duration = Duration::from_millis(500);

/// Pause between attempts to reconnect a lost listening connection.
const RECONNECT: Duration = Duration::from_millis(500);

/// How often an idle listening connection is checked with a round trip: a connection that a
/// firewall or NAT dropped silently shows no error until TCP keep-alive gives up (hours),
/// and meanwhile announcements would be lost.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Where a store handle announces its changes, and how it signs them.
#[derive(Debug, Clone)]
pub(super) struct Announcer {
    /// Random per handle.
    origin: String,
    /// `bespoke_<hash of the schema>`: a plain identifier of fixed length.
    pub(super) channel: String,
    /// The schema (or `""`), for advisory lock keys.
    schema: String,
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases, and the lock and
/// channel names must agree between nodes running different builds).
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Announcer {
    pub(super) fn new(schema: Option<&str>) -> Self {
        use std::hash::BuildHasher;
        let schema = schema.unwrap_or("").to_owned();
        let origin = std::hash::RandomState::new().hash_one((now_ms(), std::process::id()));
        Self {
            origin: format!("{origin:016x}"),
            channel: format!("bespoke_{:016x}", fnv(&["changes", &schema])),
            schema,
        }
    }

    /// Announces `changes` when the transaction of `db` commits (nothing if it rolls back).
    pub(super) fn notify(&self, db: &mut Db<'_, '_>, changes: &[Change]) -> Result<()> {
        let mut payload = String::new();
        for c in changes {
            let wire = cluster::encode(c);
            if !payload.is_empty() && payload.len() + wire.len() + 1 > MAX_PAYLOAD {
                self.send(db, &payload)?;
                payload.clear();
            }
            if payload.is_empty() {
                payload.push_str(&self.origin);
                payload.push('|');
            } else {
                payload.push(',');
            }
            payload.push_str(&wire);
        }
        if !payload.is_empty() {
            self.send(db, &payload)?;
        }
        Ok(())
    }

    fn send(&self, db: &mut Db<'_, '_>, payload: &str) -> Result<()> {
        db.query_one("SELECT pg_notify($1, $2)", &[&self.channel, &payload])?;
        Ok(())
    }

    /// The advisory lock key of `role` in this schema.
    fn lock_key(&self, role: &str) -> i64 {
        fnv(&["leader", &self.schema, role]) as i64
    }
}

/// Whether the feed's receiver was dropped, so the listener should stop.
#[derive(Debug)]
struct Closed(Arc<AtomicBool>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A session advisory lock, held as long as its connection lives.
struct PgLeader {
    /// Always `Some` until dropped.
    client: Option<postgres::Client>,
    role: String,
}

impl std::fmt::Debug for PgLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLeader")
            .field("role", &self.role)
            .finish()
    }
}

impl Leadership for PgLeader {
    fn alive(&mut self) -> bool {
        self.client
            .as_mut()
            .is_some_and(|c| c.is_valid(Duration::from_secs(5)).is_ok())
    }
}

impl Drop for PgLeader {
    fn drop(&mut self) {
        // The client runs a small runtime of its own, which must not be dropped on a thread
        // that drives an async one: close it on a thread of its own (the lock goes with it).
        let Some(client) = self.client.take() else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("pg-leader-close".into())
            .spawn(move || drop(client))
            .map(|h| h.join());
    }
}

impl crate::ClusterStore for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn changes(&self) -> Result<Option<ChangeFeed>> {
        let config = self.pool.config().clone();
        let announcer = self.announcer.clone();
        // The first connection is made here, so that a caller learns at once when it cannot
        // listen, and hears of nothing committed after this returns without it.
        let client = listen(&config, &announcer.channel)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let closed = Arc::new(AtomicBool::new(false));
        let guard = Closed(closed.clone());
        std::thread::Builder::new()
            .name("pg-listen".into())
            .spawn(move || listener(config, announcer, client, tx, closed))
            .map_err(|e| Error::Backend(Box::new(e)))?;
        // The feed owns the guard through the channel: when the receiver goes, so does it.
        Ok(Some(ChangeFeed::with_guard(rx, Box::new(guard))))
    }

    fn try_lead(&self, role: &str) -> Result<Option<Box<dyn Leadership>>> {
        let mut client = self.pool.config().connect(postgres::NoTls)?;
        let key = self.announcer.lock_key(role);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .get(0);
        if !got {
            std::thread::Builder::new()
                .name("pg-leader-close".into())
                .spawn(move || drop(client))
                .map_err(|e| Error::Backend(Box::new(e)))?
                .join()
                .ok();
            return Ok(None);
        }
        Ok(Some(Box::new(PgLeader {
            client: Some(client),
            role: role.to_owned(),
        })))
    }
}

fn listen(config: &postgres::Config, channel: &str) -> Result<postgres::Client> {
    let mut client = config.connect(postgres::NoTls)?;
    // The channel is `bespoke_` and 16 hex digits: nothing to quote.
    client.batch_execute(&format!("LISTEN {channel}"))?;
    Ok(client)
}

fn listener(
    config: postgres::Config,
    announcer: Announcer,
    mut client: postgres::Client,
    tx: crossbeam_channel::Sender<Change>,
    closed: Arc<AtomicBool>,
) {
    let prefix = format!("{}|", announcer.origin);
    let mut checked = std::time::Instant::now();
    loop {
        if closed.load(Ordering::Relaxed) {
            return;
        }
        let mut lost = false;
        {
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(POLL);
            loop {
                match iter.next() {
                    Ok(Some(n)) => {
                        let payload = n.payload();
                        let Some((origin, body)) = payload.split_once('|') else {
                            continue;
                        };
                        if payload.starts_with(&prefix) || origin.is_empty() {
                            continue;
                        }
                        for part in body.split(',') {
                            match cluster::decode(part) {
                                Some(change) => {
                                    if tx.send(change).is_err() {
                                        return;
                                    }
                                }
                                None => tracing::debug!(
                                    target: "store::cluster",
                                    change = part,
                                    "ignored an unknown change announcement"
                                ),
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(target: "store::cluster", error = %PgError(e), "lost the connection that listens for changes; reconnecting");
                        lost = true;
                        break;
                    }
                }
            }
        }
        if !lost && checked.elapsed() >= CHECK_EVERY {
            checked = std::time::Instant::now();
            if let Err(e) = client.is_valid(Duration::from_secs(5)) {
                tracing::warn!(target: "store::cluster", error = %PgError(e), "the connection that listens for changes stopped answering; reconnecting");
                lost = true;
            }
        }
        if !lost && !client.is_closed() {
            continue;
        }
        // Reconnect, then have the node re-read everything: announcements made meanwhile are
        // gone.
        loop {
            if closed.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(RECONNECT);
            match listen(&config, &announcer.channel) {
                Ok(c) => {
                    let old = std::mem::replace(&mut client, c);
                    drop(old);
                    if tx.send(Change::Resync).is_err() {
                        return;
                    }
                    tracing::info!(target: "store::cluster", "listening for changes again");
                    break;
                }
                Err(e) => {
                    tracing::debug!(target: "store::cluster", error = %e, "reconnecting the listener failed")
                }
            }
        }
    }
}
