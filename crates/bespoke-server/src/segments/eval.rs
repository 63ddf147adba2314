//! Evaluation of a [`UserExpr`] against one user's facts: attributes and events.
//!
//! Plain and direct, like the rules interpreter: a behaviour predicate is one pass over the
//! events it is given, so an expression costs O(clauses × events). Callers bound the events
//! with [`UserExpr::max_window`] and skip them with [`UserExpr::needs_events`].

use bespoke_store::{Item, Millis};
use serde_json::{Map, Value};

use super::ast::{EventFilter, Seen, UserExpr};
use crate::rules::{CmpOp, Expr, Literal, Operand, Time};

/// What an expression is evaluated against: one user's attributes and events.
#[derive(Debug, Clone, Copy)]
pub struct UserFacts<'a> {
    /// The user's attributes, read like an item's `attributes` in the rules language: a number
    /// is a number, a string a string (and a timestamp when it is an RFC 3339 date or
    /// date-time), `true`/`false` a boolean, an array of strings a list of strings; anything
    /// else (`null`, objects, other arrays) is as if absent.
    pub attributes: &'a Map<String, Value>,
    /// The user's events, in any order. Only those a behaviour predicate's window reaches
    /// matter (see [`UserExpr::max_window`]); none at all when [`UserExpr::needs_events`] is
    /// false.
    pub events: &'a [FactEvent<'a>],
}

/// One event of the user's history.
#[derive(Debug, Clone, Copy)]
pub struct FactEvent<'a> {
    /// The event's type: `view`, `click`, `purchase`, or any the application sends.
    pub kind: &'a str,
    /// When it happened, in Unix milliseconds.
    pub timestamp: Millis,
    /// What it was worth (revenue for a purchase); `value(...)` counts `None`, NaN and
    /// infinities as 0.
    pub value: Option<f64>,
    /// The item it was on, when there is one and it still exists. Item conditions are false
    /// for an event without one.
    pub item: Option<&'a Item>,
}

impl UserExpr {
    /// Whether the user with these facts is in the segment, at time `now` (Unix milliseconds),
    /// which `now - 14d` and `within = 30d` count back from.
    ///
    /// A clause on a missing attribute (or one with another type than the literal's) is
    /// false, `!=` included, and `not` makes it true, as in the rules language. `last_seen`
    /// and `first_seen` are missing for a user without events. Counts and sums are never
    /// missing: with no matching event they are 0.
    pub fn eval(&self, facts: &UserFacts<'_>, now: Millis) -> bool {
        match self {
            UserExpr::Or(xs) => xs.iter().any(|x| x.eval(facts, now)),
            UserExpr::And(xs) => xs.iter().all(|x| x.eval(facts, now)),
            UserExpr::Not(x) => !x.eval(facts, now),
            UserExpr::Attribute(e) => attribute_clause(e, facts.attributes, now),
            UserExpr::Seen { end, op, at, .. } => {
                let stamps = facts.events.iter().map(|e| e.timestamp);
                let seen = match end {
                    Seen::Last => stamps.max(),
                    Seen::First => stamps.min(),
                };
                seen.is_some_and(|t| op.apply(t, time_value(*at, now)))
            }
            UserExpr::Events {
                filter, op, count, ..
            } => {
                let n = facts
                    .events
                    .iter()
                    .filter(|e| filter.matches(e, now))
                    .count();
                op.apply(n as u64, *count)
            }
            UserExpr::Value {
                filter, op, total, ..
            } => {
                let sum: f64 = facts
                    .events
                    .iter()
                    .filter(|e| filter.matches(e, now))
                    .map(|e| e.value.filter(|v| v.is_finite()).unwrap_or(0.0))
                    .sum();
                op.apply(sum, *total)
            }
        }
    }
}

impl EventFilter {
    /// Whether `event` passes every condition, at time `now`. The window includes its start:
    /// an event exactly `within` before `now` passes; events after `now` pass too.
    pub fn matches(&self, event: &FactEvent<'_>, now: Millis) -> bool {
        if self.kind.as_ref().is_some_and(|k| !k.matches(event.kind)) {
            return false;
        }
        if self
            .within
            .is_some_and(|w| event.timestamp < now.saturating_sub(w))
        {
            return false;
        }
        if self.item.is_empty() {
            return true;
        }
        let Some(item) = event.item else {
            return false;
        };
        self.item.iter().all(|c| item_clause(c, item, now))
    }
}

