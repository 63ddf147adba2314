//! Exact top-k over all items, fast: a quantized first pass picks candidates with a proven
//! error bound, an `f32` second pass ranks them.
//!
//! Scoring every item against a user vector reads the whole item matrix, 5 MB at 20k items and
//! `f = 64`: the scan is memory-bound. The first pass reads an `i8` copy instead (a quarter of the
//! bytes): item `i` is stored as `q_i = round(y_i / s_i)` with `s_i = max|y_i| / 127`, the query
//! as `x̂ = round(x / s_x)` in `i16`, and the integer dot product gives `q̂_i = s_i s_x (q_i · x̂)`.
//! Its distance to the exact score is at most `b_i = s_i/2 · ‖x‖₁ + s_i ‖q_i‖₁ · s_x/2`. Any item
//! whose upper bound `q̂_i + b_i` is below the k-th best lower bound `q̂_j − b_j` cannot be in the
//! top k, so the survivors are a superset of the exact answer; the second pass scores them with
//! the same `f32` dot product as a full scan. The result equals a full scan, ties included (a
//! property test checks it).
//!
//! Items are scanned in order of decreasing norm, which lets the scan stop early: by
//! Cauchy–Schwarz no item scores above `‖x‖ ‖y_i‖`, so once that falls below the k-th best lower
//! bound, no remaining (shorter) item can enter the top k.
//!
//! [`ItemScorer::top_k_rescored`] ranks by a monotone re-scoring of each item's score (business
//! rules' boosts) inside the same scan: bounds pass through a non-decreasing function stay
//! bounds, and a ceiling over every item's function keeps the early stop sound.
//!
//! [`ItemScorer::subset`] restricts the screen to the items a predicate accepts (a saved
//! filter's), sharing the exact factors: a scan then never visits the items the filter would
//! reject, and the k-th best score it must beat comes from the filter's items alone.

use std::sync::Arc;

use crate::simd::{self, Simd, WithSimd};
use crate::{Factors, Scored, TopK};

/// Widening the bounds by this relative margin covers `f32` rounding in the scores themselves.
const SLACK: f32 = 1e-3;

/// Item factors prepared for fast exact top-k.
#[derive(Debug, Clone)]
pub struct ItemScorer {
    /// Shared with the scorer's [subsets](Self::subset).
    items: Arc<Factors>,
    /// Item ids in scan order (decreasing norm, ties by id); the arrays below follow it.
    order: Vec<u32>,
    /// `‖y_i‖`, times a margin for rounding.
    norm: Vec<f32>,
    /// Row-major `i8` codes, rows padded with zeros to `padded` (a multiple of 16).
    codes: Vec<i8>,
    padded: usize,
    /// `s_i`.
    scale: Vec<f32>,
    /// `s_i · ‖q_i‖₁`.
    scaled_l1: Vec<f32>,
}

/// Reusable buffers of [`ItemScorer::top_k`].
#[derive(Debug, Clone, Default)]
pub struct ScoreScratch {
    query: Vec<i16>,
    candidates: Vec<(u32, f32, u32)>,
    lower: Option<TopK>,
    pub(crate) top: Option<TopK>,
    /// The graph search's buffers ([`crate::ann::AnnScorer`]).
    pub(crate) ann: crate::ann::SearchScratch,
}

/// A re-scoring of items applied inside [`ItemScorer::top_k_rescored`]: business-rule boosts.
pub trait Rescore {
    /// Whether [`Self::apply`] is the identity (then scores need no recomputing).
    const IDENTITY: bool = false;
    /// What applies to `item` (say, a bit per matching boost); asked once per item that could
    /// enter the top k.
    fn class(&mut self, item: u32) -> u32;
    /// The re-scored `score` of an item of `class`; must not decrease as `score` grows.
    fn apply(&self, class: u32, score: f32) -> f32;
    /// A plain score below which no class's [`Self::apply`] reaches `target` (the inverse of
    /// the largest lift, rounded down): bounds the items not yet looked at. Non-decreasing.
    fn floor(&self, target: f32) -> f32;
}

