//! Saved rules' expressions kept evaluated: one bit per item.
//!
//! A saved rule applies to every request, and a selective filter makes the top-k scan ask it
//! about many items (about 40 ns each). An expression that depends on the item alone (no
//! `now`, no request context: [`Compiled::is_static`]) has the same answer for an item until
//! the item changes, so [`Columns`] keeps it as a bitset and updates the item's bit whenever
//! it sets or clears the item. The scan then tests one bit ([`Pred::Bits`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;

use super::{Bound, Columns, Compiled, Limits, compile, parse};

/// A predicate over items: compiled and bound, or kept evaluated.
#[derive(Debug, Clone)]
pub enum Pred {
    /// Evaluated per item.
    Bound(Bound),
    /// Evaluated once per item change.
    Bits(Arc<Evaluated>),
}

impl Pred {
    /// The kept evaluation, when it is one.
    pub fn evaluated(&self) -> Option<&Arc<Evaluated>> {
        match self {
            Self::Bound(_) => None,
            Self::Bits(e) => Some(e),
        }
    }

    /// Whether item `item` satisfies it.
    #[inline]
    pub fn eval(&self, cols: &Columns, item: u32) -> bool {
        match self {
            Self::Bound(b) => b.eval(cols, item),
            Self::Bits(e) => e.get(cols, item),
        }
    }
}

/// Where [`Evaluated::id`]s come from.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// An expression and its value for every item set so far.
#[derive(Debug, Clone)]
pub struct Evaluated {
    bound: Bound,
    bits: Vec<u64>,
    /// Items `0..len` are evaluated.
    len: u32,
    /// Set bits.
    ones: usize,
    /// Names these answers: a new id whenever an item's answer may have changed, so that
    /// what is derived from them (a scorer's subset) is kept by id.
    id: u64,
}

impl Evaluated {
    /// Whether item `item` satisfies the expression.
    #[inline]
    pub fn get(&self, cols: &Columns, item: u32) -> bool {
        if item < self.len {
            self.bits[item as usize / 64] >> (item % 64) & 1 == 1
        } else {
            // Never set: evaluated as it stands (every attribute missing).
            self.bound.eval(cols, item)
        }
    }

    /// How many items satisfy it (those evaluated so far).
    pub fn ones(&self) -> usize {
        self.ones
    }

    /// Names the current answers (see the field).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sets item `item`'s answer; whether it changed (an item not evaluated before counts as
    /// changed: its earlier answer came from attributes it no longer has).
    fn set(&mut self, item: u32, value: bool) -> bool {
        let w = item as usize / 64;
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        let new = item >= self.len;
        self.len = self.len.max(item + 1);
        let bit = 1u64 << (item % 64);
        let was = self.bits[w] & bit != 0;
        if value {
            self.bits[w] |= bit;
        } else {
            self.bits[w] &= !bit;
        }
        match (was, value) {
            (false, true) => self.ones += 1,
            (true, false) => self.ones -= 1,
            _ => {}
        }
        new || was != value
    }
}

/// The expressions [`Columns`] keeps evaluated, by source text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Precomputed {
    limits: Limits,
    entries: FxHashMap<Box<str>, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    compiled: Arc<Compiled>,
    evaluated: Arc<Evaluated>,
}

/// Compiles `src` against `cols`, if it compiles and is static.
fn compile_static(src: &str, cols: &Columns, limits: &Limits) -> Option<Arc<Compiled>> {
    let compiled = compile(&parse(src, limits).ok()?, cols).ok()?;
    compiled.is_static().then(|| Arc::new(compiled))
}

/// Evaluates `compiled` over every item `cols` holds.
fn evaluate(compiled: &Compiled, cols: &Columns) -> Option<Evaluated> {
    let bound = compiled.bind(0, None).ok()?;
    let mut e = Evaluated {
        bits: vec![0; cols.item_slots().div_ceil(64)],
        bound,
        len: 0,
        ones: 0,
        id: next_id(),
    };
    for i in 0..cols.item_slots() as u32 {
        let v = e.bound.eval(cols, i);
        e.set(i, v);
    }
    Some(e)
}

impl Columns {
    /// Keeps exactly the expressions `srcs` evaluated (those that compile and are static; the
    /// others are left to per-request evaluation), reusing the ones already kept.
    pub fn precompute<'a>(&mut self, srcs: impl IntoIterator<Item = &'a str>, limits: &Limits) {
        let mut old = std::mem::take(&mut self.precomputed.entries);
        let mut entries = FxHashMap::default();
        for src in srcs {
            if entries.contains_key(src) {
                continue;
            }
            let entry = match old.remove(src) {
                Some(e) => Some(e),
                _ => compile_static(src, self, limits).and_then(|compiled| {
                    let evaluated = Arc::new(evaluate(&compiled, self)?);
                    Some(Entry {
                        compiled,
                        evaluated,
                    })
                }),
            };
            if let Some(e) = entry {
                entries.insert(src.into(), e);
            }
        }
        self.precomputed = Precomputed {
            limits: *limits,
            entries,
        };
    }

    /// The kept evaluation of `src`, if kept.
    pub fn precomputed(&self, src: &str) -> Option<Pred> {
        let e = self.precomputed.entries.get(src)?;
        Some(Pred::Bits(e.evaluated.clone()))
    }

    /// Brings the kept evaluations up to date after item `idx` changed.
    pub(super) fn refresh(&mut self, idx: u32) {
        if self.precomputed.entries.is_empty() {
            return;
        }
        let mut pre = std::mem::take(&mut self.precomputed);
        pre.entries.retain(|src, e| {
            if e.compiled.is_stale(self) {
                let Some(compiled) = compile_static(src, self, &pre.limits) else {
                    return false;
                };
                if compiled.generation() != e.compiled.generation() {
                    // A new attribute or type: every item is evaluated again.
                    let Some(evaluated) = evaluate(&compiled, self) else {
                        return false;
                    };
                    *e = Entry {
                        compiled,
                        evaluated: Arc::new(evaluated),
                    };
                    return true;
                }
                // Only strings were interned: an item evaluated before could not hold a string
                // unknown then, so its bit stands; the new compilation serves from now on.
                let Ok(bound) = compiled.bind(0, None) else {
                    return false;
                };
                Arc::make_mut(&mut e.evaluated).bound = bound;
                e.compiled = compiled;
            }
            let ev = Arc::make_mut(&mut e.evaluated);
            // Past the end, the items in between (never set) are evaluated too.
            let mut changed = false;
            for i in ev.len.min(idx)..=idx {
                let v = ev.bound.eval(self, i);
                changed |= ev.set(i, v);
            }
            if changed {
                ev.id = next_id();
            }
            true
        });
        self.precomputed = pre;
    }
}
