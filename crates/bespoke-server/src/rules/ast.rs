//! The typed syntax tree and its printer (the printer's output parses back to the same tree).

use std::fmt;

use bespoke_store::Millis;

/// A 0-based character offset into the source, kept for error messages.
///
/// Positions take no part in equality: the same expression written with other spacing (or
/// printed back by [`Expr`]'s `Display`) compares equal.
#[derive(Debug, Clone, Copy, Default, Eq)]
pub struct Pos(pub usize);

impl PartialEq for Pos {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// An attribute name on the left of a clause, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    /// The name: a built-in (`item`, `category`, ...) or an item field.
    pub name: String,
    /// Where the name starts.
    pub pos: Pos,
}

/// A comparison operator. `==` parses as [`CmpOp::Eq`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// Whether this operator orders its operands (defined for numbers and timestamps only).
    pub fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }

    /// Applies the operator; false whenever either side is NaN, so that `!=` needs its own
    /// presence check by the caller.
    #[inline]
    pub(crate) fn apply<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A timestamp literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    /// `now`, `now - 30d`: the bound `now` plus this many milliseconds (negative for `-`).
    Now(Millis),
    /// `date("2026-01-01")`: a fixed instant in Unix milliseconds.
    At(Millis),
}

/// A literal value on the right of a clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A finite number.
    Number(f64),
    /// A string, escapes resolved.
    String(String),
    /// `true` or `false`.
    Bool(bool),
    /// A timestamp.
    Time(Time),
    /// `[a, b, ...]` of scalar literals (lists do not nest).
    List(Vec<Literal>),
}

impl Literal {
    /// The type's name as error messages use it.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Literal::Number(_) => "a number",
            Literal::String(_) => "a string",
            Literal::Bool(_) => "a boolean",
            Literal::Time(_) => "a timestamp",
            Literal::List(_) => "a list",
        }
    }
}

/// The right side of a clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A literal, with where it starts.
    Literal(Literal, Pos),
    /// `context.<name>`: a field of the request context, resolved by [`super::Compiled::bind`].
    Context(String, Pos),
}

impl Operand {
    /// Where the operand starts.
    pub fn pos(&self) -> usize {
        match self {
            Operand::Literal(_, p) | Operand::Context(_, p) => p.0,
        }
    }
}

/// A parsed expression. `and` and `or` are n-ary (at least two operands when parsed), so that a
/// long chain is flat rather than deep.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// True when any operand is.
    Or(Vec<Expr>),
    /// True when every operand is.
    And(Vec<Expr>),
    /// Negation; also of a clause on a missing attribute, which is false, so `not` makes it true.
    Not(Box<Expr>),
    /// `attr op rhs`.
    Compare {
        /// Left side.
        attr: Attr,
        /// Operator.
        op: CmpOp,
        /// Right side.
        rhs: Operand,
    },
    /// `attr in rhs`: the value is one of the list's (for a list attribute: any element is).
    In {
        /// Left side.
        attr: Attr,
        /// A list literal or a context field holding a list.
        rhs: Operand,
    },
    /// `attr contains rhs`: a list attribute has the element, or a string one the substring.
    Contains {
        /// Left side.
        attr: Attr,
        /// A string literal or a context field holding a string.
        rhs: Operand,
    },
    /// `exists(attr)` (or `has(attr)`): the item has a value for the attribute.
    Exists(Attr),
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Time::Now(0) => f.write_str("now"),
            Time::Now(off) => {
                let sign = if off < 0 { '-' } else { '+' };
                let abs = off.unsigned_abs();
                // The largest unit that divides exactly, so that the text parses back as is.
                let (n, unit) = [
                    (604_800_000, 'w'),
                    (86_400_000, 'd'),
                    (3_600_000, 'h'),
                    (60_000, 'm'),
                    (1000, 's'),
                ]
                .into_iter()
                .find(|(ms, _)| abs % ms == 0)
                .map_or((abs / 1000, 's'), |(ms, u)| (abs / ms, u));
                write!(f, "now {sign} {n}{unit}")
            }
            Time::At(ms) => write!(f, "date(\"{}\")", crate::time::format_rfc3339(ms)),
        }
    }
}

/// Writes `s` as a double-quoted literal with the escapes the parser reads.
fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `Display` of f64 is the shortest text that reads back to the same value.
            Literal::Number(n) => write!(f, "{n}"),
            Literal::String(s) => write_string(f, s),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Time(t) => write!(f, "{t}"),
            Literal::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Literal(l, _) => write!(f, "{l}"),
            Operand::Context(name, _) => write!(f, "context.{name}"),
        }
    }
}

impl Expr {
    /// Writes `self`, in parentheses when it binds looser than its place allows (`level`: 0
    /// under `or`, 1 under `and`, 2 under `not`).
    fn write_at(&self, f: &mut fmt::Formatter<'_>, level: u8) -> fmt::Result {
        let own = match self {
            Expr::Or(_) => 0,
            Expr::And(_) => 1,
            _ => 2,
        };
        // A nested `or` directly under `or` needs parentheses too, or it would parse flat.
        let paren = own < level || (own < 2 && own == level);
        if paren {
            f.write_str("(")?;
        }
        match self {
            Expr::Or(xs) | Expr::And(xs) => {
                let sep = if own == 0 { " or " } else { " and " };
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    x.write_at(f, own)?;
                }
            }
            Expr::Not(x) => {
                f.write_str("not ")?;
                x.write_at(f, 2)?;
            }
            Expr::Compare { attr, op, rhs } => write!(f, "{} {op} {rhs}", attr.name)?,
            Expr::In { attr, rhs } => write!(f, "{} in {rhs}", attr.name)?,
            Expr::Contains { attr, rhs } => write!(f, "{} contains {rhs}", attr.name)?,
            Expr::Exists(attr) => write!(f, "exists({})", attr.name)?,
        }
        if paren {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Display for Expr {
    /// The expression as source text that [`super::parse()`] reads back to an equal [`Expr`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The top never needs parentheses, not even an `or`.
        if let Expr::Or(xs) = self {
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
