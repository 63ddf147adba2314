//! Source text → [`Expr`], with winnow.
//!
//! The grammar is LL(1): every choice is made on the next token, so a failure is final and
//! the first one recorded is the one reported. The parser records it in [`Cx`] (position,
//! what was expected, why) and unwinds with a cut error; winnow's own error value carries
//! nothing we use.
//!
//! The lexical layer (whitespace, words, literals, lists, durations, dates) and [`Cx`] are
//! `pub(crate)`: the segments language (`crate::segments`) is parsed with them, so that a
//! literal means the same thing, and fails with the same message, in both.

use winnow::ascii::{digit1, multispace0};
use winnow::combinator::opt;
use winnow::error::{ContextError, ErrMode};
use winnow::prelude::*;
use winnow::token::{one_of, take, take_till, take_while};

use super::ast::{Attr, CmpOp, Expr, Literal, Operand, Pos, Time};
use super::{ExprError, Limits};

pub(crate) type PResult<T> = ModalResult<T>;

/// Words that cannot name an attribute.
const RESERVED: &[&str] = &[
    "and", "or", "not", "in", "contains", "true", "false", "now", "date", "exists", "has",
    "context",
];

const EXPECT_CLAUSE: &str = "an attribute name, `not`, `exists(`, `has(` or `(`";
const EXPECT_OP: &str = "a comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`), `in` or `contains`";
const EXPECT_VALUE: &str =
    "a number, a string, `true`, `false`, `now`, `date(...)` or `context.<name>`";
const EXPECT_LIST: &str = "a list `[...]` or `context.<name>`";
pub(crate) const EXPECT_ELEMENT: &str = "a number, a string, `true`, `false`, `now` or `date(...)`";
pub(crate) const EXPECT_DURATION: &str = "a duration such as 30d (units s, m, h, d, w)";

/// Parse state: the source (for positions), the limits and the counters they bound.
pub(crate) struct Cx<'s> {
    src: &'s str,
    /// Byte offsets are character offsets; saves counting on every position.
    ascii: bool,
    /// The last (byte, character) offset pair computed: positions are asked for mostly in
    /// increasing order, so counting resumes from there instead of from the start.
    last: (usize, usize),
    pub(crate) limits: &'s Limits,
    depth: usize,
    clauses: usize,
    err: Option<ExprError>,
}

impl<'s> Cx<'s> {
    /// The state at the start of `src`.
    pub(crate) fn new(src: &'s str, limits: &'s Limits) -> Self {
        Cx {
            src,
            ascii: src.is_ascii(),
            last: (0, 0),
            limits,
            depth: 0,
            clauses: 0,
            err: None,
        }
    }

    /// The error recorded, or a plain one where the input `i` stopped.
    pub(crate) fn error(mut self, i: &str) -> ExprError {
        let pos = self.pos(i);
        self.err
            .take()
            .unwrap_or_else(|| ExprError::msg(pos, "invalid expression"))
    }

    /// Counts one clause starting at `at`, failing there past `limits.max_clauses`.
    pub(crate) fn count_clause(&mut self, at: &str) -> PResult<()> {
        self.clauses += 1;
        if self.clauses > self.limits.max_clauses {
            let max = self.limits.max_clauses;
            return self.fail(at, "", format!("more than {max} clauses"));
        }
        Ok(())
    }

    /// The character offset of the rest of the input `i`.
    pub(crate) fn pos(&mut self, i: &str) -> usize {
        let byte = self.src.len() - i.len();
        if self.ascii {
            return byte;
        }
        let (from_byte, from_char) = if byte >= self.last.0 {
            self.last
        } else {
            (0, 0)
        };
        let chars = from_char + self.src[from_byte..byte].chars().count();
        self.last = (byte, chars);
        chars
    }

    /// Records the error (the first one wins) and unwinds.
    pub(crate) fn fail<T>(
        &mut self,
        at: &str,
        expected: &str,
        message: impl Into<String>,
    ) -> PResult<T> {
        if self.err.is_none() {
            self.err = Some(ExprError::new(self.pos(at), expected, message));
        }
        Err(ErrMode::Cut(ContextError::new()))
    }

    /// Leaves a level of nesting entered with [`Cx::enter`].
    pub(crate) fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Enters one level of nesting at `at`, or fails there when that would exceed the limit.
    /// Called before recursing, so the stack never grows past `max_depth` levels.
    pub(crate) fn enter(&mut self, at: &str) -> PResult<()> {
        let max = self.limits.max_depth.min(super::MAX_DEPTH_CAP);
        if self.depth >= max {
            return self.fail(
                at,
                "",
                format!("nested deeper than {max} levels (parentheses and `not`)"),
            );
        }
        self.depth += 1;
        Ok(())
    }
}

