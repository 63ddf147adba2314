//! Compiled expressions kept per source text.

use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::{Columns, Compiled, ExprError, Limits, compile, parse};

/// A bounded cache of compiled expressions, keyed by source text. When full, the least
/// recently used entry goes. An entry compiled against an older schema (see
/// [`Columns::generation`]) is compiled again on its next use. Errors are not cached.
///
/// The key is the source alone: callers are expected to use one [`Limits`] per cache.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Source → (compiled, last use).
    map: FxHashMap<Box<str>, (Arc<Compiled>, u64)>,
    clock: u64,
}

impl Cache {
    /// A cache holding at most `capacity` expressions (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The compiled form of `src` against `cols`: from the cache when still valid, else parsed
    /// and compiled (outside the lock) and stored.
    pub fn get(
        &self,
        src: &str,
        cols: &Columns,
        limits: &Limits,
    ) -> Result<Arc<Compiled>, ExprError> {
        {
            let mut inner = self.inner.lock();
            inner.clock += 1;
            let now = inner.clock;
            if let Some((compiled, used)) = inner.map.get_mut(src)
                && !compiled.is_stale(cols)
            {
                *used = now;
                return Ok(compiled.clone());
            }
        }
        let compiled = Arc::new(compile(&parse(src, limits)?, cols)?);
        let mut inner = self.inner.lock();
        if inner.map.len() >= self.capacity && !inner.map.contains_key(src) {
            // A linear scan for the oldest: eviction is rare next to hits, and the map small.
            if let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                inner.map.remove(&oldest);
            }
        }
        inner.clock += 1;
        let now = inner.clock;
        inner.map.insert(src.into(), (compiled.clone(), now));
        Ok(compiled)
    }

    /// How many expressions it holds.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