/// No re-scoring.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl Rescore for Identity {
    const IDENTITY: bool = true;

    #[inline(always)]
    fn class(&mut self, _: u32) -> u32 {
        0
    }

    #[inline(always)]
    fn apply(&self, _: u32, score: f32) -> f32 {
        score
    }

    #[inline(always)]
    fn floor(&self, target: f32) -> f32 {
        target
    }
}

impl ItemScorer {
    /// Quantizes `items`.
    pub fn new(items: Factors) -> Self {
        let d = items.dim();
        let padded = d.div_ceil(16) * 16;
        let n = items.rows();
        let norms: Vec<f32> = (0..n)
            .map(|i| items.row(i).iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| {
            norms[b as usize]
                .total_cmp(&norms[a as usize])
                .then(a.cmp(&b))
        });
        let mut codes = vec![0i8; n * padded];
        let mut scale = vec![0f32; n];
        let mut scaled_l1 = vec![0f32; n];
        let mut norm = vec![0f32; n];
        for (pos, &id) in order.iter().enumerate() {
            let y = items.row(id as usize);
            let max = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 0.0 };
            let mut l1 = 0f32;
            for (k, &v) in y.iter().enumerate() {
                let q = if s > 0.0 {
                    (v / s).round().clamp(-127.0, 127.0)
                } else {
                    0.0
                };
                codes[pos * padded + k] = q as i8;
                l1 += q.abs();
            }
            scale[pos] = s;
            scaled_l1[pos] = s * l1;
            norm[pos] = norms[id as usize] * (1.0 + SLACK);
        }
        Self {
            items: Arc::new(items),
            order,
            norm,
            codes,
            padded,
            scale,
            scaled_l1,
        }
    }

    /// This scorer restricted to the items `keep` accepts, sharing the exact factors: its top
    /// k under any filter equals this scorer's under that filter and `keep` together. A
    /// selective filter that many requests share (a saved rule) is scanned once per change
    /// instead of once per request: the scan then skips the items it would reject, and the
    /// k-th best score it must beat comes from the filter's own items.
    pub fn subset(&self, mut keep: impl FnMut(u32) -> bool) -> ItemScorer {
        let p = self.padded;
        let mut sub = ItemScorer {
            items: self.items.clone(),
            order: Vec::new(),
            norm: Vec::new(),
            codes: Vec::new(),
            padded: p,
            scale: Vec::new(),
            scaled_l1: Vec::new(),
        };
        for (pos, &id) in self.order.iter().enumerate() {
            if keep(id) {
                sub.order.push(id);
                sub.norm.push(self.norm[pos]);
                sub.codes
                    .extend_from_slice(&self.codes[pos * p..(pos + 1) * p]);
                sub.scale.push(self.scale[pos]);
                sub.scaled_l1.push(self.scaled_l1[pos]);
            }
        }
        sub
    }

    /// How many items a scan looks at: [`Self::len`], or fewer in a [subset](Self::subset).
    pub fn scanned(&self) -> usize {
        self.order.len()
    }

    /// The exact item factors.
    pub fn items(&self) -> &Factors {
        &self.items
    }

    /// The `k` best items for `x` among those `keep` accepts, best first, ties to the smaller
    /// id: exactly what scoring every item with [`crate::simd::dot`] and sorting would return.
    pub fn top_k(
        &self,
        x: &[f32],
        k: usize,
        keep: impl FnMut(u32) -> bool,
        scratch: &mut ScoreScratch,
    ) -> Vec<Scored> {
        self.top_k_rescored(x, k, keep, &mut Identity, scratch)
    }

    /// The `k` best items by `rescore` of their score among those `keep` accepts, best
    /// (rescored) first, ties to the smaller id; each with its plain score. Exactly what
    /// rescoring every item's [`crate::simd::dot`] and sorting would return.
    pub fn top_k_rescored<R: Rescore>(
        &self,
        x: &[f32],
        k: usize,
        keep: impl FnMut(u32) -> bool,
        rescore: &mut R,
        scratch: &mut ScoreScratch,
    ) -> Vec<Scored> {
        assert_eq!(x.len(), self.items.dim(), "query dimension");
        if k == 0 || self.order.is_empty() {
            return Vec::new();
        }
        // Quantize the query.
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let sx = if max > 0.0 { max / 32767.0 } else { 1.0 };
        scratch.query.clear();
        scratch
            .query
            .extend(x.iter().map(|&v| (v / sx).round() as i16));
        scratch.query.resize(self.padded, 0);
        let l1x: f32 = x.iter().map(|v| v.abs()).sum();
        let norm_x = x.iter().map(|v| v * v).sum::<f32>().sqrt() * (1.0 + SLACK);
        let lower = scratch.lower.get_or_insert_with(|| TopK::new(k));
        lower.reset(k);
        scratch.candidates.clear();
        simd::dispatch(Screen {
            scorer: self,
            query: &scratch.query,
            sx,
            half_l1x: l1x * 0.5,
            norm_x,
            keep,
            rescore: &mut *rescore,
            floor_of: (f32::NAN, f32::NAN),
            lower,
            candidates: &mut scratch.candidates,
        });
        // Everything whose upper bound reaches the final k-th lower bound.
        let threshold = lower.threshold().unwrap_or(f32::NEG_INFINITY);
        let top = scratch.top.get_or_insert_with(|| TopK::new(k));
        top.reset(k);
        simd::dispatch(Rerank {
            items: &self.items,
            x,
            threshold,
            candidates: &scratch.candidates,
            rescore: &*rescore,
            top,
        });
        let mut out = top.drain_sorted();
        if !R::IDENTITY {
            for s in &mut out {
                s.score = simd::dot(x, self.items.row(s.idx as usize));
            }
        }
        out
    }

    /// Number of items (ids run below it; a [subset](Self::subset) scans fewer).
    pub fn len(&self) -> usize {
        self.items.rows()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.rows() == 0
    }
}

