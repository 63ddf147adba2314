//! `bespoke federated-sim`: federated training of iALS item factors with simulated devices
//! on one machine, against the same model trained centrally (docs/federated.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bespoke_algo::als::{Als, AlsParams};
use bespoke_algo::eval::{K_MAX, MetricSums, Row, temporal_split};
use bespoke_algo::{Csr, Rng};
use bespoke_client::federated::{self, Layout, StepParams};
use rayon::prelude::*;
use serde_json::json;

/// Arguments of `bespoke federated-sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct FederatedSimArgs {
    /// MovieLens `u.data` (user, item, rating, time; tab-separated).
    #[arg(long, default_value = "../shared/data/ml-100k/u.data")]
    pub data: PathBuf,
    /// Ratings at or above this count as one positive interaction.
    #[arg(long, default_value_t = 4.0)]
    pub min_rating: f64,
    /// Factor dimension (the same for the central model).
    #[arg(long, default_value_t = 32)]
    pub factors: usize,
    /// `λ` of both models.
    #[arg(long, default_value_t = 10.0)]
    pub regularization: f64,
    /// Confidence slope `α` of both models.
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Central iALS iterations.
    #[arg(long, default_value_t = 15)]
    pub central_iterations: usize,
    /// Federated rounds.
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// Expected clients per round (each user takes part with probability m / users).
    #[arg(long, default_value_t = 500)]
    pub clients_per_round: usize,
    /// Step length `η`.
    #[arg(long, default_value_t = 1.0)]
    pub learning_rate: f64,
    /// Share `κ` of the curvature bound.
    #[arg(long, default_value_t = 1.0)]
    pub curvature: f64,
    /// Clip norm `C` (none: no clipping).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Central noise multiplier `σ`: Gaussian noise of std `σ·C` on every coordinate of the sum.
    #[arg(long, default_value_t = 0.0)]
    pub noise_multiplier: f64,
    /// Privacy budget ε at δ = 1/users: the central noise multiplier is the smallest that
    /// keeps all rounds within it (overrides --noise-multiplier).
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// Damping `μ` in units of the noise's std on the scaled sum.
    #[arg(long, default_value_t = 0.0)]
    pub damping: f64,
    /// Items whose curvature sum is below this many noise standard deviations are zeroed.
    #[arg(long, default_value_t = 3.0)]
    pub min_mass_sigmas: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

struct Data {
    n_items: usize,
    /// Per user, `(item, weight)` of their training rows.
    train: Vec<Vec<(u32, f64)>>,
    weights: Csr,
    /// `(user, sorted test items)`.
    eval: Vec<(u32, Vec<u32>)>,
}

fn load(args: &FederatedSimArgs) -> anyhow::Result<Data> {
    let text = std::fs::read_to_string(&args.data).with_context(|| {
        format!(
            "reading {} (MovieLens 100K is expected in ../shared/data/ml-100k)",
            args.data.display()
        )
    })?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || {
            format!(
                "{}: line {}: expected user, item, rating, time",
                args.data.display(),
                n + 1
            )
        };
        anyhow::ensure!(f.len() == 4, bad());
        let rating: f64 = f[2].parse().with_context(bad)?;
        if rating >= args.min_rating {
            rows.push(Row {
                user: f[0].parse().with_context(bad)?,
                item: f[1].parse().with_context(bad)?,
                weight: 1.0,
                timestamp: f[3].parse().with_context(bad)?,
            });
        }
    }
    let (train, test, _) = temporal_split(rows, 0.2, 5);
    let (users, uidx) = crate::eval::dense_ids(train.iter().map(|r| r.user));
    let (items, iidx) = crate::eval::dense_ids(train.iter().map(|r| r.item));
    let triples: Vec<(u32, u32, f32)> = train
        .iter()
        .map(|r| (uidx[&r.user], iidx[&r.item], r.weight as f32))
        .collect();
    let weights = Csr::from_triples(users.len(), items.len(), &triples, false);
    // The fold-in wants one weight per item, as the matrix sums duplicates.
    let per_user = (0..users.len())
        .map(|u| {
            let (cols, vals) = weights.row(u);
            cols.iter()
                .zip(vals)
                .map(|(&i, &w)| (i, w as f64))
                .collect()
        })
        .collect();
    let mut by_user: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for r in &test {
        if let (Some(&u), Some(&i)) = (uidx.get(&r.user), iidx.get(&r.item)) {
            by_user.entry(u).or_default().push(i);
        }
    }
    let eval = by_user
        .into_iter()
        .map(|(u, mut is)| {
            is.sort_unstable();
            is.dedup();
            (u, is)
        })
        .collect();
    Ok(Data {
        n_items: items.len(),
        train: per_user,
        weights,
        eval,
    })
}

