//! The direct interpreter: an [`Expr`] evaluated against one [`Item`] record, with no schema,
//! columns or interning. Slow and plain on purpose; the property tests hold [`super::compile()`]
//! to it.

use bespoke_store::{Item, Millis};
use serde_json::{Map, Value};

use super::Limits;
use super::ast::{CmpOp, Expr, Literal, Operand, Time};
use super::columns::{BUILTINS, time_of};
use super::compile::{ClauseKind, context_literal};

/// Evaluates `expr` against `item` directly, with the same semantics as
/// `compile(expr, cols)?.bind(now, context)?.eval(cols, idx)` for an expression that compiles
/// and binds. Where those would fail (a type mismatch, a bad context value), the clause is
/// false here.
pub fn interpret(
    expr: &Expr,
    item: &Item,
    now: Millis,
    context: Option<&Map<String, Value>>,
) -> bool {
    let rec = |x: &Expr| interpret(x, item, now, context);
    match expr {
        Expr::Or(xs) => xs.iter().any(rec),
        Expr::And(xs) => xs.iter().all(rec),
        Expr::Not(x) => !rec(x),
        Expr::Exists(a) => {
            let n = a.name.as_str();
            num(item, n).is_some()
                || str(item, n).is_some()
                || bool(item, n).is_some()
                || time(item, n).is_some()
                || list(item, n).is_some()
        }
        Expr::Compare { attr, op, rhs } => clause(
            item,
            &attr.name,
            ClauseKind::Compare(*op),
            rhs,
            now,
            context,
        ),
        Expr::In { attr, rhs } => clause(item, &attr.name, ClauseKind::In, rhs, now, context),
        Expr::Contains { attr, rhs } => {
            clause(item, &attr.name, ClauseKind::Contains, rhs, now, context)
        }
    }
}

fn attribute<'a>(item: &'a Item, name: &str) -> Option<&'a Value> {
    if BUILTINS.contains(&name) {
        None
    } else {
        item.attributes.get(name)
    }
}

fn num(item: &Item, name: &str) -> Option<f64> {
    if BUILTINS.contains(&name) {
        return None;
    }
    item.numeric
        .get(name)
        .copied()
        .filter(|x| x.is_finite())
        .or_else(|| attribute(item, name)?.as_f64().filter(|x| x.is_finite()))
}

fn str<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    if name == "item" {
        return Some(&item.key);
    }
    if BUILTINS.contains(&name) {
        return None;
    }
    item.text
        .get(name)
        .map(String::as_str)
        .or_else(|| attribute(item, name)?.as_str())
}

fn bool(item: &Item, name: &str) -> Option<bool> {
    if name == "available" {
        return Some(item.available);
    }
    attribute(item, name)?.as_bool()
}

fn time(item: &Item, name: &str) -> Option<i64> {
    match name {
        "created_at" => Some(item.created_at),
        "updated_at" => Some(item.updated_at),
        _ if BUILTINS.contains(&name) => None,
        _ => time_of(str(item, name)?),
    }
}

fn list<'a>(item: &'a Item, name: &str) -> Option<Vec<&'a str>> {
    if name == "category" || name == "categories" {
        return Some(item.categories.iter().map(String::as_str).collect());
    }
    let Value::Array(xs) = attribute(item, name)? else {
        return None;
    };
    xs.iter().map(Value::as_str).collect()
}

fn time_value(t: &Time, now: Millis) -> i64 {
    match *t {
        Time::Now(off) => now.saturating_add(off),
        Time::At(ms) => ms,
    }
}

fn clause(
    item: &Item,
    name: &str,
    kind: ClauseKind,
    rhs: &Operand,
    now: Millis,
    context: Option<&Map<String, Value>>,
) -> bool {
    let owned;
    let lit = match rhs {
        Operand::Literal(l, _) => l,
        Operand::Context(field, _) => {
            let Some(v) = context.and_then(|c| c.get(field)) else {
                return false;
            };
            match context_literal(name, kind, v, Limits::default().max_list, true) {
                Ok(Some(l)) => {
                    owned = l;
                    &owned
                }
                _ => return false,
            }
        }
    };
    match (kind, lit) {
        (ClauseKind::Compare(op), Literal::Number(x)) => {
            num(item, name).is_some_and(|v| op.apply(v, *x))
        }
        (ClauseKind::Compare(op @ (CmpOp::Eq | CmpOp::Ne)), Literal::String(s)) => {
            str(item, name).is_some_and(|v| (v == s) == (op == CmpOp::Eq))
        }
        (ClauseKind::Compare(op @ (CmpOp::Eq | CmpOp::Ne)), Literal::Bool(b)) => {
            bool(item, name).is_some_and(|v| (v == *b) == (op == CmpOp::Eq))
        }
        (ClauseKind::Compare(op), Literal::Time(t)) => {
            time(item, name).is_some_and(|v| op.apply(v, time_value(t, now)))
        }
        (ClauseKind::Contains, Literal::String(s)) => match list(item, name) {
            Some(xs) => xs.contains(&s.as_str()),
            None => str(item, name).is_some_and(|v| v.contains(s.as_str())),
        },
        (ClauseKind::In, Literal::List(xs)) => xs.iter().any(|x| match x {
            Literal::Number(n) => num(item, name) == Some(*n),
            Literal::String(s) => match list(item, name) {
                Some(l) => l.contains(&s.as_str()),
                None => str(item, name) == Some(s.as_str()),
            },
            Literal::Bool(b) => bool(item, name) == Some(*b),
            Literal::Time(t) => time(item, name) == Some(time_value(t, now)),
            Literal::List(_) => false,
        }),
        _ => false,
    }
}
