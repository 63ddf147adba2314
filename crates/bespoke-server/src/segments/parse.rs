//! Source text → [`UserExpr`], with winnow.
//!
//! Built on the rules parser (`rules/parse.rs`), whose lexical layer and parse state ([`Cx`])
//! it uses: the grammar is LL(1), every choice is made on the next token, so a failure is
//! final and the first one recorded is the one reported. The parser records it in [`Cx`]
//! (position, what was expected, why) and unwinds with a cut error; winnow's own error value
//! carries nothing we use.

use winnow::ascii::digit1;
use winnow::error::ContextError;
use winnow::prelude::*;

use super::SegmentExprError;
use super::ast::{EventFilter, KindFilter, Seen, UserExpr};
use crate::rules::parse::{
    Cx, PResult, ident, keyword, list, number, peek_ident, punct, scalar, string,
    unsigned_duration, ws,
};
use crate::rules::{Attr, CmpOp, Expr, Limits, Literal, Operand, Pos};

/// Words that cannot name an attribute: the rules language's, plus the behaviour predicates.
const RESERVED: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "contains",
    "true",
    "false",
    "now",
    "date",
    "exists",
    "has",
    "context",
    "events",
    "value",
    "purchased",
    "viewed",
    "clicked",
];

/// The shorthands for one event type: `purchased(...)` counts events of type `purchase`.
const SHORTHANDS: &[(&str, &str)] = &[
    ("purchased", "purchase"),
    ("viewed", "view"),
    ("clicked", "click"),
];

const EXPECT_TERM: &str = "an attribute name, `events(`, `value(`, `purchased(`, `viewed(`, \
                           `clicked(`, `last_seen`, `first_seen`, `not`, `exists(`, `has(` or `(`";
const EXPECT_OP: &str = "a comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`), `in` or `contains`";
const EXPECT_CMP: &str = "a comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`)";
const EXPECT_VALUE: &str = "a number, a string, `true`, `false`, `now` or `date(...)`";
const EXPECT_TIME: &str = "a timestamp: `now`, `now - 14d` or `date(\"2026-01-01\")`";
const EXPECT_FILTER: &str = "`type`, `within`, an item attribute name, `exists(` or `has(`";
const EXPECT_COUNT: &str = "a whole number of events";
const NO_CONTEXT: &str = "a segment has no request context: `context.<name>` is for item rules";

/// Parses `src` into a user expression, within `limits` (the rules language's: length,
/// nesting, list length, clauses).
///
/// Errors name the character position and what was expected there. A text longer than
/// `limits.max_len` bytes is refused at that position before any parsing.
pub fn parse(src: &str, limits: &Limits) -> Result<UserExpr, SegmentExprError> {
    if src.len() > limits.max_len {
        let pos = src
            .char_indices()
            .take_while(|&(b, _)| b < limits.max_len)
            .count();
        return Err(SegmentExprError::new(
            pos,
            "",
            format!(
                "expression longer than {} bytes ({} bytes)",
                limits.max_len,
                src.len()
            ),
        ));
    }
    let mut cx = Cx::new(src, limits);
    let mut i = src;
    match top(&mut i, &mut cx) {
        Ok(e) => Ok(e),
        Err(_) => {
            let e = cx.error(i);
            Err(SegmentExprError::new(e.position, e.expected, e.message))
        }
    }
}

/// Consumes word `w` and the `(` after it (spaces allowed between) when both come next:
/// `exists (`, `events(`. Otherwise consumes nothing.
fn call(i: &mut &str, w: &str) -> bool {
    let mut j = *i;
    if !keyword(&mut j, w) {
        return false;
    }
    ws(&mut j);
    if !punct(&mut j, '(') {
        return false;
    }
    *i = j;
    true
}

/// A comparison operator, when one comes next. `==` is `=`, as in the rules language.
fn cmp_op(i: &mut &str) -> Option<CmpOp> {
    if punct(i, '=') {
        punct(i, '=');
        Some(CmpOp::Eq)
    } else if i.starts_with("!=") {
        *i = &i[2..];
        Some(CmpOp::Ne)
    } else if punct(i, '<') {
        Some(if punct(i, '=') { CmpOp::Le } else { CmpOp::Lt })
    } else if punct(i, '>') {
        Some(if punct(i, '=') { CmpOp::Ge } else { CmpOp::Gt })
    } else {
        None
    }
}

fn top(i: &mut &str, cx: &mut Cx<'_>) -> PResult<UserExpr> {
    ws(i);
    let e = or_expr(i, cx)?;
    ws(i);
    if !i.is_empty() {
        return cx.fail(i, "`and`, `or` or the end of the expression", "");
    }
    Ok(e)
}

