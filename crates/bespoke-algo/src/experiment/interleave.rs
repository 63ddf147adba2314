//! Team-draft interleaving: compare two rankers on the same requests.
//!
//! Instead of showing ranker A to some users and ranker B to others, every request shows one
//! list drafted from both, and each click credits the ranker that contributed the clicked item.
//! Each user thereby compares the rankers on their own requests, so the large differences
//! between users (how much they click at all) cancel out, and a ranking change is detected with
//! far fewer users than an A/B test needs (Chapelle, Joachims, Radlinski and Yue 2012 report one
//! to two orders of magnitude).
//!
//! Flow: [`team_draft`] builds the list for a request; [`Interleaving::credit`] scores the
//! clicks on it; [`Preference`] counts, per user, which ranker got more credit over the user's
//! requests, and [`Preference::sign_test`] tests whether one ranker wins more users.

use std::hash::Hash;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use super::dist::binomial_cdf;
use crate::Rng;

/// Which ranker contributed an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Team {
    /// The first ranker (the control).
    A,
    /// The second ranker (the candidate).
    B,
}

/// An interleaved list and the team of each of its items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interleaving<T> {
    /// The items to show, in order, without duplicates.
    pub items: Vec<T>,
    /// `teams[i]` contributed `items[i]`.
    pub teams: Vec<Team>,
}

/// Clicks credited to each ranker (on one request, or summed over a user's requests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// Clicks on items of ranker A.
    pub a: u32,
    /// Clicks on items of ranker B.
    pub b: u32,
}

impl std::ops::AddAssign for Credit {
    fn add_assign(&mut self, other: Credit) {
        self.a += other.a;
        self.b += other.b;
    }
}

/// Team-draft interleaving (Radlinski, Kurup and Joachims 2008) of rankings `a` and `b`, best
/// first, into at most `n` items.
///
/// The team with fewer picks so far picks next, and a fair coin decides when they are level
/// (so each round of two picks starts with a random team). A team picks its highest-ranked item
/// not already in the list. When one ranking runs out the other fills the list; the list is
/// shorter than `n` only when both have run out. The coin makes credit unbiased: if the user
/// clicks at random, or the rankers agree, each team expects the same credit.
pub fn team_draft<T: Copy + Eq + Hash>(
    a: &[T],
    b: &[T],
    n: usize,
    rng: &mut Rng,
) -> Interleaving<T> {
    let mut items = Vec::with_capacity(n);
    let mut teams = Vec::with_capacity(n);
    let mut shown = FxHashSet::default();
    let (mut next_a, mut next_b) = (0, 0);
    let (mut picks_a, mut picks_b) = (0usize, 0usize);
    while items.len() < n {
        while next_a < a.len() && shown.contains(&a[next_a]) {
            next_a += 1;
        }
        while next_b < b.len() && shown.contains(&b[next_b]) {
            next_b += 1;
        }
        let (a_left, b_left) = (next_a < a.len(), next_b < b.len());
        let a_turn = match (a_left, b_left) {
            (false, false) => break,
            (true, false) => true,
            (false, true) => false,
            (true, true) if picks_a == picks_b => rng.below(2) == 0,
            (true, true) => picks_a < picks_b,
        };
        let (item, team) = if a_turn {
            picks_a += 1;
            (a[next_a], Team::A)
        } else {
            picks_b += 1;
            (b[next_b], Team::B)
        };
        shown.insert(item);
        items.push(item);
        teams.push(team);
    }
    Interleaving { items, teams }
}

impl<T> Interleaving<T> {
    /// Credit for the clicks at `positions` (0-based indices into `items`; positions past the
    /// end are ignored, a position listed twice counts twice).
    pub fn credit(&self, positions: impl IntoIterator<Item = usize>) -> Credit {
        let mut credit = Credit::default();
        for p in positions {
            match self.teams.get(p) {
                Some(Team::A) => credit.a += 1,
                Some(Team::B) => credit.b += 1,
                None => {}
            }
        }
        credit
    }
}

/// Per-user outcomes of an interleaving experiment: each user is won by the ranker with more
/// credit over all of their requests, or tied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preference {
    /// Users who gave ranker A more credit.
    pub a_wins: u64,
    /// Users who gave ranker B more credit.
    pub b_wins: u64,
    /// Users who gave both the same credit (including users who never clicked).
    pub ties: u64,
}

/// The sign test of a [`Preference`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SignTest {
    /// `(b_wins − a_wins) / users`: positive when B is preferred (Chapelle et al.'s `Δ_AB`).
    pub delta: f64,
    /// Two-sided p-value of "each non-tied user is equally likely to prefer either ranker".
    pub p_value: f64,
}

impl Preference {
    /// Adds one user's total credit.
    pub fn push(&mut self, credit: Credit) {
        match credit.a.cmp(&credit.b) {
            std::cmp::Ordering::Greater => self.a_wins += 1,
            std::cmp::Ordering::Less => self.b_wins += 1,
            std::cmp::Ordering::Equal => self.ties += 1,
        }
    }

