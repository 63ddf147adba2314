//! `bespoke federated-sim`: federated training of iALS item factors with simulated devices
//! on one machine, against the same model trained centrally (docs/federated.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bespoke_algo::als::{Als, AlsParams};
use bespoke_algo::dp::{RdpAccountant, noise_multiplier_for};
use bespoke_algo::eval::{K_MAX, MetricSums, Row, temporal_split};
use bespoke_algo::{Csr, Rng, Scored};
use bespoke_client::federated::{self, Layout, StepParams};
use bespoke_client::secagg::{self, ClientKeys};
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
    /// Rounds without noise.
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// Expected clients per round (each user takes part with probability m / users).
    #[arg(long, default_value_t = 500)]
    pub clients_per_round: usize,
    /// Share of a round's clients that drop out after masking (their neighbours reveal the
    /// pairwise seeds).
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f64,
    /// Step length `η`.
    #[arg(long, default_value_t = 1.0)]
    pub learning_rate: f64,
    /// Share `κ` of the curvature bound.
    #[arg(long, default_value_t = 1.0)]
    pub curvature: f64,
    /// Clip norm `C` of the runs without noise (none: no clipping).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Privacy budget ε at δ = 1/users of the central-DP run (0: no such run); its noise
    /// multiplier is the smallest that keeps --dp-rounds rounds within it.
    #[arg(long, default_value_t = 10.0)]
    pub epsilon: f64,
    /// Rounds of the differentially private runs.
    #[arg(long, default_value_t = 10)]
    pub dp_rounds: usize,
    /// Clip norm `C` of the differentially private runs.
    #[arg(long, default_value_t = 3.0)]
    pub dp_clip: f64,
    /// Expected clients per round of the differentially private runs.
    #[arg(long, default_value_t = 1000)]
    pub dp_clients_per_round: usize,
    /// Damping `μ` of the differentially private runs, in units of the noise's std on the
    /// scaled sum.
    #[arg(long, default_value_t = 10.0)]
    pub damping: f64,
    /// Noise multiplier of a local-DP run (each device noises its own update; 0: no such run).
    #[arg(long, default_value_t = 0.0)]
    pub local_noise: f64,
    /// Share of malicious clients: adds runs where they send their update scaled by
    /// --malicious-scale, once with the server clipping each update (plain aggregation) and
    /// once under secure aggregation, where it cannot.
    #[arg(long, default_value_t = 0.0)]
    pub malicious: f64,
    /// Factor malicious clients scale their updates by.
    #[arg(long, default_value_t = 20.0)]
    pub malicious_scale: f64,
    /// Clip norm the server applies in the malicious runs.
    #[arg(long, default_value_t = 10.0)]
    pub malicious_clip: f64,
    /// Draw NDCG@10 per round of every run, against central iALS, into this PNG.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One federated training run.
#[derive(Debug, Clone)]
struct Run {
    name: String,
    rounds: usize,
    clients_per_round: usize,
    /// Devices clip to this.
    clip: f64,
    /// Central noise multiplier.
    sigma: f64,
    /// Local noise multiplier.
    local_sigma: f64,
    /// Damping in noise units.
    damping: f64,
    malicious: f64,
    /// The server sees each update and clips it (no secure aggregation).
    server_clip: Option<f64>,
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
    // Ranked in f64 (the fold-in's precision); `tune::evaluate` reads only the order.
    bespoke_algo::tune::evaluate(data.n_items, &data.eval, |u, _| {
        let hist = &data.train[u];
        let Some(x) = federated::fold_in(factors, &gram, dim, args.alpha, hist) else {
            return Vec::new();
        };
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
        scored
            .iter()
            .take(K_MAX)
            .map(|&(score, idx)| Scored {
                idx,
                score: score as f32,
            })
            .collect()
    })
}

