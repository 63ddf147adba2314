//! What the hybrid model reads from an item or a user: their content as a [`Bag`] of named
//! features (see `bespoke_algo::content` for how bags are weighted and mapped to factors).
//!
//! Feature names say where they come from, so that reasons can quote them: `category:<c>`,
//! `word:<token>` (any text field), `attr:<name>=<value>` (string, boolean, small integer or a
//! list of those: tags), `numeric:<name>~<log2 bucket>`, and embeddings by name.

use std::collections::{BTreeMap, HashMap};

use bespoke_algo::content::tokenize;
use bespoke_algo::{Bag, ContentVocab, Factors, Rescore, Ridge, Scored, TopK, VocabParams};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{Map, Value, json};

use super::artifact::{self, ArtifactError};

/// File name of the content model inside a model version.
pub const CONTENT_FILE: &str = "content.safetensors";

/// One side of the content model: how content is encoded and where it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// Feature vocabulary and weighting.
    pub vocab: ContentVocab,
    /// Encoded content → factors.
    pub ridge: Ridge,
}

impl Side {
    /// Fits a side: the vocabulary on `all` bags, the map on `rows` (bags of the factor rows,
    /// in row order). `None` when the bags hold no feature worth learning from.
    fn fit(
        all: &[&Bag],
        rows: &[&Bag],
        factors: &Factors,
        lambda: f64,
        max_features: usize,
    ) -> Option<Self> {
        let vocab = ContentVocab::fit(
            all.iter().copied(),
            VocabParams {
                max_features,
                ..VocabParams::default()
            },
        );
        if vocab.dim() <= 1 || rows.is_empty() {
            return None;
        }
        let x: Vec<Vec<(u32, f32)>> = rows.iter().map(|b| vocab.encode(b)).collect();
        match Ridge::fit(&x, factors.as_slice(), vocab.dim(), factors.dim(), lambda) {
            Ok(ridge) => Some(Self { vocab, ridge }),
            Err(e) => {
                tracing::warn!(target: "train::content", error = %e, "content model not trained");
                None
            }
        }
    }

    /// The factors of a bag and its encoding.
    pub fn project(&self, bag: &Bag) -> (Vec<(u32, f32)>, Vec<f32>) {
        let x = self.vocab.encode(bag);
        let y = self.ridge.predict(&x);
        (x, y)
    }

    /// The features of `x` that raise its score against `target` most, strongest first, with
    /// their shares (the bias left out: it is the same for everyone).
    pub fn top_features(&self, x: &[(u32, f32)], target: &[f32], n: usize) -> Vec<(String, f32)> {
        let bias = self.vocab.dim() as u32 - 1;
        let mut parts: Vec<(u32, f32)> = self
            .ridge
            .contributions(x, target)
            .into_iter()
            .filter(|p| p.0 != bias && p.1 > 0.0)
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut out: Vec<(String, f32)> = Vec::new();
        for (j, w) in parts {
            let name = self.vocab.feature_name(j);
            // An embedding spans many dimensions: one entry with their sum.
            if let Some(o) = out.iter_mut().find(|o| o.0 == name) {
                o.1 += w;
            } else if out.len() < n {
                out.push((name, w));
            }
        }
        out
    }

    /// Every feature's part of the score of `x` against `target`, the bias included, an
    /// embedding's dimensions summed under its name: the parts sum to the score
    /// (`explain=full`).
    pub fn all_features(&self, x: &[(u32, f32)], target: &[f32]) -> Vec<(String, f32)> {
        let mut out: Vec<(String, f32)> = Vec::new();
        for (j, w) in self.ridge.contributions(x, target) {
            let name = self.vocab.feature_name(j);
            match out.iter_mut().find(|o| o.0 == name) {
                Some(o) => o.1 += w,
                None => out.push((name, w)),
            }
        }
        out
    }
}

/// The hybrid content model of one training run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentModel {
    /// Item content → iALS item factors.
    pub items: Option<Side>,
    /// User attributes → iALS user factors.
    pub users: Option<Side>,
}

impl ContentModel {
    /// Fits both sides. `catalog` is the content of every stored item (the vocabulary),
    /// `item_rows` / `user_rows` the content of the factor rows in row order.
    pub fn fit(
        catalog: &[&Bag],
        item_rows: &[&Bag],
        item_factors: &Factors,
        user_rows: &[&Bag],
        user_factors: &Factors,
        lambda: f64,
        max_features: usize,
    ) -> Self {
        Self {
            items: Side::fit(catalog, item_rows, item_factors, lambda, max_features),
            users: Side::fit(user_rows, user_rows, user_factors, lambda, max_features),
        }
    }