fn or_expr(i: &mut &str, cx: &mut Cx<'_>) -> PResult<UserExpr> {
    let first = and_expr(i, cx)?;
    let mut xs = Vec::new();
    loop {
        ws(i);
        if !keyword(i, "or") {
            break;
        }
        ws(i);
        xs.push(and_expr(i, cx)?);
    }
    Ok(if xs.is_empty() {
        first
    } else {
        xs.insert(0, first);
        UserExpr::Or(xs)
    })
}

fn and_expr(i: &mut &str, cx: &mut Cx<'_>) -> PResult<UserExpr> {
    let first = unary(i, cx)?;
    let mut xs = Vec::new();
    loop {
        ws(i);
        if !keyword(i, "and") {
            break;
        }
        ws(i);
        xs.push(unary(i, cx)?);
    }
    Ok(if xs.is_empty() {
        first
    } else {
        xs.insert(0, first);
        UserExpr::And(xs)
    })
}

fn unary(i: &mut &str, cx: &mut Cx<'_>) -> PResult<UserExpr> {
    let at = *i;
    if keyword(i, "not") {
        cx.enter(at)?;
        ws(i);
        let e = unary(i, cx)?;
        cx.leave();
        return Ok(UserExpr::Not(Box::new(e)));
    }
    primary(i, cx)
}

fn primary(i: &mut &str, cx: &mut Cx<'_>) -> PResult<UserExpr> {
    let at = *i;
    if punct(i, '(') {
        cx.enter(at)?;
        ws(i);
        let e = or_expr(i, cx)?;
        ws(i);
        if !punct(i, ')') {
            return cx.fail(i, "`and`, `or` or `)`", "");
        }
        cx.leave();
        return Ok(e);
    }
    let Some(name) = peek_ident(i) else {
        if i.starts_with('"') || i.starts_with('-') || i.starts_with(|c: char| c.is_ascii_digit()) {
            return cx.fail(
                i,
                EXPECT_TERM,
                "the left side of a clause is an attribute name",
            );
        }
        return cx.fail(i, EXPECT_TERM, "");
    };
    let pos = Pos(cx.pos(at));
    if call(i, "exists") || call(i, "has") {
        cx.count_clause(at)?;
        ws(i);
        let attr = attribute(i, cx, EXPECT_TERM)?;
        ws(i);
        if !punct(i, ')') {
            return cx.fail(i, "`)`", "");
        }
        // Having a latest event is having any event.
        if attr.name == "last_seen" || attr.name == "first_seen" {
            return Ok(UserExpr::Events {
                filter: EventFilter::default(),
                op: CmpOp::Ge,
                count: 1,
                pos,
            });
        }
        return Ok(UserExpr::Attribute(Expr::Exists(attr)));
    }
    if call(i, "events") || call(i, "value") {
        cx.count_clause(at)?;
        let filter = filters(i, cx, None)?;
        ws(i);
        let Some(op) = cmp_op(i) else {
            let what = if name == "events" {
                "and a count, such as `>= 5`"
            } else {
                "and a number, such as `> 100`"
            };
            return cx.fail(i, &format!("{EXPECT_CMP} {what}"), "");
        };
        ws(i);
        return Ok(if name == "events" {
            let count = count(i, cx)?;
            UserExpr::Events {
                filter,
                op,
                count,
                pos,
            }
        } else {
            let total = number_operand(i, cx)?;
            UserExpr::Value {
                filter,
                op,
                total,
                pos,
            }
        });
    }
    if let Some(&(word, kind)) = SHORTHANDS.iter().find(|(w, _)| *w == name)
        && call(i, word)
    {
        cx.count_clause(at)?;
        let filter = filters(i, cx, Some((word, kind)))?;
        // `purchased(...)` alone is "at least once"; a count may follow: `purchased() >= 3`.
        let mut j = *i;
        ws(&mut j);
        let (op, count) = match cmp_op(&mut j) {
            Some(op) => {
                *i = j;
                ws(i);
                (op, count(i, cx)?)
            }
            None => (CmpOp::Ge, 1),
        };
        return Ok(UserExpr::Events {
            filter,
            op,
            count,
            pos,
        });
    }
    if name == "last_seen" || name == "first_seen" {
        cx.count_clause(at)?;
        keyword(i, name);
        let end = if name == "last_seen" {
            Seen::Last
        } else {
            Seen::First
        };
        ws(i);
        let Some(op) = cmp_op(i) else {
            return cx.fail(
                i,
                EXPECT_CMP,
                format!("`{name}` is a timestamp: compare it with `now - 14d` or `date(...)`"),
            );
        };
        ws(i);
        let lit_at = *i;
        let lit = scalar(i, cx, EXPECT_TIME)?;
        let Literal::Time(t) = lit else {
            return cx.fail(
                lit_at,
                EXPECT_TIME,
                format!("`{name}` is a timestamp, but {lit} is {}", lit.type_name()),
            );
        };
        return Ok(UserExpr::Seen {
            end,
            op,
            at: t,
            pos,
        });
    }
    cx.count_clause(at)?;
    let attr = attribute(i, cx, EXPECT_TERM)?;
    ws(i);
    clause(i, cx, attr).map(UserExpr::Attribute)
}

