//! On-device personalization for Bespoke.
//!
//! The server publishes a signed bundle of its iALS item factors (`GET /v1/device/bundle`,
//! see [`bundle`] for the format). This crate verifies it against the publisher's key, keeps
//! the user's events on the device ([`History`]), computes the user's vector there with the
//! server's own fold-in (the exact iALS user step, `x = (YᵀC^uY + λI)⁻¹ YᵀC^u p(u)`), and ranks
//! the catalog locally with category filters. The user's events never leave the device.
//!
//! For federated training, [`secagg`] masks a device's update so that the server learns only
//! the sum over devices (secure aggregation with pairwise masks).
//!
//! No async runtime and no network code: the app fetches the bytes however it likes. The
//! JavaScript module in `clients/js` does the same in a browser; both compute in `f64` from the
//! same dequantized factors, in the same order, so their scores agree to rounding.
//!
//! ```
//! use bespoke_client::{Bundle, History, Query};
//! # let (bytes, public_key) = bespoke_client::example_bundle();
//! let bundle = Bundle::verify(&bytes, &public_key)?;
//! let mut history = History::default();
//! history.push("item-3", "purchase", None, 1_700_000_000_000);
//! let top = bundle.recommend(&history, &Query { n: 5, ..Query::default() });
//! assert_eq!(top.len(), 5);
//! assert!(top.iter().all(|s| s.item != "item-3")); // seen items are left out
//! # Ok::<(), bespoke_client::BundleError>(())
//! ```

pub mod bundle;
pub mod federated;
pub mod secagg;

use serde::{Deserialize, Serialize};

pub use bundle::{
    Bundle, BundleError, BundleParts, Encoding, EventWeight, Header, Recency, encode,
};

/// One event kept on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalEvent {
    /// Item key.
    pub item: String,
    /// Event type, as the server's `events.weights` names it.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value of value-weighted types (ratings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
}

/// The user's events, held on the device. Persist it with [`History::to_json`] and
/// [`History::from_json`]; nothing here sends it anywhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    events: Vec<LocalEvent>,
}

impl History {
    /// Records an event.
    pub fn push(&mut self, item: &str, kind: &str, value: Option<f64>, at_ms: i64) {
        self.events.push(LocalEvent {
            item: item.to_owned(),
            kind: kind.to_owned(),
            value,
            at_ms,
        });
    }

    /// The events, oldest first.
    pub fn events(&self) -> &[LocalEvent] {
        &self.events
    }

    /// Forgets every event on `item` (the user's "remove from my history").
    pub fn forget(&mut self, item: &str) {
        self.events.retain(|e| e.item != item);
    }

    /// The history as JSON, for the app to store.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a history serializes")
    }

    /// A history stored with [`History::to_json`].
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The weight of each item the bundle knows, by item row ascending, at time `now_ms`:
    /// the server's fold-in history. Per item, the summed event weights (events of types the
    /// server does not know are skipped), times the position-based recency the model was
    /// trained with (items the bundle does not know count as interactions for it), times the
    /// item's propensity factor, times the recent boost of positive weights.
    pub fn weights(&self, bundle: &Bundle, now_ms: i64) -> Vec<(u32, f64)> {
        struct Agg<'a> {
            key: &'a str,
            row: u32,
            weight: f64,
            last: i64,
        }
        let mut aggs: Vec<Agg> = Vec::new();
        let mut at = std::collections::HashMap::new();
        for e in &self.events {
            let Some(w) = bundle.weight(&e.kind, e.value) else {
                continue;
            };
            let slot = *at.entry(e.item.as_str()).or_insert_with(|| {
                aggs.push(Agg {
                    key: &e.item,
                    row: bundle.item(&e.item).unwrap_or(u32::MAX),
                    weight: 0.0,
                    last: i64::MIN,
                });
                aggs.len() - 1
            });
            aggs[slot].weight += w;
            aggs[slot].last = aggs[slot].last.max(e.at_ms);
        }
        // The server's order: model rows, then items without one (for recency ties only).
        aggs.sort_by(|a, b| a.row.cmp(&b.row).then(a.key.cmp(b.key)));
        let h = &bundle.header;
        let mut position = vec![1f64; aggs.len()];
        if h.recency.is_on() {
            let mut order: Vec<usize> = (0..aggs.len()).collect();
            order.sort_by_key(|&k| (aggs[k].last, k));
            let n = aggs.len();
            for (p, &k) in order.iter().enumerate() {
                position[k] = h.recency.factor(n - 1 - p) as f64;
            }
        }
        aggs.iter()
            .zip(position)
            .filter(|(a, _)| a.row != u32::MAX)
            .map(|(a, pos)| {
                let mut w = a.weight * pos * bundle.propensity(a.row);
                if h.recent_boost > 0.0 && w > 0.0 && h.recent_half_life_ms > 0.0 {
                    let age = now_ms.saturating_sub(a.last).max(0) as f64;
                    w *= 1.0 + h.recent_boost * (-age / h.recent_half_life_ms).exp2();
                }
                (a.row, w)
            })
            .collect()
    }
}

