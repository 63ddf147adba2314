//! [`Expr`] → [`Compiled`] (checked against the schema of a [`Columns`]) → [`Bound`] (with
//! `now` and the request context) → a per-item `bool`.
//!
//! The compiled form is a tree of [`Node`]s whose leaves hold column indices and interned
//! string ids, so evaluating one item is a walk over a few enum variants with array reads and
//! integer or float compares: no hashing, no allocation.

use bespoke_store::Millis;
use serde_json::{Map, Value};

use super::ast::{Attr, CmpOp, Expr, Literal, Operand, Time};
use super::columns::{AttrCols, Columns, DYNAMIC, NO_BOOL, NO_STR, NO_TIME, UNSEEN_STR};
use super::{ExprError, Limits};

/// Deepest tree [`compile()`] accepts. A parsed tree is at most about twice as deep as its
/// nesting (an `and` or `or` inside each parenthesis), which [`super::parse()`] caps at
/// [`super::MAX_DEPTH_CAP`]; this guards the recursion against hand-built trees.
const MAX_TREE_DEPTH: usize = 2 * super::MAX_DEPTH_CAP + 8;

/// A string operand: an interned id, [`UNSEEN_STR`] (matches nothing) or [`DYNAMIC`] with
/// the text to compare against. The text is kept in every case, for substring tests.
#[derive(Debug, Clone)]
struct StrVal {
    id: u32,
    text: Box<str>,
}

impl StrVal {
    #[inline]
    fn matches(&self, cols: &Columns, id: u32) -> bool {
        if self.id == DYNAMIC {
            id != NO_STR && cols.string(id) == &*self.text
        } else {
            id == self.id
        }
    }
}

/// What a context reference stands in: the clause it completes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClauseKind {
    Compare(CmpOp),
    In,
    Contains,
}

/// A clause whose right side is `context.<name>`, completed by [`Compiled::bind`].
#[derive(Debug, Clone)]
struct CtxClause {
    kind: ClauseKind,
    attr: String,
    cols: AttrCols,
    field: String,
    pos: usize,
}

/// One node of the compiled predicate. Column fields index the per-type column lists.
#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    Num {
        col: u32,
        op: CmpOp,
        rhs: f64,
    },
    NumIn {
        col: u32,
        set: Box<[f64]>,
    },
    /// `rel`: `rhs` is an offset from the bound `now`.
    Time {
        col: u32,
        op: CmpOp,
        rhs: i64,
        rel: bool,
    },
    TimeIn {
        col: u32,
        set: Box<[(i64, bool)]>,
    },
    Str {
        col: u32,
        val: StrVal,
        ne: bool,
    },
    /// Bit `v` of `mask` set: value `v` (0 or 1) matches.
    Bool {
        col: u32,
        mask: u8,
    },
    /// For strings, an item's list (when it has one) is tested, else its string.
    StrIn {
        list: Option<u32>,
        str: Option<u32>,
        set: Box<[StrVal]>,
    },
    Contains {
        list: Option<u32>,
        str: Option<u32>,
        val: StrVal,
    },
    Exists(AttrCols),
    Ctx(Box<CtxClause>),
}

/// An expression checked against a schema, ready to [`bind`](Compiled::bind).
#[derive(Debug, Clone)]
pub struct Compiled {
    root: Node,
    generation: u64,
    /// Interned strings when compiled, if a string literal was unknown then; `None` otherwise.
    unseen_at: Option<usize>,
}

/// A [`Compiled`] expression with `now` and the request context fixed: the per-item predicate.
#[derive(Debug, Clone)]
pub struct Bound {
    root: Node,
    now: Millis,
}

/// Resolves string literals: interned ids at compile time, [`DYNAMIC`] for context values.
struct Strings<'a> {
    cols: Option<&'a Columns>,
    unseen: bool,
}

impl Strings<'_> {
    fn val(&mut self, s: &str) -> StrVal {
        let id = match self.cols {
            Some(c) => c.string_id(s),
            None => DYNAMIC,
        };
        self.unseen |= id == UNSEEN_STR;
        StrVal { id, text: s.into() }
    }
}

/// Checks `expr` against the attributes `cols` has seen and resolves it to columns.
///
/// Fails on an unknown attribute (naming up to ten known ones), on a literal of a type the
/// attribute never had (`price > "abc"`), on ordering strings or booleans, and on a list
/// literal that mixes types. A string literal no item has had still compiles: `=` never
/// matches it and `!=` matches wherever the attribute is present.
pub fn compile(expr: &Expr, cols: &Columns) -> Result<Compiled, ExprError> {
    let mut strings = Strings {
        cols: Some(cols),
        unseen: false,
    };
    let root = node(expr, cols, &mut strings, 0)?;
    Ok(Compiled {
        root,
        generation: cols.generation(),
        unseen_at: strings.unseen.then(|| cols.strings_len()),
    })
}