    /// What `meta.json` says about it.
    pub fn describe(&self, lambda: f64) -> Value {
        let side = |s: &Option<Side>| {
            s.as_ref().map(|s| {
                json!({"sparse_features": s.vocab.names().len(),
                       "embeddings": s.vocab.dense().iter().map(|d| json!({"name": d.0, "dim": d.1})).collect::<Vec<_>>()})
            })
        };
        json!({"lambda": lambda, "items": side(&self.items), "users": side(&self.users)})
    }

    /// `content.safetensors`: per side `<side>_weights` (`F32`, features × factors) and
    /// `<side>_idf` (`F32`), the feature names and embedding blocks in the metadata (JSON).
    pub fn encode(&self) -> Vec<u8> {
        let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        // Both sides are maps from features to factors, learned from everyone: no user rows.
        let mut info = HashMap::from([
            ("format".to_owned(), "bespoke.content.v1".to_owned()),
            (artifact::USER_ROWS.to_owned(), String::new()),
        ]);
        for (name, side) in [("items", &self.items), ("users", &self.users)] {
            let Some(s) = side else { continue };
            let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            buffers.push((
                format!("{name}_weights"),
                vec![s.ridge.d_in(), s.ridge.d_out()],
                bytes(s.ridge.weights()),
            ));
            buffers.push((
                format!("{name}_idf"),
                vec![s.vocab.idf().len()],
                bytes(s.vocab.idf()),
            ));
            info.insert(
                format!("{name}_features"),
                json!(s.vocab.names()).to_string(),
            );
            info.insert(format!("{name}_dense"), json!(s.vocab.dense()).to_string());
        }
        let tensors: Vec<(String, TensorView<'_>)> = buffers
            .iter()
            .map(|(n, shape, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, shape.clone(), b).expect("sizes match"),
                )
            })
            .collect();
        safetensors::serialize(tensors, &Some(info)).expect("valid tensors serialise")
    }

    /// Decodes [`Self::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArtifactError> {
        const F: &str = CONTENT_FILE;
        let bad = |m: String| ArtifactError {
            file: F.to_owned(),
            message: m,
        };
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let info = meta.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) != Some("bespoke.content.v1") {
            return Err(bad("not a bespoke.content.v1 file".into()));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>), ArtifactError> {
            let t = st
                .tensor(name)
                .map_err(|e| bad(format!("tensor {name}: {e}")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!("tensor {name} is not F32")));
            }
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            Ok((t.shape().to_vec(), v))
        };
        let mut out = Self::default();
        for (name, side) in [("items", &mut out.items), ("users", &mut out.users)] {
            let Some(names) = info.get(&format!("{name}_features")) else {
                continue;
            };
            let names: Vec<String> =
                serde_json::from_str(names).map_err(|e| bad(format!("{name}_features: {e}")))?;
            let dense: Vec<(String, u32)> = serde_json::from_str(
                info.get(&format!("{name}_dense"))
                    .map_or("[]", String::as_str),
            )
            .map_err(|e| bad(format!("{name}_dense: {e}")))?;
            let (_, idf) = read(&format!("{name}_idf"))?;
            let (shape, w) = read(&format!("{name}_weights"))?;
            let vocab = ContentVocab::from_parts(names, idf, dense)
                .ok_or_else(|| bad(format!("{name}: names and idf differ in length")))?;
            let ridge = match shape.as_slice() {
                [d_in, d_out] if *d_in == vocab.dim() => Ridge::from_parts(*d_in, *d_out, w),
                _ => None,
            }
            .ok_or_else(|| bad(format!("{name}_weights do not match the vocabulary")))?;
            *side = Some(Side { vocab, ridge });
        }
        Ok(out)
    }
}

/// An item the served model has no factors for, placed by its content.
#[derive(Debug, Clone)]
pub struct ColdItem {
    /// Its encoded content.
    pub x: Vec<(u32, f32)>,
    /// Its predicted factors.
    pub y: Vec<f32>,
}

/// The content model while serving, with the items it places (by store id).
#[derive(Debug, Default)]
pub struct ContentServing {
    /// The model.
    pub model: ContentModel,
    cold: RwLock<Cold>,
}

/// The cold items, their factors in one dense block: every request scans all of them.
#[derive(Debug, Default)]
struct Cold {
    /// Store item → row.
    rows: FxHashMap<u32, usize>,
    /// Row → store item.
    items: Vec<u32>,
    /// Row-major predicted factors (`items.len()` rows of the model's rank).
    ys: Vec<f32>,
    /// Row → encoded content, for explanations.
    xs: Vec<Vec<(u32, f32)>>,
}

impl Cold {
    fn rank(&self) -> usize {
        self.ys.len().checked_div(self.items.len()).unwrap_or(0)
    }

