//! The typed syntax tree of the user language, its printer (whose output parses back to the
//! same tree), and what a tree needs from the event history.

use std::fmt;

use bespoke_store::Millis;

use crate::rules::{CmpOp, Expr, Literal, Pos, Time};

/// Which end of the user's event history a `last_seen` / `first_seen` clause reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// `last_seen`: the timestamp of the user's latest event.
    Last,
    /// `first_seen`: the timestamp of the user's earliest event.
    First,
}

impl Seen {
    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Seen::Last => "last_seen",
            Seen::First => "first_seen",
        }
    }
}

/// Which event types a behaviour predicate looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindFilter {
    /// `type = "view"` (one element) or `type in ["view", "click"]`: one of these. An empty
    /// list (`type in []`) matches no event.
    In(Vec<String>),
    /// `type != "view"`: any type but this one.
    Not(String),
}

impl KindFilter {
    /// Whether an event of type `kind` passes.
    pub fn matches(&self, kind: &str) -> bool {
        match self {
            KindFilter::In(kinds) => kinds.iter().any(|k| k == kind),
            KindFilter::Not(k) => k != kind,
        }
    }
}

/// The events a behaviour predicate looks at: those passing every condition given (the
/// comma-separated filters are and-ed). The default passes every event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventFilter {
    /// `type = ...`, `type != ...`, `type in [...]`; `None`: any type.
    pub kind: Option<KindFilter>,
    /// `within = 30d`: only events at or after `now - within` (milliseconds, positive);
    /// `None`: the whole history.
    pub within: Option<Millis>,
    /// Conditions on the event's item, each a clause of the rules language (a
    /// [`Expr::Compare`], [`Expr::In`], [`Expr::Contains`] or [`Expr::Exists`] with a literal
    /// right side), evaluated as `docs/rules.md` says. An event without an item fails any of
    /// them; with none, events with and without items pass alike.
    pub item: Vec<Expr>,
}

/// A parsed user expression. `and` and `or` are n-ary (at least two operands when parsed), so
/// that a long chain is flat rather than deep.
///
/// Positions ([`Pos`]) take no part in equality, as in the rules language: the same expression
/// written with other spacing, or printed back by `Display`, compares equal.
#[derive(Debug, Clone, PartialEq)]
pub enum UserExpr {
    /// True when any operand is.
    Or(Vec<UserExpr>),
    /// True when every operand is.
    And(Vec<UserExpr>),
    /// Negation; also of a clause on a missing attribute, which is false, so `not` makes it true.
    Not(Box<UserExpr>),
    /// A clause on the user's own attributes (`country = "DE"`, `plan in ["pro", "team"]`,
    /// `tags contains "vip"`, `exists(age)`): a [`Expr::Compare`], [`Expr::In`],
    /// [`Expr::Contains`] or [`Expr::Exists`] of the rules language with a literal right side.
    Attribute(Expr),
    /// `last_seen < now - 14d`: the timestamp of the user's latest (or earliest) event against a
    /// timestamp literal; missing, so false, for a user without events.
    Seen {
        /// Which end of the history.
        end: Seen,
        /// The comparison.
        op: CmpOp,
        /// The timestamp compared with.
        at: Time,
        /// Where `last_seen` / `first_seen` starts.
        pos: Pos,
    },
    /// `events(type = "view") >= 5`: how many of the user's events pass the filter. Also what
    /// `purchased(...)`, `viewed(...)`, `clicked(...)` and `exists(last_seen)` parse to.
    Events {
        /// Which events count.
        filter: EventFilter,
        /// The comparison.
        op: CmpOp,
        /// The count compared with.
        count: u64,
        /// Where the predicate starts.
        pos: Pos,
    },
    /// `value(type = "purchase", within = 30d) > 100`: the sum of the values of the user's
    /// events that pass the filter; an event without a (finite) value adds 0, and so does no
    /// event at all.
    Value {
        /// Which events add up.
        filter: EventFilter,
        /// The comparison.
        op: CmpOp,
        /// The sum compared with.
        total: f64,
        /// Where the predicate starts.
        pos: Pos,
    },
}

impl UserExpr {
    /// Whether evaluating needs the user's events: false when the expression reads attributes
    /// only, so that a caller can pass an empty history without loading it.
    pub fn needs_events(&self) -> bool {
        match self {
            UserExpr::Or(xs) | UserExpr::And(xs) => xs.iter().any(UserExpr::needs_events),
            UserExpr::Not(x) => x.needs_events(),
            UserExpr::Attribute(_) => false,
            UserExpr::Seen { .. } | UserExpr::Events { .. } | UserExpr::Value { .. } => true,
        }
    }