fn node(
    e: &Expr,
    cols: &Columns,
    strings: &mut Strings<'_>,
    depth: usize,
) -> Result<Node, ExprError> {
    if depth > MAX_TREE_DEPTH {
        return Err(ExprError::msg(
            0,
            format!("nested deeper than {MAX_TREE_DEPTH} levels"),
        ));
    }
    let all = |xs: &[Expr], strings: &mut Strings<'_>| -> Result<Box<[Node]>, ExprError> {
        xs.iter()
            .map(|x| node(x, cols, strings, depth + 1))
            .collect()
    };
    Ok(match e {
        Expr::Or(xs) => Node::Or(all(xs, strings)?),
        Expr::And(xs) => Node::And(all(xs, strings)?),
        Expr::Not(x) => Node::Not(Box::new(node(x, cols, strings, depth + 1)?)),
        Expr::Exists(attr) => Node::Exists(*resolve(attr, cols)?),
        Expr::Compare { attr, op, rhs } => {
            clause(attr, ClauseKind::Compare(*op), rhs, cols, strings)?
        }
        Expr::In { attr, rhs } => clause(attr, ClauseKind::In, rhs, cols, strings)?,
        Expr::Contains { attr, rhs } => clause(attr, ClauseKind::Contains, rhs, cols, strings)?,
    })
}

fn resolve<'c>(attr: &Attr, cols: &'c Columns) -> Result<&'c AttrCols, ExprError> {
    cols.attr(&attr.name).ok_or_else(|| {
        let names = cols.names();
        // Names sharing the first letter first: the likely typos.
        let first = attr.name.chars().next();
        let mut known: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.chars().next() == first)
            .chain(names.iter().copied().filter(|n| n.chars().next() != first))
            .take(10)
            .collect();
        if names.len() > 10 {
            known.push("...");
        }
        ExprError::msg(
            attr.pos.0,
            format!(
                "unknown attribute `{}` (known: {})",
                attr.name,
                known.join(", ")
            ),
        )
    })
}

fn clause(
    attr: &Attr,
    kind: ClauseKind,
    rhs: &Operand,
    cols: &Columns,
    strings: &mut Strings<'_>,
) -> Result<Node, ExprError> {
    let ac = resolve(attr, cols)?;
    match rhs {
        Operand::Literal(lit, pos) => leaf(&attr.name, ac, kind, lit, pos.0, strings),
        Operand::Context(field, pos) => Ok(Node::Ctx(Box::new(CtxClause {
            kind,
            attr: attr.name.clone(),
            cols: *ac,
            field: field.clone(),
            pos: pos.0,
        }))),
    }
}

fn mismatch(name: &str, ac: &AttrCols, lit: &Literal, pos: usize) -> ExprError {
    let mut message = format!(
        "`{name}` is {}, but {lit} is {}",
        ac.describe(),
        lit.type_name()
    );
    if matches!(lit, Literal::Time(_)) && ac.str.is_some() {
        message.push_str(" (no item has had a date in it)");
    }
    if matches!(lit, Literal::String(_)) && ac.time.is_some() {
        message.push_str(" (write a date as date(\"2026-01-01\"))");
    }
    ExprError::new(pos, ac.describe(), message)
}

