//! Off-policy evaluation: what would another policy have earned on the decisions we logged?
//!
//! Every logged decision carries the probability `μ(a_t|x_t)` with which its action was chosen.
//! For a target policy π with probabilities `π(a|x_t)` and a reward model `q̂(x, a)`:
//!
//! - IPS: `V̂ = (1/n) Σ_t w_t r_t` with `w_t = π(a_t|x_t) / μ(a_t|x_t)`;
//! - SNIPS: `V̂ = Σ_t w_t r_t / Σ_t w_t`;
//! - doubly robust: `V̂ = (1/n) Σ_t [Σ_a π(a|x_t) q̂(x_t, a) + w_t (r_t − q̂(x_t, a_t))]`
//!
//! (Dudík, Langford and Li 2011; Swaminathan and Joachims 2015). Confidence intervals are normal
//! approximations from the empirical variance of the per-decision terms (the delta method for
//! SNIPS). Candidate configurations are *replayed*: each learns from the logs in order and, at
//! every decision, is scored on what it would have done before learning from it (progressive
//! validation), so no estimate uses a model that has already seen its own test decision.

use rayon::prelude::*;
use serde::Serialize;

use super::{Learner, LearnerConfig, PreparedAction, PreparedContext, RawFeature};
use crate::Rng;

/// One logged decision, as the evaluator needs it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// Context features.
    pub context: Vec<RawFeature>,
    /// The actions offered: id and features.
    pub actions: Vec<(String, Vec<RawFeature>)>,
    /// Index of the chosen action.
    pub chosen: usize,
    /// Probability with which it was chosen.
    pub probability: f64,
    /// Reward observed.
    pub reward: f64,
    /// Index of the caller's baseline action, if one was given.
    pub baseline: Option<usize>,
}

/// A logged decision with its features hashed once for every replay.
#[derive(Clone, Debug)]
pub struct Prepared {
    context: PreparedContext,
    actions: Vec<PreparedAction>,
    chosen: usize,
    probability: f64,
    reward: f64,
    baseline: Option<usize>,
}

impl Prepared {
    /// Hashes one logged decision.
    pub fn new(log: &Logged) -> Self {
        Self {
            context: PreparedContext::new(&log.context),
            actions: log
                .actions
                .iter()
                .map(|(id, f)| PreparedAction::new(id, f))
                .collect(),
            chosen: log.chosen,
            probability: log.probability,
            reward: log.reward,
            baseline: log.baseline,
        }
    }
}

/// One decision's part in an estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Observed reward.
    pub reward: f64,
    /// Logging probability of the chosen action.
    pub logged: f64,
    /// Target policy's probability of the chosen action.
    pub target: f64,
    /// Reward model's prediction for the chosen action.
    pub q_chosen: f64,
    /// Reward model's expected reward under the target policy, `Σ_a π(a|x) q̂(x, a)`.
    pub q_target: f64,
}

/// An estimate with its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = EvaluationEstimate))]
pub struct Estimate {
    /// Estimated value (mean reward per decision).
    pub value: f64,
    /// Standard error.
    pub std_error: f64,
    /// 95% confidence interval (normal approximation).
    #[cfg_attr(feature = "openapi", schema(min_items = 2, max_items = 2))]
    pub ci95: [f64; 2],
}

impl Estimate {
    fn new(value: f64, std_error: f64) -> Self {
        Self {
            value,
            std_error,
            ci95: [value - 1.96 * std_error, value + 1.96 * std_error],
        }
    }
}

/// IPS, SNIPS and DR estimates of one policy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = EvaluationEstimates))]
pub struct Estimates {
    /// Decisions used.
    pub decisions: usize,
    /// Inverse propensity scoring.
    pub ips: Estimate,
    /// Self-normalised IPS.
    pub snips: Estimate,
    /// Doubly robust.
    pub dr: Estimate,
    /// Self-normalised doubly robust: the reward model's estimate plus the SNIPS correction,
    /// `(1/n) Σ_t Σ_a π q̂ + Σ_t w_t (r_t − q̂_t) / Σ_t w_t`; steadier when a few weights are
    /// huge.
    pub sndr: Estimate,
    /// Kish's effective sample size of the importance weights, `(Σw)² / Σw²`.
    pub effective_sample_size: f64,
}