/// The quantized pass.
struct Screen<'a, F, R> {
    scorer: &'a ItemScorer,
    query: &'a [i16],
    sx: f32,
    half_l1x: f32,
    norm_x: f32,
    keep: F,
    rescore: &'a mut R,
    /// The last threshold and its [`Rescore::floor`]: the threshold changes seldom.
    floor_of: (f32, f32),
    lower: &'a mut TopK,
    candidates: &'a mut Vec<(u32, f32, u32)>,
}

impl<F, R: Rescore> Screen<'_, F, R> {
    #[inline(always)]
    fn floor(&mut self, t: f32) -> f32 {
        if R::IDENTITY {
            return t;
        }
        if t.to_bits() != self.floor_of.0.to_bits() {
            self.floor_of = (t, self.rescore.floor(t));
        }
        self.floor_of.1
    }
}

impl<F: FnMut(u32) -> bool, R: Rescore> WithSimd for Screen<'_, F, R> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(mut self, s: S) {
        let sc = self.scorer;
        let p = sc.padded;
        let (sx, half_sx, half_l1x) = (self.sx, self.sx * 0.5, self.half_l1x);
        let n = sc.scale.len();
        let mut i = 0;
        while i < n {
            // Cauchy–Schwarz: nothing from here on (norms only decrease) can reach the top k.
            if self
                .lower
                .threshold()
                .is_some_and(|t| self.norm_x * sc.norm[i] < self.floor(t))
            {
                break;
            }
            let width = (n - i).min(8);
            let dots = if width == 8 {
                s.dot8_i8_i16(&sc.codes[i * p..(i + 8) * p], self.query)
            } else {
                std::array::from_fn(|r| {
                    if r < width {
                        s.dot_i8_i16(&sc.codes[(i + r) * p..(i + r + 1) * p], self.query)
                    } else {
                        0
                    }
                })
            };
            // Bounds for the block, over fixed-size arrays so that the compiler vectorises
            // (and copies no slices through `memcpy`).
            let mut scale = [0f32; 8];
            let mut l1 = [0f32; 8];
            if width == 8 {
                scale = sc.scale[i..i + 8].try_into().expect("eight scales");
                l1 = sc.scaled_l1[i..i + 8].try_into().expect("eight norms");
            } else {
                scale[..width].copy_from_slice(&sc.scale[i..i + width]);
                l1[..width].copy_from_slice(&sc.scaled_l1[i..i + width]);
            }
            let mut upper = [0f32; 8];
            let mut lower = [0f32; 8];
            for r in 0..8 {
                let approx = dots[r] as f32 * scale[r] * sx;
                let bound = (scale[r] * half_l1x + l1[r] * half_sx) * (1.0 + SLACK)
                    + SLACK * approx.abs()
                    + f32::MIN_POSITIVE;
                upper[r] = approx + bound;
                lower[r] = approx - bound;
            }
            for u in upper.iter_mut().skip(width) {
                *u = f32::NEG_INFINITY;
            }
            let t = self
                .lower
                .threshold()
                .map_or(f32::NEG_INFINITY, |t| self.floor(t));
            // Most blocks end here: nothing in them can reach the top k.
            if upper.iter().any(|&u| u >= t) {
                for r in 0..width {
                    let item = sc.order[i + r];
                    if self
                        .lower
                        .threshold()
                        .is_some_and(|t| upper[r] < self.floor(t))
                    {
                        continue;
                    }
                    // The item's own lift before `keep`: most items in the band below the
                    // threshold that only the largest lift could bridge are not lifted.
                    let class = self.rescore.class(item);
                    let up = self.rescore.apply(class, upper[r]);
                    if (R::IDENTITY || self.lower.threshold().is_none_or(|t| up >= t))
                        && (self.keep)(item)
                    {
                        self.lower.push(item, self.rescore.apply(class, lower[r]));
                        self.candidates.push((item, up, class));
                    }
                }
            }
            i += width;
        }
    }
}

