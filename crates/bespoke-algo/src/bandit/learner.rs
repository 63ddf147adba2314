//! The online regression model behind every loop: a linear model over hashed terms, trained
//! with per-coordinate adaptive steps (AdaGrad) and an importance-invariant update.
//!
//! The invariant update (Karampatziakis and Langford, "Online Importance Weight Aware Updates",
//! 2011) moves the prediction toward the target by the fraction `1 - exp(-h·S)`, where `S` is the
//! step's effect on the prediction per unit of error. It never overshoots, however many terms an
//! example has or however large its importance weight `h`, which plain SGD does with hundreds of
//! interaction terms.

/// Bytes before the entries in [`LinearModel::to_bytes`].
const HEADER: usize = 32;

/// A linear model over `2^bits` hashed weights.
///
/// Memory: three `f32` tables of `2^bits` entries, `12 · 2^bits` bytes (3 MiB at the default
/// 18 bits, 192 MiB at the largest, 24). They are allocated by the first [`LinearModel::learn`]:
/// a model that has learned nothing predicts 0 everywhere and holds no table, so a loop that
/// only decides costs next to nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    bits: u8,
    learning_rate: f32,
    /// Empty until the first update (see the type's documentation), then `2^bits` entries, as
    /// are `grad_sq` and `precision`.
    weights: Vec<f32>,
    /// Sum of squared gradients per weight (AdaGrad).
    grad_sq: Vec<f32>,
    /// Sum of squared feature values per weight: the diagonal of `XᵀX`, the posterior
    /// precision used by Thompson sampling.
    precision: Vec<f32>,
    updates: u64,
    /// Sum over learned examples of `‖x‖²`: the learning rate is divided by its mean, so that
    /// one rate suits an example of 10 terms and one of 1,000 (Vowpal Wabbit's normalized
    /// updates do the same with per-feature scales).
    norm_sum: f64,
}

impl LinearModel {
    /// A zero model with `2^bits` weights (allocated on the first update).
    pub fn new(bits: u8, learning_rate: f32) -> Self {
        Self {
            bits,
            learning_rate,
            weights: Vec::new(),
            grad_sq: Vec::new(),
            precision: Vec::new(),
            updates: 0,
            norm_sum: 0.0,
        }
    }

    /// Allocates the tables if they are not yet.
    fn allocate(&mut self) {
        if self.weights.is_empty() {
            let n = 1usize << self.bits;
            self.weights = vec![0.0; n];
            self.grad_sq = vec![0.0; n];
            self.precision = vec![0.0; n];
        }
    }

    /// Bytes held by the weight tables: 0 before the first update, `12 · 2^bits` after.
    pub fn heap_bytes(&self) -> usize {
        (self.weights.capacity() + self.grad_sq.capacity() + self.precision.capacity())
            * std::mem::size_of::<f32>()
    }

    /// Number of hash bits.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Number of updates so far (examples learned).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Weight at `index`.
    pub fn weight(&self, index: u32) -> f32 {
        self.weights.get(index as usize).copied().unwrap_or(0.0)
    }

    /// Predicted reward of a sparse example.
    #[inline]
    pub fn predict(&self, x: &[(u32, f32)]) -> f32 {
        if self.weights.is_empty() {
            return 0.0;
        }
        let mut s = 0.0f32;
        for &(i, v) in x {
            s += self.weights[i as usize] * v;
        }
        s
    }

    /// Variance factor of a prediction: `Σ x_i² / (1 + n_i)`, where `n_i` is the precision
    /// accumulated on weight `i`. Large for features the model has seldom seen.
    pub fn uncertainty(&self, x: &[(u32, f32)]) -> f32 {
        let mut s = 0.0f32;
        for &(i, v) in x {
            let p = self.precision.get(i as usize).copied().unwrap_or(0.0);
            s += v * v / (1.0 + p);
        }
        s
    }

