//! Bounded top-k selection.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::Score;

/// A candidate and its score, laid out like qdrant's `ScoredPointOffset` so slices of it can be
/// handed around without conversion.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Scored {
    /// Dense id of the candidate (an item or a user, depending on the caller).
    pub idx: u32,
    /// Its score; larger is better.
    pub score: Score,
}

/// The order of results: higher score first; equal scores by ascending `idx`, so that results
/// are deterministic. `NaN` scores sort last.
fn better(a: &Scored, b: &Scored) -> Ordering {
    match (a.score.is_nan(), b.score.is_nan()) {
        (true, true) => b.idx.cmp(&a.idx),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a
            .score
            .partial_cmp(&b.score)
            .expect("neither score is NaN")
            .then_with(|| b.idx.cmp(&a.idx)),
    }
}

/// Heap entry ordered so that the *worst* kept candidate sits at the top of the max-heap.
#[derive(Clone, Copy, Debug)]
struct Worst(Scored);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        better(&other.0, &self.0)
    }
}

/// Keeps the `k` best candidates pushed into it, in `O(n log k)` time and `O(k)` memory.
///
/// Reuse one `TopK` across requests with [`TopK::reset`] to avoid allocating per request.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    /// A selector for the best `k`. With `k = 0` it keeps nothing.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.min(1 << 16) + 1),
        }
    }

    /// Empties the selector and sets a new `k`, keeping the allocation.
    pub fn reset(&mut self, k: usize) {
        self.k = k;
        self.heap.clear();
    }

    /// The score a candidate must beat to enter, once `k` candidates are held.
    #[inline]
    pub fn threshold(&self) -> Option<Score> {
        (self.heap.len() == self.k).then(|| self.heap.peek().map_or(Score::INFINITY, |w| w.0.score))
    }

    /// Offers a candidate.
    #[inline]
    pub fn push(&mut self, idx: u32, score: Score) {
        if self.k == 0 {
            return;
        }
        let cand = Scored { idx, score };
        if self.heap.len() < self.k {
            self.heap.push(Worst(cand));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && better(&cand, &worst.0) == Ordering::Greater
        {
            *worst = Worst(cand);
        }
    }

    /// Number of candidates held (at most `k`).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The kept candidates, best first (see [`Scored`] for the tie order), leaving `self` empty.
    pub fn drain_sorted(&mut self) -> Vec<Scored> {
        let mut out: Vec<Scored> = self.heap.drain().map(|w| w.0).collect();
        out.sort_unstable_by(|a, b| better(b, a));
        out
    }

    /// Consumes the selector, returning the candidates best first.
    pub fn into_sorted(mut self) -> Vec<Scored> {
        self.drain_sorted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(scores: &[f32], k: usize) -> Vec<Scored> {
        let mut all: Vec<Scored> = scores
            .iter()
            .enumerate()
            .map(|(i, &s)| Scored {
                idx: i as u32,
                score: s,
            })
            .collect();
        all.sort_by(|a, b| better(b, a));
        all.truncate(k);
        all
    }

    proptest! {
        #[test]
        fn equals_sort_and_truncate(
            scores in proptest::collection::vec(prop_oneof![-100i32..100, Just(0)].prop_map(|s| s as f32 / 4.0), 0..300),
            k in 0usize..40,
        ) {
            let mut top = TopK::new(k);
            for (i, &s) in scores.iter().enumerate() {
                top.push(i as u32, s);
            }
            let got = top.into_sorted();
            prop_assert_eq!(got, naive(&scores, k));
        }

        #[test]
        fn reuse_after_reset(a in proptest::collection::vec(-50f32..50.0, 0..50), b in proptest::collection::vec(-50f32..50.0, 0..50), k in 1usize..10) {
            let mut top = TopK::new(k);
            for (i, &s) in a.iter().enumerate() { top.push(i as u32, s); }
            top.reset(k);
            for (i, &s) in b.iter().enumerate() { top.push(i as u32, s); }
            prop_assert_eq!(top.drain_sorted(), naive(&b, k));
        }
    }

    #[test]
    fn nan_sorts_last_and_threshold_tracks_worst() {
        let mut top = TopK::new(2);
        assert_eq!(top.threshold(), None);
        top.push(0, f32::NAN);
        top.push(1, 1.0);
        // The NaN candidate is the worst held, so it is the threshold.
        assert!(top.threshold().is_some_and(f32::is_nan));
        top.push(2, 0.5);
        assert_eq!(top.threshold(), Some(0.5));
        let got = top.into_sorted();
        assert_eq!(got.iter().map(|s| s.idx).collect::<Vec<_>>(), vec![1, 2]);
    }
}