/// Builds the node for one clause with a literal right side.
fn leaf(
    name: &str,
    ac: &AttrCols,
    kind: ClauseKind,
    lit: &Literal,
    pos: usize,
    strings: &mut Strings<'_>,
) -> Result<Node, ExprError> {
    match kind {
        ClauseKind::Compare(op) => {
            // The type first, so that `price > "abc"` says that price is a number.
            let has_type = match lit {
                Literal::String(_) => ac.str.is_some() || ac.list.is_some(),
                Literal::Bool(_) => ac.bool.is_some(),
                _ => true,
            };
            if has_type && op.is_ordering() && matches!(lit, Literal::String(_) | Literal::Bool(_))
            {
                return Err(ExprError::msg(
                    pos,
                    format!(
                        "`{op}` orders numbers and timestamps, not {}s (use = or !=)",
                        &lit.type_name()[2..]
                    ),
                ));
            }
            match lit {
                Literal::Number(x) => match ac.num {
                    Some(col) => Ok(Node::Num { col, op, rhs: *x }),
                    None => Err(mismatch(name, ac, lit, pos)),
                },
                Literal::String(s) => match (ac.str, ac.list) {
                    (Some(col), _) => Ok(Node::Str {
                        col,
                        val: strings.val(s),
                        ne: op == CmpOp::Ne,
                    }),
                    (None, Some(_)) => Err(ExprError::new(
                        pos,
                        "",
                        format!("`{name}` is a list of strings: use `contains` or `in`"),
                    )),
                    (None, None) => Err(mismatch(name, ac, lit, pos)),
                },
                Literal::Bool(b) => match ac.bool {
                    Some(col) => {
                        let hit = 1u8 << (*b as u8);
                        let mask = if op == CmpOp::Eq { hit } else { 0b11 & !hit };
                        Ok(Node::Bool { col, mask })
                    }
                    None => Err(mismatch(name, ac, lit, pos)),
                },
                Literal::Time(t) => match ac.time {
                    Some(col) => {
                        let (rhs, rel) = time_parts(*t);
                        Ok(Node::Time { col, op, rhs, rel })
                    }
                    None => Err(mismatch(name, ac, lit, pos)),
                },
                Literal::List(_) => Err(ExprError::msg(
                    pos,
                    format!("a list goes with `in`, not `{op}`"),
                )),
            }
        }
        ClauseKind::Contains => match lit {
            Literal::String(s) if ac.list.is_some() || ac.str.is_some() => Ok(Node::Contains {
                list: ac.list,
                str: ac.str,
                val: strings.val(s),
            }),
            Literal::String(_) => Err(ExprError::new(
                pos,
                "",
                format!(
                    "`{name}` is {}; `contains` needs a list of strings or a string",
                    ac.describe()
                ),
            )),
            _ => Err(ExprError::new(
                pos,
                "a string",
                format!("`contains` takes a string, not {}", lit.type_name()),
            )),
        },
        ClauseKind::In => {
            let Literal::List(items) = lit else {
                return Err(ExprError::new(
                    pos,
                    "a list",
                    format!("`in` takes a list, not {}", lit.type_name()),
                ));
            };
            let Some(first) = items.first() else {
                return Ok(Node::Const(false));
            };
            if let Some(other) = items
                .iter()
                .find(|x| std::mem::discriminant(*x) != std::mem::discriminant(first))
            {
                return Err(ExprError::msg(
                    pos,
                    format!(
                        "list mixes {} and {}; its elements must have one type",
                        first.type_name(),
                        other.type_name()
                    ),
                ));
            }
            let fail = || mismatch(name, ac, first, pos);
            match first {
                Literal::Number(_) => Ok(Node::NumIn {
                    col: ac.num.ok_or_else(fail)?,
                    set: items
                        .iter()
                        .filter_map(|x| match x {
                            Literal::Number(n) => Some(*n),
                            _ => None,
                        })
                        .collect(),
                }),
                Literal::String(_) if ac.list.is_some() || ac.str.is_some() => Ok(Node::StrIn {
                    list: ac.list,
                    str: ac.str,
                    set: items
                        .iter()
                        .filter_map(|x| match x {
                            Literal::String(s) => Some(strings.val(s)),
                            _ => None,
                        })
                        .collect(),
                }),
                Literal::String(_) => Err(fail()),
                Literal::Bool(_) => Ok(Node::Bool {
                    col: ac.bool.ok_or_else(fail)?,
                    mask: items.iter().fold(0, |m, x| match x {
                        Literal::Bool(b) => m | 1u8 << (*b as u8),
                        _ => m,
                    }),
                }),
                Literal::Time(_) => Ok(Node::TimeIn {
                    col: ac.time.ok_or_else(fail)?,
                    set: items
                        .iter()
                        .filter_map(|x| match x {
                            Literal::Time(t) => Some(time_parts(*t)),
                            _ => None,
                        })
                        .collect(),
                }),
                Literal::List(_) => Err(ExprError::msg(pos, "lists do not nest")),
            }
        }
    }
}

fn time_parts(t: Time) -> (i64, bool) {
    match t {
        Time::Now(off) => (off, true),
        Time::At(ms) => (ms, false),
    }
}