    /// Learns that `x` earned `target`, with importance weight `importance` (1 for an
    /// ordinary example).
    ///
    /// An example whose update would not be finite (a non-finite target, value or importance,
    /// or an error so large that a squared gradient overflows `f32`) is skipped whole: the model
    /// never holds a NaN or an infinity, which would otherwise stay in it for good (every later
    /// prediction through that weight would be NaN). Callers bound targets to a sensible range
    /// first; this is the last line of defence.
    pub fn learn(&mut self, x: &[(u32, f32)], target: f32, importance: f32) {
        if !(target.is_finite() && importance.is_finite()) || x.iter().any(|&(_, v)| !v.is_finite())
        {
            return;
        }
        // Terms that share an index (a repeated feature, a hash collision) are one weight: merge
        // them, or the step below would count that weight twice and could overshoot.
        let mut merged: Vec<(u32, f32)> = x.to_vec();
        merged.sort_unstable_by_key(|&(i, _)| i);
        merged.dedup_by(|next, kept| {
            if next.0 == kept.0 {
                kept.1 += next.1;
                true
            } else {
                false
            }
        });
        let x = &merged[..];
        self.allocate();
        let err = self.predict(x) - target;
        // Check every accumulator before changing any, so that a skipped example leaves no
        // trace.
        let norm = x.iter().map(|&(_, v)| (v * v) as f64).sum::<f64>();
        let finite = err.is_finite()
            && (self.norm_sum + norm).is_finite()
            && x.iter().all(|&(i, v)| {
                let g = err * v;
                (self.precision[i as usize] + v * v).is_finite()
                    && (self.grad_sq[i as usize] + g * g).is_finite()
            });
        if !finite {
            return;
        }
        self.updates += 1;
        self.norm_sum += norm;
        let rate =
            (self.learning_rate as f64 / (self.norm_sum / self.updates as f64).max(1e-12)) as f32;
        for &(i, v) in x {
            let i = i as usize;
            self.precision[i] += v * v;
            let g = err * v;
            self.grad_sq[i] += g * g;
        }
        if err == 0.0 || importance <= 0.0 {
            return;
        }
        // S = Σ η_i x_i², the prediction's change per unit of error for a plain AdaGrad step.
        let mut s = 0.0f64;
        for &(i, v) in x {
            let gs = self.grad_sq[i as usize];
            if gs > 0.0 {
                s += (rate / gs.sqrt() * v * v) as f64;
            }
        }
        if s <= 0.0 {
            return;
        }
        let fraction = (-(-(importance as f64) * s).exp_m1() / s) as f32;
        for &(i, v) in x {
            let i = i as usize;
            let gs = self.grad_sq[i];
            if gs > 0.0 {
                let w = self.weights[i] - err * fraction * rate / gs.sqrt() * v;
                // The step never overshoots the target, so this holds but for rounding at the
                // edge of `f32`; a weight that would not be finite keeps its value.
                if w.is_finite() {
                    self.weights[i] = w;
                }
            }
        }
    }