/// What to rank.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// How many items.
    pub n: usize,
    /// Only items in any of these categories (none: every item).
    pub categories: Vec<String>,
    /// Item keys never to return.
    pub exclude: Vec<String>,
    /// Also return items in the history.
    pub include_seen: bool,
    /// The time to weigh the history at (Unix milliseconds; the recent boost depends on it).
    pub now_ms: i64,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            n: 10,
            categories: Vec::new(),
            exclude: Vec::new(),
            include_seen: false,
            now_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }
}

/// A ranked item.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Item key.
    pub item: String,
    /// Its row in the bundle.
    pub row: u32,
    /// `x_u · y_i`: higher is better.
    pub score: f64,
}

impl Bundle {
    /// The user's vector from their history: the exact iALS user step against the bundle's
    /// item factors, as the server folds in a user. `None` for a history with nothing the
    /// bundle knows.
    pub fn user_vector(&self, history: &History, now_ms: i64) -> Option<Vec<f64>> {
        self.fold_in(&history.weights(self, now_ms))
    }

    /// The user vector of weighted rows ([`History::weights`]).
    fn fold_in(&self, weights: &[(u32, f64)]) -> Option<Vec<f64>> {
        if weights.iter().all(|&(_, w)| w == 0.0) {
            return None;
        }
        let d = self.header.dim as usize;
        let alpha = self.header.alpha as f64;
        let mut a = self.gram_reg.clone();
        let mut b = vec![0f64; d];
        for &(row, w) in weights {
            if w == 0.0 {
                continue;
            }
            let c = 1.0 + alpha * w.abs();
            let y = self.factors(row);
            for r in 0..d {
                let s = (c - 1.0) * y[r];
                for k in 0..d {
                    a[r * d + k] += s * y[k];
                }
            }
            if w > 0.0 {
                for k in 0..d {
                    b[k] += c * y[k];
                }
            }
        }
        cholesky_solve(&mut a, &mut b, d).then_some(b)
    }

    /// Item `row`'s score for the user vector `x`.
    pub fn score(&self, x: &[f64], row: u32) -> f64 {
        let y = self.factors(row);
        let mut s = 0.0;
        for k in 0..y.len() {
            s += y[k] * x[k];
        }
        s
    }

    /// The best `query.n` items for the history, best first (ties by row). Empty when the
    /// history holds nothing the bundle knows: the app shows its own fallback (the server's
    /// popular items, say).
    pub fn recommend(&self, history: &History, query: &Query) -> Vec<Scored> {
        // Weighed once: the fold-in and the seen items both read it.
        let weights = history.weights(self, query.now_ms);
        let Some(x) = self.fold_in(&weights) else {
            return Vec::new();
        };
        let mut skip = vec![false; self.len()];
        if !query.include_seen {
            for &(row, _) in &weights {
                skip[row as usize] = true;
            }
        }
        for key in &query.exclude {
            if let Some(row) = self.item(key) {
                skip[row as usize] = true;
            }
        }
        let wanted: Vec<u32> = query
            .categories
            .iter()
            .filter_map(|c| self.category_index.get(c).copied())
            .collect();
        if !query.categories.is_empty() && wanted.is_empty() {
            return Vec::new();
        }
        let mut scored: Vec<(f64, u32)> = (0..self.len() as u32)
            .filter(|&row| !skip[row as usize])
            .filter(|&row| {
                wanted.is_empty()
                    || self.header.item_categories[row as usize]
                        .iter()
                        .any(|c| wanted.contains(c))
            })
            .map(|row| (self.score(&x, row), row))
            .collect();
        let by_rank = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if scored.len() > query.n {
            scored.select_nth_unstable_by(query.n, by_rank);
            scored.truncate(query.n);
        }
        scored.sort_by(by_rank);
        scored
            .into_iter()
            .map(|(score, row)| Scored {
                item: self.header.keys[row as usize].clone(),
                row,
                score,
            })
            .collect()
    }
}