/// Mean and standard error of the mean.
fn mean_se(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = xs.clone().count() as f64;
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mean = xs.clone().sum::<f64>() / n;
    if n < 2.0 {
        return (mean, 0.0);
    }
    let var = xs.map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// IPS, SNIPS and DR from per-decision samples.
pub fn estimate(samples: &[Sample]) -> Estimates {
    let w = |s: &Sample| s.target / s.logged;
    let (ips, ips_se) = mean_se(samples.iter().map(|s| w(s) * s.reward));
    let (dr, dr_se) = mean_se(
        samples
            .iter()
            .map(|s| s.q_target + w(s) * (s.reward - s.q_chosen)),
    );
    let sw: f64 = samples.iter().map(w).sum();
    let sw2: f64 = samples.iter().map(|s| w(s) * w(s)).sum();
    let snips = if sw > 0.0 {
        samples.iter().map(|s| w(s) * s.reward).sum::<f64>() / sw
    } else {
        0.0
    };
    // Delta method: the influence of decision t is w_t (r_t − V̂) / mean(w).
    let snips_se = if sw > 0.0 {
        samples
            .iter()
            .map(|s| (w(s) * (s.reward - snips)).powi(2))
            .sum::<f64>()
            .sqrt()
            / sw
    } else {
        0.0
    };
    let (dm, dm_se) = mean_se(samples.iter().map(|s| s.q_target));
    let (sndr, sndr_se) = if sw > 0.0 {
        let corr = samples
            .iter()
            .map(|s| w(s) * (s.reward - s.q_chosen))
            .sum::<f64>()
            / sw;
        let spread = samples
            .iter()
            .map(|s| (w(s) * (s.reward - s.q_chosen - corr)).powi(2))
            .sum::<f64>()
            .sqrt()
            / sw;
        (dm + corr, (dm_se * dm_se + spread * spread).sqrt())
    } else {
        (dm, dm_se)
    };
    Estimates {
        decisions: samples.len(),
        ips: Estimate::new(ips, ips_se),
        snips: Estimate::new(snips, snips_se),
        dr: Estimate::new(dr, dr_se),
        sndr: Estimate::new(sndr, sndr_se),
        effective_sample_size: if sw2 > 0.0 { sw * sw / sw2 } else { 0.0 },
    }
}

/// The reward model's predictions for every action of every decision, each made before the
/// model learned from that decision, and its mean squared error on the chosen actions.
pub fn reward_model(
    config: &LearnerConfig,
    logs: &[Prepared],
    ignore: Vec<String>,
) -> (Vec<Vec<f32>>, f64) {
    let mut learner = Learner::ignoring(config.clone(), ignore);
    let mut out = Vec::with_capacity(logs.len());
    let mut sq = 0.0;
    // Predictions are kept within the rewards seen in the logs: a linear model can stray far
    // outside them on actions it has hardly seen, and DR sums its predictions over all actions.
    let lo = logs.iter().map(|l| l.reward).fold(f64::INFINITY, f64::min) as f32;
    let hi = logs
        .iter()
        .map(|l| l.reward)
        .fold(f64::NEG_INFINITY, f64::max) as f32;
    for log in logs {
        let (mut q, _) = learner.score(&log.context, &log.actions);
        for v in &mut q {
            *v = v.clamp(lo, hi);
        }
        let e = q[log.chosen] as f64 - log.reward;
        sq += e * e;
        let x = learner.vector(&log.context, &log.actions[log.chosen]);
        learner.learn(&x, log.reward as f32);
        out.push(q);
    }
    let mse = if logs.is_empty() {
        0.0
    } else {
        sq / logs.len() as f64
    };
    (out, mse)
}

/// Replays a candidate configuration on the logs: its probabilities for every decision, each
/// computed before it learned from that decision.
pub fn replay(config: &LearnerConfig, logs: &[Prepared], seed: u64) -> Vec<Vec<f64>> {
    let mut learner = Learner::new(config.clone());
    let mut rng = Rng::seed_from_u64(seed);
    logs.iter()
        .map(|log| {
            let (pred, unc) = learner.score(&log.context, &log.actions);
            let p = learner.distribution(&pred, &unc, &mut rng);
            let x = learner.vector(&log.context, &log.actions[log.chosen]);
            learner.learn(&x, log.reward as f32);
            p
        })
        .collect()
}

/// Estimates for a policy given by its probabilities on each decision (`None`: the decision
/// does not count, e.g. it had no baseline).
pub fn evaluate(
    logs: &[Prepared],
    q: &[Vec<f32>],
    policy: impl Fn(usize, &Prepared) -> Option<Vec<f64>>,
) -> Estimates {
    let samples: Vec<Sample> = logs
        .iter()
        .enumerate()
        .filter_map(|(t, log)| {
            let pi = policy(t, log)?;
            Some(Sample {
                reward: log.reward,
                logged: log.probability,
                target: pi[log.chosen],
                q_chosen: q[t][log.chosen] as f64,
                q_target: pi.iter().zip(&q[t]).map(|(&p, &v)| p * v as f64).sum(),
            })
        })
        .collect();
    estimate(&samples)
}

/// A policy's estimated value.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = EvaluationPolicy))]
pub struct PolicyReport {
    /// `online` (what was logged), `baseline`, `uniform` or a candidate's name.
    pub policy: String,
    /// The candidate's configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<LearnerConfig>,
    /// The estimates.
    #[serde(flatten)]
    pub estimates: Estimates,
}

/// How much a namespace helps the reward model.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = FeatureImportance))]
pub struct Importance {
    /// Namespace.
    pub namespace: String,
    /// Increase of the reward model's progressive mean squared error without it.
    pub loss_increase: f64,
    /// The same relative to the full model's error.
    pub relative: f64,
}

/// The whole evaluation of a loop's logs.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Evaluation))]
pub struct Report {
    /// Decisions evaluated.
    pub decisions: usize,
    /// Mean reward actually observed.
    pub observed_reward: f64,
    /// Each policy, the online one first.
    pub policies: Vec<PolicyReport>,
    /// The candidate with the highest doubly robust estimate, if it beats the current
    /// configuration's estimate.
    pub best: Option<String>,
    /// Whether the best candidate's DR interval lies wholly above the current one's estimate.
    pub significant: bool,
    /// Drop-one feature importance per namespace, largest first.
    pub feature_importance: Vec<Importance>,
    /// Progressive mean squared error of the reward model with every namespace.
    pub reward_model_mse: f64,
}

/// Candidate configurations around `current`: other learning rates, exploration policies and
/// interaction terms.
pub fn candidates(current: &LearnerConfig) -> Vec<(String, LearnerConfig)> {
    use super::Exploration as E;
    let mut out = vec![("current".to_owned(), current.clone())];
    let mut add = |name: String, c: LearnerConfig| {
        if !out.iter().any(|(_, o)| *o == c) {
            out.push((name, c));
        }
    };
    add(
        "current_greedy".into(),
        LearnerConfig {
            exploration: E::Greedy,
            ..current.clone()
        },
    );
    for lr in [0.25f32, 0.5, 2.0, 4.0] {
        add(
            format!("learning_rate={lr}"),
            LearnerConfig {
                learning_rate: lr,
                ..current.clone()
            },
        );
    }
    for (name, e) in [
        ("epsilon_greedy(0.05)", E::EpsilonGreedy { epsilon: 0.05 }),
        ("epsilon_greedy(0.2)", E::EpsilonGreedy { epsilon: 0.2 }),
        ("softmax(10)", E::Softmax { lambda: 10.0 }),
        ("squarecb(10,0.5)", E::default()),
        (
            "thompson(0.3)",
            E::Thompson {
                scale: 0.3,
                draws: 64,
            },
        ),
    ] {
        add(
            format!("exploration={name}"),
            LearnerConfig {
                exploration: e,
                ..current.clone()
            },
        );
    }
    for (name, inter) in [
        ("none", vec![]),
        (
            "context×action",
            vec![["context".to_owned(), "action".to_owned()]],
        ),
    ] {
        add(
            format!("interactions={name}"),
            LearnerConfig {
                interactions: inter,
                ..current.clone()
            },
        );
    }
    out
}

/// Evaluates the online policy, the baseline, uniform random and every candidate on `logs`
/// (in decision order), and ranks the namespaces by drop-one importance.
pub fn report(
    logs: &[Logged],
    current: &LearnerConfig,
    candidates: &[(String, LearnerConfig)],
    seed: u64,
) -> Report {
    let prepared: Vec<Prepared> = logs.par_iter().map(Prepared::new).collect();
    let (q, mse) = reward_model(current, &prepared, Vec::new());
    let mut policies = vec![
        PolicyReport {
            policy: "online".into(),
            config: None,
            estimates: evaluate(&prepared, &q, |_, log| {
                let mut p = vec![0.0; log.actions.len()];
                p[log.chosen] = log.probability;
                Some(p)
            }),
        },
        PolicyReport {
            policy: "uniform".into(),
            config: None,
            estimates: evaluate(&prepared, &q, |_, log| {
                let k = log.actions.len();
                Some(vec![1.0 / k as f64; k])
            }),
        },
    ];
    // The online policy's DR terms: q̂ at the chosen action only, which is the on-policy mean.
    if let Some(online) = policies.first_mut() {
        let samples: Vec<Sample> = prepared
            .iter()
            .map(|log| Sample {
                reward: log.reward,
                logged: log.probability,
                target: log.probability,
                q_chosen: 0.0,
                q_target: 0.0,
            })
            .collect();
        online.estimates = estimate(&samples);
    }
    if prepared.iter().any(|l| l.baseline.is_some()) {
        policies.push(PolicyReport {
            policy: "baseline".into(),
            config: None,
            estimates: evaluate(&prepared, &q, |_, log| {
                let b = log.baseline?;
                let mut p = vec![0.0; log.actions.len()];
                p[b] = 1.0;
                Some(p)
            }),
        });
    }
    let replays: Vec<PolicyReport> = candidates
        .par_iter()
        .map(|(name, config)| {
            let pi = replay(config, &prepared, seed);
            PolicyReport {
                policy: name.clone(),
                config: Some(config.clone()),
                estimates: evaluate(&prepared, &q, |t, _| Some(pi[t].clone())),
            }
        })
        .collect();
    let current_dr = replays
        .iter()
        .find(|r| r.policy == "current")
        .map(|r| r.estimates.dr.value);
    let best = replays
        .iter()
        .filter(|r| r.policy != "current")
        .max_by(|a, b| a.estimates.dr.value.total_cmp(&b.estimates.dr.value));
    let (best, significant) = match (best, current_dr) {
        (Some(b), Some(c)) if b.estimates.dr.value > c => {
            (Some(b.policy.clone()), b.estimates.dr.ci95[0] > c)
        }
        _ => (None, false),
    };
    policies.extend(replays);

    let mut namespaces: Vec<String> = logs
        .iter()
        .flat_map(|l| {
            l.context
                .iter()
                .chain(l.actions.iter().flat_map(|a| a.1.iter()))
                .map(|f| f.namespace.clone())
        })
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let mut feature_importance: Vec<Importance> = namespaces
        .par_iter()
        .map(|ns| {
            let (_, without) = reward_model(current, &prepared, vec![ns.clone()]);
            Importance {
                namespace: ns.clone(),
                loss_increase: without - mse,
                relative: if mse > 0.0 {
                    (without - mse) / mse
                } else {
                    0.0
                },
            }
        })
        .collect();
    feature_importance.sort_by(|a, b| b.loss_increase.total_cmp(&a.loss_increase));
    Report {
        decisions: logs.len(),
        observed_reward: if logs.is_empty() {
            0.0
        } else {
            logs.iter().map(|l| l.reward).sum::<f64>() / logs.len() as f64
        },
        policies,
        best,
        significant,
        feature_importance,
        reward_model_mse: mse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(reward: f64, logged: f64, target: f64) -> Sample {
        Sample {
            reward,
            logged,
            target,
            q_chosen: 0.0,
            q_target: 0.0,
        }
    }

    #[test]
    fn estimators_match_hand_computed_values() {
        let samples = [s(1.0, 0.5, 1.0), s(0.0, 0.5, 0.0), s(1.0, 0.25, 0.5)];
        let e = estimate(&samples);
        // w = 2, 0, 2; IPS = (2 + 0 + 2) / 3; SNIPS = 4 / 4.
        assert!((e.ips.value - 4.0 / 3.0).abs() < 1e-12);
        assert!((e.snips.value - 1.0).abs() < 1e-12);
        // With q̂ = 0 DR equals IPS, and self-normalised DR equals SNIPS.
        assert!((e.dr.value - e.ips.value).abs() < 1e-12);
        assert!((e.sndr.value - e.snips.value).abs() < 1e-12);
        assert!((e.effective_sample_size - 2.0).abs() < 1e-12);
        assert!(e.ips.ci95[0] < e.ips.value && e.ips.value < e.ips.ci95[1]);
    }

    #[test]
    fn on_policy_estimates_are_the_mean_reward() {
        let samples: Vec<Sample> = (0..100)
            .map(|i| s((i % 3 == 0) as u8 as f64, 0.3, 0.3))
            .collect();
        let e = estimate(&samples);
        assert!((e.ips.value - 0.34).abs() < 1e-12);
        assert!((e.snips.value - 0.34).abs() < 1e-12);
    }

    /// Uniform logs of a known environment: the estimates of a fixed policy bracket its true
    /// value, and a perfect reward model makes DR exact in expectation with a smaller error.
    #[test]
    fn estimates_recover_a_known_policy_value() {
        let mut rng = Rng::seed_from_u64(9);
        let k = 4;
        let truth = |x: usize, a: usize| if a == x { 0.8 } else { 0.1 };
        let mut ips = Vec::new();
        let mut dr = Vec::new();
        for _ in 0..20_000 {
            let x = rng.below(k as u64) as usize;
            let a = rng.below(k as u64) as usize;
            let r = if rng.f64() < truth(x, a) { 1.0 } else { 0.0 };
            // Target: always action (x + 1) % k, whose true value is 0.1.
            let target = if a == (x + 1) % k { 1.0 } else { 0.0 };
            ips.push(s(r, 1.0 / k as f64, target));
            dr.push(Sample {
                q_chosen: truth(x, a),
                q_target: truth(x, (x + 1) % k),
                ..s(r, 1.0 / k as f64, target)
            });
        }
        let e = estimate(&ips);
        for v in [e.ips, e.snips] {
            assert!(v.ci95[0] < 0.1 && 0.1 < v.ci95[1], "{v:?}");
        }
        let d = estimate(&dr).dr;
        assert!(d.ci95[0] < 0.1 && 0.1 < d.ci95[1], "{d:?}");
        let sn = estimate(&dr).sndr;
        assert!(sn.ci95[0] < 0.1 && 0.1 < sn.ci95[1], "{sn:?}");
        assert!(d.std_error < e.ips.std_error);
    }
}
