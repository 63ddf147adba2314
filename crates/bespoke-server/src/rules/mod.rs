//! Business rules: a small expression language over item attributes and the request context.
//!
//! `price < 50 and category in ["Kitchen", "Garden"] and not (tags contains "clearance")`
//!
//! The stages follow tantivy's query → weight → scorer split:
//! - [`parse()`] turns source text into a typed [`Expr`] (or an [`ExprError`] naming the position
//!   and what was expected), within [`Limits`];
//! - [`compile()`] checks an [`Expr`] against the attribute schema of a [`Columns`] and resolves
//!   attribute names to column indices and string literals to interned ids: a [`Compiled`];
//! - [`Compiled::bind`] fixes `now` and the request context: a [`Bound`], whose
//!   [`Bound::eval`] is the per-item predicate used inside the top-k scan;
//! - [`Cache`] keeps compiled expressions per source text, redone when the schema changes.
//!
//! [`interpret()`] evaluates an [`Expr`] directly against one [`bespoke_store::Item`]; it is the
//! slow, obviously-right twin that the property tests hold the compiled form to.
//!
//! The language itself (grammar, types, missing-attribute semantics, limits) is described in
//! `docs/rules.md`.
//!
//! ```
//! use bespoke_server::rules::{Columns, Limits, compile, parse};
//!
//! let mut cols = Columns::new();
//! let mut item = bespoke_store::Item {
//!     idx: bespoke_store::ItemIdx(0),
//!     key: "pan".into(),
//!     categories: vec!["Kitchen".into()],
//!     text: Default::default(),
//!     numeric: [("price".to_string(), 30.0)].into(),
//!     attributes: Default::default(),
//!     embeddings: Default::default(),
//!     available: true,
//!     created_at: 0,
//!     updated_at: 0,
//! };
//! cols.set_item(0, &item);
//! let expr = parse(r#"price < 50 and category contains "Kitchen""#, &Limits::default()).unwrap();
//! let rule = compile(&expr, &cols).unwrap().bind(0, None).unwrap();
//! assert!(rule.eval(&cols, 0));
//! item.numeric.insert("price".into(), 80.0);
//! cols.set_item(0, &item);
//! assert!(!rule.eval(&cols, 0));
//! ```

mod ast;
mod cache;
mod columns;
mod compile;
mod interpret;
pub(crate) mod parse;
mod precompute;
pub mod spec;
#[cfg(test)]
mod tests;

use std::fmt;

pub use ast::{Attr, CmpOp, Expr, Literal, Operand, Pos, Time};
pub use cache::Cache;
pub use columns::Columns;
pub use compile::{Bound, Compiled, compile};
pub use interpret::interpret;
pub use parse::parse;
pub use precompute::{Evaluated, Pred};

/// Bounds on what [`parse()`] accepts, so that a hostile expression costs little to reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest source text, in bytes.
    pub max_len: usize,
    /// Deepest nesting of parentheses and `not`; at most [`MAX_DEPTH_CAP`] whatever is set,
    /// since the parser, compiler and evaluator recurse once per level.
    pub max_depth: usize,
    /// Most elements in one list literal. Context lists are held to the default (256) at bind
    /// time, which has no `Limits` of its own.
    pub max_list: usize,
    /// Most clauses (comparisons, `in`, `contains`, `exists`) in one expression.
    pub max_clauses: usize,
}

/// The most [`Limits::max_depth`] can allow: bounds the stack any expression can take.
pub const MAX_DEPTH_CAP: usize = 128;

impl Default for Limits {
    /// 4096 bytes, depth 32, 256 list elements, 64 clauses.
    fn default() -> Self {
        Self {
            max_len: 4096,
            max_depth: 32,
            max_list: 256,
            max_clauses: 64,
        }
    }
}

/// Why an expression was rejected: at parse, compile or bind time. Meant for a 400 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// 0-based character offset into the source where the problem is.
    pub position: usize,
    /// What the parser expected there (`` `]` or `,` ``); empty when nothing in particular.
    pub expected: String,
    /// What is wrong, naming the part (`` unknown attribute `pric` ``); may be empty for a
    /// plain syntax error, where `expected` says it all.
    pub message: String,
}

impl ExprError {
    pub(crate) fn new(
        position: usize,
        expected: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            position,
            expected: expected.into(),
            message: message.into(),
        }
    }

    /// An error with a message and nothing in particular expected.
    pub(crate) fn msg(position: usize, message: impl Into<String>) -> Self {
        Self::new(position, "", message)
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}", self.position)?;
        match (self.expected.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, ": expected {} — {}", self.expected, self.message),
            (false, true) => write!(f, ": expected {}", self.expected),
            (true, false) => write!(f, ": {}", self.message),
            (true, true) => write!(f, ": invalid expression"),
        }
    }
}

impl std::error::Error for ExprError {}