/// Solves `A x = b` in place for a symmetric positive definite `A` (d×d, row-major) by
/// Cholesky; `false` if `A` is not positive definite.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], d: usize) -> bool {
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return false;
        }
        let l = s.sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / l;
        }
    }
    for i in 0..d {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * d + k] * b[k];
        }
        b[i] = s / a[i * d + i];
    }
    for i in (0..d).rev() {
        let mut s = b[i];
        for k in i + 1..d {
            s -= a[k * d + i] * b[k];
        }
        b[i] = s / a[i * d + i];
    }
    true
}

/// Deterministic factors of `n` items × `d` for examples and tests.
#[doc(hidden)]
pub fn example_factors(n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|i| ((i * 7919 % 211) as f32 / 211.0 - 0.5) * 0.8)
        .collect()
}

/// `YᵀY + λI` of row-major `factors` with `d` columns, accumulated in `f32`: what a bundle's
/// Gram section holds, for examples, tests and benchmarks.
#[doc(hidden)]
pub fn gram_reg(factors: &[f32], d: usize, lambda: f32) -> Vec<f32> {
    let mut gram = vec![0f32; d * d];
    for row in factors.chunks(d) {
        for a in 0..d {
            for b in 0..d {
                gram[a * d + b] += row[a] * row[b];
            }
        }
    }
    for k in 0..d {
        gram[k * d + k] += lambda;
    }
    gram
}

/// A small bundle signed with a fixed key, and that key's public half: for examples and
/// tests (never for production; the server signs with its own key).
#[doc(hidden)]
pub fn example_bundle() -> (Vec<u8>, [u8; 32]) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    (
        encode(&example_parts(), Encoding::F32, &key),
        key.verifying_key().to_bytes(),
    )
}