pub(crate) fn run(args: &FederatedSimArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.factors > 0, "--factors must be at least 1");
    anyhow::ensure!(
        (0.0..1.0).contains(&args.dropout) && (0.0..1.0).contains(&args.malicious),
        "--dropout and --malicious are shares in [0, 1)"
    );
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
        json!({"central": {"ndcg@10": central_ndcg, "seconds": central_s, "users": n_users,
            "items": data.n_items, "factors": d}})
    );
    let delta = 1.0 / n_users as f64;
    let clip = args.clip.unwrap_or(f64::INFINITY);
    let base = Run {
        name: "no noise".into(),
        rounds: args.rounds,
        clients_per_round: args.clients_per_round,
        clip,
        sigma: 0.0,
        local_sigma: 0.0,
        damping: 0.0,
        malicious: 0.0,
        server_clip: None,
    };
    let mut runs = vec![base.clone()];
    let q_dp = (args.dp_clients_per_round as f64 / n_users as f64).min(1.0);
    if args.epsilon > 0.0 {
        let sigma = noise_multiplier_for(q_dp, args.dp_rounds as u64, args.epsilon, delta);
        runs.push(Run {
            name: format!("central DP, ε ≤ {}", args.epsilon),
            rounds: args.dp_rounds,
            clients_per_round: args.dp_clients_per_round,
            clip: args.dp_clip,
            sigma,
            damping: args.damping,
            ..base.clone()
        });
    }
    if args.local_noise > 0.0 {
        runs.push(Run {
            name: format!("local DP, σ = {}", args.local_noise),
            rounds: args.dp_rounds,
            clients_per_round: args.dp_clients_per_round,
            clip: args.dp_clip,
            local_sigma: args.local_noise,
            damping: args.damping,
            ..base.clone()
        });
    }
    if args.malicious > 0.0 {
        let pct = (args.malicious * 100.0).round();
        runs.push(Run {
            name: format!(
                "{pct}% malicious ×{}, server clips to {}",
                args.malicious_scale, args.malicious_clip
            ),
            malicious: args.malicious,
            server_clip: Some(args.malicious_clip),
            ..base.clone()
        });
        runs.push(Run {
            name: format!(
                "{pct}% malicious ×{}, secure aggregation",
                args.malicious_scale
            ),
            malicious: args.malicious,
            ..base.clone()
        });
    }
    let mut curves = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        let rows = simulate(args, &data, run, k as u64, central_ndcg)?;
        curves.push((run.name.clone(), rows));
    }
    if let Some(path) = &args.chart {
        crate::chart::federated(path, central_ndcg, &curves)?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// Deterministic 32 bytes for a purpose: device keys and noise seeds of the simulation.
fn bytes(seed: u64, tag: &str, a: u64, b: u64) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::new()
        .chain_update(tag.as_bytes())
        .chain_update(seed.to_le_bytes())
        .chain_update(a.to_le_bytes())
        .chain_update(b.to_le_bytes())
        .finalize()
        .into()
}