/// Whether a string from the request context stands for a timestamp in this clause: against
/// an attribute that is only ever a timestamp (`created_at`, `updated_at`), or with an
/// ordering operator, which strings do not have.
pub(crate) fn context_string_is_time(attr: &str, kind: ClauseKind) -> bool {
    matches!(kind, ClauseKind::Compare(op) if op.is_ordering())
        || attr == "created_at"
        || attr == "updated_at"
}

/// Converts a context value to the literal it stands for in `kind`; `Ok(None)` for `null`.
/// Errors are messages, without position.
pub(crate) fn context_literal(
    attr: &str,
    kind: ClauseKind,
    v: &Value,
    max_list: usize,
    time_ok: bool,
) -> Result<Option<Literal>, String> {
    let scalar = |v: &Value| -> Result<Literal, String> {
        match v {
            Value::Number(n) => n
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Literal::Number)
                .ok_or_else(|| "is a number out of range".to_string()),
            Value::Bool(b) => Ok(Literal::Bool(*b)),
            Value::String(s) if time_ok && context_string_is_time(attr, kind) => {
                super::parse::parse_time(s)
                    .map(|ms| Literal::Time(Time::At(ms)))
                    .map_err(|e| format!("{s:?} is used as a timestamp but {e}"))
            }
            Value::String(s) => Ok(Literal::String(s.clone())),
            Value::Null => Err("is null".to_string()),
            Value::Array(_) => Err("is a list where a single value belongs".to_string()),
            Value::Object(_) => Err("is an object".to_string()),
        }
    };
    match (kind, v) {
        (_, Value::Null) => Ok(None),
        (ClauseKind::In, Value::Array(xs)) => {
            if xs.len() > max_list {
                return Err(format!("is a list longer than {max_list} elements"));
            }
            Ok(Some(Literal::List(
                xs.iter().map(scalar).collect::<Result<_, _>>()?,
            )))
        }
        (ClauseKind::In, _) => Err("must be a list for `in`".to_string()),
        (_, v) => scalar(v).map(Some),
    }
}

impl Compiled {
    /// Fixes `now` (Unix milliseconds, for `now - 30d`) and the request context.
    ///
    /// A clause on an absent (or `null`) context field is missing, hence false. A context value
    /// of the wrong type for its clause is an [`ExprError`] at the `context.<name>` reference,
    /// naming the field. Context strings are compared by text; in a clause with an ordering
    /// operator, or on `created_at`/`updated_at`, they must be RFC 3339 timestamps.
    pub fn bind(
        &self,
        now: Millis,
        context: Option<&Map<String, Value>>,
    ) -> Result<Bound, ExprError> {
        Ok(Bound {
            root: bind_node(&self.root, context)?,
            now,
        })
    }

    /// Whether the result for an item depends on the item alone: no `now`, no request
    /// context. Such expressions can be evaluated once per item and kept (see
    /// [`Columns::precompute`]).
    pub fn is_static(&self) -> bool {
        fn walk(n: &Node) -> bool {
            match n {
                Node::And(xs) | Node::Or(xs) => xs.iter().all(walk),
                Node::Not(x) => walk(x),
                Node::Ctx(_) => false,
                Node::Time { rel, .. } => !rel,
                Node::TimeIn { set, .. } => set.iter().all(|(_, rel)| !rel),
                _ => true,
            }
        }
        walk(&self.root)
    }

    /// The schema generation it was compiled against.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this compilation is out of date for `cols`: the schema changed, or a string
    /// literal unknown at compile time may have been seen since.
    pub fn is_stale(&self, cols: &Columns) -> bool {
        self.generation != cols.generation()
            || self.unseen_at.is_some_and(|n| n != cols.strings_len())
    }
}

fn bind_node(n: &Node, ctx: Option<&Map<String, Value>>) -> Result<Node, ExprError> {
    let all = |xs: &[Node]| -> Result<Box<[Node]>, ExprError> {
        xs.iter().map(|x| bind_node(x, ctx)).collect()
    };
    Ok(match n {
        Node::And(xs) => Node::And(all(xs)?),
        Node::Or(xs) => Node::Or(all(xs)?),
        Node::Not(x) => Node::Not(Box::new(bind_node(x, ctx)?)),
        Node::Ctx(c) => {
            let Some(v) = ctx.and_then(|m| m.get(&c.field)) else {
                return Ok(Node::Const(false));
            };
            let err = |m: String| ExprError::msg(c.pos, format!("context field `{}` {m}", c.field));
            // Context lists are bounded like literal ones; the default limit is the one in force.
            let max_list = Limits::default().max_list;
            // A string is read as a timestamp only where the attribute has timestamps: anywhere
            // else the clause fails either way, and the string's own type explains it better.
            let time_ok = c.cols.time.is_some();
            let Some(lit) = context_literal(&c.attr, c.kind, v, max_list, time_ok).map_err(err)?
            else {
                return Ok(Node::Const(false));
            };
            let mut strings = Strings {
                cols: None,
                unseen: false,
            };
            leaf(&c.attr, &c.cols, c.kind, &lit, c.pos, &mut strings).map_err(|e| {
                ExprError::msg(
                    c.pos,
                    format!("context field `{}` ({lit}): {}", c.field, e.message),
                )
            })?
        }
        other => other.clone(),
    })
}

