//! Offline evaluation with exactly the definitions of `../shared/anchors/implicit_bench.py`, so
//! that Bespoke's figures and `implicit`'s are comparable number for number, and the temporal
//! split of `../shared/anchors/split.py`, row for row.
//!
//! For every evaluated user, all candidate items are ranked after removing the user's training
//! items; `L_u` is the first `K_MAX = 100`; `hit(r)` says whether rank `r` (1-based) is a test
//! item. Then, averaged over users:
//! - `recall@K = Σ_{r≤K} hit(r) / min(K, |T_u|)` (normalised recall, Liang et al. 2018);
//! - `recall_plain@K = Σ_{r≤K} hit(r) / |T_u|`;
//! - `ndcg@K = DCG@K / IDCG@K`, binary relevance, `DCG@K = Σ_{r≤K} hit(r) / log2(r + 1)`,
//!   `IDCG@K = Σ_{r ≤ min(K, |T_u|)} 1 / log2(r + 1)`;
//! - `precision@10 = Σ_{r≤10} hit(r) / 10`, `hit_rate@10 = [any hit in the top 10]`.
//!
//! Bespoke adds catalog coverage: the share of candidate items that appear in at least one
//! user's top 20.

use std::collections::BTreeMap;

/// Length of the ranked list every metric reads from.
pub const K_MAX: usize = 100;

/// Averages metrics over users.
#[derive(Debug, Clone, Default)]
pub struct MetricSums {
    users: usize,
    recall20: f64,
    recall50: f64,
    recall_plain20: f64,
    ndcg10: f64,
    ndcg20: f64,
    ndcg100: f64,
    precision10: f64,
    hit_rate10: f64,
    covered: Vec<bool>,
}

fn dcg(hits: &[bool], k: usize) -> f64 {
    hits.iter()
        .take(k)
        .enumerate()
        .filter(|(_, h)| **h)
        .map(|(r, _)| 1.0 / ((r + 2) as f64).log2())
        .sum()
}

fn idcg(k: usize) -> f64 {
    (0..k).map(|r| 1.0 / ((r + 2) as f64).log2()).sum()
}

impl MetricSums {
    /// Sums over a catalog of `n_items` candidate items (for coverage).
    pub fn new(n_items: usize) -> Self {
        Self {
            covered: vec![false; n_items],
            ..Self::default()
        }
    }

    /// Adds one user: `ranking` is `L_u` (best first, at most [`K_MAX`] long, training items
    /// already removed), `test` the user's test items (non-empty, sorted, distinct).
    pub fn add(&mut self, ranking: &[u32], test: &[u32]) {
        assert!(!test.is_empty(), "an evaluated user has test items");
        let hits: Vec<bool> = ranking
            .iter()
            .take(K_MAX)
            .map(|i| test.binary_search(i).is_ok())
            .collect();
        let n_rel = test.len();
        let count = |k: usize| hits.iter().take(k).filter(|h| **h).count() as f64;
        self.users += 1;
        self.recall20 += count(20) / n_rel.min(20) as f64;
        self.recall50 += count(50) / n_rel.min(50) as f64;
        self.recall_plain20 += count(20) / n_rel as f64;
        self.ndcg10 += dcg(&hits, 10) / idcg(n_rel.min(10));
        self.ndcg20 += dcg(&hits, 20) / idcg(n_rel.min(20));
        self.ndcg100 += dcg(&hits, 100) / idcg(n_rel.min(100));
        self.precision10 += count(10) / 10.0;
        self.hit_rate10 += f64::from(count(10) > 0.0);
        for &i in ranking.iter().take(20) {
            if let Some(c) = self.covered.get_mut(i as usize) {
                *c = true;
            }
        }
    }