    /// The two-sided sign test over non-tied users: `p = min(1, 2 P(X ≤ min(wins)))` with
    /// `X ~ Bin(a_wins + b_wins, 1/2)`, computed exactly (through the incomplete beta function)
    /// at every size, so no normal approximation is needed. No decided users gives `p = 1`.
    pub fn sign_test(&self) -> SignTest {
        let decided = self.a_wins + self.b_wins;
        let users = decided + self.ties;
        let p_value = if decided == 0 {
            1.0
        } else {
            (2.0 * binomial_cdf(self.a_wins.min(self.b_wins), decided, 0.5)).min(1.0)
        };
        SignTest {
            delta: if users == 0 {
                0.0
            } else {
                (self.b_wins as f64 - self.a_wins as f64) / users as f64
            },
            p_value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the invariants of one interleaving of `a` and `b`.
    fn check(a: &[u32], b: &[u32], n: usize, il: &Interleaving<u32>) {
        assert_eq!(il.items.len(), il.teams.len());
        let mut all: Vec<u32> = a.iter().chain(b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(il.items.len(), n.min(all.len()));
        let (mut na, mut nb) = (0i64, 0i64);
        for (k, (&item, &team)) in il.items.iter().zip(&il.teams).enumerate() {
            assert!(!il.items[..k].contains(&item), "duplicate {item}");
            let ranking = if team == Team::A { a } else { b };
            // The team's best item not shown yet.
            let best = ranking.iter().find(|i| !il.items[..k].contains(i));
            assert_eq!(best, Some(&item));
            if team == Team::A {
                na += 1
            } else {
                nb += 1
            }
            let other_left = if team == Team::A { b } else { a }
                .iter()
                .any(|i| !il.items[..=k].contains(i));
            if other_left {
                assert!((na - nb).abs() <= 1);
            }
        }
    }

    #[test]
    fn team_draft_invariants() {
        let mut rng = Rng::seed_from_u64(1);
        let a: Vec<u32> = (0..10).collect();
        let b: Vec<u32> = vec![3, 1, 11, 0, 12, 5, 13, 14, 2, 15];
        for n in [0, 1, 5, 10, 16, 30] {
            for _ in 0..50 {
                check(&a, &b, n, &team_draft(&a, &b, n, &mut rng));
            }
        }
        // One ranking shorter than the other, or empty.
        check(&a[..2], &b, 10, &team_draft(&a[..2], &b, 10, &mut rng));
        check(&[], &b, 4, &team_draft(&[], &b, 4, &mut rng));
        let il = team_draft(&[1u32, 2], &[], 5, &mut rng);
        assert_eq!(il.items, vec![1, 2]);
        assert_eq!(il.teams, vec![Team::A, Team::A]);
    }

    #[test]
    fn identical_rankers_tie() {
        // Same ranking on both sides: every click is a coin flip between teams, so over many
        // users neither ranker should be preferred.
        let mut rng = Rng::seed_from_u64(2);
        let ranking: Vec<u32> = (0..10).collect();
        let mut pref = Preference::default();
        let mut total = Credit::default();
        for _ in 0..4000 {
            let mut user = Credit::default();
            for _ in 0..3 {
                let il = team_draft(&ranking, &ranking, 10, &mut rng);
                let clicks: Vec<usize> = (0..10)
                    .filter(|&p| rng.f64() < 0.3 / (p as f64 + 1.0))
                    .collect();
                user += il.credit(clicks);
            }
            total += user;
            pref.push(user);
        }
        let test = pref.sign_test();
        assert!(test.p_value > 0.01, "{pref:?} {test:?}");
        assert!(test.delta.abs() < 0.03, "{test:?}");
        let share_a = f64::from(total.a) / f64::from(total.a + total.b);
        assert!((share_a - 0.5).abs() < 0.02, "{total:?}");
    }

    #[test]
    fn credit_counts_clicks_by_team() {
        let il = Interleaving {
            items: vec![7u32, 8, 9],
            teams: vec![Team::B, Team::A, Team::B],
        };
        assert_eq!(il.credit([0, 2, 5]), Credit { a: 0, b: 2 });
        assert_eq!(il.credit([1]), Credit { a: 1, b: 0 });
    }

    #[test]
    fn sign_test_hand_cases() {
        // python3 -c "from scipy.stats import binomtest
        // print(binomtest(3, 20).pvalue, binomtest(430, 1000).pvalue)"
        let p = |a, b| {
            Preference {
                a_wins: a,
                b_wins: b,
                ties: 5,
            }
            .sign_test()
        };
        assert!((p(3, 17).p_value - 0.0025768280029296875).abs() < 1e-15);
        assert!((p(430, 570).p_value / 1.0709737664959605e-05 - 1.0).abs() < 1e-10);
        assert_eq!(p(10, 10).p_value, 1.0);
        assert_eq!(p(0, 0).p_value, 1.0);
        assert!((p(3, 17).delta - 14.0 / 25.0).abs() < 1e-15);
    }
}
