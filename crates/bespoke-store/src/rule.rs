//! Records of saved business rules and per-user item blocks (backend-neutral types; the SQLite
//! SQL is in `sqlite/rules.rs`).
//!
//! The store keeps a rule's definition as opaque JSON: the server validates and interprets it.
//! A block is a user's explicit choice about one item; an unblock is kept as a row too (not
//! deleted), so that an older block arriving later cannot bring the item back into hiding.

use crate::{ItemIdx, Millis, UserIdx};

/// A saved business rule: its name and its definition as JSON (the server validates and
/// interprets it).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleRecord {
    /// Name (unique).
    pub name: String,
    /// Definition, as JSON.
    pub definition: serde_json::Value,
    /// When it was first stored; a replace keeps it.
    pub created_at: Millis,
    /// When its definition was last stored.
    pub updated_at: Millis,
}

/// A user's explicit decision about one item: hidden (blocked) or shown again (unblocked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The user who decided.
    pub user: UserIdx,
    /// The item decided about.
    pub item: ItemIdx,
    /// Whether the item is hidden from the user (false: shown again).
    pub blocked: bool,
    /// When the user decided; of two decisions on the same pair, the later one holds.
    pub at: Millis,
}