    /// Merges sums from another worker (same catalog).
    pub fn merge(&mut self, other: &MetricSums) {
        self.users += other.users;
        self.recall20 += other.recall20;
        self.recall50 += other.recall50;
        self.recall_plain20 += other.recall_plain20;
        self.ndcg10 += other.ndcg10;
        self.ndcg20 += other.ndcg20;
        self.ndcg100 += other.ndcg100;
        self.precision10 += other.precision10;
        self.hit_rate10 += other.hit_rate10;
        for (a, b) in self.covered.iter_mut().zip(&other.covered) {
            *a |= *b;
        }
    }

    /// Number of users added.
    pub fn users(&self) -> usize {
        self.users
    }

    /// The means, keyed as `implicit_bench.py` names them, plus `coverage@20`.
    pub fn means(&self) -> BTreeMap<&'static str, f64> {
        let n = self.users.max(1) as f64;
        let coverage = if self.covered.is_empty() {
            0.0
        } else {
            self.covered.iter().filter(|c| **c).count() as f64 / self.covered.len() as f64
        };
        BTreeMap::from([
            ("recall@20", self.recall20 / n),
            ("recall@50", self.recall50 / n),
            ("recall_plain@20", self.recall_plain20 / n),
            ("ndcg@10", self.ndcg10 / n),
            ("ndcg@20", self.ndcg20 / n),
            ("ndcg@100", self.ndcg100 / n),
            ("precision@10", self.precision10 / n),
            ("hit_rate@10", self.hit_rate10 / n),
            ("coverage@20", coverage),
        ])
    }
}

/// One row of an interaction file: `user_id,item_id,weight,timestamp`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// User id (as in the file).
    pub user: i64,
    /// Item id (as in the file).
    pub item: i64,
    /// Weight.
    pub weight: f64,
    /// Timestamp (any unit).
    pub timestamp: i64,
}

/// Counts of a split, as `split.py` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SplitStats {
    /// Rows in the input.
    pub rows_in: usize,
    /// Rows in train.
    pub train_rows: usize,
    /// Rows in test.
    pub test_rows: usize,
    /// Users with at least `min_interactions` rows.
    pub eligible_users: usize,
    /// Test rows dropped because their item never occurs in train.
    pub test_rows_dropped_cold_item: usize,
}

