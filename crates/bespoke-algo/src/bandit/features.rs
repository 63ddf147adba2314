//! Features of a decision and how they become a sparse vector.
//!
//! A decision has *context* features (the user, the page, the time) and, per action, *action*
//! features. Each feature lives in a namespace (the top-level key it came from) and has a name
//! and a value: `device=mobile` with value 1 for a categorical, `hour` with value 13 for a
//! number. Every feature and every interaction term (context × action, like Vowpal Wabbit's
//! `-q CA`) is hashed into one weight vector of `2^bits` entries, so the model's size never
//! depends on how many distinct features the application sends.

use serde::{Deserialize, Serialize};

/// Which side of a decision a feature came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The decision's context (shared by every action).
    Context,
    /// One action's own features.
    Action,
}

/// A feature as the application named it.
#[derive(Clone, Debug, PartialEq)]
pub struct RawFeature {
    /// Namespace: the top-level key the feature came from.
    pub namespace: String,
    /// Name within the namespace, with the category for categoricals (`device=mobile`).
    pub name: String,
    /// Value; 1 for a categorical.
    pub value: f32,
}

impl RawFeature {
    /// A feature from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, value: f32) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            value,
        }
    }

    /// `namespace:name`, the label used in explanations.
    pub fn label(&self) -> String {
        format!("{}:{}", self.namespace, self.name)
    }
}

/// One side of an interaction: a whole side, or one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub String);

/// A selector resolved once: a side, or the hash of a namespace name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolved {
    Side(Side),
    Namespace(u64),
}

impl Resolved {
    fn new(s: &Selector) -> Self {
        match s.0.as_str() {
            "context" => Resolved::Side(Side::Context),
            "action" => Resolved::Side(Side::Action),
            ns => Resolved::Namespace(hash_namespace(ns)),
        }
    }

    #[inline]
    fn matches(self, f: &Prepared) -> bool {
        match self {
            Resolved::Side(side) => f.side == side,
            Resolved::Namespace(h) => f.namespace == h,
        }
    }
}

/// Namespace of the constant feature every example carries.
pub const BIAS_NAMESPACE: &str = "_bias";
/// Namespace of the action-identity feature added to every action.
pub const ACTION_ID_NAMESPACE: &str = "_action";

/// A feature with its hashes computed once (no allocation: scoring is allocation-free).
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    /// Hash of the namespace name alone (for interactions by namespace and for `ignore`).
    namespace: u64,
    hash: u64,
    value: f32,
    side: Side,
}

impl Prepared {
    /// Hashes `raw`, coming from `side`.
    pub fn new(raw: &RawFeature, side: Side) -> Self {
        Self {
            hash: hash_feature(&raw.namespace, &raw.name),
            namespace: hash_namespace(&raw.namespace),
            value: raw.value,
            side,
        }
    }

    /// Hash of the feature's namespace name.
    pub fn namespace_hash(&self) -> u64 {
        self.namespace
    }
}

/// The context features of one decision, hashed, plus the constant feature.
#[derive(Clone, Debug)]
pub struct PreparedContext {
    features: Vec<Prepared>,
}

/// One action's features, hashed, with its identity feature first.
#[derive(Clone, Debug)]
pub struct PreparedAction {
    features: Vec<Prepared>,
}

impl PreparedContext {
    /// Hashes the context (the constant feature is added here).
    pub fn new(raw: &[RawFeature]) -> Self {
        let mut features = Vec::with_capacity(raw.len() + 1);
        features.push(Prepared::new(
            &RawFeature::new(BIAS_NAMESPACE, "bias", 1.0),
            Side::Context,
        ));
        features.extend(raw.iter().map(|f| Prepared::new(f, Side::Context)));
        Self { features }
    }

    /// The hashed features, the constant first.
    pub fn features(&self) -> &[Prepared] {
        &self.features
    }
}

impl PreparedAction {
    /// Hashes one action: its identity `id` and its features.
    pub fn new(id: &str, raw: &[RawFeature]) -> Self {
        let mut features = Vec::with_capacity(raw.len() + 1);
        features.push(Prepared::new(
            &RawFeature::new(ACTION_ID_NAMESPACE, id, 1.0),
            Side::Action,
        ));
        features.extend(raw.iter().map(|f| Prepared::new(f, Side::Action)));
        Self { features }
    }

    /// The hashed features, the identity first.
    pub fn features(&self) -> &[Prepared] {
        &self.features
    }
}

/// A term of the linear model: a feature or an interaction of two.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Term {
    /// Index into the weight vector.
    pub index: u32,
    /// Value (the product of the values, for an interaction).
    pub value: f32,
    /// Position of the first feature in `context ++ action`.
    pub left: u32,
    /// Position of the second feature, for an interaction.
    pub right: Option<u32>,
}

/// Turns prepared features into the model's terms: every feature alone, plus the configured
/// interactions. Namespaces listed in `ignore` are left out (for drop-one feature importance).
#[derive(Clone, Debug)]
pub struct Featurizer {
    mask: u64,
    interactions: Vec<(Resolved, Resolved)>,
    ignore: Vec<u64>,
}

impl Featurizer {
    /// A featurizer for a weight vector of `2^bits` entries.
    pub fn new(bits: u8, interactions: &[[String; 2]], ignore: Vec<String>) -> Self {
        Self {
            mask: (1u64 << bits) - 1,
            interactions: interactions
                .iter()
                .map(|[a, b]| {
                    (
                        Resolved::new(&Selector(a.clone())),
                        Resolved::new(&Selector(b.clone())),
                    )
                })
                .collect(),
            ignore: ignore.iter().map(|n| hash_namespace(n)).collect(),
        }
    }