/// NDCG@10 (and the rest of the anchors' metrics) of item factors, each evaluated user's
/// vector folded in from their training rows, training items left out of the ranking.
fn evaluate(data: &Data, factors: &[f32], dim: usize, args: &FederatedSimArgs) -> MetricSums {
    let gram = federated::gram_reg(factors, dim, args.regularization);
    data.eval
        .par_iter()
        .fold(
            || MetricSums::new(data.n_items),
            |mut sums, (u, test)| {
                let hist = &data.train[*u as usize];
                let mut ranking = Vec::new();
                if let Some(x) = federated::fold_in(factors, &gram, dim, args.alpha, hist) {
                    let mut seen = vec![false; data.n_items];
                    for &(i, _) in hist {
                        seen[i as usize] = true;
                    }
                    let mut scored: Vec<(f64, u32)> = (0..data.n_items as u32)
                        .filter(|&i| !seen[i as usize])
                        .map(|i| {
                            let y = &factors[i as usize * dim..][..dim];
                            (y.iter().zip(&x).map(|(&a, b)| a as f64 * b).sum(), i)
                        })
                        .collect();
                    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    ranking = scored.iter().take(K_MAX).map(|s| s.1).collect();
                }
                sums.add(&ranking, test);
                sums
            },
        )
        .reduce(
            || MetricSums::new(data.n_items),
            |mut a, b| {
                a.merge(&b);
                a
            },
        )
}

pub(crate) fn run(args: &FederatedSimArgs) -> anyhow::Result<()> {
    let data = load(args)?;
    let d = args.factors;
    let n_users = data.train.len();
    let started = Instant::now();
    let central = Als::fit(
        &data.weights,
        AlsParams {
            factors: d,
            iterations: args.central_iterations,
            regularization: args.regularization as f32,
            alpha: args.alpha as f32,
            seed: args.seed,
            ..AlsParams::default()
        },
        |_| {},
    );
    let central_s = started.elapsed().as_secs_f64();
    let central_ndcg =
        evaluate(&data, central.item_factors().as_slice(), d, args).means()["ndcg@10"];
    println!(
        "{}",
        json!({"central": {"ndcg@10": central_ndcg, "seconds": central_s, "users": n_users, "items": data.n_items}})
    );

    let layout = Layout {
        items: data.n_items,
        dim: d,
    };
    let mut rng = Rng::seed_from_u64(args.seed);
    let mut factors: Vec<f32> = (0..data.n_items * d)
        .map(|_| rng.f64() as f32 * 0.01)
        .collect();
    let q = (args.clients_per_round as f64 / n_users as f64).min(1.0);
    let clip = args.clip.unwrap_or(f64::INFINITY);
    let delta = 1.0 / n_users as f64;
    let sigma = match args.epsilon {
        Some(eps) => bespoke_algo::dp::noise_multiplier_for(q, args.rounds as u64, eps, delta),
        None => args.noise_multiplier,
    };
    let mut accountant = bespoke_algo::dp::RdpAccountant::new();
    println!(
        "{}",
        json!({"noise_multiplier": sigma, "q": q, "delta": delta})
    );
    for round in 1..=args.rounds {
        let t = Instant::now();
        let chosen: Vec<usize> = (0..n_users).filter(|_| rng.f64() < q).collect();
        let gram = federated::gram_reg(&factors, d, args.regularization);
        let norms: Vec<f64> = chosen
            .par_iter()
            .filter_map(|&u| {
                federated::local_update(
                    layout,
                    &factors,
                    &gram,
                    args.alpha,
                    &data.train[u],
                    f64::INFINITY,
                )
                .map(|up| up.norm)
            })
            .collect();
        let mut sorted = norms.clone();
        sorted.sort_by(f64::total_cmp);
        let clipped = norms.iter().filter(|&&n| n > clip).count();
        let mut sum = chosen
            .par_iter()
            .fold(
                || vec![0f64; layout.len()],
                |mut acc, &u| {
                    if let Some(up) = federated::local_update(
                        layout,
                        &factors,
                        &gram,
                        args.alpha,
                        &data.train[u],
                        clip,
                    ) {
                        for (a, v) in acc.iter_mut().zip(&up.vector) {
                            *a += *v as f64;
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f64; layout.len()],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        if sigma > 0.0 {
            let std = sigma * federated::sensitivity(clip);
            let parts = std::env::var("NOISE_PARTS").unwrap_or("gas".into());
            let (gi, ai) = (data.n_items * d, data.n_items * d + d * (d + 1) / 2);
            for (k, a) in sum.iter_mut().enumerate() {
                let part = if k < gi {
                    'g'
                } else if k < ai {
                    'a'
                } else {
                    's'
                };
                let z = std * rng.normal();
                if parts.contains(part) {
                    *a += z;
                }
            }
        }
        federated::server_step(
            layout,
            &mut factors,
            &sum,
            StepParams {
                regularization: args.regularization,
                population: n_users as f64,
                clients: chosen.len() as f64,
                curvature: args.curvature,
                learning_rate: args.learning_rate,
                damping: args.damping * sigma * federated::sensitivity(clip) * n_users as f64
                    / chosen.len() as f64,
                min_curvature: args.min_mass_sigmas * sigma * federated::sensitivity(clip),
            },
        );
        let secs = t.elapsed().as_secs_f64();
        let epsilon = if sigma > 0.0 {
            accountant.compose_subsampled_gaussian(q, sigma, 1);
            accountant.epsilon(delta).0
        } else {
            f64::INFINITY
        };
        let ndcg = evaluate(&data, &factors, d, args).means()["ndcg@10"];
        println!(
            "{}",
            json!({"round": round, "clients": chosen.len(), "norm_p10": sorted[sorted.len() / 10], "norm_p50": sorted[sorted.len() / 2], "norm_p90": sorted[sorted.len() * 9 / 10], "clipped": clipped, "epsilon": epsilon, "ndcg@10": ndcg, "of_central": ndcg / central_ndcg, "seconds": secs})
        );
    }
    Ok(())
}