/// The exact pass over the survivors.
struct Rerank<'a, R> {
    items: &'a Factors,
    x: &'a [f32],
    threshold: f32,
    candidates: &'a [(u32, f32, u32)],
    rescore: &'a R,
    top: &'a mut TopK,
}

impl<R: Rescore> WithSimd for Rerank<'_, R> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        for &(i, upper, class) in self.candidates {
            if upper >= self.threshold {
                let score = s.dot(self.x, self.items.row(i as usize));
                self.top.push(i, self.rescore.apply(class, score));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scores every item `keep` accepts, ranks by `rescore` of the score, returns plain scores.
    fn brute(
        items: &Factors,
        x: &[f32],
        k: usize,
        keep: impl Fn(u32) -> bool,
        rescore: &mut impl Rescore,
    ) -> Vec<Scored> {
        let mut top = TopK::new(k);
        for i in 0..items.rows() as u32 {
            if keep(i) {
                let c = rescore.class(i);
                top.push(i, rescore.apply(c, simd::dot(x, items.row(i as usize))));
            }
        }
        top.into_sorted()
            .into_iter()
            .map(|s| Scored {
                score: simd::dot(x, items.row(s.idx as usize)),
                ..s
            })
            .collect()
    }

    /// `n` random items of dimension `d` (with `dup`, exact copies of the first among them)
    /// and a random query.
    fn case(seed: u64, n: usize, d: usize, dup: bool) -> (Factors, Vec<f32>) {
        let mut rng = crate::Rng::seed_from_u64(seed);
        let mut data: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32 * 0.3).collect();
        if dup && n > 3 {
            let first: Vec<f32> = data[..d].to_vec();
            for r in [1, n / 2, n - 1] {
                data[r * d..(r + 1) * d].copy_from_slice(&first);
            }
        }
        let items = Factors::from_vec(n, d, data).unwrap();
        let x = (0..d).map(|_| rng.normal() as f32).collect();
        (items, x)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The two-pass answer equals a full scan: same items, same order, same scores.
        #[test]
        fn equals_a_full_scan(
            seed in 0u64..10_000,
            n in 1usize..400,
            d in prop_oneof![Just(1usize), Just(7), Just(16), Just(33), Just(64)],
            k in 1usize..30,
            dup in any::<bool>(),
        ) {
            let (items, x) = case(seed, n, d, dup);
            let scorer = ItemScorer::new(items.clone());
            let mut scratch = ScoreScratch::default();
            let keep = |i: u32| i % 5 != 3;
            prop_assert_eq!(scorer.top_k(&x, k, keep, &mut scratch), brute(&items, &x, k, keep, &mut Identity));
            // Scratch reuse with another k.
            prop_assert_eq!(scorer.top_k(&x, k + 3, |_| true, &mut scratch), brute(&items, &x, k + 3, |_| true, &mut Identity));
        }
    }

    /// Boost-like re-scoring by `i % 4`: none, × 1.5, + 0.7, × 0.5 (negative scores divided).
    struct Boosts;

    fn times(by: f32, s: f32) -> f32 {
        if s >= 0.0 { s * by } else { s / by }
    }

    impl Rescore for Boosts {
        fn class(&mut self, item: u32) -> u32 {
            item % 4
        }
        fn apply(&self, class: u32, s: f32) -> f32 {
            match class {
                1 => times(1.5, s),
                2 => s + 0.7,
                3 => times(0.5, s),
                _ => s,
            }
        }
        fn floor(&self, t: f32) -> f32 {
            // Inverse of max(× 1.5, + 0.7), a little low for rounding.
            let by = if t >= 0.0 { t / 1.5 } else { t * 1.5 };
            by.min(t - 0.7) - 1e-4 * (1.0 + t.abs())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Re-scored inside the scan equals re-scoring a full scan and sorting; the scores
        /// returned are the plain ones.
        #[test]
        fn rescored_equals_a_rescored_full_scan(
            seed in 0u64..10_000,
            n in 1usize..400,
            d in prop_oneof![Just(1usize), Just(7), Just(16), Just(64)],
            k in 1usize..30,
        ) {
            let (items, x) = case(seed, n, d, false);
            let scorer = ItemScorer::new(items.clone());
            let keep = |i: u32| i % 7 != 2;
            let want = brute(&items, &x, k, keep, &mut Boosts);
            let got = scorer.top_k_rescored(&x, k, keep, &mut Boosts, &mut ScoreScratch::default());
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A subset's top k under a filter equals the whole scorer's under the subset's
        /// predicate and the filter, re-scored or not.
        #[test]
        fn a_subset_equals_its_predicate_as_a_filter(
            seed in 0u64..10_000,
            n in 1usize..400,
            d in prop_oneof![Just(1usize), Just(7), Just(16), Just(64)],
            k in 1usize..30,
            modulus in 1u32..12,
        ) {
            let (items, x) = case(seed, n, d, seed % 3 == 0);
            let scorer = ItemScorer::new(items.clone());
            let inside = |i: u32| (i * 7 + 3).is_multiple_of(modulus);
            let sub = scorer.subset(inside);
            prop_assert_eq!(sub.scanned(), (0..n as u32).filter(|&i| inside(i)).count());
            prop_assert_eq!(sub.len(), n);
            let keep = |i: u32| i % 5 != 1;
            let both = |i: u32| inside(i) && keep(i);
            let mut scratch = ScoreScratch::default();
            prop_assert_eq!(sub.top_k(&x, k, keep, &mut scratch), brute(&items, &x, k, both, &mut Identity));
            prop_assert_eq!(
                sub.top_k_rescored(&x, k, keep, &mut Boosts, &mut scratch),
                brute(&items, &x, k, both, &mut Boosts)
            );
        }
    }

    #[test]
    fn zero_vectors_and_empty_catalogs() {
        let items = Factors::from_vec(3, 4, vec![0.0; 12]).unwrap();
        let scorer = ItemScorer::new(items);
        let got = scorer.top_k(&[0.0; 4], 2, |_| true, &mut ScoreScratch::default());
        assert_eq!(got.iter().map(|s| s.idx).collect::<Vec<_>>(), vec![0, 1]);
        let empty = ItemScorer::new(Factors::zeros(0, 4));
        assert!(
            empty
                .top_k(&[1.0; 4], 5, |_| true, &mut ScoreScratch::default())
                .is_empty()
        );
    }
}
