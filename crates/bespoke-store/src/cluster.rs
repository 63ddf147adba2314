//! Several processes on one store: what one learns of the others' writes, and which one leads.
//!
//! A serving node keeps users, items and histories in memory (see `bespoke-server`'s engine);
//! when other nodes (or CLI processes) write the same store, it must hear of it. A backend that
//! can be shared (`PgStore`, feature `postgres`) announces every committed change on a channel
//! ([`ClusterStore::changes`]), and hands out a leadership per role ([`ClusterStore::try_lead`])
//! so that one node at a time trains models or runs schedules. The embedded SQLite store has one
//! process by design: it announces nothing and every caller leads.
//!
//! Announcements say *what* changed, never the data: a node reads the change back from the store,
//! so a lost announcement costs latency, not correctness, as long as the node re-reads
//! everything when the feed says [`Change::Resync`] (after a reconnection, when announcements
//! may have been missed). Events are not announced one by one: appends commit in sequence
//! order, so [`Change::Events`] only wakes the reader of [`crate::EventStore::scan_interactions`]
//! after its last sequence number.

use std::time::Duration;

use crate::{ItemIdx, Result, UserIdx};

/// A change committed by another process to the shared store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// Events were appended: read them after the last sequence number seen.
    Events,
    /// A user was created or changed (profile, consent).
    User(UserIdx),
    /// A user was deleted (with their events).
    UserDeleted(UserIdx),
    /// An item was created or changed.
    Item(ItemIdx),
    /// An item was deleted (with its events).
    ItemDeleted(ItemIdx),
    /// Some of a user's events on an item were deleted: rebuild that pair from the store.
    Pair(UserIdx, ItemIdx),
    /// Another model version became active.
    Model,
    /// The saved business rules changed.
    Rules,
    /// A user's block list changed.
    Blocks(UserIdx),
    /// An erasure receipt was written.
    Erasures,
    /// Announcements may have been missed (the listening connection was lost), or a change
    /// too wide to announce piecewise was made (retention expired events): re-read everything.
    Resync,
}

/// Announcements of [`Change`]s, in commit order. Dropping it stops the listener.
pub struct ChangeFeed {
    rx: crossbeam_channel::Receiver<Change>,
    /// Tells the backend's listener to stop when the feed is dropped.
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("waiting", &self.rx.len())
            .finish()
    }
}

impl ChangeFeed {
    /// A feed of what `rx` receives; `guard` is dropped with it.
    pub fn with_guard(
        rx: crossbeam_channel::Receiver<Change>,
        guard: Box<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        Self { rx, _guard: guard }
    }

    /// The next change, waiting at most `timeout`; `None` when none came (or the feed ended).
    pub fn next_timeout(&self, timeout: Duration) -> Option<Change> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// A change already waiting, if any.
    pub fn try_next(&self) -> Option<Change> {
        self.rx.try_recv().ok()
    }
}

/// A held leadership of one role; released when dropped (and by the database when the
/// process dies: another node takes over).
pub trait Leadership: Send + std::fmt::Debug {
    /// Whether it is still held (the connection that holds it is alive). Once `false`, drop it
    /// and try to lead again.
    fn alive(&mut self) -> bool;
}

/// Leadership of a store nobody shares.
#[derive(Debug)]
pub struct Alone;

impl Leadership for Alone {
    fn alive(&mut self) -> bool {
        true
    }
}

/// Coordination between processes sharing the store. The defaults are those of a store only
/// one process uses.
pub trait ClusterStore: Send + Sync + std::fmt::Debug {
    /// Whether other processes may write this store while this one serves it.
    fn shared(&self) -> bool {
        false
    }

    /// Starts listening for changes other processes commit; `None` when nobody else can write.
    /// Changes made through this handle are not announced to it.
    fn changes(&self) -> Result<Option<ChangeFeed>> {
        Ok(None)
    }

    /// Takes the leadership of `role` if no other process holds it.
    fn try_lead(&self, role: &str) -> Result<Option<Box<dyn Leadership>>> {
        let _ = role;
        Ok(Some(Box::new(Alone)))
    }
}

/// The wire form of a change (the payload of a PostgreSQL notification): a letter and an id.
pub(crate) fn encode(change: &Change) -> String {
    match change {
        Change::Events => "e".into(),
        Change::User(u) => format!("u{}", u.0),
        Change::UserDeleted(u) => format!("U{}", u.0),
        Change::Item(i) => format!("i{}", i.0),
        Change::ItemDeleted(i) => format!("I{}", i.0),
        Change::Pair(u, i) => format!("p{}:{}", u.0, i.0),
        Change::Model => "m".into(),
        Change::Rules => "r".into(),
        Change::Blocks(u) => format!("b{}", u.0),
        Change::Erasures => "x".into(),
        Change::Resync => "R".into(),
    }
}

/// The change of a wire form; `None` for one this build does not know (a newer node's).
pub(crate) fn decode(s: &str) -> Option<Change> {
    let (tag, rest) = s.split_at_checked(1)?;
    let id = || rest.parse::<u32>().ok();
    Some(match tag {
        "e" => Change::Events,
        "u" => Change::User(UserIdx(id()?)),
        "U" => Change::UserDeleted(UserIdx(id()?)),
        "i" => Change::Item(ItemIdx(id()?)),
        "I" => Change::ItemDeleted(ItemIdx(id()?)),
        "p" => {
            let (u, i) = rest.split_once(':')?;
            Change::Pair(UserIdx(u.parse().ok()?), ItemIdx(i.parse().ok()?))
        }
        "m" => Change::Model,
        "r" => Change::Rules,
        "b" => Change::Blocks(UserIdx(id()?)),
        "x" => Change::Erasures,
        "R" => Change::Resync,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_their_wire_form() {
        for c in [
            Change::Events,
            Change::User(UserIdx(7)),
            Change::UserDeleted(UserIdx(u32::MAX)),
            Change::Item(ItemIdx(0)),
            Change::ItemDeleted(ItemIdx(3)),
            Change::Pair(UserIdx(4), ItemIdx(u32::MAX)),
            Change::Model,
            Change::Rules,
            Change::Blocks(UserIdx(9)),
            Change::Erasures,
            Change::Resync,
        ] {
            assert_eq!(decode(&encode(&c)), Some(c));
        }
        for bad in [
            "",
            "z",
            "u",
            "ux",
            "U-1",
            "i99999999999",
            "p1",
            "p1:",
            ":2",
            "p1:x",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
