//! The store's error type.

/// Result of store operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong in the store. Variants up to [`Error::InvalidInput`] are the caller's
/// mistakes (see [`Error::is_user_error`]); the rest are ours or the machine's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An event reused an `event_id` already stored with a different payload.
    #[error("event_id {event_id:?} was already used for a different event")]
    EventConflict {
        /// Position of the offending event in its batch.
        index: usize,
        /// The reused id.
        event_id: String,
    },
    /// A client sent an event id in the format of server-issued ids that is not one the server
    /// issued.
    #[error(
        "event_id {event_id:?} has the format of server-issued ids but was not issued by this server"
    )]
    ReservedEventId {
        /// Position of the offending event in its batch.
        index: usize,
        /// The id.
        event_id: String,
    },
    /// An event named a user that does not exist and the batch forbids creating users.
    #[error("unknown user {key:?}")]
    UnknownUser {
        /// Position of the offending event in its batch.
        index: usize,
        /// The unknown key.
        key: String,
    },
    /// An event named an item that does not exist and the batch forbids creating items.
    #[error("unknown item {key:?}")]
    UnknownItem {
        /// Position of the offending event in its batch.
        index: usize,
        /// The unknown key.
        key: String,
    },
    /// A write named an internal user id that the store does not hold: never assigned, or the
    /// user was deleted. Nothing was stored.
    #[error("no user with internal id {}", .0.0)]
    UnknownUserIdx(crate::UserIdx),
    /// A write named an internal item id that the store does not hold: never assigned, or the
    /// item was deleted. Nothing was stored.
    #[error("no item with internal id {}", .0.0)]
    UnknownItemIdx(crate::ItemIdx),
    /// An embedding's length differs from the dimension fixed for its name.
    #[error("embedding {name:?} has dimension {expected}, got a vector of length {got}")]
    DimensionMismatch {
        /// The embedding name.
        name: String,
        /// Dimension fixed by the first vector stored under this name.
        expected: usize,
        /// Length of the rejected vector.
        got: usize,
    },
    /// A value the store cannot hold (e.g. more than 2^32 users).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No model version with this number exists.
    #[error("no model version {0}")]
    UnknownModel(u64),
    /// The disk (or the database's size limit) is full; nothing of the failed write was kept.
    #[error("storage is full")]
    StorageFull,
    /// The writer has stopped (the store is shutting down or has failed).
    #[error("the store is closed")]
    Closed,
    /// The database cannot be reached: connecting failed (refused, timed out), the connection
    /// was lost during the call, the server is shutting down or refuses more connections, or no
    /// pooled connection became free in time. Nothing is wrong with the request, which may be
    /// sent again later. A write that failed this way may or may not have committed (its
    /// commit's answer may be what was lost): sending it again is safe where writes are
    /// idempotent, as events with an `event_id` are.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Creating or opening the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A decision loop's stored records cannot be read back (see [`DecisionStoreError`]).
    #[error(transparent)]
    Decision(#[from] DecisionStoreError),
    /// A saved rule cannot be read back (see [`RuleStoreError`]).
    #[error(transparent)]
    Rule(#[from] RuleStoreError),
    /// Stored data does not have the expected form: a bug or corruption.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Any other failure of the storage backend.
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Whether the caller can fix this by changing the request (a 4xx, not a 5xx).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::EventConflict { .. }
                | Error::ReservedEventId { .. }
                | Error::UnknownUser { .. }
                | Error::UnknownItem { .. }
                | Error::UnknownUserIdx(_)
                | Error::UnknownItemIdx(_)
                | Error::DimensionMismatch { .. }
                | Error::InvalidInput(_)
                | Error::UnknownModel(_)
        )
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && f.code == rusqlite::ErrorCode::DiskFull
        {
            return Error::StorageFull;
        }
        Error::Backend(Box::new(e))
    }
}

/// What can go wrong with a decision loop's stored records: they are written by the decision
/// code as JSON, and these say which record could not be read back, with the parser's error, so
/// that an operator can find it (instead of a generic corrupt-data message).
#[derive(Debug, thiserror::Error)]
pub enum DecisionStoreError {
    /// A loop's stored configuration is not valid JSON, or not a configuration the decision code
    /// understands.
    #[error("decision loop {name:?}: its stored configuration cannot be read: {source}")]
    LoopConfig {
        /// The loop.
        name: String,
        /// Why it cannot be read.
        source: serde_json::Error,
    },
    /// A logged decision's payload (context, actions, probabilities) cannot be read.
    #[error("decision with log sequence number {seq}: its stored payload cannot be read: {source}")]
    Payload {
        /// The decision's log sequence number.
        seq: u64,
        /// Why it cannot be read.
        source: serde_json::Error,
    },
    /// A loop was not there right after it was written in the same transaction.
    #[error("decision loop {0:?} was not found right after it was written")]
    LoopVanished(String),
}

/// What can go wrong with a saved rule's stored record: its definition is written as JSON, and
/// this names the rule whose definition could not be read back, with the parser's error (as
/// [`DecisionStoreError`] does for decision loops).
#[derive(Debug, thiserror::Error)]
pub enum RuleStoreError {
    /// A rule's stored definition is not valid JSON.
    #[error("rule {name:?}: its stored definition cannot be read: {source}")]
    Definition {
        /// The rule.
        name: String,
        /// Why it cannot be read.
        source: serde_json::Error,
    },
}