/// One item condition: the rules language's interpreter, except that `=` and `!=` with a
/// string test membership on a list of strings (`category = "Garden"`), which the rules
/// language refuses when it compiles and so never evaluates.
fn item_clause(e: &Expr, item: &Item, now: Millis) -> bool {
    if let Expr::Compare {
        attr,
        op: op @ (CmpOp::Eq | CmpOp::Ne),
        rhs: Operand::Literal(Literal::String(s), _),
    } = e
        && let Some(has) = item_list_has(item, &attr.name, s)
    {
        return has == (*op == CmpOp::Eq);
    }
    crate::rules::interpret(e, item, now, None)
}

/// Whether the item's list of strings named `name` holds `s`; `None` when the item has no
/// such list. Mirrors the rules language's lists: `category`/`categories` are the item's
/// categories, the other built-ins are never lists (and shadow attributes of their name), and
/// any other name is an attribute that is an array of strings only.
fn item_list_has(item: &Item, name: &str, s: &str) -> Option<bool> {
    match name {
        "category" | "categories" => Some(item.categories.iter().any(|c| c == s)),
        "item" | "available" | "created_at" | "updated_at" => None,
        _ => list_has(item.attributes.get(name)?, s),
    }
}

/// An attribute clause on the user's attributes. Only the clause forms the parser makes are
/// true for some user; `and`/`or`/`not` inside are honoured anyway.
fn attribute_clause(e: &Expr, attrs: &Map<String, Value>, now: Millis) -> bool {
    match e {
        Expr::Or(xs) => xs.iter().any(|x| attribute_clause(x, attrs, now)),
        Expr::And(xs) => xs.iter().all(|x| attribute_clause(x, attrs, now)),
        Expr::Not(x) => !attribute_clause(x, attrs, now),
        Expr::Exists(a) => attrs.get(&a.name).is_some_and(|v| {
            num(v).is_some() || v.is_string() || v.is_boolean() || list_has(v, "").is_some()
        }),
        Expr::Compare {
            attr,
            op,
            rhs: Operand::Literal(lit, _),
        } => attrs
            .get(&attr.name)
            .is_some_and(|v| compare(v, *op, lit, now)),
        Expr::In {
            attr,
            rhs: Operand::Literal(Literal::List(xs), _),
        } => attrs
            .get(&attr.name)
            .is_some_and(|v| xs.iter().any(|x| compare(v, CmpOp::Eq, x, now))),
        Expr::Contains {
            attr,
            rhs: Operand::Literal(Literal::String(s), _),
        } => attrs.get(&attr.name).is_some_and(|v| match list_has(v, s) {
            Some(has) => has,
            None => v.as_str().is_some_and(|t| t.contains(s.as_str())),
        }),
        // A context operand, or a right side of the wrong shape: never parsed.
        _ => false,
    }
}

/// `v op lit`, false where `v` lacks the literal's type. On a list of strings, `=` and `!=`
/// test membership, as `in` and `contains` do.
fn compare(v: &Value, op: CmpOp, lit: &Literal, now: Millis) -> bool {
    let eq = op == CmpOp::Eq;
    match lit {
        Literal::Number(x) => num(v).is_some_and(|n| op.apply(n, *x)),
        Literal::String(s) if !op.is_ordering() => match list_has(v, s) {
            Some(has) => has == eq,
            None => v.as_str().is_some_and(|t| (t == s) == eq),
        },
        Literal::Bool(b) if !op.is_ordering() => v.as_bool().is_some_and(|t| (t == *b) == eq),
        Literal::Time(t) => v
            .as_str()
            .and_then(time_of)
            .is_some_and(|ms| op.apply(ms, time_value(*t, now))),
        _ => false,
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// Whether `v`, a list of strings, holds `s`; `None` when `v` is not a list of strings (an
/// array holding anything else is no list, as in the rules language).
fn list_has(v: &Value, s: &str) -> Option<bool> {
    let Value::Array(xs) = v else {
        return None;
    };
    let mut has = false;
    for x in xs {
        has |= x.as_str()? == s;
    }
    Some(has)
}

fn time_value(t: Time, now: Millis) -> Millis {
    match t {
        Time::Now(off) => now.saturating_add(off),
        Time::At(ms) => ms,
    }
}

/// A string attribute as a timestamp, when it is an RFC 3339 date or date-time (as the rules
/// language reads attribute strings).
fn time_of(s: &str) -> Option<Millis> {
    // Cheap rejection first: most strings are not dates.
    if s.len() < 10 || !s.as_bytes()[0].is_ascii_digit() || s.as_bytes()[4] != b'-' {
        return None;
    }
    crate::rules::parse::parse_time(s).ok()
}
