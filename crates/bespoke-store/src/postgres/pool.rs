//! A small pool of blocking PostgreSQL connections, each with its own cache of prepared
//! statements, and [`Db`], what the capability modules run their SQL through.
//!
//! Why not `r2d2_postgres`: it would add r2d2 and its scheduled thread pool (a thread of its own
//! per pool) for what is 100 lines here, and it knows nothing of the per-connection statement
//! cache, which is what keeps a query to one round trip instead of two (parse, then execute).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement, Transaction};

use crate::{Error, Result};

/// A query's parameters.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// One open connection and the statements prepared on it (by their SQL text, which is always a
/// `'static` string of this backend: nothing built from input is ever prepared).
pub(super) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// When it was last given back to the pool.
    returned: Instant,
}

/// A connection idle longer than this is checked (one empty query) before it is lent: the
/// server may have restarted, or a firewall dropped the connection, meanwhile.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(30);

struct State {
    idle: Vec<Conn>,
    /// Connections open, idle or lent out.
    open: usize,
    /// No more connections are lent; those given back are closed.
    closed: bool,
}

/// At most `max` connections, opened on demand and kept open once made.
pub(super) struct Pool {
    config: postgres::Config,
    max: usize,
    wait: Duration,
    state: Mutex<State>,
    freed: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Pool")
            .field("max", &self.max)
            .field("open", &state.open)
            .field("idle", &state.idle.len())
            .finish()
    }
}

impl Pool {
    pub(super) fn new(config: postgres::Config, max: usize, wait: Duration) -> Self {
        Self {
            config,
            max: max.max(1),
            wait,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                closed: false,
            }),
            freed: Condvar::new(),
        }
    }

    /// How it connects (for connections of their own: listening, leadership).
    pub(super) fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// A connection: an idle one, a new one while fewer than `max` are open, or the first one
    /// given back within the wait.
    pub(super) fn get(&self) -> Result<Lease<'_>> {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return Err(Error::Closed);
            }
            if let Some(mut conn) = state.idle.pop() {
                if conn.returned.elapsed() > CHECK_AFTER_IDLE {
                    drop(state);
                    if conn.client.is_valid(Duration::from_secs(5)).is_err() {
                        tracing::debug!("dropped a pooled PostgreSQL connection that went bad");
                        drop(conn);
                        self.forget();
                        state = self.state.lock();
                        continue;
                    }
                }
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                    not_begun: false,
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.config.connect(NoTls) {
                    Ok(client) => Ok(Lease {
                        pool: self,
                        conn: Some(Conn {
                            client,
                            statements: HashMap::new(),
                            returned: Instant::now(),
                        }),
                        not_begun: false,
                    }),
                    Err(e) => {
                        self.forget();
                        Err(e.into())
                    }
                };
            }
            if self.freed.wait_for(&mut state, self.wait).timed_out() && state.idle.is_empty() {
                // Every connection is busy (or stuck on an unresponsive server): the caller
                // may try again later, as when the server cannot be reached.
                return Err(Error::Unavailable(format!(
                    "no PostgreSQL connection became free within {:?} ({} open)",
                    self.wait, self.max
                )));
            }
        }
    }

    /// A lent connection was closed: make room for a new one.
    fn forget(&self) {
        self.state.lock().open -= 1;
        self.freed.notify_one();
    }

    /// Closes every idle connection and lends no more; lent ones close when they come back.
    pub(super) fn close(&self) {
        let idle = {
            let mut state = self.state.lock();
            state.closed = true;
            state.open -= state.idle.len();
            std::mem::take(&mut state.idle)
        };
        // Closing a connection blocks on the client's own small runtime, which panics on a
        // thread that drives an async runtime (a server's last reference to the store may be
        // dropped in a task): close them on a thread of their own, and wait for it.
        if !idle.is_empty() {
            let closing = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(idle));
            if let Ok(handle) = closing {
                let _ = handle.join();
            }
        }
        // Callers waiting for a connection hear that there will be none.
        self.freed.notify_all();
    }
}

/// A connection lent by the pool; it goes back when dropped, unless it was closed.
pub(super) struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
    /// The last transaction failed at `BEGIN`, before anything of it ran.
    not_begun: bool,
}

