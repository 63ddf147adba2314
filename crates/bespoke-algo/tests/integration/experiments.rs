//! Experiments on a synthetic population whose truth is known (`bespoke_algo::experiment::sim`).
//!
//! The claims: with daily peeking, the always-valid sequential test keeps the false-positive
//! rate at or below α while Welch's fixed-horizon test does not; CUPED removes at least 30% of
//! the variance when the pre-period correlates at 0.6, and buys power; interleaving finds a
//! better ranker with at least five times fewer users than an A/B test; the sample-ratio
//! alarm fires on broken assignment and stays quiet on a healthy one.
//!
//! `cargo test -p bespoke-algo --test integration experiments -- --ignored --nocapture` prints
//! the figures of `docs/experiments.md`.

use bespoke_algo::experiment::sim::{
    AbParams, AbReport, ClickModel, Design, Population, click_through, grid, power, simulate_ab,
    simulate_srm, users_needed,
};

/// Significance level of every test here.
const ALPHA: f64 = 0.05;
/// Target power when counting users needed.
const POWER: f64 = 0.8;

fn aa(experiments: usize, seed: u64) -> AbReport {
    simulate_ab(&AbParams {
        experiments,
        seed,
        ..AbParams::default()
    })
}

fn lift(experiments: usize, seed: u64) -> AbReport {
    simulate_ab(&AbParams {
        lift: 0.03,
        experiments,
        seed,
        ..AbParams::default()
    })
}

#[test]
fn peeking_inflates_fixed_horizon_but_not_sequential_false_positives() {
    let r = aa(500, 1);
    assert!(r.plain.sequential <= ALPHA, "{r:?}");
    assert!(r.cuped.sequential <= ALPHA, "{r:?}");
    assert!(r.plain.fixed_peeking > ALPHA, "{r:?}");
    assert!(r.plain.fixed_peeking > r.plain.sequential, "{r:?}");
    // Looked at once, at the horizon, Welch's test keeps its level (binomial sd is 1%).
    assert!(r.plain.fixed_end <= ALPHA + 0.02, "{r:?}");
    assert_eq!(r.srm_alarms, 0.0, "{r:?}");
}

#[test]
fn cuped_cuts_variance_and_buys_power() {
    let r = lift(200, 2);
    // Theory: 1 − ρ² leaves 64% of the variance, a 36% reduction.
    assert!(r.variance_reduction >= 0.30, "{r:?}");
    assert!(r.cuped.fixed_end > r.plain.fixed_end, "{r:?}");
    assert!(r.cuped.sequential > r.plain.sequential, "{r:?}");
}

#[test]
fn interleaving_needs_five_times_fewer_users() {
    let model = ClickModel::default();
    let il = users_needed(
        &model,
        Design::Interleaving,
        &grid(25, 20_000),
        ALPHA,
        POWER,
        200,
        3,
    );
    let n = il
        .users
        .expect("interleaving reaches 80% power on the grid");
    // A/B power at five times as many users is still short of the target, so the smallest A/B
    // size that reaches it is more than five times larger.
    let ab = power(&model, Design::AB, 5 * n, ALPHA, 200, 3);
    assert!(
        ab < POWER,
        "interleaving {n} users, A/B power {ab} at {}",
        5 * n
    );
}

#[test]
fn srm_alarm_on_broken_assignment_only() {
    let healthy = simulate_srm(20_000, 0.0, 200, 4);
    assert!(healthy.alarm_rate <= 0.01, "{healthy:?}");
    let broken = simulate_srm(20_000, 0.1, 200, 4);
    assert_eq!(broken.alarm_rate, 1.0, "{broken:?}");
}

#[test]
#[ignore = "prints the figures of docs/experiments.md; takes about three minutes"]
fn print_experiment_figures() {
    let pop = Population::default();
    println!(
        "population: {} users/day for {} days, mean {}, sd {}, rho {}; alpha {ALPHA}; \
         tau2 {}",
        pop.users_per_day,
        pop.days,
        pop.mean,
        pop.sd,
        pop.rho,
        AbParams::default().tau2
    );
    let row = |name: &str, a: &bespoke_algo::experiment::sim::Analysis| {
        println!(
            "| {name:<18} | {:>9.3} | {:>13.3} | {:>10.3} | {:>15} |",
            a.fixed_end,
            a.fixed_peeking,
            a.sequential,
            a.days_to_decision
                .map_or("-".to_string(), |d| format!("{d:.1}"))
        );
    };
    let header = || {
        println!(
            "| analysis           | fixed end | fixed, daily  | sequential | days to decide  |"
        );
        println!("|---|---|---|---|---|");
    };
    let r = aa(500, 1);
    println!("\nA/A, 500 experiments: share declaring a difference (false positives)");
    header();
    row("plain", &r.plain);
    row("CUPED", &r.cuped);
    println!("SRM alarms: {:.3}", r.srm_alarms);
    let r = lift(500, 2);
    println!("\n3% lift, 500 experiments: share declaring a difference (power)");
    header();
    row("plain", &r.plain);
    row("CUPED", &r.cuped);
    println!("CUPED variance reduction: {:.3}", r.variance_reduction);

    println!(
        "\nusers needed for {POWER} power at alpha {ALPHA}: first grid size (steps of sqrt 2) \
         and, in brackets, interpolated in log(users)"
    );
    println!("| click model | CTR A | CTR B | interleaving | A/B | ratio |");
    println!("|---|---|---|---|---|---|");
    let base = ClickModel::default();
    let variants = [
        ("default", base.clone(), 400),
        (
            "1-5 requests",
            ClickModel {
                max_sessions: 5,
                ..base.clone()
            },
            200,
        ),
        (
            "1-10 requests",
            ClickModel {
                max_sessions: 10,
                ..base.clone()
            },
            200,
        ),
        (
            "skewed propensity",
            ClickModel {
                propensity_exponent: 2.0,
                ..base.clone()
            },
            200,
        ),
        (
            "smaller gain",
            ClickModel {
                noise_a: 0.3,
                ..base.clone()
            },
            200,
        ),
    ];
    for (name, model, reps) in variants {
        let ctr = click_through(&model, 400_000, 5);
        let il = users_needed(
            &model,
            Design::Interleaving,
            &grid(25, 100_000),
            ALPHA,
            POWER,
            reps,
            3,
        );
        let from = il.users.expect("interleaving reaches the target");
        let ab = users_needed(
            &model,
            Design::AB,
            &grid(from, 1_000_000),
            ALPHA,
            POWER,
            reps,
            3,
        );
        let a = ab.users.expect("A/B reaches the target");
        let (fi, fa) = (
            il.interpolated.unwrap_or(from as f64),
            ab.interpolated.unwrap_or(a as f64),
        );
        println!(
            "| {name} | {:.4} | {:.4} | {from} ({fi:.0}) | {a} ({fa:.0}) | {:.1} ({:.1}) |",
            ctr[0],
            ctr[1],
            a as f64 / from as f64,
            fa / fi
        );
        if name == "default" {
            println!(
                "interleaving powers ({reps} experiments each): {:?}",
                il.powers
            );
            println!("A/B powers: {:?}", ab.powers);
        }
    }

    println!("\nSRM, 20 000 users, 1000 experiments each");
    for drop in [0.0, 0.01, 0.02, 0.05, 0.1] {
        let s = simulate_srm(20_000, drop, 1000, 4);
        println!(
            "treatment users lost {drop:.2}: alarm rate {:.3}, treatment share {:.4}",
            s.alarm_rate, s.treatment_share
        );
    }
}