    fn get(&self, item: u32) -> Option<ColdItem> {
        let r = *self.rows.get(&item)?;
        let k = self.rank();
        Some(ColdItem {
            x: self.xs[r].clone(),
            y: self.ys[r * k..(r + 1) * k].to_vec(),
        })
    }

    fn insert(&mut self, item: u32, ColdItem { x, y }: ColdItem) {
        // One model places every item: one rank.
        debug_assert!(self.items.is_empty() || y.len() == self.rank());
        let k = y.len();
        if let Some(&r) = self.rows.get(&item) {
            self.ys[r * k..(r + 1) * k].copy_from_slice(&y);
            self.xs[r] = x;
        } else {
            self.rows.insert(item, self.items.len());
            self.items.push(item);
            self.ys.extend_from_slice(&y);
            self.xs.push(x);
        }
    }

    fn remove(&mut self, item: u32) {
        let Some(r) = self.rows.remove(&item) else {
            return;
        };
        let k = self.rank();
        let last = self.items.len() - 1;
        self.items.swap_remove(r);
        self.xs.swap_remove(r);
        if r != last {
            self.ys.copy_within(last * k..(last + 1) * k, r * k);
            self.rows.insert(self.items[r], r);
        }
        self.ys.truncate(last * k);
    }
}

impl ContentServing {
    /// Serving state for `model`, with no cold item yet.
    pub fn new(model: ContentModel) -> Self {
        Self {
            model,
            cold: RwLock::new(Cold::default()),
        }
    }

    /// Places (or re-places) store item `item` by its content; no-op without an item side.
    pub fn set_cold(&self, item: u32, bag: &Bag) {
        if let Some(side) = &self.model.items {
            let (x, y) = side.project(bag);
            self.cold.write().insert(item, ColdItem { x, y });
        }
    }

    /// Forgets a cold item (deleted).
    pub fn remove_cold(&self, item: u32) {
        self.cold.write().remove(item);
    }

    /// Number of cold items placed.
    pub fn cold_items(&self) -> usize {
        self.cold.read().items.len()
    }

    /// The `n` best cold items for `x` among those `inside` and `keep` accept, best first
    /// (`idx` is the store item; ties to the smaller). `inside` is a cheap test asked of every
    /// item before it is scored (a saved filter's bit); `keep` is asked only of items good
    /// enough to enter, since it may evaluate business rules.
    /// Ranked by `rescore` of the scores (business-rule boosts), which are returned plain.
    pub fn top_cold<R: Rescore>(
        &self,
        x: &[f32],
        n: usize,
        mut inside: impl FnMut(u32) -> bool,
        mut keep: impl FnMut(u32) -> bool,
        rescore: &mut R,
    ) -> Vec<Scored> {
        let cold = self.cold.read();
        let k = cold.rank();
        if k != x.len() || n == 0 {
            return Vec::new();
        }
        let mut top = TopK::new(n);
        for (&item, y) in cold.items.iter().zip(cold.ys.chunks_exact(k)) {
            if !inside(item) {
                continue;
            }
            let score = bespoke_algo::simd::dot(y, x);
            if top.threshold().is_some_and(|t| score < rescore.floor(t)) || !keep(item) {
                continue;
            }
            let class = rescore.class(item);
            top.push(item, rescore.apply(class, score));
        }
        let mut out = top.into_sorted();
        if !R::IDENTITY {
            for s in &mut out {
                let r = cold.rows[&s.idx];
                s.score = bespoke_algo::simd::dot(&cold.ys[r * k..(r + 1) * k], x);
            }
        }
        out
    }

    /// The predicted factors of cold item `item`.
    pub fn cold_factors(&self, item: u32) -> Option<Vec<f32>> {
        self.cold.read().get(item).map(|c| c.y)
    }

    /// The content features that place cold item `item` near `x`, strongest first.
    pub fn explain_cold(&self, item: u32, x: &[f32], n: usize) -> Vec<(String, f32)> {
        let (Some(side), Some(c)) = (&self.model.items, self.cold.read().get(item)) else {
            return Vec::new();
        };
        side.top_features(&c.x, x, n)
    }

    /// Every content feature's part of cold item `item`'s score against `x`, summing to it
    /// (see [`Side::all_features`]).
    pub fn cold_terms(&self, item: u32, x: &[f32]) -> Vec<(String, f32)> {
        let (Some(side), Some(c)) = (&self.model.items, self.cold.read().get(item)) else {
            return Vec::new();
        };
        side.all_features(&c.x, x)
    }
}