impl Lease<'_> {
    /// Whether its connection is closed (the server ended it, or the network failed).
    pub(super) fn is_closed(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.client.is_closed())
    }

    /// Whether the last transaction failed because the connection was found closed at
    /// `BEGIN`, before anything of it ran: it may run again on another connection.
    pub(super) fn stale(&self) -> bool {
        self.not_begun && self.is_closed()
    }

    fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }

    /// Runs `f` on this connection outside any explicit transaction (each statement commits by
    /// itself): for reads, and for commands that cannot run in a transaction (`VACUUM`).
    pub(super) fn run<T>(&mut self, f: impl FnOnce(&mut Db<'_, '_>) -> Result<T>) -> Result<T> {
        let Conn {
            client, statements, ..
        } = self.conn();
        f(&mut Db {
            target: Target::Client(client),
            statements,
        })
    }

    /// Runs `f` in a transaction (READ COMMITTED) and commits it. On an error from `f` the
    /// transaction is rolled back. Deadlocks, serialization failures and unique violations
    /// (a concurrent transaction created the same key first) are retried a few times, so `f`
    /// may run more than once and must not have effects outside the transaction.
    pub(super) fn transaction<T>(
        &mut self,
        mut f: impl FnMut(&mut Db<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        const TRIES: u32 = 8;
        let mut attempt = 0;
        self.not_begun = false;
        loop {
            attempt += 1;
            let Lease {
                conn, not_begun, ..
            } = self;
            let Conn {
                client, statements, ..
            } = conn
                .as_mut()
                .expect("a lease holds its connection until dropped");
            let mut tx = match client.transaction() {
                Ok(tx) => tx,
                Err(e) => {
                    // Nothing of `f` ran: if the connection turns out closed, the caller may
                    // retry on another one (`Lease::stale`).
                    *not_begun = true;
                    return Err(e.into());
                }
            };
            let out = f(&mut Db {
                target: Target::Tx(&mut tx),
                statements,
            });
            let out = match out {
                Ok(v) => tx.commit().map(|()| v).map_err(Error::from),
                // Dropping `tx` rolls it back.
                Err(e) => Err(e),
            };
            match out {
                Err(e) if attempt < TRIES && retryable(&e) => {
                    tracing::debug!(attempt, error = %e, "retrying a PostgreSQL transaction");
                    // Back off a little, differently for each racer.
                    let jitter = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::from(d.subsec_nanos() % 500));
                    std::thread::sleep(Duration::from_micros(200 * u64::from(attempt) + jitter));
                }
                other => return other,
            }
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        conn.returned = Instant::now();
        let mut state = self.pool.state.lock();
        if conn.client.is_closed() || state.closed {
            state.open -= 1;
            drop(state);
            drop(conn);
            self.pool.freed.notify_one();
            return;
        }
        state.idle.push(conn);
        drop(state);
        self.pool.freed.notify_one();
    }
}

/// Whether a failed transaction may succeed when run again: a deadlock or serialization
/// failure, or a unique violation (another transaction inserted the same key first; run again,
/// the transaction finds it).
fn retryable(e: &Error) -> bool {
    let Some(code) = super::PgError::code_of(e) else {
        return false;
    };
    use postgres::error::SqlState;
    [
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::UNIQUE_VIOLATION,
    ]
    .contains(code)
}

enum Target<'c, 't> {
    Client(&'c mut Client),
    Tx(&'c mut Transaction<'t>),
}

/// A connection, or a transaction on one, with its statement cache: every query of this
/// backend goes through here.
pub(super) struct Db<'c, 't> {
    target: Target<'c, 't>,
    statements: &'c mut HashMap<&'static str, Statement>,
}

macro_rules! dispatch {
    ($self:ident, $method:ident, $($arg:expr),*) => {
        match &mut $self.target {
            Target::Client(c) => c.$method($($arg),*),
            Target::Tx(t) => t.$method($($arg),*),
        }
    };
}

impl Db<'_, '_> {
    /// The statement for `sql`, prepared on first use on this connection.
    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = dispatch!(self, prepare, sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    pub(super) fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let s = self.statement(sql)?;
        Ok(dispatch!(self, query, &s, params)?)
    }

    pub(super) fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        let s = self.statement(sql)?;
        Ok(dispatch!(self, query_one, &s, params)?)
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>> {
        let s = self.statement(sql)?;
        Ok(dispatch!(self, query_opt, &s, params)?)
    }

    /// Runs a statement; the number of rows it changed.
    pub(super) fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let s = self.statement(sql)?;
        Ok(dispatch!(self, execute, &s, params)?)
    }

    /// Runs SQL without parameters or preparation (schema changes, `VACUUM`, checks whose
    /// text names a relation).
    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(dispatch!(self, batch_execute, sql)?)
    }

    /// A query that is not prepared nor cached (its text is built at run time from names this
    /// backend chose, never from input).
    pub(super) fn query_unprepared(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        Ok(dispatch!(self, query, sql, params)?)
    }
}