/// Parses `src` into an expression, within `limits`.
///
/// Errors name the character position and what was expected there. A text longer than
/// `limits.max_len` bytes is refused at that position before any parsing.
pub fn parse(src: &str, limits: &Limits) -> Result<Expr, ExprError> {
    if src.len() > limits.max_len {
        let position = src
            .char_indices()
            .take_while(|&(b, _)| b < limits.max_len)
            .count();
        return Err(ExprError::msg(
            position,
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
        Err(_) => Err(cx.error(i)),
    }
}

pub(crate) fn ws(i: &mut &str) {
    let _: Result<&str, ContextError> = multispace0.parse_next(i);
}

pub(crate) fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// An identifier `[A-Za-z_][A-Za-z0-9_]*`, or `None` (consuming nothing).
pub(crate) fn ident<'s>(i: &mut &'s str) -> Option<&'s str> {
    let r: Result<&str, ContextError> = (
        one_of(|c: char| c.is_ascii_alphabetic() || c == '_'),
        take_while(0.., is_ident_char),
    )
        .take()
        .parse_next(i);
    r.ok()
}

/// The identifier at the start of `i`, without consuming it.
pub(crate) fn peek_ident<'s>(i: &&'s str) -> Option<&'s str> {
    let mut j = *i;
    ident(&mut j)
}

/// Consumes keyword `kw` (a whole word) when it comes next.
pub(crate) fn keyword(i: &mut &str, kw: &str) -> bool {
    if peek_ident(i) == Some(kw) {
        *i = &i[kw.len()..];
        true
    } else {
        false
    }
}

/// Consumes the character `c` when it comes next.
pub(crate) fn punct(i: &mut &str, mut c: char) -> bool {
    let r: Result<char, ContextError> = c.parse_next(i);
    r.is_ok()
}

fn top(i: &mut &str, cx: &mut Cx<'_>) -> PResult<Expr> {
    ws(i);
    let e = or_expr(i, cx)?;
    ws(i);
    if !i.is_empty() {
        return cx.fail(i, "`and`, `or` or the end of the expression", "");
    }
    Ok(e)
}

fn or_expr(i: &mut &str, cx: &mut Cx<'_>) -> PResult<Expr> {
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
        Expr::Or(xs)
    })
}

fn and_expr(i: &mut &str, cx: &mut Cx<'_>) -> PResult<Expr> {
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
        Expr::And(xs)
    })
}

fn unary(i: &mut &str, cx: &mut Cx<'_>) -> PResult<Expr> {
    let at = *i;
    if keyword(i, "not") {
        cx.enter(at)?;
        ws(i);
        let e = unary(i, cx)?;
        cx.leave();
        return Ok(Expr::Not(Box::new(e)));
    }
    primary(i, cx)
}

fn primary(i: &mut &str, cx: &mut Cx<'_>) -> PResult<Expr> {
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
                EXPECT_CLAUSE,
                "the left side of a clause is an attribute name",
            );
        }
        return cx.fail(i, EXPECT_CLAUSE, "");
    };
    if name == "exists" || name == "has" {
        let mut j = &i[name.len()..];
        ws(&mut j);
        if punct(&mut j, '(') {
            *i = j;
            cx.count_clause(at)?;
            ws(i);
            let attr = attribute(i, cx)?;
            ws(i);
            if !punct(i, ')') {
                return cx.fail(i, "`)`", "");
            }
            return Ok(Expr::Exists(attr));
        }
    }
    cx.count_clause(at)?;
    let attr = attribute(i, cx)?;
    ws(i);
    clause(i, cx, attr)
}

/// An attribute name on the left of a clause.
fn attribute(i: &mut &str, cx: &mut Cx<'_>) -> PResult<Attr> {
    let at = *i;
    let Some(name) = ident(i) else {
        return cx.fail(i, "an attribute name", "");
    };
    if name == "context" && i.starts_with('.') {
        return cx.fail(
            at,
            "an attribute name",
            "`context.<name>` can only stand on the right side of a clause",
        );
    }
    if RESERVED.contains(&name) {
        return cx.fail(
            at,
            EXPECT_CLAUSE,
            format!("`{name}` is a reserved word, not an attribute name"),
        );
    }
    Ok(Attr {
        name: name.to_owned(),
        pos: Pos(cx.pos(at)),
    })
}