    /// The model as bytes: a header and the non-zero entries only, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let nonzero: Vec<usize> = (0..self.weights.len())
            .filter(|&i| {
                self.weights[i] != 0.0 || self.grad_sq[i] != 0.0 || self.precision[i] != 0.0
            })
            .collect();
        let mut out = Vec::with_capacity(HEADER + nonzero.len() * 16);
        out.extend_from_slice(b"BSKL");
        out.push(2); // format version
        out.push(self.bits);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.learning_rate.to_le_bytes());
        out.extend_from_slice(&self.updates.to_le_bytes());
        out.extend_from_slice(&self.norm_sum.to_le_bytes());
        out.extend_from_slice(&(nonzero.len() as u32).to_le_bytes());
        for i in nonzero {
            out.extend_from_slice(&(i as u32).to_le_bytes());
            out.extend_from_slice(&self.weights[i].to_le_bytes());
            out.extend_from_slice(&self.grad_sq[i].to_le_bytes());
            out.extend_from_slice(&self.precision[i].to_le_bytes());
        }
        out
    }

    /// Reads [`LinearModel::to_bytes`] back; `None` if the bytes are not such a model.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER || &b[..4] != b"BSKL" || b[4] != 2 || b[5] > 30 || b[5] == 0 {
            return None;
        }
        let bits = b[5];
        let f32_at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let learning_rate = f32_at(8);
        let updates = u64::from_le_bytes(b[12..20].try_into().unwrap());
        let norm_sum = f64::from_le_bytes(b[20..28].try_into().unwrap());
        let n = u32_at(28) as usize;
        if b.len() != HEADER + n * 16 {
            return None;
        }
        let mut m = Self::new(bits, learning_rate);
        m.allocate();
        m.updates = updates;
        m.norm_sum = norm_sum;
        for k in 0..n {
            let o = HEADER + k * 16;
            let i = u32_at(o) as usize;
            if i >= m.weights.len() {
                return None;
            }
            m.weights[i] = f32_at(o + 4);
            m.grad_sq[i] = f32_at(o + 8);
            m.precision[i] = f32_at(o + 12);
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn learns_a_linear_function() {
        let mut m = LinearModel::new(10, 0.5);
        let mut rng = crate::Rng::seed_from_u64(1);
        for _ in 0..5000 {
            let a = rng.f64() as f32;
            let b = rng.f64() as f32;
            let x = [(1, 1.0), (2, a), (3, b)];
            m.learn(&x, 0.2 + 0.5 * a - 0.3 * b, 1.0);
        }
        let x = [(1, 1.0), (2, 0.5), (3, 0.5)];
        assert!((m.predict(&x) - 0.3).abs() < 0.02, "{}", m.predict(&x));
    }

    proptest! {
        /// The invariant update never overshoots: the new prediction lies between the old one
        /// and the target, whatever the importance weight.
        #[test]
        fn update_never_overshoots(
            xs in prop::collection::vec((0u32..64, -3.0f32..3.0), 1..40),
            target in -5.0f32..5.0,
            importance in 0.0f32..1000.0,
            warm in 0usize..5,
        ) {
            let mut m = LinearModel::new(6, 0.7);
            for k in 0..warm {
                m.learn(&xs, k as f32, 1.0);
            }
            let before = m.predict(&xs);
            m.learn(&xs, target, importance);
            let after = m.predict(&xs);
            let (lo, hi) = if before < target { (before, target) } else { (target, before) };
            prop_assert!(after >= lo - 1e-3 && after <= hi + 1e-3, "{before} -> {after}, target {target}");
        }

        #[test]
        fn bytes_round_trip(xs in prop::collection::vec((0u32..256, -3.0f32..3.0), 1..20), t in -1.0f32..1.0) {
            let mut m = LinearModel::new(8, 0.3);
            m.learn(&xs, t, 2.0);
            prop_assert_eq!(LinearModel::from_bytes(&m.to_bytes()), Some(m));
        }
    }

    /// Issue 23: rewards of ±1e308 turned the state into NaN/inf and the model predicted 0 for
    /// ever after. Such an example is now skipped whole, and learning goes on.
    #[test]
    fn issue_23_an_update_never_leaves_non_finite_state() {
        let x = [(1, 1.0), (7, 0.5), (9, -2.0)];
        let mut m = LinearModel::new(8, 1.0);
        m.learn(&x, 0.5, 1.0);
        let before = m.clone();
        for target in [
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e30,
            -1e30,
            f32::MAX,
        ] {
            m.learn(&x, target, 1.0);
            assert_eq!(m, before, "target {target} changed the model");
        }
        m.learn(&x, 0.5, f32::NAN);
        m.learn(&[(1, f32::INFINITY)], 0.5, 1.0);
        assert_eq!(m, before);
        for _ in 0..50 {
            m.learn(&x, 1.0, 1.0);
        }
        assert!((m.predict(&x) - 1.0).abs() < 0.05, "{}", m.predict(&x));
        assert!(
            m.weights
                .iter()
                .chain(&m.grad_sq)
                .chain(&m.precision)
                .all(|v| v.is_finite())
        );
    }

    #[test]
    fn tables_are_allocated_by_the_first_update() {
        let mut m = LinearModel::new(18, 1.0);
        assert_eq!(m.heap_bytes(), 0);
        assert_eq!(m.predict(&[(3, 1.0)]), 0.0);
        assert_eq!(m.uncertainty(&[(3, 2.0)]), 4.0);
        assert_eq!(m.weight(3), 0.0);
        assert_eq!(
            LinearModel::from_bytes(&m.to_bytes()).map(|b| b.updates()),
            Some(0)
        );
        m.learn(&[(3, 1.0)], 1.0, 1.0);
        assert_eq!(m.heap_bytes(), 12 << 18);
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert!(LinearModel::from_bytes(b"nope").is_none());
        let mut b = LinearModel::new(4, 0.5).to_bytes();
        b.push(0);
        assert!(LinearModel::from_bytes(&b).is_none());
    }
}
