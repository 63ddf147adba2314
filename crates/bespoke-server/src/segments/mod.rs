//! Rule-based user segments: the rules language turned to users, over their attributes and
//! their behaviour.
//!
//! `country = "DE" and purchased(category = "Garden", within = 30d) and last_seen < now - 14d`
//!
//! - [`parse()`] turns source text into a typed [`UserExpr`] (or a [`SegmentExprError`] naming
//!   the position and what was expected), within the rules language's [`Limits`](crate::rules::Limits);
//! - [`UserExpr::eval`] decides one user from their [`UserFacts`]: attributes and events;
//! - [`UserExpr::needs_events`] and [`UserExpr::max_window`] tell a caller how much event history
//!   it has to load for that.
//!
//! The shared parts (literals, operators, `in`, `contains`, `exists`, `and`/`or`/`not`,
//! durations, error messages, limits) are the rules language's, described in `docs/rules.md`;
//! attribute clauses are kept as the rules language's own [`Expr`](crate::rules::Expr) values, and conditions on an
//! event's item are evaluated by [`crate::rules::interpret()`], so that an item condition means
//! in a segment what it means in a rule. What segments add (behaviour predicates, `last_seen`,
//! `first_seen`, and `=` on lists of strings) is described in `docs/segments.md`.
//!
//! There is no schema step as rules have: user attributes are free-form JSON, so an unknown
//! name is a missing attribute (the clause is false), not an error. The type errors that need
//! no schema (`plan < "pro"`, `tags contains 5`, a list of mixed types) are refused at parse
//! time, with the rules language's messages.
//!
//! ```
//! use bespoke_server::rules::Limits;
//! use bespoke_server::segments::{FactEvent, UserFacts, parse};
//!
//! const DAY: i64 = 86_400_000;
//! let now = 100 * DAY;
//! let attributes = serde_json::json!({"country": "DE"});
//! let events = [FactEvent { kind: "purchase", timestamp: now - 3 * DAY, value: Some(42.0), item: None }];
//! let facts = UserFacts { attributes: attributes.as_object().unwrap(), events: &events };
//! let e = parse(r#"country = "DE" and value(type = "purchase", within = 7d) > 40"#, &Limits::default()).unwrap();
//! assert!(e.eval(&facts, now));
//! assert!(!e.eval(&facts, now + 5 * DAY)); // the purchase has left the 7-day window
//! assert_eq!(e.max_window(), Some(7 * DAY));
//! ```

mod ast;
mod eval;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

pub use ast::{EventFilter, KindFilter, Seen, UserExpr};
pub use eval::{FactEvent, UserFacts};
pub use parse::parse;

/// Why a segment expression was rejected. Meant for a 400 response; shaped and printed like
/// the rules language's [`crate::rules::ExprError`], so that clients show both alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentExprError {
    /// 0-based character offset into the source where the problem is (the byte offset for
    /// ASCII text). Characters rather than bytes, as in the rules language, so that a client
    /// can point at it in the text it holds whatever its string encoding.
    pub pos: usize,
    /// What the parser expected there (`` `,` or `)` ``); empty when nothing in particular.
    pub expected: String,
    /// What is wrong (`` `within` is given twice ``); empty for a plain syntax error, where
    /// `expected` says it all.
    pub message: String,
}

impl SegmentExprError {
    fn new(pos: usize, expected: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pos,
            expected: expected.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SegmentExprError {
    /// `at position <n>: expected <what> — <what is wrong>`, either part optional.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}", self.pos)?;
        match (self.expected.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, ": expected {} — {}", self.expected, self.message),
            (false, true) => write!(f, ": expected {}", self.expected),
            (true, false) => write!(f, ": {}", self.message),
            (true, true) => write!(f, ": invalid expression"),
        }
    }
}

impl std::error::Error for SegmentExprError {}