fn clause(i: &mut &str, cx: &mut Cx<'_>, attr: Attr) -> PResult<Expr> {
    let op = if punct(i, '=') {
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
    };
    if let Some(op) = op {
        ws(i);
        let rhs = operand(i, cx, EXPECT_VALUE)?;
        return Ok(Expr::Compare { attr, op, rhs });
    }
    if keyword(i, "in") {
        ws(i);
        let at = *i;
        if punct(i, '[') {
            let list = list(i, cx)?;
            return Ok(Expr::In {
                attr,
                rhs: Operand::Literal(Literal::List(list), Pos(cx.pos(at))),
            });
        }
        if peek_ident(i) == Some("context") {
            let rhs = operand(i, cx, EXPECT_LIST)?;
            return Ok(Expr::In { attr, rhs });
        }
        return cx.fail(i, EXPECT_LIST, "");
    }
    if keyword(i, "contains") {
        ws(i);
        let rhs = operand(i, cx, "a string or `context.<name>`")?;
        return Ok(Expr::Contains { attr, rhs });
    }
    cx.fail(i, EXPECT_OP, "")
}

/// A literal or `context.<name>` on the right of a clause.
fn operand(i: &mut &str, cx: &mut Cx<'_>, expected: &str) -> PResult<Operand> {
    let at = *i;
    if keyword(i, "context") {
        if !punct(i, '.') {
            return cx.fail(i, "`.` and a context field name", "");
        }
        let Some(name) = ident(i) else {
            return cx.fail(i, "a context field name", "");
        };
        return Ok(Operand::Context(name.to_owned(), Pos(cx.pos(at))));
    }
    if i.starts_with('[') {
        return cx.fail(i, expected, "a list goes with `in`");
    }
    let lit = scalar(i, cx, expected)?;
    Ok(Operand::Literal(lit, Pos(cx.pos(at))))
}

/// `[` already consumed: elements up to and including `]`.
pub(crate) fn list(i: &mut &str, cx: &mut Cx<'_>) -> PResult<Vec<Literal>> {
    let mut out = Vec::new();
    ws(i);
    if punct(i, ']') {
        return Ok(out);
    }
    loop {
        if out.len() == cx.limits.max_list {
            let max = cx.limits.max_list;
            return cx.fail(i, "`]`", format!("list longer than {max} elements"));
        }
        if i.starts_with('[') {
            return cx.fail(i, EXPECT_ELEMENT, "lists do not nest");
        }
        out.push(scalar(i, cx, EXPECT_ELEMENT)?);
        ws(i);
        if punct(i, ']') {
            return Ok(out);
        }
        if !punct(i, ',') {
            return cx.fail(i, "`,` or `]`", "");
        }
        ws(i);
    }
}

/// A number, string, boolean or timestamp literal.
pub(crate) fn scalar(i: &mut &str, cx: &mut Cx<'_>, expected: &str) -> PResult<Literal> {
    if i.starts_with('"') {
        return string(i, cx).map(Literal::String);
    }
    if i.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return number(i, cx).map(Literal::Number);
    }
    let at = *i;
    match peek_ident(i) {
        Some("true") => {
            keyword(i, "true");
            Ok(Literal::Bool(true))
        }
        Some("false") => {
            keyword(i, "false");
            Ok(Literal::Bool(false))
        }
        Some("now") => {
            keyword(i, "now");
            now(i, cx).map(|off| Literal::Time(Time::Now(off)))
        }
        Some("date") => {
            keyword(i, "date");
            date(i, cx).map(|ms| Literal::Time(Time::At(ms)))
        }
        Some(other) => cx.fail(
            at,
            expected,
            format!("`{other}` is not a value (strings are written in double quotes)"),
        ),
        None => cx.fail(at, expected, ""),
    }
}

pub(crate) fn number(i: &mut &str, cx: &mut Cx<'_>) -> PResult<f64> {
    let at = *i;
    let r: Result<&str, ContextError> = (
        opt('-'),
        digit1,
        opt(('.', digit1)),
        opt((one_of(['e', 'E']), opt(one_of(['+', '-'])), digit1)),
    )
        .take()
        .parse_next(i);
    let Ok(text) = r else {
        *i = at;
        let mut j = at;
        punct(&mut j, '-');
        return cx.fail(j, "a digit", "");
    };
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => cx.fail(at, "", format!("number `{text}` is out of range")),
    }
}