    /// How far back the event history must reach, in milliseconds before `now`: evaluating on
    /// the events with `timestamp >= now - w` alone gives the same answer as on the whole
    /// history. `None` when some predicate needs the whole history: a behaviour predicate
    /// without `within`, `first_seen`, and `last_seen` with `<`, `<=`, `!=` or a `date(...)`
    /// (these are true for old events, so the old events must be there to be seen).
    /// `Some(0)` when no events are needed at all (see [`UserExpr::needs_events`]).
    pub fn max_window(&self) -> Option<Millis> {
        match self {
            UserExpr::Or(xs) | UserExpr::And(xs) => xs
                .iter()
                .try_fold(0, |most, x| Some(most.max(x.max_window()?))),
            UserExpr::Not(x) => x.max_window(),
            UserExpr::Attribute(_) => Some(0),
            // True exactly when some event is at or after `now + off`, which the events since
            // then show: `last_seen > now - 7d`, the usual "active lately", needs a week.
            UserExpr::Seen {
                end: Seen::Last,
                op: CmpOp::Eq | CmpOp::Gt | CmpOp::Ge,
                at: Time::Now(off),
                ..
            } => Some(off.saturating_neg().max(0)),
            UserExpr::Seen { .. } => None,
            UserExpr::Events { filter, .. } | UserExpr::Value { filter, .. } => filter.within,
        }
    }

    /// Writes `self`, in parentheses when it binds looser than its place allows (`level`: 0
    /// under `or`, 1 under `and`, 2 under `not`). As the rules printer does.
    fn write_at(&self, f: &mut fmt::Formatter<'_>, level: u8) -> fmt::Result {
        let own = match self {
            UserExpr::Or(_) => 0,
            UserExpr::And(_) => 1,
            _ => 2,
        };
        // A nested `or` directly under `or` needs parentheses too, or it would parse flat.
        let paren = own < level || (own < 2 && own == level);
        if paren {
            f.write_str("(")?;
        }
        match self {
            UserExpr::Or(xs) | UserExpr::And(xs) => {
                let sep = if own == 0 { " or " } else { " and " };
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    x.write_at(f, own)?;
                }
            }
            UserExpr::Not(x) => {
                f.write_str("not ")?;
                x.write_at(f, 2)?;
            }
            UserExpr::Attribute(e) => write!(f, "{e}")?,
            UserExpr::Seen { end, op, at, .. } => write!(f, "{} {op} {at}", end.name())?,
            UserExpr::Events {
                filter, op, count, ..
            } => write!(f, "events({filter}) {op} {count}")?,
            UserExpr::Value {
                filter, op, total, ..
            } => write!(f, "value({filter}) {op} {total}")?,
        }
        if paren {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Display for UserExpr {
    /// The expression as source text that [`super::parse()`] reads back to an equal
    /// [`UserExpr`]. The shorthands come out spelled in full: `purchased()` prints as
    /// `events(type = "purchase") >= 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The top never needs parentheses, not even an `or`.
        if let UserExpr::Or(xs) = self {
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    f.write_str(" or ")?;
                }
                x.write_at(f, 0)?;
            }
            Ok(())
        } else {
            self.write_at(f, 0)
        }
    }
}

impl fmt::Display for EventFilter {
    /// The filters inside the parentheses: `type = "view", within = 30d, price > 20`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        match &self.kind {
            None => {}
            Some(KindFilter::In(kinds)) if kinds.len() == 1 => {
                write!(f, "type = {}", Literal::String(kinds[0].clone()))?;
                sep = ", ";
            }
            Some(KindFilter::In(kinds)) => {
                let list = kinds.iter().cloned().map(Literal::String).collect();
                write!(f, "type in {}", Literal::List(list))?;
                sep = ", ";
            }
            Some(KindFilter::Not(kind)) => {
                write!(f, "type != {}", Literal::String(kind.clone()))?;
                sep = ", ";
            }
        }
        if let Some(w) = self.within {
            write!(f, "{sep}within = {}", Duration(w))?;
            sep = ", ";
        }
        for e in &self.item {
            write!(f, "{sep}{e}")?;
            sep = ", ";
        }
        Ok(())
    }
}

/// A positive duration in milliseconds, printed in the largest unit that divides it exactly
/// (`30d`, `90m`), so that the text parses back as is.
struct Duration(Millis);

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let abs = self.0.unsigned_abs();
        let (n, unit) = [
            (604_800_000, 'w'),
            (86_400_000, 'd'),
            (3_600_000, 'h'),
            (60_000, 'm'),
            (1000, 's'),
        ]
        .into_iter()
        .find(|(ms, _)| abs.is_multiple_of(*ms))
        .map_or((abs / 1000, 's'), |(ms, u)| (abs / ms, u));
        write!(f, "{n}{unit}")
    }
}