/// The parts of [`example_bundle`]: 40 items × 6 factors in two categories, `even` and `odd`.
#[doc(hidden)]
pub fn example_parts() -> BundleParts {
    let n = 40;
    let d = 6;
    let factors = example_factors(n, d);
    BundleParts {
        header: Header {
            format: bundle::FORMAT,
            model_version: 1,
            created_at: "2026-12-07T00:00:00Z".into(),
            dim: d as u32,
            encoding: Encoding::F32,
            alpha: 2.0,
            event_weights: [
                ("view".to_owned(), EventWeight::Fixed(1.0)),
                ("purchase".to_owned(), EventWeight::Fixed(4.0)),
            ]
            .into_iter()
            .collect(),
            max_weight: 10.0,
            recent_boost: 0.0,
            recent_half_life_ms: 0.0,
            recency: bundle::Recency::OFF,
            propensity: false,
            keys: (0..n).map(|i| format!("item-{i}")).collect(),
            categories: vec!["even".into(), "odd".into()],
            item_categories: (0..n).map(|i| vec![(i % 2) as u32]).collect(),
        },
        gram_reg: gram_reg(&factors, d, 0.1),
        factors,
        propensity: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bundle() -> Bundle {
        let (bytes, key) = example_bundle();
        Bundle::verify(&bytes, &key).unwrap()
    }

    /// The folded-in vector is the minimiser: the gradient of the iALS loss of this user,
    /// `(YᵀC^uY + λI)x − YᵀC^u p`, is zero at it.
    #[test]
    fn the_user_vector_solves_the_normal_equations() {
        let b = bundle();
        let mut h = History::default();
        h.push("item-3", "purchase", None, 1);
        h.push("item-8", "view", None, 2);
        h.push("item-8", "view", None, 3);
        h.push("item-11", "view", None, 4);
        let x = b.user_vector(&h, 0).unwrap();
        let d = b.header.dim as usize;
        let alpha = b.header.alpha as f64;
        let mut residual: Vec<f64> = (0..d)
            .map(|r| (0..d).map(|k| b.gram_reg[r * d + k] * x[k]).sum())
            .collect();
        for (row, w) in h.weights(&b, 0) {
            let c = 1.0 + alpha * w.abs();
            let y = b.factors(row);
            let yx: f64 = y.iter().zip(&x).map(|(a, b)| a * b).sum();
            for r in 0..d {
                residual[r] += (c - 1.0) * y[r] * yx - c * y[r];
            }
        }
        assert!(residual.iter().all(|r| r.abs() < 1e-9), "{residual:?}");
    }

    #[test]
    fn ranking_honours_filters_and_leaves_out_what_was_seen() {
        let b = bundle();
        let mut h = History::default();
        h.push("item-2", "purchase", None, 1);
        h.push("item-unknown", "purchase", None, 2);
        h.push("item-5", "not-a-type", None, 3);
        let all = b.recommend(
            &h,
            &Query {
                n: 100,
                ..Query::default()
            },
        );
        assert_eq!(all.len(), 39, "every item but the one seen");
        assert!(all.windows(2).all(|w| w[0].score >= w[1].score));
        let odd = b.recommend(
            &h,
            &Query {
                n: 5,
                categories: vec!["odd".into()],
                exclude: vec![all[0].item.clone()],
                ..Query::default()
            },
        );
        assert_eq!(odd.len(), 5);
        assert!(odd.iter().all(|s| s.row % 2 == 1 && s.item != all[0].item));
        let none = b.recommend(
            &h,
            &Query {
                categories: vec!["no-such".into()],
                ..Query::default()
            },
        );
        assert!(none.is_empty());
        assert!(
            b.recommend(&History::default(), &Query::default())
                .is_empty()
        );
    }

    /// Recency by position, propensity and the recent boost weigh the history as the server
    /// does (`pipeline::candidates::model_history`).
    #[test]
    fn history_weights_follow_the_servers_weighting() {
        let (bytes, key) = example_bundle();
        let mut b = Bundle::verify(&bytes, &key).unwrap();
        b.header.recency = Recency {
            half_life: 1.0,
            floor: 0.0,
        };
        b.header.recent_boost = 1.0;
        b.header.recent_half_life_ms = 1000.0;
        b.propensity = vec![1.0; b.len()];
        b.propensity[4] = 3.0;
        let mut h = History::default();
        h.push("item-4", "view", None, 1);
        h.push("item-4", "view", None, 2);
        h.push("not-in-bundle", "view", None, 3);
        h.push("item-1", "purchase", None, 4);
        h.push("item-1", "not-a-type", None, 9);
        let w = h.weights(&b, 1004);
        // item-1 is the latest (age 0): 4 · 1 · 1 · (1 + 2^(−1000/1000)) = 6.
        // item-4 has two later interactions (one outside the bundle): 2 · 2^(−2) · 3 · (1 + 2^(−1002/1000)).
        let item4 = 2.0 * 0.25 * 3.0 * (1.0 + (-1.002f64).exp2());
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].0, 1);
        assert!((w[0].1 - 6.0).abs() < 1e-12, "{w:?}");
        assert_eq!(w[1].0, 4);
        assert!((w[1].1 - item4).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn a_history_survives_storage() {
        let mut h = History::default();
        h.push("a", "rating", Some(4.5), 10);
        h.push("b", "view", None, 11);
        let back = History::from_json(&h.to_json()).unwrap();
        assert_eq!(back, h);
        let mut f = back;
        f.forget("a");
        assert_eq!(f.events().len(), 1);
    }

    proptest! {
        /// The top n of a ranking is the first n of the full ranking: the partial selection
        /// loses nothing and keeps the order.
        #[test]
        fn top_n_is_a_prefix_of_the_full_ranking(
            events in proptest::collection::vec((0u32..40, prop::bool::ANY), 1..12),
            n in 1usize..45,
        ) {
            let b = bundle();
            let mut h = History::default();
            for (i, (item, buy)) in events.iter().enumerate() {
                h.push(&format!("item-{item}"), if *buy { "purchase" } else { "view" }, None, i as i64);
            }
            let full = b.recommend(&h, &Query { n: 1000, ..Query::default() });
            let top = b.recommend(&h, &Query { n, ..Query::default() });
            prop_assert_eq!(&full[..n.min(full.len())], &top[..]);
        }
    }
}