/// An attribute name on the left of a clause (or in `exists(...)`).
fn attribute(i: &mut &str, cx: &mut Cx<'_>, expected: &str) -> PResult<Attr> {
    let at = *i;
    let Some(name) = ident(i) else {
        return cx.fail(i, "an attribute name", "");
    };
    if name == "context" && i.starts_with('.') {
        return cx.fail(at, "an attribute name", NO_CONTEXT);
    }
    if RESERVED.contains(&name) {
        let message = if ["events", "value"].contains(&name)
            || SHORTHANDS.iter().any(|(w, _)| *w == name)
        {
            format!(
                "`{name}` is a reserved word, not an attribute name (`{name}(...)` is a behaviour predicate)"
            )
        } else {
            format!("`{name}` is a reserved word, not an attribute name")
        };
        return cx.fail(at, expected, message);
    }
    Ok(Attr {
        name: name.to_owned(),
        pos: Pos(cx.pos(at)),
    })
}

/// The rest of an attribute clause, after its name: the operator and the literal. Refuses
/// here the type errors that the rules language finds when it compiles, since no schema
/// comes later to find them.
fn clause(i: &mut &str, cx: &mut Cx<'_>, attr: Attr) -> PResult<Expr> {
    if let Some(op) = cmp_op(i) {
        ws(i);
        let at = *i;
        let lit = value(i, cx)?;
        if op.is_ordering() && matches!(lit, Literal::String(_) | Literal::Bool(_)) {
            return cx.fail(
                at,
                "",
                format!(
                    "`{op}` orders numbers and timestamps, not {}s (use = or !=)",
                    &lit.type_name()[2..]
                ),
            );
        }
        let rhs = Operand::Literal(lit, Pos(cx.pos(at)));
        return Ok(Expr::Compare { attr, op, rhs });
    }
    if keyword(i, "in") {
        ws(i);
        let at = *i;
        if punct(i, '[') {
            let items = list(i, cx)?;
            if let Some(first) = items.first()
                && let Some(other) = items
                    .iter()
                    .find(|x| std::mem::discriminant(*x) != std::mem::discriminant(first))
            {
                let message = format!(
                    "list mixes {} and {}; its elements must have one type",
                    first.type_name(),
                    other.type_name()
                );
                return cx.fail(at, "", message);
            }
            let rhs = Operand::Literal(Literal::List(items), Pos(cx.pos(at)));
            return Ok(Expr::In { attr, rhs });
        }
        if peek_ident(i) == Some("context") {
            return cx.fail(i, "a list `[...]`", NO_CONTEXT);
        }
        return cx.fail(i, "a list `[...]`", "");
    }
    if keyword(i, "contains") {
        ws(i);
        let at = *i;
        let lit = value(i, cx)?;
        if !matches!(lit, Literal::String(_)) {
            return cx.fail(
                at,
                "a string",
                format!("`contains` takes a string, not {}", lit.type_name()),
            );
        }
        let rhs = Operand::Literal(lit, Pos(cx.pos(at)));
        return Ok(Expr::Contains { attr, rhs });
    }
    cx.fail(i, EXPECT_OP, "")
}

/// A scalar literal on the right of a clause; a list or `context.` gets its own message.
fn value(i: &mut &str, cx: &mut Cx<'_>) -> PResult<Literal> {
    if i.starts_with('[') {
        return cx.fail(i, EXPECT_VALUE, "a list goes with `in`");
    }
    if peek_ident(i) == Some("context") {
        return cx.fail(i, EXPECT_VALUE, NO_CONTEXT);
    }
    scalar(i, cx, EXPECT_VALUE)
}