/// Runs one configuration; prints and returns one JSON row per round.
fn simulate(
    args: &FederatedSimArgs,
    data: &Data,
    run: &Run,
    run_id: u64,
    central_ndcg: f64,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let d = args.factors;
    let n_users = data.train.len();
    let layout = Layout {
        items: data.n_items,
        dim: d,
    };
    let mut rng = Rng::seed_from_u64(args.seed ^ run_id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut factors: Vec<f32> = (0..data.n_items * d)
        .map(|_| rng.f64() as f32 * 0.01)
        .collect();
    let q = (run.clients_per_round as f64 / n_users as f64).min(1.0);
    let delta = 1.0 / n_users as f64;
    let sensitivity = federated::sensitivity(run.clip);
    let mut accountant = RdpAccountant::new();
    let mut rows = Vec::new();
    for round in 1..=run.rounds as u64 {
        let t = Instant::now();
        let chosen: Vec<usize> = (0..n_users).filter(|_| rng.f64() < q).collect();
        let dropped: Vec<bool> = chosen.iter().map(|_| rng.f64() < args.dropout).collect();
        let evil: Vec<bool> = chosen.iter().map(|_| rng.f64() < run.malicious).collect();
        let gram = federated::gram_reg(&factors, d, args.regularization);
        // Every chosen device computes its update; the malicious ones scale it.
        let updates: Vec<Option<Vec<f32>>> = chosen
            .par_iter()
            .zip(&evil)
            .map(|(&u, &bad)| {
                let mut up = federated::local_update(
                    layout,
                    &factors,
                    &gram,
                    args.alpha,
                    &data.train[u],
                    run.clip,
                )?
                .vector;
                if run.local_sigma > 0.0 {
                    let mut wide: Vec<f64> = up.iter().map(|&v| v as f64).collect();
                    federated::add_noise(
                        &mut wide,
                        run.local_sigma * sensitivity,
                        bytes(args.seed, "local-noise", round, u as u64),
                    );
                    up = wide.iter().map(|&v| v as f32).collect();
                }
                if bad {
                    up.iter_mut()
                        .for_each(|v| *v *= args.malicious_scale as f32);
                }
                Some(up)
            })
            .collect();
        let ids: Vec<u64> = chosen
            .iter()
            .zip(&updates)
            .filter(|(_, up)| up.is_some())
            .map(|(&u, _)| u as u64)
            .collect();
        let by_id: std::collections::HashMap<u64, usize> = chosen
            .iter()
            .enumerate()
            .map(|(k, &u)| (u as u64, k))
            .collect();
        let mut sum: Vec<f64>;
        let (clients, n_dropped, bytes_up, bytes_down);
        if let Some(server_clip) = run.server_clip {
            // Plain aggregation: the server sees every update, so it can clip each.
            sum = vec![0f64; layout.len()];
            let mut n = 0;
            for (k, up) in updates.iter().enumerate() {
                let Some(up) = up else { continue };
                if dropped[k] {
                    continue;
                }
                let body = &up[..layout.len() - 1];
                let norm = body.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let s = if norm > server_clip {
                    server_clip / norm
                } else {
                    1.0
                };
                for (a, &v) in sum.iter_mut().zip(body) {
                    *a += v as f64 * s;
                }
                *sum.last_mut().expect("layout has a weight") +=
                    (up[layout.len() - 1] as f64 * s).min(1.0);
                n += 1;
            }
            clients = n;
            n_dropped = ids.len() - n;
            bytes_up = layout.len() as f64 * 4.0;
            bytes_down = (data.n_items * d * 4) as f64;
        } else {
            let keys: Vec<ClientKeys> = ids
                .iter()
                .map(|&u| ClientKeys::from_secret(bytes(args.seed, "device-key", round, u)))
                .collect();
            let public: std::collections::HashMap<u64, [u8; 32]> = ids
                .iter()
                .zip(&keys)
                .map(|(&u, k)| (u, k.public()))
                .collect();
            let graph = secagg::neighbours(
                round ^ rng.next_u64(),
                &ids,
                secagg::default_degree(ids.len()),
            )?;
            let neighbours_of = |u: u64| -> Vec<(u64, [u8; 32])> {
                graph
                    .neighbours_of(u)
                    .unwrap_or_default()
                    .iter()
                    .map(|v| (*v, public[v]))
                    .collect()
            };
            let masked: Vec<(u64, Vec<u64>)> = ids
                .par_iter()
                .zip(&keys)
                .map(|(&u, key)| {
                    let up = updates[by_id[&u]].as_ref().expect("filtered above");
                    let encoded = secagg::encode(up, secagg::DEFAULT_SCALE_BITS)?;
                    Ok((u, secagg::mask(&encoded, round, u, key, &neighbours_of(u))?))
                })
                .collect::<Result<_, secagg::SecAggError>>()?;
            let mut agg = secagg::Aggregator::new(round, layout.len(), graph.clone());
            for (u, m) in &masked {
                if !dropped[by_id[u]] {
                    agg.add(*u, m)?;
                }
            }
            let gone = agg.dropped();
            let mut reveals = Vec::new();
            let mut revealed = 0;
            for (&u, key) in ids.iter().zip(&keys) {
                let nb = neighbours_of(u);
                if dropped[by_id[&u]] || !nb.iter().any(|(v, _)| gone.contains(v)) {
                    continue;
                }
                let request = agg.reveal_request(u)?;
                let seeds = secagg::reveal(round, u, key, &nb, &request)?;
                revealed += seeds.len();
                reveals.extend(seeds);
            }
            clients = agg.submitted().len();
            n_dropped = gone.len();
            sum = secagg::decode_sum(&agg.finish(reveals)?, secagg::DEFAULT_SCALE_BITS);
            // Up: the public key, the masked vector, the revealed seeds; down: the model,
            // the neighbours' ids and keys.
            let k = secagg::default_degree(ids.len()) as f64;
            bytes_up =
                32.0 + layout.len() as f64 * 8.0 + revealed as f64 * 48.0 / clients.max(1) as f64;
            bytes_down = (data.n_items * d * 4) as f64 + k * 40.0;
        }
        if run.sigma > 0.0 {
            federated::add_noise(
                &mut sum,
                run.sigma * sensitivity,
                bytes(args.seed, "central-noise", run_id, round),
            );
        }
        // Noise on the scaled sum, per coordinate: what the damping is measured in.
        let noise_std = if run.sigma > 0.0 || run.local_sigma > 0.0 {
            (run.sigma.powi(2) + run.local_sigma.powi(2) * clients as f64).sqrt()
                * sensitivity
                * n_users as f64
                / clients.max(1) as f64
        } else {
            0.0
        };
        federated::server_step(
            layout,
            &mut factors,
            &sum,
            StepParams {
                regularization: args.regularization,
                population: n_users as f64,
                clients: clients as f64,
                curvature: args.curvature,
                learning_rate: args.learning_rate,
                damping: run.damping * noise_std,
                min_curvature: 0.0,
            },
        );
        let seconds = t.elapsed().as_secs_f64();
        let epsilon = if run.sigma > 0.0 {
            accountant.compose_subsampled_gaussian(q, run.sigma, 1);
            Some(accountant.epsilon(delta).0)
        } else if run.local_sigma > 0.0 {
            // Each device's own guarantee: a Gaussian mechanism on its update every round.
            accountant.compose_subsampled_gaussian(1.0, run.local_sigma, 1);
            Some(accountant.epsilon(delta).0)
        } else {
            None
        };
        let ndcg = evaluate(data, &factors, d, args).means()["ndcg@10"];
        let row = json!({
            "run": run.name, "round": round, "clients": clients, "dropped": n_dropped,
            "malicious": evil.iter().filter(|&&b| b).count(),
            "ndcg@10": round5(ndcg), "of_central": round5(ndcg / central_ndcg),
            "epsilon": epsilon.map(round5), "noise_multiplier": run.sigma + run.local_sigma,
            "bytes_up_per_client": bytes_up.round(), "bytes_down_per_client": bytes_down.round(),
            "round_seconds": round5(seconds),
        });
        println!("{row}");
        rows.push(row);
    }
    Ok(rows)
}

fn round5(v: f64) -> f64 {
    (v * 1e5).round() / 1e5
}
