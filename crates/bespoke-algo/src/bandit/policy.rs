//! Exploration policies: from predicted rewards to a probability distribution over actions,
//! and the action drawn from it.

use serde::{Deserialize, Serialize};

use crate::Rng;

/// How a loop explores. Every policy yields an explicit probability for each action, which is
/// logged with the decision: off-policy evaluation needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Exploration {
    /// Always the best predicted action (no exploration; for evaluation and apprentice mode).
    Greedy,
    /// The best action with probability `1 - epsilon`, otherwise uniform.
    EpsilonGreedy {
        /// Share of uniformly random choices, in `[0, 1]`.
        #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
        epsilon: f64,
    },
    /// `p_a ∝ exp(lambda · score_a)`.
    Softmax {
        /// Inverse temperature, `≥ 0`; 0 is uniform.
        #[cfg_attr(feature = "openapi", schema(minimum = 0))]
        lambda: f64,
    },
    /// SquareCB (Foster and Rakhlin, 2020): `p_a = 1 / (K + γ (ŝ_best − ŝ_a))` for every `a`
    /// other than the best, which takes the rest; `γ = gamma_scale · t^gamma_exponent` grows
    /// with the number of examples `t`. Its regret bound holds for any online regression oracle.
    SquareCb {
        /// Scale of γ (Vowpal Wabbit's default: 10).
        #[cfg_attr(feature = "openapi", schema(minimum = 0))]
        gamma_scale: f64,
        /// Exponent of `t` in γ (Vowpal Wabbit's default: 0.5).
        #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
        gamma_exponent: f64,
    },
    /// Linear Thompson sampling with a diagonal Gaussian posterior: each action's score is
    /// drawn from `N(ŝ_a, scale² · Σ x_i² / (1 + n_i))` and the best draw is chosen; the
    /// probabilities are estimated from `draws` further draws.
    Thompson {
        /// Posterior scale `v`, `> 0`.
        #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0))]
        scale: f64,
        /// Draws used to estimate the probabilities (4 to 4096).
        #[cfg_attr(feature = "openapi", schema(minimum = 4, maximum = 4096))]
        draws: u32,
    },
}

impl Default for Exploration {
    fn default() -> Self {
        Exploration::SquareCb {
            gamma_scale: 10.0,
            gamma_exponent: 0.5,
        }
    }
}

impl Exploration {
    /// Checks the parameters; the error names the field.
    pub fn validate(&self) -> Result<(), super::InvalidParam> {
        let bad = |f: &str, m: &str| Err(super::InvalidParam::new(f, m));
        match *self {
            Exploration::Greedy => Ok(()),
            Exploration::EpsilonGreedy { epsilon } if !(0.0..=1.0).contains(&epsilon) => {
                bad("epsilon", "must be between 0 and 1")
            }
            Exploration::Softmax { lambda } if !(lambda.is_finite() && lambda >= 0.0) => {
                bad("lambda", "must be a finite number >= 0")
            }
            Exploration::SquareCb {
                gamma_scale,
                gamma_exponent,
            } if !(gamma_scale.is_finite()
                && gamma_scale >= 0.0
                && (0.0..=1.0).contains(&gamma_exponent)) =>
            {
                bad(
                    "gamma_scale",
                    "gamma_scale must be >= 0 and gamma_exponent between 0 and 1",
                )
            }
            Exploration::Thompson { scale, draws }
                if !(scale.is_finite() && scale > 0.0 && (4..=4096).contains(&draws)) =>
            {
                bad("scale", "scale must be > 0 and draws between 4 and 4096")
            }
            _ => Ok(()),
        }
    }

    /// Whether the policy needs each action's uncertainty.
    pub fn needs_uncertainty(&self) -> bool {
        matches!(self, Exploration::Thompson { .. })
    }

    /// Chooses among actions with predicted rewards `predicted` (and, for Thompson sampling,
    /// variance factors `uncertainty`), after `examples` examples learned.
    pub fn choose(
        &self,
        predicted: &[f32],
        uncertainty: &[f32],
        examples: u64,
        rng: &mut Rng,
    ) -> Choice {
        assert!(!predicted.is_empty(), "choose needs at least one action");
        if let Exploration::Thompson { scale, draws } = *self {
            let sd: Vec<f64> = uncertainty
                .iter()
                .map(|&u| scale * (u.max(0.0) as f64).sqrt())
                .collect();
            let draw = |rng: &mut Rng, out: &mut Vec<f64>| {
                out.clear();
                out.extend(
                    predicted
                        .iter()
                        .zip(&sd)
                        .map(|(&p, &s)| p as f64 + s * rng.normal()),
                );
                argmax(out)
            };
            let mut sample = Vec::with_capacity(predicted.len());
            let chosen = draw(rng, &mut sample);
            let exploration: Vec<f32> = sample
                .iter()
                .zip(predicted)
                .map(|(&s, &p)| (s - p as f64) as f32)
                .collect();
            let mut wins = vec![0u32; predicted.len()];
            wins[chosen] += 1;
            let mut scratch = Vec::with_capacity(predicted.len());
            for _ in 0..draws {
                wins[draw(rng, &mut scratch)] += 1;
            }
            let total = (draws + 1) as f64;
            return Choice {
                probabilities: wins.iter().map(|&w| w as f64 / total).collect(),
                exploration,
                chosen,
            };
        }
        let probabilities = self.probabilities(predicted, examples);
        let chosen = sample(&probabilities, rng);
        Choice {
            probabilities,
            exploration: vec![0.0; predicted.len()],
            chosen,
        }
    }