/// The content of an item.
pub fn item_bag(
    categories: &[String],
    text: &BTreeMap<String, String>,
    numeric: &BTreeMap<String, f64>,
    attributes: &Map<String, Value>,
    embeddings: &BTreeMap<String, Vec<f32>>,
) -> Bag {
    let mut sparse: Vec<(String, f32)> = categories
        .iter()
        .map(|c| (format!("category:{c}"), 1.0))
        .collect();
    for t in text.values() {
        tokenize(t, &mut sparse);
    }
    for (name, &v) in numeric {
        // Orders of magnitude: a price of 12 and one of 15 look alike, 12 and 1,200 do not.
        if v.is_finite() && v > 0.0 {
            sparse.push((format!("numeric:{name}~{}", v.log2().floor() as i64), 1.0));
        }
    }
    attribute_features(attributes, &mut sparse);
    Bag {
        sparse,
        dense: embeddings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The content of a user (their attributes) or of a request (its context).
pub fn attribute_bag(attributes: &Map<String, Value>) -> Bag {
    let mut sparse = Vec::new();
    attribute_features(attributes, &mut sparse);
    Bag {
        sparse,
        dense: Vec::new(),
    }
}

fn attribute_features(attributes: &Map<String, Value>, out: &mut Vec<(String, f32)>) {
    for (name, v) in attributes {
        let mut push = |v: &Value| match v {
            Value::String(s) if !s.is_empty() && s.len() <= 100 => {
                out.push((format!("attr:{name}={s}"), 1.0));
            }
            Value::Bool(true) => out.push((format!("attr:{name}"), 1.0)),
            Value::Number(n) => {
                // Small integers are codes (a level, a region); other numbers carry no category.
                if let Some(i) = n.as_i64().filter(|i| i.abs() < 1000) {
                    out.push((format!("attr:{name}={i}"), 1.0));
                }
            }
            _ => {}
        };
        match v {
            Value::Array(xs) => xs.iter().for_each(&mut push),
            v => push(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_features_are_named_by_origin() {
        let attributes = json!({"tags": ["cozy", "retro"], "new": true, "brand": "acme", "rating": 4.5, "level": 3})
            .as_object()
            .cloned()
            .unwrap();
        let bag = item_bag(
            &["jackets".into()],
            &BTreeMap::from([("title".into(), "Warm Wool Jacket".into())]),
            &BTreeMap::from([("price".into(), 100.0)]),
            &attributes,
            &BTreeMap::from([("clip".into(), vec![0.5, 0.5])]),
        );
        let names: Vec<&str> = bag.sparse.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "category:jackets",
                "word:warm",
                "word:wool",
                "word:jacket",
                "numeric:price~6",
                "attr:brand=acme",
                "attr:level=3",
                "attr:new",
                "attr:tags=cozy",
                "attr:tags=retro",
            ]
        );
        assert_eq!(bag.dense, vec![("clip".to_owned(), vec![0.5, 0.5])]);
    }

    proptest::proptest! {
        /// Inserting, re-placing and removing cold items keeps every item's factors, and the
        /// pruned scan returns exactly the best `n` a full sort would.
        #[test]
        fn cold_block_matches_a_map(
            ops in proptest::collection::vec((0u32..12, proptest::option::of(-4i8..5)), 1..60),
            x in proptest::collection::vec(-3i8..4, 3),
            n in 1usize..6,
            skip in 0u32..4,
        ) {
            let mut cold = Cold::default();
            let mut map: BTreeMap<u32, Vec<f32>> = BTreeMap::new();
            for (item, v) in ops {
                match v {
                    Some(v) => {
                        let y = vec![f32::from(v), f32::from(v) * 0.5, 1.0 - f32::from(v)];
                        cold.insert(item, ColdItem { x: vec![(item, 1.0)], y: y.clone() });
                        map.insert(item, y);
                    }
                    None => {
                        cold.remove(item);
                        map.remove(&item);
                    }
                }
            }
            proptest::prop_assert_eq!(cold.items.len(), map.len());
            for (item, y) in &map {
                proptest::prop_assert_eq!(&cold.get(*item).unwrap().y, y);
            }
            let x: Vec<f32> = x.into_iter().map(f32::from).collect();
            let serving = ContentServing { model: ContentModel::default(), cold: RwLock::new(cold) };
            let keep = |i: u32| i % 4 != skip;
            let inside = |i: u32| i % 5 != skip;
            let mut want = TopK::new(n);
            for (item, y) in &map {
                if keep(*item) && inside(*item) {
                    want.push(*item, y.iter().zip(&x).map(|(a, b)| a * b).sum());
                }
            }
            proptest::prop_assert_eq!(serving.top_cold(&x, n, inside, keep, &mut bespoke_algo::Identity), want.into_sorted());
        }
    }
}