/// Reads column `col` at item `i`, or `missing` when either is out of range.
#[inline]
fn at<T: Copy>(cols: &[Vec<T>], col: u32, i: u32, missing: T) -> T {
    cols.get(col as usize)
        .and_then(|c| c.get(i as usize))
        .copied()
        .unwrap_or(missing)
}

#[inline]
fn list_at(cols: &Columns, col: Option<u32>, i: u32) -> Option<&[u32]> {
    cols.lists.get(col? as usize)?.get(i as usize)?.as_deref()
}

impl Bound {
    /// Whether item `item` satisfies the expression. An item never set (or cleared) has every
    /// attribute missing. Never allocates.
    pub fn eval(&self, cols: &Columns, item: u32) -> bool {
        eval(&self.root, cols, item, self.now)
    }
}

fn eval(n: &Node, cols: &Columns, i: u32, now: Millis) -> bool {
    match n {
        Node::Const(b) => *b,
        Node::And(xs) => xs.iter().all(|x| eval(x, cols, i, now)),
        Node::Or(xs) => xs.iter().any(|x| eval(x, cols, i, now)),
        Node::Not(x) => !eval(x, cols, i, now),
        Node::Num { col, op, rhs } => {
            let v = at(&cols.nums, *col, i, f64::NAN);
            // NaN (missing) fails every ordering and `=`, but `NaN != x` holds.
            !v.is_nan() && op.apply(v, *rhs)
        }
        Node::NumIn { col, set } => {
            let v = at(&cols.nums, *col, i, f64::NAN);
            set.contains(&v)
        }
        Node::Time { col, op, rhs, rel } => {
            let v = at(&cols.times, *col, i, NO_TIME);
            let rhs = if *rel { now.saturating_add(*rhs) } else { *rhs };
            v != NO_TIME && op.apply(v, rhs)
        }
        Node::TimeIn { col, set } => {
            let v = at(&cols.times, *col, i, NO_TIME);
            v != NO_TIME
                && set
                    .iter()
                    .any(|&(t, rel)| v == if rel { now.saturating_add(t) } else { t })
        }
        Node::Str { col, val, ne } => {
            let v = at(&cols.strs, *col, i, NO_STR);
            v != NO_STR && val.matches(cols, v) != *ne
        }
        Node::Bool { col, mask } => {
            let v = at(&cols.bools, *col, i, NO_BOOL);
            v != NO_BOOL && mask >> v & 1 == 1
        }
        Node::StrIn { list, str, set } => {
            if let Some(xs) = list_at(cols, *list, i) {
                return xs.iter().any(|&x| set.iter().any(|s| s.matches(cols, x)));
            }
            let Some(col) = str else { return false };
            let v = at(&cols.strs, *col, i, NO_STR);
            v != NO_STR && set.iter().any(|s| s.matches(cols, v))
        }
        Node::Contains { list, str, val } => {
            if let Some(xs) = list_at(cols, *list, i) {
                return xs.iter().any(|&x| val.matches(cols, x));
            }
            let Some(col) = str else { return false };
            let v = at(&cols.strs, *col, i, NO_STR);
            v != NO_STR && cols.string(v).contains(&*val.text)
        }
        Node::Exists(ac) => {
            ac.num
                .is_some_and(|c| !at(&cols.nums, c, i, f64::NAN).is_nan())
                || ac
                    .str
                    .is_some_and(|c| at(&cols.strs, c, i, NO_STR) != NO_STR)
                || ac
                    .bool
                    .is_some_and(|c| at(&cols.bools, c, i, NO_BOOL) != NO_BOOL)
                || ac
                    .time
                    .is_some_and(|c| at(&cols.times, c, i, NO_TIME) != NO_TIME)
                || list_at(cols, ac.list, i).is_some()
        }
        // Unreachable after `bind`, which replaces every context clause.
        Node::Ctx(_) => false,
    }
}