    /// The exact distribution for every policy but Thompson sampling (for which it is the
    /// greedy one: use [`Exploration::choose`]).
    pub fn probabilities(&self, predicted: &[f32], examples: u64) -> Vec<f64> {
        let k = predicted.len();
        let best = argmax_f32(predicted);
        let mut p = vec![0.0; k];
        match *self {
            Exploration::Greedy | Exploration::Thompson { .. } => p[best] = 1.0,
            Exploration::EpsilonGreedy { epsilon } => {
                p.fill(epsilon / k as f64);
                p[best] += 1.0 - epsilon;
            }
            Exploration::Softmax { lambda } => {
                let m = predicted[best] as f64;
                let mut z = 0.0;
                for (pa, &s) in p.iter_mut().zip(predicted) {
                    *pa = (lambda * (s as f64 - m)).exp();
                    z += *pa;
                }
                p.iter_mut().for_each(|x| *x /= z);
            }
            Exploration::SquareCb {
                gamma_scale,
                gamma_exponent,
            } => {
                let gamma = gamma_scale * (examples as f64).powf(gamma_exponent);
                let top = predicted[best] as f64;
                let mut rest = 0.0;
                for (a, &s) in predicted.iter().enumerate() {
                    if a != best {
                        p[a] = 1.0 / (k as f64 + gamma * (top - s as f64));
                        rest += p[a];
                    }
                }
                p[best] = 1.0 - rest;
            }
        }
        p
    }
}

/// What a policy chose.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Probability of each action.
    pub probabilities: Vec<f64>,
    /// Exploration term added to each action's predicted reward to give its served score
    /// (the posterior draw's deviation for Thompson sampling, 0 otherwise).
    pub exploration: Vec<f32>,
    /// Index of the chosen action.
    pub chosen: usize,
}

/// Index drawn from `p` (which sums to 1 up to rounding).
pub fn sample(p: &[f64], rng: &mut Rng) -> usize {
    let x = rng.f64() * p.iter().sum::<f64>();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &pi) in p.iter().enumerate() {
        if pi > 0.0 {
            acc += pi;
            last = i;
            if x < acc {
                return i;
            }
        }
    }
    last
}

/// First index of the largest value (NaN never wins).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

fn argmax_f32(v: &[f32]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use proptest::prelude::*;

    fn policies() -> Vec<Exploration> {
        vec![
            Exploration::Greedy,
            Exploration::EpsilonGreedy { epsilon: 0.2 },
            Exploration::Softmax { lambda: 3.0 },
            Exploration::default(),
            Exploration::Thompson {
                scale: 0.5,
                draws: 64,
            },
        ]
    }

    proptest! {
        /// Every policy gives a distribution: non-negative, summing to 1, and the chosen action
        /// has positive probability.
        #[test]
        fn distributions_are_valid(
            scores in prop::collection::vec(-5.0f32..5.0, 1..60),
            t in 0u64..100_000,
            seed in any::<u64>(),
        ) {
            let unc: Vec<f32> = scores.iter().map(|s| s.abs() / 4.0).collect();
            for pol in policies() {
                let mut rng = Rng::seed_from_u64(seed);
                let c = pol.choose(&scores, &unc, t, &mut rng);
                let sum: f64 = c.probabilities.iter().sum();
                prop_assert!((sum - 1.0).abs() < 1e-9, "{pol:?}: sum {sum}");
                prop_assert!(c.probabilities.iter().all(|&p| p >= 0.0));
                prop_assert!(c.probabilities[c.chosen] > 0.0);
            }
        }
    }

    #[test]
    fn squarecb_matches_the_formula() {
        let p = Exploration::SquareCb {
            gamma_scale: 10.0,
            gamma_exponent: 0.5,
        }
        .probabilities(&[1.0, 0.5, 0.0], 100);
        // gamma = 10 * 100^0.5 = 100; p1 = 1/(3 + 50), p2 = 1/(3 + 100).
        assert!((p[1] - 1.0 / 53.0).abs() < 1e-12);
        assert!((p[2] - 1.0 / 103.0).abs() < 1e-12);
        assert!((p[0] - (1.0 - 1.0 / 53.0 - 1.0 / 103.0)).abs() < 1e-12);
    }

    #[test]
    fn epsilon_greedy_frequencies_match_probabilities() {
        let pol = Exploration::EpsilonGreedy { epsilon: 0.3 };
        let mut rng = Rng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[pol.choose(&[0.1, 0.9, 0.2], &[], 0, &mut rng).chosen] += 1;
        }
        // p = (0.1, 0.8, 0.1): 3 sigma of a binomial with n = 30k is under 0.006.
        assert!(
            (counts[1] as f64 / 30_000.0 - 0.8).abs() < 0.01,
            "{counts:?}"
        );
        assert!(
            (counts[0] as f64 / 30_000.0 - 0.1).abs() < 0.01,
            "{counts:?}"
        );
    }

    #[test]
    fn thompson_explores_uncertain_actions_more() {
        let pol = Exploration::Thompson {
            scale: 1.0,
            draws: 256,
        };
        let mut rng = Rng::seed_from_u64(3);
        let sure = pol.choose(&[0.5, 0.4], &[0.0001, 0.0001], 0, &mut rng);
        let unsure = pol.choose(&[0.5, 0.4], &[1.0, 1.0], 0, &mut rng);
        assert!(sure.probabilities[1] < 0.05, "{sure:?}");
        assert!(unsure.probabilities[1] > 0.3, "{unsure:?}");
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            Exploration::EpsilonGreedy { epsilon: 1.5 }
                .validate()
                .unwrap_err()
                .field,
            "epsilon"
        );
        assert!(Exploration::default().validate().is_ok());
    }
}