    fn kept(&self, f: &Prepared) -> bool {
        self.ignore.is_empty() || !self.ignore.contains(&f.namespace)
    }

    /// Calls `out` with every term of `(context, action)`, in a fixed order.
    pub fn for_each_term(
        &self,
        context: &PreparedContext,
        action: &PreparedAction,
        mut out: impl FnMut(Term),
    ) {
        let c = context.features();
        let a = action.features();
        let at = |i: usize| if i < c.len() { &c[i] } else { &a[i - c.len()] };
        let n = c.len() + a.len();
        for i in 0..n {
            let f = at(i);
            if f.value != 0.0 && self.kept(f) {
                out(Term {
                    index: (f.hash & self.mask) as u32,
                    value: f.value,
                    left: i as u32,
                    right: None,
                });
            }
        }
        // A side selector matches a contiguous range (context first, then the action), so
        // only namespace selectors need to look at every feature.
        let range = |s: Resolved| match s {
            Resolved::Side(Side::Context) => 0..c.len(),
            Resolved::Side(Side::Action) => c.len()..n,
            Resolved::Namespace(_) => 0..n,
        };
        for &(l, r) in &self.interactions {
            let same = l == r;
            for i in range(l) {
                let fi = at(i);
                if fi.value == 0.0 || !l.matches(fi) || !self.kept(fi) {
                    continue;
                }
                let rr = range(r);
                for j in if same {
                    (i + 1).max(rr.start)
                } else {
                    rr.start
                }..rr.end
                {
                    let fj = at(j);
                    if j == i || fj.value == 0.0 || !r.matches(fj) || !self.kept(fj) {
                        continue;
                    }
                    out(Term {
                        index: (combine(fi.hash, fj.hash) & self.mask) as u32,
                        value: fi.value * fj.value,
                        left: i as u32,
                        right: Some(j as u32),
                    });
                }
            }
        }
    }

    /// The sparse vector of `(context, action)`: `(index, value)` pairs.
    pub fn vector(&self, context: &PreparedContext, action: &PreparedAction) -> Vec<(u32, f32)> {
        let mut v = Vec::new();
        self.vector_into(context, action, &mut v);
        v
    }

    /// Like [`Featurizer::vector`], reusing `out`'s allocation.
    pub fn vector_into(
        &self,
        context: &PreparedContext,
        action: &PreparedAction,
        out: &mut Vec<(u32, f32)>,
    ) {
        out.clear();
        self.for_each_term(context, action, |t| out.push((t.index, t.value)));
    }
}

/// Hash of a namespace name on its own.
fn hash_namespace(namespace: &str) -> u64 {
    hash_feature(namespace, "")
}

/// 64-bit hash of a namespaced feature name: FNV-1a over the bytes, then a strong finaliser.
/// Stable forever: saved models depend on it.
pub fn hash_feature(namespace: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0x1f]).chain(name.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// Hash of an ordered pair of features.
fn combine(a: u64, b: u64) -> u64 {
    fmix64(a ^ b.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// MurmurHash3's 64-bit finaliser.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PreparedContext {
        PreparedContext::new(&[
            RawFeature::new("device", "device=mobile", 1.0),
            RawFeature::new("time", "hour", 13.0),
        ])
    }

    #[test]
    fn terms_cover_features_and_context_action_pairs() {
        let f = Featurizer::new(18, &[["context".into(), "action".into()]], vec![]);
        let a = PreparedAction::new("a1", &[RawFeature::new("tone", "tone=formal", 1.0)]);
        let mut terms = Vec::new();
        f.for_each_term(&ctx(), &a, |t| terms.push(t));
        // 3 context (bias + 2) + 2 action (id + 1) singles, 3 x 2 pairs.
        assert_eq!(terms.len(), 5 + 6);
        let hour_tone = terms
            .iter()
            .find(|t| t.left == 2 && t.right == Some(4))
            .unwrap();
        assert_eq!(hour_tone.value, 13.0);
        assert!(terms.iter().all(|t| t.index < 1 << 18));
    }

    #[test]
    fn namespace_selectors_and_ignore() {
        let a = PreparedAction::new("a1", &[RawFeature::new("tone", "tone=formal", 1.0)]);
        let f = Featurizer::new(10, &[["device".into(), "tone".into()]], vec![]);
        let mut n = 0;
        f.for_each_term(&ctx(), &a, |_| n += 1);
        assert_eq!(n, 5 + 1);
        let f = Featurizer::new(
            10,
            &[["device".into(), "tone".into()]],
            vec!["device".into()],
        );
        let mut n = 0;
        f.for_each_term(&ctx(), &a, |_| n += 1);
        assert_eq!(n, 4);
    }

    #[test]
    fn same_selector_pairs_once() {
        let f = Featurizer::new(10, &[["context".into(), "context".into()]], vec![]);
        let a = PreparedAction::new("a1", &[]);
        let mut n = 0;
        f.for_each_term(&ctx(), &a, |_| n += 1);
        assert_eq!(n, 4 + 3);
    }

    #[test]
    fn hash_is_stable() {
        // Saved models depend on these values; a change here breaks every checkpoint.
        assert_eq!(hash_feature("device", "device=mobile"), REFERENCE);
        assert_ne!(hash_feature("a", "b"), hash_feature("ab", ""));
    }
    const REFERENCE: u64 = 14_474_240_392_730_964_743;
}