/// A double-quoted string with escapes `\"`, `\\`, `\n`, `\t` and `\uXXXX`.
pub(crate) fn string(i: &mut &str, cx: &mut Cx<'_>) -> PResult<String> {
    punct(i, '"');
    let mut out = String::new();
    loop {
        let r: Result<&str, ContextError> = take_till(0.., ['"', '\\']).parse_next(i);
        out.push_str(r.unwrap_or_default());
        let esc = *i;
        if punct(i, '"') {
            return Ok(out);
        }
        if !punct(i, '\\') {
            return cx.fail(i, "a closing `\"`", "the string is not closed");
        }
        let c = if punct(i, '"') {
            '"'
        } else if punct(i, '\\') {
            '\\'
        } else if punct(i, 'n') {
            '\n'
        } else if punct(i, 't') {
            '\t'
        } else if punct(i, 'u') {
            let r: Result<&str, ContextError> = take(4usize)
                .verify(|h: &str| h.chars().all(|c| c.is_ascii_hexdigit()))
                .parse_next(i);
            match r
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
            {
                Some(c) => c,
                None => {
                    return cx.fail(
                        esc,
                        "four hex digits of a Unicode scalar value after `\\u`",
                        "invalid `\\u` escape",
                    );
                }
            }
        } else {
            return cx.fail(
                esc,
                "an escape: `\\\"`, `\\\\`, `\\n`, `\\t` or `\\uXXXX`",
                "",
            );
        };
        out.push(c);
    }
}

/// After `now`: an optional `+ 2h` / `- 30d`, as signed milliseconds.
pub(crate) fn now(i: &mut &str, cx: &mut Cx<'_>) -> PResult<i64> {
    let mut j = *i;
    ws(&mut j);
    let sign = if punct(&mut j, '+') {
        1
    } else if punct(&mut j, '-') {
        -1
    } else {
        return Ok(0);
    };
    *i = j;
    ws(i);
    Ok(sign * unsigned_duration(i, cx)?)
}

/// `30d`: digits and a unit (`s`, `m`, `h`, `d`, `w`), as milliseconds.
pub(crate) fn unsigned_duration(i: &mut &str, cx: &mut Cx<'_>) -> PResult<i64> {
    let at = *i;
    let r: Result<&str, ContextError> = digit1.parse_next(i);
    let Ok(digits) = r else {
        return cx.fail(i, EXPECT_DURATION, "");
    };
    let unit: Result<char, ContextError> = one_of(['s', 'm', 'h', 'd', 'w']).parse_next(i);
    let unit_ms: i64 = match unit {
        Ok('s') => 1000,
        Ok('m') => 60_000,
        Ok('h') => 3_600_000,
        Ok('d') => 86_400_000,
        Ok(_) => 604_800_000,
        Err(_) => return cx.fail(i, "a unit: s, m, h, d or w", ""),
    };
    if i.starts_with(is_ident_char) {
        return cx.fail(i, "a unit: s, m, h, d or w", "");
    }
    match digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
    {
        Some(ms) => Ok(ms),
        None => cx.fail(
            at,
            "",
            format!("duration `{}` is too long", &at[..digits.len() + 1]),
        ),
    }
}

/// After `date`: `("2026-01-01")` or `("2026-01-01T10:00:00Z")`, as Unix milliseconds.
pub(crate) fn date(i: &mut &str, cx: &mut Cx<'_>) -> PResult<i64> {
    ws(i);
    if !punct(i, '(') {
        return cx.fail(i, "`(`", "");
    }
    ws(i);
    let at = *i;
    if !i.starts_with('"') {
        return cx.fail(i, "a date in double quotes, such as \"2026-01-01\"", "");
    }
    let text = string(i, cx)?;
    let ms = match parse_time(&text) {
        Ok(ms) => ms,
        Err(e) => {
            return cx.fail(
                at,
                "a date such as \"2026-01-01\" or \"2026-01-01T10:00:00Z\"",
                format!("date {text:?} {e}"),
            );
        }
    };
    ws(i);
    if !punct(i, ')') {
        return cx.fail(i, "`)`", "");
    }
    Ok(ms)
}

/// An RFC 3339 date (`2026-01-01`, midnight UTC) or date-time with a zone, as Unix
/// milliseconds. Shared with attribute values, which become timestamps the same way.
pub(crate) fn parse_time(s: &str) -> Result<i64, crate::time::TimeError> {
    if s.len() == 10 {
        let mut full = String::with_capacity(20);
        full.push_str(s);
        full.push_str("T00:00:00Z");
        crate::time::parse_rfc3339(&full)
    } else {
        crate::time::parse_rfc3339(s)
    }
}
