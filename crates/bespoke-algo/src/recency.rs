//! Recency by position: a user's latest interactions weigh more than their older ones.
//!
//! Counted in interactions rather than time, because tastes move with what a user does, not
//! with the calendar: someone who rates forty films in an evening has moved on by the last
//! one, someone who buys twice a year has not. An interaction followed by `age` later ones of
//! the same user is multiplied by `floor + (1 − floor) · 2^(−age / half_life)`.

use serde::{Deserialize, Serialize};

/// Position-based recency weighting (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recency {
    /// Later interactions after which an interaction's extra weight halves; 0 turns it off.
    pub half_life: f32,
    /// Weight an interaction keeps however old (0 to 1).
    pub floor: f32,
}

impl Default for Recency {
    fn default() -> Self {
        Self::OFF
    }
}

impl Recency {
    /// No recency weighting.
    pub const OFF: Recency = Recency {
        half_life: 0.0,
        floor: 1.0,
    };

    /// Whether it changes anything.
    pub fn is_on(&self) -> bool {
        self.half_life > 0.0 && self.floor < 1.0
    }

    /// The multiplier of an interaction followed by `age` later ones.
    pub fn factor(&self, age: usize) -> f32 {
        if !self.is_on() {
            return 1.0;
        }
        let floor = self.floor.clamp(0.0, 1.0);
        floor + (1.0 - floor) * (-(age as f32) / self.half_life).exp2()
    }

    /// Multipliers of one user's interactions given their times (any order): the latest gets
    /// 1; ties keep their input order (the later index counts as later).
    pub fn factors(&self, times: &[i64]) -> Vec<f32> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&k| (times[k], k));
        let mut out = vec![1.0; times.len()];
        let n = times.len();
        for (p, &k) in order.iter().enumerate() {
            out[k] = self.factor(n - 1 - p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_latest_counts_fully_and_weight_halves_towards_the_floor() {
        let r = Recency {
            half_life: 2.0,
            floor: 0.2,
        };
        assert_eq!(r.factor(0), 1.0);
        assert!((r.factor(2) - 0.6).abs() < 1e-6);
        assert_eq!(
            r.factors(&[30, 10, 20]),
            vec![1.0, r.factor(2), r.factor(1)]
        );
        assert_eq!(Recency::OFF.factors(&[3, 1, 2]), vec![1.0; 3]);
    }

    proptest! {
        #[test]
        fn factors_never_increase_with_age_and_stay_in_range(
            half_life in 0.1f32..100.0, floor in 0.0f32..1.0, age in 0usize..10_000,
        ) {
            let r = Recency { half_life, floor };
            let (now, later) = (r.factor(age), r.factor(age + 1));
            prop_assert!(later <= now);
            prop_assert!(later >= floor - 1e-6 && now <= 1.0);
        }
    }
}