/// `split.py`'s per-user temporal split: each user's rows ordered by `(timestamp, item)`; users
/// with at least `min_interactions` rows send their last `max(1, floor(n · holdout))` rows to
/// test; test rows of items absent from train are dropped. Both outputs are sorted by
/// `(user, timestamp, item)`.
pub fn temporal_split(
    mut rows: Vec<Row>,
    holdout: f64,
    min_interactions: usize,
) -> (Vec<Row>, Vec<Row>, SplitStats) {
    rows.sort_by_key(|r| (r.user, r.timestamp, r.item));
    let mut stats = SplitStats {
        rows_in: rows.len(),
        ..SplitStats::default()
    };
    let mut train = Vec::with_capacity(rows.len());
    let mut test = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let end = start
            + rows[start..]
                .iter()
                .take_while(|r| r.user == rows[start].user)
                .count();
        let n = end - start;
        let n_test = if n >= min_interactions {
            stats.eligible_users += 1;
            ((n as f64 * holdout).floor() as usize).max(1)
        } else {
            0
        };
        train.extend_from_slice(&rows[start..end - n_test]);
        test.extend_from_slice(&rows[end - n_test..end]);
        start = end;
    }
    let known: std::collections::HashSet<i64> = train.iter().map(|r| r.item).collect();
    let before = test.len();
    test.retain(|r| known.contains(&r.item));
    stats.test_rows_dropped_cold_item = before - test.len();
    stats.train_rows = train.len();
    stats.test_rows = test.len();
    (train, test, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(path: &str) -> std::path::PathBuf {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared")
            .join(path);
        assert!(
            p.exists(),
            "{} is missing: the tests need ../shared beside the checkout",
            p.display()
        );
        p
    }

    /// Every worked case of the anchors' fixture, and their mean, to 5 decimals.
    #[test]
    fn metrics_match_the_anchor_fixture() {
        let text = std::fs::read_to_string(shared("anchors/metric_fixture.json")).unwrap();
        let fixture = parse_fixture(&text);
        let mut all = MetricSums::new(1000);
        for (ranking, mut test, expected) in fixture.cases {
            test.sort_unstable();
            let mut one = MetricSums::new(1000);
            one.add(&ranking, &test);
            all.add(&ranking, &test);
            let got = one.means();
            for (k, v) in &expected {
                assert!(
                    (got[k.as_str()] - v).abs() < 5e-6,
                    "{k}: {} vs {v} for {ranking:?} / {test:?}",
                    got[k.as_str()]
                );
            }
        }
        let got = all.means();
        for (k, v) in &fixture.mean {
            assert!(
                (got[k.as_str()] - v).abs() < 5e-6,
                "mean {k}: {} vs {v}",
                got[k.as_str()]
            );
        }
    }

    /// A worked case: ranking, test items, expected metrics.
    type Case = (Vec<u32>, Vec<u32>, Vec<(String, f64)>);

    struct Fixture {
        cases: Vec<Case>,
        mean: Vec<(String, f64)>,
    }

    /// A minimal reader for the fixture's fixed shape (this crate has no JSON dependency).
    fn parse_fixture(text: &str) -> Fixture {
        let numbers = |s: &str| -> Vec<u32> {
            s.split(|c: char| !c.is_ascii_digit())
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().unwrap())
                .collect()
        };
        let pairs = |s: &str| -> Vec<(String, f64)> {
            s.split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once(':')?;
                    Some((
                        k.trim()
                            .trim_matches(|c| c == '"' || c == '{' || c == '}' || c == '\n')
                            .trim()
                            .trim_matches('"')
                            .to_owned(),
                        v.trim()
                            .trim_matches(|c| c == '}' || c == ']')
                            .trim()
                            .parse()
                            .ok()?,
                    ))
                })
                .collect()
        };
        let mut cases = Vec::new();
        let body = &text[text.find("\"cases\"").unwrap()..];
        let (cases_text, mean_text) = body.split_at(body.find("\"mean\"").unwrap());
        for case in cases_text.split("\"ranking\"").skip(1) {
            let ranking = &case[..case.find("\"test\"").unwrap()];
            let rest = &case[case.find("\"test\"").unwrap()..];
            let test = &rest[..rest.find("\"expected\"").unwrap()];
            let expected = &rest[rest.find("\"expected\"").unwrap() + 10..];
            let expected = &expected[..expected.find('}').unwrap()];
            cases.push((numbers(ranking), numbers(test), pairs(expected)));
        }
        let mean = &mean_text[mean_text.find('{').unwrap()..];
        let mean = &mean[..mean.find('}').unwrap()];
        Fixture {
            cases,
            mean: pairs(mean),
        }
    }

    #[test]
    fn split_follows_split_py() {
        let row = |user, item, timestamp| Row {
            user,
            item,
            weight: 1.0,
            timestamp,
        };
        // User 1: 6 rows -> 1 test row (floor(1.2)); user 2: 4 rows -> all train (and puts item 8
        // in train);
        // user 3: 10 rows -> 2 test rows, one of an item never in train (dropped).
        let mut rows = Vec::new();
        for t in 0..6 {
            rows.push(row(1, t, 100 - t)); // reversed times: item 0 is the latest
        }
        for t in [0, 1, 2, 8] {
            rows.push(row(2, t, t));
        }
        for t in 0..9 {
            rows.push(row(3, t, t));
        }
        rows.push(row(3, 99, 50));
        let (train, test, stats) = temporal_split(rows, 0.2, 5);
        assert_eq!(stats.eligible_users, 2);
        assert_eq!(
            test.iter().map(|r| (r.user, r.item)).collect::<Vec<_>>(),
            vec![(1, 0), (3, 8)]
        );
        assert_eq!(stats.test_rows_dropped_cold_item, 1);
        assert_eq!(train.len(), 5 + 4 + 8);
        assert!(
            train
                .windows(2)
                .all(|w| (w[0].user, w[0].timestamp) <= (w[1].user, w[1].timestamp))
        );
    }
}
