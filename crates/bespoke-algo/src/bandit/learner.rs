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
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    bits: u8,
    learning_rate: f32,
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
    /// A zero model with `2^bits` weights.
    pub fn new(bits: u8, learning_rate: f32) -> Self {
        let n = 1usize << bits;
        Self {
            bits,
            learning_rate,
            weights: vec![0.0; n],
            grad_sq: vec![0.0; n],
            precision: vec![0.0; n],
            updates: 0,
            norm_sum: 0.0,
        }
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
        self.weights[index as usize]
    }

    /// Predicted reward of a sparse example.
    #[inline]
    pub fn predict(&self, x: &[(u32, f32)]) -> f32 {
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
            s += v * v / (1.0 + self.precision[i as usize]);
        }
        s
    }

    /// Learns that `x` earned `target`, with importance weight `importance` (1 for an
    /// ordinary example).
    pub fn learn(&mut self, x: &[(u32, f32)], target: f32, importance: f32) {
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
        self.updates += 1;
        self.norm_sum += x.iter().map(|&(_, v)| (v * v) as f64).sum::<f64>();
        let rate =
            (self.learning_rate as f64 / (self.norm_sum / self.updates as f64).max(1e-12)) as f32;
        let err = self.predict(x) - target;
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
                self.weights[i] -= err * fraction * rate / gs.sqrt() * v;
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

    #[test]
    fn bad_bytes_are_refused() {
        assert!(LinearModel::from_bytes(b"nope").is_none());
        let mut b = LinearModel::new(4, 0.5).to_bytes();
        b.push(0);
        assert!(LinearModel::from_bytes(&b).is_none());
    }
}