/// `(` already consumed: the comma-separated filters of a behaviour predicate, up to and
/// including `)`. `shorthand` is `("purchased", "purchase")` for `purchased(...)`, whose type
/// is set already.
fn filters(i: &mut &str, cx: &mut Cx<'_>, shorthand: Option<(&str, &str)>) -> PResult<EventFilter> {
    let mut filter = EventFilter {
        kind: shorthand.map(|(_, kind)| KindFilter::In(vec![kind.to_owned()])),
        ..EventFilter::default()
    };
    ws(i);
    if punct(i, ')') {
        return Ok(filter);
    }
    loop {
        let at = *i;
        cx.count_clause(at)?;
        if keyword(i, "type") {
            if let Some((word, kind)) = shorthand {
                let message = format!("`{word}(...)` counts events of type \"{kind}\" already");
                return cx.fail(at, "", message);
            }
            if filter.kind.is_some() {
                return cx.fail(at, "", "`type` is given twice");
            }
            ws(i);
            filter.kind = Some(kind_filter(i, cx)?);
        } else if keyword(i, "within") {
            if filter.within.is_some() {
                return cx.fail(at, "", "`within` is given twice");
            }
            ws(i);
            if !punct(i, '=') {
                return cx.fail(i, "`=`", "`within` takes a duration: `within = 30d`");
            }
            punct(i, '=');
            ws(i);
            filter.within = Some(duration(i, cx)?);
        } else if call(i, "exists") || call(i, "has") {
            ws(i);
            let attr = attribute(i, cx, "an item attribute name")?;
            ws(i);
            if !punct(i, ')') {
                return cx.fail(i, "`)`", "");
            }
            filter.item.push(Expr::Exists(attr));
        } else {
            if peek_ident(i).is_none() {
                return cx.fail(i, EXPECT_FILTER, "");
            }
            let attr = attribute(i, cx, EXPECT_FILTER)?;
            ws(i);
            filter.item.push(clause(i, cx, attr)?);
        }
        ws(i);
        if punct(i, ')') {
            return Ok(filter);
        }
        if !punct(i, ',') {
            return cx.fail(i, "`,` or `)`", "");
        }
        ws(i);
    }
}

/// After `type`: `= "view"`, `!= "view"` or `in ["view", "click"]`.
fn kind_filter(i: &mut &str, cx: &mut Cx<'_>) -> PResult<KindFilter> {
    const EXPECT_KIND: &str = "an event type in double quotes, such as \"view\"";
    let op_at = *i;
    let negate = match cmp_op(i) {
        Some(CmpOp::Eq) => false,
        Some(CmpOp::Ne) => true,
        Some(op) => {
            return cx.fail(
                op_at,
                "",
                format!("`{op}` orders numbers and timestamps; event types take `=`, `!=` or `in`"),
            );
        }
        None if keyword(i, "in") => {
            ws(i);
            let at = *i;
            if !punct(i, '[') {
                return cx.fail(i, "a list `[...]` of event types", "");
            }
            let mut kinds = Vec::new();
            for lit in list(i, cx)? {
                match lit {
                    Literal::String(s) => kinds.push(s),
                    other => {
                        let message = format!("event types are strings, not {}", other.type_name());
                        return cx.fail(at, "", message);
                    }
                }
            }
            return Ok(KindFilter::In(kinds));
        }
        None => return cx.fail(i, "`=`, `!=` or `in`", ""),
    };
    ws(i);
    if !i.starts_with('"') {
        return cx.fail(i, EXPECT_KIND, "");
    }
    let kind = string(i, cx)?;
    Ok(if negate {
        KindFilter::Not(kind)
    } else {
        KindFilter::In(vec![kind])
    })
}

/// A count of events: a whole number, not negative.
fn count(i: &mut &str, cx: &mut Cx<'_>) -> PResult<u64> {
    let at = *i;
    if i.starts_with('-') {
        return cx.fail(i, EXPECT_COUNT, "a count is never negative");
    }
    let r: Result<&str, ContextError> = digit1.parse_next(i);
    let Ok(digits) = r else {
        return match peek_ident(i) {
            Some(other) => cx.fail(i, EXPECT_COUNT, format!("`{other}` is not a count")),
            None => cx.fail(i, EXPECT_COUNT, ""),
        };
    };
    if i.starts_with(['.', 'e', 'E']) {
        return cx.fail(at, EXPECT_COUNT, "a count has no fraction or exponent");
    }
    match digits.parse::<u64>() {
        Ok(n) => Ok(n),
        Err(_) => cx.fail(at, "", format!("count `{digits}` is out of range")),
    }
}

/// The number a `value(...)` sum is compared with.
fn number_operand(i: &mut &str, cx: &mut Cx<'_>) -> PResult<f64> {
    if i.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return number(i, cx);
    }
    let at = *i;
    let lit = scalar(i, cx, "a number")?;
    cx.fail(
        at,
        "a number",
        format!("`value(...)` is a sum, but {lit} is {}", lit.type_name()),
    )
}

/// After `within =`: a positive duration, in milliseconds.
fn duration(i: &mut &str, cx: &mut Cx<'_>) -> PResult<i64> {
    let at = *i;
    let ms = unsigned_duration(i, cx)?;
    if ms == 0 {
        return cx.fail(at, "", "`within` must be positive");
    }
    Ok(ms)
}
